// Tests of the verifying .xrtpkg reader: the golden files (formats/golden/golden.json, shared with the Python
// reader), one case per verdict of formats/xrtpkg.md built here, the check order, and exhaustive truncation and
// bit-flip sweeps (every damaged file must be rejected with a status, never crash).
#include "xrtpkg_reader.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "xrtpkg_test_builder.h"

namespace xrt::format {
namespace {

using testing::Build;
using testing::Bytes;
using testing::EntryField;
using testing::Plain;
using testing::Reseal;
using testing::SignBundle;
using testing::StoreLe;
using testing::TestPublicKey;
using testing::TestSection;
using testing::Zstd;

const char kManifest[] = R"({"format":{"name":"xrtpkg","version":"1.0"},"model":{"name":"t"}})";

std::vector<uint8_t> Pattern(size_t n) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>((i * 131 + 7) % 251);
  return v;
}

std::vector<uint8_t> ValidBundle() {
  return Build({Plain("manifest", kManifest), Plain("weights.bin", Pattern(100)), Zstd("model.xml", Pattern(3000)),
                Plain("empty", std::vector<uint8_t>{})});
}

Code VerdictOf(const std::vector<uint8_t>& file, std::string* message = nullptr) {
  auto r = Bundle::Verify(file.data(), file.size());
  if (r.ok()) return Code::kOk;
  if (message) *message = r.error().message;
  return r.error().code;
}

#define EXPECT_VERDICT(file, code, needle)                                         \
  do {                                                                             \
    std::string msg_;                                                              \
    EXPECT_EQ(CodeName(VerdictOf(file, &msg_)), std::string(CodeName(code))) << msg_; \
    EXPECT_NE(msg_.find(needle), std::string::npos) << "message: " << msg_;       \
  } while (0)

// A hand-made frame: 4-byte content size, the given window descriptor, one raw block holding `payload`.
std::vector<uint8_t> RawFrame(const std::vector<uint8_t>& payload, uint8_t window_descriptor) {
  std::vector<uint8_t> f = {0x28, 0xb5, 0x2f, 0xfd, 0x80, window_descriptor, 0, 0, 0, 0};
  StoreLe(&f[6], payload.size(), 4);
  uint32_t block_header = 1u | (static_cast<uint32_t>(payload.size()) << 3);  // last block, raw
  f.push_back(static_cast<uint8_t>(block_header));
  f.push_back(static_cast<uint8_t>(block_header >> 8));
  f.push_back(static_cast<uint8_t>(block_header >> 16));
  f.insert(f.end(), payload.begin(), payload.end());
  return f;
}

TEST(XrtpkgReader, ValidBundleFields) {
  std::vector<uint8_t> file = ValidBundle();
  auto r = Bundle::Verify(file.data(), file.size());
  ASSERT_TRUE(r.ok()) << r.error().message;
  const Bundle& b = r.value();
  EXPECT_EQ(b.header().major_version, 1);
  EXPECT_EQ(b.header().minor_version, 0);
  EXPECT_EQ(b.header().section_count, 4u);
  EXPECT_EQ(b.header().file_size, file.size());
  ASSERT_EQ(b.sections().size(), 4u);
  EXPECT_EQ(b.sections()[0].name, "manifest");
  EXPECT_EQ(b.sections()[0].offset, 448u);  // align64(64 + 96 * 4)
  EXPECT_EQ(b.manifest_text(), kManifest);
  EXPECT_EQ(b.manifest()["model"]["name"], "t");
  EXPECT_EQ(b.Find("model.xml"), std::optional<size_t>(2));
  EXPECT_EQ(b.Find("missing"), std::nullopt);

  auto weights = b.GetSection(1);
  ASSERT_TRUE(weights.ok());
  EXPECT_FALSE(weights.value().owned());
  EXPECT_EQ((weights.value().data() - file.data()) % 64, 0);  // aligned relative to the file start
  EXPECT_EQ(std::vector<uint8_t>(weights.value().data(), weights.value().data() + 100), Pattern(100));

  auto model = b.GetSection(2);
  ASSERT_TRUE(model.ok());
  EXPECT_TRUE(model.value().owned());
  EXPECT_EQ(reinterpret_cast<uintptr_t>(model.value().data()) % 64, 0u);
  EXPECT_EQ(std::vector<uint8_t>(model.value().data(), model.value().data() + model.value().size()), Pattern(3000));

  auto empty = b.GetSection(3);
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty.value().size(), 0u);
  EXPECT_FALSE(b.GetSection(4).ok());
}

TEST(XrtpkgReader, CompressedManifestAndAnyMinor) {
  std::vector<uint8_t> file = Build({Zstd("manifest", kManifest)}, 1, 7);
  auto r = Bundle::Verify(file.data(), file.size());
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r.value().header().minor_version, 7);
  EXPECT_EQ(r.value().manifest_text(), kManifest);
}

