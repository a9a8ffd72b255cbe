// engine.cc - the cuda variant at run time (PLAN.md "Run-time rules").
#include "engine.h"

#include <elf.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <future>
#include <new>

#include <nlohmann/json.hpp>

namespace xrt {
namespace cuda_backend {

namespace {

// The engine's context made current for a scope and the thread's own restored after it: callers (torch, cupy, a
// garbage collector releasing an output) keep whatever device they had current.
class ContextScope {
 public:
  ContextScope(const DriverApi* drv, CUcontext context) : drv_(drv) {
    result_ = drv_->cuCtxPushCurrent(context);
  }
  ~ContextScope() {
    CUcontext popped = nullptr;
    if (result_ == CUDA_SUCCESS) drv_->cuCtxPopCurrent(&popped);
  }
  CUresult result() const { return result_; }
  ContextScope(const ContextScope&) = delete;
  ContextScope& operator=(const ContextScope&) = delete;

 private:
  const DriverApi* drv_;
  CUresult result_;
};

// Lower-case hex of raw bytes (a GEMM's cublasLtMatmulAlgo_t in describe(), as PLAN.md's algo.config stores it).
std::string ToHex(const void* data, size_t size) {
  static const char kDigits[] = "0123456789abcdef";
  const auto* p = static_cast<const uint8_t*>(data);
  std::string out(size * 2, '0');
  for (size_t i = 0; i < size; ++i) out[2 * i] = kDigits[p[i] >> 4], out[2 * i + 1] = kDigits[p[i] & 15];
  return out;
}

constexpr uint64_t kAlign = 256;

uint64_t AlignUp(uint64_t v) { return (v + kAlign - 1) / kAlign * kAlign; }

xrt_status_t Make(xrt_status_code_t code, const std::string& message) {
  return xrt_status_make(code, message.c_str());
}

// A cubin is an ELF file the driver parses without being told its size: check that the headers and every section
// lie inside the bytes we hand over, so a truncated or crafted image cannot make the driver read past them.
bool ElfInBounds(const uint8_t* p, uint64_t size, std::string* why) {
  if (size < sizeof(Elf64_Ehdr) || std::memcmp(p, ELFMAG, SELFMAG) != 0 || p[EI_CLASS] != ELFCLASS64) {
    *why = "not a 64-bit ELF cubin";
    return false;
  }
  Elf64_Ehdr eh;
  std::memcpy(&eh, p, sizeof eh);
  const auto table_ok = [&](uint64_t off, uint64_t n, uint64_t entsize, size_t want) {
    if (n == 0) return true;
    return entsize == want && off <= size && n <= (size - off) / entsize;
  };
  if (!table_ok(eh.e_shoff, eh.e_shnum, eh.e_shentsize, sizeof(Elf64_Shdr)) ||
      !table_ok(eh.e_phoff, eh.e_phnum, eh.e_phentsize, sizeof(Elf64_Phdr))) {
    *why = "ELF header tables lie outside the image";
    return false;
  }
  for (uint64_t i = 0; i < eh.e_shnum; ++i) {
    Elf64_Shdr sh;
    std::memcpy(&sh, p + eh.e_shoff + i * sizeof(Elf64_Shdr), sizeof sh);
    if (sh.sh_type == SHT_NOBITS) continue;
    if (sh.sh_offset > size || sh.sh_size > size - sh.sh_offset) {
      *why = "ELF section " + std::to_string(i) + " lies outside the image";
      return false;
    }
  }
  for (uint64_t i = 0; i < eh.e_phnum; ++i) {
    Elf64_Phdr ph;
    std::memcpy(&ph, p + eh.e_phoff + i * sizeof(Elf64_Phdr), sizeof ph);
    if (ph.p_offset > size || ph.p_filesz > size - ph.p_offset) {
      *why = "ELF segment " + std::to_string(i) + " lies outside the image";
      return false;
    }
  }
  return true;
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

uint16_t FloatToHalf(float f) {  // round-to-nearest-even; alpha only
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  int32_t exp = static_cast<int32_t>((x >> 23) & 0xff) - 127 + 15;
  uint32_t mant = x & 0x7fffffu;
  if (exp >= 31) return static_cast<uint16_t>(sign | 0x7c00u);
  if (exp <= 0) return static_cast<uint16_t>(sign);
  uint32_t h = sign | (static_cast<uint32_t>(exp) << 10) | (mant >> 13);
  const uint32_t rest = mant & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;
  return static_cast<uint16_t>(h);
}

cudaDataType_t LtType(xrt_dtype_t d) {
  switch (d) {
    case XRT_DTYPE_FLOAT16: return CUDA_R_16F;
    case XRT_DTYPE_BFLOAT16: return CUDA_R_16BF;
    default: return CUDA_R_32F;
  }
}

std::string LtStatus(const CublasLtApi* lt, cublasStatus_t s) {
  const char* text = lt && lt->cublasLtGetStatusString ? lt->cublasLtGetStatusString(s) : nullptr;
  return text ? text : "cublasStatus " + std::to_string(static_cast<int>(s));
}

}  // namespace

std::string DriverErrorText(const DriverApi& api, CUresult result) {
  const char* name = nullptr;
  const char* text = nullptr;
  if (api.cuGetErrorName) api.cuGetErrorName(result, &name);
  if (api.cuGetErrorString) api.cuGetErrorString(result, &text);
  std::string out = name ? name : ("CUresult " + std::to_string(static_cast<int>(result)));
  if (text) out += std::string(" (") + text + ")";
  return out;
}

struct Engine::GemmState {
  const CublasLtApi* lt = nullptr;
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, lc = nullptr;
  cublasLtMatmulAlgo_t algo{};
  uint8_t alpha[4] = {}, beta[4] = {};
  ~GemmState() {
    if (lt == nullptr) return;
    if (la) lt->cublasLtMatrixLayoutDestroy(la);
    if (lb) lt->cublasLtMatrixLayoutDestroy(lb);
    if (lc) lt->cublasLtMatrixLayoutDestroy(lc);
    if (desc) lt->cublasLtMatmulDescDestroy(desc);
  }
};

Engine::Engine(const DriverApi* drv, const CublasLtApi* lt, EngineOptions options)
    : drv_(drv), lt_(lt), options_(std::move(options)) {}

xrt_status_t Engine::Cu(CUresult r, const std::string& what) const {
  if (r == CUDA_SUCCESS) return nullptr;
  const xrt_status_code_t code = r == CUDA_ERROR_OUT_OF_MEMORY ? XRT_STATUS_RESOURCE_EXHAUSTED
                                 : (r == CUDA_ERROR_NO_DEVICE || r == CUDA_ERROR_INVALID_DEVICE)
                                     ? XRT_STATUS_UNAVAILABLE
                                     : XRT_STATUS_INTERNAL;
  return Make(code, "cuda: " + what + " failed: " + DriverErrorText(*drv_, r));
}

xrt_status_t Engine::Create(const DriverApi* drv, const CublasLtApi* lt, const std::string& lt_error,
                            const EngineArtifacts& artifacts, const EngineOptions& options,
                            std::unique_ptr<Engine>* out) {
  std::unique_ptr<Engine> engine(new Engine(drv, lt, options));
  if (xrt_status_t s = engine->Init(artifacts, lt_error)) return s;  // the destructor frees what Init made
  *out = std::move(engine);
  return nullptr;
}

CUdeviceptr Engine::TensorPtr(int id) const {
  const TensorSpec& t = plan_.tensors[id];
  switch (t.storage) {
    case Storage::kWeight: return base_ + weights_off_ + t.offset;
    case Storage::kArena: return base_ + arena_off_ + t.offset;
    default: return base_ + io_off_[id];
  }
}

namespace {
double MsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

std::vector<ByteSpan> Engine::WeightParts(const EngineArtifacts& a) {
  std::vector<ByteSpan> parts = {ByteSpan{a.weights, a.weights_size}};
  parts.insert(parts.end(), a.more_weights.begin(), a.more_weights.end());
  return parts;
}

namespace {
// Engines whose helper thread may still be inside cuBLASLt, joined by an atexit handler registered once cuBLASLt
// has loaded: handlers run in reverse order of registration, so it runs before cuBLASLt's own static destructors.
// Leaked on purpose: usable while the process exits.
std::mutex& HelperEnginesMutex() {
  static auto* m = new std::mutex;
  return *m;
}
std::vector<Engine*>& HelperEngines() {
  static auto* v = new std::vector<Engine*>;
  return *v;
}
void JoinHelpersAtExit() {
  std::lock_guard<std::mutex> lock(HelperEnginesMutex());
  for (Engine* e : HelperEngines()) e->JoinHelperThread();
}
}  // namespace

xrt_status_t Engine::Init(const EngineArtifacts& a, const std::string& lt_error) {
  const auto t_start = std::chrono::steady_clock::now();
  init_start_ = t_start;
  nlohmann::json phases = nlohmann::json::object();
  auto t = t_start;
  const auto phase = [&](const char* name) {
    phases[name] = std::round(MsSince(t) * 100) / 100;
    t = std::chrono::steady_clock::now();
  };
  if (a.plan == nullptr || a.plan_size == 0) {
    return Make(XRT_STATUS_DATA_CORRUPT, "cuda: the variant has no 'plan' artifact (rebuild with xrtc --target cuda)");
  }
  if ((a.weights == nullptr && a.weights_size) || (a.kernels == nullptr && a.kernels_size)) {
    return Make(XRT_STATUS_INVALID_ARGUMENT, "cuda: an artifact has a size but no data");
  }
  uint64_t weights_bytes = a.weights_size;
  for (const ByteSpan& p : a.more_weights) {
    if (p.data == nullptr && p.size) return Make(XRT_STATUS_INVALID_ARGUMENT, "cuda: a weights part has no data");
    if (__builtin_add_overflow(weights_bytes, p.size, &weights_bytes)) {
      return Make(XRT_STATUS_DATA_CORRUPT, "cuda: the weights parts' sizes overflow 64 bits (a malformed bundle)");
    }
  }
  const PlanError pe = ParsePlan(std::string(static_cast<const char*>(a.plan), a.plan_size), weights_bytes,
                                 a.kernels_size, &plan_);
  if (!pe.ok()) return Make(pe.code, pe.message);
  cublas_plan_ = !plan_.gemms.empty() && plan_.gemms[0].library == "cublas";  // the parser: one library per plan
  if (!plan_.weights_parts.empty()) {  // declared parts: the variant must give exactly these, in this order
    std::vector<uint64_t> given = {a.weights_size};
    for (const ByteSpan& p : a.more_weights) given.push_back(p.size);
    if (given != plan_.weights_parts) {
      return Make(XRT_STATUS_DATA_CORRUPT, "cuda: the plan declares " + std::to_string(plan_.weights_parts.size()) +
                                               " weights parts but the variant gives " +
                                               std::to_string(given.size()) + " of other sizes (a malformed bundle)");
    }
  }
  phase("parse_plan");

  // Device and its primary context (shared with cudart users in the process, e.g. cuBLASLt, torch).
  if (xrt_status_t s = Cu(drv_->cuInit(0), "cuInit")) return s;
  int count = 0;
  if (xrt_status_t s = Cu(drv_->cuDeviceGetCount(&count), "cuDeviceGetCount")) return s;
  if (options_.device_ordinal < 0 || options_.device_ordinal >= count) {
    return Make(XRT_STATUS_UNAVAILABLE, "cuda: device " + std::to_string(options_.device_ordinal) +
                                            " does not exist (" + std::to_string(count) + " CUDA devices here)");
  }
  if (xrt_status_t s = Cu(drv_->cuDeviceGet(&device_, options_.device_ordinal), "cuDeviceGet")) return s;
  if (xrt_status_t s = Cu(drv_->cuDevicePrimaryCtxRetain(&context_, device_), "cuDevicePrimaryCtxRetain")) return s;
  context_retained_ = true;
  const ContextScope scope(drv_, context_);
  if (xrt_status_t s = Cu(scope.result(), "cuCtxPushCurrent")) return s;
  int major = 0, minor = 0;
  drv_->cuDeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, device_);
  drv_->cuDeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, device_);
  arch_ = "sm_" + std::to_string(major) + std::to_string(minor);
  char name[256] = {};
  drv_->cuDeviceGetName(name, sizeof name - 1, device_);
  int driver_version = 0;
  drv_->cuDriverGetVersion(&driver_version);
  if (xrt_status_t s = Cu(drv_->cuStreamCreate(&stream_, CU_STREAM_NON_BLOCKING), "cuStreamCreate")) return s;

