// xrtpkg_fuzz_repair.h - FUZZING ONLY: rewrites the digests of a candidate bundle so that mutated bytes get past
// index_sha256 and the section sha256 checks and reach the layout, zstd and JSON code behind them. Without this a
// random mutation almost never survives the first digest. Header-only; needs libcrypto (xrt::format::Sha256).
#ifndef XRT_FORMATS_CPP_XRTPKG_FUZZ_REPAIR_H_
#define XRT_FORMATS_CPP_XRTPKG_FUZZ_REPAIR_H_

#include <openssl/evp.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <vector>

#include "xrtpkg_reader.h"

namespace xrt::format::fuzzing {

inline uint64_t Le(const uint8_t* p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// Recomputes every in-bounds section sha256, then index_sha256, in place. Leaves bytes it cannot interpret alone:
// the reader must still reject whatever else is wrong. Every offset is bounds-checked against buf.size().
inline void RepairDigests(std::vector<uint8_t>& buf) {
  if (buf.size() < kHeaderSize) return;
  const uint64_t count = Le(buf.data() + 12, 4);
  if (count == 0 || count > kMaxSections) return;
  const uint64_t table_end = kHeaderSize + kEntrySize * count;
  if (table_end > buf.size()) return;
  for (uint64_t i = 0; i < count; ++i) {
    uint8_t* e = buf.data() + kHeaderSize + kEntrySize * i;
    const uint64_t offset = Le(e + 40, 8), stored = Le(e + 48, 8);
    if (offset > buf.size() || stored > buf.size() - offset) continue;
    std::array<uint8_t, 32> digest{};
    if (Sha256(buf.data() + offset, static_cast<size_t>(stored), &digest)) std::memcpy(e + 64, digest.data(), 32);
  }
  std::vector<uint8_t> covered(buf.begin(), buf.begin() + 32);
  covered.insert(covered.end(), buf.begin() + kHeaderSize, buf.begin() + static_cast<ptrdiff_t>(table_end));
  std::array<uint8_t, 32> digest{};
  if (Sha256(covered.data(), covered.size(), &digest)) std::memcpy(buf.data() + 32, digest.data(), 32);
}

}  // namespace xrt::format::fuzzing

#endif  // XRT_FORMATS_CPP_XRTPKG_FUZZ_REPAIR_H_