TEST(XrtpkgReader, HeaderVerdicts) {
  const std::vector<uint8_t> good = ValidBundle();
  EXPECT_VERDICT(std::vector<uint8_t>(good.begin(), good.begin() + 63), Code::kDataCorrupt, "shorter than");
  EXPECT_VERDICT(std::vector<uint8_t>{}, Code::kDataCorrupt, "0 bytes");

  auto f = good;
  f[1] = 'Y';
  EXPECT_VERDICT(f, Code::kDataCorrupt, "bad magic");

  f = good;
  StoreLe(&f[8], 2, 2);
  EXPECT_VERDICT(f, Code::kIncompatible, "version is 2.0");

  f = good;
  StoreLe(&f[12], 0, 4);
  Reseal(&f);
  EXPECT_VERDICT(f, Code::kDataCorrupt, "section_count is 0");

  f = good;
  StoreLe(&f[12], 1025, 4);
  EXPECT_VERDICT(f, Code::kResourceExhausted, "1025");

  f = good;
  f.push_back(0);
  EXPECT_VERDICT(f, Code::kDataCorrupt, "file_size");

  f = good;
  StoreLe(&f[16], good.size() + 1, 8);
  Reseal(&f);
  EXPECT_VERDICT(f, Code::kDataCorrupt, "truncated");

  // A table that does not fit: 1000 entries in a small file whose file_size field still matches.
  f = good;
  StoreLe(&f[12], 1000, 4);
  EXPECT_VERDICT(f, Code::kDataCorrupt, "section table of 1000 entries");

  f = good;
  f[64 + 40] ^= 1;  // an offset byte, without resealing
  EXPECT_VERDICT(f, Code::kDataCorrupt, "index_sha256 mismatch");

  f = good;
  f[24] = 2;  // header flags: bit 1 is undefined
  Reseal(&f);
  EXPECT_VERDICT(f, Code::kDataCorrupt, "header flags are 0x2");

  f = good;
  f[24] = 1;  // SIGNED, but no trailer
  Reseal(&f);
  EXPECT_VERDICT(f, Code::kDataCorrupt, "+ the 128-byte signature trailer");
}

// ---- Signatures (format 1.1) ----

std::array<uint8_t, 32> Seed(uint8_t tag) {
  std::array<uint8_t, 32> seed{};
  for (size_t i = 0; i < seed.size(); ++i) seed[i] = static_cast<uint8_t>(tag * 31 + i);  // TEST-ONLY keys
  return seed;
}

Code PolicyVerdict(const std::vector<uint8_t>& file, const std::vector<std::array<uint8_t, 32>>& keys,
                   bool require = false, std::string* message = nullptr) {
  std::vector<uint8_t> flat;
  for (const auto& k : keys) flat.insert(flat.end(), k.begin(), k.end());
  VerifyOptions options;
  options.trusted_keys = flat.empty() ? nullptr : flat.data();
  options.trusted_key_count = keys.size();
  options.require_signature = require;
  auto r = Bundle::Verify(file.data(), file.size(), options);
  if (r.ok()) return Code::kOk;
  if (message) *message = r.error().message;
  return r.error().code;
}

