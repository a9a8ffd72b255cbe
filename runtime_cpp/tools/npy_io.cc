// npy_io.cc - see npy_io.h. Format reference: numpy/lib/format.py ("NPY format", versions 1.0-3.0).

#include "npy_io.h"

#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zip.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <memory>
#include <sstream>

namespace xrt {
namespace tools {
namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicSize = 6;
// Fixed member timestamp (1980-01-02, the DOS epoch plus a day to stay clear of time-zone underflow) so that equal
// outputs give equal .npz bytes.
constexpr time_t kFixedMtime = 315619200;

struct DescrEntry {
  const char* descr;
  xrt_dtype_t dtype;
};
// '<' = little-endian, '|' = not applicable (one byte). numpy never writes '=' in files, but accept it as native
// (little-endian on every platform xrt supports).
constexpr DescrEntry kDescrs[] = {
    {"<f4", XRT_DTYPE_FLOAT32}, {"<f2", XRT_DTYPE_FLOAT16}, {"<f8", XRT_DTYPE_FLOAT64}, {"|i1", XRT_DTYPE_INT8},
    {"|u1", XRT_DTYPE_UINT8},   {"<i2", XRT_DTYPE_INT16},   {"<u2", XRT_DTYPE_UINT16},  {"<i4", XRT_DTYPE_INT32},
    {"<u4", XRT_DTYPE_UINT32},  {"<i8", XRT_DTYPE_INT64},   {"<u8", XRT_DTYPE_UINT64},  {"|b1", XRT_DTYPE_BOOL},
};

bool MulOverflows(uint64_t a, uint64_t b, uint64_t* out) {
  if (a != 0 && b > std::numeric_limits<uint64_t>::max() / a) return true;
  *out = a * b;
  return false;
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  if (shape.size() == 1) s += ",";
  return s + ")";
}

// The parsed header dict.
struct Header {
  std::string descr;
  bool fortran_order = false;
  std::vector<int64_t> shape;
  size_t data_offset = 0;
};

// A parser for the one Python literal numpy writes: {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
class HeaderParser {
 public:
  HeaderParser(const std::string& text, const std::string& what) : s_(text), what_(what) {}

  void Parse(Header* h) {
    bool have_descr = false, have_order = false, have_shape = false;
    Expect('{');
    while (true) {
      SkipSpace();
      if (Peek() == '}') break;
      const std::string key = ParseString();
      Expect(':');
      SkipSpace();
      if (key == "descr") {
        if (Peek() == '[') {
          Fail("structured arrays (record dtypes) are not supported; save each field as its own array");
        }
        h->descr = ParseString();
        have_descr = true;
      } else if (key == "fortran_order") {
        h->fortran_order = ParseBool();
        have_order = true;
      } else if (key == "shape") {
        h->shape = ParseShape();
        have_shape = true;
      } else {
        Fail("unexpected header key '" + key + "'");
      }
      SkipSpace();
      if (Peek() == ',') {
        ++pos_;
        continue;
      }
      SkipSpace();
      if (Peek() != '}') Fail("expected ',' or '}' in the header");
    }
    if (!have_descr || !have_order || !have_shape) {
      Fail("the header lacks one of 'descr', 'fortran_order', 'shape'");
    }
  }

 private:
  [[noreturn]] void Fail(const std::string& why) const {
    throw NpyError(what_ + ": not a valid .npy file: " + why);
  }
  char Peek() const { return pos_ < s_.size() ? s_[pos_] : '\0'; }
  void SkipSpace() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r')) {
      ++pos_;
    }
  }
  void Expect(char c) {
    SkipSpace();
    if (Peek() != c) Fail(std::string("expected '") + c + "' in the header");
    ++pos_;
  }
  std::string ParseString() {
    SkipSpace();
    const char quote = Peek();
    if (quote != '\'' && quote != '"') Fail("expected a quoted string in the header");
    ++pos_;
    const size_t end = s_.find(quote, pos_);
    if (end == std::string::npos) Fail("unterminated string in the header");
    std::string out = s_.substr(pos_, end - pos_);
    pos_ = end + 1;
    return out;
  }
  bool ParseBool() {
    if (s_.compare(pos_, 4, "True") == 0) {
      pos_ += 4;
      return true;
    }
    if (s_.compare(pos_, 5, "False") == 0) {
      pos_ += 5;
      return false;
    }
    Fail("fortran_order must be True or False");
  }
  std::vector<int64_t> ParseShape() {
    std::vector<int64_t> shape;
    Expect('(');
    while (true) {
      SkipSpace();
      if (Peek() == ')') {
        ++pos_;
        break;
      }
      if (Peek() < '0' || Peek() > '9') Fail("shape entries must be non-negative integers");
      uint64_t v = 0;
      while (Peek() >= '0' && Peek() <= '9') {
        if (MulOverflows(v, 10, &v) || v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) - 9) {
          Fail("shape entry too large");
        }
        v += static_cast<uint64_t>(Peek() - '0');
        ++pos_;
      }
      if (Peek() == 'L') ++pos_;  // Python 2 long literal, in files written by old numpy.
      shape.push_back(static_cast<int64_t>(v));
      if (shape.size() > XRT_MAX_RANK) Fail("rank above " + std::to_string(XRT_MAX_RANK));
      SkipSpace();
      if (Peek() == ',') {
        ++pos_;
      } else if (Peek() != ')') {
        Fail("expected ',' or ')' in the shape");
      }
    }
    return shape;
  }

  const std::string& s_;
  const std::string& what_;
  size_t pos_ = 0;
};

