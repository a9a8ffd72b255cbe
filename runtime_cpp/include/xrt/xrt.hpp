// xrt.hpp - a thin, header-only C++17 wrapper over the C API in xrt.h.
//
// RAII handles (move-only) and exceptions: every failing call throws xrt::Error carrying the status code and
// message. This header is compiled into the caller, so exceptions never cross libxrt's C ABI.
//
//   xrt::Bundle bundle = xrt::Bundle::OpenFile("model.xrtpkg");
//   xrt::Session session(bundle);                          // device "cpu", the manifest's preferred engine
//   std::vector<int64_t> shape = {1, 4};
//   std::vector<float> x(4);
//   xrt::Outputs out = session.Run({xrt::TensorView::Of(x.data(), shape)});   // positional inputs
//   const float* y = out.Get(0).As<float>();
#ifndef XRT_XRT_HPP_
#define XRT_XRT_HPP_

#include <array>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "xrt/xrt.h"

namespace xrt {

// A failed xrt call. code() is the ABI's status code: branch on it, never on what().
class Error : public std::runtime_error {
 public:
  Error(xrt_status_code_t code, const std::string& message)
      : std::runtime_error(std::string(xrt_status_code_string(code)) + ": " + message), code_(code),
        message_(message) {}
  xrt_status_code_t code() const noexcept { return code_; }
  const std::string& message() const noexcept { return message_; }

 private:
  xrt_status_code_t code_;
  std::string message_;
};

// Takes ownership of `status`: frees it, and throws if it is not OK.
inline void Check(xrt_status_t status) {
  if (status == nullptr) return;
  const xrt_status_code_t code = xrt_status_code(status);
  std::string message = xrt_status_message(status);
  xrt_status_free(status);
  throw Error(code, message);
}

template <typename T>
constexpr xrt_dtype_t DtypeOf() {
  if constexpr (std::is_same_v<T, float>) return XRT_DTYPE_FLOAT32;
  else if constexpr (std::is_same_v<T, double>) return XRT_DTYPE_FLOAT64;
  else if constexpr (std::is_same_v<T, int8_t>) return XRT_DTYPE_INT8;
  else if constexpr (std::is_same_v<T, uint8_t>) return XRT_DTYPE_UINT8;
  else if constexpr (std::is_same_v<T, int16_t>) return XRT_DTYPE_INT16;
  else if constexpr (std::is_same_v<T, uint16_t>) return XRT_DTYPE_UINT16;
  else if constexpr (std::is_same_v<T, int32_t>) return XRT_DTYPE_INT32;
  else if constexpr (std::is_same_v<T, uint32_t>) return XRT_DTYPE_UINT32;
  else if constexpr (std::is_same_v<T, int64_t>) return XRT_DTYPE_INT64;
  else if constexpr (std::is_same_v<T, uint64_t>) return XRT_DTYPE_UINT64;
  else if constexpr (std::is_same_v<T, bool>) return XRT_DTYPE_BOOL;
  else return XRT_DTYPE_INVALID;
}

// A borrowed tensor: the shape vector and the data must outlive the call that uses the view.
struct TensorView {
  xrt_dtype_t dtype = XRT_DTYPE_INVALID;
  const std::vector<int64_t>* shape = nullptr;
  void* data = nullptr;
  uint64_t byte_size = 0;
  xrt_placement_t placement = {XRT_MEMORY_HOST, 0};  // where data lives (xrt.h, "Placement")

