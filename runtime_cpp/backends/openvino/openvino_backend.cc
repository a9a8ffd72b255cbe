// openvino_backend.cc - the OpenVINO engine plugin (libxrt_backend_openvino.so).
//
// Exports exactly one symbol, xrt_backend_plugin_get (see xrt.h, "Backends"). libxrt dlopens this library only when
// a variant names engine "openvino", so loading it must stay cheap: the ov::Core is created on first use (has_device
// or init), never at load time.
//
// Variant artifacts: "model" = OpenVINO IR XML bytes, "weights" = the IR .bin bytes (optional for weightless IRs).
// Variant options: a JSON object of string properties, allow-listed and bounded (checks.h), handed to compile_model.
// Nothing from the bundle reaches OpenVINO unchecked: the model artifact must be IR XML (checks.h, IsIrXml).
//
// No C++ exception crosses the C boundary: every vtable entry catches everything and returns an xrt_status_t.

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <exception>
#include <memory>
#include <map>
#include <mutex>
#include <new>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <openvino/openvino.hpp>

#include "checks.h"
#include "xrt/xrt.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/mman.h>
#include <unistd.h>
#include <thread>

namespace xrt {
namespace openvino_backend {
namespace {

constexpr char kEngineName[] = "openvino";

// One ov::Core per process, created on first use. It is heap-allocated and never destroyed on purpose: at process
// exit OpenVINO's device plugins and TBB may already be torn down, and a Core destructor running after them crashes.
ov::Core& GetCore() {
  static ov::Core* core = new ov::Core();
  return *core;
}

// xrt device names ("cpu") to OpenVINO device names ("CPU"); empty for devices this backend does not know.
std::string ToOvDevice(const char* device) {
  if (device == nullptr) return "";
  const std::string d(device);
  if (d == "cpu") return "CPU";
  if (d == "gpu") return "GPU";
  if (d == "npu") return "NPU";
  return "";
}

// OpenVINO messages carry a stack of "Exception from src/...:NN:" lines; keep only the lines that say what failed.
std::string CleanOvMessage(const std::string& what) {
  std::istringstream in(what);
  std::string line;
  std::string out;
  while (std::getline(in, line)) {
    while (!line.empty() && (line.back() == ' ' || line.back() == '\r' || line.back() == '\t')) line.pop_back();
    if (line.empty() || line.rfind("Exception from ", 0) == 0) continue;
    if (!out.empty()) out += "; ";
    out += line;
  }
  return out.empty() ? what : out;
}

xrt_status_t MakeStatus(xrt_status_code_t code, const std::string& message) {
  return xrt_status_make(code, message.c_str());
}

ov::element::Type ToOvType(xrt_dtype_t dtype) {
  switch (dtype) {
    case XRT_DTYPE_FLOAT32: return ov::element::f32;
    case XRT_DTYPE_FLOAT16: return ov::element::f16;
    case XRT_DTYPE_BFLOAT16: return ov::element::bf16;
    case XRT_DTYPE_FLOAT64: return ov::element::f64;
    case XRT_DTYPE_INT8: return ov::element::i8;
    case XRT_DTYPE_UINT8: return ov::element::u8;
    case XRT_DTYPE_INT16: return ov::element::i16;
    case XRT_DTYPE_UINT16: return ov::element::u16;
    case XRT_DTYPE_INT32: return ov::element::i32;
    case XRT_DTYPE_UINT32: return ov::element::u32;
    case XRT_DTYPE_INT64: return ov::element::i64;
    case XRT_DTYPE_UINT64: return ov::element::u64;
    case XRT_DTYPE_BOOL: return ov::element::boolean;
    default: return ov::element::dynamic;
  }
}

xrt_dtype_t FromOvType(const ov::element::Type& type) {
  if (type == ov::element::f32) return XRT_DTYPE_FLOAT32;
  if (type == ov::element::f16) return XRT_DTYPE_FLOAT16;
  if (type == ov::element::bf16) return XRT_DTYPE_BFLOAT16;
  if (type == ov::element::f64) return XRT_DTYPE_FLOAT64;
  if (type == ov::element::i8) return XRT_DTYPE_INT8;
  if (type == ov::element::u8) return XRT_DTYPE_UINT8;
  if (type == ov::element::i16) return XRT_DTYPE_INT16;
  if (type == ov::element::u16) return XRT_DTYPE_UINT16;
  if (type == ov::element::i32) return XRT_DTYPE_INT32;
  if (type == ov::element::u32) return XRT_DTYPE_UINT32;
  if (type == ov::element::i64) return XRT_DTYPE_INT64;
  if (type == ov::element::u64) return XRT_DTYPE_UINT64;
  if (type == ov::element::boolean) return XRT_DTYPE_BOOL;
  return XRT_DTYPE_INVALID;
}

// A pooled infer request and the runs it completed (its PERF_COUNT counters are running means over those runs).
struct PooledRequest {
  ov::InferRequest request;
  uint64_t runs = 0;
};

// A compiled variant. Requests are pooled so concurrent execute() calls each get their own ov::InferRequest
// (an InferRequest is not safe for concurrent use) without paying create_infer_request() on every run.
class Handle {
 public:
  Handle(ov::Tensor weights, ov::CompiledModel compiled)
      : weights_(std::move(weights)),
        compiled_(std::move(compiled)),
        input_count_(compiled_.inputs().size()),
        output_count_(compiled_.outputs().size()) {}

