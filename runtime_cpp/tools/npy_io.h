// npy_io.h - NumPy .npy / .npz reading and writing for xrt-run.
//
// .npy: format versions 1.0, 2.0 and 3.0; C-order, little-endian (or byte-sized) numeric and bool arrays only
// (<f4 <f2 <f8 |i1 |u1 <i2 <u2 <i4 <u4 <i8 <u8 |b1). Unicode arrays (<U) are read only as string lists (the corpus
// convention's `__names__`). Everything else is rejected with a message saying what to do.
// .npz: a zip of NAME.npy members (numpy.savez / savez_compressed; ZIP64 included), read and written with libzip.
//
// Every reader treats its bytes as untrusted: sizes are checked with overflow-safe arithmetic before use.
// Errors are thrown as xrt::tools::NpyError (a std::runtime_error whose message is ready for the user).
#ifndef XRT_TOOLS_NPY_IO_H_
#define XRT_TOOLS_NPY_IO_H_

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "xrt/xrt.h"

namespace xrt {
namespace tools {

class NpyError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Thrown by WriteNpz when the destination exists and overwriting was not asked for.
class FileExistsError : public NpyError {
 public:
  using NpyError::NpyError;
};

// A dense, C-contiguous array with its own storage.
struct Array {
  xrt_dtype_t dtype = XRT_DTYPE_INVALID;
  std::vector<int64_t> shape;
  std::vector<uint8_t> data;  // product(shape) * xrt_dtype_size(dtype) bytes

  uint64_t element_count() const;
};

// One named array, in file order.
struct NamedArray {
  std::string name;
  Array array;
};

// The .npy descr ("<f4", "|b1", ...) for a dtype; throws NpyError for dtypes .npy cannot hold (bfloat16).
std::string NpyDescr(xrt_dtype_t dtype);

// Parses a whole .npy file held in memory. `what` names the source in error messages ("in.npz:x.npy").
Array ParseNpy(const uint8_t* bytes, size_t size, const std::string& what);
// Parses a 1-D or 0-D unicode (<U) .npy array into UTF-8 strings.
std::vector<std::string> ParseNpyStrings(const uint8_t* bytes, size_t size, const std::string& what);
// Serialises an array as a version 1.0 .npy (header padded to 64 bytes, as numpy writes it).
std::vector<uint8_t> SerializeNpy(const Array& array);

// Reads a .npy file.
Array ReadNpyFile(const std::string& path);
// Reads an .npz file. When it holds `__names__` (corpus convention: a unicode array of input names, with arrays
// stored as in0, in1, ...), the result carries the real names in `__names__` order; otherwise the member names
// without ".npy", in archive order.
// At most `max_total_bytes` are decompressed in all (members' declared sizes are checked against it before any is
// read, and a member is never read past its declared size), so a small archive that inflates a thousandfold is an
// NpyError naming the limit, not an allocation of whatever it claims.
inline constexpr uint64_t kDefaultMaxNpzBytes = uint64_t{2} << 30;
std::vector<NamedArray> ReadNpz(const std::string& path, uint64_t max_total_bytes = kDefaultMaxNpzBytes);
// Writes an uncompressed .npz readable by numpy.load, whose keys are the given names, atomically: a temporary file in
// the same folder is renamed onto `path`. Without `overwrite` an existing `path` is left untouched and
// FileExistsError is thrown (the check and the publish are one atomic link(), so a racing writer is not clobbered).
// Names must be non-empty and must not look like paths that escape the archive (no leading '/', no ".." part).
void WriteNpz(const std::string& path, const std::vector<NamedArray>& arrays, bool overwrite);

}  // namespace tools
}  // namespace xrt

#endif  // XRT_TOOLS_NPY_IO_H_
