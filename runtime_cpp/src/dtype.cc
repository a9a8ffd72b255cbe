#include "dtype.h"

namespace xrt::core {
namespace {

struct DtypeInfo {
  xrt_dtype_t dtype;
  const char* name;
  size_t size;
};

// Indexed by enum value; the order is the ABI's numbering.
constexpr DtypeInfo kDtypes[] = {
    {XRT_DTYPE_INVALID, "invalid", 0}, {XRT_DTYPE_FLOAT32, "float32", 4}, {XRT_DTYPE_FLOAT16, "float16", 2},
    {XRT_DTYPE_BFLOAT16, "bfloat16", 2}, {XRT_DTYPE_FLOAT64, "float64", 8}, {XRT_DTYPE_INT8, "int8", 1},
    {XRT_DTYPE_UINT8, "uint8", 1},     {XRT_DTYPE_INT16, "int16", 2},     {XRT_DTYPE_UINT16, "uint16", 2},
    {XRT_DTYPE_INT32, "int32", 4},     {XRT_DTYPE_UINT32, "uint32", 4},   {XRT_DTYPE_INT64, "int64", 8},
    {XRT_DTYPE_UINT64, "uint64", 8},   {XRT_DTYPE_BOOL, "bool", 1},
    {XRT_DTYPE_STRING, "string", sizeof(xrt_string_t)},
};
constexpr int kDtypeCount = static_cast<int>(sizeof(kDtypes) / sizeof(kDtypes[0]));

const DtypeInfo* Find(xrt_dtype_t dtype) {
  const int v = static_cast<int>(dtype);
  if (v <= 0 || v >= kDtypeCount) return nullptr;
  return &kDtypes[v];
}

}  // namespace

size_t DtypeSize(xrt_dtype_t dtype) {
  const DtypeInfo* info = Find(dtype);
  return info ? info->size : 0;
}

const char* DtypeName(xrt_dtype_t dtype) {
  const DtypeInfo* info = Find(dtype);
  return info ? info->name : "invalid";
}

xrt_dtype_t DtypeFromName(std::string_view name) {
  for (int i = 1; i < kDtypeCount; ++i) {
    if (name == kDtypes[i].name) return kDtypes[i].dtype;
  }
  return XRT_DTYPE_INVALID;
}

std::string DtypeNameList() {
  std::string s;
  for (int i = 1; i < kDtypeCount; ++i) {
    if (!s.empty()) s += ' ';
    s += kDtypes[i].name;
  }
  return s;
}

bool ByteSize(xrt_dtype_t dtype, const int64_t* shape, uint32_t rank, uint64_t* out_bytes) {
  uint64_t n = DtypeSize(dtype);
  for (uint32_t d = 0; d < rank; ++d) {
    if (shape[d] < 0) return false;
    if (__builtin_mul_overflow(n, static_cast<uint64_t>(shape[d]), &n)) return false;
  }
  *out_bytes = n;
  return true;
}

bool CheckStrings(const xrt_string_t* items, uint64_t count, uint64_t* out_index) {
  for (uint64_t i = 0; i < count; ++i) {
    if (items[i].data == nullptr && items[i].size != 0) {
      *out_index = i;
      return false;
    }
  }
  return true;
}

}  // namespace xrt::core
