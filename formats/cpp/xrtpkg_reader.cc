// xrtpkg_reader.cc - see xrtpkg_reader.h. The check order below is the spec's (formats/xrtpkg.md, "Verdicts");
// keep it in step with the Python reader (formats/python/xrtpkg) so both give the same verdict for every file.
#include "xrtpkg_reader.h"

#define ZSTD_STATIC_LINKING_ONLY  // ZSTD_getFrameHeader: reads the window size before anything is allocated
#include <zstd.h>

#include <openssl/evp.h>
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <new>
#include <sstream>
#include <system_error>
#include <thread>
#include <unordered_set>
#include <vector>

namespace xrt::format {
namespace {

template <typename... Args>
std::string Cat(const Args&... args) {
  std::ostringstream out;
  (out << ... << args);
  return out.str();
}

Error Corrupt(std::string message) { return Error{Code::kDataCorrupt, std::move(message)}; }
Error Exhausted(std::string message) { return Error{Code::kResourceExhausted, std::move(message)}; }

uint64_t LoadLe(const uint8_t* p, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// Checked 64-bit arithmetic: false on overflow.
bool AddU64(uint64_t a, uint64_t b, uint64_t* out) { return !__builtin_add_overflow(a, b, out); }
bool Align64(uint64_t x, uint64_t* out) {
  if (!AddU64(x, 63, out)) return false;
  *out &= ~uint64_t{63};
  return true;
}

// A section name as bytes, printable in messages ("abc", "a\x01").
std::string ShowBytes(const uint8_t* p, size_t n) {
  static const char kHex[] = "0123456789abcdef";
  std::string s = "\"";
  for (size_t i = 0; i < n; ++i) {
    uint8_t c = p[i];
    if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
      s.push_back(static_cast<char>(c));
    } else {
      s += "\\x";
      s.push_back(kHex[c >> 4]);
      s.push_back(kHex[c & 15]);
    }
  }
  return s + "\"";
}

std::string SectionLabel(size_t index, const std::string& name) {
  return Cat("section ", index, " (\"", name, "\")");
}

bool IsNameChar(uint8_t c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
         c == '-';
}

// Validates the 32-byte name field; on success stores the name.
std::optional<Error> CheckName(const uint8_t* field, size_t index, std::string* out_name) {
  size_t len = 0;
  while (len < 32 && field[len] != 0) ++len;
  if (len == 0) return Corrupt(Cat("section ", index, ": name is empty"));
  if (len > kMaxNameLength) {
    return Corrupt(Cat("section ", index, ": name ", ShowBytes(field, 32), " is not NUL-terminated within 32 bytes (",
                       "names are 1..", kMaxNameLength, " bytes)"));
  }
  for (size_t i = 0; i < len; ++i) {
    if (!IsNameChar(field[i])) {
      return Corrupt(Cat("section ", index, ": name ", ShowBytes(field, len), " has byte ", ShowBytes(field + i, 1),
                         " at ", i, "; only [A-Za-z0-9._-] are allowed"));
    }
  }
  for (size_t i = len; i < 32; ++i) {
    if (field[i] != 0) {
      return Corrupt(Cat("section ", index, ": name field of ", ShowBytes(field, len), " has non-zero byte 0x",
                         std::hex, static_cast<int>(field[i]), std::dec, " at ", i, " after the name's NUL"));
    }
  }
  out_name->assign(reinterpret_cast<const char*>(field), len);
  return std::nullopt;
}

struct DCtxDelete {
  void operator()(ZSTD_DCtx* d) const { ZSTD_freeDCtx(d); }
};
using DCtxPtr = std::unique_ptr<ZSTD_DCtx, DCtxDelete>;

// Frame-level checks that need no allocation: one standard frame covering exactly the stored bytes, declaring a
// content size equal to `declared_size`, with a window of at most 2^27 bytes.
std::optional<Error> CheckFrameHeader(const uint8_t* src, uint64_t n, uint64_t declared_size,
                                      const std::string& label) {
  ZSTD_frameHeader zfh;
  size_t r = ZSTD_getFrameHeader(&zfh, src, n);
  if (ZSTD_isError(r)) {
    return Corrupt(Cat(label, ": invalid zstd frame header: ", ZSTD_getErrorName(r)));
  }
  if (r != 0) return Corrupt(Cat(label, ": zstd frame header truncated (", n, " stored bytes)"));
  if (zfh.frameType != ZSTD_frame) return Corrupt(Cat(label, ": payload is a skippable zstd frame, not a data frame"));
  if (zfh.frameContentSize == ZSTD_CONTENTSIZE_UNKNOWN) {
    return Corrupt(Cat(label, ": zstd frame does not declare its content size (declared section size ", declared_size,
                       ")"));
  }
  if (zfh.frameContentSize != declared_size) {
    return Corrupt(Cat(label, ": zstd frame content size is ", zfh.frameContentSize, ", section size is ",
                       declared_size));
  }
  if (zfh.windowSize > (uint64_t{1} << kMaxWindowLog)) {
    return Corrupt(Cat(label, ": zstd window is ", zfh.windowSize, " bytes, over the cap of 2^", kMaxWindowLog));
  }
  size_t frame_size = ZSTD_findFrameCompressedSize(src, n);
  if (ZSTD_isError(frame_size)) {
    return Corrupt(Cat(label, ": invalid zstd frame: ", ZSTD_getErrorName(frame_size)));
  }
  if (frame_size != n) {
    return Corrupt(Cat(label, ": zstd frame is ", frame_size, " bytes but ", n,
                       " are stored (a section is exactly one frame)"));
  }
  return std::nullopt;
}

// The manifest's objects and arrays nest at most this deep (the top-level object is level 1); formats/xrtpkg.md.
constexpr size_t kMaxManifestDepth = 64;

// Counts '{' / '[' nesting outside strings. On valid JSON this is the exact depth; on invalid JSON the text is
// DATA_CORRUPT either way, so the verdict does not depend on which check fires first.
std::optional<Error> CheckJsonDepth(const std::string& text) {
  size_t depth = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      if (++depth > kMaxManifestDepth) {
        return Corrupt(Cat("section 0 (\"manifest\"): JSON nests deeper than the cap of ", kMaxManifestDepth,
                           " levels"));
      }
    } else if ((c == '}' || c == ']') && depth > 0) {
      --depth;
    }
  }
  return std::nullopt;
}