  // Profiling (PERF_COUNT was on at compile): each runtime layer's source (IR / ONNX) node names, from the runtime
  // model's "originalLayersNames" (a fused layer names all of them).
  void EnableProfiling() {
    profiling_ = true;
    for (const auto& op : compiled_.get_runtime_model()->get_ordered_ops()) {
      std::vector<std::string> names;
      const auto& info = op->get_rt_info();
      const auto found = info.find("originalLayersNames");
      std::string list = found != info.end() ? found->second.as<std::string>() : op->get_friendly_name();
      std::stringstream stream(list);
      for (std::string name; std::getline(stream, name, ',');) {
        if (!name.empty()) names.push_back(name);
      }
      original_names_[op->get_friendly_name()] = std::move(names);
    }
  }
  bool profiling() const { return profiling_; }

  // Profile records over every completed run since init (xrt.h, "profile records"): per layer, its running mean
  // times the runs of each idle request. Requests running now are left out.
  std::string ProfileJson() {
    nlohmann::json records = nlohmann::json::array();
    std::map<std::string, size_t> index;  // layer name -> record, in order of first appearance
    uint64_t runs = 0;
    std::lock_guard<std::mutex> lock(mu_);
    for (PooledRequest& pooled : idle_) {
      if (pooled.runs == 0) continue;
      runs += pooled.runs;
      for (const ov::ProfilingInfo& layer : pooled.request.get_profiling_info()) {
        if (layer.status == ov::ProfilingInfo::Status::NOT_RUN) continue;
        const double ms = std::chrono::duration<double, std::milli>(layer.real_time).count() *
                          static_cast<double>(pooled.runs);
        auto [it, added] = index.emplace(layer.node_name, records.size());
        if (added) {
          const std::string type = layer.node_type;
          const bool copy = type == "Reorder" || type == "Convert" || type == "Transpose";
          const auto names = original_names_.find(layer.node_name);
          records.push_back({{"name", layer.node_name},
                             {"type", type + " (" + layer.exec_type + ")"},
                             {"kind", copy ? "copy" : (type == "Parameter" || type == "Result") ? "io" : "compute"},
                             {"stream", "openvino stream 0"},
                             {"ms", 0.0},
                             {"onnx_nodes", names != original_names_.end() ? names->second
                                                                           : std::vector<std::string>{}}});
        }
        records[it->second]["ms"] = records[it->second]["ms"].get<double>() + ms;
      }
    }
    nlohmann::json out = {{"records_format", 1}, {"engine", kEngineName}, {"window", "since_init"},
                          {"runs", runs}, {"records", std::move(records)}};
    return out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }

  // What init did, as JSON for the session's describe() ("engine_info"); set once, right after construction.
  void set_info(std::string info) { info_ = std::move(info); }
  const std::string& info() const { return info_; }

  size_t input_count() const { return input_count_; }
  size_t output_count() const { return output_count_; }

