// xrtpkg_reader.h - verifying reader for .xrtpkg bundles (formats/xrtpkg.md, version 1.x).
//
// The reader treats every bundle as hostile. Verify() runs the spec's checks in the spec's order over a borrowed
// byte span and returns either a verified view or a rejection whose code is the spec's verdict. Nothing in a
// bundle is trusted before its check has passed; all size arithmetic is checked 64-bit. A signed bundle's Ed25519
// signature, and the caller's trust policy (VerifyOptions), are checked before anything past the 64-byte header.
//
// Thread-safety: a verified Bundle is immutable; every const method may be called concurrently.
#ifndef XRT_FORMATS_CPP_XRTPKG_READER_H_
#define XRT_FORMATS_CPP_XRTPKG_READER_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

namespace xrt::format {

inline constexpr uint16_t kMajorVersion = 1;
inline constexpr uint16_t kMinorVersion = 0;        // the minor of unsigned bundles; readers accept any 1.x
inline constexpr uint16_t kSignedMinorVersion = 1;  // signed bundles (1.1) are marked with this minor
inline constexpr uint8_t kMagic[8] = {0x89, 'X', 'R', 'T', '\r', '\n', 0x1a, '\n'};
inline constexpr uint64_t kHeaderSize = 64;
inline constexpr uint64_t kEntrySize = 96;
inline constexpr uint32_t kMaxSections = 1024;
inline constexpr size_t kMaxNameLength = 31;
inline constexpr uint32_t kFlagZstd = 1;
inline constexpr uint64_t kHeaderFlagSigned = 1;  // header flags (offset 24): bit 0 = SIGNED
// A signed bundle ends with this trailer after file_size bytes: magic | Ed25519 public key (32) | Ed25519 signature
// (64) of SHA-256(bytes [0, file_size)) | 24 zero bytes.
inline constexpr uint8_t kSignatureMagic[8] = {'X', 'R', 'T', 'S', 'I', 'G', 1, 0};
inline constexpr uint64_t kSignatureTrailerSize = 128;
inline constexpr size_t kPublicKeySize = 32;
inline constexpr size_t kSignatureSize = 64;
inline constexpr uint64_t kMaxCompressedSize = uint64_t{1} << 31;  // decompressed size cap of a zstd section
inline constexpr uint64_t kMaxManifestSize = uint64_t{16} << 20;   // decompressed size cap of the manifest
// Cap on the sum of the compressed sections' declared decompressed sizes in one bundle: bounds what verifying a
// bundle decompresses (uncompressed sections are bounded by the file itself).
inline constexpr uint64_t kMaxTotalDecompressed = uint64_t{1} << 32;
inline constexpr int kMaxWindowLog = 27;                            // zstd window cap: 2^27 bytes
inline constexpr std::string_view kManifestName = "manifest";

// The verdicts of formats/xrtpkg.md; names and meaning match xrt_status_code_t.
enum class Code {
  kOk = 0,
  kDataCorrupt,        // structure or digest check failed
  kIncompatible,       // another format major
  kResourceExhausted,  // a format cap is exceeded, or memory for a decompressed section could not be allocated
  kPermissionDenied,   // the trust policy refuses the bundle: unsigned, or signed by a key that is not trusted
};

// "OK", "DATA_CORRUPT", "INCOMPATIBLE", "RESOURCE_EXHAUSTED", "PERMISSION_DENIED".
const char* CodeName(Code code);

struct Error {
  Code code = Code::kDataCorrupt;
  std::string message;  // names the field or section and the values found / expected
};

// A value or an Error. Move-only; an Error never carries kOk.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}  // NOLINT: implicit by design
  Result(Error error) : v_(std::in_place_index<1>, std::move(error)) {  // NOLINT: implicit by design
    if (std::get<1>(v_).code == Code::kOk) std::get<1>(v_).code = Code::kDataCorrupt;
  }
  Result(Result&&) noexcept = default;
  Result& operator=(Result&&) noexcept = default;
  Result(const Result&) = delete;
  Result& operator=(const Result&) = delete;

  bool ok() const { return v_.index() == 0; }
  // Precondition: ok().
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  // Precondition: !ok().
  const Error& error() const& { return std::get<1>(v_); }
  Error&& error() && { return std::get<1>(std::move(v_)); }

 private:
  std::variant<T, Error> v_;
};