  // A view of host `data` (C-contiguous, product(shape) elements of T).
  template <typename T>
  static TensorView Of(const T* data, const std::vector<int64_t>& shape) {
    uint64_t n = 1;
    for (int64_t d : shape) n *= static_cast<uint64_t>(d < 0 ? 0 : d);
    return TensorView{DtypeOf<T>(), &shape, const_cast<T*>(data), n * sizeof(T), {XRT_MEMORY_HOST, 0}};
  }
  // A view of CUDA device memory (a CUdeviceptr) on device `device_id`.
  template <typename T>
  static TensorView OnCuda(const T* device_data, const std::vector<int64_t>& shape, int32_t device_id = 0) {
    TensorView v = Of(device_data, shape);
    v.placement = {XRT_MEMORY_CUDA, device_id};
    return v;
  }
};

// Options of one run (xrt_run_options_t): leave outputs on the session's device, order the run on a CUstream.
struct RunOptions {
  bool outputs_on_device = false;
  void* stream = nullptr;  // CUstream; nullptr: the legacy default stream
};

// An output tensor, borrowed from its Outputs.
struct OutputView {
  std::string name;
  xrt_dtype_t dtype = XRT_DTYPE_INVALID;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  uint64_t byte_size = 0;
  xrt_placement_t placement = {XRT_MEMORY_HOST, 0};  // device memory only with RunOptions::outputs_on_device

  // Throws INVALID_ARGUMENT when T does not match dtype.
  template <typename T>
  const T* As() const {
    if (DtypeOf<T>() != dtype) {
      throw Error(XRT_STATUS_INVALID_ARGUMENT,
                  "output \"" + name + "\" is " + xrt_dtype_name(dtype) + ", not " + xrt_dtype_name(DtypeOf<T>()));
    }
    return static_cast<const T*>(data);
  }
};

struct IoInfo {
  std::string name;
  xrt_dtype_t dtype = XRT_DTYPE_INVALID;
  std::vector<int64_t> shape;          // -1 for a dynamic dim
  std::vector<std::string> dim_names;  // the symbolic name of a dynamic dim, else ""
};

// Signature policy for opening a bundle (see xrt_bundle_open_options_t): with trusted keys, the bundle must be
// signed by one of them; with require_signature, by any key. Either refuses unsigned bundles (PERMISSION_DENIED).
struct BundleOptions {
  std::vector<std::array<uint8_t, 32>> trusted_keys;  // raw Ed25519 public keys
  bool require_signature = false;
};

class Bundle {
 public:
  static Bundle OpenFile(const std::string& path, const BundleOptions& options = {}) {
    xrt_bundle_open_options_t o = ToC(options);
    xrt_bundle_t* b = nullptr;
    Check(xrt_bundle_open_file(path.c_str(), &o, &b));
    return Bundle(b);
  }
  // `data` is borrowed: it must outlive the Bundle and every Session created from it.
  static Bundle OpenMemory(const void* data, size_t size, const BundleOptions& options = {}) {
    xrt_bundle_open_options_t o = ToC(options);
    xrt_bundle_t* b = nullptr;
    Check(xrt_bundle_open_memory(data, size, &o, &b));
    return Bundle(b);
  }

  Bundle(Bundle&& other) noexcept : handle_(std::exchange(other.handle_, nullptr)) {}
  Bundle& operator=(Bundle&& other) noexcept {
    if (this != &other) {
      xrt_bundle_release(handle_);
      handle_ = std::exchange(other.handle_, nullptr);
    }
    return *this;
  }
  Bundle(const Bundle&) = delete;
  Bundle& operator=(const Bundle&) = delete;
  ~Bundle() { xrt_bundle_release(handle_); }

  std::string_view manifest() const {
    size_t size = 0;
    const char* text = xrt_bundle_manifest(handle_, &size);
    return std::string_view(text ? text : "", size);
  }
  std::pair<uint32_t, uint32_t> format_version() const {
    uint32_t major = 0, minor = 0;
    xrt_bundle_format_version(handle_, &major, &minor);
    return {major, minor};
  }
  // The signer's raw Ed25519 public key (verified at open), or an empty vector for an unsigned bundle.
  std::vector<uint8_t> signer() const {
    std::vector<uint8_t> key(32);
    if (!xrt_bundle_signer(handle_, key.data())) key.clear();
    return key;
  }
  xrt_bundle_t* get() const { return handle_; }