TEST(XrtpkgReader, SignedBundles) {
  const auto a = Seed(1), b = Seed(2);
  const auto pub_a = TestPublicKey(a), pub_b = TestPublicKey(b);
  const std::vector<uint8_t> unsigned_file = ValidBundle();
  std::vector<uint8_t> signed_file = unsigned_file;
  SignBundle(&signed_file, a);
  ASSERT_EQ(signed_file.size(), unsigned_file.size() + kSignatureTrailerSize);

  auto r = Bundle::Verify(signed_file.data(), signed_file.size());
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_TRUE(r.value().signer().has_value());
  EXPECT_EQ(*r.value().signer(), pub_a);
  EXPECT_EQ(r.value().header().minor_version, 1);
  EXPECT_EQ(r.value().header().file_size, unsigned_file.size());
  EXPECT_EQ(r.value().size(), signed_file.size());
  EXPECT_EQ(r.value().manifest_text(), kManifest);
  auto plain = Bundle::Verify(unsigned_file.data(), unsigned_file.size());
  ASSERT_TRUE(plain.ok());
  EXPECT_FALSE(plain.value().signer().has_value());

  // Policies.
  EXPECT_EQ(PolicyVerdict(signed_file, {pub_a}), Code::kOk);
  EXPECT_EQ(PolicyVerdict(signed_file, {pub_b, pub_a}), Code::kOk);
  EXPECT_EQ(PolicyVerdict(signed_file, {}, /*require=*/true), Code::kOk);
  std::string msg;
  EXPECT_EQ(PolicyVerdict(signed_file, {pub_b}, false, &msg), Code::kPermissionDenied);
  EXPECT_NE(msg.find("not among the 1 trusted key"), std::string::npos) << msg;
  EXPECT_EQ(PolicyVerdict(unsigned_file, {pub_a}, false, &msg), Code::kPermissionDenied);
  EXPECT_NE(msg.find("not signed"), std::string::npos) << msg;
  EXPECT_EQ(PolicyVerdict(unsigned_file, {}, true, &msg), Code::kPermissionDenied);
  EXPECT_NE(msg.find("a signature is required"), std::string::npos) << msg;

  // Stripped trailer: the length no longer fits the SIGNED flag; with the flag cleared and the index resealed,
  // it is a valid unsigned bundle, refused by any policy.
  std::vector<uint8_t> stripped(signed_file.begin(), signed_file.end() - kSignatureTrailerSize);
  EXPECT_VERDICT(stripped, Code::kDataCorrupt, "signature trailer");
  stripped[24] = 0;
  Reseal(&stripped);
  EXPECT_EQ(VerdictOf(stripped), Code::kOk);
  EXPECT_EQ(PolicyVerdict(stripped, {pub_a}), Code::kPermissionDenied);

  // The signature of another bundle (same key).
  std::vector<uint8_t> other = Build({Plain("manifest", kManifest)});
  SignBundle(&other, a);
  auto swapped = signed_file;
  std::copy(other.end() - kSignatureTrailerSize, other.end(), swapped.end() - kSignatureTrailerSize);
  EXPECT_VERDICT(swapped, Code::kDataCorrupt, "does not match");
  EXPECT_EQ(PolicyVerdict(swapped, {pub_a}), Code::kDataCorrupt);

  // Trailer shape.
  auto f = signed_file;
  f[unsigned_file.size() + 7] = 1;  // magic
  EXPECT_VERDICT(f, Code::kDataCorrupt, "trailer magic");
  f = signed_file;
  f.back() = 1;  // reserved
  EXPECT_VERDICT(f, Code::kDataCorrupt, "reserved");
  f = signed_file;
  f.push_back(0);
  EXPECT_VERDICT(f, Code::kDataCorrupt, "trailing bytes");

  // Nothing past the header is parsed before the policy: a garbage table, validly signed by an untrusted key.
  auto garbage = unsigned_file;
  for (size_t i = 64; i < 448; ++i) garbage[i] = static_cast<uint8_t>(i * 37 + 11);
  SignBundle(&garbage, b, /*reseal=*/false);
  EXPECT_EQ(VerdictOf(garbage), Code::kDataCorrupt);  // index_sha256, without a policy
  EXPECT_EQ(PolicyVerdict(garbage, {pub_a}, false, &msg), Code::kPermissionDenied) << msg;
}

TEST(XrtpkgReader, EveryBitFlipOfASignedBundleIsRejected) {
  // Every bit of the signed region, the key and the signature: never accepted, whatever the policy.
  auto file = ValidBundle();
  SignBundle(&file, Seed(1));
  const auto pub = TestPublicKey(Seed(1));
  for (size_t i = 0; i < file.size(); ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      auto f = file;
      f[i] ^= static_cast<uint8_t>(1u << bit);
      EXPECT_NE(VerdictOf(f), Code::kOk) << "byte " << i << " bit " << bit;
      EXPECT_NE(PolicyVerdict(f, {pub}), Code::kOk) << "byte " << i << " bit " << bit;
    }
  }
  // Every truncation too.
  for (size_t n = 0; n < file.size(); ++n) {
    EXPECT_NE(VerdictOf(std::vector<uint8_t>(file.begin(), file.begin() + n)), Code::kOk) << n;
  }
}