struct Header {
  uint16_t major_version = 0;
  uint16_t minor_version = 0;
  uint32_t section_count = 0;
  uint64_t file_size = 0;  // the bundle proper; a signed bundle's 128-byte trailer follows it
  uint64_t flags = 0;      // kHeaderFlagSigned or 0
  std::array<uint8_t, 32> index_sha256{};
};

// The caller's signature policy. A signed bundle's signature is verified whatever the policy (it proves the bytes
// are what the embedded key signed, not who holds that key). With trusted keys, a bundle must be signed by one of
// them; with require_signature (and no keys), by any key. Either refuses an unsigned bundle. Refusals are
// kPermissionDenied.
struct VerifyOptions {
  const uint8_t* trusted_keys = nullptr;  // trusted_key_count raw 32-byte Ed25519 public keys; borrowed for Verify()
  size_t trusted_key_count = 0;
  bool require_signature = false;
};

struct SectionEntry {
  std::string name;
  uint32_t flags = 0;
  uint64_t offset = 0;
  uint64_t stored_size = 0;
  uint64_t size = 0;
  std::array<uint8_t, 32> sha256{};  // of the stored bytes

  bool compressed() const { return (flags & kFlagZstd) != 0; }
};

// A section's decompressed bytes: borrowed from the bundle's span for an uncompressed section, owned (64-byte
// aligned) for a zstd one. Move-only. Borrowed bytes live as long as the span handed to Verify().
class SectionBytes {
 public:
  SectionBytes() = default;
  SectionBytes(SectionBytes&&) noexcept = default;
  SectionBytes& operator=(SectionBytes&&) noexcept = default;

  static SectionBytes Borrowed(const uint8_t* data, uint64_t size);
  // Allocates `size` bytes, 64-byte aligned (large ones as an anonymous mapping advised to use huge pages: reading
  // and verifying a 100 MB section then takes ~500x fewer page faults). Throws std::bad_alloc.
  static SectionBytes Allocate(uint64_t size);

  const uint8_t* data() const { return data_; }
  uint8_t* mutable_data() { return owned_.get(); }  // non-null only for owned bytes
  uint64_t size() const { return size_; }
  bool owned() const { return owned_ != nullptr; }
  std::string_view view() const { return {reinterpret_cast<const char*>(data_), static_cast<size_t>(size_)}; }

 private:
  struct AlignedDelete {
    // 0 (value-initialised): from operator new[]; else the length of an anonymous mapping (large sections).
    size_t mapped;
    void operator()(uint8_t* p) const;
  };
  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
  std::unique_ptr<uint8_t[], AlignedDelete> owned_;
};

// Random access to a bundle's bytes for a reader that verifies sections on first use (Bundle::VerifyIndex), e.g. a
// file read with pread. Read() may be called from several threads at once.
class ByteSource {
 public:
  virtual ~ByteSource() = default;
  // Fills out[0, n) with the bytes at [offset, offset + n). An Error (kDataCorrupt, naming what failed) when they
  // cannot all be read: the file shrank or the OS refused.
  virtual std::optional<Error> Read(uint64_t offset, size_t n, uint8_t* out) const = 0;
};

// A verified bundle. Either fully verified over a borrowed span (Verify(): the span must outlive the Bundle and every
// SectionBytes it lent), or verified on use over a ByteSource (VerifyIndex(): header, table, padding and manifest at
// open; each other section the first time GetSection() asks for it).
class Bundle {
 public:
  // Runs every check of formats/xrtpkg.md, in the spec's order: structure, every section digest, every zstd
  // frame (decompressed once, into bounded scratch memory, and counted), the manifest's JSON.
  // Precondition: options.trusted_keys is non-null when options.trusted_key_count > 0 (callers check arguments).
  static Result<Bundle> Verify(const uint8_t* data, size_t size, const VerifyOptions& options = {});
  // Verification on use (formats/xrtpkg.md, "Verification on use"): runs the checks of Verify() in the same order
  // except the sha256 and zstd checks of sections other than the manifest, which GetSection() runs on each section
  // before it first hands out its bytes. `size` is the file's length. Only for unsigned bundles: a signed bundle's
  // signature covers every byte, so callers verify it whole with Verify() (see NeedsWholeFile()); given one anyway,
  // this reads it whole into memory and verifies it so.
  static Result<Bundle> VerifyIndex(std::shared_ptr<const ByteSource> source, uint64_t size,
                                    const VerifyOptions& options = {});
  // Whether a file whose first min(64, size) bytes are `header` must be verified whole with Verify(): signed bundles
  // and files too short to hold a header (Verify() gives their verdict).
  static bool NeedsWholeFile(const uint8_t* header, size_t size);