 private:
  explicit Bundle(xrt_bundle_t* handle) : handle_(handle) {}
  // The C view borrows options' key storage (std::array<uint8_t, 32> is 32 contiguous bytes, back to back).
  static xrt_bundle_open_options_t ToC(const BundleOptions& options) {
    static_assert(sizeof(std::array<uint8_t, 32>) == 32, "keys must be packed");
    xrt_bundle_open_options_t o;
    xrt_bundle_open_options_initialize(&o);
    o.trusted_keys = options.trusted_keys.empty() ? nullptr : options.trusted_keys.front().data();
    o.trusted_key_count = options.trusted_keys.size();
    o.require_signature = options.require_signature ? 1u : 0u;
    return o;
  }
  xrt_bundle_t* handle_ = nullptr;
};

class Outputs {
 public:
  Outputs(Outputs&& other) noexcept : handle_(std::exchange(other.handle_, nullptr)) {}
  Outputs& operator=(Outputs&& other) noexcept {
    if (this != &other) {
      xrt_outputs_release(handle_);
      handle_ = std::exchange(other.handle_, nullptr);
    }
    return *this;
  }
  Outputs(const Outputs&) = delete;
  Outputs& operator=(const Outputs&) = delete;
  ~Outputs() { xrt_outputs_release(handle_); }

  size_t size() const { return xrt_outputs_count(handle_); }
  // Views stay valid while this Outputs lives.
  OutputView Get(size_t index) const {
    xrt_placed_view_t p{};
    p.struct_size = sizeof(p);
    const char* name = nullptr;
    Check(xrt_outputs_get_placed(handle_, index, &p, &name));
    const xrt_tensor_view_t& v = p.view;
    OutputView out;
    out.name = name ? name : "";
    out.dtype = v.dtype;
    out.shape.assign(v.shape, v.shape + v.rank);
    out.data = v.data;
    out.byte_size = v.byte_size;
    out.placement = p.placement;
    return out;
  }

 private:
  friend class Session;
  explicit Outputs(xrt_outputs_t* handle) : handle_(handle) {}
  xrt_outputs_t* handle_ = nullptr;
};

struct SessionOptions {
  std::string device;   // "" = "cpu"
  std::string engine;   // "" = the manifest's preference among available engines
  std::string variant;  // "" = pick
  std::optional<std::vector<std::string>> fallback;  // nullopt = the bundle's chain; {} = none
  std::string cache_dir;                              // "" = no engine compile cache
  bool profile = false;                               // the engine's per-node profiler on: profile() (it costs)
};

class Session {
 public:
  explicit Session(const Bundle& bundle, const SessionOptions& options = {}) {
    xrt_session_options_t o;
    xrt_session_options_initialize(&o);
    o.device = options.device.empty() ? nullptr : options.device.c_str();
    o.engine = options.engine.empty() ? nullptr : options.engine.c_str();
    o.variant = options.variant.empty() ? nullptr : options.variant.c_str();
    std::string fallback;
    if (options.fallback) {
      for (const auto& d : *options.fallback) fallback += (fallback.empty() ? "" : ",") + d;
    }
    o.fallback = options.fallback ? fallback.c_str() : nullptr;
    o.cache_dir = options.cache_dir.empty() ? nullptr : options.cache_dir.c_str();
    o.profile = options.profile ? 1u : 0u;
    Check(xrt_session_create(bundle.get(), &o, &handle_));
  }
  Session(Session&& other) noexcept : handle_(std::exchange(other.handle_, nullptr)) {}
  Session& operator=(Session&& other) noexcept {
    if (this != &other) {
      xrt_session_release(handle_);
      handle_ = std::exchange(other.handle_, nullptr);
    }
    return *this;
  }
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;
  ~Session() { xrt_session_release(handle_); }

  // JSON: which variant runs and why.
  std::string describe() const { return xrt_session_describe(handle_); }
  // The engine's profile records as JSON (xrt_session_profile); needs SessionOptions::profile.
  std::string profile() const {
    xrt_profile_t* p = nullptr;
    Check(xrt_session_profile(handle_, &p));
    std::string json = xrt_profile_json(p, nullptr);
    xrt_profile_release(p);
    return json;
  }
  std::vector<IoInfo> inputs() const { return Infos(xrt_session_input_count(handle_), xrt_session_input_info); }
  std::vector<IoInfo> outputs() const { return Infos(xrt_session_output_count(handle_), xrt_session_output_info); }