TEST(XrtpkgReader, EntryVerdicts) {
  const std::vector<uint8_t> good = ValidBundle();
  auto tamper = [&](size_t at, const std::vector<uint8_t>& bytes) {
    auto f = good;
    std::copy(bytes.begin(), bytes.end(), f.begin() + at);
    Reseal(&f);
    return f;
  };
  EXPECT_VERDICT(tamper(EntryField(1, 0), {0}), Code::kDataCorrupt, "name is empty");
  EXPECT_VERDICT(tamper(EntryField(1, 0), {'w', '/'}), Code::kDataCorrupt, "only [A-Za-z0-9._-]");
  EXPECT_VERDICT(tamper(EntryField(1, 20), {'x'}), Code::kDataCorrupt, "after the name's NUL");
  EXPECT_VERDICT(tamper(EntryField(1, 0), std::vector<uint8_t>(32, 'a')), Code::kDataCorrupt, "NUL-terminated");
  EXPECT_VERDICT(tamper(EntryField(0, 0), Bytes("manifesT")), Code::kDataCorrupt, "first section must be");
  EXPECT_VERDICT(tamper(EntryField(1, 0), Bytes(std::string("model.xml\0\0", 11))), Code::kDataCorrupt, "duplicate");
  EXPECT_VERDICT(tamper(EntryField(1, 32), {2}), Code::kDataCorrupt, "flags are 0x2");
  EXPECT_VERDICT(tamper(EntryField(1, 36), {1}), Code::kDataCorrupt, "reserved field is 1");
  EXPECT_VERDICT(tamper(EntryField(1, 40), {0x40, 0x03}), Code::kDataCorrupt, "offset is 832");
  EXPECT_VERDICT(tamper(EntryField(1, 56), {99}), Code::kDataCorrupt, "size 99 != stored_size 100");
  EXPECT_VERDICT(tamper(EntryField(3, 48), {1}), Code::kDataCorrupt, "runs past the end");
  EXPECT_VERDICT(tamper(EntryField(1, 48), {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}), Code::kDataCorrupt,
                 "runs past the end");  // offset + stored_size overflows
  // Compressed size over 2 GiB (the cap comes before any frame check).
  EXPECT_VERDICT(tamper(EntryField(2, 56), {1, 0, 0, 0x80, 0, 0, 0, 0}), Code::kResourceExhausted, "2 GiB");
  // Declared manifest size over 16 MiB.
  {
    auto f = Build({Zstd("manifest", kManifest)});
    StoreLe(&f[EntryField(0, 56)], (16u << 20) + 1, 8);
    Reseal(&f);
    EXPECT_VERDICT(f, Code::kResourceExhausted, "16 MiB");
  }
  // Empty compressed section.
  {
    TestSection s{"e", {}, 0, kFlagZstd};
    EXPECT_VERDICT(Build({Plain("manifest", kManifest), s}), Code::kDataCorrupt, "stored_size 0");
  }
  // Trailing bytes past the last section, with file_size updated to match.
  {
    auto f = good;
    f.insert(f.end(), 64, 0);
    StoreLe(&f[16], f.size(), 8);
    Reseal(&f);
    EXPECT_VERDICT(f, Code::kDataCorrupt, "trailing bytes");
  }
  // Non-zero padding (padding is not covered by any digest; it must be checked on its own).
  {
    auto f = good;
    size_t manifest_end = 448 + sizeof(kManifest) - 1;  // the manifest starts at 448 and is not 64-byte long
    f[manifest_end] = 7;
    EXPECT_VERDICT(f, Code::kDataCorrupt, "non-zero padding");
  }
}

TEST(XrtpkgReader, SectionVerdicts) {
  auto f = ValidBundle();
  f[448 + 2] ^= 0x20;  // inside the manifest's stored bytes
  EXPECT_VERDICT(f, Code::kDataCorrupt, "sha256 mismatch");

  auto with = [](TestSection s) { return Build({Plain("manifest", kManifest), std::move(s)}); };
  // No content size: a frame written by the streaming API without a pledged size.
  {
    std::vector<uint8_t> src = Pattern(500), out(ZSTD_compressBound(500) + 64);
    ZSTD_CCtx* cctx = ZSTD_createCCtx();
    ASSERT_EQ(ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, 0), 0u);
    ZSTD_inBuffer in{src.data(), src.size(), 0};
    ZSTD_outBuffer o{out.data(), out.size(), 0};
    ASSERT_EQ(ZSTD_compressStream2(cctx, &o, &in, ZSTD_e_end), 0u);
    ZSTD_freeCCtx(cctx);
    out.resize(o.pos);
    EXPECT_VERDICT(with(TestSection{"s", out, 500, kFlagZstd}), Code::kDataCorrupt, "does not declare");
  }
  {
    auto s = Zstd("s", Pattern(500));
    s.size = 501;
    EXPECT_VERDICT(with(s), Code::kDataCorrupt, "content size is 500, section size is 501");
  }
  EXPECT_VERDICT(with(TestSection{"s", RawFrame(Pattern(10), 18 << 3), 10, kFlagZstd}), Code::kDataCorrupt,
                 "over the cap of 2^27");
  {
    // The same hand-made frame with a 2^27 window is valid: the builder of these frames is right.
    auto ok = with(TestSection{"s", RawFrame(Pattern(10), 17 << 3), 10, kFlagZstd});
    auto r = Bundle::Verify(ok.data(), ok.size());
    ASSERT_TRUE(r.ok()) << r.error().message;
    auto bytes = r.value().GetSection(1);
    ASSERT_TRUE(bytes.ok());
    EXPECT_EQ(std::vector<uint8_t>(bytes.value().data(), bytes.value().data() + 10), Pattern(10));
  }
  {
    auto s = Zstd("s", Pattern(5000));
    s.stored.resize(s.stored.size() - 3);
    EXPECT_VERDICT(with(s), Code::kDataCorrupt, "zstd frame");
  }
  {
    auto s = Zstd("s", Pattern(5000));
    s.stored.push_back(0);
    EXPECT_VERDICT(with(s), Code::kDataCorrupt, "exactly one frame");
  }
  {
    std::vector<uint8_t> skippable = {0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0, 1, 2, 3, 4};
    EXPECT_VERDICT(with(TestSection{"s", skippable, 4, kFlagZstd}), Code::kDataCorrupt, "skippable");
  }
  {
    // A valid header over a compressed block of garbage: only decoding finds it.
    auto fr = RawFrame(Pattern(40), 0);
    uint32_t block_header = 1u | (2u << 1) | (40u << 3);
    fr[10] = static_cast<uint8_t>(block_header);
    fr[11] = static_cast<uint8_t>(block_header >> 8);
    fr[12] = static_cast<uint8_t>(block_header >> 16);
    EXPECT_VERDICT(with(TestSection{"s", fr, 40, kFlagZstd}), Code::kDataCorrupt, "invalid zstd frame");
  }
  EXPECT_VERDICT(Build({Plain("manifest", "{\"a\":")}), Code::kDataCorrupt, "not valid JSON");
  EXPECT_VERDICT(Build({Plain("manifest", "[1,2]")}), Code::kDataCorrupt, "must be an object");
  EXPECT_VERDICT(Build({Plain("manifest", "{\"a\":\"\xff\"}")}), Code::kDataCorrupt, "not valid JSON");
  EXPECT_VERDICT(Build({Plain("manifest", "\xef\xbb\xbf{}")}), Code::kDataCorrupt, "byte order mark");
  EXPECT_VERDICT(Build({Plain("manifest", "{\"a\":\"\\ud800\"}")}), Code::kDataCorrupt, "not valid JSON");
  EXPECT_VERDICT(Build({Plain("manifest", "{\"a\":1e400}")}), Code::kDataCorrupt, "not valid JSON");
  EXPECT_VERDICT(Build({Plain("manifest", "{\"a\":NaN}")}), Code::kDataCorrupt, "not valid JSON");
  EXPECT_VERDICT(Build({Plain("manifest", std::string("{}\0", 3))}), Code::kDataCorrupt, "not valid JSON");
}

