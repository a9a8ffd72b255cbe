// session.h - a bundle variant bound to an engine backend, and the outputs of one run.
//
// Thread-safety: a Session is immutable after Create(); Run() may be called concurrently (the backend's execute()
// must be safe on one handle, per xrt.h). Outputs are thread-compatible.
#ifndef XRT_RUNTIME_SRC_SESSION_H_
#define XRT_RUNTIME_SRC_SESSION_H_

#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "backend_registry.h"
#include "bundle.h"
#include "status.h"
#include "xrt/xrt.h"

namespace xrt::core {

struct SessionOptions {
  std::string device;   // "" = the named variant's device, else "cpu"
  std::string engine;   // "" = any, in manifest preference order
  std::string variant;  // "" = pick
  bool fallback_given = false;        // false: the bundle's chain (the variants' fallback_devices)
  std::vector<std::string> fallback;  // devices to try after `device`, in order
  std::string cache_dir;              // "" = no engine compile cache
  bool profile = false;               // turn the engine's per-node profiler on (xrt_session_options_t.profile)
};

class Outputs;

class Session : public std::enable_shared_from_this<Session> {
 public:
  // Picks the variant (xrt.h, xrt_session_create), loads its backend and initialises it. The session keeps the
  // bundle alive. NOT_FOUND / UNAVAILABLE / INCOMPATIBLE list every variant tried and why it was skipped.
  static Result<std::shared_ptr<Session>> Create(std::shared_ptr<const Bundle> bundle, const SessionOptions& options);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // JSON object: variant, engine, engine_version, device, reason, skipped[] (each: variant, engine, device, reason),
  // and the engine's own "engine_info" as it is now (an engine may change it after init, e.g. the cuda engine once
  // its GEMMs leave their stand-ins). Each distinct text lives as long as the session (xrt_session_describe).
  const std::string& describe() const;
  const Model& model() const { return *model_; }
  const Variant& variant() const { return *variant_; }

  // Checks the inputs against the manifest (INVALID_ARGUMENT naming the input, what was expected and what was
  // given), executes, and checks the engine's outputs against the manifest (INTERNAL if the engine disagrees).
  // names may be NULL: inputs are then in the model's input order. The Outputs keep this session alive.
  Result<std::unique_ptr<Outputs>> Run(const char* const* names, const xrt_tensor_view_t* inputs,
                                       size_t input_count) const;
  // Run() for tensors that may live on a device (xrt_session_run_placed). placements may be NULL (all host);
  // options is the caller's, already normalised to this build's struct. A backend without execute_placed gets only
  // host tensors: device inputs and streams are refused here, naming the input and its placement.
  Result<std::unique_ptr<Outputs>> RunPlaced(const xrt_run_options_t& options, const char* const* names,
                                             const xrt_tensor_view_t* inputs, const xrt_placement_t* placements,
                                             size_t input_count) const;

  // The engine's profile records (xrt.h, xrt_backend_vtable_t.profile) with "variant" and "device" added.
  // FAILED_PRECONDITION without SessionOptions::profile; UNIMPLEMENTED when the engine has no profile hook.
  Result<std::string> Profile() const;

 private:
  Session() = default;
  bool HasExecutePlaced() const { return backend_->vtable.execute_placed != nullptr; }

  std::shared_ptr<const Bundle> bundle_;
  const Model* model_ = nullptr;      // owned by bundle_
  const Variant* variant_ = nullptr;  // owned by bundle_
  std::shared_ptr<const Backend> backend_;
  std::string device_;
  std::vector<format::SectionBytes> artifact_bytes_;  // what init() was given; outlives the handle
  void* handle_ = nullptr;
  std::string describe_;                        // without engine_info
  mutable std::mutex describe_mu_;
  mutable const char* engine_info_seen_ = nullptr;  // the backend's describe() text the last one was made from
  mutable std::deque<std::string> described_;     // every describe() text handed out (stable addresses)
  bool profiling_ = false;  // created with SessionOptions::profile
};

// The outputs of one run, in the model's output order. Calls each output's release(owner) exactly once.
class Outputs {
 public:
  Outputs(std::shared_ptr<const Session> session, size_t count);
  ~Outputs();
  Outputs(const Outputs&) = delete;
  Outputs& operator=(const Outputs&) = delete;

  size_t count() const { return outputs_.size(); }
  const xrt_backend_output_t& at(size_t i) const { return outputs_[i]; }
  const xrt_placement_t& placement(size_t i) const { return placements_[i]; }
  const char* name(size_t i) const { return session_->model().outputs[i].name.c_str(); }

 private:
  friend class Session;
  void ReleaseAll();

  std::shared_ptr<const Session> session_;
  std::vector<xrt_backend_output_t> outputs_;
  std::vector<xrt_placement_t> placements_;  // per output; host unless the backend left it on a device
};

}  // namespace xrt::core

#endif  // XRT_RUNTIME_SRC_SESSION_H_
