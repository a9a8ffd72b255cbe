// checks_fuzz.cc - libFuzzer target for the OpenVINO hand-off checks (checks.h), which need no OpenVINO: the
// artifact type check (IsIrXml), the precompiled blob's embedded-model check (BlobModelIsIr) and the variant
// options allow-list (ParseOptions) on the same bytes. Invariants checked beyond "no crash, no sanitizer report":
// accepted IR starts with <net> after the prologue; accepted options hold only allow-listed keys, and a thread
// count never exceeds the CPU bound.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "checks.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace ovb = xrt::openvino_backend;
  std::string why;
  if (!ovb::IsIrXml(data, size, &why) && why.empty()) std::abort();  // a refusal always says why
  ovb::BlobModelIsIr(data, size);

  const std::string text(reinterpret_cast<const char*>(data), size);
  ovb::ParsedOptions parsed;
  const unsigned cpus = 1 + (size % 8);
  if (ovb::ParseOptions(text.c_str(), cpus, &parsed).empty()) {
    for (const auto& [key, value] : parsed.properties) {
      if (key != "INFERENCE_NUM_THREADS" && key != "INFERENCE_PRECISION_HINT" && key != "PERFORMANCE_HINT") {
        std::abort();
      }
      if (key == "INFERENCE_NUM_THREADS" && std::stoull(value) > cpus) std::abort();
    }
    for (const auto& [key, value] : parsed.xrt) {
      if (key != "xrt.cache_dir" && (key.rfind("xrt.compiled_", 0) != 0 || value.size() > 4096)) std::abort();
    }
  }
  return 0;
}