  PooledRequest Acquire() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!idle_.empty()) {
        PooledRequest request = std::move(idle_.back());
        idle_.pop_back();
        return request;
      }
    }
    return PooledRequest{compiled_.create_infer_request(), 0};  // Thread-safe on a CompiledModel; outside the lock.
  }

  void Release(PooledRequest request) {
    std::lock_guard<std::mutex> lock(mu_);
    idle_.push_back(std::move(request));
  }

 private:
  std::string info_;
  // Wraps the borrowed weights section; constants of the compiled model may alias it, so it lives as long as the
  // handle (the core guarantees the artifact bytes outlive destroy()).
  ov::Tensor weights_;
  ov::CompiledModel compiled_;
  const size_t input_count_;
  const size_t output_count_;
  std::mutex mu_;
  std::vector<PooledRequest> idle_;
  bool profiling_ = false;
  std::map<std::string, std::vector<std::string>> original_names_;  // runtime layer -> source node names
};

// Returns a request to its pool on scope exit. A request whose infer() threw is dropped, not reused.
class RequestLease {
 public:
  explicit RequestLease(Handle* handle) : handle_(handle), request_(handle->Acquire()) {}
  ~RequestLease() {
    if (!ok_) return;
    try {
      handle_->Release(std::move(request_));
    } catch (...) {  // Losing a pooled request is harmless; a new one is created on demand.
    }
  }
  RequestLease(const RequestLease&) = delete;
  RequestLease& operator=(const RequestLease&) = delete;

  ov::InferRequest& request() { return request_.request; }
  void set_ok() {
    ok_ = true;
    ++request_.runs;
  }

 private:
  Handle* handle_;
  PooledRequest request_;
  bool ok_ = false;
};

void FreeOwner(void* owner) { std::free(owner); }

void ReleaseOutputs(xrt_backend_output_t* outputs, size_t count) {
  for (size_t i = 0; i < count; ++i) {
    if (outputs[i].release != nullptr) outputs[i].release(outputs[i].owner);
    outputs[i] = xrt_backend_output_t{};
  }
}

// ---- vtable entries ----------------------------------------------------------------------------------------------

const char* Version(void* /*self*/) {
  // Static storage inside libopenvino; does not create a Core.
  return ov::get_openvino_version().buildNumber;
}

int HasDevice(void* /*self*/, const char* device) {
  const std::string ov_device = ToOvDevice(device);
  if (ov_device.empty()) return 0;
  try {
    // Listing devices loads every device plugin once; the answer cannot change within a process, so cache it.
    // A throwing initialiser leaves the static uninitialised, and the next call retries.
    static const std::vector<std::string> devices = GetCore().get_available_devices();
    for (const std::string& d : devices) {
      // Multi-instance devices are listed as "GPU.0", "GPU.1".
      if (d == ov_device || d.rfind(ov_device + ".", 0) == 0) return 1;
    }
    return 0;
  } catch (...) {
    return 0;
  }
}

// Keys starting with "xrt." are ours (about the artifacts), never OpenVINO properties: they go to *out_xrt.
// The device's optimisation capabilities ("FP32 BF16 ... "), as xrtc records them next to a precompiled blob.
std::string DeviceCapabilities(const std::string& ov_device) {
  try {
    std::string out;
    for (const auto& c : GetCore().get_property(ov_device, ov::device::capabilities)) out += (out.empty() ? "" : " ") + c;
    return out;
  } catch (...) {
    return "";
  }
}

// A sealed in-memory file holding `size` bytes from `data`, for OpenVINO properties that take a path (WEIGHTS_PATH):
// the engine reads "/proc/self/fd/<fd>", whose bytes are the (verified) bytes given and can no longer change (no
// write, grow or shrink by anyone: SECURITY.md, "the bytes an engine reads are the bytes that were verified").
// Returns the descriptor (the caller closes it) or -1 with *error set.
int SealedMemoryFile(const void* data, size_t size, std::string* error) {
  const int fd = memfd_create("xrt-weights", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) {
    *error = std::string("memfd_create: ") + std::strerror(errno);
    return -1;
  }
  const auto* p = static_cast<const char*>(data);
  for (size_t done = 0; done < size;) {
    const ssize_t n = write(fd, p + done, size - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      *error = std::string("write: ") + std::strerror(errno);
      close(fd);
      return -1;
    }
    done += static_cast<size_t>(n);
  }
  if (fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL) != 0) {
    *error = std::string("sealing: ") + std::strerror(errno);
    close(fd);
    return -1;
  }
  return fd;
}

