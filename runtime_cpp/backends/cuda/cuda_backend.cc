// cuda_backend.cc - the cuda engine plugin (libxrt_backend_cuda.so): the xrt backend vtable over Engine.
//
// Exports exactly one symbol, xrt_backend_plugin_get. On a machine without an NVIDIA driver it returns UNAVAILABLE
// ("libcuda.so.1 not found: ..."), which the session records as the variant's skip reason before trying the next
// variant. Loading stays cheap: libcuda is dlopened (no cuInit) in plugin_get; cuBLASLt (~540 MB) only when a plan
// has GEMMs.
//
// Variant artifacts: "plan" (JSON, PLAN.md), "weights" (and "weights.1", ...: parts, concatenated), "kernels".
// Variant options (JSON object):
//   "device_id": N (default 0), "xrt.profile": "1" (also env XRT_CUDA_PROFILE=1).
// Env: XRT_CUDA_PDL=1 launches kernels whose image allows it with programmatic dependent launch (off by default: it
// measured 3.5% slower at BERT-base batch 1 on the H200); XRT_CUDA_REPLAY_TIMING=N times N graph replays after each
// run; XRT_CUDA_REPORT=FILE receives the reports;
// XRT_CUDA_TUNE_GEMMS=N (2..64): static plans try up to N cuBLASLt candidates per GEMM configuration in the captured
// graph at init and keep the fastest, for GEMMs without an accepted stored algorithm (describe() gives each choice
// and its config); XRT_CUDA_STAND_INS=0: a static plan whose GEMMs have Triton stand-ins waits for cuBLASLt at init
// instead of running the stand-ins until cuBLASLt has loaded (PLAN.md).
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <string>

#include <nlohmann/json.hpp>

#include "cuda_api.h"
#include "engine.h"
#include "xrt/xrt.h"

namespace xrt {
namespace cuda_backend {
namespace {

constexpr char kEngineName[] = "cuda";

xrt_status_t Make(xrt_status_code_t code, const std::string& message) {
  return xrt_status_make(code, message.c_str());
}

const char* Version(void* /*self*/) {
  static const std::string version = [] {
    std::string error;
    const DriverApi* drv = LoadDriver(&error);
    int v = 0;
    if (drv == nullptr || drv->cuDriverGetVersion(&v) != CUDA_SUCCESS) return std::string("0");
    return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10);  // the driver's CUDA version
  }();
  return version.c_str();
}

// The C boundary: no exception leaves an entry point. `call` names it in the message ("init", "execute"), `during`
// says what ran out of host memory ("loading the variant", "running"). No std::string in the handlers: a bad_alloc
// handler must not allocate more than the status itself.
template <class Body>
xrt_status_t Guarded(const char* call, const char* during, Body&& body) {
  char message[512];
  try {
    return body();
  } catch (const std::bad_alloc&) {
    std::snprintf(message, sizeof message, "cuda: out of host memory while %s", during);
    return xrt_status_make(XRT_STATUS_RESOURCE_EXHAUSTED, message);
  } catch (const std::exception& e) {
    std::snprintf(message, sizeof message, "cuda: %s failed: %s", call, e.what());
    return xrt_status_make(XRT_STATUS_INTERNAL, message);
  } catch (...) {
    std::snprintf(message, sizeof message, "cuda: %s failed with an unknown exception", call);
    return xrt_status_make(XRT_STATUS_INTERNAL, message);
  }
}

// "weights.N" with N a decimal >= 1 (no sign, no leading zero), at most kMaxWeightParts.
bool ParseWeightsPart(const char* role, size_t* part) {
  static constexpr char kPrefix[] = "weights.";
  if (std::strncmp(role, kPrefix, sizeof kPrefix - 1) != 0) return false;
  const char* digits = role + sizeof kPrefix - 1;
  if (digits[0] < '1' || digits[0] > '9') return false;
  size_t v = 0;
  for (const char* c = digits; *c; ++c) {
    if (*c < '0' || *c > '9' || v > kMaxWeightParts) return false;
    v = v * 10 + static_cast<size_t>(*c - '0');
  }
  if (v >= kMaxWeightParts) return false;
  *part = v;
  return true;
}

// "cuda" or "cuda:N".
bool ParseDevice(const char* device, int* ordinal) {
  if (device == nullptr) return false;
  const std::string d(device);
  if (d == "cuda") {
    *ordinal = -1;
    return true;
  }
  if (d.rfind("cuda:", 0) != 0 || d.size() == 5 || d.size() > 9) return false;
  int v = 0;
  for (size_t i = 5; i < d.size(); ++i) {
    if (d[i] < '0' || d[i] > '9') return false;
    v = v * 10 + (d[i] - '0');
  }
  *ordinal = v;
  return true;
}

// One heuristic query for an fp16 GEMM with a bias epilogue: the first query in a process is what costs.
void WarmUpCublasLt(const CublasLtApi* lt, cublasLtHandle_t handle) {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  if (lt->cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F) == CUBLAS_STATUS_SUCCESS &&
      lt->cublasLtMatrixLayoutCreate(&a, CUDA_R_16F, 768, 768, 768) == CUBLAS_STATUS_SUCCESS &&
      lt->cublasLtMatrixLayoutCreate(&b, CUDA_R_16F, 768, 128, 768) == CUBLAS_STATUS_SUCCESS &&
      lt->cublasLtMatrixLayoutCreate(&c, CUDA_R_16F, 768, 128, 768) == CUBLAS_STATUS_SUCCESS &&
      lt->cublasLtMatmulPreferenceCreate(&pref) == CUBLAS_STATUS_SUCCESS) {
    const uint64_t workspace = 32u << 20;
    lt->cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace,
                                             sizeof workspace);
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    lt->cublasLtMatmulAlgoGetHeuristic(handle, desc, a, b, c, c, pref, 1, &result, &found);
  }
  if (pref) lt->cublasLtMatmulPreferenceDestroy(pref);
  for (cublasLtMatrixLayout_t l : {a, b, c}) {
    if (l) lt->cublasLtMatrixLayoutDestroy(l);
  }
  if (desc) lt->cublasLtMatmulDescDestroy(desc);
}