// No string of the manifest (key or value) may contain U+0000: the C API hands names out as C strings, which would
// silently end at the NUL. Iterative: the DOM may be 64 levels deep.
std::optional<Error> CheckNoNulStrings(const nlohmann::json& root) {
  std::vector<const nlohmann::json*> stack = {&root};
  auto bad = [](const std::string& s) {
    return Corrupt(Cat("section 0 (\"manifest\"): the string ", ShowBytes(reinterpret_cast<const uint8_t*>(s.data()),
                                                                          std::min<size_t>(s.size(), 40)),
                       " contains a NUL character (\\u0000); manifest names and values must not"));
  };
  while (!stack.empty()) {
    const nlohmann::json* v = stack.back();
    stack.pop_back();
    if (v->is_string()) {
      if (v->get_ref<const std::string&>().find('\0') != std::string::npos) return bad(v->get_ref<const std::string&>());
    } else if (v->is_object()) {
      for (auto it = v->begin(); it != v->end(); ++it) {
        if (it.key().find('\0') != std::string::npos) return bad(it.key());
        stack.push_back(&it.value());
      }
    } else if (v->is_array()) {
      for (const auto& child : *v) stack.push_back(&child);
    }
  }
  return std::nullopt;
}

DCtxPtr MakeDCtx() {
  DCtxPtr dctx(ZSTD_createDCtx());
  if (!dctx) throw std::bad_alloc();
  // The header check above already bounds the window; this keeps libzstd from allocating past it regardless.
  size_t r = ZSTD_DCtx_setParameter(dctx.get(), ZSTD_d_windowLogMax, kMaxWindowLog);
  if (ZSTD_isError(r)) throw std::bad_alloc();
  return dctx;
}

// Streams the frame through `out` (refilled from its start each time it fills) and checks that it decodes to
// exactly `declared_size` bytes. With out.size() >= declared_size this decompresses into `out` in one pass.
std::optional<Error> Decode(const uint8_t* src, uint64_t n, uint64_t declared_size, uint8_t* out, size_t out_capacity,
                            const std::string& label) {
  if (auto err = CheckFrameHeader(src, n, declared_size, label)) return err;
  DCtxPtr dctx = MakeDCtx();
  ZSTD_inBuffer in{src, static_cast<size_t>(n), 0};
  uint64_t total = 0;
  for (;;) {
    ZSTD_outBuffer o{out, out_capacity, 0};
    size_t r = ZSTD_decompressStream(dctx.get(), &o, &in);
    if (ZSTD_isError(r)) return Corrupt(Cat(label, ": invalid zstd frame: ", ZSTD_getErrorName(r)));
    if (!AddU64(total, o.pos, &total) || total > declared_size) {
      return Corrupt(Cat(label, ": zstd frame decodes to more than its declared size ", declared_size));
    }
    if (r == 0) break;  // frame complete
    if (in.pos == in.size && o.pos < o.size) {
      return Corrupt(Cat(label, ": zstd frame is truncated (decoded ", total, " of ", declared_size, " bytes)"));
    }
  }
  if (in.pos != in.size) {
    return Corrupt(Cat(label, ": ", in.size - in.pos, " bytes follow the zstd frame"));
  }
  if (total != declared_size) {
    return Corrupt(Cat(label, ": zstd frame decodes to ", total, " bytes, section size is ", declared_size));
  }
  return std::nullopt;
}

}  // namespace

const char* CodeName(Code code) {
  switch (code) {
    case Code::kOk: return "OK";
    case Code::kDataCorrupt: return "DATA_CORRUPT";
    case Code::kIncompatible: return "INCOMPATIBLE";
    case Code::kResourceExhausted: return "RESOURCE_EXHAUSTED";
    case Code::kPermissionDenied: return "PERMISSION_DENIED";
  }
  return "UNKNOWN";
}

void SectionBytes::AlignedDelete::operator()(uint8_t* p) const {
  if (mapped != 0) {
    ::munmap(p, mapped);
  } else {
    ::operator delete[](p, std::align_val_t{64});
  }
}

SectionBytes SectionBytes::Borrowed(const uint8_t* data, uint64_t size) {
  SectionBytes b;
  b.data_ = data;
  b.size_ = size;
  return b;
}