// Regular files in `dir` (0 when it does not exist yet: OpenVINO creates it).
size_t CountFiles(const std::string& dir) {
  std::error_code ec;
  size_t n = 0;
  for (std::filesystem::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->is_regular_file(ec)) ++n;
  }
  return n;
}

const char* Describe(void* /*self*/, void* handle) {
  return handle ? static_cast<Handle*>(handle)->info().c_str() : "";
}

// The CPUs this process may run on (its affinity mask), which bounds a bundle's thread count.
unsigned UsableCpus() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0) return static_cast<unsigned>(CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

xrt_status_t Init(void* /*self*/, const char* device, const xrt_backend_artifact_t* artifacts, size_t artifact_count,
                  const char* options_json, void** out_handle) {
  try {
    if (out_handle == nullptr || (artifacts == nullptr && artifact_count != 0)) {
      return MakeStatus(XRT_STATUS_INVALID_ARGUMENT, "openvino: init called with NULL arguments");
    }
    *out_handle = nullptr;
    const std::string ov_device = ToOvDevice(device);
    if (ov_device.empty()) {
      return MakeStatus(XRT_STATUS_INVALID_ARGUMENT, std::string("openvino: unknown device '") +
                                                         (device ? device : "(null)") + "' (known: cpu, gpu, npu)");
    }

    const xrt_backend_artifact_t* model = nullptr;
    const xrt_backend_artifact_t* weights = nullptr;
    const xrt_backend_artifact_t* precompiled = nullptr;
    for (size_t i = 0; i < artifact_count; ++i) {
      const char* role = artifacts[i].role ? artifacts[i].role : "";
      if (std::strcmp(role, "model") == 0) model = &artifacts[i];
      if (std::strcmp(role, "weights") == 0) weights = &artifacts[i];
      if (std::strcmp(role, "compiled") == 0) precompiled = &artifacts[i];
    }
    if (model == nullptr || (model->data == nullptr && model->size != 0)) {
      return MakeStatus(XRT_STATUS_INVALID_ARGUMENT, "openvino: the variant has no 'model' artifact (OpenVINO IR XML); "
                                                     "rebuild the bundle with xrtc");
    }
    // The manifest promises IR: anything else (ONNX above all, whose reader follows external-data paths) is refused
    // before OpenVINO's format detection can see it.
    std::string not_ir;
    if (!IsIrXml(static_cast<const uint8_t*>(model->data), static_cast<size_t>(model->size), &not_ir)) {
      return MakeStatus(XRT_STATUS_DATA_CORRUPT, "openvino: the variant's 'model' artifact is not OpenVINO IR XML: " +
                                                     not_ir + "; an openvino variant carries IR only (rebuild the "
                                                     "bundle with xrtc)");
    }

    ParsedOptions parsed;
    const std::string bad_options = ParseOptions(options_json, UsableCpus(), &parsed);
    if (!bad_options.empty()) return MakeStatus(XRT_STATUS_INVALID_ARGUMENT, bad_options);
    ov::AnyMap properties;
    for (const auto& [key, value] : parsed.properties) properties[key] = value;
    std::map<std::string, std::string>& xrt_options = parsed.xrt;
    // fp32 variants carry INFERENCE_PRECISION_HINT=f32. Without it, OpenVINO's CPU plugin silently runs in bf16 on
    // CPUs with AVX512-BF16 (or AMX), changing results; the bundle's precision is the contract, so default to f32.
    if (ov_device == "CPU" && properties.count(ov::hint::inference_precision.name()) == 0) {
      properties[ov::hint::inference_precision.name()] = "f32";
    }
    // An f16 hint (fp16 variants, and NPU variants on their CPU fallback) is honoured only by CPUs with fp16 units
    // (capability "FP16"); elsewhere OpenVINO's CPU plugin silently computes in bf16 where the CPU has bf16 units,
    // 8x coarser than the fp16 the variant promises and the accuracy gate measured. Compute in f32 there instead
    // (the weights stay fp16); explain()'s engine info says which precision ran.
    bool f16_unsupported = false;
    if (ov_device == "CPU") {
      const auto hint = properties.find(ov::hint::inference_precision.name());
      if (hint != properties.end() && hint->second.as<std::string>() == "f16") {
        const std::string caps = " " + DeviceCapabilities(ov_device) + " ";
        if (caps.find(" FP16 ") == std::string::npos) {
          hint->second = std::string("f32");
          f16_unsupported = true;
        }
      }
    }

    // Zero copy: the read-only ov::Tensor constructor wraps the borrowed, 64-byte aligned weights section.
    ov::Tensor weights_tensor;
    if (weights != nullptr && weights->size != 0) {
      if (weights->data == nullptr) {
        return MakeStatus(XRT_STATUS_INVALID_ARGUMENT, "openvino: the 'weights' artifact has no data");
      }
      weights_tensor = ov::Tensor(ov::element::u8, ov::Shape{static_cast<size_t>(weights->size)},
                                  static_cast<const void*>(weights->data));
    }
    const std::string xml(static_cast<const char*>(model->data), static_cast<size_t>(model->size));

    // Profiling (the core's xrt.profile): per-layer counters cost time on every run, so only when asked.
    const bool profile = xrt_options.count("xrt.profile") && xrt_options["xrt.profile"] == "1";
    if (profile) properties[ov::enable_profiling.name()] = true;
    ov::Core& core = GetCore();
    // Ahead-of-time path: a blob exported by xrtc (compiled_model.export_model) imports ~10x faster than compiling
    // the IR, but only the exact OpenVINO build on a CPU with the same capabilities may use it. Anything else (or an
    // import failure) falls back to compiling the IR below, which is always correct.
    // Profiling compiles the IR: PERF_COUNT is a compile-time property the exported blob was built without.
    if (!profile && precompiled != nullptr && precompiled->data != nullptr && precompiled->size != 0 &&
        BlobModelIsIr(static_cast<const uint8_t*>(precompiled->data), static_cast<size_t>(precompiled->size)) &&
        xrt_options["xrt.compiled_device"] == ov_device &&
        xrt_options["xrt.compiled_build"] == ov::get_openvino_version().buildNumber &&
        xrt_options["xrt.compiled_capabilities"] == DeviceCapabilities(ov_device)) {
      // A weightless blob (xrt.compiled_weights = "store") reads its constants from the variant's weights, which
      // OpenVINO's CPU plugin takes only as a file (WEIGHTS_PATH): a sealed in-memory copy of the verified bytes.
      const bool weightless = xrt_options.count("xrt.compiled_weights") != 0;
      if (weightless && weights_tensor.get_byte_size() == 0) {
        // The core first offers a blob variant without its weights (xrt.h, init): say so at once, no import tried.
        return MakeStatus(XRT_STATUS_INVALID_ARGUMENT, "openvino: the variant's compiled blob holds no weights "
                                                       "(xrt.compiled_weights): its 'weights' artifact is needed");
      }
      int weights_fd = -1;
      try {
        ov::AnyMap import_properties = properties;
        std::string memfd_error;
        if (weightless) {
          weights_fd = SealedMemoryFile(weights->data, static_cast<size_t>(weights->size), &memfd_error);
          if (weights_fd < 0) throw std::runtime_error(memfd_error);
          import_properties[ov::enable_weightless.name()] = true;
          import_properties[ov::weights_path.name()] = "/proc/self/fd/" + std::to_string(weights_fd);
        }
        ov::Tensor blob(ov::element::u8, ov::Shape{static_cast<size_t>(precompiled->size)},
                        static_cast<const void*>(precompiled->data));
        ov::CompiledModel imported = core.import_model(blob, ov_device, import_properties);
        if (weights_fd >= 0) close(weights_fd);  // OpenVINO has read (or mapped) what it keeps
        weights_fd = -1;
        auto* handle = new Handle(std::move(blob), std::move(imported));  // the handle keeps the blob view alive
        nlohmann::json info = {{"ov_device", ov_device}, {"compiled_from", "precompiled blob"}};
        if (weightless) info["blob_weights"] = "from the weights artifact";
        if (!parsed.notes.empty()) info["options"] = parsed.notes;
        handle->set_info(info.dump());
        *out_handle = handle;
        return nullptr;
      } catch (const std::exception&) {
        // NOTE: deliberately silent fallback to the IR; the IR is the variant's source of truth.
        if (weights_fd >= 0) close(weights_fd);
      }
    }
    std::shared_ptr<ov::Model> ov_model;
    try {
      ov_model = core.read_model(xml, weights_tensor);
    } catch (const std::exception& e) {
      // The bytes passed the bundle's digests, so this is the compiler's or the engine's fault (e.g. an IR from a
      // newer OpenVINO), not corruption.
      return MakeStatus(XRT_STATUS_INTERNAL, "openvino: cannot read the variant's IR with OpenVINO " +
                                                 std::string(ov::get_openvino_version().buildNumber) + ": " +
                                                 CleanOvMessage(e.what()) +
                                                 " (rebuild the bundle with an xrtc using this OpenVINO)");
    }
    // Compile cache (the caller's cache_dir, handed over as "xrt.cache_dir"): OpenVINO stores the compiled model
    // there and imports it on the next load of the same model, device and properties. A hit is seen as "no new
    // file in the folder" (OpenVINO does not report it).
    const std::string cache_dir = xrt_options.count("xrt.cache_dir") ? xrt_options["xrt.cache_dir"] : "";
    size_t cache_files_before = 0;
    if (!cache_dir.empty()) {
      properties[ov::cache_dir.name()] = cache_dir;
      cache_files_before = CountFiles(cache_dir);
    }
    ov::CompiledModel compiled;
    try {
      compiled = core.compile_model(ov_model, ov_device, properties);
    } catch (const std::exception& e) {
      const std::string message = CleanOvMessage(e.what());
      // OpenVINO reports a bad option as "Wrong value X for property key K" or "Unsupported property K": when the
      // message names one of our option keys, the variant's options are at fault, not the engine.
      xrt_status_code_t code = XRT_STATUS_INTERNAL;
      if (message.find("propert") != std::string::npos) {
        for (const auto& [key, value] : properties) {
          if (message.find(key) != std::string::npos) code = XRT_STATUS_INVALID_ARGUMENT;
        }
      }
      return MakeStatus(code, "openvino: compile_model on " + ov_device + " failed: " + message);
    }
    nlohmann::json info = {{"ov_device", ov_device}, {"compiled_from", "IR"}};
    if (ov_device == "CPU") {
      info["inference_precision"] = compiled.get_property(ov::hint::inference_precision).get_type_name();
      if (f16_unsupported) info["inference_precision_note"] = "f16 asked; this CPU has no fp16 units: f32 instead";
    }
    auto* handle = new Handle(std::move(weights_tensor), std::move(compiled));
    if (profile) {
      handle->EnableProfiling();
      info["profiling"] = "PERF_COUNT";
    }
    if (!parsed.notes.empty()) info["options"] = parsed.notes;
    if (!cache_dir.empty()) {
      const bool hit = CountFiles(cache_dir) == cache_files_before && cache_files_before > 0;
      info["cache_dir"] = cache_dir;
      info["cache"] = hit ? "hit" : "miss";
      info["compiled_from"] = hit ? "compile cache" : "IR (written to the compile cache)";
    }
    handle->set_info(info.dump());
    *out_handle = handle;
    return nullptr;
  } catch (const std::bad_alloc&) {
    return MakeStatus(XRT_STATUS_RESOURCE_EXHAUSTED, "openvino: out of memory while loading the variant");
  } catch (const std::exception& e) {
    return MakeStatus(XRT_STATUS_INTERNAL, std::string("openvino: init failed: ") + CleanOvMessage(e.what()));
  } catch (...) {
    return MakeStatus(XRT_STATUS_INTERNAL, "openvino: init failed with an unknown exception");
  }
}

// Fills outputs[0..count) from the request; on failure returns a status and leaves nothing allocated.
xrt_status_t CopyOutputs(ov::InferRequest& request, xrt_backend_output_t* outputs, size_t count) {
  for (size_t i = 0; i < count; ++i) {
    const ov::Tensor tensor = request.get_output_tensor(i);
    const xrt_dtype_t dtype = FromOvType(tensor.get_element_type());
    const ov::Shape shape = tensor.get_shape();
    xrt_status_t status = nullptr;
    if (dtype == XRT_DTYPE_INVALID) {
      status = MakeStatus(XRT_STATUS_UNIMPLEMENTED, "openvino: output " + std::to_string(i) + " has element type " +
                                                        tensor.get_element_type().get_type_name() +
                                                        ", which xrt has no dtype for");
    } else if (shape.size() > XRT_MAX_RANK) {
      status = MakeStatus(XRT_STATUS_UNIMPLEMENTED, "openvino: output " + std::to_string(i) + " has rank " +
                                                        std::to_string(shape.size()) + " > XRT_MAX_RANK (" +
                                                        std::to_string(XRT_MAX_RANK) + ")");
    }
    if (status != nullptr) {
      ReleaseOutputs(outputs, i);
      return status;
    }
    // Copied, not borrowed: the request's output memory is reused (overwritten) by the next infer() on this pooled
    // request, possibly from another thread, while the caller may still hold these outputs.
    const size_t byte_size = tensor.get_byte_size();
    void* data = std::malloc(byte_size == 0 ? 1 : byte_size);
    if (data == nullptr) {
      ReleaseOutputs(outputs, i);
      return MakeStatus(XRT_STATUS_RESOURCE_EXHAUSTED,
                        "openvino: cannot allocate " + std::to_string(byte_size) + " bytes for output " +
                            std::to_string(i));
    }
    if (byte_size != 0) std::memcpy(data, tensor.data(), byte_size);
    xrt_backend_output_t& out = outputs[i];
    out = xrt_backend_output_t{};
    out.dtype = dtype;
    out.rank = static_cast<uint32_t>(shape.size());
    for (size_t d = 0; d < shape.size(); ++d) out.shape[d] = static_cast<int64_t>(shape[d]);
    out.data = data;
    out.byte_size = byte_size;
    out.owner = data;
    out.release = &FreeOwner;
  }
  return nullptr;
}

xrt_status_t Execute(void* /*self*/, void* handle_ptr, const xrt_tensor_view_t* inputs, size_t input_count,
                     xrt_backend_output_t* outputs, size_t output_count) {
  size_t filled = 0;  // Outputs written so far; released if an exception escapes below.
  try {
    if (handle_ptr == nullptr || (inputs == nullptr && input_count != 0) ||
        (outputs == nullptr && output_count != 0)) {
      return MakeStatus(XRT_STATUS_INVALID_ARGUMENT, "openvino: execute called with NULL arguments");
    }
    Handle* handle = static_cast<Handle*>(handle_ptr);
    const size_t model_inputs = handle->input_count();
    const size_t model_outputs = handle->output_count();
    if (input_count != model_inputs || output_count != model_outputs) {
      return MakeStatus(XRT_STATUS_INVALID_ARGUMENT,
                        "openvino: the compiled model has " + std::to_string(model_inputs) + " inputs and " +
                            std::to_string(model_outputs) + " outputs, but execute got " +
                            std::to_string(input_count) + " and " + std::to_string(output_count) +
                            " (the manifest and the IR disagree; rebuild the bundle)");
    }

    RequestLease lease(handle);
    ov::InferRequest& request = lease.request();
    for (size_t i = 0; i < input_count; ++i) {
      const xrt_tensor_view_t& view = inputs[i];
      const ov::element::Type type = ToOvType(view.dtype);
      if (type == ov::element::dynamic || view.rank > XRT_MAX_RANK || (view.shape == nullptr && view.rank != 0)) {
        return MakeStatus(XRT_STATUS_INVALID_ARGUMENT,
                          "openvino: input " + std::to_string(i) + " has an invalid dtype or rank");
      }
      ov::Shape shape(view.rank);
      for (uint32_t d = 0; d < view.rank; ++d) shape[d] = static_cast<size_t>(view.shape[d]);
      // Zero copy: the tensor wraps the caller's buffer, which is borrowed for the duration of this call. The pooled
      // request keeps the stale wrapper afterwards but never reads it: every execute() sets every input first.
      ov::Tensor tensor = (view.data != nullptr) ? ov::Tensor(type, shape, view.data) : ov::Tensor(type, shape);
      request.set_input_tensor(i, tensor);
    }
    request.infer();
    xrt_status_t status = CopyOutputs(request, outputs, output_count);
    if (status == nullptr) {
      filled = output_count;
      lease.set_ok();
    }
    return status;
  } catch (const std::bad_alloc&) {
    ReleaseOutputs(outputs, filled);
    return MakeStatus(XRT_STATUS_RESOURCE_EXHAUSTED, "openvino: out of memory while running");
  } catch (const std::exception& e) {
    ReleaseOutputs(outputs, filled);
    return MakeStatus(XRT_STATUS_INTERNAL, std::string("openvino: inference failed: ") + CleanOvMessage(e.what()));
  } catch (...) {
    ReleaseOutputs(outputs, filled);
    return MakeStatus(XRT_STATUS_INTERNAL, "openvino: inference failed with an unknown exception");
  }
}

xrt_status_t Profile(void* /*self*/, void* handle_ptr, void (*sink)(void*, const char*, size_t), void* context) {
  try {
    if (handle_ptr == nullptr || sink == nullptr) {
      return MakeStatus(XRT_STATUS_INVALID_ARGUMENT, "openvino: profile called with NULL arguments");
    }
    Handle* handle = static_cast<Handle*>(handle_ptr);
    if (!handle->profiling()) {
      return MakeStatus(XRT_STATUS_FAILED_PRECONDITION,
                        "openvino: the variant was loaded without profiling (PERF_COUNT is off)");
    }
    const std::string json = handle->ProfileJson();
    sink(context, json.c_str(), json.size());
    return nullptr;
  } catch (const std::bad_alloc&) {
    return MakeStatus(XRT_STATUS_RESOURCE_EXHAUSTED, "openvino: out of memory while reading the profile");
  } catch (const std::exception& e) {
    return MakeStatus(XRT_STATUS_INTERNAL, std::string("openvino: reading the profile failed: ") +
                                               CleanOvMessage(e.what()));
  } catch (...) {
    return MakeStatus(XRT_STATUS_INTERNAL, "openvino: reading the profile failed with an unknown exception");
  }
}

void Destroy(void* /*self*/, void* handle) {
  try {
    delete static_cast<Handle*>(handle);
  } catch (...) {  // Destructors of OpenVINO objects should not throw; never let one escape into C.
  }
}

}  // namespace
}  // namespace openvino_backend
}  // namespace xrt

