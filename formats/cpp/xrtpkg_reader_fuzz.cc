// xrtpkg_reader_fuzz.cc - libFuzzer target for the C++ reader (build: -DXRT_BUILD_FUZZERS=ON with clang; run:
// scripts/fuzz.sh). Each input is verified twice: as given (what an attacker controls byte for byte), and with its
// digests repaired (xrtpkg_fuzz_repair.h) so mutations reach the layout, zstd and JSON checks behind them. A
// verified bundle has every section materialised, as a session would. Crashes, sanitizer reports, leaks, OOMs
// (-rss_limit_mb) and timeouts are the failures; a rejection is a normal outcome.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "xrtpkg_fuzz_repair.h"
#include "xrtpkg_reader.h"

namespace {

void Check(const uint8_t* data, size_t size) {
  auto verified = xrt::format::Bundle::Verify(data, size);
  if (!verified.ok()) {
    // An error always carries a verdict other than OK and a message.
    if (verified.error().code == xrt::format::Code::kOk || verified.error().message.empty()) std::abort();
    return;
  }
  const auto& bundle = verified.value();
  if (!bundle.manifest().is_object()) std::abort();
  for (size_t i = 0; i < bundle.sections().size(); ++i) {
    if (bundle.sections()[i].size > (uint64_t{64} << 20)) continue;  // verified, not materialised (fuzzer RSS limit)
    auto section = bundle.GetSection(i);
    if (section.ok() && section.value().size() != bundle.sections()[i].size) std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Exact-size heap copies, so ASan sees any read past the end.
  std::vector<uint8_t> raw(data, data + size);
  Check(raw.data(), raw.size());
  std::vector<uint8_t> repaired(data, data + size);
  xrt::format::fuzzing::RepairDigests(repaired);
  Check(repaired.data(), repaired.size());
  return 0;
}