// A warmed cuBLASLt handle for the engine (its context current on this thread), or null where cuBLASLt is missing.
// Only ever called inside init, which joins it: no cuBLASLt call outlives init, so a process that exits right after
// never races cuBLASLt's own exit-time destructors (a background warm-up started when the device was probed did:
// a process that probed the device and exited within ~200 ms crashed).
cublasLtHandle_t CreateWarmCublasLt(double* warm_ms) {
  std::string ignored;
  const CublasLtApi* lt = LoadCublasLt(&ignored);
  if (lt == nullptr) return nullptr;
  const auto t0 = std::chrono::steady_clock::now();
  cublasLtHandle_t handle = nullptr;
  if (lt->cublasLtCreate(&handle) != CUBLAS_STATUS_SUCCESS) return nullptr;
  WarmUpCublasLt(lt, handle);
  *warm_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  return handle;
}

// cuBLASLt's dlopen (~60 ms: a ~500 MB library mapped and relocated) started in the background once a device is
// found: the host probes the device before it reads and verifies the variant's sections, so the two overlap and
// init only waits for what is left. The future is a function static: unloading the plugin waits for the thread.
void PrefetchCublasLt() {
  static std::once_flag once;
  static std::future<void> prefetch;
  std::call_once(once, [] {
    prefetch = std::async(std::launch::async, [] {
      std::string ignored;  // init calls LoadCublasLt again and reports its error (the load is retried there)
      LoadCublasLt(&ignored);
    });
  });
}

int HasDevice(void* /*self*/, const char* device) {
  int ordinal = 0;
  if (!ParseDevice(device, &ordinal)) return 0;
  std::string error;
  const DriverApi* drv = LoadDriver(&error);
  if (drv == nullptr || drv->cuInit(0) != CUDA_SUCCESS) return 0;
  int count = 0;
  if (drv->cuDeviceGetCount(&count) != CUDA_SUCCESS) return 0;
  const bool present = count > (ordinal < 0 ? 0 : ordinal);
  if (present && std::getenv("XRT_CUDA_NO_PREFETCH") == nullptr) PrefetchCublasLt();
  return present ? 1 : 0;
}