Header ParseHeader(const uint8_t* bytes, size_t size, const std::string& what) {
  if (size < kMagicSize + 4 || std::memcmp(bytes, kMagic, kMagicSize) != 0) {
    throw NpyError(what + ": not a .npy file (bad magic; write it with numpy.save)");
  }
  const uint8_t major = bytes[6];
  size_t header_len = 0;
  size_t prefix = 0;
  if (major == 1) {
    header_len = static_cast<size_t>(bytes[8]) | (static_cast<size_t>(bytes[9]) << 8);
    prefix = 10;
  } else if (major == 2 || major == 3) {
    if (size < 12) throw NpyError(what + ": truncated .npy header");
    header_len = static_cast<size_t>(bytes[8]) | (static_cast<size_t>(bytes[9]) << 8) |
                 (static_cast<size_t>(bytes[10]) << 16) | (static_cast<size_t>(bytes[11]) << 24);
    prefix = 12;
  } else {
    throw NpyError(what + ": unsupported .npy format version " + std::to_string(major) + "." +
                   std::to_string(bytes[7]) + " (supported: 1.0, 2.0, 3.0)");
  }
  if (header_len > size - prefix) throw NpyError(what + ": truncated .npy header");
  Header h;
  const std::string text(reinterpret_cast<const char*>(bytes + prefix), header_len);
  HeaderParser(text, what).Parse(&h);
  h.data_offset = prefix + header_len;
  if (h.fortran_order) {
    throw NpyError(what + ": Fortran-ordered arrays are not supported; save numpy.ascontiguousarray(a) instead");
  }
  return h;
}

uint64_t ElementCount(const std::vector<int64_t>& shape, const std::string& what) {
  uint64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0 || MulOverflows(n, static_cast<uint64_t>(d), &n)) throw NpyError(what + ": shape overflows");
  }
  return n;
}

void CheckDataSize(uint64_t expected, size_t available, const std::string& what) {
  if (expected > available) {
    throw NpyError(what + ": truncated: the header promises " + std::to_string(expected) +
                   " data bytes, the file has " + std::to_string(available));
  }
  if (expected < available) {
    throw NpyError(what + ": " + std::to_string(available - expected) + " unexpected bytes after the array data");
  }
}

// UTF-32LE code units to UTF-8; throws on invalid code points.
void AppendUtf8(uint32_t cp, std::string* out, const std::string& what) {
  if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) throw NpyError(what + ": invalid unicode code point");
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string ZipErrorString(int code) {
  zip_error_t error;
  zip_error_init_with_code(&error, code);
  std::string message = zip_error_strerror(&error);
  zip_error_fini(&error);
  return message;
}

struct ZipCloser {
  void operator()(zip_t* za) const {
    if (za != nullptr) zip_discard(za);
  }
};
using ZipPtr = std::unique_ptr<zip_t, ZipCloser>;