  Bundle(Bundle&&) noexcept = default;
  Bundle& operator=(Bundle&&) noexcept = default;
  Bundle(const Bundle&) = delete;
  Bundle& operator=(const Bundle&) = delete;

  const Header& header() const { return header_; }
  const std::vector<SectionEntry>& sections() const { return sections_; }
  // Index of the section with this name, or nullopt.
  std::optional<size_t> Find(std::string_view name) const;
  // The decompressed bytes of section `index` (< sections().size()). For a zstd section this decompresses into a
  // new buffer of exactly the declared size (RESOURCE_EXHAUSTED if it cannot be allocated). On a bundle verified on
  // use, the first call for a section reads its stored bytes from the source into private memory (bounded steps),
  // checks their sha256 and zstd frame there (DATA_CORRUPT naming the section: the bytes an engine reads are the
  // bytes that were verified, whatever happens to the file later) and keeps them for the bundle's lifetime, which
  // is then how long uncompressed bytes it lends stay valid.
  Result<SectionBytes> GetSection(size_t index) const;
  // Verifies sections `indices` of a bundle verified on use now, on up to 4 threads (hashing is ~2 GB/s per core),
  // so later GetSection() calls find them ready. The first failure in `indices` order; a no-op on a Verify()'d one.
  std::optional<Error> Prefetch(const std::vector<size_t>& indices) const;
  // Whether sections are verified on use (VerifyIndex()); and the time spent so far reading and verifying them.
  bool verifies_on_use() const { return lazy_ != nullptr; }
  double section_verify_seconds() const;
  // The manifest's UTF-8 JSON text (decompressed) and its parse (a JSON object).
  const std::string& manifest_text() const { return manifest_text_; }
  const nlohmann::json& manifest() const { return *manifest_; }
  // The verified span (Verify()); nullptr on a bundle verified on use. size() is the file's length either way.
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  // The raw Ed25519 public key whose valid signature the bundle carries, or nullopt when it is unsigned.
  const std::optional<std::array<uint8_t, 32>>& signer() const { return signer_; }

 private:
  struct LazyState;
  Bundle() = default;
  static Result<Bundle> VerifyImpl(const uint8_t* data, size_t size, const VerifyOptions& options,
                                   const ByteSource* source);
  Result<std::shared_ptr<const SectionBytes>> VerifiedStored(size_t index) const;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  Header header_;
  std::vector<SectionEntry> sections_;
  std::string manifest_text_;
  std::unique_ptr<nlohmann::json> manifest_;  // heap: keeps Bundle cheap to move
  std::optional<std::array<uint8_t, 32>> signer_;
  std::shared_ptr<const ByteSource> source_;  // set for a bundle verified on use
  std::shared_ptr<LazyState> lazy_;           // its verified sections (heap: keeps Bundle movable)
  std::shared_ptr<const void> keep_alive_;    // VerifyIndex() of a signed bundle: the whole file, read into memory
};

// Lower-case hex of a digest, for messages and tests.
std::string HexDigest(const std::array<uint8_t, 32>& digest);
// SHA-256 of `data` (OpenSSL EVP). Returns false only if libcrypto fails.
bool Sha256(const void* data, size_t size, std::array<uint8_t, 32>* out_digest);
// Whether `signature` (64 bytes) is a valid Ed25519 signature of `message` by `public_key` (32 raw bytes), with
// OpenSSL's EVP. False for a key that is not a curve point, a malformed signature, or a libcrypto failure, and
// for anything Ed25519EncodingProblem() refuses.
bool VerifyEd25519(const uint8_t* public_key, const uint8_t* signature, const uint8_t* message, size_t message_size);
// Why a key/signature pair is refused before any curve arithmetic, or "" if it is not: a key encoding a point of
// small order (any of the 8, either sign bit; such a key verifies forged signatures) or not canonical (y >= p), a
// signature whose R is not canonical or whose S >= L. The Python reader applies the same rules.
std::string Ed25519EncodingProblem(const uint8_t* public_key, const uint8_t* signature);

}  // namespace xrt::format

#endif  // XRT_FORMATS_CPP_XRTPKG_READER_H_