  phase("context");
  // cuBLASLt's first use (a handle and one heuristic query, ~125 ms the first time in a process) runs on a helper
  // thread while the modules load and the weights upload; it is joined below, and on every early return (the
  // future's destructor waits; a handle nobody took is destroyed by WarmHandle). It writes warm_ms_ (a member: with
  // stand-ins the future moves to the GEMMs' helper thread and outlives this function).
  struct WarmHandle {
    std::future<cublasLtHandle_t> future;
    std::function<void(cublasLtHandle_t)> destroy;
    ~WarmHandle() {
      if (future.valid()) {
        cublasLtHandle_t h = future.get();
        if (h != nullptr && destroy) destroy(h);
      }
    }
  } warm;
  if (!plan_.gemms.empty() && !cublas_plan_ && options_.take_warm_cublaslt) {
    warm.future = std::async(std::launch::async, [this] {
      const ContextScope in_context(drv_, context_);
      return in_context.result() == CUDA_SUCCESS ? options_.take_warm_cublaslt(&warm_ms_) : nullptr;
    });
    warm.destroy = [this](cublasLtHandle_t h) {
      std::string ignored;
      const CublasLtApi* lt = lt_ != nullptr ? lt_ : options_.load_cublaslt ? options_.load_cublaslt(&ignored) : nullptr;
      if (lt != nullptr) lt->cublasLtDestroy(h);
    };
  }
  if (xrt_status_t s = LoadModules(a)) return s;
  phase("load_modules");

  // One allocation: weights | arena | inputs and outputs at max dims | cuBLASLt workspace.
  // Every sum is checked: a hostile plan's sizes must not wrap the layout into a smaller allocation.
  io_off_.assign(plan_.tensors.size(), 0);
  uint64_t off = 0;
  bool overflow = false;
  const auto add = [&](uint64_t bytes) {
    const uint64_t aligned = bytes > UINT64_MAX - kAlign ? UINT64_MAX : AlignUp(bytes);
    overflow = overflow || bytes > UINT64_MAX - kAlign || __builtin_add_overflow(off, aligned, &off);
  };
  weights_off_ = off;
  add(weights_bytes);
  arena_off_ = off;
  add(plan_.arena_bytes);
  const uint64_t io_start = off;
  for (int id : plan_.inputs) io_off_[id] = off, add(plan_.tensors[id].bytes_max);
  for (int id : plan_.outputs) io_off_[id] = off, add(plan_.tensors[id].bytes_max);
  const uint64_t io_bytes = off - io_start;
  workspace_off_ = off;
  const uint64_t workspace = plan_.gemms.empty() ? 0 : AlignUp(options_.workspace_bytes);
  add(workspace);
  total_bytes_ = std::max<uint64_t>(off, kAlign);
  if (overflow) {
    return Make(XRT_STATUS_RESOURCE_EXHAUSTED, "cuda: the plan's memory sizes overflow 64 bits (a malformed bundle)");
  }
  if (xrt_status_t s = Cu(drv_->cuMemAlloc(&base_, total_bytes_),
                          "allocating " + std::to_string(total_bytes_) + " bytes of device memory")) {
    return s;
  }
  // Zeroed once so that no run can ever observe another process's or an earlier bundle's bytes.
  if (xrt_status_t s = Cu(drv_->cuMemsetD8(base_, 0, total_bytes_), "cuMemsetD8")) return s;
  uint64_t at = weights_off_;
  for (const ByteSpan& part : WeightParts(a)) {
    if (part.size == 0) continue;
    if (xrt_status_t s = Cu(drv_->cuMemcpyHtoD(base_ + at, part.data, part.size), "uploading weights")) return s;
    at += part.size;
  }
  phase("allocate_and_upload_weights");