SectionBytes SectionBytes::Allocate(uint64_t size) {
  if (size > SIZE_MAX - 64) throw std::bad_alloc();
  SectionBytes b;
  constexpr uint64_t kMapFrom = uint64_t{4} << 20;
  if (size >= kMapFrom) {
    const size_t length = static_cast<size_t>(size);
    void* m = ::mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) throw std::bad_alloc();
    ::madvise(m, length, MADV_HUGEPAGE);  // advice only: a refusal changes nothing but speed
    b.owned_ = std::unique_ptr<uint8_t[], AlignedDelete>(static_cast<uint8_t*>(m), AlignedDelete{length});
    b.data_ = b.owned_.get();
    b.size_ = size;
    return b;
  }
  // One byte more than asked so a zero-size section still gets a unique, non-null pointer.
  b.owned_.reset(static_cast<uint8_t*>(::operator new[](static_cast<size_t>(size) + 1, std::align_val_t{64})));
  b.data_ = b.owned_.get();
  b.size_ = size;
  return b;
}

std::string HexDigest(const std::array<uint8_t, 32>& digest) {
  static const char kHex[] = "0123456789abcdef";
  std::string s;
  s.reserve(64);
  for (uint8_t b : digest) {
    s.push_back(kHex[b >> 4]);
    s.push_back(kHex[b & 15]);
  }
  return s;
}

bool Sha256(const void* data, size_t size, std::array<uint8_t, 32>* out_digest) {
  unsigned int len = 0;
  return EVP_Digest(data, size, out_digest->data(), &len, EVP_sha256(), nullptr) == 1 && len == 32;
}

namespace {

// Hashing runs at ~1-2 GB/s per core and is most of a large bundle's load: sections are hashed on up to this many
// threads (a cuda variant stores its weights as 16 MiB parts so that they spread over them).
constexpr size_t kMaxVerifyThreads = 8;

// body(k) for every k in [0, n), spread over up to `threads` threads (this one included) that take the next k in
// turn; where no thread can be had, this thread does the rest.
template <typename Body>
void ForEachOnThreads(size_t n, size_t threads, const Body& body) {
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t k = next.fetch_add(1); k < n; k = next.fetch_add(1)) body(k);
  };
  std::vector<std::thread> helpers;
  for (size_t t = 1; t < threads; ++t) {
    try {
      helpers.emplace_back(work);
    } catch (const std::system_error&) {
      break;
    }
  }
  work();
  for (std::thread& helper : helpers) helper.join();
}

// The SHA-256 of every section's stored bytes (ok[i] false where libcrypto failed), on up to kMaxVerifyThreads
// threads, largest first, when there is enough to share (>= 4 MiB); the caller then checks them in table order, so
// the verdict does not depend on this.
struct SectionDigests {
  std::vector<std::array<uint8_t, 32>> digest;
  std::vector<char> ok;
};

SectionDigests HashSections(const uint8_t* data, const std::vector<SectionEntry>& sections) {
  const size_t n = sections.size();
  SectionDigests out{std::vector<std::array<uint8_t, 32>>(n), std::vector<char>(n, 0)};
  std::vector<size_t> order(n);
  uint64_t total = 0;
  for (size_t i = 0; i < n; ++i) {
    order[i] = i;
    total += sections[i].stored_size;  // sections lie inside the file: no overflow
  }
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return sections[a].stored_size > sections[b].stored_size; });
  constexpr uint64_t kParallelFrom = uint64_t{4} << 20;
  const size_t threads =
      total < kParallelFrom ? 1
                            : std::min<size_t>({kMaxVerifyThreads, n, std::max(1u, std::thread::hardware_concurrency())});
  ForEachOnThreads(n, threads, [&](size_t k) {
    const SectionEntry& e = sections[order[k]];
    out.ok[order[k]] = Sha256(data + e.offset, static_cast<size_t>(e.stored_size), &out.digest[order[k]]);
  });
  return out;
}

}  // namespace

namespace {

// Little-endian 256-bit integers as 4 64-bit limbs (limb 0 least significant).
using U256 = std::array<uint64_t, 4>;

U256 LoadU256(const uint8_t* p, bool clear_top_bit) {
  U256 v{};
  for (int i = 0; i < 4; ++i) v[i] = LoadLe(p + 8 * i, 8);
  if (clear_top_bit) v[3] &= ~(uint64_t{1} << 63);
  return v;
}

bool LessU256(const U256& a, const U256& b) {
  for (int i = 3; i >= 0; --i) {
    if (a[i] != b[i]) return a[i] < b[i];
  }
  return false;
}

// p = 2^255 - 19; L = 2^252 + 27742317777372353535851937790883648493 (RFC 8032).
constexpr U256 kFieldP = {0xffffffffffffffedull, 0xffffffffffffffffull, 0xffffffffffffffffull, 0x7fffffffffffffffull};
constexpr U256 kOrderL = {0x5812631a5cf5d3edull, 0x14def9dea2f79cd6ull, 0x0000000000000000ull, 0x1000000000000000ull};
// y-coordinates of the 8 small-order points: 0, 1, p - 1, y8, p - y8 (formats/python/xrtpkg/_signing.py derives
// them; tests/security/test_signature_edge_cases.py checks each has order <= 8).
constexpr U256 kSmallOrderY[] = {
    {0, 0, 0, 0},
    {1, 0, 0, 0},
    {0xffffffffffffffecull, 0xffffffffffffffffull, 0xffffffffffffffffull, 0x7fffffffffffffffull},
    {0xb027b2c28f95e826ull, 0xf098eff289f4c345ull, 0x3933c6d305acdfd5ull, 0x05fc536d880238b1ull},
    {0x4fd84d3d706a17c7ull, 0x0f67100d760b3cbaull, 0xc6cc392cfa53202aull, 0x7a03ac9277fdc74eull},
};

}  // namespace