xrt_status_t Init(void* /*self*/, const char* device, const xrt_backend_artifact_t* artifacts, size_t artifact_count,
                  const char* options_json, void** out_handle) {
  return Guarded("init", "loading the variant", [&]() -> xrt_status_t {
    if (out_handle == nullptr || (artifacts == nullptr && artifact_count != 0)) {
      return Make(XRT_STATUS_INVALID_ARGUMENT, "cuda: init called with NULL arguments");
    }
    *out_handle = nullptr;
    int ordinal = 0;
    if (!ParseDevice(device, &ordinal)) {
      return Make(XRT_STATUS_INVALID_ARGUMENT,
                  std::string("cuda: unknown device '") + (device ? device : "(null)") + "' (known: cuda, cuda:N)");
    }
    EngineOptions options;
    options.device_ordinal = ordinal < 0 ? 0 : ordinal;
    if (options_json != nullptr && options_json[0] != '\0') {
      const nlohmann::json o = nlohmann::json::parse(options_json, nullptr, false);
      if (o.is_discarded() || !o.is_object()) {
        return Make(XRT_STATUS_INVALID_ARGUMENT, std::string("cuda: variant options must be a JSON object, got: ") +
                                                     options_json);
      }
      if (o.contains("device_id") && ordinal < 0) {
        if (!o["device_id"].is_number_integer()) {
          return Make(XRT_STATUS_INVALID_ARGUMENT, "cuda: option device_id must be an integer");
        }
        options.device_ordinal = o["device_id"].get<int>();
      }
      if (o.contains("xrt.profile") && o["xrt.profile"].is_string()) options.profile = o["xrt.profile"] == "1";
    }
    if (const char* p = std::getenv("XRT_CUDA_PROFILE")) options.profile = options.profile || std::strcmp(p, "1") == 0;
    if (const char* r = std::getenv("XRT_CUDA_REPLAY_TIMING")) {
      const long n = std::strtol(r, nullptr, 10);
      options.replay_timing = n < 0 ? 0 : n > 100000 ? 100000 : static_cast<int>(n);
    }
    if (const char* f = std::getenv("XRT_CUDA_REPORT")) options.report_path = f;
    if (const char* n = std::getenv("XRT_CUDA_PDL")) options.pdl = std::strcmp(n, "1") == 0;
    if (const char* n = std::getenv("XRT_CUDA_STAND_INS")) options.stand_ins = std::strcmp(n, "0") != 0;
    if (const char* t = std::getenv("XRT_CUDA_TUNE_GEMMS")) {
      const long n = std::strtol(t, nullptr, 10);
      options.tune_gemms = n < 0 ? 0 : n > 64 ? 64 : static_cast<int>(n);
    }

    EngineArtifacts a;
    std::map<size_t, ByteSpan> parts;  // "weights.N" by N
    for (size_t i = 0; i < artifact_count; ++i) {
      const char* role = artifacts[i].role ? artifacts[i].role : "";
      if (std::strcmp(role, "plan") == 0) a.plan = artifacts[i].data, a.plan_size = artifacts[i].size;
      if (std::strcmp(role, "weights") == 0) a.weights = artifacts[i].data, a.weights_size = artifacts[i].size;
      if (std::strcmp(role, "kernels") == 0) a.kernels = artifacts[i].data, a.kernels_size = artifacts[i].size;
      size_t part = 0;
      if (ParseWeightsPart(role, &part)) parts[part] = ByteSpan{artifacts[i].data, artifacts[i].size};
    }
    for (const auto& [n, span] : parts) {  // 1, 2, ... with no gap: a missing part would shift every offset after it
      if (n != a.more_weights.size() + 1) {
        return Make(XRT_STATUS_DATA_CORRUPT, "cuda: the variant has artifact weights." + std::to_string(n) +
                                                 " but not weights." + std::to_string(a.more_weights.size() + 1) +
                                                 " (a malformed bundle: rebuild it with xrtc)");
      }
      a.more_weights.push_back(span);
    }
    std::string error;
    const DriverApi* drv = LoadDriver(&error);
    if (drv == nullptr) return Make(XRT_STATUS_UNAVAILABLE, "cuda: " + error);
    // cuBLASLt (its dlopen may still run in the background, PrefetchCublasLt) is waited for only when the plan's
    // GEMMs need it, after the engine has uploaded the weights; its first use runs beside the upload.
    options.load_cublaslt = [](std::string* error) { return LoadCublasLt(error); };
    options.take_warm_cublaslt = [](double* warm_ms) { return CreateWarmCublasLt(warm_ms); };
    options.load_cublas = [](std::string* error) { return LoadCublas(error); };
    std::unique_ptr<Engine> engine;
    if (xrt_status_t s = Engine::Create(drv, nullptr, "", a, options, &engine)) return s;
    *out_handle = engine.release();
    return nullptr;
  });
}

