// The cuda engine's logic against a fake driver and a fake cuBLASLt (no GPU): plan validation, the one allocation,
// weights uploaded once, launch order, one graph per input shape, profiling, algorithm fallback, clear errors.
// "Device memory" is host memory here, graphs record their operations and replay them on cuGraphLaunch, and the
// fake cuBLASLt computes fp32 column-major GEMMs for real, so the row-major mapping is checked numerically.
#include <elf.h>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <future>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "engine.h"

namespace xrt {
namespace cuda_backend {
namespace {

using nlohmann::json;

struct FakeLayout { cudaDataType_t type; uint64_t rows, cols; int64_t ld; };
struct FakeDesc { cublasOperation_t ta = CUBLAS_OP_N, tb = CUBLAS_OP_N; cublasLtEpilogue_t ep = CUBLASLT_EPILOGUE_DEFAULT;
                  const void* bias = nullptr; };
struct FakeFunc { std::string entry; };

// The fake device. One per test (reset in SetUp).
struct Fake {
  std::map<std::string, CUresult> fail;  // entry point -> error it returns
  int cc_major = 9, cc_minor = 0;
  std::map<std::string, std::vector<size_t>> param_sizes;  // kernel entry -> parameter sizes
  bool refuse_algo = false;
  std::atomic<int> context_depth{0};                   // pushes minus pops: 0 whenever the engine returns to its caller
  int heuristic_candidates = 1;               // candidates the fake heuristic offers (algo.data[0] = 42, 43, ...)
  std::map<uint64_t, float> algo_ms;          // tuning: a fake clock advances by this per cublasLtMatmul of an algo
  uint64_t last_algo = 0;
  double clock = 0;                           // events read it when recorded (with algo_ms set)
  std::map<CUevent, double> event_clock;
  uintptr_t events_created = 0;
  std::vector<size_t> allocs;
  int sync_uploads = 0, async_h2d = 0, async_d2h = 0, pdl_launches = 0;
  bool capturing = false;
  std::vector<std::function<void()>> captured;
  std::vector<std::vector<std::function<void()>>> graphs;
  int instantiated = 0, graph_launches = 0, events_recorded = 0, heuristic_calls = 0;
  std::vector<std::string> launched;  // entries and "gemm" in execution order
  std::vector<std::string> loaded_images;  // "cubin" / "ptx"
  std::vector<std::unique_ptr<FakeFunc>> funcs;
  std::vector<std::unique_ptr<FakeLayout>> layouts;
  std::vector<std::unique_ptr<FakeDesc>> descs;
  // Stream-ordered operations, in call order: "HtoD@engine", "DtoD@engine", "graph@engine", "record E1@caller",
  // "wait engine<-E1", "sync engine", "alloc", "free". Streams: "engine" (the engine's own), "legacy" (NULL),
  // "caller" (any other).
  std::vector<std::string> log;
  std::map<uintptr_t, size_t> device_blocks;  // cuMemAlloc'ed address -> size (what cuPointerGetAttribute knows)
  // the fake cuBLAS: its calls in order ("create", "math", "stream engine", "workspace 1024", "gemm 32F", ...,
  // "... (capturing)" when made while a graph is captured)
  std::vector<std::string> cublas_calls;
};
Fake* g;

CUresult Check(const char* name) {
  auto it = g->fail.find(name);
  return it == g->fail.end() ? CUDA_SUCCESS : it->second;
}
void Run(std::function<void()> op) {
  if (g->capturing) g->captured.push_back(std::move(op));
  else op();
}

constexpr uintptr_t kEngineStream = 0x2;
std::string StreamName(CUstream s) {
  const auto v = reinterpret_cast<uintptr_t>(s);
  return v == kEngineStream ? "engine" : v == 0 ? "legacy" : "caller";
}
void Log(const std::string& entry) { g->log.push_back(entry); }
// "E0" for the first event a test's engine created, "E1" for the next, ...
std::string EventName(CUevent e) { return "E" + std::to_string(reinterpret_cast<uintptr_t>(e) - 1); }

CUresult FInit(unsigned) { return Check("cuInit"); }
CUresult FDriverGetVersion(int* v) { *v = 13000; return CUDA_SUCCESS; }
CUresult FGetErrorString(CUresult r, const char** s) { *s = r == CUDA_ERROR_OUT_OF_MEMORY ? "out of memory" : "fake error"; return CUDA_SUCCESS; }
CUresult FGetErrorName(CUresult r, const char** s) { *s = r == CUDA_ERROR_OUT_OF_MEMORY ? "CUDA_ERROR_OUT_OF_MEMORY" : "CUDA_ERROR_FAKE"; return CUDA_SUCCESS; }
CUresult FDeviceGetCount(int* n) { *n = 1; return Check("cuDeviceGetCount"); }
CUresult FDeviceGet(CUdevice* d, int o) { *d = o; return CUDA_SUCCESS; }
CUresult FDeviceGetAttribute(int* v, CUdevice_attribute a, CUdevice) {
  *v = a == CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR ? g->cc_major : g->cc_minor;
  return CUDA_SUCCESS;
}
CUresult FDeviceGetName(char* name, int len, CUdevice) { std::snprintf(name, len, "Fake GPU"); return CUDA_SUCCESS; }
CUresult FPrimaryRetain(CUcontext* c, CUdevice) { *c = reinterpret_cast<CUcontext>(0x1); return CUDA_SUCCESS; }
CUresult FPrimaryRelease(CUdevice) { return CUDA_SUCCESS; }
CUresult FCtxSetCurrent(CUcontext) { return CUDA_SUCCESS; }
CUresult FCtxPushCurrent(CUcontext c) {
  if (c == nullptr) return CUDA_ERROR_INVALID_VALUE;
  ++g->context_depth;
  return CUDA_SUCCESS;
}
CUresult FCtxPopCurrent(CUcontext* c) {
  *c = nullptr;
  --g->context_depth;
  return CUDA_SUCCESS;
}
CUresult FMemAlloc(CUdeviceptr* p, size_t n) {
  if (CUresult r = Check("cuMemAlloc")) return r;
  g->allocs.push_back(n);
  *p = reinterpret_cast<CUdeviceptr>(std::malloc(n));
  g->device_blocks[*p] = n;
  Log("alloc");
  return CUDA_SUCCESS;
}
CUresult FMemFree(CUdeviceptr p) {
  if (g) g->device_blocks.erase(p), Log("free");
  std::free(reinterpret_cast<void*>(p));
  return CUDA_SUCCESS;
}
CUresult FMemcpyDtoDAsync(CUdeviceptr d, CUdeviceptr s, size_t n, CUstream st) {
  Log("DtoD@" + StreamName(st));
  std::memcpy(reinterpret_cast<void*>(d), reinterpret_cast<const void*>(s), n);
  return CUDA_SUCCESS;
}
CUresult FStreamWaitEvent(CUstream st, CUevent e, unsigned) {
  Log("wait " + StreamName(st) + "<-" + EventName(e));
  return CUDA_SUCCESS;
}
CUresult FPointerGetAttribute(void* data, CUpointer_attribute a, CUdeviceptr p) {
  for (const auto& [base, size] : g->device_blocks) {
    if (p >= base && p < base + size) {
      if (a == CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL) *static_cast<int*>(data) = 0;
      else if (a == CU_POINTER_ATTRIBUTE_RANGE_START_ADDR) *static_cast<CUdeviceptr*>(data) = base;
      else if (a == CU_POINTER_ATTRIBUTE_RANGE_SIZE) *static_cast<size_t*>(data) = size;
      else return CUDA_ERROR_NOT_SUPPORTED;
      return CUDA_SUCCESS;
    }
  }
  return CUDA_ERROR_INVALID_VALUE;
}
CUresult FMemcpyHtoD(CUdeviceptr d, const void* s, size_t n) { ++g->sync_uploads; std::memcpy(reinterpret_cast<void*>(d), s, n); return CUDA_SUCCESS; }
CUresult FMemcpyHtoDAsync(CUdeviceptr d, const void* s, size_t n, CUstream st) {
  ++g->async_h2d; Log("HtoD@" + StreamName(st)); std::memcpy(reinterpret_cast<void*>(d), s, n); return CUDA_SUCCESS;
}
CUresult FMemcpyDtoHAsync(void* d, CUdeviceptr s, size_t n, CUstream st) {
  ++g->async_d2h; Log("DtoH@" + StreamName(st)); std::memcpy(d, reinterpret_cast<void*>(s), n); return CUDA_SUCCESS;
}
CUresult FMemsetD8(CUdeviceptr d, unsigned char v, size_t n) { std::memset(reinterpret_cast<void*>(d), v, n); return CUDA_SUCCESS; }
CUresult FStreamCreate(CUstream* s, unsigned) { *s = reinterpret_cast<CUstream>(kEngineStream); return CUDA_SUCCESS; }
CUresult FStreamDestroy(CUstream) { return CUDA_SUCCESS; }
CUresult FStreamSynchronize(CUstream st) { if (g) Log("sync " + StreamName(st)); return CUDA_SUCCESS; }
CUresult FBeginCapture(CUstream, CUstreamCaptureMode) { g->capturing = true; g->captured.clear(); return CUDA_SUCCESS; }
CUresult FEndCapture(CUstream, CUgraph* graph) {
  g->capturing = false;
  g->graphs.push_back(std::move(g->captured));
  *graph = reinterpret_cast<CUgraph>(g->graphs.size());
  return Check("cuStreamEndCapture");
}
CUresult FGraphInstantiate(CUgraphExec* e, CUgraph graph, unsigned long long) {
  ++g->instantiated;
  *e = reinterpret_cast<CUgraphExec>(graph);
  return CUDA_SUCCESS;
}
CUresult FGraphLaunch(CUgraphExec e, CUstream st) {
  ++g->graph_launches;
  Log("graph@" + StreamName(st));
  for (auto& op : g->graphs[reinterpret_cast<size_t>(e) - 1]) op();
  return CUDA_SUCCESS;
}
CUresult FGraphDestroy(CUgraph) { return CUDA_SUCCESS; }
CUresult FGraphExecDestroy(CUgraphExec) { return CUDA_SUCCESS; }
CUresult FEventCreate(CUevent* e, unsigned) {
  *e = reinterpret_cast<CUevent>(++g->events_created);
  return CUDA_SUCCESS;
}
CUresult FEventDestroy(CUevent) { return CUDA_SUCCESS; }
CUresult FEventRecord(CUevent e, CUstream st) {
  ++g->events_recorded;
  g->event_clock[e] = g->clock;
  Log("record " + EventName(e) + "@" + StreamName(st));
  return CUDA_SUCCESS;
}
CUresult FEventSynchronize(CUevent) { return CUDA_SUCCESS; }
CUresult FEventElapsedTime(float* ms, CUevent start, CUevent end) {
  *ms = g->algo_ms.empty() ? 0.5f : static_cast<float>(g->event_clock[end] - g->event_clock[start]);
  return CUDA_SUCCESS;
}
// Images: "fake-ptx:<entry>" text, or an ELF header followed by "<entry>\0".
CUresult FModuleLoadData(CUmodule* m, const void* image) {
  if (CUresult r = Check("cuModuleLoadData")) return r;
  const char* p = static_cast<const char*>(image);
  const bool ptx = std::strncmp(p, "fake-ptx:", 9) == 0;
  g->loaded_images.push_back(ptx ? "ptx" : "cubin");
  auto f = std::make_unique<FakeFunc>();
  f->entry = ptx ? std::string(p + 9) : std::string(p + sizeof(Elf64_Ehdr));
  *m = reinterpret_cast<CUmodule>(f.get());
  g->funcs.push_back(std::move(f));
  return CUDA_SUCCESS;
}
CUresult FModuleUnload(CUmodule) { return CUDA_SUCCESS; }
CUresult FModuleGetFunction(CUfunction* fn, CUmodule m, const char* name) {
  auto* f = reinterpret_cast<FakeFunc*>(m);
  if (f->entry != name) return CUDA_ERROR_NOT_FOUND;
  *fn = reinterpret_cast<CUfunction>(f);
  return CUDA_SUCCESS;
}
CUresult FFuncSetAttribute(CUfunction, CUfunction_attribute, int) { return CUDA_SUCCESS; }
CUresult FFuncGetParamInfo(CUfunction fn, size_t i, size_t* off, size_t* size) {
  const auto& sizes = g->param_sizes[reinterpret_cast<FakeFunc*>(fn)->entry];
  if (i >= sizes.size()) return CUDA_ERROR_INVALID_VALUE;
  *off = 0;
  *size = sizes[i];
  return CUDA_SUCCESS;
}
// "fake_relu"(x, y, n): y = max(x, 0) over n floats. Anything else is only recorded.
CUresult FLaunchKernel(CUfunction fn, unsigned gx, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, CUstream,
                       void** args, void**) {
  const std::string entry = reinterpret_cast<FakeFunc*>(fn)->entry;
  if (entry == "fake_relu") {
    float* x = *static_cast<float**>(args[0]);
    float* y = *static_cast<float**>(args[1]);
    const int n = *static_cast<int*>(args[2]);
    EXPECT_GE(static_cast<int>(gx) * 64, n);
    Run([=] { g->launched.push_back(entry); for (int i = 0; i < n; ++i) y[i] = x[i] > 0 ? x[i] : 0; });
  } else if (entry.rfind("fake_gemm:", 0) == 0) {
    // "fake_gemm:m:n:k:trans_b:bias"(a, b, [bias], c): a GEMM stand-in, computed like the fake cuBLASLt
    int m = 0, n = 0, k = 0, trans = 0, with_bias = 0;
    EXPECT_EQ(std::sscanf(entry.c_str(), "fake_gemm:%d:%d:%d:%d:%d", &m, &n, &k, &trans, &with_bias), 5);
    const float* a = *static_cast<float**>(args[0]);
    const float* b = *static_cast<float**>(args[1]);
    const float* bias = with_bias ? *static_cast<float**>(args[2]) : nullptr;
    float* c = *static_cast<float**>(args[with_bias ? 3 : 2]);
    Run([=] {
      g->launched.push_back(entry);
      for (int i = 0; i < m; ++i) {
        for (int j = 0; j < n; ++j) {
          double acc = bias ? bias[j] : 0;
          for (int x = 0; x < k; ++x) acc += double(a[i * k + x]) * (trans ? b[j * k + x] : b[x * n + j]);
          c[i * n + j] = static_cast<float>(acc);
        }
      }
    });
  } else {
    Run([=] { g->launched.push_back(entry); });
  }
  return CUDA_SUCCESS;
}

// cuLaunchKernelEx: records the programmatic-serialization attribute, then runs the kernel like cuLaunchKernel.
CUresult FLaunchKernelEx(const CUlaunchConfig* config, CUfunction fn, void** args, void** extra) {
  for (unsigned a = 0; a < config->numAttrs; ++a) {
    if (config->attrs[a].id == CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION &&
        config->attrs[a].value.programmaticStreamSerializationAllowed) {
      ++g->pdl_launches;
    }
  }
  return FLaunchKernel(fn, config->gridDimX, config->gridDimY, config->gridDimZ, config->blockDimX,
                       config->blockDimY, config->blockDimZ, config->sharedMemBytes, config->hStream, args, extra);
}

cublasStatus_t LCreate(cublasLtHandle_t* h) { *h = reinterpret_cast<cublasLtHandle_t>(0x4); return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t LDestroy(cublasLtHandle_t) { return CUBLAS_STATUS_SUCCESS; }
size_t LGetVersion() { return 130002; }
const char* LStatusString(cublasStatus_t) { return "CUBLAS_STATUS_FAKE"; }
cublasStatus_t LDescCreate(cublasLtMatmulDesc_t* d, cublasComputeType_t, cudaDataType_t) {
  g->descs.push_back(std::make_unique<FakeDesc>());
  *d = reinterpret_cast<cublasLtMatmulDesc_t>(g->descs.back().get());
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t LDescDestroy(cublasLtMatmulDesc_t) { return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t LDescSet(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t a, const void* v, size_t) {
  auto* f = reinterpret_cast<FakeDesc*>(d);
  if (a == CUBLASLT_MATMUL_DESC_TRANSA) std::memcpy(&f->ta, v, sizeof f->ta);
  if (a == CUBLASLT_MATMUL_DESC_TRANSB) std::memcpy(&f->tb, v, sizeof f->tb);
  if (a == CUBLASLT_MATMUL_DESC_EPILOGUE) std::memcpy(&f->ep, v, sizeof f->ep);
  if (a == CUBLASLT_MATMUL_DESC_BIAS_POINTER) std::memcpy(&f->bias, v, sizeof f->bias);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t LLayoutCreate(cublasLtMatrixLayout_t* l, cudaDataType t, uint64_t r, uint64_t c, int64_t ld) {
  g->layouts.push_back(std::make_unique<FakeLayout>(FakeLayout{t, r, c, ld}));
  *l = reinterpret_cast<cublasLtMatrixLayout_t>(g->layouts.back().get());
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t LLayoutDestroy(cublasLtMatrixLayout_t) { return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t LPrefCreate(cublasLtMatmulPreference_t* p) { *p = reinterpret_cast<cublasLtMatmulPreference_t>(0x5); return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t LPrefDestroy(cublasLtMatmulPreference_t) { return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t LPrefSet(cublasLtMatmulPreference_t, cublasLtMatmulPreferenceAttributes_t, const void*, size_t) { return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t LHeuristic(cublasLtHandle_t, cublasLtMatmulDesc_t, cublasLtMatrixLayout_t, cublasLtMatrixLayout_t,
                          cublasLtMatrixLayout_t, cublasLtMatrixLayout_t, cublasLtMatmulPreference_t, int requested,
                          cublasLtMatmulHeuristicResult_t* r, int* n) {
  ++g->heuristic_calls;
  *n = std::min(requested, g->heuristic_candidates);
  for (int i = 0; i < *n; ++i) {
    r[i] = cublasLtMatmulHeuristicResult_t{};
    r[i].algo.data[0] = 42 + static_cast<uint64_t>(i);
  }
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t LAlgoCheck(cublasLtHandle_t, cublasLtMatmulDesc_t, cublasLtMatrixLayout_t, cublasLtMatrixLayout_t,
                          cublasLtMatrixLayout_t, cublasLtMatrixLayout_t, const cublasLtMatmulAlgo_t*,
                          cublasLtMatmulHeuristicResult_t* r) {
  *r = cublasLtMatmulHeuristicResult_t{};
  return g->refuse_algo ? CUBLAS_STATUS_INVALID_VALUE : CUBLAS_STATUS_SUCCESS;
}
// Column-major D[rows x cols] = alpha * op(A) op(B) (+ bias[rows]); fp32 only.
cublasStatus_t LMatmul(cublasLtHandle_t, cublasLtMatmulDesc_t desc, const void* alpha, const void* A,
                       cublasLtMatrixLayout_t la, const void* B, cublasLtMatrixLayout_t lb, const void*, const void*,
                       cublasLtMatrixLayout_t, void* D, cublasLtMatrixLayout_t ld, const cublasLtMatmulAlgo_t* algo,
                       void*, size_t, cudaStream_t) {
  const uint64_t algo_id = algo->data[0];
  const FakeDesc d = *reinterpret_cast<FakeDesc*>(desc);
  const FakeLayout a = *reinterpret_cast<FakeLayout*>(la), b = *reinterpret_cast<FakeLayout*>(lb),
                   o = *reinterpret_cast<FakeLayout*>(ld);
  if (a.type != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
  float al;
  std::memcpy(&al, alpha, 4);
  const uint64_t rows = o.rows, cols = o.cols, k = d.ta == CUBLAS_OP_N ? a.cols : a.rows;
  EXPECT_EQ(d.ta == CUBLAS_OP_N ? a.rows : a.cols, rows);
  EXPECT_EQ(d.tb == CUBLAS_OP_N ? b.cols : b.rows, cols);
  EXPECT_EQ(d.tb == CUBLAS_OP_N ? b.rows : b.cols, k);
  const float* pa = static_cast<const float*>(A);
  const float* pb = static_cast<const float*>(B);
  const float* bias = static_cast<const float*>(d.bias);
  float* pd = static_cast<float*>(D);
  const bool ta = d.ta != CUBLAS_OP_N, tb = d.tb != CUBLAS_OP_N;
  const cublasLtEpilogue_t ep = d.ep;
  Run([=] {
    g->launched.push_back("gemm");
    g->last_algo = algo_id;
    if (g->algo_ms.count(algo_id)) g->clock += g->algo_ms[algo_id];
    for (uint64_t r = 0; r < rows; ++r) {
      for (uint64_t c = 0; c < cols; ++c) {
        double acc = 0;
        for (uint64_t p = 0; p < k; ++p) {
          acc += double(ta ? pa[p + r * a.ld] : pa[r + p * a.ld]) * double(tb ? pb[c + p * b.ld] : pb[p + c * b.ld]);
        }
        double v = al * acc;
        if (ep == CUBLASLT_EPILOGUE_BIAS || ep == CUBLASLT_EPILOGUE_GELU_BIAS) v += bias[r];
        if (ep == CUBLASLT_EPILOGUE_GELU_BIAS) v = 0.5 * v * (1 + std::tanh(0.7978845608 * (v + 0.044715 * v * v * v)));
        pd[r + c * o.ld] = static_cast<float>(v);
      }
    }
  });
  return CUBLAS_STATUS_SUCCESS;
}

// The fake cuBLAS: cublasGemmEx computes column-major fp32 C[m x n] = alpha * op(A) op(B) for real.
void CublasCall(const std::string& what) { g->cublas_calls.push_back(what + (g->capturing ? " (capturing)" : "")); }
cublasStatus_t BCreate(cublasHandle_t* h) {
  *h = reinterpret_cast<cublasHandle_t>(0x6);
  CublasCall("create");
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t BDestroy(cublasHandle_t) { CublasCall("destroy"); return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t BSetStream(cublasHandle_t, cudaStream_t s) { CublasCall("stream " + StreamName(s)); return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t BSetWorkspace(cublasHandle_t, void* w, size_t n) {
  CublasCall(w != nullptr ? "workspace " + std::to_string(n) : "workspace null");
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t BSetMathMode(cublasHandle_t, cublasMath_t) { CublasCall("math"); return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t BGetVersion(cublasHandle_t, int* v) { *v = 130002; return CUBLAS_STATUS_SUCCESS; }
const char* BStatusString(cublasStatus_t) { return "fake cublas status"; }
cublasStatus_t BGemmEx(cublasHandle_t, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                       const void* alpha, const void* A, cudaDataType at, int lda, const void* B, cudaDataType bt,
                       int ldb, const void* beta, void* C, cudaDataType ct, int ldc, cublasComputeType_t compute,
                       cublasGemmAlgo_t) {
  if (at != CUDA_R_32F || bt != CUDA_R_32F || ct != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
  float al, be;
  std::memcpy(&al, alpha, 4);
  std::memcpy(&be, beta, 4);
  EXPECT_EQ(be, 0.0f);
  CublasCall(compute == CUBLAS_COMPUTE_32F_FAST_TF32 ? "gemm 32F_FAST_TF32" : compute == CUBLAS_COMPUTE_32F ? "gemm 32F"
                                                                                                            : "gemm ?");
  const float* pa = static_cast<const float*>(A);
  const float* pb = static_cast<const float*>(B);
  float* pc = static_cast<float*>(C);
  Run([=] {
    g->launched.push_back("cublas_gemm");
    for (int r = 0; r < m; ++r) {
      for (int c = 0; c < n; ++c) {
        double acc = 0;
        for (int p = 0; p < k; ++p) {
          acc += double(ta == CUBLAS_OP_N ? pa[r + p * lda] : pa[p + r * lda]) *
                 double(tb == CUBLAS_OP_N ? pb[p + c * ldb] : pb[c + p * ldb]);
        }
        pc[r + c * ldc] = static_cast<float>(al * acc);
      }
    }
  });
  return CUBLAS_STATUS_SUCCESS;
}

CublasApi FakeCublas() {
  CublasApi b;
  b.cublasCreate_v2 = BCreate; b.cublasDestroy_v2 = BDestroy; b.cublasSetStream_v2 = BSetStream;
  b.cublasSetWorkspace_v2 = BSetWorkspace; b.cublasSetMathMode = BSetMathMode; b.cublasGetVersion_v2 = BGetVersion;
  b.cublasGetStatusString = BStatusString; b.cublasGemmEx = BGemmEx;
  b.path = "fake libcublas";
  return b;
}

DriverApi FakeDriver() {
  DriverApi d;
  d.cuInit = FInit; d.cuDriverGetVersion = FDriverGetVersion; d.cuGetErrorString = FGetErrorString;
  d.cuGetErrorName = FGetErrorName; d.cuDeviceGetCount = FDeviceGetCount; d.cuDeviceGet = FDeviceGet;
  d.cuDeviceGetAttribute = FDeviceGetAttribute; d.cuDeviceGetName = FDeviceGetName;
  d.cuDevicePrimaryCtxRetain = FPrimaryRetain; d.cuDevicePrimaryCtxRelease = FPrimaryRelease;
  d.cuCtxSetCurrent = FCtxSetCurrent; d.cuCtxPushCurrent = FCtxPushCurrent; d.cuCtxPopCurrent = FCtxPopCurrent; d.cuMemAlloc = FMemAlloc; d.cuMemFree = FMemFree; d.cuMemcpyHtoD = FMemcpyHtoD;
  d.cuMemcpyHtoDAsync = FMemcpyHtoDAsync; d.cuMemcpyDtoHAsync = FMemcpyDtoHAsync; d.cuMemsetD8 = FMemsetD8;
  d.cuStreamCreate = FStreamCreate; d.cuStreamDestroy = FStreamDestroy; d.cuStreamSynchronize = FStreamSynchronize;
  d.cuStreamBeginCapture = FBeginCapture; d.cuStreamEndCapture = FEndCapture; d.cuGraphInstantiate = FGraphInstantiate;
  d.cuGraphLaunch = FGraphLaunch; d.cuGraphDestroy = FGraphDestroy; d.cuGraphExecDestroy = FGraphExecDestroy;
  d.cuEventCreate = FEventCreate; d.cuEventDestroy = FEventDestroy; d.cuEventRecord = FEventRecord;
  d.cuEventSynchronize = FEventSynchronize; d.cuEventElapsedTime = FEventElapsedTime;
  d.cuModuleLoadData = FModuleLoadData; d.cuModuleUnload = FModuleUnload; d.cuModuleGetFunction = FModuleGetFunction;
  d.cuFuncSetAttribute = FFuncSetAttribute; d.cuLaunchKernel = FLaunchKernel; d.cuFuncGetParamInfo = FFuncGetParamInfo;
  d.cuMemcpyDtoDAsync = FMemcpyDtoDAsync; d.cuStreamWaitEvent = FStreamWaitEvent;
  d.cuPointerGetAttribute = FPointerGetAttribute;
  return d;
}

CublasLtApi FakeLt() {
  CublasLtApi l;
  l.cublasLtCreate = LCreate; l.cublasLtDestroy = LDestroy; l.cublasLtGetVersion = LGetVersion;
  l.cublasLtGetStatusString = LStatusString; l.cublasLtMatmulDescCreate = LDescCreate;
  l.cublasLtMatmulDescDestroy = LDescDestroy; l.cublasLtMatmulDescSetAttribute = LDescSet;
  l.cublasLtMatrixLayoutCreate = LLayoutCreate; l.cublasLtMatrixLayoutDestroy = LLayoutDestroy;
  l.cublasLtMatmulPreferenceCreate = LPrefCreate; l.cublasLtMatmulPreferenceDestroy = LPrefDestroy;
  l.cublasLtMatmulPreferenceSetAttribute = LPrefSet; l.cublasLtMatmulAlgoGetHeuristic = LHeuristic;
  l.cublasLtMatmulAlgoCheck = LAlgoCheck; l.cublasLtMatmul = LMatmul;
  l.path = "fake";
  return l;
}

// An ELF64 header with no tables, then the entry name: passes the bounds check, names its entry for the fake.
std::string FakeCubin(const std::string& entry) {
  Elf64_Ehdr eh{};
  std::memcpy(eh.e_ident, ELFMAG, SELFMAG);
  eh.e_ident[EI_CLASS] = ELFCLASS64;
  std::string s(reinterpret_cast<const char*>(&eh), sizeof eh);
  return s + entry + std::string(1, '\0');
}

// A 2-layer MLP: y[b,3] = relu(x[b,4] @ W1[4,6] + b1) @ W2[3,6]^T + b2, in fp32.
struct Mlp {
  std::vector<float> w1 = std::vector<float>(24), b1 = std::vector<float>(6), w2 = std::vector<float>(18),
                     b2 = std::vector<float>(3);
  std::string weights, kernels;
  json plan;
  Mlp() {
    for (size_t i = 0; i < w1.size(); ++i) w1[i] = std::sin(0.7 * i + 0.1);
    for (size_t i = 0; i < b1.size(); ++i) b1[i] = 0.1f * i - 0.2f;
    for (size_t i = 0; i < w2.size(); ++i) w2[i] = std::cos(0.3 * i);
    for (size_t i = 0; i < b2.size(); ++i) b2[i] = 0.05f * i;
    auto put = [&](const std::vector<float>& v) {
      const size_t off = weights.size();
      weights.append(reinterpret_cast<const char*>(v.data()), v.size() * 4);
      weights.resize((weights.size() + 255) / 256 * 256, '\0');
      return off;
    };
    const size_t o1 = put(w1), ob1 = put(b1), o2 = put(w2), ob2 = put(b2);
    const std::string cubin = FakeCubin("fake_relu");
    kernels = cubin;
    const json bn = {{"mul", {"batch", 6}}};
    plan = {
        {"format", "xrt-cuda-plan"}, {"version", 1}, {"triton_version", "3.6.0"}, {"archs", {"sm_90a"}},
        {"dims", {{"batch", {{"max", 8}}}}},
        {"tensors",
         {{{"name", "x"}, {"dtype", "float32"}, {"shape", {"batch", 4}}, {"storage", "input"}, {"bytes_max", 128}},
          {{"name", "w1"}, {"dtype", "float32"}, {"shape", {4, 6}}, {"storage", "weight"}, {"offset", o1}, {"bytes_max", 96}},
          {{"name", "b1"}, {"dtype", "float32"}, {"shape", {6}}, {"storage", "weight"}, {"offset", ob1}, {"bytes_max", 24}},
          {{"name", "h"}, {"dtype", "float32"}, {"shape", {"batch", 6}}, {"storage", "arena"}, {"offset", 0}, {"bytes_max", 192}},
          {{"name", "r"}, {"dtype", "float32"}, {"shape", {"batch", 6}}, {"storage", "arena"}, {"offset", 256}, {"bytes_max", 192}},
          {{"name", "w2"}, {"dtype", "float32"}, {"shape", {3, 6}}, {"storage", "weight"}, {"offset", o2}, {"bytes_max", 72}},
          {{"name", "b2"}, {"dtype", "float32"}, {"shape", {3}}, {"storage", "weight"}, {"offset", ob2}, {"bytes_max", 12}},
          {{"name", "y"}, {"dtype", "float32"}, {"shape", {"batch", 3}}, {"storage", "output"}, {"bytes_max", 96}}}},
        {"inputs", {0}}, {"outputs", {7}}, {"arena_bytes", 512},
        {"kernels", {{{"entry", "fake_relu"}, {"num_warps", 2}, {"shared_mem", 0},
                      {"params", {{{"tensor", 3}}, {{"tensor", 4}}, {{"dim", bn}}, {{"scratch", "global"}}}},
                      {"images", {{"sm_90a", {0, cubin.size()}}}}, {"group", "relu"}, {"onnx_nodes", {"Relu_0"}}}}},
        {"gemms", {{{"m", "batch"}, {"n", 6}, {"k", 4}, {"a", 0}, {"b", 1}, {"c", 3}, {"bias", 2}, {"dtype", "float32"},
                    {"epilogue", "bias"}, {"onnx_nodes", {"MatMul_0", "Add_0"}}},
                   {{"m", "batch"}, {"n", 3}, {"k", 6}, {"a", 4}, {"b", 5}, {"c", 7}, {"bias", 6}, {"trans_b", true},
                    {"dtype", "float32"}, {"epilogue", "bias"}, {"onnx_nodes", {"Gemm_1"}}}}},
        {"launches", {{{"gemm", 0}}, {{"kernel", 0}, {"grid", {{{"cdiv", {bn, 64}}}, 1, 1}}}, {{"gemm", 1}}}},
    };
  }
  std::vector<float> Reference(const std::vector<float>& x, int batch) const {
    std::vector<float> y(batch * 3);
    for (int b = 0; b < batch; ++b) {
      double h[6];
      for (int j = 0; j < 6; ++j) {
        double acc = b1[j];
        for (int i = 0; i < 4; ++i) acc += double(x[b * 4 + i]) * w1[i * 6 + j];
        h[j] = acc > 0 ? acc : 0;
      }
      for (int o = 0; o < 3; ++o) {
        double acc = b2[o];
        for (int j = 0; j < 6; ++j) acc += h[j] * w2[o * 6 + j];
        y[b * 3 + o] = static_cast<float>(acc);
      }
    }
    return y;
  }
};

class CudaEngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fake_ = std::make_unique<Fake>();
    g = fake_.get();
    g->param_sizes["fake_relu"] = {8, 8, 4, 8};
    drv_ = FakeDriver();
    lt_ = FakeLt();
  }
  void TearDown() override { g = nullptr; }

  // Creates an engine over the plan; returns the status code (and message in *message).
  xrt_status_code_t Create(const json& plan, const std::string& weights, const std::string& kernels,
                           std::unique_ptr<Engine>* out, std::string* message = nullptr, bool with_lt = true,
                           EngineOptions options = {}) {
    plan_text_ = plan.dump();
    EngineArtifacts a{plan_text_.data(), plan_text_.size(), weights.data(), weights.size(), kernels.data(),
                      kernels.size(), {}};
    return CreateFrom(a, out, message, with_lt, options);
  }

  // Creates an engine whose weights come as parts: "weights" = parts[0], "weights.1" = parts[1], ...
  xrt_status_code_t CreateParts(const json& plan, const std::vector<std::string>& parts, const std::string& kernels,
                                std::unique_ptr<Engine>* out, std::string* message = nullptr) {
    plan_text_ = plan.dump();
    EngineArtifacts a{plan_text_.data(), plan_text_.size(), parts[0].data(), parts[0].size(), kernels.data(),
                      kernels.size(), {}};
    for (size_t i = 1; i < parts.size(); ++i) a.more_weights.push_back(ByteSpan{parts[i].data(), parts[i].size()});
    return CreateFrom(a, out, message, true, {});
  }

  xrt_status_code_t CreateFrom(const EngineArtifacts& a, std::unique_ptr<Engine>* out, std::string* message,
                               bool with_lt, EngineOptions options) {
    options.workspace_bytes = 1024;
    options.report_path = ::testing::TempDir() + "cuda_engine_test_report.jsonl";
    xrt_status_t s = Engine::Create(&drv_, with_lt ? &lt_ : nullptr, "libcublasLt.so.13 not found (fake)", a,
                                    options, out);
    const xrt_status_code_t code = xrt_status_code(s);
    if (message) *message = xrt_status_message(s);
    xrt_status_free(s);
    return code;
  }

  std::vector<float> RunMlp(Engine& e, const std::vector<float>& x, int batch, xrt_status_code_t* code = nullptr,
                            std::string* message = nullptr) {
    const int64_t shape[2] = {batch, 4};
    xrt_tensor_view_t in{XRT_DTYPE_FLOAT32, 2, shape, const_cast<float*>(x.data()), x.size() * 4};
    xrt_backend_output_t out{};
    xrt_status_t s = e.Execute(&in, 1, &out, 1);
    if (code) *code = xrt_status_code(s);
    if (message) *message = xrt_status_message(s);
    std::vector<float> y;
    if (s == nullptr) {
      EXPECT_EQ(out.rank, 2u);
      EXPECT_EQ(out.shape[0], batch);
      EXPECT_EQ(out.shape[1], 3);
      y.assign(static_cast<float*>(out.data), static_cast<float*>(out.data) + out.byte_size / 4);
      out.release(out.owner);
    }
    xrt_status_free(s);
    return y;
  }

  std::unique_ptr<Fake> fake_;
  DriverApi drv_;
  CublasLtApi lt_;
  std::string plan_text_;
};

std::vector<float> Inputs(int batch, float seed) {
  std::vector<float> x(batch * 4);
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(seed + 1.3f * i);
  return x;
}

TEST_F(CudaEngineTest, MlpRunsThroughOneGraphPerShapeAndMatchesTheHostReference) {
  Mlp mlp;
  std::unique_ptr<Engine> e;
  std::string msg;
  ASSERT_EQ(Create(mlp.plan, mlp.weights, mlp.kernels, &e, &msg), XRT_STATUS_OK) << msg;
  EXPECT_EQ(g->allocs.size(), 1u) << "one device allocation";
  EXPECT_EQ(g->sync_uploads, 1) << "weights uploaded once";
  EXPECT_EQ(g->loaded_images, std::vector<std::string>{"cubin"});
  for (int batch : {2, 5, 2, 8}) {
    const std::vector<float> x = Inputs(batch, static_cast<float>(batch));
    const std::vector<float> y = RunMlp(*e, x, batch);
    const std::vector<float> ref = mlp.Reference(x, batch);
    ASSERT_EQ(y.size(), ref.size());
    double err = 0;
    for (size_t i = 0; i < y.size(); ++i) err = std::max(err, std::abs(double(y[i]) - ref[i]));
    EXPECT_LT(err, 1e-5) << "batch " << batch;
  }
  EXPECT_EQ(g->instantiated, 3) << "graphs for batch 2, 5 and 8; batch 2 replayed";
  EXPECT_EQ(g->graph_launches, 4);
  EXPECT_EQ(e->GraphCount(), 3u);
  EXPECT_EQ(g->async_h2d, 4);
  EXPECT_EQ(g->async_d2h, 4);
  const std::vector<std::string> order = {"gemm", "fake_relu", "gemm"};
  ASSERT_EQ(g->launched.size(), 12u);
  for (size_t i = 0; i < g->launched.size(); ++i) EXPECT_EQ(g->launched[i], order[i % 3]);
  const json info = json::parse(e->Describe());
  EXPECT_EQ(info["arch"], "sm_90");
  EXPECT_EQ(info["launches_per_run"], 3);
  EXPECT_EQ(info["kernel_images"]["sm_90a"], 1);
  EXPECT_EQ(info["device_bytes"]["arena"], 512);
  EXPECT_NE(info["copies"].get<std::string>().find("host->device"), std::string::npos);
  EXPECT_EQ(info["gemm_algos"][0]["algo"], "cuBLASLt heuristic (first candidate)");
}

TEST_F(CudaEngineTest, WeightsStoredAsPartsAreUploadedBackToBackAndRunAsOne) {
  Mlp mlp;
  // cut at arbitrary bytes: the parts' concatenation is the weights space, whatever the cut points
  const std::string& w = mlp.weights;
  ASSERT_GT(w.size(), 40u);
  const std::vector<std::string> parts = {w.substr(0, 7), w.substr(7, 33), "", w.substr(40)};
  json plan = mlp.plan;
  plan["weights_parts"] = {7, 33, 0, w.size() - 40};
  std::unique_ptr<Engine> e;
  std::string msg;
  ASSERT_EQ(CreateParts(plan, parts, mlp.kernels, &e, &msg), XRT_STATUS_OK) << msg;
  EXPECT_EQ(g->sync_uploads, 3) << "one upload per non-empty part";
  const std::vector<float> x = Inputs(5, 0.5f);
  const std::vector<float> y = RunMlp(*e, x, 5);
  const std::vector<float> ref = mlp.Reference(x, 5);
  ASSERT_EQ(y.size(), ref.size());
  for (size_t i = 0; i < y.size(); ++i) EXPECT_NEAR(y[i], ref[i], 1e-5);
  const json info = json::parse(e->Describe());
  EXPECT_EQ(info["device_bytes"]["weights"], w.size());
  EXPECT_EQ(info["device_bytes"]["weights_parts"], 4);
  e.reset();

  // the plan's declared parts must be what the variant gives: a missing or resized part shifts every offset after it
  plan["weights_parts"] = {7, 33, w.size() - 40};
  EXPECT_EQ(CreateParts(plan, parts, mlp.kernels, &e, &msg), XRT_STATUS_DATA_CORRUPT);
  EXPECT_NE(msg.find("declares 3 weights parts but the variant gives 4"), std::string::npos) << msg;
  plan["weights_parts"] = {7, 33, w.size() - 30};
  EXPECT_EQ(CreateParts(plan, parts, mlp.kernels, &e, &msg), XRT_STATUS_DATA_CORRUPT);
  EXPECT_NE(msg.find("plan.weights_parts: sums to"), std::string::npos) << msg;
  plan["weights_parts"] = json::array();
  EXPECT_EQ(CreateParts(plan, parts, mlp.kernels, &e, &msg), XRT_STATUS_DATA_CORRUPT);
  EXPECT_NE(msg.find("is empty"), std::string::npos) << msg;
}

TEST_F(CudaEngineTest, KernelsWhoseImageWaitsForThePriorGridUseProgrammaticDependentLaunch) {
  Mlp mlp;
  drv_.cuLaunchKernelEx = FLaunchKernelEx;
  json plan = mlp.plan;
  plan["kernels"][0]["pdl_archs"] = {"sm_90a"};
  std::unique_ptr<Engine> e;
  std::string msg;
  EngineOptions on;  // XRT_CUDA_PDL=1
  on.pdl = true;
  ASSERT_EQ(Create(plan, mlp.weights, mlp.kernels, &e, &msg, true, on), XRT_STATUS_OK) << msg;
  const std::vector<float> x = Inputs(3, 0.25f);
  const std::vector<float> y = RunMlp(*e, x, 3);
  const std::vector<float> ref = mlp.Reference(x, 3);
  for (size_t i = 0; i < y.size(); ++i) EXPECT_NEAR(y[i], ref[i], 1e-5);
  EXPECT_EQ(g->pdl_launches, 1) << "the relu kernel, captured once";
  EXPECT_EQ(json::parse(e->Describe())["kernels_with_pdl"], 1);
  e.reset();

  g->pdl_launches = 0;  // the default: off
  ASSERT_EQ(Create(plan, mlp.weights, mlp.kernels, &e, &msg), XRT_STATUS_OK) << msg;
  RunMlp(*e, x, 3);
  EXPECT_EQ(g->pdl_launches, 0);
  e.reset();

  plan["kernels"][0].erase("pdl_archs");  // an image that does not wait: never launched early
  ASSERT_EQ(Create(plan, mlp.weights, mlp.kernels, &e, &msg, true, on), XRT_STATUS_OK) << msg;
  RunMlp(*e, x, 3);
  EXPECT_EQ(g->pdl_launches, 0);
  e.reset();

  plan["kernels"][0]["pdl_archs"] = {"ptx"};
  EXPECT_EQ(Create(plan, mlp.weights, mlp.kernels, &e, &msg), XRT_STATUS_DATA_CORRUPT);
  EXPECT_NE(msg.find("pdl_archs"), std::string::npos) << msg;
}

TEST_F(CudaEngineTest, APlanWithoutGemmsNeverTouchesCublasLt) {
  // matmul = triton: every GEMM is a kernel. cuBLASLt is neither loaded nor asked for its warm handle.
  Mlp mlp;
  json plan = mlp.plan;
  plan["gemms"] = json::array();
  plan["launches"] = {{{"kernel", 0}, {"grid", {{{"cdiv", {{{"mul", {"batch", 6}}}, 64}}}, 1, 1}}}};
  EngineOptions o;
  bool loaded = false, asked = false;
  o.load_cublaslt = [&](std::string*) -> const CublasLtApi* { loaded = true; return nullptr; };
  o.take_warm_cublaslt = [&](double*) -> cublasLtHandle_t { asked = true; return nullptr; };
  std::unique_ptr<Engine> e;
  std::string msg;
  ASSERT_EQ(Create(plan, mlp.weights, mlp.kernels, &e, &msg, /*with_lt=*/false, o), XRT_STATUS_OK) << msg;
  RunMlp(*e, Inputs(2, 1.0f), 2);
  EXPECT_FALSE(loaded);
  EXPECT_FALSE(asked);
  const json info = json::parse(e->Describe());
  EXPECT_FALSE(info.contains("cublaslt"));
}

// What the engine did after init (the log without init's own allocation, upload and capture).
std::vector<std::string> RunLog(size_t from) { return std::vector<std::string>(g->log.begin() + from, g->log.end()); }

TEST_F(CudaEngineTest, HostTensorsWithoutAStreamRunAsBeforeWithNoEvents) {
  Mlp mlp;
  std::unique_ptr<Engine> e;
  ASSERT_EQ(Create(mlp.plan, mlp.weights, mlp.kernels, &e), XRT_STATUS_OK);
  RunMlp(*e, Inputs(2, 0), 2);  // captures batch 2's graph
  const size_t from = g->log.size();
  RunMlp(*e, Inputs(2, 1), 2);
  EXPECT_EQ(RunLog(from), (std::vector<std::string>{"HtoD@engine", "graph@engine", "DtoH@engine", "sync engine"}));
}

// Device inputs and outputs on the caller's stream: the input is copied device-to-device into the graph's input
// buffer after the engine's stream waited for the caller's, the output into its own allocation, the caller's stream
// waits for the engine's, and the call returns without synchronising.
TEST_F(CudaEngineTest, DeviceTensorsAreCopiedOnTheDeviceAndOrderedOnTheCallersStream) {
  Mlp mlp;
  std::unique_ptr<Engine> e;
  ASSERT_EQ(Create(mlp.plan, mlp.weights, mlp.kernels, &e), XRT_STATUS_OK);
  const std::vector<float> x = Inputs(3, 4);
  CUdeviceptr dx = 0;
  ASSERT_EQ(drv_.cuMemAlloc(&dx, x.size() * 4), CUDA_SUCCESS);  // "device memory" the caller owns
  std::memcpy(reinterpret_cast<void*>(dx), x.data(), x.size() * 4);
  const int64_t shape[2] = {3, 4};
  xrt_tensor_view_t in{XRT_DTYPE_FLOAT32, 2, shape, reinterpret_cast<void*>(dx), x.size() * 4};
  const xrt_placement_t on_device{XRT_MEMORY_CUDA, 0};
  xrt_run_options_t run{};
  run.struct_size = sizeof(run);
  run.stream = reinterpret_cast<void*>(0x77);
  run.outputs_on_device = 1;
  RunMlp(*e, Inputs(3, 0), 3);  // graph for batch 3 captured; the run below is a replay
  const size_t from = g->log.size();
  const size_t before_h2d = g->async_h2d, before_d2h = g->async_d2h;
  xrt_backend_output_t out{};
  xrt_placement_t out_placement{XRT_MEMORY_HOST, 0};
  xrt_status_t s = e->ExecutePlaced(run, &in, &on_device, 1, &out, &out_placement, 1);
  ASSERT_EQ(s, nullptr) << xrt_status_message(s);
  EXPECT_EQ(RunLog(from), (std::vector<std::string>{"record E0@caller", "wait engine<-E0", "DtoD@engine",
                                                     "graph@engine", "alloc", "DtoD@engine", "record E1@engine",
                                                     "wait caller<-E1"}))
      << "no host copy and no synchronisation";
  EXPECT_EQ(g->async_h2d, before_h2d);
  EXPECT_EQ(g->async_d2h, before_d2h);
  EXPECT_EQ(out_placement.kind, XRT_MEMORY_CUDA);
  EXPECT_EQ(out_placement.device_id, 0);
  ASSERT_EQ(out.byte_size, 9u * 4);
  EXPECT_EQ(out.shape[0], 3);
  const std::vector<float> ref = mlp.Reference(x, 3);
  const auto* y = static_cast<const float*>(out.data);  // the fake's device memory is host memory
  for (size_t i = 0; i < ref.size(); ++i) EXPECT_NEAR(y[i], ref[i], 1e-5) << i;
  // Its own allocation: a second run does not overwrite it, and release frees it.
  xrt_backend_output_t out2{};
  xrt_placement_t out2_placement{};
  s = e->ExecutePlaced(run, &in, &on_device, 1, &out2, &out2_placement, 1);
  ASSERT_EQ(s, nullptr);
  EXPECT_NE(out2.data, out.data);
  out.release(out.owner);
  out2.release(out2.owner);
  EXPECT_EQ(g->log.back(), "free");

  // Without a stream: ordered after the legacy default stream, and complete on return.
  run.stream = nullptr;
  const size_t from2 = g->log.size();
  s = e->ExecutePlaced(run, &in, &on_device, 1, &out, &out_placement, 1);
  ASSERT_EQ(s, nullptr);
  EXPECT_EQ(RunLog(from2), (std::vector<std::string>{"record E0@legacy", "wait engine<-E0", "DtoD@engine",
                                                      "graph@engine", "alloc", "DtoD@engine", "record E1@engine",
                                                      "wait legacy<-E1", "sync engine"}));
  out.release(out.owner);
  // Host outputs on the caller's stream: copied to the host and complete on return.
  run.stream = reinterpret_cast<void*>(0x77);
  run.outputs_on_device = 0;
  const size_t from3 = g->log.size();
  s = e->ExecutePlaced(run, &in, &on_device, 1, &out, &out_placement, 1);
  ASSERT_EQ(s, nullptr);
  EXPECT_EQ(RunLog(from3), (std::vector<std::string>{"record E0@caller", "wait engine<-E0", "DtoD@engine",
                                                      "graph@engine", "DtoH@engine", "record E1@engine",
                                                      "wait caller<-E1", "sync engine"}));
  EXPECT_EQ(out_placement.kind, XRT_MEMORY_HOST);
  for (size_t i = 0; i < ref.size(); ++i) EXPECT_NEAR(static_cast<const float*>(out.data)[i], ref[i], 1e-5) << i;
  out.release(out.owner);
  drv_.cuMemFree(dx);
  EXPECT_NE(json::parse(e->Describe())["copies"].get<std::string>().find("device->device"), std::string::npos);
}

TEST_F(CudaEngineTest, DeviceInputsOnAnotherDeviceOrUnknownToCudaAreRefusedBeforeAnyCopy) {
  Mlp mlp;
  std::unique_ptr<Engine> e;
  ASSERT_EQ(Create(mlp.plan, mlp.weights, mlp.kernels, &e), XRT_STATUS_OK);
  std::vector<float> x = Inputs(2, 0);
  const int64_t shape[2] = {2, 4};
  xrt_tensor_view_t in{XRT_DTYPE_FLOAT32, 2, shape, x.data(), x.size() * 4};
  xrt_run_options_t run{};
  run.struct_size = sizeof(run);
  xrt_backend_output_t out{};
  xrt_placement_t out_placement{};
  CUdeviceptr small = 0;
  ASSERT_EQ(drv_.cuMemAlloc(&small, 24), CUDA_SUCCESS);  // 6 floats; the input is 8
  const size_t from = g->log.size();
  const auto expect = [&](xrt_placement_t p, const char* needle) {
    xrt_status_t s = e->ExecutePlaced(run, &in, &p, 1, &out, &out_placement, 1);
    EXPECT_EQ(xrt_status_code(s), XRT_STATUS_INVALID_ARGUMENT);
    EXPECT_NE(std::string(xrt_status_message(s)).find(needle), std::string::npos) << xrt_status_message(s);
    xrt_status_free(s);
  };
  expect({XRT_MEMORY_CUDA, 1}, "input 0 (x) is on cuda:1 but this session runs on cuda:0");
  expect({XRT_MEMORY_CUDA, 0}, "is declared cuda:0 memory, but CUDA does not know its address");
  // A view that starts inside an allocation but runs past its end (the copy would fault the context).
  in.data = reinterpret_cast<void*>(small);
  expect({XRT_MEMORY_CUDA, 0}, "input 0 (x): its 32 bytes do not lie inside one device allocation (24 bytes from");
  EXPECT_TRUE(RunLog(from).empty());
  EXPECT_TRUE(g->launched.empty());
  drv_.cuMemFree(small);
}

// Replaces every use of dim "batch" by a constant and drops the dims: a static plan.
void MakeStatic(json& j, int batch) {
  if (j.is_string() && j == "batch") j = batch;
  if (j.is_structured()) {
    for (auto& v : j) MakeStatic(v, batch);
  }
}

TEST_F(CudaEngineTest, StaticPlanCapturesItsGraphAtInitAndAsksTheHeuristicOncePerGemmShape) {
  Mlp mlp;
  mlp.plan["dims"] = json::object();
  for (const char* key : {"tensors", "kernels", "gemms", "launches"}) MakeStatic(mlp.plan[key], 3);
  std::unique_ptr<Engine> e;
  std::string msg;
  ASSERT_EQ(Create(mlp.plan, mlp.weights, mlp.kernels, &e, &msg), XRT_STATUS_OK) << msg;
  EXPECT_EQ(g->instantiated, 1) << "captured at init";
  EXPECT_EQ(g->heuristic_calls, 2) << "two GEMM shapes; the capture reuses the init's answers";
  const json info = json::parse(e->Describe());
  EXPECT_TRUE(info["init_ms"].contains("capture_graph"));
  const std::vector<float> x = Inputs(3, 2);
  const std::vector<float> y = RunMlp(*e, x, 3);
  const std::vector<float> ref = mlp.Reference(x, 3);
  for (size_t i = 0; i < y.size(); ++i) EXPECT_NEAR(y[i], ref[i], 1e-5);
  EXPECT_EQ(g->instantiated, 1);
  EXPECT_EQ(g->graph_launches, 1);
  EXPECT_EQ(g->context_depth.load(), 0) << "init and runs restore the caller's current context";
  e.reset();
  EXPECT_EQ(g->context_depth.load(), 0);
}

TEST_F(CudaEngineTest, GraphCacheIsBounded) {
  Mlp mlp;
  std::unique_ptr<Engine> e;
  EngineOptions o;
  o.max_graphs = 2;
  ASSERT_EQ(Create(mlp.plan, mlp.weights, mlp.kernels, &e, nullptr, true, o), XRT_STATUS_OK);
  for (int batch : {1, 2, 3, 4}) RunMlp(*e, Inputs(batch, 0), batch);
  EXPECT_EQ(e->GraphCount(), 2u);
}

TEST_F(CudaEngineTest, ProfilingRunsWithoutAGraphAndReportsPerGroup) {
  Mlp mlp;
  std::unique_ptr<Engine> e;
  EngineOptions o;
  o.profile = true;
  ASSERT_EQ(Create(mlp.plan, mlp.weights, mlp.kernels, &e, nullptr, true, o), XRT_STATUS_OK);
  const std::vector<float> x = Inputs(3, 1);
  const std::vector<float> y = RunMlp(*e, x, 3);
  const std::vector<float> ref = mlp.Reference(x, 3);
  for (size_t i = 0; i < y.size(); ++i) EXPECT_NEAR(y[i], ref[i], 1e-5);
  EXPECT_EQ(g->instantiated, 0);
  EXPECT_EQ(g->events_recorded, 6 + 4) << "3 launches x 2, then the upload's and the download's start and end";
  EXPECT_EQ(g->launched.size(), 6u) << "an untimed warm-up pass, then the timed one";
  const json report = json::parse(e->LastReport());
  EXPECT_EQ(report["event"], "profile");
  EXPECT_EQ(report["dims"], "batch=3");
  EXPECT_DOUBLE_EQ(report["groups"]["relu"].get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(report["groups"]["gemm_bias"].get<double>(), 1.0);
  EXPECT_EQ(report["launches"][1]["onnx_nodes"], json({"Relu_0"}));
}

TEST_F(CudaEngineTest, ProfilingTimesCopiesAndSyncsAsTheirOwnRecords) {
  Mlp mlp;
  std::unique_ptr<Engine> e;
  EngineOptions o;
  o.profile = true;
  ASSERT_EQ(Create(mlp.plan, mlp.weights, mlp.kernels, &e, nullptr, true, o), XRT_STATUS_OK);
  std::string records;
  xrt_status_t before = e->ProfileRecords(&records);
  ASSERT_NE(before, nullptr) << "no profiled run yet";
  EXPECT_EQ(xrt_status_code(before), XRT_STATUS_FAILED_PRECONDITION);
  xrt_status_free(before);
  RunMlp(*e, Inputs(2, 0), 2);
  // Events on the engine's stream frame the upload (before its first copy, after its last) and the download.
  const auto at = [](const std::string& prefix) {
    return std::find_if(g->log.begin(), g->log.end(), [&](const std::string& l) { return l.rfind(prefix, 0) == 0; }) -
           g->log.begin();
  };
  const auto first_record = at("record"), upload = at("HtoD@"), download = at("DtoH@");
  EXPECT_LT(first_record, upload);
  EXPECT_LT(upload, download);
  EXPECT_EQ(g->log[download - 1].rfind("record", 0), 0u) << "the download's start event";
  const json report = json::parse(e->LastReport());
  ASSERT_EQ(report["copies"].size(), 2u) << report.dump();
  EXPECT_EQ(report["copies"][0]["type"], "memcpy HtoD");
  EXPECT_EQ(report["copies"][0]["bytes"], 2 * 4 * 4);
  EXPECT_DOUBLE_EQ(report["copies"][0]["ms"].get<double>(), 0.5);  // the fake driver's event time
  EXPECT_EQ(report["copies"][1]["type"], "memcpy DtoH");
  EXPECT_EQ(report["syncs"][0]["kind"], "sync");
  ASSERT_EQ(e->ProfileRecords(&records), nullptr);
  const json r = json::parse(records);
  EXPECT_EQ(r["records_format"], 1);
  EXPECT_EQ(r["window"], "last_run");
  std::map<std::string, int> kinds;
  for (const auto& rec : r["records"]) ++kinds[rec["kind"].get<std::string>()];
  EXPECT_EQ(kinds["compute"], 3);
  EXPECT_EQ(kinds["copy"], 2);
  EXPECT_EQ(kinds["sync"], 1);
  EXPECT_EQ(r["records"][1]["onnx_nodes"], json({"Relu_0"}));
}

TEST_F(CudaEngineTest, ProfileRecordsNeedProfilingMode) {
  Mlp mlp;
  std::unique_ptr<Engine> e;
  ASSERT_EQ(Create(mlp.plan, mlp.weights, mlp.kernels, &e), XRT_STATUS_OK);
  RunMlp(*e, Inputs(1, 0), 1);
  std::string records;
  xrt_status_t s = e->ProfileRecords(&records);
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(xrt_status_code(s), XRT_STATUS_FAILED_PRECONDITION);
  EXPECT_NE(std::string(xrt_status_message(s)).find("without profiling"), std::string::npos);
  xrt_status_free(s);
}

TEST_F(CudaEngineTest, ReplayTimingReportsTheMedianOfGraphReplays) {
  Mlp mlp;
  std::unique_ptr<Engine> e;
  EngineOptions o;
  o.replay_timing = 5;
  ASSERT_EQ(Create(mlp.plan, mlp.weights, mlp.kernels, &e, nullptr, true, o), XRT_STATUS_OK);
  RunMlp(*e, Inputs(2, 0), 2);
  EXPECT_EQ(g->graph_launches, 1 + 3 + 5) << "the run, 3 warm-ups, 5 timed";
  const json report = json::parse(e->LastReport());
  EXPECT_EQ(report["event"], "replay");
  EXPECT_EQ(report["n"], 5);
  EXPECT_DOUBLE_EQ(report["median_ms"].get<double>(), 0.5);
}

TEST_F(CudaEngineTest, StoredAlgorithmIsCheckedAndFallsBackWhenRefused) {
  Mlp mlp;
  mlp.plan["gemms"][0]["algo"] = {{"source", "tuned"}, {"config", std::string(128, 'a')}};
  std::unique_ptr<Engine> e;
  ASSERT_EQ(Create(mlp.plan, mlp.weights, mlp.kernels, &e), XRT_STATUS_OK);
  EXPECT_EQ(json::parse(e->Describe())["gemm_algos"][0]["algo"],
            "stored tuned algorithm accepted by cublasLtMatmulAlgoCheck");
  g->refuse_algo = true;
  ASSERT_EQ(Create(mlp.plan, mlp.weights, mlp.kernels, &e), XRT_STATUS_OK);
  const std::string note = json::parse(e->Describe())["gemm_algos"][0]["algo"];
  EXPECT_NE(note.find("refused (CUBLAS_STATUS_FAKE); fell back to cuBLASLt heuristic (first candidate)"), std::string::npos) << note;
  const std::vector<float> x = Inputs(2, 3);
  const std::vector<float> y = RunMlp(*e, x, 2);
  EXPECT_NEAR(y[0], mlp.Reference(x, 2)[0], 1e-5);
}

TEST_F(CudaEngineTest, TuningTriesTheCandidatesInTheCapturedGraphAndKeepsTheFastest) {
  Mlp mlp;
  mlp.plan["dims"] = json::object();
  for (const char* key : {"tensors", "kernels", "gemms", "launches"}) MakeStatic(mlp.plan[key], 3);
  g->heuristic_candidates = 3;
  g->algo_ms = {{42, 0.9f}, {43, 0.2f}, {44, 0.5f}};  // the heuristic's first is the slowest here
  std::unique_ptr<Engine> e;
  EngineOptions o;
  o.tune_gemms = 8;
  ASSERT_EQ(Create(mlp.plan, mlp.weights, mlp.kernels, &e, nullptr, true, o), XRT_STATUS_OK);
  const json info = json::parse(e->Describe());
  EXPECT_TRUE(info["init_ms"].contains("tune_gemms_in_graph"));
  // two GEMM configurations, tuned one after the other: the graph (2 GEMMs) goes 1.8 -> 1.1 -> 0.4 ms
  EXPECT_NE(info["gemm_algos"][0]["algo"].get<std::string>().find(
                "tuned in the CUDA graph: candidate 2 of 3, graph replay 1.1000 ms (first candidate: 1.8000 ms)"),
            std::string::npos) << info["gemm_algos"][0]["algo"];
  EXPECT_NE(info["gemm_algos"][1]["algo"].get<std::string>().find(
                "candidate 2 of 3, graph replay 0.4000 ms (first candidate: 1.1000 ms)"),
            std::string::npos) << info["gemm_algos"][1]["algo"];
  // what the tuning found per GEMM, as numbers (xrtc tune prints the gain): confirmed by the A B A B A B re-timing
  EXPECT_EQ(info["gemm_algos"][0]["tuning"]["candidates"], 3);
  EXPECT_EQ(info["gemm_algos"][0]["tuning"]["chosen"], 2);
  EXPECT_NEAR(info["gemm_algos"][0]["tuning"]["heuristic_graph_ms"].get<double>(), 1.8, 1e-5);
  EXPECT_NEAR(info["gemm_algos"][0]["tuning"]["tuned_graph_ms"].get<double>(), 1.1, 1e-5);
  EXPECT_EQ(info["gemm_algos"][0]["tuning"]["split_k"], 1) << "the fake's candidates are not split";
  EXPECT_EQ(info["gemm_algos"][1]["tuning"]["chosen"], 2);
  EXPECT_NEAR(info["gemm_algos"][1]["tuning"]["heuristic_graph_ms"].get<double>(), 1.1, 1e-5);
  EXPECT_NEAR(info["gemm_algos"][1]["tuning"]["tuned_graph_ms"].get<double>(), 0.4, 1e-5);
  for (const json& a : info["gemm_algos"]) {
    EXPECT_EQ(a["config"].get<std::string>().substr(0, 2), "2b") << "algo.data[0] = 43, as PLAN.md's hex";
    EXPECT_EQ(a["config"].get<std::string>().size(), 128u);
  }
  const std::vector<float> x = Inputs(3, 2);
  const std::vector<float> y = RunMlp(*e, x, 3);
  const std::vector<float> ref = mlp.Reference(x, 3);
  for (size_t i = 0; i < y.size(); ++i) EXPECT_NEAR(y[i], ref[i], 1e-5) << "every candidate computes the same GEMM";
  EXPECT_EQ(g->last_algo, 43u) << "the run replays the graph captured with the tuned algorithms";

  // Without tuning the first candidate is kept and nothing is timed.
  ASSERT_EQ(Create(mlp.plan, mlp.weights, mlp.kernels, &e), XRT_STATUS_OK);
  EXPECT_EQ(json::parse(e->Describe())["gemm_algos"][0]["algo"], "cuBLASLt heuristic (first candidate)");
  // A dynamic plan says why it was not tuned.
  Mlp dynamic;
  ASSERT_EQ(Create(dynamic.plan, dynamic.weights, dynamic.kernels, &e, nullptr, true, o), XRT_STATUS_OK);
  EXPECT_NE(json::parse(e->Describe())["gemm_algos"][0]["algo"].get<std::string>().find("not tuned: the plan has "
                                                                                        "dynamic dims"),
            std::string::npos);
}

// The MLP made static (batch 3) with a stand-in kernel per GEMM (fake GEMMs computed like the fake cuBLASLt).
json WithStandIns(Mlp* mlp) {
  mlp->plan["dims"] = json::object();
  for (const char* key : {"tensors", "kernels", "gemms", "launches"}) MakeStatic(mlp->plan[key], 3);
  const std::vector<std::pair<std::string, std::vector<int>>> stand_ins = {{"fake_gemm:3:6:4:0:1", {0, 1, 2, 3}},
                                                                           {"fake_gemm:3:3:6:1:1", {4, 5, 6, 7}}};
  for (size_t i = 0; i < stand_ins.size(); ++i) {
    const std::string cubin = FakeCubin(stand_ins[i].first);
    const size_t off = mlp->kernels.size();
    mlp->kernels += cubin;
    json params = json::array();
    for (int t : stand_ins[i].second) params.push_back({{"tensor", t}});
    params.push_back({{"scratch", "global"}});
    params.push_back({{"scratch", "profile"}});
    mlp->plan["kernels"].push_back({{"entry", stand_ins[i].first}, {"num_warps", 4}, {"shared_mem", 0},
                                    {"params", params}, {"images", {{"sm_90a", {off, cubin.size()}}}},
                                    {"group", "gemm_stand_in"}});
    mlp->plan["gemms"][i]["stand_in"] = {{"kernel", 1 + i}, {"grid", {1, 1, 1}}};
    g->param_sizes[stand_ins[i].first] = {8, 8, 8, 8, 8, 8};
  }
  return mlp->plan;
}

TEST_F(CudaEngineTest, GemmStandInsRunUntilCublasLtHasLoadedThenTheGraphSwitches) {
  Mlp mlp;
  const json plan = WithStandIns(&mlp);
  const std::vector<std::string> stand_in_order = {"fake_gemm:3:6:4:0:1", "fake_relu", "fake_gemm:3:3:6:1:1"};
  const std::vector<std::string> cublaslt_order = {"gemm", "fake_relu", "gemm"};
  const auto close = [&](const std::vector<float>& x, const std::vector<float>& y) {
    const std::vector<float> ref = mlp.Reference(x, 3);
    ASSERT_EQ(y.size(), ref.size());
    for (size_t i = 0; i < y.size(); ++i) EXPECT_NEAR(y[i], ref[i], 1e-5) << i;
  };
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  EngineOptions o;
  o.load_cublaslt = [this, released](std::string*) -> const CublasLtApi* {
    released.wait();  // cuBLASLt still loading until the test says
    return &lt_;
  };
  std::unique_ptr<Engine> e;
  std::string msg;
  ASSERT_EQ(Create(plan, mlp.weights, mlp.kernels, &e, &msg, /*with_lt=*/false, o), XRT_STATUS_OK) << msg;
  json info = json::parse(e->Describe());
  EXPECT_TRUE(info["init_ms"].contains("capture_graph_with_gemm_stand_ins")) << info["init_ms"];
  EXPECT_NE(info["gemms_path"].get<std::string>().find("stand-ins while cuBLASLt loads"), std::string::npos);
  EXPECT_FALSE(info.contains("gemm_algos")) << "no algorithm chosen yet";
  const char* first_text = e->PublishedDescribe();
  std::vector<float> x = Inputs(3, 1);
  close(x, RunMlp(*e, x, 3));
  EXPECT_EQ(g->launched, stand_in_order) << "the first run did not wait for cuBLASLt";

  release.set_value();
  e->WaitForGemms();
  g->launched.clear();
  x = Inputs(3, 2);
  close(x, RunMlp(*e, x, 3));
  EXPECT_EQ(g->launched, cublaslt_order) << "after the switch the runs replay cuBLASLt's graph";
  info = json::parse(e->Describe());
  EXPECT_NE(info["gemms_path"].get<std::string>().find("cuBLASLt, after the first runs"), std::string::npos);
  EXPECT_EQ(info["gemm_algos"].size(), 2u);
  EXPECT_TRUE(info["init_ms"].contains("cublaslt_graph_ready_after_init_start"));
  EXPECT_NE(e->PublishedDescribe(), first_text) << "a new text for the core; the old one stays valid";
  EXPECT_NE(std::string(first_text).find("stand-ins while"), std::string::npos);

  // cuBLASLt that never loads: the stand-ins stay for good, every run correct
  o.load_cublaslt = [](std::string* error) -> const CublasLtApi* {
    *error = "libcublasLt.so.13 not found (fake)";
    return nullptr;
  };
  ASSERT_EQ(Create(plan, mlp.weights, mlp.kernels, &e, &msg, false, o), XRT_STATUS_OK) << msg;
  e->WaitForGemms();
  g->launched.clear();
  close(x, RunMlp(*e, x, 3));
  EXPECT_EQ(g->launched, stand_in_order);
  const std::string path = json::parse(e->Describe())["gemms_path"];
  EXPECT_NE(path.find("stand-ins for good"), std::string::npos) << path;
  EXPECT_NE(path.find("not found (fake)"), std::string::npos) << path;

  // XRT_CUDA_STAND_INS=0: init waits for cuBLASLt, the first run is already cuBLASLt's
  o = {};
  o.stand_ins = false;
  o.load_cublaslt = [this](std::string*) -> const CublasLtApi* { return &lt_; };
  ASSERT_EQ(Create(plan, mlp.weights, mlp.kernels, &e, &msg, false, o), XRT_STATUS_OK) << msg;
  g->launched.clear();
  close(x, RunMlp(*e, x, 3));
  EXPECT_EQ(g->launched, cublaslt_order);
  EXPECT_EQ(json::parse(e->Describe())["gemms_path"], "cuBLASLt");
}

TEST_F(CudaEngineTest, StandInsThatTouchOtherTensorsOrOnlySomeGemmsAreRefused) {
  Mlp mlp;
  json plan = WithStandIns(&mlp);
  std::unique_ptr<Engine> e;
  std::string msg;
  json bad = plan;
  bad["kernels"][1]["params"][0] = {{"tensor", 4}};  // GEMM 0's stand-in reading GEMM 1's operand
  EXPECT_EQ(Create(bad, mlp.weights, mlp.kernels, &e, &msg), XRT_STATUS_DATA_CORRUPT);
  EXPECT_NE(msg.find("not one of the GEMM's operands"), std::string::npos) << msg;
  bad = plan;
  bad["gemms"][1].erase("stand_in");
  EXPECT_EQ(Create(bad, mlp.weights, mlp.kernels, &e, &msg), XRT_STATUS_DATA_CORRUPT);
  EXPECT_NE(msg.find("one for every GEMM or none"), std::string::npos) << msg;
  Mlp dynamic;
  bad = dynamic.plan;
  bad["gemms"][0]["stand_in"] = {{"kernel", 0}, {"grid", {1, 1, 1}}};
  EXPECT_EQ(Create(bad, dynamic.weights, dynamic.kernels, &e, &msg), XRT_STATUS_DATA_CORRUPT);
  EXPECT_NE(msg.find("only allowed in a static plan"), std::string::npos) << msg;
}

TEST_F(CudaEngineTest, PicksPtxWhenNoCubinMatchesAndNamesTheArchitecturesOtherwise) {
  Mlp mlp;
  g->cc_major = 10;
  std::unique_ptr<Engine> e;
  std::string msg;
  EXPECT_EQ(Create(mlp.plan, mlp.weights, mlp.kernels, &e, &msg), XRT_STATUS_UNAVAILABLE);
  EXPECT_NE(msg.find("has images for sm_90a but this GPU is sm_100 and there is no PTX"), std::string::npos) << msg;
  const std::string ptx = "fake-ptx:fake_relu";
  mlp.plan["kernels"][0]["images"]["ptx"] = {mlp.kernels.size(), ptx.size()};
  ASSERT_EQ(Create(mlp.plan, mlp.weights, mlp.kernels + ptx, &e, &msg), XRT_STATUS_OK) << msg;
  EXPECT_EQ(g->loaded_images.back(), "ptx");
  EXPECT_EQ(json::parse(e->Describe())["kernel_images"]["ptx"], 1);
}

TEST_F(CudaEngineTest, ParameterListMustMatchTheKernel) {
  Mlp mlp;
  g->param_sizes["fake_relu"] = {8, 8, 4, 8, 8};  // Triton's profile_scratch forgotten by the plan
  std::unique_ptr<Engine> e;
  std::string msg;
  EXPECT_EQ(Create(mlp.plan, mlp.weights, mlp.kernels, &e, &msg), XRT_STATUS_DATA_CORRUPT);
  EXPECT_NE(msg.find("the plan lists 4 (a Triton version mismatch? plan says 3.6.0)"), std::string::npos) << msg;
  g->param_sizes["fake_relu"] = {8, 8, 8, 8};
  EXPECT_EQ(Create(mlp.plan, mlp.weights, mlp.kernels, &e, &msg), XRT_STATUS_DATA_CORRUPT);
  EXPECT_NE(msg.find("parameter 2 is 8 bytes in the kernel but the plan passes 4"), std::string::npos) << msg;
}

TEST_F(CudaEngineTest, DriverAndLibraryFailuresAreClearErrors) {
  Mlp mlp;
  std::unique_ptr<Engine> e;
  std::string msg;
  g->fail["cuMemAlloc"] = CUDA_ERROR_OUT_OF_MEMORY;
  EXPECT_EQ(Create(mlp.plan, mlp.weights, mlp.kernels, &e, &msg), XRT_STATUS_RESOURCE_EXHAUSTED);
  EXPECT_NE(msg.find("CUDA_ERROR_OUT_OF_MEMORY"), std::string::npos) << msg;
  g->fail.clear();
  EXPECT_EQ(Create(mlp.plan, mlp.weights, mlp.kernels, &e, &msg, /*with_lt=*/false), XRT_STATUS_UNAVAILABLE);
  EXPECT_NE(msg.find("2 cuBLASLt GEMMs but cuBLASLt is unavailable: libcublasLt.so.13 not found"), std::string::npos)
      << msg;
  g->fail["cuModuleLoadData"] = CUDA_ERROR_NO_BINARY_FOR_GPU;
  EXPECT_EQ(Create(mlp.plan, mlp.weights, mlp.kernels, &e, &msg), XRT_STATUS_UNAVAILABLE);
  EXPECT_NE(msg.find("loading its sm_90a image on sm_90 failed"), std::string::npos) << msg;
  g->fail.clear();
  g->fail["cuStreamEndCapture"] = CUDA_ERROR_STREAM_CAPTURE_INVALIDATED;
  ASSERT_EQ(Create(mlp.plan, mlp.weights, mlp.kernels, &e, &msg), XRT_STATUS_OK) << msg;
  xrt_status_code_t code;
  RunMlp(*e, Inputs(2, 0), 2, &code, &msg);
  EXPECT_EQ(code, XRT_STATUS_INTERNAL);
  EXPECT_NE(msg.find("capturing the CUDA graph"), std::string::npos) << msg;
}

TEST_F(CudaEngineTest, InputsOutsideTheCompiledRangeAreRejectedBeforeAnyLaunch) {
  Mlp mlp;
  std::unique_ptr<Engine> e;
  ASSERT_EQ(Create(mlp.plan, mlp.weights, mlp.kernels, &e), XRT_STATUS_OK);
  xrt_status_code_t code;
  std::string msg;
  RunMlp(*e, Inputs(9, 0), 9, &code, &msg);
  EXPECT_EQ(code, XRT_STATUS_INVALID_ARGUMENT);
  EXPECT_NE(msg.find("dim batch = 9 is outside [1, 8]"), std::string::npos) << msg;
  EXPECT_TRUE(g->launched.empty());
  EXPECT_EQ(g->async_h2d, 0);
}

TEST_F(CudaEngineTest, ShapeDependentOverrunsAreCaughtBeforeCapture) {
  Mlp mlp;
  // m = 2*batch: at init every region fits, but the GEMM would write 2x its output's region.
  mlp.plan["gemms"][1]["m"] = {{"mul", {"batch", 2}}};
  std::unique_ptr<Engine> e;
  ASSERT_EQ(Create(mlp.plan, mlp.weights, mlp.kernels, &e), XRT_STATUS_OK);
  xrt_status_code_t code;
  std::string msg;
  RunMlp(*e, Inputs(8, 0), 8, &code, &msg);
  EXPECT_EQ(code, XRT_STATUS_DATA_CORRUPT);
  EXPECT_NE(msg.find("gemm 1 reaches past an operand's region at batch=8"), std::string::npos) << msg;
  EXPECT_EQ(g->instantiated, 0);
  EXPECT_TRUE(g->launched.empty());
}

// Hostile or broken plans: each mutation must fail init with the right code and a message naming the field.
TEST_F(CudaEngineTest, InvalidPlansFailInitNamingTheField) {
  struct Case {
    const char* what;
    std::function<void(json&, std::string&)> mutate;
    xrt_status_code_t code;
    const char* expect;
  };
  const std::vector<Case> cases = {
      {"version", [](json& p, std::string&) { p["version"] = 2; }, XRT_STATUS_INCOMPATIBLE, "this plugin reads version 1"},
      {"format", [](json& p, std::string&) { p["format"] = "x"; }, XRT_STATUS_DATA_CORRUPT, "plan.format"},
      {"tensor id", [](json& p, std::string&) { p["gemms"][0]["a"] = 99; }, XRT_STATUS_DATA_CORRUPT, "plan.gemms[0].a: is 99, outside [0, 7]"},
      {"param id", [](json& p, std::string&) { p["kernels"][0]["params"][0]["tensor"] = -1; }, XRT_STATUS_DATA_CORRUPT, "params[0].tensor"},
      {"weight region", [](json& p, std::string&) { p["tensors"][1]["offset"] = 1u << 20; }, XRT_STATUS_DATA_CORRUPT, "outside the weights artifact"},
      {"arena region", [](json& p, std::string&) { p["tensors"][4]["offset"] = 400; }, XRT_STATUS_DATA_CORRUPT, "outside the arena"},
      {"bytes_max", [](json& p, std::string&) { p["tensors"][3]["bytes_max"] = 100; }, XRT_STATUS_DATA_CORRUPT, "holds 192 bytes at the max dims but bytes_max is 100"},
      {"image range", [](json& p, std::string&) { p["kernels"][0]["images"]["sm_90a"] = {0, 1 << 20}; }, XRT_STATUS_DATA_CORRUPT, "outside the kernels artifact"},
      {"offset overflow", [](json& p, std::string&) { p["tensors"][1]["offset"] = UINT64_MAX; }, XRT_STATUS_DATA_CORRUPT, "outside the weights artifact"},
      {"unknown dim", [](json& p, std::string&) { p["tensors"][0]["shape"][0] = "seq"; }, XRT_STATUS_DATA_CORRUPT, "names dim \"seq\""},
      {"bad expr", [](json& p, std::string&) { p["launches"][1]["grid"][0] = {{"pow", {2, 3}}}; }, XRT_STATUS_DATA_CORRUPT, "is not an expression"},
      {"size overflow", [](json& p, std::string&) { p["tensors"][3]["shape"] = {"batch", INT64_MAX}; }, XRT_STATUS_DATA_CORRUPT, "overflows"},
      {"io listing", [](json& p, std::string&) { p["outputs"] = json::array(); }, XRT_STATUS_DATA_CORRUPT, "missing from plan.inputs/outputs"},
      {"gemm writes a weight", [](json& p, std::string&) { p["gemms"][0]["c"] = 1; p["tensors"][1]["dtype"] = "float32"; }, XRT_STATUS_DATA_CORRUPT, "must be an arena or output tensor"},
      {"gemm dtype", [](json& p, std::string&) { p["gemms"][0]["dtype"] = "float16"; }, XRT_STATUS_DATA_CORRUPT, "operand tensor 0 is float32, the GEMM is float16"},
      {"launch index", [](json& p, std::string&) { p["launches"][0]["gemm"] = 7; }, XRT_STATUS_DATA_CORRUPT, "plan.launches[0].gemm"},
      {"io size wraps the layout", [](json& p, std::string&) { p["tensors"][7]["bytes_max"] = UINT64_MAX - 8; },
       XRT_STATUS_RESOURCE_EXHAUSTED, "overflow 64 bits"},
      {"arena size wraps the layout", [](json& p, std::string&) { p["arena_bytes"] = UINT64_MAX - 100;
                                                                  p["tensors"][7]["bytes_max"] = 1u << 20; },
       XRT_STATUS_RESOURCE_EXHAUSTED, "overflow 64 bits"},
      {"truncated cubin", [](json&, std::string& k) { k = k.substr(0, 10); }, XRT_STATUS_DATA_CORRUPT, "outside the kernels artifact"},
      {"cubin tables", [](json&, std::string& k) { reinterpret_cast<Elf64_Ehdr*>(&k[0])->e_shnum = 50;
                                                   reinterpret_cast<Elf64_Ehdr*>(&k[0])->e_shentsize = sizeof(Elf64_Shdr); },
       XRT_STATUS_DATA_CORRUPT, "ELF header tables lie outside the image"},
      {"not an object", [](json& p, std::string&) { p = "]["; }, XRT_STATUS_DATA_CORRUPT, "must be a JSON object"},
  };
  for (const Case& c : cases) {
    Mlp mlp;
    std::string kernels = mlp.kernels;
    c.mutate(mlp.plan, kernels);
    std::unique_ptr<Engine> e;
    std::string msg;
    EXPECT_EQ(Create(mlp.plan, mlp.weights, kernels, &e, &msg), c.code) << c.what << ": " << msg;
    EXPECT_NE(msg.find(c.expect), std::string::npos) << c.what << ": " << msg;
    EXPECT_EQ(e, nullptr);
  }
}

// matmul = cublas: the MLP's GEMMs as plain cuBLAS GEMMs (no bias epilogue: the biases are zero here, the compiler
// puts them in a Triton kernel after the GEMM).
json CublasPlan(Mlp* mlp) {
  std::fill(mlp->b1.begin(), mlp->b1.end(), 0.0f);  // the reference's biases; the plan reads none
  std::fill(mlp->b2.begin(), mlp->b2.end(), 0.0f);
  json plan = mlp->plan;
  for (auto& gemm : plan["gemms"]) gemm["library"] = "cublas", gemm["epilogue"] = "none", gemm["bias"] = nullptr;
  return plan;
}

TEST_F(CudaEngineTest, CublasPlanRunsItsGemmsThroughCublasInTheGraphWithoutCublasLt) {
  Mlp mlp;
  const json plan = CublasPlan(&mlp);
  const CublasApi cublas = FakeCublas();
  EngineOptions o;
  bool lt_asked = false;
  o.load_cublaslt = [&](std::string*) -> const CublasLtApi* { lt_asked = true; return nullptr; };
  o.take_warm_cublaslt = [&](double*) -> cublasLtHandle_t { lt_asked = true; return nullptr; };
  o.load_cublas = [&](std::string*) { return &cublas; };
  std::unique_ptr<Engine> e;
  std::string msg;
  ASSERT_EQ(Create(plan, mlp.weights, mlp.kernels, &e, &msg, /*with_lt=*/false, o), XRT_STATUS_OK) << msg;
  for (int batch : {2, 5, 2}) {
    const std::vector<float> x = Inputs(batch, static_cast<float>(batch));
    const std::vector<float> y = RunMlp(*e, x, batch);
    const std::vector<float> ref = mlp.Reference(x, batch);
    ASSERT_EQ(y.size(), ref.size());
    for (size_t i = 0; i < y.size(); ++i) EXPECT_NEAR(y[i], ref[i], 1e-5) << "batch " << batch << " [" << i << "]";
  }
  EXPECT_FALSE(lt_asked) << "a cublas plan never loads cuBLASLt";
  EXPECT_EQ(g->instantiated, 2) << "the cuBLAS GEMMs are captured into one graph per shape";
  const std::vector<std::string> order = {"cublas_gemm", "fake_relu", "cublas_gemm"};
  ASSERT_EQ(g->launched.size(), 9u);
  for (size_t i = 0; i < g->launched.size(); ++i) EXPECT_EQ(g->launched[i], order[i % 3]);
  // handle, stream and workspace before any capture; inside the captures only the GEMMs themselves
  ASSERT_GE(g->cublas_calls.size(), 4u);
  EXPECT_EQ(std::vector<std::string>(g->cublas_calls.begin(), g->cublas_calls.begin() + 4),
            (std::vector<std::string>{"create", "math", "stream engine", "workspace 1024"}));
  for (size_t i = 4; i < g->cublas_calls.size(); ++i) EXPECT_EQ(g->cublas_calls[i], "gemm 32F (capturing)");
  const json info = json::parse(e->Describe());
  EXPECT_EQ(info["gemms_path"], "cuBLAS (matmul = cublas)");
  EXPECT_EQ(info["cublas"]["version"], 130002);
  EXPECT_EQ(info["cublas"]["path"], "fake libcublas");
  ASSERT_EQ(info["gemm_algos"].size(), 2u);
  EXPECT_EQ(info["gemm_algos"][1]["library"], "cublas");
  EXPECT_FALSE(info.contains("cublaslt"));
  e.reset();
  EXPECT_EQ(g->cublas_calls.back(), "destroy");
}

TEST_F(CudaEngineTest, MissingLibcublasIsAClearError) {
  Mlp mlp;
  const json plan = CublasPlan(&mlp);
  EngineOptions o;
  o.load_cublas = [](std::string* error) -> const CublasApi* {
    *error = "libcublas.so.13 not found (pip install nvidia-cublas, or set XRT_CUBLAS to the file or "
             "XRT_CUDA_LIB_PATH to its folder); tried: (fake)";
    return nullptr;
  };
  std::unique_ptr<Engine> e;
  std::string msg;
  EXPECT_EQ(Create(plan, mlp.weights, mlp.kernels, &e, &msg, /*with_lt=*/true, o), XRT_STATUS_UNAVAILABLE);
  EXPECT_NE(msg.find("the plan has 2 cuBLAS GEMMs (policy matmul = cublas) but cuBLAS is unavailable: "
                     "libcublas.so.13 not found (pip install nvidia-cublas"), std::string::npos) << msg;
  EXPECT_EQ(e, nullptr);
  EXPECT_EQ(Create(plan, mlp.weights, mlp.kernels, &e, &msg, /*with_lt=*/true, {}), XRT_STATUS_UNAVAILABLE);
  EXPECT_NE(msg.find("cuBLAS is unavailable: no cuBLAS loader was given"), std::string::npos) << msg;
}

TEST_F(CudaEngineTest, CublasGemmsTheLibraryCannotRunAreRefusedAtParse) {
  const std::vector<std::pair<std::function<void(json&)>, const char*>> cases = {
      {[](json& p) { p["gemms"][0]["epilogue"] = "bias"; p["gemms"][0]["bias"] = 2; }, "plan.gemms[0].epilogue: must be none for a cublas GEMM"},
      {[](json& p) { p["gemms"][1]["library"] = "cublasLt"; }, "plan.gemms[1].library: differs from plan.gemms[0]'s"},
      {[](json& p) { p["gemms"][0]["library"] = "rocblas"; }, "expected cublasLt or cublas"},
      {[](json& p) { p["gemms"][0]["algo"] = {{"config", std::string(128, '0')}}; }, "a cublas GEMM has none"},
  };
  for (const auto& [mutate, expect] : cases) {
    Mlp mlp;
    json plan = CublasPlan(&mlp);
    mutate(plan);
    std::unique_ptr<Engine> e;
    std::string msg;
    EXPECT_EQ(Create(plan, mlp.weights, mlp.kernels, &e, &msg), XRT_STATUS_DATA_CORRUPT) << expect << ": " << msg;
    EXPECT_NE(msg.find(expect), std::string::npos) << msg;
  }
}

}  // namespace
}  // namespace cuda_backend
}  // namespace xrt