// Bundles over 4 MiB hash their sections on several threads: the verdict must still be the first failing section
// in table order, whatever the threads finish first (the larger, later section is hashed first).
TEST(XrtpkgReader, ThreadedHashingKeepsTheTableOrderVerdict) {
  const std::vector<uint8_t> small = Pattern(1 << 20), large = Pattern(24 << 20);
  const auto f =
      Build({Plain("manifest", kManifest), Plain("a.bin", small), Plain("b.bin", large), Plain("c.bin", small)});
  auto r = Bundle::Verify(f.data(), f.size());
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.value().sections().size(), 4u);
  const size_t a = r.value().sections()[1].offset, b = r.value().sections()[2].offset,
               c = r.value().sections()[3].offset;
  auto flipped = [&](std::initializer_list<size_t> at) {
    auto g = f;
    for (size_t i : at) g[i] ^= 1;
    return g;
  };
  EXPECT_VERDICT(flipped({c + 5}), Code::kDataCorrupt, "section 3 (\"c.bin\"): sha256 mismatch");
  EXPECT_VERDICT(flipped({b + 5, c + 5}), Code::kDataCorrupt, "section 2 (\"b.bin\"): sha256 mismatch");
  EXPECT_VERDICT(flipped({a + 5, b + (24 << 20) - 1}), Code::kDataCorrupt, "section 1 (\"a.bin\"): sha256 mismatch");
}

TEST(XrtpkgReader, DeeplyNestedManifestDoesNotOverflowTheStack) {
  const size_t depth = 2'000'000;
  std::string text = "{\"a\":" + std::string(depth, '[') + std::string(depth, ']') + "}";
  auto f = Build({Zstd("manifest", text)});
  auto r = Bundle::Verify(f.data(), f.size());
  // Valid JSON, but over the nesting cap of 64 (the Python reader gives the same verdict): rejected from the text,
  // before any DOM is built.
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Code::kDataCorrupt);
  EXPECT_NE(r.error().message.find("nests deeper than the cap of 64"), std::string::npos) << r.error().message;
  // 64 levels (the top-level object is 1) are accepted.
  text = "{\"a\":" + std::string(63, '[') + std::string(63, ']') + "}";
  f = Build({Zstd("manifest", text)});
  auto ok = Bundle::Verify(f.data(), f.size());
  ASSERT_TRUE(ok.ok()) << ok.error().message;
  EXPECT_TRUE(ok.value().manifest()["a"].is_array());
}

