// cuda_api.h - the CUDA driver and cuBLASLt entry points the cuda backend uses, as tables of function pointers.
//
// The plugin never links libcuda or cuBLASLt: it dlopens them at run time (machines without an NVIDIA driver must
// still load the plugin's siblings and get a clear "no driver" reason), and the tests fill the same tables with a
// fake driver that records what the engine asks for. The types and prototypes come from the CUDA headers of the
// pinned PyPI wheels (scripts/cuda_headers.sh); cuda.h maps versioned names (cuMemAlloc -> cuMemAlloc_v2), and the
// table members and dlsym names follow the same mapping.
#ifndef XRT_BACKENDS_CUDA_CUDA_API_H_
#define XRT_BACKENDS_CUDA_CUDA_API_H_

#include <cublasLt.h>
#include <cuda.h>

#include <string>
#include <vector>

namespace xrt {
namespace cuda_backend {

// Required driver entry points (all present in drivers >= 525; CUDA 13 libraries need >= 580 anyway).
#define XRT_CUDA_DRIVER_FUNCS(X)                                                                                      \
  X(cuInit) X(cuDriverGetVersion) X(cuGetErrorString) X(cuGetErrorName) X(cuDeviceGetCount) X(cuDeviceGet) X(cuDeviceGetAttribute)      \
  X(cuDeviceGetName) X(cuDevicePrimaryCtxRetain) X(cuDevicePrimaryCtxRelease) X(cuCtxSetCurrent) X(cuMemAlloc)         \
  X(cuMemFree) X(cuMemcpyHtoD) X(cuMemcpyHtoDAsync) X(cuMemcpyDtoHAsync) X(cuMemsetD8) X(cuStreamCreate)              \
  X(cuStreamDestroy) X(cuStreamSynchronize) X(cuStreamBeginCapture) X(cuStreamEndCapture) X(cuGraphInstantiate)        \
  X(cuGraphLaunch) X(cuGraphDestroy) X(cuGraphExecDestroy) X(cuEventCreate) X(cuEventDestroy) X(cuEventRecord)         \
  X(cuEventSynchronize) X(cuEventElapsedTime) X(cuModuleLoadData) X(cuModuleUnload) X(cuModuleGetFunction)             \
  X(cuFuncSetAttribute) X(cuLaunchKernel) X(cuMemcpyDtoDAsync) X(cuStreamWaitEvent) X(cuPointerGetAttribute)       \
  X(cuCtxPushCurrent) X(cuCtxPopCurrent)
// Optional: absent in older drivers; the engine skips the check it serves.
#define XRT_CUDA_DRIVER_OPTIONAL_FUNCS(X) X(cuFuncGetParamInfo) X(cuLaunchKernelEx)

#define XRT_CUBLASLT_FUNCS(X)                                                                                         \
  X(cublasLtCreate) X(cublasLtDestroy) X(cublasLtGetVersion) X(cublasLtGetStatusString) X(cublasLtMatmulDescCreate)    \
  X(cublasLtMatmulDescDestroy) X(cublasLtMatmulDescSetAttribute) X(cublasLtMatrixLayoutCreate)                         \
  X(cublasLtMatrixLayoutDestroy) X(cublasLtMatmulPreferenceCreate) X(cublasLtMatmulPreferenceDestroy)                  \
  X(cublasLtMatmulPreferenceSetAttribute) X(cublasLtMatmulAlgoGetHeuristic) X(cublasLtMatmulAlgoCheck)                 \
  X(cublasLtMatmul)
// Used by the GEMM tuner only (split-K variants of the heuristic's candidates); the fake table may leave them null.
#define XRT_CUBLASLT_TUNING_FUNCS(X) X(cublasLtMatmulAlgoConfigGetAttribute) X(cublasLtMatmulAlgoConfigSetAttribute)

// cuBLAS (libcublas.so.13), for plans whose GEMMs the policy gave to cuBLAS (matmul = cublas): loaded only then.
#define XRT_CUBLAS_FUNCS(X)                                                                                           \
  X(cublasCreate_v2) X(cublasDestroy_v2) X(cublasSetStream_v2) X(cublasSetWorkspace_v2) X(cublasSetMathMode)          \
  X(cublasGetVersion_v2) X(cublasGetStatusString)

#define XRT_CUDA_TABLE_MEMBER(f) decltype(&::f) f = nullptr;

// The driver. Loaded once per process (LoadDriver); the fake in the tests is another instance.
struct DriverApi {
  XRT_CUDA_DRIVER_FUNCS(XRT_CUDA_TABLE_MEMBER)
  XRT_CUDA_DRIVER_OPTIONAL_FUNCS(XRT_CUDA_TABLE_MEMBER)
};

struct CublasLtApi {
  XRT_CUBLASLT_FUNCS(XRT_CUDA_TABLE_MEMBER)
  XRT_CUBLASLT_TUNING_FUNCS(XRT_CUDA_TABLE_MEMBER)
  std::string path;  // where it was loaded from (for describe())
};

struct CublasApi {
  XRT_CUBLAS_FUNCS(XRT_CUDA_TABLE_MEMBER)
  // cublas_api.h overloads cublasGemmEx in C++ (a cudaDataType compute-type wrapper): the C entry point's type.
  using GemmExFn = cublasStatus_t (*)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int,
                                      const void*, const void*, cudaDataType, int, const void*, cudaDataType, int,
                                      const void*, void*, cudaDataType, int, cublasComputeType_t, cublasGemmAlgo_t);
  GemmExFn cublasGemmEx = nullptr;
  std::string path;  // where it was loaded from (for describe())
};

#undef XRT_CUDA_TABLE_MEMBER

// The process's real driver table, dlopened from libcuda.so.1 on first call. Returns nullptr and sets *error
// ("libcuda.so.1 not found: no NVIDIA driver; ...") when the library or an entry point is missing.
const DriverApi* LoadDriver(std::string* error);

// The process's real cuBLASLt (libcublasLt.so.13), searched in: $XRT_CUBLASLT (a file), the folders of
// $XRT_CUDA_LIB_PATH, the dynamic loader's own search (LD_LIBRARY_PATH, rpath, ld.so.cache), the nvidia/cu13/lib
// folder of the Python installation next to this plugin, and of any site-packages folder this process has mapped
// (a Python process that imported torch or the nvidia wheels). nullptr with *error listing where it looked.
const CublasLtApi* LoadCublasLt(std::string* error);

// The process's real cuBLAS (libcublas.so.13), searched like cuBLASLt ($XRT_CUBLAS names the file). nullptr with
// *error naming the library, what to install and where it looked.
const CublasApi* LoadCublas(std::string* error);

// "CUDA_ERROR_OUT_OF_MEMORY (out of memory)"-style text for a driver result.
std::string DriverErrorText(const DriverApi& api, CUresult result);

}  // namespace cuda_backend
}  // namespace xrt

#endif  // XRT_BACKENDS_CUDA_CUDA_API_H_