// Reads one member, never more than its declared size (checked by the caller against the archive's budget).
std::vector<uint8_t> ReadMember(zip_t* za, zip_uint64_t index, const std::string& what) {
  zip_stat_t st;
  zip_stat_init(&st);
  if (zip_stat_index(za, index, 0, &st) != 0) throw NpyError(what + ": " + zip_strerror(za));
  if (!(st.valid & ZIP_STAT_SIZE)) throw NpyError(what + ": the archive does not record the member's size");
  zip_file_t* file = zip_fopen_index(za, index, 0);
  if (file == nullptr) throw NpyError(what + ": cannot open the member: " + zip_strerror(za));
  std::vector<uint8_t> data;
  // The declared size is untrusted: reserve at most 64 MiB up front and let the vector grow with what is really read.
  if (st.valid & ZIP_STAT_SIZE) data.reserve(static_cast<size_t>(std::min<zip_uint64_t>(st.size, 64u << 20)));
  uint8_t chunk[1 << 16];
  while (true) {
    const zip_int64_t n = zip_fread(file, chunk, sizeof(chunk));
    if (n < 0) {
      const std::string message = zip_file_strerror(file);
      zip_fclose(file);
      throw NpyError(what + ": cannot read the member: " + message);
    }
    if (n == 0) break;
    if (static_cast<zip_uint64_t>(n) > st.size - data.size()) {
      zip_fclose(file);
      throw NpyError(what + ": member size mismatch (it decompresses to more than the " + std::to_string(st.size) +
                     " bytes the archive records)");
    }
    data.insert(data.end(), chunk, chunk + n);
  }
  zip_fclose(file);
  if (st.size != data.size()) throw NpyError(what + ": member size mismatch");
  return data;
}

uint64_t FileSizeOr0(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
}

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

void CheckMemberName(const std::string& name) {
  if (name.empty()) throw NpyError("cannot save an array with an empty name");
  if (name.find('\0') != std::string::npos || name.find('\\') != std::string::npos || name[0] == '/') {
    throw NpyError("cannot save array '" + name + "': the name looks like an unsafe path");
  }
  std::stringstream parts(name);
  std::string part;
  while (std::getline(parts, part, '/')) {
    if (part == "..") throw NpyError("cannot save array '" + name + "': the name looks like an unsafe path");
  }
}

}  // namespace

uint64_t Array::element_count() const {
  uint64_t n = 1;
  for (int64_t d : shape) n *= static_cast<uint64_t>(d);
  return n;
}

std::string NpyDescr(xrt_dtype_t dtype) {
  for (const DescrEntry& e : kDescrs) {
    if (e.dtype == dtype) return e.descr;
  }
  throw NpyError(std::string("dtype ") + xrt_dtype_name(dtype) + " has no .npy representation");
}

Array ParseNpy(const uint8_t* bytes, size_t size, const std::string& what) {
  const Header h = ParseHeader(bytes, size, what);
  std::string descr = h.descr;
  if (descr.size() == 3 && descr[0] == '=') descr[0] = (descr[1] == 'b' || descr[2] == '1') ? '|' : '<';
  if (descr.size() == 3 && descr[0] == '<' && descr[2] == '1') descr[0] = '|';  // '<i1' is legal, same as '|i1'.
  Array array;
  for (const DescrEntry& e : kDescrs) {
    if (descr == e.descr) array.dtype = e.dtype;
  }
  if (array.dtype == XRT_DTYPE_INVALID) {
    std::string why = "unsupported dtype '" + h.descr + "'";
    if (!h.descr.empty() && h.descr[0] == '>') {
      why += " (big-endian; convert with a.astype(a.dtype.newbyteorder('<')))";
    } else if (h.descr.find('O') != std::string::npos) {
      why += " (object arrays cannot be read; save a numeric array)";
    } else if (h.descr.find('U') != std::string::npos || h.descr.find('S') != std::string::npos) {
      why += " (string arrays: xrt-run does not read them; run bundles with string inputs from Python, "
             "xpuruntime.load)";
    } else {
      why += " (supported: float32 float16 float64 int8 uint8 int16 uint16 int32 uint32 int64 uint64 bool)";
    }
    throw NpyError(what + ": " + why);
  }
  array.shape = h.shape;
  uint64_t bytes_needed = 0;
  if (MulOverflows(ElementCount(h.shape, what), xrt_dtype_size(array.dtype), &bytes_needed)) {
    throw NpyError(what + ": shape overflows");
  }
  CheckDataSize(bytes_needed, size - h.data_offset, what);
  array.data.assign(bytes + h.data_offset, bytes + size);
  return array;
}