TEST(XrtpkgReader, CheckOrder) {
  const auto good = ValidBundle();
  // Major version is checked before the count cap, the file size and the index digest.
  auto f = good;
  StoreLe(&f[8], 9, 2);
  StoreLe(&f[12], 5000, 4);
  f.push_back(1);
  EXPECT_EQ(VerdictOf(f), Code::kIncompatible);
  // The count cap before the file size.
  f = good;
  StoreLe(&f[12], 5000, 4);
  f.push_back(1);
  EXPECT_EQ(VerdictOf(f), Code::kResourceExhausted);
  // Caps of entry 0 before the layout of entry 1.
  f = Build({Zstd("manifest", kManifest), Plain("x", "abc")});
  StoreLe(&f[EntryField(0, 56)], 1u << 30, 8);
  StoreLe(&f[EntryField(1, 40)], 12345, 8);
  Reseal(&f);
  EXPECT_EQ(VerdictOf(f), Code::kResourceExhausted);
  // Layout (all entries) before any section digest.
  f = Build({Plain("manifest", kManifest), Plain("x", "abc")});
  f[EntryField(1, 64)] ^= 1;  // section 1's digest
  StoreLe(&f[EntryField(1, 56)], 4, 8);
  Reseal(&f);
  std::string msg;
  EXPECT_EQ(VerdictOf(f, &msg), Code::kDataCorrupt);
  EXPECT_NE(msg.find("size 4 != stored_size 3"), std::string::npos) << msg;
}

TEST(XrtpkgReader, EveryTruncationIsRejected) {
  const auto good = ValidBundle();
  for (size_t n = 0; n < good.size(); ++n) {
    std::vector<uint8_t> f(good.begin(), good.begin() + n);
    EXPECT_NE(VerdictOf(f), Code::kOk) << "truncated to " << n;
  }
}

TEST(XrtpkgReader, EveryBitFlipIsRejected) {
  // Every bit of the file: header and table (caught by checks or index_sha256), padding, payloads.
  const auto good = ValidBundle();
  ASSERT_EQ(VerdictOf(good), Code::kOk);
  for (size_t i = 0; i < good.size(); ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      auto f = good;
      f[i] ^= static_cast<uint8_t>(1u << bit);
      EXPECT_NE(VerdictOf(f), Code::kOk) << "byte " << i << " bit " << bit;
    }
  }
}

TEST(XrtpkgReader, ResealedBitFlipsOfTheTableNeverCrash) {
  // With the index digest recomputed, a flipped table field reaches the later checks; each must hold.
  const auto good = ValidBundle();
  for (size_t i = 64; i < 448; ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      auto f = good;
      f[i] ^= static_cast<uint8_t>(1u << bit);
      Reseal(&f);
      Code c = VerdictOf(f);
      // A flip inside a digest field is caught by the section digest; all others by a structural check, except
      // that a flip in a later section's name may give another valid name (names are not otherwise covered).
      const size_t entry = (i - 64) / 96, field = (i - 64) % 96;
      if (entry >= 1 && field < 32) continue;
      EXPECT_NE(c, Code::kOk) << "byte " << i << " bit " << bit;
    }
  }
}

TEST(XrtpkgReader, GoldenTinyModelSweeps) {
  // The same sweeps over a bundle written by the Python writer (compressed manifest and sections, real engines'
  // artifacts): every truncation, and every bit flip of the header and the table.
  const std::filesystem::path tiny = std::filesystem::path(XRT_GOLDEN_DIR) / "tiny_model.xrtpkg";
  if (!std::filesystem::exists(tiny)) GTEST_SKIP() << "no " << tiny << " yet";
  std::ifstream in(tiny, std::ios::binary);
  const std::vector<uint8_t> good{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  ASSERT_EQ(VerdictOf(good), Code::kOk);
  for (size_t n = 0; n < good.size(); ++n) {
    EXPECT_NE(VerdictOf(std::vector<uint8_t>(good.begin(), good.begin() + n)), Code::kOk) << "truncated to " << n;
  }
  const size_t count = good[12] | (good[13] << 8);
  for (size_t i = 0; i < 64 + 96 * count; ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      auto f = good;
      f[i] ^= static_cast<uint8_t>(1u << bit);
      EXPECT_NE(VerdictOf(f), Code::kOk) << "byte " << i << " bit " << bit;
    }
  }
}

// ---- Golden files (written by the Python writer's golden generator; shared with the Python reader's tests) ----