std::string Ed25519EncodingProblem(const uint8_t* public_key, const uint8_t* signature) {
  const U256 y_key = LoadU256(public_key, true);
  if (!LessU256(y_key, kFieldP)) return "the public key is not canonically encoded (y >= 2^255 - 19)";
  for (const U256& y : kSmallOrderY) {
    if (y_key == y) return "the public key is a point of small order (it would verify forged signatures)";
  }
  if (!LessU256(LoadU256(signature, true), kFieldP)) {
    return "the signature's R is not canonically encoded (y >= 2^255 - 19)";
  }
  if (!LessU256(LoadU256(signature + 32, false), kOrderL)) {
    return "the signature's S is not reduced (S >= the group order L)";
  }
  return "";
}

bool VerifyEd25519(const uint8_t* public_key, const uint8_t* signature, const uint8_t* message,
                   size_t message_size) {
  if (!Ed25519EncodingProblem(public_key, signature).empty()) return false;
  EVP_PKEY* key = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nullptr, public_key, kPublicKeySize);
  if (key == nullptr) return false;
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  // Ed25519 is "pure": no digest is named; DigestVerify checks the whole message in one call.
  const bool ok = ctx != nullptr && EVP_DigestVerifyInit(ctx, nullptr, nullptr, nullptr, key) == 1 &&
                  EVP_DigestVerify(ctx, signature, kSignatureSize, message, message_size) == 1;
  EVP_MD_CTX_free(ctx);
  EVP_PKEY_free(key);
  return ok;
}

std::optional<size_t> Bundle::Find(std::string_view name) const {
  for (size_t i = 0; i < sections_.size(); ++i) {
    if (sections_[i].name == name) return i;
  }
  return std::nullopt;
}

Result<SectionBytes> Bundle::GetSection(size_t index) const {
  if (index >= sections_.size()) {
    return Error{Code::kDataCorrupt, Cat("section index ", index, " out of range (", sections_.size(), " sections)")};
  }
  const SectionEntry& e = sections_[index];
  const uint8_t* stored = nullptr;
  std::shared_ptr<const SectionBytes> verified;  // a bundle verified on use: the section's verified private copy
  if (lazy_) {
    auto r = VerifiedStored(index);
    if (!r.ok()) return std::move(r).error();
    verified = std::move(r).value();
    stored = verified->data();
    // The frame's header is checked before the output is allocated (Verify() did this at open).
    if (e.compressed()) {
      if (auto err = CheckFrameHeader(stored, e.stored_size, e.size, SectionLabel(index, e.name))) {
        return std::move(*err);
      }
    }
  } else {
    stored = data_ + e.offset;
  }
  if (!e.compressed()) return SectionBytes::Borrowed(stored, e.size);
  try {
    SectionBytes out = SectionBytes::Allocate(e.size);
    if (auto err = Decode(stored, e.stored_size, e.size, out.mutable_data(), static_cast<size_t>(e.size),
                          SectionLabel(index, e.name))) {
      return std::move(*err);
    }
    return out;
  } catch (const std::bad_alloc&) {
    return Exhausted(Cat(SectionLabel(index, e.name), ": cannot allocate ", e.size, " bytes to decompress it"));
  }
}

struct Bundle::LazyState {
  explicit LazyState(size_t n) : stored(n), locks(n) {}
  std::vector<std::shared_ptr<const SectionBytes>> stored;  // verified stored bytes, per section, once read
  std::vector<std::mutex> locks;                           // one per section: sections verify in parallel
  std::atomic<uint64_t> verify_ns{0};
};

Result<Bundle> Bundle::Verify(const uint8_t* data, size_t size, const VerifyOptions& options) {
  return VerifyImpl(data, size, options, nullptr);
}