  // Positional inputs, in the session's input order.
  Outputs Run(const std::vector<TensorView>& inputs, const RunOptions& options = {}) const {
    return RunImpl(nullptr, inputs, options);
  }
  // Named inputs, in any order.
  Outputs Run(const std::vector<std::pair<std::string, TensorView>>& named, const RunOptions& options = {}) const {
    std::vector<const char*> names;
    std::vector<TensorView> views;
    for (const auto& [name, view] : named) {
      names.push_back(name.c_str());
      views.push_back(view);
    }
    return RunImpl(names.data(), views, options);
  }
  xrt_session_t* get() const { return handle_; }

 private:
  using InfoFn = xrt_status_t (*)(const xrt_session_t*, size_t, xrt_io_info_t*);
  std::vector<IoInfo> Infos(size_t count, InfoFn fn) const {
    std::vector<IoInfo> infos;
    for (size_t i = 0; i < count; ++i) {
      xrt_io_info_t info{};
      Check(fn(handle_, i, &info));
      IoInfo out;
      out.name = info.name;
      out.dtype = info.dtype;
      out.shape.assign(info.shape, info.shape + info.rank);
      for (uint32_t d = 0; d < info.rank; ++d) out.dim_names.push_back(info.dim_names[d] ? info.dim_names[d] : "");
      infos.push_back(std::move(out));
    }
    return infos;
  }
  // Host inputs without options take xrt_session_run; anything placed, xrt_session_run_placed.
  Outputs RunImpl(const char* const* names, const std::vector<TensorView>& inputs, const RunOptions& options) const {
    std::vector<xrt_placed_view_t> views;
    views.reserve(inputs.size());
    bool placed = options.outputs_on_device || options.stream != nullptr;
    for (const auto& in : inputs) {
      xrt_placed_view_t p{};
      p.struct_size = sizeof(p);
      p.placement = in.placement;
      p.view.dtype = in.dtype;
      p.view.rank = in.shape ? static_cast<uint32_t>(in.shape->size()) : 0;
      p.view.shape = in.shape ? in.shape->data() : nullptr;
      p.view.data = in.data;
      p.view.byte_size = in.byte_size;
      placed = placed || in.placement.kind != XRT_MEMORY_HOST;
      views.push_back(p);
    }
    xrt_outputs_t* out = nullptr;
    if (placed) {
      xrt_run_options_t o;
      xrt_run_options_initialize(&o);
      o.outputs_on_device = options.outputs_on_device ? 1u : 0u;
      o.stream = options.stream;
      Check(xrt_session_run_placed(handle_, &o, names, views.data(), views.size(), &out));
    } else {
      std::vector<xrt_tensor_view_t> plain;
      plain.reserve(views.size());
      for (const auto& p : views) plain.push_back(p.view);
      Check(xrt_session_run(handle_, names, plain.data(), plain.size(), &out));
    }
    return Outputs(out);
  }
  xrt_session_t* handle_ = nullptr;
};

inline std::string Version() { return xrt_version(); }

// Registered backends and plugin files found (loads nothing).
inline std::vector<std::string> ListBackends() {
  size_t length = 0;
  Check(xrt_backend_list(nullptr, 0, &length));
  std::string buffer(length + 1, '\0');
  Check(xrt_backend_list(buffer.data(), buffer.size(), &length));
  buffer.resize(length < buffer.size() ? length : buffer.size() - 1);
  std::vector<std::string> names;
  size_t start = 0;
  while (start < buffer.size()) {
    size_t comma = buffer.find(',', start);
    if (comma == std::string::npos) comma = buffer.size();
    names.push_back(buffer.substr(start, comma - start));
    start = comma + 1;
  }
  return names;
}

}  // namespace xrt

#endif  // XRT_XRT_HPP_