std::vector<uint8_t> ReadFile(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

TEST(XrtpkgReader, GoldenFiles) {
  const std::filesystem::path dir = XRT_GOLDEN_DIR;
  if (!std::filesystem::exists(dir / "golden.json")) GTEST_SKIP() << "no " << (dir / "golden.json") << " yet";
  std::vector<uint8_t> index_bytes = ReadFile(dir / "golden.json");
  auto golden = nlohmann::json::parse(index_bytes.begin(), index_bytes.end());
  ASSERT_EQ(golden.at("version"), 1);
  const auto& index = golden.at("files");
  ASSERT_TRUE(index.is_array());
  ASSERT_FALSE(index.empty());
  size_t ok_files = 0;
  for (const auto& g : index) {
    const std::string name = g.at("file").get<std::string>();
    SCOPED_TRACE(name + ": " + g.value("why", std::string()));
    ASSERT_TRUE(std::filesystem::exists(dir / name));
    std::vector<uint8_t> file = ReadFile(dir / name);
    auto r = Bundle::Verify(file.data(), file.size());
    const std::string expected = g.at("status").get<std::string>();
    if (expected != "OK") {
      ASSERT_FALSE(r.ok()) << "accepted a file the golden index rejects";
      EXPECT_EQ(CodeName(r.error().code), expected) << r.error().message;
    }
    // Verdicts under signature policies ("trusted_keys": hex raw keys, [] = none).
    for (const auto& p : g.value("policies", nlohmann::json::array())) {
      std::vector<uint8_t> keys;
      for (const auto& hex : p.at("trusted_keys")) {
        const std::string h = hex.get<std::string>();
        ASSERT_EQ(h.size(), 64u);
        for (size_t i = 0; i < 64; i += 2) keys.push_back(static_cast<uint8_t>(std::stoi(h.substr(i, 2), nullptr, 16)));
      }
      VerifyOptions options;
      options.trusted_keys = keys.empty() ? nullptr : keys.data();
      options.trusted_key_count = keys.size() / 32;
      options.require_signature = p.at("require_signature").get<bool>();
      auto pr = Bundle::Verify(file.data(), file.size(), options);
      EXPECT_EQ(pr.ok() ? std::string("OK") : std::string(CodeName(pr.error().code)),
                p.at("status").get<std::string>())
          << p.dump() << (pr.ok() ? "" : ": " + pr.error().message);
    }
    if (expected != "OK") continue;
    ++ok_files;
    ASSERT_TRUE(r.ok()) << CodeName(r.error().code) << ": " << r.error().message;
    const Bundle& b = r.value();
    EXPECT_EQ(b.header().major_version, g.at("major").get<int>());
    EXPECT_EQ(b.header().minor_version, g.at("minor").get<int>());
    EXPECT_EQ(b.header().file_size, g.at("file_size").get<uint64_t>());
    EXPECT_EQ(b.signer() ? HexDigest(*b.signer()) : std::string("null"),
              g.at("signer").is_null() ? std::string("null") : g.at("signer").get<std::string>());
    const auto& secs = g.at("sections");
    ASSERT_EQ(b.sections().size(), secs.size());
    for (size_t i = 0; i < secs.size(); ++i) {
      const SectionEntry& e = b.sections()[i];
      EXPECT_EQ(e.name, secs[i].at("name").get<std::string>());
      EXPECT_EQ(e.compressed(), secs[i].at("compressed").get<bool>());
      EXPECT_EQ(e.offset, secs[i].at("offset").get<uint64_t>());
      EXPECT_EQ(e.stored_size, secs[i].at("stored_size").get<uint64_t>());
      EXPECT_EQ(e.size, secs[i].at("size").get<uint64_t>());
      EXPECT_EQ(HexDigest(e.sha256), secs[i].at("sha256").get<std::string>());
      auto bytes = b.GetSection(i);
      ASSERT_TRUE(bytes.ok()) << bytes.error().message;
      EXPECT_EQ(bytes.value().size(), e.size);
    }
    std::array<uint8_t, 32> digest{};
    ASSERT_TRUE(Sha256(b.manifest_text().data(), b.manifest_text().size(), &digest));
    EXPECT_EQ(HexDigest(digest), g.at("manifest_sha256").get<std::string>());
  }
  EXPECT_GT(ok_files, 0u);
}


// ---- Verification on use (VerifyIndex): the same verdicts, with non-manifest sections checked on first use ----

// A file in memory, read a copy at a time (what the runtime's pread source does).
class MemorySource final : public ByteSource {
 public:
  explicit MemorySource(std::vector<uint8_t> bytes) : bytes_(std::move(bytes)) {}
  std::optional<Error> Read(uint64_t offset, size_t n, uint8_t* out) const override {
    if (offset > bytes_.size() || n > bytes_.size() - offset) return Error{Code::kDataCorrupt, "short read"};
    if (n) std::memcpy(out, bytes_.data() + offset, n);
    return std::nullopt;
  }
  std::vector<uint8_t> bytes_;  // tests change it after open, as a writer to the file would
};

// The verdict of opening on use, then asking for every section in table order: the first failure's code. Equal to
// the full reader's verdict code for every file (both report DATA_CORRUPT for every section check).
Code OnUseVerdictOf(const std::vector<uint8_t>& file, std::string* message = nullptr) {
  auto r = Bundle::VerifyIndex(std::make_shared<MemorySource>(file), file.size());
  if (!r.ok()) {
    if (message) *message = r.error().message;
    return r.error().code;
  }
  for (size_t i = 0; i < r.value().sections().size(); ++i) {
    auto bytes = r.value().GetSection(i);
    if (!bytes.ok()) {
      if (message) *message = bytes.error().message;
      return bytes.error().code;
    }
    if (bytes.value().size() != r.value().sections()[i].size) return Code::kDataCorrupt;
  }
  return Code::kOk;
}

TEST(XrtpkgReaderOnUse, AnUnusedCorruptSectionDoesNotFailTheOpen) {
  auto file = Build({Plain("manifest", kManifest), Plain("a.bin", Pattern(100)), Zstd("b.xml", Pattern(3000)),
                     Plain("c.bin", Pattern(200))});
  auto full = Bundle::Verify(file.data(), file.size());
  ASSERT_TRUE(full.ok());
  const uint64_t a_offset = full.value().sections()[1].offset;
  file[a_offset + 5] ^= 0x10;  // corrupt section 1 ("a.bin") only
  ASSERT_EQ(VerdictOf(file), Code::kDataCorrupt);
  auto r = Bundle::VerifyIndex(std::make_shared<MemorySource>(file), file.size());
  ASSERT_TRUE(r.ok()) << r.error().message;
  const Bundle& b = r.value();
  EXPECT_TRUE(b.verifies_on_use());
  EXPECT_EQ(b.data(), nullptr);
  auto c = b.GetSection(3);
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(std::vector<uint8_t>(c.value().data(), c.value().data() + 200), Pattern(200));
  EXPECT_EQ(reinterpret_cast<uintptr_t>(c.value().data()) % 64, 0u);
  auto xml = b.GetSection(2);
  ASSERT_TRUE(xml.ok()) << xml.error().message;
  EXPECT_EQ(std::vector<uint8_t>(xml.value().data(), xml.value().data() + 3000), Pattern(3000));
  auto a = b.GetSection(1);
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.error().code, Code::kDataCorrupt);
  EXPECT_NE(a.error().message.find("section 1 (\"a.bin\"): sha256 mismatch"), std::string::npos) << a.error().message;
  auto again = b.Prefetch({3, 1});
  ASSERT_TRUE(again.has_value());
  EXPECT_NE(again->message.find("a.bin"), std::string::npos);
  EXPECT_GE(b.section_verify_seconds(), 0.0);
}