// With `source`, `data` holds only the file's first min(size, table end) bytes (the header, then the table once it
// is known to fit): the padding and the manifest are read from `source`, other sections are left to GetSection().
Result<Bundle> Bundle::VerifyImpl(const uint8_t* data, size_t size, const VerifyOptions& options,
                                  const ByteSource* source) {
  const size_t span_size = size;  // `size` becomes the header's file_size once a signature trailer is checked
  // 1. size >= 64
  if (data == nullptr || size < kHeaderSize) {
    return Corrupt(Cat("file is ", size, " bytes, shorter than the ", kHeaderSize, "-byte header (truncated?)"));
  }
  // 2. magic
  if (std::memcmp(data, kMagic, sizeof(kMagic)) != 0) {
    // An ONNX file starts with field 1 (ir_version) as a varint, byte 0x08: users pass those by mistake.
    const char* onnx_hint =
        data[0] == 0x08 ? "; it looks like an ONNX model: compile it into a bundle first (xrtc compile MODEL.onnx)" : "";
    return Corrupt(Cat("bad magic ", ShowBytes(data, 8), ": not an .xrtpkg bundle (expected ",
                       ShowBytes(kMagic, 8), ")", onnx_hint));
  }
  Header h;
  h.major_version = static_cast<uint16_t>(LoadLe(data + 8, 2));
  h.minor_version = static_cast<uint16_t>(LoadLe(data + 10, 2));
  h.section_count = static_cast<uint32_t>(LoadLe(data + 12, 4));
  h.file_size = LoadLe(data + 16, 8);
  h.flags = LoadLe(data + 24, 8);
  std::memcpy(h.index_sha256.data(), data + 32, 32);
  // 3. major version
  if (h.major_version != kMajorVersion) {
    return Error{Code::kIncompatible,
                 Cat("bundle format version is ", h.major_version, ".", h.minor_version, ", this reader reads ",
                     kMajorVersion, ".x: rebuild the bundle with an xrtc that writes format ", kMajorVersion,
                     ".x, or use a runtime that reads format ", h.major_version, ".x")};
  }
  // 4. section count cap
  if (h.section_count == 0) return Corrupt("header section_count is 0 (a bundle holds at least the manifest)");
  if (h.section_count > kMaxSections) {
    return Exhausted(Cat("header section_count is ", h.section_count, ", over the cap of ", kMaxSections));
  }
  // 5. header flags: only SIGNED is defined
  if ((h.flags & ~kHeaderFlagSigned) != 0) {
    return Corrupt(Cat("header flags are 0x", std::hex, h.flags, std::dec,
                       "; only bit 0 (SIGNED) is defined (a format 1.0 bundle has 0 here)"));
  }
  const bool is_signed = (h.flags & kHeaderFlagSigned) != 0;
  // 6. file size: the header's file_size, plus the signature trailer when SIGNED
  {
    const uint64_t n = size;
    const bool fits = is_signed ? (n >= kSignatureTrailerSize && n - kSignatureTrailerSize == h.file_size)
                                : n == h.file_size;
    if (!fits) {
      const bool truncated = is_signed ? (n < kSignatureTrailerSize || n - kSignatureTrailerSize < h.file_size)
                                       : n < h.file_size;
      return Corrupt(Cat("header file_size is ", h.file_size, is_signed ? " + the 128-byte signature trailer" : "",
                         " but the file is ", size, " bytes (", truncated ? "truncated" : "trailing bytes", ")"));
    }
  }
  // 7. signature: a well-formed trailer whose Ed25519 signature matches bytes [0, file_size)
  std::optional<std::array<uint8_t, 32>> signer;
  if (is_signed) {
    const uint8_t* trailer = data + h.file_size;
    if (std::memcmp(trailer, kSignatureMagic, sizeof(kSignatureMagic)) != 0) {
      return Corrupt(Cat("signature trailer magic is ", ShowBytes(trailer, 8), ", expected ",
                         ShowBytes(kSignatureMagic, 8)));
    }
    const uint8_t* key = trailer + 8;
    const uint8_t* signature = key + kPublicKeySize;
    for (size_t i = 8 + kPublicKeySize + kSignatureSize; i < kSignatureTrailerSize; ++i) {
      if (trailer[i] != 0) return Corrupt("signature trailer's last 24 bytes (reserved) are not all zero");
    }
    std::array<uint8_t, 32> digest{};
    if (!Sha256(data, static_cast<size_t>(h.file_size), &digest)) {
      return Exhausted("libcrypto could not compute SHA-256");
    }
    signer.emplace();
    std::memcpy(signer->data(), key, kPublicKeySize);
    if (!VerifyEd25519(key, signature, digest.data(), digest.size())) {
      return Corrupt(Cat("the Ed25519 signature by key ", HexDigest(*signer),
                         " does not match the bundle's bytes: the bundle was modified after it was signed, or the "
                         "signature belongs to another bundle"));
    }
  }
  // 8. trust policy
  if (options.trusted_key_count > 0 || options.require_signature) {
    if (!signer) {
      return Error{Code::kPermissionDenied,
                   Cat("the bundle is not signed and ",
                       options.trusted_key_count > 0 ? Cat(options.trusted_key_count, " trusted key(s) were given")
                                                     : std::string("a signature is required"),
                       ": sign it with a trusted key (`xrtc sign BUNDLE --key KEY`)")};
    }
    if (options.trusted_key_count > 0) {
      bool trusted = false;
      for (size_t k = 0; k < options.trusted_key_count && !trusted; ++k) {
        trusted = std::memcmp(options.trusted_keys + k * kPublicKeySize, signer->data(), kPublicKeySize) == 0;
      }
      if (!trusted) {
        return Error{Code::kPermissionDenied,
                     Cat("the bundle is signed by key ", HexDigest(*signer), ", which is not among the ",
                         options.trusted_key_count, " trusted key(s): re-sign it with a trusted key, or add this "
                         "public key to the trusted keys if you trust its holder")};
      }
    }
  }
  size = static_cast<size_t>(h.file_size);  // the bundle proper: the trailer is not part of any later check
  // 9. table fits in the file
  const uint64_t table_end = kHeaderSize + kEntrySize * h.section_count;  // <= 64 + 96 * 1024: no overflow
  if (table_end > size) {
    return Corrupt(Cat("section table of ", h.section_count, " entries ends at ", table_end, ", past the end of the ",
                       size, "-byte file"));
  }
  // 10. index_sha256 over header [0, 32) + the whole table
  {
    std::array<uint8_t, 32> digest{};
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    unsigned int len = 0;
    bool ok = ctx != nullptr && EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr) == 1 &&
              EVP_DigestUpdate(ctx, data, 32) == 1 &&
              EVP_DigestUpdate(ctx, data + kHeaderSize, static_cast<size_t>(table_end - kHeaderSize)) == 1 &&
              EVP_DigestFinal_ex(ctx, digest.data(), &len) == 1 && len == 32;
    EVP_MD_CTX_free(ctx);
    if (!ok) return Exhausted("libcrypto could not compute SHA-256");
    if (digest != h.index_sha256) {
      return Corrupt(Cat("index_sha256 mismatch: header says ", HexDigest(h.index_sha256), ", header+table hash to ",
                         HexDigest(digest)));
    }
  }
  // 11. per entry, in table order: name, flags, reserved, layout, caps
  Bundle b;
  b.data_ = data;
  b.size_ = span_size;
  b.header_ = h;
  b.signer_ = signer;
  b.sections_.reserve(h.section_count);
  std::unordered_set<std::string> names;
  uint64_t expected_offset = 0;
  if (!Align64(table_end, &expected_offset)) return Corrupt("section table end overflows");
  uint64_t end = 0;
  uint64_t total_decompressed = 0;  // declared decompressed bytes of the compressed sections so far
  for (uint32_t i = 0; i < h.section_count; ++i) {
    const uint8_t* p = data + kHeaderSize + kEntrySize * i;
    SectionEntry e;
    if (auto err = CheckName(p, i, &e.name)) return std::move(*err);
    if (i == 0 && e.name != kManifestName) {
      return Corrupt(Cat("section 0 is named \"", e.name, "\"; the first section must be \"", kManifestName, "\""));
    }
    if (!names.insert(e.name).second) return Corrupt(Cat(SectionLabel(i, e.name), ": duplicate section name"));
    const std::string label = SectionLabel(i, e.name);
    e.flags = static_cast<uint32_t>(LoadLe(p + 32, 4));
    if ((e.flags & ~kFlagZstd) != 0) {
      return Corrupt(Cat(label, ": flags are 0x", std::hex, e.flags, std::dec, "; only bit 0 (ZSTD) is defined"));
    }
    const uint64_t reserved = LoadLe(p + 36, 4);
    if (reserved != 0) return Corrupt(Cat(label, ": reserved field is ", reserved, ", must be 0"));
    e.offset = LoadLe(p + 40, 8);
    e.stored_size = LoadLe(p + 48, 8);
    e.size = LoadLe(p + 56, 8);
    std::memcpy(e.sha256.data(), p + 64, 32);
    // layout
    if (e.offset != expected_offset) {
      return Corrupt(Cat(label, ": offset is ", e.offset, ", expected ", expected_offset, " (align64 of the ",
                         i == 0 ? "section table's end)" : "previous section's end)"));
    }
    if (!AddU64(e.offset, e.stored_size, &end) || end > size) {
      return Corrupt(Cat(label, ": offset ", e.offset, " + stored_size ", e.stored_size,
                         " runs past the end of the ", size, "-byte file"));
    }
    if (!e.compressed() && e.size != e.stored_size) {
      return Corrupt(Cat(label, ": uncompressed but size ", e.size, " != stored_size ", e.stored_size));
    }
    if (e.compressed() && e.stored_size == 0) {
      return Corrupt(Cat(label, ": compressed with stored_size 0 (an empty section must be stored uncompressed)"));
    }
    // caps
    if (e.compressed() && e.size > kMaxCompressedSize) {
      return Exhausted(Cat(label, ": compressed section size ", e.size, " is over the cap of ", kMaxCompressedSize,
                           " bytes (2 GiB)"));
    }
    if (i == 0 && e.size > kMaxManifestSize) {
      return Exhausted(Cat(label, ": manifest size ", e.size, " is over the cap of ", kMaxManifestSize,
                           " bytes (16 MiB)"));
    }
    if (e.compressed()) {
      total_decompressed += e.size;  // each term <= 2^31, at most 1024 of them: no overflow
      if (total_decompressed > kMaxTotalDecompressed) {
        return Exhausted(Cat(label, ": the compressed sections up to this one declare ", total_decompressed,
                             " bytes decompressed in all, over the per-bundle cap of ", kMaxTotalDecompressed,
                             " bytes (4 GiB)"));
      }
    }
    if (!Align64(end, &expected_offset)) return Corrupt(Cat(label, ": end offset overflows"));
    b.sections_.push_back(std::move(e));
  }
  // 12. trailing bytes: the file ends where the last section ends
  if (end != size) {
    return Corrupt(Cat("the last section ends at ", end, " but the file is ", size, " bytes (trailing bytes)"));
  }
  // 13. padding: every byte between the table and section 0, and between sections, is zero
  {
    uint64_t gap_start = table_end;
    uint8_t gap[64];  // a gap is alignment padding: at most 63 bytes
    for (size_t i = 0; i <= b.sections_.size(); ++i) {
      const uint64_t gap_end = i < b.sections_.size() ? b.sections_[i].offset : gap_start;
      const uint8_t* bytes = data + gap_start;
      if (source != nullptr && gap_end > gap_start) {
        if (auto err = source->Read(gap_start, static_cast<size_t>(gap_end - gap_start), gap)) return std::move(*err);
        bytes = gap;
      }
      for (uint64_t k = gap_start; k < gap_end; ++k) {
        if (bytes[k - gap_start] != 0) {
          return Corrupt(Cat("non-zero padding byte 0x", std::hex, static_cast<int>(bytes[k - gap_start]), std::dec,
                             " at offset ", k, i == 0 ? " (before section 0)" : Cat(" (after section ", i - 1, ")")));
        }
      }
      if (i < b.sections_.size()) gap_start = b.sections_[i].offset + b.sections_[i].stored_size;
    }
  }
  // 14. per section, in table order: sha256 of the stored bytes, then the zstd frame checks
  std::shared_ptr<SectionBytes> manifest_stored;  // verified on use: the manifest's stored bytes, read from `source`
  try {
    std::unique_ptr<uint8_t[]> scratch;
    const size_t scratch_size = ZSTD_DStreamOutSize();
    // Verified on use: only the manifest here, read into private memory (kept: GetSection(0) lends it later).
    if (source != nullptr) {
      const SectionEntry& e = b.sections_[0];
      manifest_stored = std::make_shared<SectionBytes>(SectionBytes::Allocate(e.stored_size));
      if (auto err = source->Read(e.offset, static_cast<size_t>(e.stored_size), manifest_stored->mutable_data())) {
        return std::move(*err);
      }
    }
    SectionDigests digests;
    if (source != nullptr) {
      digests.digest.resize(1);
      digests.ok.assign(1, Sha256(manifest_stored->data(), static_cast<size_t>(b.sections_[0].stored_size),
                                  &digests.digest[0]));
    } else {
      digests = HashSections(data, b.sections_);
    }
    for (size_t i = 0; i < digests.digest.size(); ++i) {
      const SectionEntry& e = b.sections_[i];
      const std::string label = SectionLabel(i, e.name);
      const uint8_t* stored = source != nullptr ? manifest_stored->data() : data + e.offset;
      const std::array<uint8_t, 32>& digest = digests.digest[i];
      if (!digests.ok[i]) return Exhausted("libcrypto could not compute SHA-256");
      if (digest != e.sha256) {
        return Corrupt(Cat(label, ": sha256 mismatch: table says ", HexDigest(e.sha256), ", stored bytes hash to ",
                           HexDigest(digest)));
      }
      if (!e.compressed()) {
        if (i == 0) b.manifest_text_.assign(reinterpret_cast<const char*>(stored), static_cast<size_t>(e.size));
        continue;
      }
      if (i == 0) {
        // The manifest (<= 16 MiB) is decompressed once, straight into the text kept for the bundle's lifetime.
        b.manifest_text_.resize(static_cast<size_t>(e.size));
        if (auto err = Decode(stored, e.stored_size, e.size, reinterpret_cast<uint8_t*>(b.manifest_text_.data()),
                              b.manifest_text_.size(), label)) {
          return std::move(*err);
        }
        continue;
      }
      // Other sections are decoded into bounded scratch memory and counted; GetSection() materialises them.
      if (!scratch) scratch.reset(new uint8_t[scratch_size]);
      if (auto err = Decode(stored, e.stored_size, e.size, scratch.get(), scratch_size, label)) {
        return std::move(*err);
      }
    }
  } catch (const std::bad_alloc&) {
    return Exhausted("out of memory while verifying compressed sections");
  }
  // 15. the manifest: a JSON object (RFC 8259 strictly: nlohmann would skip a byte order mark, so reject it first)
  if (b.manifest_text_.compare(0, 3, "\xef\xbb\xbf") == 0) {
    return Corrupt("section 0 (\"manifest\"): not valid JSON: starts with a UTF-8 byte order mark");
  }
  // A raw NUL is never valid JSON, but nlohmann's lexer takes it for the end of input ("{}\0junk" would pass).
  if (const size_t nul = b.manifest_text_.find('\0'); nul != std::string::npos) {
    return Corrupt(Cat("section 0 (\"manifest\"): not valid JSON: NUL byte at offset ", nul));
  }
  // Nesting cap, checked on the text before the DOM is built (16 MiB of '[' would otherwise build 16M nodes).
  if (auto err = CheckJsonDepth(b.manifest_text_)) return std::move(*err);
  std::unique_ptr<nlohmann::json> json;
  try {
    // nlohmann's parser is iterative (an explicit stack), so deep nesting cannot overflow the call stack.
    json = std::make_unique<nlohmann::json>(nlohmann::json::parse(b.manifest_text_));
  } catch (const nlohmann::json::parse_error& e) {
    return Corrupt(Cat("section 0 (\"manifest\"): not valid JSON: ", e.what()));
  } catch (const std::bad_alloc&) {
    return Exhausted("section 0 (\"manifest\"): out of memory while parsing");
  } catch (const std::exception& e) {
    return Corrupt(Cat("section 0 (\"manifest\"): not valid JSON: ", e.what()));
  }
  if (!json->is_object()) {
    return Corrupt(Cat("section 0 (\"manifest\"): JSON is a ", json->type_name(), ", must be an object"));
  }
  if (auto err = CheckNoNulStrings(*json)) return std::move(*err);
  b.manifest_ = std::move(json);
  if (source != nullptr) {
    b.data_ = nullptr;
    b.lazy_ = std::make_shared<LazyState>(b.sections_.size());
    b.lazy_->stored[0] = std::move(manifest_stored);
  }
  return b;
}