xrt_status_t Execute(void* /*self*/, void* handle, const xrt_tensor_view_t* inputs, size_t input_count,
                     xrt_backend_output_t* outputs, size_t output_count) {
  return Guarded("execute", "running", [&]() -> xrt_status_t {
    if (handle == nullptr || (inputs == nullptr && input_count) || (outputs == nullptr && output_count)) {
      return Make(XRT_STATUS_INVALID_ARGUMENT, "cuda: execute called with NULL arguments");
    }
    return static_cast<Engine*>(handle)->Execute(inputs, input_count, outputs, output_count);
  });
}

xrt_status_t ExecutePlaced(void* /*self*/, void* handle, const xrt_run_options_t* run, const xrt_tensor_view_t* inputs,
                           const xrt_placement_t* input_placements, size_t input_count, xrt_backend_output_t* outputs,
                           xrt_placement_t* output_placements, size_t output_count) {
  return Guarded("execute", "running", [&]() -> xrt_status_t {
    if (handle == nullptr || run == nullptr || (inputs == nullptr && input_count) ||
        (input_placements == nullptr && input_count) || (outputs == nullptr && output_count) ||
        (output_placements == nullptr && output_count)) {
      return Make(XRT_STATUS_INVALID_ARGUMENT, "cuda: execute_placed called with NULL arguments");
    }
    // The core passes its own options struct; read only what its struct_size covers.
    xrt_run_options_t options{};
    options.struct_size = sizeof(options);
    if (run->struct_size >= offsetof(xrt_run_options_t, stream) + sizeof(void*)) {
      options.outputs_on_device = run->outputs_on_device;
      options.stream = run->stream;
    }
    return static_cast<Engine*>(handle)->ExecutePlaced(options, inputs, input_placements, input_count, outputs,
                                                       output_placements, output_count);
  });
}

void Destroy(void* /*self*/, void* handle) {
  try {
    delete static_cast<Engine*>(handle);
  } catch (...) {
  }
}

const char* Describe(void* /*self*/, void* handle) {
  return handle ? static_cast<Engine*>(handle)->PublishedDescribe() : "{}";
}

// The last profiled run's records (xrt.h, xrt_backend_vtable_t.profile; the core's "xrt.profile" turns it on).
xrt_status_t Profile(void* /*self*/, void* handle, void (*sink)(void*, const char*, size_t), void* context) {
  if (handle == nullptr || sink == nullptr) return Make(XRT_STATUS_INVALID_ARGUMENT, "cuda: profile: NULL argument");
  return Guarded("profile", "reading the profile", [&]() -> xrt_status_t {
    std::string json;
    if (xrt_status_t s = static_cast<Engine*>(handle)->ProfileRecords(&json)) return s;
    sink(context, json.c_str(), json.size());
    return nullptr;
  });
}

}  // namespace
}  // namespace cuda_backend
}  // namespace xrt

extern "C" XRT_API xrt_status_t xrt_backend_plugin_get(uint32_t host_abi_version, xrt_backend_vtable_t* out_vtable) {
  namespace cb = xrt::cuda_backend;
  if (out_vtable == nullptr) {
    return xrt_status_make(XRT_STATUS_INVALID_ARGUMENT, "cuda: xrt_backend_plugin_get: out_vtable is NULL");
  }
  if (host_abi_version != XRT_ABI_VERSION) {
    return xrt_status_make(XRT_STATUS_INCOMPATIBLE, ("cuda: plugin built for xrt ABI " +
                                                     std::to_string(XRT_ABI_VERSION) + ", host has ABI " +
                                                     std::to_string(host_abi_version) + "; rebuild the plugin")
                                                        .c_str());
  }
  std::string error;
  if (cb::LoadDriver(&error) == nullptr) return xrt_status_make(XRT_STATUS_UNAVAILABLE, error.c_str());
  xrt_backend_vtable_t vtable{};
  vtable.struct_size = sizeof(xrt_backend_vtable_t);
  vtable.abi_version = XRT_ABI_VERSION;
  vtable.name = cb::kEngineName;
  vtable.self = nullptr;
  vtable.version = &cb::Version;
  vtable.has_device = &cb::HasDevice;
  vtable.init = &cb::Init;
  vtable.execute = &cb::Execute;
  vtable.destroy = &cb::Destroy;
  vtable.describe = &cb::Describe;
  vtable.execute_placed = &cb::ExecutePlaced;
  vtable.profile = &cb::Profile;
  xrt_backend_vtable_copy_out(&vtable, out_vtable);
  return nullptr;
}