TEST(XrtpkgReaderOnUse, VerifiedBytesSurviveChangesToTheSource) {
  auto file = Build({Plain("manifest", kManifest), Plain("a.bin", Pattern(100)), Plain("b.bin", Pattern(100))});
  auto source = std::make_shared<MemorySource>(file);
  auto r = Bundle::VerifyIndex(source, file.size());
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_FALSE(r.value().Prefetch({1}).has_value());
  // The "file" changes after open: the section verified before keeps its bytes; the other fails its check.
  std::fill(source->bytes_.begin() + 64, source->bytes_.end(), 0xA5);
  auto a = r.value().GetSection(1);
  ASSERT_TRUE(a.ok()) << a.error().message;
  EXPECT_EQ(std::vector<uint8_t>(a.value().data(), a.value().data() + 100), Pattern(100));
  auto b = r.value().GetSection(2);
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.error().message.find("b.bin"), std::string::npos) << b.error().message;
  source->bytes_.resize(100);  // truncated: a clear error, not a crash
  auto again = r.value().GetSection(2);
  ASSERT_FALSE(again.ok());
}

TEST(XrtpkgReaderOnUse, SameVerdictsAsTheFullReaderOnSweepsAndGoldenFiles) {
  const auto good = ValidBundle();
  EXPECT_EQ(OnUseVerdictOf(good), Code::kOk);
  for (size_t n = 0; n < good.size(); ++n) {
    std::vector<uint8_t> f(good.begin(), good.begin() + n);
    EXPECT_EQ(OnUseVerdictOf(f), VerdictOf(f)) << "truncated to " << n;
  }
  for (size_t i = 0; i < good.size(); ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      auto f = good;
      f[i] ^= static_cast<uint8_t>(1u << bit);
      EXPECT_EQ(OnUseVerdictOf(f), VerdictOf(f)) << "byte " << i << " bit " << bit;
      if (i < 64 || i >= 448) continue;  // resealed flips of the table (as ResealedBitFlipsOfTheTableNeverCrash)
      Reseal(&f);
      EXPECT_EQ(OnUseVerdictOf(f), VerdictOf(f)) << "resealed: byte " << i << " bit " << bit;
    }
  }
  const std::filesystem::path dir = XRT_GOLDEN_DIR;
  size_t files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() != ".xrtpkg") continue;
    const std::vector<uint8_t> file = ReadFile(entry.path());
    std::string full_message, on_use_message;
    const Code full = VerdictOf(file, &full_message);
    EXPECT_EQ(OnUseVerdictOf(file, &on_use_message), full)
        << entry.path().filename() << ": " << full_message << " / " << on_use_message;
    ++files;
  }
  EXPECT_GT(files, 50u);
}

}  // namespace
}  // namespace xrt::format