// ---- Verification on use ----

bool Bundle::NeedsWholeFile(const uint8_t* header, size_t size) {
  return size < kHeaderSize || (LoadLe(header + 24, 8) & kHeaderFlagSigned) != 0;
}

Result<Bundle> Bundle::VerifyIndex(std::shared_ptr<const ByteSource> source, uint64_t size,
                                   const VerifyOptions& options) {
  if (size > SIZE_MAX) return Exhausted(Cat("the file is ", size, " bytes, more than this process can address"));
  uint8_t header[kHeaderSize] = {};
  const size_t head = static_cast<size_t>(std::min<uint64_t>(size, kHeaderSize));
  if (auto err = source->Read(0, head, header)) return std::move(*err);
  if (NeedsWholeFile(header, head)) {
    // The signature covers every byte: verify the whole file, read into memory this Bundle keeps.
    std::shared_ptr<SectionBytes> whole;
    try {
      whole = std::make_shared<SectionBytes>(SectionBytes::Allocate(size));
    } catch (const std::bad_alloc&) {
      return Exhausted(Cat("cannot allocate ", size, " bytes to read a signed bundle"));
    }
    if (auto err = source->Read(0, static_cast<size_t>(size), whole->mutable_data())) return std::move(*err);
    auto verified = Verify(whole->data(), static_cast<size_t>(size), options);
    if (!verified.ok()) return std::move(verified).error();
    Bundle b = std::move(verified).value();
    b.keep_alive_ = std::move(whole);
    return b;
  }
  // The prefix VerifyImpl() interprets: the header, then the table when its entry count is within the cap and it
  // fits in the file (otherwise VerifyImpl() rejects the bundle before it looks past the header).
  const uint32_t count = static_cast<uint32_t>(LoadLe(header + 12, 4));
  std::vector<uint8_t> prefix(header, header + kHeaderSize);
  const uint64_t table_end = kHeaderSize + kEntrySize * std::min(count, kMaxSections);
  if (count >= 1 && count <= kMaxSections && table_end <= size) {
    prefix.resize(static_cast<size_t>(table_end));
    if (auto err = source->Read(kHeaderSize, prefix.size() - kHeaderSize, prefix.data() + kHeaderSize)) {
      return std::move(*err);
    }
  }
  try {
    auto verified = VerifyImpl(prefix.data(), static_cast<size_t>(size), options, source.get());
    if (!verified.ok()) return verified;
    Bundle b = std::move(verified).value();
    b.source_ = std::move(source);
    return b;
  } catch (const std::bad_alloc&) {
    return Exhausted("out of memory while verifying the bundle's index and manifest");
  }
}

