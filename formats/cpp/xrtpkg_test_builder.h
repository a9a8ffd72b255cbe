// xrtpkg_test_builder.h - TEST ONLY: lays out .xrtpkg bytes per formats/xrtpkg.md so C++ tests can build valid
// bundles (and then break them on purpose) without the Python writer. Header-only; needs libzstd and libcrypto.
#ifndef XRT_FORMATS_CPP_XRTPKG_TEST_BUILDER_H_
#define XRT_FORMATS_CPP_XRTPKG_TEST_BUILDER_H_

#include <openssl/evp.h>
#include <zstd.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "xrtpkg_reader.h"

namespace xrt::format::testing {

struct TestSection {
  std::string name;
  std::vector<uint8_t> stored;  // the bytes written to the file
  uint64_t size = 0;            // the declared (decompressed) size
  uint32_t flags = 0;
};

inline std::vector<uint8_t> Bytes(const std::string& s) { return std::vector<uint8_t>(s.begin(), s.end()); }

inline TestSection Plain(const std::string& name, const std::vector<uint8_t>& bytes) {
  return TestSection{name, bytes, bytes.size(), 0};
}
inline TestSection Plain(const std::string& name, const std::string& text) { return Plain(name, Bytes(text)); }

// One zstd frame with its content size declared (ZSTD_compress always writes it).
inline TestSection Zstd(const std::string& name, const std::vector<uint8_t>& bytes, int level = 3) {
  std::vector<uint8_t> out(ZSTD_compressBound(bytes.size()));
  size_t n = ZSTD_compress(out.data(), out.size(), bytes.data(), bytes.size(), level);
  if (ZSTD_isError(n)) throw std::runtime_error(ZSTD_getErrorName(n));
  out.resize(n);
  return TestSection{name, out, bytes.size(), kFlagZstd};
}
inline TestSection Zstd(const std::string& name, const std::string& text, int level = 3) {
  return Zstd(name, Bytes(text), level);
}

inline void StoreLe(uint8_t* p, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

inline uint64_t TestAlign64(uint64_t x) { return (x + 63) & ~uint64_t{63}; }

// Recomputes index_sha256 from the header and table as they are now (after a test tampered with a field).
inline void Reseal(std::vector<uint8_t>* file) {
  uint32_t count = 0;
  for (int i = 3; i >= 0; --i) count = (count << 8) | (*file)[12 + i];
  std::vector<uint8_t> covered(file->begin(), file->begin() + 32);
  covered.insert(covered.end(), file->begin() + 64, file->begin() + 64 + 96 * static_cast<size_t>(count));
  std::array<uint8_t, 32> digest{};
  Sha256(covered.data(), covered.size(), &digest);
  std::memcpy(file->data() + 32, digest.data(), 32);
}

// Lays out the sections in order (section 0 should be "manifest") with valid offsets, digests and padding.
inline std::vector<uint8_t> Build(const std::vector<TestSection>& sections, uint16_t major = kMajorVersion,
                                  uint16_t minor = kMinorVersion) {
  const uint64_t table_end = 64 + 96 * sections.size();
  std::vector<uint8_t> file(TestAlign64(table_end), 0);
  std::vector<uint64_t> offsets;
  for (size_t i = 0; i < sections.size(); ++i) {
    file.resize(TestAlign64(file.size()), 0);
    offsets.push_back(file.size());
    file.insert(file.end(), sections[i].stored.begin(), sections[i].stored.end());
  }
  std::memcpy(file.data(), kMagic, 8);
  StoreLe(&file[8], major, 2);
  StoreLe(&file[10], minor, 2);
  StoreLe(&file[12], sections.size(), 4);
  StoreLe(&file[16], file.size(), 8);
  for (size_t i = 0; i < sections.size(); ++i) {
    uint8_t* e = &file[64 + 96 * i];
    std::memcpy(e, sections[i].name.data(), std::min<size_t>(sections[i].name.size(), 32));
    StoreLe(e + 32, sections[i].flags, 4);
    StoreLe(e + 40, offsets[i], 8);
    StoreLe(e + 48, sections[i].stored.size(), 8);
    StoreLe(e + 56, sections[i].size, 8);
    std::array<uint8_t, 32> digest{};
    Sha256(sections[i].stored.data(), sections[i].stored.size(), &digest);
    std::memcpy(e + 64, digest.data(), 32);
  }
  Reseal(&file);
  return file;
}

// The raw public key of the Ed25519 private key with this 32-byte seed (TEST ONLY).
inline std::array<uint8_t, 32> TestPublicKey(const std::array<uint8_t, 32>& seed) {
  std::array<uint8_t, 32> pub{};
  EVP_PKEY* key = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nullptr, seed.data(), seed.size());
  size_t len = pub.size();
  if (key == nullptr || EVP_PKEY_get_raw_public_key(key, pub.data(), &len) != 1 || len != 32) {
    EVP_PKEY_free(key);
    throw std::runtime_error("libcrypto: cannot derive an Ed25519 public key");
  }
  EVP_PKEY_free(key);
  return pub;
}

// Signs an unsigned bundle as `xrtpkg.sign` does (TEST ONLY, no verification first): header flag SIGNED, minor 1,
// index resealed (unless reseal is false), then the 128-byte trailer: "XRTSIG\x01\x00" | public key | Ed25519
// signature of SHA-256(bundle bytes) | 24 zero bytes.
inline void SignBundle(std::vector<uint8_t>* file, const std::array<uint8_t, 32>& seed, bool reseal = true) {
  (*file)[24] |= 1;
  if ((*file)[10] == 0 && (*file)[11] == 0) (*file)[10] = kSignedMinorVersion;
  if (reseal) Reseal(file);
  std::array<uint8_t, 32> digest{};
  Sha256(file->data(), file->size(), &digest);
  std::array<uint8_t, 64> signature{};
  size_t sig_len = signature.size();
  EVP_PKEY* key = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nullptr, seed.data(), seed.size());
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  const bool ok = key != nullptr && ctx != nullptr && EVP_DigestSignInit(ctx, nullptr, nullptr, nullptr, key) == 1 &&
                  EVP_DigestSign(ctx, signature.data(), &sig_len, digest.data(), digest.size()) == 1;
  EVP_MD_CTX_free(ctx);
  EVP_PKEY_free(key);
  if (!ok || sig_len != 64) throw std::runtime_error("libcrypto: cannot sign");
  const std::array<uint8_t, 32> pub = TestPublicKey(seed);
  file->insert(file->end(), kSignatureMagic, kSignatureMagic + 8);
  file->insert(file->end(), pub.begin(), pub.end());
  file->insert(file->end(), signature.begin(), signature.end());
  file->insert(file->end(), 24, 0);
}

// Byte offset of field `field_offset` of table entry `index`.
inline size_t EntryField(size_t index, size_t field_offset) { return 64 + 96 * index + field_offset; }

}  // namespace xrt::format::testing

#endif  // XRT_FORMATS_CPP_XRTPKG_TEST_BUILDER_H_