  // GEMM stand-ins (PLAN.md): the first runs do not wait for cuBLASLt. Static plans only (one graph to switch).
  const bool stand_ins = options_.stand_ins && !options_.profile && options_.tune_gemms <= 1 && plan_.dims.empty() &&
                         !cublas_plan_ && !plan_.gemms.empty() && plan_.gemms[0].stand_in >= 0 && lt_ == nullptr &&
                         options_.load_cublaslt != nullptr;
  if (stand_ins) {
    const PlanError checked = CheckBinding(plan_, {});
    if (!checked.ok()) return Make(checked.code, checked.message);
    Binding b;
    b.stand_ins = true;
    if (xrt_status_t s = Capture(&b, stream_)) {
      ReleaseBinding(&b);
      return s;
    }
    graphs_.push_back(std::move(b));
    phase("capture_graph_with_gemm_stand_ins");
    gemms_path_ = "Triton stand-ins while cuBLASLt loads (a helper thread)";
    {  // joined at the process's exit if still running then (never takes this lock itself: no deadlock)
      std::lock_guard<std::mutex> lock(HelperEnginesMutex());
      HelperEngines().push_back(this);
    }
    helper_ = std::async(std::launch::async, [this, f = std::move(warm.future)]() mutable { UpgradeGemms(std::move(f)); });
  } else if (cublas_plan_) {
    if (xrt_status_t s = PrepareCublas()) return s;
    phase("load_cublas");
    gemms_path_ = "cuBLAS (matmul = cublas)";
  } else {
    if (!plan_.gemms.empty() && lt_ == nullptr) {
      std::string error = lt_error;
      if (options_.load_cublaslt) {
        lt_ = options_.load_cublaslt(&error);  // what is left of the plugin's background dlopen
        phase("wait_for_cublaslt_dlopen");
      }
      if (lt_ == nullptr) {
        return Make(XRT_STATUS_UNAVAILABLE, "cuda: the plan has " + std::to_string(plan_.gemms.size()) +
                                                " cuBLASLt GEMMs but cuBLASLt is unavailable: " + error);
      }
    }
    if (warm.future.valid()) {
      lt_handle_ = warm.future.get();  // owned from here on: the destructor destroys it
      phase("wait_for_cublaslt_warm_up");
    }
    if (xrt_status_t s = PrepareGemmAlgorithms()) return s;
    phase("cublaslt_algorithms");
    if (!plan_.gemms.empty()) gemms_path_ = "cuBLASLt";
  }
  if (!stand_ins) {
    // A static plan (no dims) has one input shape: capture its graph now, so the first run is a replay.
    if (plan_.dims.empty()) {
      const PlanError checked = CheckBinding(plan_, {});
      if (!checked.ok()) return Make(checked.code, checked.message);
      Binding b;
      if (xrt_status_t s = PrepareBinding({}, &b, !options_.profile)) {
        ReleaseBinding(&b);
        return s;
      }
      graphs_.push_back(std::move(b));
      phase(options_.profile ? "prepare_static_shape" : "capture_graph");
      if (options_.tune_gemms > 1 && !options_.profile && !candidates_.empty()) {
        if (xrt_status_t s = TuneInGraph(&graphs_.back())) return s;
        for (size_t i = 0; i < plan_.gemms.size(); ++i) {
          gemm_config_[i] = ToHex(&graphs_.back().gemms[i]->algo, sizeof(cublasLtMatmulAlgo_t));
        }
        phase("tune_gemms_in_graph");
      }
    } else if (options_.tune_gemms > 1) {
      for (auto& note : gemm_notes_) note += " (not tuned: the plan has dynamic dims; tuning runs on static plans)";
    }
  }
  phases["total_engine_init"] = std::round(MsSince(t_start) * 100) / 100;
  // the wait for cuBLASLt at init (its dlopen, started in the background when the device was probed)
  // cuBLASLt's first use (handle, one heuristic query) on the helper thread, overlapping the upload; its handle is
  // the one used above (the waits for it and for the dlopen are the wait_for_cublaslt_* phases)
  if (!stand_ins && warm_ms_ >= 0) phases["cublaslt_warm_up_beside_upload"] = warm_ms_;
  std::map<std::string, int> images;
  for (const auto& k : image_kind_) images[k]++;
  nlohmann::json info = {
      {"device_name", name},
      {"device_ordinal", options_.device_ordinal},
      {"arch", arch_},
      {"driver_version", driver_version},
      {"kernel_images", images},
      {"kernels", plan_.kernels.size()},
      {"gemms", plan_.gemms.size()},
      {"launches_per_run", plan_.launches.size()},
      {"kernels_with_pdl", std::count(pdl_.begin(), pdl_.end(), true)},
      {"triton_version", plan_.triton_version},
      {"execution", options_.profile ? "profiling: launches run one by one without a graph, each timed with CUDA "
                                       "events"
                                     : "one CUDA graph per input shape, captured on first use, then replayed"},
      {"copies", "host inputs are copied host->device before each run and outputs device->host after it; device "
                 "(cuda) inputs are copied device->device into the graph's input buffers; with outputs_on_device each "
                 "output is copied device->device into its own allocation (no host copy)"},
      {"init_ms", phases},
      {"device_bytes", {{"total", total_bytes_}, {"weights", weights_bytes}, {"weights_parts", 1 + a.more_weights.size()}, {"arena", plan_.arena_bytes},
                        {"io", io_bytes}, {"cublaslt_workspace", workspace}}},
  };
  {
    std::lock_guard<std::mutex> lock(describe_mu_);  // the helper thread may be rebuilding it already
    if (!stand_ins) gemms_prepared_ = !plan_.gemms.empty();  // cublas plans: PrepareCublas wrote the notes
    info_base_ = info.dump();
    BuildDescribe();
  }
  return nullptr;
}

// describe(): init's record, and the GEMMs as they run now (their algorithms once cuBLASLt has them). Called with
// describe_mu_ held.
void Engine::BuildDescribe() {
  nlohmann::json info = nlohmann::json::parse(info_base_, nullptr, /*allow_exceptions=*/false);
  if (!info.is_object()) return;
  if (!plan_.gemms.empty()) {
    info["gemms_path"] = gemms_path_;
    if (switch_ready_ms_ >= 0) {
      info["init_ms"]["cublaslt_graph_ready_after_init_start"] = std::round(switch_ready_ms_ * 100) / 100;
      if (warm_ms_ >= 0) info["init_ms"]["cublaslt_warm_up_on_the_helper_thread"] = warm_ms_;
    }
  }
  if (gemms_prepared_) {
    nlohmann::json gemm_info = nlohmann::json::array();
    for (size_t i = 0; i < plan_.gemms.size() && i < gemm_notes_.size(); ++i) {
      const GemmSpec& spec = plan_.gemms[i];
      gemm_info.push_back({{"gemm", i},
                           {"library", spec.library},
                           {"onnx_nodes", spec.onnx_nodes},
                           {"epilogue", spec.epilogue},
                           {"algo", gemm_notes_[i]},
                           {"config", gemm_config_[i]}});
      if (auto t = tuning_.find(gemm_key_[i]); t != tuning_.end()) {
        gemm_info.back()["tuning"] = {{"candidates", t->second.candidates},
                                      {"chosen", t->second.chosen + 1},
                                      {"heuristic_graph_ms", t->second.heuristic_ms},
                                      {"tuned_graph_ms", t->second.tuned_ms},
                                      {"split_k", t->second.split_k}};
      }
    }
    if (cublas_plan_) {
      info["cublas"] = {{"path", cublas_->path}, {"version", cublas_version_}};
    } else {
      info["cublaslt"] = {{"path", lt_->path}, {"version", lt_version_}};
    }
    info["gemm_algos"] = gemm_info;
  }
  describe_ = info.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string Engine::Describe() const {
  std::lock_guard<std::mutex> lock(describe_mu_);
  return describe_;
}

const char* Engine::PublishedDescribe() {
  std::lock_guard<std::mutex> lock(describe_mu_);
  if (published_.empty() || published_.back() != describe_) published_.push_back(describe_);
  return published_.back().c_str();
}

// matmul = cublas: loads cuBLAS, makes the handle (default math mode: the compute type of each GEMM says fp32 or
// TF32), sets the engine's stream and gives it the allocation's workspace, so that no GEMM allocates while the graph
// is captured.
xrt_status_t Engine::PrepareCublas() {
  std::string error = "no cuBLAS loader was given";
  cublas_ = options_.load_cublas ? options_.load_cublas(&error) : nullptr;
  if (cublas_ == nullptr) {
    return Make(XRT_STATUS_UNAVAILABLE, "cuda: the plan has " + std::to_string(plan_.gemms.size()) +
                                            " cuBLAS GEMMs (policy matmul = cublas) but cuBLAS is unavailable: " +
                                            error);
  }
  const std::string what = "cuBLAS set-up";
  if (cublasStatus_t st = cublas_->cublasCreate_v2(&cublas_handle_)) return CublasFailed(what, "cublasCreate_v2", st);
  if (cublasStatus_t st = cublas_->cublasSetMathMode(cublas_handle_, CUBLAS_DEFAULT_MATH)) {
    return CublasFailed(what, "cublasSetMathMode", st);
  }
  if (cublasStatus_t st = cublas_->cublasGetVersion_v2(cublas_handle_, &cublas_version_)) {
    return CublasFailed(what, "cublasGetVersion_v2", st);
  }
  // the engine's stream and the allocation's workspace now, before any capture: cuBLAS must not allocate its own
  // workspace inside a captured graph (CublasGemm binds both again only for another stream)
  if (xrt_status_t s = BindCublasStream(stream_, what)) return s;
  gemm_notes_.assign(plan_.gemms.size(), "cublasGemmEx, CUBLAS_GEMM_DEFAULT (cuBLAS picks the kernel)");
  gemm_config_.assign(plan_.gemms.size(), "");
  gemm_key_.assign(plan_.gemms.size(), "");
  return nullptr;
}

xrt_status_t Engine::CublasFailed(const std::string& what, const char* call, cublasStatus_t st) const {
  return Make(XRT_STATUS_INTERNAL, "cuda: " + what + ": " + call + " failed: " + cublas_->cublasGetStatusString(st) +
                                       " (" + std::to_string(static_cast<int>(st)) + ")");
}

xrt_status_t Engine::BindCublasStream(CUstream stream, const std::string& what) {
  if (stream == cublas_stream_ && cublas_stream_ != nullptr) return nullptr;
  if (cublasStatus_t st = cublas_->cublasSetStream_v2(cublas_handle_, stream)) {
    return CublasFailed(what, "cublasSetStream_v2", st);
  }
  void* workspace = reinterpret_cast<void*>(static_cast<uintptr_t>(base_ + workspace_off_));
  if (cublasStatus_t st = cublas_->cublasSetWorkspace_v2(cublas_handle_, workspace, options_.workspace_bytes)) {
    return CublasFailed(what, "cublasSetWorkspace_v2", st);
  }
  cublas_stream_ = stream;
  return nullptr;
}

// One cuBLAS GEMM, row-major as the plan states it: C[m,n] = A[m,k] @ B[k,n] is, in cuBLAS's column-major terms,
// C^T = B^T A^T, so B goes first and the dims swap. The stream is bound again only when it changes.
xrt_status_t Engine::CublasGemm(const GemmSpec& g, const std::vector<int64_t>& values, CUstream stream,
                                const std::string& what) {
  if (xrt_status_t s = BindCublasStream(stream, what)) return s;
  int64_t m = 0;
  Eval(g.m, values, &m);  // in range: CheckBinding
  const cudaDataType type = g.dtype == XRT_DTYPE_FLOAT16    ? CUDA_R_16F
                            : g.dtype == XRT_DTYPE_BFLOAT16 ? CUDA_R_16BF
                                                            : CUDA_R_32F;
  const cublasComputeType_t compute =
      g.compute == "32F_FAST_TF32" ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;  // 16F: refused by the parser
  const float alpha = g.alpha, beta = 0.0f;
  const auto ptr = [&](int id) { return reinterpret_cast<void*>(static_cast<uintptr_t>(TensorPtr(id))); };
  const int n = static_cast<int>(g.n), k = static_cast<int>(g.k), mm = static_cast<int>(m);
  const cublasStatus_t st = cublas_->cublasGemmEx(
      cublas_handle_, g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, n, mm, k, &alpha,
      ptr(g.b), type, g.trans_b ? k : n, ptr(g.a), type, g.trans_a ? mm : k, &beta, ptr(g.c), type, n, compute,
      CUBLAS_GEMM_DEFAULT);
  if (st != CUBLAS_STATUS_SUCCESS) return CublasFailed(what, "cublasGemmEx", st);
  return nullptr;
}

// A handle (the warm one if the helper made it) and each GEMM's algorithm at the max dims: stored ones checked,
// otherwise the heuristic's (asked once per configuration).
xrt_status_t Engine::PrepareGemmAlgorithms() {
  if (plan_.gemms.empty()) return nullptr;
  cublasStatus_t st = lt_handle_ != nullptr ? CUBLAS_STATUS_SUCCESS : lt_->cublasLtCreate(&lt_handle_);
  if (st != CUBLAS_STATUS_SUCCESS) {
    return Make(XRT_STATUS_INTERNAL, "cuda: cublasLtCreate failed: " + LtStatus(lt_, st));
  }
  lt_version_ = static_cast<int>(lt_->cublasLtGetVersion());
  std::vector<int64_t> max_values;
  for (const auto& d : plan_.dims) max_values.push_back(d.max);
  gemm_notes_.resize(plan_.gemms.size());
  gemm_config_.resize(plan_.gemms.size());
  gemm_key_.resize(plan_.gemms.size());
  for (size_t i = 0; i < plan_.gemms.size(); ++i) {
    std::unique_ptr<GemmState> g;
    if (xrt_status_t s = PrepareGemm(static_cast<int>(i), max_values, &g, &gemm_notes_[i])) return s;
    gemm_config_[i] = ToHex(&g->algo, sizeof g->algo);
  }
  return nullptr;
}

void Engine::JoinHelperThread() {
  if (helper_.valid()) helper_.wait();
}

// The helper thread of a plan on stand-ins: waits for cuBLASLt (the plugin's background dlopen and the warm-up
// thread's handle), prepares every GEMM and captures the cuBLASLt graph on its own stream. Touches only what the
// runs on the stand-ins' graph never read (cuBLASLt state, upgraded_); SwitchGraphs hands the graph over under mu_.
void Engine::UpgradeGemms(std::future<cublasLtHandle_t> warm) {
  std::string error = "not loaded";
  const CublasLtApi* lt = options_.load_cublaslt(&error);
  if (lt != nullptr) {
    static std::once_flag registered;
    std::call_once(registered, [] { std::atexit(JoinHelpersAtExit); });
  }
  cublasLtHandle_t handle = warm.valid() ? warm.get() : nullptr;
  const ContextScope scope(drv_, context_);  // after the waits: until here nothing touches the driver
  xrt_status_t s = nullptr;
  if (scope.result() != CUDA_SUCCESS) {
    s = Make(XRT_STATUS_INTERNAL, "cuda: cuCtxPushCurrent failed on the GEMMs' helper thread");
  } else if (lt == nullptr) {
    s = Make(XRT_STATUS_UNAVAILABLE, "cuda: cuBLASLt is unavailable: " + error);
  }
  if (s == nullptr) {
    lt_ = lt;
    lt_handle_ = handle;
    handle = nullptr;
    s = PrepareGemmAlgorithms();
    if (s == nullptr) s = Cu(drv_->cuStreamCreate(&helper_stream_, CU_STREAM_NON_BLOCKING), "cuStreamCreate");
    if (s == nullptr) s = PrepareBinding({}, &upgraded_, false);
    if (s == nullptr) s = Capture(&upgraded_, helper_stream_);
    if (s != nullptr) ReleaseBinding(&upgraded_);
  }
  if (handle != nullptr && lt != nullptr) lt->cublasLtDestroy(handle);
  {
    std::lock_guard<std::mutex> lock(describe_mu_);
    switch_ready_ms_ = MsSince(init_start_);
    gemms_path_ = s == nullptr ? "cuBLASLt, after the first runs on Triton stand-ins while it loaded"
                               : std::string("Triton stand-ins for good: ") + xrt_status_message(s);
    gemms_prepared_ = s == nullptr;  // the GEMM vectors are complete: describe may read them from here on
    BuildDescribe();
  }
  xrt_status_free(s);
  helper_done_.store(true, std::memory_order_release);
}

// Called with mu_ held, at every run: once the helper has finished, its graph (if it made one) replaces the
// stand-ins' graph. A graph still executing is freed by CUDA when it completes (cuGraphExecDestroy).
void Engine::SwitchGraphs() {
  if (!helper_.valid() || !helper_done_.load(std::memory_order_acquire)) return;
  helper_.get();
  if (upgraded_.exec == nullptr) return;  // cuBLASLt unavailable: the stand-ins stay
  for (Binding& b : graphs_) {
    if (!b.stand_ins) continue;
    ReleaseBinding(&b);
    b.exec = upgraded_.exec;
    b.gemms = std::move(upgraded_.gemms);
    b.stand_ins = false;
    upgraded_.exec = nullptr;
    upgraded_.gemms.clear();
    break;
  }
}

void Engine::WaitAndSwitch() {
  if (helper_.valid()) helper_.wait();
  SwitchGraphs();
}

void Engine::WaitForGemms() {
  std::lock_guard<std::mutex> lock(mu_);
  const ContextScope scope(drv_, context_);  // the switch frees the stand-ins' graph
  WaitAndSwitch();
}

xrt_status_t Engine::LoadModules(const EngineArtifacts& a) {
  const auto* bytes = static_cast<const uint8_t*>(a.kernels);
  for (size_t i = 0; i < plan_.kernels.size(); ++i) {
    const KernelSpec& k = plan_.kernels[i];
    const std::string what = "kernel " + std::to_string(i) + " (" + k.entry + ")";
    std::string key;
    for (const std::string& c : {arch_ + "a", arch_}) {
      if (k.images.count(c)) {
        key = c;
        break;
      }
    }
    if (key.empty() && k.images.count("ptx")) key = "ptx";
    if (key.empty()) {
      std::string have;
      for (const auto& [arch, range] : k.images) have += (have.empty() ? "" : ", ") + arch;
      return Make(XRT_STATUS_UNAVAILABLE, "cuda: " + what + " has images for " + have + " but this GPU is " + arch_ +
                                              " and there is no PTX; rebuild with xrtc --target cuda --arch " +
                                              arch_ + (arch_ == "sm_90" ? "a" : ""));
    }
    const auto [offset, size] = k.images.at(key);
    CUmodule module = nullptr;
    CUresult r = CUDA_SUCCESS;
    const auto loaded = loaded_images_.find({offset, size});
    if (loaded != loaded_images_.end()) {
      module = loaded->second;  // identical images are stored once (PLAN.md): one module, several entries
    } else if (key == "ptx") {
      std::string ptx(reinterpret_cast<const char*>(bytes + offset), size);  // NUL-terminated copy
      if (ptx.find('\0') != std::string::npos) ptx.resize(ptx.find('\0'));
      r = drv_->cuModuleLoadData(&module, ptx.c_str());
    } else {
      std::string why;
      if (!ElfInBounds(bytes + offset, size, &why)) {
        return Make(XRT_STATUS_DATA_CORRUPT, "cuda: " + what + ": the " + key + " image is malformed: " + why);
      }
      std::vector<uint64_t> image((size + 7) / 8);  // an 8-byte aligned copy of exactly the image's bytes
      std::memcpy(image.data(), bytes + offset, size);
      r = drv_->cuModuleLoadData(&module, image.data());
    }
    if (r != CUDA_SUCCESS) {
      const std::string hint = key == "ptx" ? " (the PTX may need a newer driver than this one)" : "";
      return Make(XRT_STATUS_UNAVAILABLE, "cuda: " + what + ": loading its " + key + " image on " + arch_ +
                                              " failed: " + DriverErrorText(*drv_, r) + hint);
    }
    if (loaded == loaded_images_.end()) {
      modules_.push_back(module);
      loaded_images_[{offset, size}] = module;
    }
    // programmatic dependent launch where the image waits for the previous grid itself (and the driver has the call)
    pdl_.push_back(options_.pdl && drv_->cuLaunchKernelEx != nullptr &&
                   std::find(k.pdl_archs.begin(), k.pdl_archs.end(), key) != k.pdl_archs.end());
    CUfunction fn = nullptr;
    if (xrt_status_t s = Cu(drv_->cuModuleGetFunction(&fn, module, k.entry.c_str()),
                            what + ": finding entry " + k.entry + " in its image")) {
      return s;
    }
    if (k.shared_mem > 48 * 1024) {
      if (xrt_status_t s = Cu(drv_->cuFuncSetAttribute(fn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                                       k.shared_mem),
                              what + ": opting in to " + std::to_string(k.shared_mem) + " bytes of shared memory")) {
        return s;
      }
    }
    // The plan's parameter list against the kernel's own (Triton appends scratch pointers: a list that forgot them
    // would make the kernel read garbage pointers).
    if (drv_->cuFuncGetParamInfo != nullptr) {
      size_t count = 0;
      for (; count <= k.params.size(); ++count) {
        size_t poff = 0, psize = 0;
        if (drv_->cuFuncGetParamInfo(fn, count, &poff, &psize) != CUDA_SUCCESS) break;
        if (count < k.params.size() && psize != k.params[count].Size()) {
          return Make(XRT_STATUS_DATA_CORRUPT, "cuda: " + what + ": parameter " + std::to_string(count) + " is " +
                                                   std::to_string(psize) + " bytes in the kernel but the plan passes " +
                                                   std::to_string(k.params[count].Size()));
        }
      }
      if (count != k.params.size()) {
        return Make(XRT_STATUS_DATA_CORRUPT, "cuda: " + what + ": the kernel takes " +
                                                 (count > k.params.size() ? "more than " : "") +
                                                 std::to_string(count) + " parameters, the plan lists " +
                                                 std::to_string(k.params.size()) +
                                                 " (a Triton version mismatch? plan says " + plan_.triton_version +
                                                 ")");
      }
    }
    functions_.push_back(fn);
    image_kind_.push_back(key);
  }
  return nullptr;
}

xrt_status_t Engine::PrepareGemm(int index, const std::vector<int64_t>& values, std::unique_ptr<GemmState>* out,
                                 std::string* note) {
  const GemmSpec& g = plan_.gemms[index];
  const std::string what = "gemm " + std::to_string(index);
  int64_t m = 0;
  if (!Eval(g.m, values, &m)) return Make(XRT_STATUS_DATA_CORRUPT, "cuda: " + what + ": m does not evaluate");
  auto st = std::make_unique<GemmState>();
  st->lt = lt_;
  const auto check = [&](cublasStatus_t s, const char* call) -> xrt_status_t {
    if (s == CUBLAS_STATUS_SUCCESS) return nullptr;
    return Make(XRT_STATUS_INTERNAL, "cuda: " + what + ": " + call + " failed: " + LtStatus(lt_, s));
  };
  const bool tf32 = g.compute == "32F_FAST_TF32";
  const bool h16 = g.compute == "16F";
  const cublasComputeType_t compute = h16 ? CUBLAS_COMPUTE_16F : tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32
                                                                      : CUBLAS_COMPUTE_32F;
  const cudaDataType_t scale = h16 ? CUDA_R_16F : CUDA_R_32F;
  if (h16) {
    const uint16_t one = FloatToHalf(g.alpha);
    std::memcpy(st->alpha, &one, 2);
  } else {
    std::memcpy(st->alpha, &g.alpha, 4);
  }
  if (xrt_status_t s = check(lt_->cublasLtMatmulDescCreate(&st->desc, compute, scale), "cublasLtMatmulDescCreate")) {
    return s;
  }
  // Row-major c[m,n] = a[m,k] @ b[k,n] is column-major c^T[n,m] = b^T @ a^T: cuBLASLt's A is our b, its B our a.
  const cublasOperation_t op_a = g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_b = g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  lt_->cublasLtMatmulDescSetAttribute(st->desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof op_a);
  lt_->cublasLtMatmulDescSetAttribute(st->desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof op_b);
  const cublasLtEpilogue_t ep = g.epilogue == "bias"        ? CUBLASLT_EPILOGUE_BIAS
                               : g.epilogue == "gelu_bias" ? CUBLASLT_EPILOGUE_GELU_BIAS
                               : g.epilogue == "relu_bias" ? CUBLASLT_EPILOGUE_RELU_BIAS
                               : g.epilogue == "gelu"      ? CUBLASLT_EPILOGUE_GELU
                               : g.epilogue == "relu"      ? CUBLASLT_EPILOGUE_RELU
                                                           : CUBLASLT_EPILOGUE_DEFAULT;
  lt_->cublasLtMatmulDescSetAttribute(st->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &ep, sizeof ep);
  if (g.bias >= 0) {
    const CUdeviceptr bias = TensorPtr(g.bias);
    const void* bias_ptr = reinterpret_cast<const void*>(static_cast<uintptr_t>(bias));
    if (xrt_status_t s = check(lt_->cublasLtMatmulDescSetAttribute(st->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                                   &bias_ptr, sizeof bias_ptr),
                               "setting the bias pointer")) {
      return s;
    }
  }
  const cudaDataType_t type = LtType(g.dtype);
  const uint64_t n = static_cast<uint64_t>(g.n), k = static_cast<uint64_t>(g.k), mm = static_cast<uint64_t>(m);
  if (xrt_status_t s = check(g.trans_b ? lt_->cublasLtMatrixLayoutCreate(&st->la, type, k, n, k)
                                       : lt_->cublasLtMatrixLayoutCreate(&st->la, type, n, k, n),
                             "cublasLtMatrixLayoutCreate(A)")) {
    return s;
  }
  if (xrt_status_t s = check(g.trans_a ? lt_->cublasLtMatrixLayoutCreate(&st->lb, type, mm, k, mm)
                                       : lt_->cublasLtMatrixLayoutCreate(&st->lb, type, k, mm, k),
                             "cublasLtMatrixLayoutCreate(B)")) {
    return s;
  }
  if (xrt_status_t s = check(lt_->cublasLtMatrixLayoutCreate(&st->lc, type, n, mm, n), "cublasLtMatrixLayoutCreate(C)")) {
    return s;
  }

  const size_t workspace = options_.workspace_bytes;
  bool have_algo = false, stored = false;
  std::string why_not;
  if (g.algo_config.size() == sizeof(cublasLtMatmulAlgo_t)) {
    std::memcpy(&st->algo, g.algo_config.data(), sizeof st->algo);
    cublasLtMatmulHeuristicResult_t result{};
    const cublasStatus_t s =
        lt_->cublasLtMatmulAlgoCheck(lt_handle_, st->desc, st->la, st->lb, st->lc, st->lc, &st->algo, &result);
    if (s == CUBLAS_STATUS_SUCCESS && result.workspaceSize <= workspace) {
      have_algo = stored = true;
      *note = "stored " + g.algo_source + " algorithm accepted by cublasLtMatmulAlgoCheck";
    } else {
      why_not = s != CUBLAS_STATUS_SUCCESS ? LtStatus(lt_, s)
                                           : "needs " + std::to_string(result.workspaceSize) + " bytes of workspace";
    }
  }
  // Identical GEMMs (every layer of an encoder) get the same answer: ask cuBLASLt once per configuration.
  const std::string key = std::to_string(m) + "," + std::to_string(n) + "," + std::to_string(k) + "," +
                          std::to_string(g.trans_a) + std::to_string(g.trans_b) + "," +
                          std::to_string(static_cast<int>(g.dtype)) + "," + g.compute + "," + g.epilogue;
  const auto cached = heuristic_cache_.find(key);
  const auto fallback_note = [&](const std::string& how) {
    return g.algo_config.empty() ? how
                                 : "stored " + g.algo_source + " algorithm refused (" + why_not + "); fell back to " + how;
  };
  if (!have_algo && cached != heuristic_cache_.end()) {
    st->algo = cached->second;
    have_algo = true;
    *note = fallback_note(heuristic_note_[key]);
  }
  if (!have_algo) {
    cublasLtMatmulPreference_t pref = nullptr;
    if (xrt_status_t s = check(lt_->cublasLtMatmulPreferenceCreate(&pref), "cublasLtMatmulPreferenceCreate")) return s;
    lt_->cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace,
                                              sizeof workspace);
    const int wanted = std::max(1, std::min(options_.tune_gemms, 64));
    std::vector<cublasLtMatmulHeuristicResult_t> results(static_cast<size_t>(wanted));
    int found = 0;
    const cublasStatus_t s = lt_->cublasLtMatmulAlgoGetHeuristic(lt_handle_, st->desc, st->la, st->lb, st->lc, st->lc,
                                                                 pref, wanted, results.data(), &found);
    lt_->cublasLtMatmulPreferenceDestroy(pref);
    if (s != CUBLAS_STATUS_SUCCESS || found < 1) {
      return Make(XRT_STATUS_UNAVAILABLE, "cuda: " + what + " (m=" + std::to_string(m) + ", n=" + std::to_string(n) +
                                              ", k=" + std::to_string(k) + "): cuBLASLt has no algorithm for it (" +
                                              LtStatus(lt_, s) + ")");
    }
    st->algo = results[0].algo;
    heuristic_cache_[key] = st->algo;
    heuristic_note_[key] = "cuBLASLt heuristic (first candidate)";
    *note = fallback_note(heuristic_note_[key]);
    if (wanted > 1) {  // the tuner (TuneInGraph) times them in the captured graph
      auto& list = candidates_[key];
      for (int i = 0; i < std::min(found, wanted); ++i) {
        if (results[static_cast<size_t>(i)].workspaceSize <= workspace) list.push_back(results[static_cast<size_t>(i)].algo);
      }
      AddSplitKCandidates(*st, k, workspace, &list);
      if (list.size() < 2) candidates_.erase(key);
    }
  }
  // the tuner leaves GEMMs with an accepted stored algorithm alone
  if (static_cast<size_t>(index) < gemm_key_.size()) gemm_key_[static_cast<size_t>(index)] = stored ? "" : key;
  *out = std::move(st);
  return nullptr;
}

// Split-K variants of the heuristic's first candidates, for the tuner. At small M (batch 1: M = 128 rows) a GEMM
// fills only a few dozen of the 132 SMs and each CTA walks the whole K; splitting K over 2-8 CTAs trades a reduction
// for parallelism. The heuristic rarely proposes it with a bias/GELU epilogue, so the tuner tries it and keeps it only
// when the whole graph replays faster. Each variant must pass cublasLtMatmulAlgoCheck and fit the workspace.
void Engine::AddSplitKCandidates(const GemmState& st, int64_t k, size_t workspace,
                                 std::vector<cublasLtMatmulAlgo_t>* list) {
  if (lt_->cublasLtMatmulAlgoConfigGetAttribute == nullptr || lt_->cublasLtMatmulAlgoConfigSetAttribute == nullptr) {
    return;
  }
  const size_t bases = std::min<size_t>(list->size(), 4);
  for (size_t i = 0; i < bases; ++i) {
    uint32_t splits = 1;
    size_t written = 0;
    if (lt_->cublasLtMatmulAlgoConfigGetAttribute(&(*list)[i], CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &splits, sizeof splits,
                                                   &written) != CUBLAS_STATUS_SUCCESS ||
        splits > 1) {
      continue;  // already split (or not configurable): the heuristic chose it as it is
    }
    for (uint32_t split : {2u, 3u, 4u, 6u, 8u}) {
      if (k / split < 128) break;
      for (uint32_t scheme : {static_cast<uint32_t>(CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE),
                              static_cast<uint32_t>(CUBLASLT_REDUCTION_SCHEME_INPLACE)}) {
        cublasLtMatmulAlgo_t algo = (*list)[i];
        if (lt_->cublasLtMatmulAlgoConfigSetAttribute(&algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &split, sizeof split) !=
                CUBLAS_STATUS_SUCCESS ||
            lt_->cublasLtMatmulAlgoConfigSetAttribute(&algo, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &scheme,
                                                      sizeof scheme) != CUBLAS_STATUS_SUCCESS) {
          continue;
        }
        cublasLtMatmulHeuristicResult_t result{};
        if (lt_->cublasLtMatmulAlgoCheck(lt_handle_, st.desc, st.la, st.lb, st.lc, st.lc, &algo, &result) ==
                CUBLAS_STATUS_SUCCESS &&
            result.workspaceSize <= workspace) {
          list->push_back(algo);
          break;  // one reduction scheme per split count is enough
        }
      }
    }
  }
}

xrt_status_t Engine::PrepareBinding(const std::vector<int64_t>& values, Binding* b, bool capture) {
  b->values = values;
  for (size_t i = 0; i < plan_.gemms.size() && !cublas_plan_; ++i) {  // cublas GEMMs keep no per-binding state
    std::unique_ptr<GemmState> g;
    std::string note;
    if (xrt_status_t s = PrepareGemm(static_cast<int>(i), values, &g, &note)) return s;
    b->gemms.push_back(std::move(g));
  }
  if (!capture) return nullptr;
  return Capture(b, stream_);
}

xrt_status_t Engine::Capture(Binding* b, CUstream stream) {
  if (b->exec) drv_->cuGraphExecDestroy(b->exec), b->exec = nullptr;
  if (xrt_status_t s = Cu(drv_->cuStreamBeginCapture(stream, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL),
                          "cuStreamBeginCapture")) {
    return s;
  }
  xrt_status_t enqueued = Enqueue(*b, nullptr, stream);
  CUgraph graph = nullptr;
  const CUresult ended = drv_->cuStreamEndCapture(stream, &graph);
  if (enqueued != nullptr) {
    if (graph) drv_->cuGraphDestroy(graph);
    return enqueued;
  }
  if (xrt_status_t s = Cu(ended, "capturing the CUDA graph (cuStreamEndCapture)")) return s;
  const CUresult inst = drv_->cuGraphInstantiate(&b->exec, graph, 0);
  drv_->cuGraphDestroy(graph);
  return Cu(inst, "cuGraphInstantiate");
}

// 3 warm-up replays, then n replays each between its own pair of events, plus one pair around all n: the times of
// single replays (`each`) and the mean back to back. Every event call is checked: a failed one must not read as
// 0 ms (the tuner would pick it).
xrt_status_t Engine::ReplayTimes(const Binding& b, int n, std::vector<double>* each, double* back_to_back_ms) {
  std::vector<CUevent> ev(2 * static_cast<size_t>(n) + 2, nullptr);
  xrt_status_t status = nullptr;
  for (auto& e : ev) {
    if (!status) status = Cu(drv_->cuEventCreate(&e, CU_EVENT_DEFAULT), "cuEventCreate");
  }
  for (int w = 0; !status && w < 3; ++w) status = Cu(drv_->cuGraphLaunch(b.exec, stream_), "cuGraphLaunch (warm-up)");
  if (!status) status = Cu(drv_->cuEventRecord(ev[2 * n], stream_), "cuEventRecord");
  for (int i = 0; !status && i < n; ++i) {
    status = Cu(drv_->cuEventRecord(ev[2 * i], stream_), "cuEventRecord");
    if (!status) status = Cu(drv_->cuGraphLaunch(b.exec, stream_), "cuGraphLaunch (timed)");
    if (!status) status = Cu(drv_->cuEventRecord(ev[2 * i + 1], stream_), "cuEventRecord");
  }
  if (!status) status = Cu(drv_->cuEventRecord(ev[2 * n + 1], stream_), "cuEventRecord");
  if (!status) status = Cu(drv_->cuStreamSynchronize(stream_), "timed graph replays");
  each->clear();
  for (int i = 0; !status && i < n; ++i) {
    float ms = 0;
    status = Cu(drv_->cuEventElapsedTime(&ms, ev[2 * i], ev[2 * i + 1]), "cuEventElapsedTime");
    each->push_back(ms);
  }
  float all = 0;
  if (!status) status = Cu(drv_->cuEventElapsedTime(&all, ev[2 * n], ev[2 * n + 1]), "cuEventElapsedTime");
  for (auto& e : ev) {
    if (e) drv_->cuEventDestroy(e);
  }
  if (!status) *back_to_back_ms = n ? all / n : 0;
  return status;
}

// Coordinate descent over GEMM configurations, in plan order: for each configuration with several heuristic
// candidates, every GEMM of that configuration takes candidate i, the graph is re-captured and its replay timed
// (median of 15); the fastest stays (ties keep the earlier candidate), then the next configuration. Timing the whole
// graph, not the GEMM alone, is the point: alone, with its weights hot in L2, a GEMM ranks candidates differently
// than inside the model, where its weights come from HBM and split-K reductions add launches.
xrt_status_t Engine::TuneInGraph(Binding* b) {
  constexpr int kReplays = 15;
  std::vector<double> times;
  double back_to_back = 0;
  if (xrt_status_t s = ReplayTimes(*b, kReplays, &times, &back_to_back)) return s;
  double current = Median(times);
  std::vector<std::string> order;
  for (const std::string& key : gemm_key_) {
    if (candidates_.count(key) && candidates_[key].size() > 1 &&
        std::find(order.begin(), order.end(), key) == order.end()) {
      order.push_back(key);
    }
  }
  for (const std::string& key : order) {
    const std::vector<cublasLtMatmulAlgo_t>& cands = candidates_[key];
    const auto use = [&](size_t c) {
      for (size_t g = 0; g < gemm_key_.size(); ++g) {
        if (gemm_key_[g] == key) b->gemms[g]->algo = cands[c];
      }
    };
    // Candidate c in every GEMM of the configuration, the graph re-captured and its replay timed (median); false
    // where it cannot be captured or replayed (it loses; the engine stays usable).
    const auto timed = [&](size_t c, double* ms) {
      use(c);
      xrt_status_t s = Capture(b, stream_);
      if (!s) s = ReplayTimes(*b, kReplays, &times, &back_to_back);
      if (s) return xrt_status_free(s), false;
      *ms = Median(times);
      return true;
    };
    const double first = current;
    size_t best = 0;
    for (size_t c = 1; c < cands.size(); ++c) {
      if (double ms = 0; timed(c, &ms) && ms < current) current = ms, best = c;
    }
    // The search's minimum is biased low (the fastest of many noisy medians): a candidate that beat the heuristic's
    // first is kept only if it still wins when the two are timed again, alternately (A B A B A B, median of each).
    double first_ms = first, best_ms = current;
    if (best != 0) {
      std::vector<double> heuristic, chosen;
      for (int round = 0; round < 3 && best != 0; ++round) {
        for (const size_t c : {size_t{0}, best}) {
          double ms = 0;
          if (!timed(c, &ms)) {  // cannot be re-run: the heuristic's first stays
            best = 0;
            break;
          }
          (c == 0 ? heuristic : chosen).push_back(ms);
        }
      }
      if (best != 0) {
        first_ms = Median(heuristic), best_ms = Median(chosen);
        if (best_ms >= first_ms) best = 0;
      }
      if (best == 0) best_ms = first_ms;
      current = best_ms;
    }
    use(best);
    heuristic_cache_[key] = cands[best];
    uint32_t splits = 1;
    size_t written = 0;
    if (lt_->cublasLtMatmulAlgoConfigGetAttribute != nullptr) {
      lt_->cublasLtMatmulAlgoConfigGetAttribute(&cands[best], CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &splits, sizeof splits,
                                                &written);
    }
    tuning_[key] = {cands.size(), best, first_ms, best_ms, splits > 1 ? splits : 1};
    char text[240];
    std::snprintf(text, sizeof text,
                  "tuned in the CUDA graph: candidate %zu of %zu%s, graph replay %.4f ms (first candidate: %.4f ms)",
                  best + 1, cands.size(), splits > 1 ? (" (split-K " + std::to_string(splits) + ")").c_str() : "",
                  best_ms, first_ms);
    heuristic_note_[key] = text;
    for (size_t g = 0; g < gemm_key_.size(); ++g) {
      if (gemm_key_[g] == key) gemm_notes_[g] = text;
    }
  }
  return Capture(b, stream_);
}

xrt_status_t Engine::LaunchKernel(int index, const int64_t grid[3], const std::vector<int64_t>& values,
                                  CUstream stream, const std::string& what) {
  const KernelSpec& k = plan_.kernels[index];
  std::vector<uint64_t> storage(k.params.size(), 0);
  std::vector<void*> args(k.params.size());
  for (size_t p = 0; p < k.params.size(); ++p) {
    const ParamSpec& ps = k.params[p];
    void* slot = &storage[p];
    switch (ps.kind) {
      case ParamSpec::kTensor: storage[p] = TensorPtr(ps.tensor); break;
      case ParamSpec::kScratch: storage[p] = 0; break;
      case ParamSpec::kDim: {
        int64_t v = 0;
        Eval(ps.dim, values, &v);  // in int32 range: CheckBinding
        const int32_t v32 = static_cast<int32_t>(v);
        std::memcpy(slot, &v32, 4);
        break;
      }
      case ParamSpec::kScalar:
        if (ps.scalar_dtype == XRT_DTYPE_FLOAT32) {
          const float f = static_cast<float>(ps.scalar_value);
          std::memcpy(slot, &f, 4);
        } else if (ps.scalar_dtype == XRT_DTYPE_FLOAT64) {
          std::memcpy(slot, &ps.scalar_value, 8);
        } else if (ps.scalar_dtype == XRT_DTYPE_INT32) {
          const int32_t i = static_cast<int32_t>(ps.scalar_int);
          std::memcpy(slot, &i, 4);
        } else {
          std::memcpy(slot, &ps.scalar_int, 8);
        }
        break;
    }
    args[p] = slot;
  }
  CUresult r = CUDA_SUCCESS;
  if (pdl_[index]) {
    // The kernel starts with griddepcontrol.wait: its launch may overlap the previous kernel's tail.
    CUlaunchAttribute attr{};
    attr.id = CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
    attr.value.programmaticStreamSerializationAllowed = 1;
    CUlaunchConfig config{};
    config.gridDimX = static_cast<unsigned>(grid[0]);
    config.gridDimY = static_cast<unsigned>(grid[1]);
    config.gridDimZ = static_cast<unsigned>(grid[2]);
    config.blockDimX = static_cast<unsigned>(k.num_warps * 32);
    config.blockDimY = config.blockDimZ = 1;
    config.sharedMemBytes = static_cast<unsigned>(k.shared_mem);
    config.hStream = stream;
    config.attrs = &attr;
    config.numAttrs = 1;
    r = drv_->cuLaunchKernelEx(&config, functions_[index], args.empty() ? nullptr : args.data(), nullptr);
  } else {
    r = drv_->cuLaunchKernel(functions_[index], static_cast<unsigned>(grid[0]), static_cast<unsigned>(grid[1]),
                             static_cast<unsigned>(grid[2]), static_cast<unsigned>(k.num_warps * 32), 1, 1,
                             static_cast<unsigned>(k.shared_mem), stream, args.empty() ? nullptr : args.data(),
                             nullptr);
  }
  return Cu(r, what + " (kernel " + k.entry + ")");
}

xrt_status_t Engine::Enqueue(const Binding& b, std::vector<std::pair<CUevent, CUevent>>* events, CUstream stream) {
  const CUdeviceptr workspace = base_ + workspace_off_;
  for (size_t li = 0; li < plan_.launches.size(); ++li) {
    const LaunchSpec& l = plan_.launches[li];
    if (events) drv_->cuEventRecord((*events)[li].first, stream);
    if (l.is_kernel) {
      int64_t grid[3] = {1, 1, 1};
      for (int d = 0; d < 3; ++d) Eval(l.grid[d], b.values, &grid[d]);  // in range: CheckBinding
      if (xrt_status_t s = LaunchKernel(l.index, grid, b.values, stream, "launch " + std::to_string(li))) return s;
    } else if (b.stand_ins) {  // the GEMM's Triton twin (static: its grid is plain numbers, checked by the parser)
      const GemmSpec& g = plan_.gemms[l.index];
      if (xrt_status_t s = LaunchKernel(g.stand_in, g.stand_in_grid, b.values, stream,
                                        "launch " + std::to_string(li) + " (gemm " + std::to_string(l.index) +
                                            "'s stand-in)")) {
        return s;
      }
    } else if (cublas_plan_) {
      if (xrt_status_t s = CublasGemm(plan_.gemms[l.index], b.values, stream,
                                      "launch " + std::to_string(li) + " (gemm " + std::to_string(l.index) + ")")) {
        return s;
      }
    } else {
      const GemmSpec& g = plan_.gemms[l.index];
      const GemmState& st = *b.gemms[l.index];
      const auto ptr = [&](int id) { return reinterpret_cast<void*>(static_cast<uintptr_t>(TensorPtr(id))); };
      void* c = ptr(g.c);
      const cublasStatus_t s = lt_->cublasLtMatmul(
          lt_handle_, st.desc, st.alpha, ptr(g.b), st.la, ptr(g.a), st.lb, st.beta, c, st.lc, c, st.lc, &st.algo,
          reinterpret_cast<void*>(static_cast<uintptr_t>(workspace)), options_.workspace_bytes, stream);
      if (s != CUBLAS_STATUS_SUCCESS) {
        return Make(XRT_STATUS_INTERNAL, "cuda: launch " + std::to_string(li) + " (gemm " + std::to_string(l.index) +
                                             "): cublasLtMatmul failed: " + LtStatus(lt_, s));
      }
    }
    if (events) drv_->cuEventRecord((*events)[li].second, stream);
  }
  return nullptr;
}

void Engine::WriteReport(const std::string& line) {
  last_report_ = line;
  if (options_.report_path.empty()) {
    std::fprintf(stderr, "%s\n", line.c_str());
    return;
  }
  std::ofstream out(options_.report_path, std::ios::app);
  out << line << "\n";
}

xrt_status_t Engine::Profile(Binding* b, std::string* report_text) {
  std::vector<std::pair<CUevent, CUevent>> events(plan_.launches.size(), {nullptr, nullptr});
  xrt_status_t status = nullptr;
  for (auto& [start, end] : events) {
    if (!status) status = Cu(drv_->cuEventCreate(&start, CU_EVENT_DEFAULT), "cuEventCreate");
    if (!status) status = Cu(drv_->cuEventCreate(&end, CU_EVENT_DEFAULT), "cuEventCreate");
  }
  // One untimed pass first: cuBLASLt and the driver load kernels lazily on first use, which would land in the
  // first launch's time.
  if (!status) status = Enqueue(*b, nullptr, stream_);
  if (!status) status = Enqueue(*b, &events, stream_);
  if (!status) status = Cu(drv_->cuStreamSynchronize(stream_), "running the plan (profiling)");
  nlohmann::json launches = nlohmann::json::array();
  std::map<std::string, double> groups;
  double total = 0;
  for (size_t i = 0; !status && i < events.size(); ++i) {
    float ms = 0;
    drv_->cuEventElapsedTime(&ms, events[i].first, events[i].second);
    const LaunchSpec& l = plan_.launches[i];
    const std::string group = l.is_kernel ? plan_.kernels[l.index].group : "gemm_" + plan_.gemms[l.index].epilogue;
    const auto& nodes = l.is_kernel ? plan_.kernels[l.index].onnx_nodes : plan_.gemms[l.index].onnx_nodes;
    launches.push_back({{"launch", i},
                        {"kind", l.is_kernel ? "kernel" : "gemm"},
                        {"name", l.is_kernel ? plan_.kernels[l.index].entry : "gemm " + std::to_string(l.index)},
                        {"group", group},
                        {"onnx_nodes", nodes},
                        {"ms", ms}});
    groups[group] += ms;
    total += ms;
  }
  for (auto& [start, end] : events) {
    if (start) drv_->cuEventDestroy(start);
    if (end) drv_->cuEventDestroy(end);
  }
  if (status) return status;
  nlohmann::json report = {{"event", "profile"}, {"dims", DimsKey(plan_, b->values)}, {"total_ms", total},
                           {"groups", groups}, {"launches", launches}};
  *report_text = report.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return nullptr;
}

xrt_status_t Engine::ProfileRecords(std::string* out_json) {
  std::lock_guard<std::mutex> lock(mu_);
  const nlohmann::json report = nlohmann::json::parse(last_report_, nullptr, /*allow_exceptions=*/false);
  if (!options_.profile || !report.is_object() || report.value("event", "") != "profile") {
    return Make(XRT_STATUS_FAILED_PRECONDITION, options_.profile ? "cuda: no profiled run yet"
                                                                 : "cuda: the variant was loaded without profiling");
  }
  nlohmann::json records = nlohmann::json::array();
  for (const auto& l : report["launches"]) {
    records.push_back({{"name", std::to_string(l.value("launch", 0)) + ": " + l.value("name", "")},
                       {"type", l.value("kind", "") + " " + l.value("group", "")},
                       {"kind", "compute"},
                       {"stream", "cuda stream 0"},
                       {"ms", l.value("ms", 0.0)},
                       {"onnx_nodes", l.value("onnx_nodes", nlohmann::json::array())}});
  }
  for (const char* list : {"copies", "syncs"}) {
    for (const auto& c : report.value(list, nlohmann::json::array())) {
      records.push_back({{"name", c.value("name", "")}, {"type", c.value("type", "")}, {"kind", c.value("kind", "")},
                         {"stream", "cuda stream 0"}, {"ms", c.value("ms", 0.0)},
                         {"onnx_nodes", nlohmann::json::array()}});
    }
  }
  nlohmann::json out = {{"records_format", 1}, {"engine", "cuda"}, {"window", "last_run"}, {"runs", 1},
                        {"records", std::move(records)}};
  *out_json = out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return nullptr;
}

xrt_status_t Engine::TimeReplays(const Binding& b) {
  const int n = options_.replay_timing;
  std::vector<double> times;
  double back_to_back = 0;
  if (xrt_status_t s = ReplayTimes(b, n, &times, &back_to_back)) return s;
  nlohmann::json report = {{"event", "replay"},
                           {"dims", DimsKey(plan_, b.values)},
                           {"n", n},
                           {"median_ms", Median(times)},
                           {"min_ms", times.empty() ? 0 : *std::min_element(times.begin(), times.end())},
                           {"mean_back_to_back_ms", back_to_back},
                           {"launches_per_replay", plan_.launches.size()}};
  WriteReport(report.dump());
  return nullptr;
}

void Engine::ReleaseBinding(Binding* b) {
  if (b->exec) drv_->cuGraphExecDestroy(b->exec);
  b->exec = nullptr;
  b->gemms.clear();
}

namespace {
// Profiling mode: CUDA events around the input upload and the output download of a run, destroyed with it.
struct CopyEvents {
  const DriverApi* drv;
  CUevent e[4] = {nullptr, nullptr, nullptr, nullptr};  // upload start, upload end, download start, download end
  ~CopyEvents() {
    for (CUevent x : e) {
      if (x) drv->cuEventDestroy(x);
    }
  }
  float Ms(int from, int to) const {
    float ms = 0;
    return e[from] && e[to] && drv->cuEventElapsedTime(&ms, e[from], e[to]) == CUDA_SUCCESS ? ms : 0.0f;
  }
};
// A device output's memory: freed by the output's release, in the engine's context (release may run on any thread).
struct DeviceBuffer {
  const DriverApi* drv;
  CUcontext context;
  CUdeviceptr ptr;
};
void ReleaseDeviceBuffer(void* owner) {
  auto* b = static_cast<DeviceBuffer*>(owner);
  {
    const ContextScope scope(b->drv, b->context);  // the releasing thread (often Python's GC) keeps its context
    b->drv->cuMemFree(b->ptr);                     // waits for device work still using it
  }
  delete b;
}
}  // namespace

xrt_status_t Engine::Execute(const xrt_tensor_view_t* inputs, size_t input_count, xrt_backend_output_t* outputs,
                             size_t output_count) {
  xrt_run_options_t run{};
  run.struct_size = sizeof(run);
  return ExecutePlaced(run, inputs, nullptr, input_count, outputs, nullptr, output_count);
}

xrt_status_t Engine::ExecutePlaced(const xrt_run_options_t& run, const xrt_tensor_view_t* inputs,
                                   const xrt_placement_t* input_placements, size_t input_count,
                                   xrt_backend_output_t* outputs, xrt_placement_t* output_placements,
                                   size_t output_count) {
  std::lock_guard<std::mutex> lock(mu_);
  const bool outputs_on_device = run.outputs_on_device != 0 && output_placements != nullptr;
  if (output_count != plan_.outputs.size()) {
    return Make(XRT_STATUS_INVALID_ARGUMENT, "cuda: the plan has " + std::to_string(plan_.outputs.size()) +
                                                 " outputs, execute asked for " + std::to_string(output_count));
  }
  std::vector<int64_t> values;
  const PlanError bound = BindDims(plan_, inputs, input_count, &values);
  if (!bound.ok()) return Make(bound.code, bound.message);
  for (size_t i = 0; i < input_count; ++i) {
    uint64_t want = 0;
    TensorBytes(plan_, plan_.inputs[i], values, &want);
    if (inputs[i].byte_size != want || (want != 0 && inputs[i].data == nullptr)) {
      return Make(XRT_STATUS_INVALID_ARGUMENT, "cuda: input " + std::to_string(i) + " has " +
                                                   std::to_string(inputs[i].byte_size) + " bytes, expected " +
                                                   std::to_string(want));
    }
  }
  const ContextScope scope(drv_, context_);
  if (xrt_status_t s = Cu(scope.result(), "cuCtxPushCurrent")) return s;
  // Device inputs: on this session's device, and memory CUDA knows (a host address here would fault on the GPU).
  bool any_device_input = false;
  for (size_t i = 0; input_placements != nullptr && i < input_count; ++i) {
    const xrt_placement_t& p = input_placements[i];
    if (p.kind == XRT_MEMORY_HOST) continue;
    const std::string what = "cuda: input " + std::to_string(i) + " (" + plan_.tensors[plan_.inputs[i]].name + ")";
    if (p.kind != XRT_MEMORY_CUDA) {
      return Make(XRT_STATUS_INVALID_ARGUMENT, what + ": unknown memory kind " + std::to_string(p.kind));
    }
    if (p.device_id != options_.device_ordinal) {
      return Make(XRT_STATUS_INVALID_ARGUMENT, what + " is on cuda:" + std::to_string(p.device_id) +
                                                   " but this session runs on cuda:" +
                                                   std::to_string(options_.device_ordinal) +
                                                   ": copy it to that device, or load the bundle there");
    }
    any_device_input = true;
    if (inputs[i].byte_size == 0) continue;
    int ordinal = -1;
    const CUresult r = drv_->cuPointerGetAttribute(&ordinal, CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL,
                                                   reinterpret_cast<CUdeviceptr>(inputs[i].data));
    if (r != CUDA_SUCCESS || ordinal != options_.device_ordinal) {
      return Make(XRT_STATUS_INVALID_ARGUMENT,
                  what + " is declared cuda:" + std::to_string(p.device_id) + " memory, but " +
                      (r != CUDA_SUCCESS ? "CUDA does not know its address (" + DriverErrorText(*drv_, r) +
                                               "): pass host memory as XRT_MEMORY_HOST"
                                         : "it was allocated on cuda:" + std::to_string(ordinal)));
    }
    // The whole view inside one allocation: a copy past its end would fault the context for every later run.
    CUdeviceptr start = 0;
    size_t size = 0;
    const auto ptr = reinterpret_cast<CUdeviceptr>(inputs[i].data);
    const CUresult rs = drv_->cuPointerGetAttribute(&start, CU_POINTER_ATTRIBUTE_RANGE_START_ADDR, ptr);
    const CUresult rz = drv_->cuPointerGetAttribute(&size, CU_POINTER_ATTRIBUTE_RANGE_SIZE, ptr);
    if (rs != CUDA_SUCCESS || rz != CUDA_SUCCESS || ptr - start > size || inputs[i].byte_size > size - (ptr - start)) {
      return Make(XRT_STATUS_INVALID_ARGUMENT,
                  what + ": its " + std::to_string(inputs[i].byte_size) + " bytes do not lie inside one device " +
                      "allocation" + (rs == CUDA_SUCCESS && rz == CUDA_SUCCESS
                                          ? " (" + std::to_string(size - (ptr - start)) + " bytes from its address "
                                                                                           "to the allocation's end)"
                                          : ""));
    }
  }
  // Joined to the caller's stream only where it matters: a host-only run that returns complete needs no ordering.
  const CUstream caller = static_cast<CUstream>(run.stream);  // NULL: the legacy default stream
  const bool joined = run.stream != nullptr || any_device_input || outputs_on_device;
  if (joined) {
    for (CUevent* e : {&caller_ready_, &engine_done_}) {
      if (*e == nullptr) {
        if (xrt_status_t s = Cu(drv_->cuEventCreate(e, CU_EVENT_DISABLE_TIMING), "cuEventCreate")) return s;
      }
    }
  }

  SwitchGraphs();  // the GEMMs' helper thread is done: its cuBLASLt graph replaces the stand-ins' from this run on
  Binding* binding = nullptr;
  for (auto& g : graphs_) {
    if (g.values == values) binding = &g;
  }
  if (binding == nullptr) {
    const PlanError checked = CheckBinding(plan_, values);
    if (!checked.ok()) return Make(checked.code, checked.message);
    if (graphs_.size() >= options_.max_graphs && !graphs_.empty()) {
      auto oldest = std::min_element(graphs_.begin(), graphs_.end(),
                                     [](const Binding& x, const Binding& y) { return x.last_use < y.last_use; });
      ReleaseBinding(&*oldest);
      graphs_.erase(oldest);
    }
    Binding fresh;
    if (xrt_status_t s = PrepareBinding(values, &fresh, !options_.profile)) {
      ReleaseBinding(&fresh);
      return s;
    }
    graphs_.push_back(std::move(fresh));
    binding = &graphs_.back();
  }
  binding->last_use = ++use_clock_;
  // Profiling: the input upload and the output download timed with events on the engine's stream, and the run's
  // final synchronisation (a host wait) with the host clock; each is its own entry of the run's report.
  CopyEvents copy_events{drv_};
  uint64_t upload_bytes = 0, download_bytes = 0;
  if (options_.profile) {
    for (CUevent& e : copy_events.e) {
      if (xrt_status_t s = Cu(drv_->cuEventCreate(&e, CU_EVENT_DEFAULT), "cuEventCreate")) return s;
    }
    if (xrt_status_t s = Cu(drv_->cuEventRecord(copy_events.e[0], stream_), "recording the upload's start")) return s;
  }

  if (joined) {
    if (xrt_status_t s = Cu(drv_->cuEventRecord(caller_ready_, caller), "recording an event on the caller's stream")) {
      return s;
    }
    if (xrt_status_t s = Cu(drv_->cuStreamWaitEvent(stream_, caller_ready_, 0), "waiting for the caller's stream")) {
      return s;
    }
  }
  for (size_t i = 0; i < input_count; ++i) {
    if (inputs[i].byte_size == 0) continue;
    const bool on_device = input_placements != nullptr && input_placements[i].kind == XRT_MEMORY_CUDA;
    const CUresult r =
        on_device ? drv_->cuMemcpyDtoDAsync(TensorPtr(plan_.inputs[i]), reinterpret_cast<CUdeviceptr>(inputs[i].data),
                                            inputs[i].byte_size, stream_)
                  : drv_->cuMemcpyHtoDAsync(TensorPtr(plan_.inputs[i]), inputs[i].data, inputs[i].byte_size, stream_);
    if (xrt_status_t s = Cu(r, "copying input " + std::to_string(i) + (on_device ? " on the device" : " to the device"))) {
      return s;
    }
  }
  std::string profile_report;
  if (options_.profile) {
    for (size_t i = 0; i < input_count; ++i) upload_bytes += inputs[i].byte_size;
    if (xrt_status_t s = Cu(drv_->cuEventRecord(copy_events.e[1], stream_), "recording the upload's end")) return s;
    if (xrt_status_t s = Profile(binding, &profile_report)) return s;
    if (xrt_status_t s = Cu(drv_->cuEventRecord(copy_events.e[2], stream_), "recording the download's start")) {
      return s;
    }
  } else {
    if (xrt_status_t s = Cu(drv_->cuGraphLaunch(binding->exec, stream_), "cuGraphLaunch")) return s;
    if (options_.replay_timing > 0) {
      WaitAndSwitch();  // time the graph that later runs replay (cuBLASLt's, not the stand-ins')
      if (xrt_status_t s = TimeReplays(*binding)) return s;
    }
  }

  size_t filled = 0;
  auto fail = [&](xrt_status_t s) {
    drv_->cuStreamSynchronize(stream_);  // no copy may still target a buffer we free
    for (size_t i = 0; i < filled; ++i) {
      if (outputs[i].release) outputs[i].release(outputs[i].owner);
      outputs[i] = xrt_backend_output_t{};
      if (output_placements != nullptr) output_placements[i] = {XRT_MEMORY_HOST, 0};
    }
    return s;
  };
  for (; filled < output_count; ++filled) {
    const int id = plan_.outputs[filled];
    const TensorSpec& t = plan_.tensors[id];
    uint64_t bytes = 0;
    TensorBytes(plan_, id, values, &bytes);
    if (outputs_on_device) {
      // A fresh allocation per output and run: the plan's output buffer is rewritten by the next run.
      CUdeviceptr ptr = 0;
      if (xrt_status_t s = Cu(drv_->cuMemAlloc(&ptr, bytes == 0 ? 1 : bytes),
                              "allocating " + std::to_string(bytes) + " bytes of device memory for output " + t.name)) {
        return fail(s);
      }
      auto* buffer = new (std::nothrow) DeviceBuffer{drv_, context_, ptr};
      if (buffer == nullptr) {
        drv_->cuMemFree(ptr);
        return fail(Make(XRT_STATUS_RESOURCE_EXHAUSTED, "cuda: out of host memory for output " + t.name));
      }
      xrt_backend_output_t& out = outputs[filled];
      out = xrt_backend_output_t{};
      out.dtype = t.dtype;
      out.rank = static_cast<uint32_t>(t.shape.size());
      for (size_t d = 0; d < t.shape.size(); ++d) Eval(t.shape[d], values, &out.shape[d]);
      out.data = reinterpret_cast<void*>(static_cast<uintptr_t>(ptr));
      out.byte_size = bytes;
      out.owner = buffer;
      out.release = ReleaseDeviceBuffer;
      output_placements[filled] = {XRT_MEMORY_CUDA, options_.device_ordinal};
      if (bytes == 0) continue;
      if (xrt_status_t s = Cu(drv_->cuMemcpyDtoDAsync(ptr, TensorPtr(id), bytes, stream_),
                              "copying output " + t.name + " on the device")) {
        ++filled;
        return fail(s);
      }
      continue;
    }
    void* data = std::malloc(bytes == 0 ? 1 : bytes);
    if (data == nullptr) {
      return fail(Make(XRT_STATUS_RESOURCE_EXHAUSTED, "cuda: cannot allocate " + std::to_string(bytes) +
                                                          " bytes for output " + t.name));
    }
    xrt_backend_output_t& out = outputs[filled];
    out = xrt_backend_output_t{};
    out.dtype = t.dtype;
    out.rank = static_cast<uint32_t>(t.shape.size());
    for (size_t d = 0; d < t.shape.size(); ++d) Eval(t.shape[d], values, &out.shape[d]);
    out.data = data;
    out.byte_size = bytes;
    out.owner = data;
    out.release = [](void* p) { std::free(p); };
    if (output_placements != nullptr) output_placements[filled] = {XRT_MEMORY_HOST, 0};
    if (bytes == 0) continue;
    if (xrt_status_t s = Cu(drv_->cuMemcpyDtoHAsync(data, TensorPtr(id), bytes, stream_),
                            "copying output " + t.name + " to the host")) {
      ++filled;
      return fail(s);
    }
  }
  if (options_.profile) {
    for (size_t i = 0; i < output_count; ++i) download_bytes += outputs[i].byte_size;
    if (xrt_status_t s = Cu(drv_->cuEventRecord(copy_events.e[3], stream_), "recording the download's end")) {
      return fail(s);
    }
    const auto sync_start = std::chrono::steady_clock::now();
    if (xrt_status_t s = Cu(drv_->cuStreamSynchronize(stream_), "running the plan (profiling)")) return fail(s);
    const double sync_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - sync_start)
                               .count();
    nlohmann::json report = nlohmann::json::parse(profile_report, nullptr, /*allow_exceptions=*/false);
    const bool on_device = outputs_on_device;
    report["copies"] = {{{"name", "input upload"}, {"type", "memcpy HtoD"}, {"kind", "copy"},
                         {"bytes", upload_bytes}, {"ms", copy_events.Ms(0, 1)}},
                        {{"name", on_device ? "output copy (device)" : "output download"},
                         {"type", on_device ? "memcpy DtoD" : "memcpy DtoH"}, {"kind", "copy"},
                         {"bytes", download_bytes}, {"ms", copy_events.Ms(2, 3)}}};
    report["syncs"] = {{{"name", "stream synchronize (run end)"}, {"type", "cuStreamSynchronize"}, {"kind", "sync"},
                        {"ms", sync_ms}}};
    WriteReport(report.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  }
  if (joined) {
    xrt_status_t s = Cu(drv_->cuEventRecord(engine_done_, stream_), "recording the run's end");
    if (s == nullptr) s = Cu(drv_->cuStreamWaitEvent(caller, engine_done_, 0), "ordering the caller's stream");
    if (s != nullptr) return fail(s);
  }
  // Host outputs, and any run without a stream of the caller's, are complete on return; device outputs on the
  // caller's stream are ready in that stream's order.
  if (outputs_on_device && run.stream != nullptr) return nullptr;
  if (xrt_status_t s = Cu(drv_->cuStreamSynchronize(stream_), "running the plan")) return fail(s);
  return nullptr;
}

Engine::~Engine() {
  if (helper_.valid()) helper_.wait();  // it uses the context, the allocation and cuBLASLt
  {
    std::lock_guard<std::mutex> lock(HelperEnginesMutex());
    auto& engines = HelperEngines();
    engines.erase(std::remove(engines.begin(), engines.end(), this), engines.end());
  }
  const ContextScope scope(drv_, context_);  // no context (init failed early): the push fails, nothing is popped
  if (stream_ != nullptr) drv_->cuStreamSynchronize(stream_);
  if (helper_stream_ != nullptr) drv_->cuStreamSynchronize(helper_stream_);
  ReleaseBinding(&upgraded_);  // a cuBLASLt graph no run switched to
  if (caller_ready_ != nullptr) drv_->cuEventDestroy(caller_ready_);
  if (engine_done_ != nullptr) drv_->cuEventDestroy(engine_done_);
  for (auto& b : graphs_) ReleaseBinding(&b);
  graphs_.clear();
  if (lt_handle_ != nullptr && lt_ != nullptr) lt_->cublasLtDestroy(lt_handle_);
  if (cublas_handle_ != nullptr && cublas_ != nullptr) cublas_->cublasDestroy_v2(cublas_handle_);
  for (CUmodule m : modules_) drv_->cuModuleUnload(m);
  if (base_ != 0) drv_->cuMemFree(base_);
  if (stream_ != nullptr) drv_->cuStreamDestroy(stream_);
  if (helper_stream_ != nullptr) drv_->cuStreamDestroy(helper_stream_);
  if (context_retained_) drv_->cuDevicePrimaryCtxRelease(device_);
}

}  // namespace cuda_backend
}  // namespace xrt