std::vector<std::string> ParseNpyStrings(const uint8_t* bytes, size_t size, const std::string& what) {
  const Header h = ParseHeader(bytes, size, what);
  const std::string& d = h.descr;
  if (d.size() < 3 || (d[0] != '<' && d[0] != '|' && d[0] != '=') || d[1] != 'U') {
    throw NpyError(what + ": expected a little-endian unicode array (<U), got dtype '" + d + "'");
  }
  uint64_t chars = 0;
  for (size_t i = 2; i < d.size(); ++i) {
    if (d[i] < '0' || d[i] > '9' || MulOverflows(chars, 10, &chars)) throw NpyError(what + ": bad dtype '" + d + "'");
    chars += static_cast<uint64_t>(d[i] - '0');
  }
  if (h.shape.size() > 1) throw NpyError(what + ": expected a 1-D list of names");
  const uint64_t count = ElementCount(h.shape, what);
  uint64_t bytes_needed = 0;
  if (chars > (1u << 20) || MulOverflows(count, chars * 4, &bytes_needed)) throw NpyError(what + ": too large");
  CheckDataSize(bytes_needed, size - h.data_offset, what);
  std::vector<std::string> out;
  const uint8_t* p = bytes + h.data_offset;
  for (uint64_t i = 0; i < count; ++i) {
    std::string s;
    for (uint64_t c = 0; c < chars; ++c, p += 4) {
      const uint32_t cp = static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
                          (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
      if (cp == 0) {  // NUL padding ends the string (numpy strips trailing NULs).
        p += 4 * (chars - c);
        break;
      }
      AppendUtf8(cp, &s, what);
    }
    out.push_back(std::move(s));
  }
  return out;
}

std::vector<uint8_t> SerializeNpy(const Array& array) {
  std::string header = "{'descr': '" + NpyDescr(array.dtype) + "', 'fortran_order': False, 'shape': " +
                       ShapeString(array.shape) + ", }";
  // numpy pads with spaces and ends with '\n' so that the data starts at a multiple of 64.
  const size_t unpadded = 10 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header.push_back('\n');
  std::vector<uint8_t> out(10 + header.size() + array.data.size());
  uint8_t* p = out.data();
  std::memcpy(p, kMagic, kMagicSize);
  p[6] = 1;  // format version 1.0
  p[7] = 0;
  p[8] = static_cast<uint8_t>(header.size() & 0xFF);
  p[9] = static_cast<uint8_t>(header.size() >> 8);
  std::memcpy(p + 10, header.data(), header.size());
  if (!array.data.empty()) std::memcpy(p + 10 + header.size(), array.data.data(), array.data.size());
  return out;
}

Array ReadNpyFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw NpyError(path + ": cannot open: " + std::strerror(errno));
  const std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw NpyError(path + ": read failed");
  return ParseNpy(bytes.data(), bytes.size(), path);
}

std::vector<NamedArray> ReadNpz(const std::string& path, uint64_t max_total_bytes) {
  int code = 0;
  ZipPtr za(zip_open(path.c_str(), ZIP_RDONLY, &code));
  if (za == nullptr) {
    throw NpyError(path + ": cannot open as .npz (a zip written by numpy.savez): " + ZipErrorString(code));
  }
  const zip_int64_t entries = zip_get_num_entries(za.get(), 0);
  // The budget is checked on the declared sizes before anything is decompressed (ReadMember holds each member to
  // its declared size, so the declaration cannot understate what is read).
  uint64_t declared = 0;
  for (zip_int64_t i = 0; i < entries; ++i) {
    zip_stat_t st;
    zip_stat_init(&st);
    if (zip_stat_index(za.get(), static_cast<zip_uint64_t>(i), 0, &st) != 0) {
      throw NpyError(path + ": " + zip_strerror(za.get()));
    }
    if ((st.valid & ZIP_STAT_SIZE) && !__builtin_add_overflow(declared, st.size, &declared) &&
        declared <= max_total_bytes) {
      continue;
    }
    if (!(st.valid & ZIP_STAT_SIZE)) throw NpyError(path + ": the archive does not record a member's size");
    throw NpyError(path + ": its arrays decompress to more than " + std::to_string(max_total_bytes) +
                   " bytes (the limit for an input archive; the file is " + std::to_string(FileSizeOr0(path)) +
                   " bytes). Pass smaller inputs, or raise the limit with --max-input-bytes");
  }
  std::vector<NamedArray> plain;
  std::vector<std::string> names;
  bool have_names = false;
  for (zip_int64_t i = 0; i < entries; ++i) {
    const char* raw = zip_get_name(za.get(), static_cast<zip_uint64_t>(i), 0);
    if (raw == nullptr) throw NpyError(path + ": " + zip_strerror(za.get()));
    const std::string member(raw);
    if (!member.empty() && member.back() == '/') continue;  // A directory entry.
    if (!EndsWith(member, ".npy")) {
      throw NpyError(path + ": member '" + member + "' is not a .npy array (not a numpy.savez file?)");
    }
    const std::string key = member.substr(0, member.size() - 4);
    const std::string what = path + ":" + member;
    const std::vector<uint8_t> bytes = ReadMember(za.get(), static_cast<zip_uint64_t>(i), what);
    if (key == "__names__") {
      names = ParseNpyStrings(bytes.data(), bytes.size(), what);
      have_names = true;
    } else {
      plain.push_back({key, ParseNpy(bytes.data(), bytes.size(), what)});
    }
  }
  if (!have_names) {
    if (plain.empty()) throw NpyError(path + ": the archive holds no arrays");
    return plain;
  }
  // Corpus convention: __names__ lists the input names; the arrays are in0, in1, ... in that order.
  std::vector<NamedArray> out;
  for (size_t k = 0; k < names.size(); ++k) {
    const std::string key = "in" + std::to_string(k);
    bool found = false;
    for (NamedArray& a : plain) {
      if (a.name == key) {
        out.push_back({names[k], std::move(a.array)});
        found = true;
        break;
      }
    }
    if (!found) {
      throw NpyError(path + ": __names__ lists " + std::to_string(names.size()) + " inputs but array '" + key +
                     "' (for '" + names[k] + "') is missing");
    }
  }
  return out;
}