// The plugin entry point (xrt.h, "Backends"). Fills *out_vtable; the vtable's strings and functions are static.
extern "C" XRT_API xrt_status_t xrt_backend_plugin_get(uint32_t host_abi_version, xrt_backend_vtable_t* out_vtable) {
  namespace ovb = xrt::openvino_backend;
  if (out_vtable == nullptr) {
    return xrt_status_make(XRT_STATUS_INVALID_ARGUMENT, "openvino: xrt_backend_plugin_get: out_vtable is NULL");
  }
  if (host_abi_version != XRT_ABI_VERSION) {
    char message[160];
    std::snprintf(message, sizeof(message),
                  "openvino: plugin built for xrt ABI %u, host has ABI %u; rebuild the plugin against the runtime's "
                  "xrt.h",
                  static_cast<unsigned>(XRT_ABI_VERSION), static_cast<unsigned>(host_abi_version));
    return xrt_status_make(XRT_STATUS_INCOMPATIBLE, message);
  }
  xrt_backend_vtable_t vtable{};
  vtable.struct_size = sizeof(xrt_backend_vtable_t);
  vtable.abi_version = XRT_ABI_VERSION;
  vtable.name = ovb::kEngineName;
  vtable.self = nullptr;
  vtable.version = &ovb::Version;
  vtable.has_device = &ovb::HasDevice;
  vtable.init = &ovb::Init;
  vtable.execute = &ovb::Execute;
  vtable.destroy = &ovb::Destroy;
  vtable.describe = &ovb::Describe;
  vtable.profile = &ovb::Profile;
  xrt_backend_vtable_copy_out(&vtable, out_vtable);
  return nullptr;
}
