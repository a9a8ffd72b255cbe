// dtype.h - element types: sizes and the NumPy names the manifest uses.
#ifndef XRT_RUNTIME_SRC_DTYPE_H_
#define XRT_RUNTIME_SRC_DTYPE_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "xrt/xrt.h"

namespace xrt::core {

// Bytes per element; 0 for XRT_DTYPE_INVALID and values outside the enum.
size_t DtypeSize(xrt_dtype_t dtype);
// "float32", ...; "invalid" for values outside the enum.
const char* DtypeName(xrt_dtype_t dtype);
// Inverse of DtypeName (exact, case-sensitive); XRT_DTYPE_INVALID for anything else.
xrt_dtype_t DtypeFromName(std::string_view name);
// "float32 float16 ... bool": the valid names, for messages.
std::string DtypeNameList();

// numel(shape) * DtypeSize(dtype) with every multiplication checked; false on overflow or a negative dim.
bool ByteSize(xrt_dtype_t dtype, const int64_t* shape, uint32_t rank, uint64_t* out_bytes);

// For XRT_DTYPE_STRING data: false (and the element's index) when an element has size > 0 but NULL data.
bool CheckStrings(const xrt_string_t* items, uint64_t count, uint64_t* out_index);

}  // namespace xrt::core

#endif  // XRT_RUNTIME_SRC_DTYPE_H_