Result<std::shared_ptr<const SectionBytes>> Bundle::VerifiedStored(size_t index) const {
  std::lock_guard<std::mutex> hold(lazy_->locks[index]);
  if (lazy_->stored[index]) return lazy_->stored[index];
  const auto start = std::chrono::steady_clock::now();
  const SectionEntry& e = sections_[index];
  const std::string label = SectionLabel(index, e.name);
  std::shared_ptr<SectionBytes> bytes;
  try {
    bytes = std::make_shared<SectionBytes>(SectionBytes::Allocate(e.stored_size));
  } catch (const std::bad_alloc&) {
    return Exhausted(Cat(label, ": cannot allocate ", e.stored_size, " bytes to read it"));
  }
  // Read in bounded steps and hash each step while it is in cache; the copy is private, so what is verified here is
  // what every later caller gets.
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) {
    return Exhausted("libcrypto could not compute SHA-256");
  }
  constexpr uint64_t kStep = uint64_t{8} << 20;
  for (uint64_t done = 0; done < e.stored_size;) {
    const size_t n = static_cast<size_t>(std::min(kStep, e.stored_size - done));
    if (auto err = source_->Read(e.offset + done, n, bytes->mutable_data() + done)) {
      return Error{err->code, Cat(label, ": ", err->message)};
    }
    if (EVP_DigestUpdate(ctx.get(), bytes->data() + done, n) != 1) return Exhausted("libcrypto could not compute SHA-256");
    done += n;
  }
  std::array<uint8_t, 32> digest{};
  unsigned int len = 0;
  if (EVP_DigestFinal_ex(ctx.get(), digest.data(), &len) != 1 || len != 32) {
    return Exhausted("libcrypto could not compute SHA-256");
  }
  if (digest != e.sha256) {
    return Corrupt(Cat(label, ": sha256 mismatch: table says ", HexDigest(e.sha256), ", stored bytes hash to ",
                       HexDigest(digest), " (checked on first use: the section is corrupt, or the file changed after "
                       "it was opened)"));
  }
  lazy_->stored[index] = bytes;
  lazy_->verify_ns += static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start).count());
  return std::shared_ptr<const SectionBytes>(std::move(bytes));
}

std::optional<Error> Bundle::Prefetch(const std::vector<size_t>& indices) const {
  if (!lazy_) return std::nullopt;
  for (size_t i : indices) {
    if (i >= sections_.size()) return Corrupt(Cat("section index ", i, " out of range (", sections_.size(), ")"));
  }
  std::vector<std::optional<Error>> errors(indices.size());
  const size_t threads =
      std::min<size_t>({kMaxVerifyThreads, indices.size(), std::max(1u, std::thread::hardware_concurrency())});
  const auto start = std::chrono::steady_clock::now();
  const uint64_t before = lazy_->verify_ns;
  ForEachOnThreads(indices.size(), threads, [&](size_t k) {
    auto r = VerifiedStored(indices[k]);
    if (!r.ok()) errors[k] = std::move(r).error();
  });
  // the time it took (wall), not the sum over the threads that each section's verification added
  lazy_->verify_ns = before + static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start).count());
  for (auto& err : errors) {
    if (err) return std::move(*err);
  }
  return std::nullopt;
}

double Bundle::section_verify_seconds() const { return lazy_ ? static_cast<double>(lazy_->verify_ns) / 1e9 : 0.0; }

}  // namespace xrt::format
