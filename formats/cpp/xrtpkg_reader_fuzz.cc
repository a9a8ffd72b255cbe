// xrtpkg_reader_fuzz.cc - libFuzzer target for the C++ reader (build: -DXRT_BUILD_FUZZERS=ON with clang; run:
// scripts/fuzz.sh). Each input is verified twice: as given (what an attacker controls byte for byte), and with its
// digests repaired (xrtpkg_fuzz_repair.h) so mutations reach the layout, zstd and JSON checks behind them. A
// verified bundle has every section materialised, as a session would. Crashes, sanitizer reports, leaks, OOMs
// (-rss_limit_mb) and timeouts are the failures; a rejection is a normal outcome.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
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

// A file in memory read through the on-use path (what the runtime does with a file).
class MemorySource final : public xrt::format::ByteSource {
 public:
  MemorySource(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  std::optional<xrt::format::Error> Read(uint64_t offset, size_t n, uint8_t* out) const override {
    if (offset > size_ || n > size_ - offset) return xrt::format::Error{xrt::format::Code::kDataCorrupt, "short read"};
    if (n) std::memcpy(out, data_ + offset, n);
    return std::nullopt;
  }

 private:
  const uint8_t* data_;
  size_t size_;
};

// Verification on use must reach the full reader's verdict code once every section has been asked for.
void CheckOnUse(const uint8_t* data, size_t size) {
  auto full = xrt::format::Bundle::Verify(data, size);
  auto lazy = xrt::format::Bundle::VerifyIndex(std::make_shared<MemorySource>(data, size), size);
  xrt::format::Code code = xrt::format::Code::kOk;
  if (!lazy.ok()) {
    code = lazy.error().code;
  } else {
    for (size_t i = 0; i < lazy.value().sections().size() && code == xrt::format::Code::kOk; ++i) {
      if (lazy.value().sections()[i].size > (uint64_t{64} << 20)) return;  // not materialised (fuzzer RSS limit)
      auto section = lazy.value().GetSection(i);
      if (!section.ok()) code = section.error().code;
    }
  }
  if (code != (full.ok() ? xrt::format::Code::kOk : full.error().code)) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Exact-size heap copies, so ASan sees any read past the end.
  std::vector<uint8_t> raw(data, data + size);
  Check(raw.data(), raw.size());
  CheckOnUse(raw.data(), raw.size());
  std::vector<uint8_t> repaired(data, data + size);
  xrt::format::fuzzing::RepairDigests(repaired);
  Check(repaired.data(), repaired.size());
  CheckOnUse(repaired.data(), repaired.size());
  return 0;
}
