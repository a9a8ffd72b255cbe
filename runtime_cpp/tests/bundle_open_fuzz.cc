// bundle_open_fuzz.cc - libFuzzer target for the C API's load path: xrt_bundle_open_memory, the manifest model
// (inputs, outputs, variants, options) and xrt_session_create with no engine backend available (no plugin is built
// in a fuzzing build and none is registered), so variant selection and its error paths run on hostile manifests.
// Inputs get their digests repaired (formats/cpp/xrtpkg_fuzz_repair.h) so mutations reach the manifest.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "xrt/xrt.h"
#include "xrtpkg_fuzz_repair.h"

namespace {

void Open(const std::vector<uint8_t>& bytes) {
  xrt_bundle_t* bundle = nullptr;
  xrt_status_t s = xrt_bundle_open_memory(bytes.data(), bytes.size(), nullptr, &bundle);
  if (s != nullptr) {
    if (xrt_status_code(s) == XRT_STATUS_OK || bundle != nullptr) std::abort();
    xrt_status_free(s);
    return;
  }
  size_t manifest_size = 0;
  if (xrt_bundle_manifest(bundle, &manifest_size) == nullptr) std::abort();
  static const char* const kDevices[] = {"cpu", "npu"};
  for (const char* device : kDevices) {
    xrt_session_options_t options;
    xrt_session_options_initialize(&options);
    options.device = device;
    xrt_session_t* session = nullptr;
    s = xrt_session_create(bundle, &options, &session);
    if (s == nullptr) std::abort();  // no backend exists, so no session can be created
    if (session != nullptr) std::abort();
    xrt_status_free(s);
  }
  xrt_bundle_release(bundle);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<uint8_t> bytes(data, data + size);
  xrt::format::fuzzing::RepairDigests(bytes);
  Open(bytes);
  return 0;
}