void WriteNpz(const std::string& path, const std::vector<NamedArray>& arrays, bool overwrite) {
  if (arrays.empty()) throw NpyError(path + ": nothing to save");  // libzip deletes an archive with no members.
  for (const NamedArray& a : arrays) CheckMemberName(a.name);
  if (!overwrite && access(path.c_str(), F_OK) == 0) {
    throw FileExistsError(path + " exists; pass --force to overwrite it");
  }
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "" : path.substr(0, slash + 1);
  const std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  const std::string tmp = dir + "." + base + ".tmp" + std::to_string(getpid());

  int code = 0;
  ZipPtr za(zip_open(tmp.c_str(), ZIP_CREATE | ZIP_TRUNCATE, &code));
  if (za == nullptr) throw NpyError(tmp + ": cannot create: " + ZipErrorString(code));
  std::vector<std::vector<uint8_t>> payloads;  // zip_source_buffer borrows these until zip_close.
  payloads.reserve(arrays.size());
  for (const NamedArray& a : arrays) {
    payloads.push_back(SerializeNpy(a.array));
    const std::vector<uint8_t>& bytes = payloads.back();
    zip_source_t* source = zip_source_buffer(za.get(), bytes.data(), bytes.size(), 0);
    if (source == nullptr) throw NpyError(path + ": " + zip_strerror(za.get()));
    const std::string member = a.name + ".npy";
    const zip_int64_t index = zip_file_add(za.get(), member.c_str(), source, ZIP_FL_ENC_UTF_8);
    if (index < 0) {
      zip_source_free(source);
      throw NpyError(path + ": cannot add '" + member + "': " + zip_strerror(za.get()));
    }
    const zip_uint64_t idx = static_cast<zip_uint64_t>(index);
    if (zip_set_file_compression(za.get(), idx, ZIP_CM_STORE, 0) != 0 ||
        zip_file_set_mtime(za.get(), idx, kFixedMtime, 0) != 0) {
      throw NpyError(path + ": " + zip_strerror(za.get()));
    }
  }
  if (zip_close(za.get()) != 0) {
    const std::string message = zip_strerror(za.get());
    std::remove(tmp.c_str());
    throw NpyError(path + ": cannot write: " + message);
  }
  za.release();  // zip_close freed it.

  if (overwrite) {
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
      const int err = errno;
      std::remove(tmp.c_str());
      throw NpyError(path + ": cannot rename the temporary file into place: " + std::strerror(err));
    }
    return;
  }
  // link() publishes without ever replacing an existing file (rename() would).
  if (link(tmp.c_str(), path.c_str()) == 0) {
    unlink(tmp.c_str());
    return;
  }
  const int err = errno;
  if (err == EEXIST) {
    unlink(tmp.c_str());
    throw FileExistsError(path + " exists; pass --force to overwrite it");
  }
  // Filesystems without hard links: fall back to check-then-rename (a narrow race).
  if (access(path.c_str(), F_OK) == 0) {
    unlink(tmp.c_str());
    throw FileExistsError(path + " exists; pass --force to overwrite it");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int rename_err = errno;
    unlink(tmp.c_str());
    throw NpyError(path + ": cannot move the temporary file into place: " + std::strerror(rename_err));
  }
}

}  // namespace tools
}  // namespace xrt
