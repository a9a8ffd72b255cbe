// backend_registry.h - engine backends by name: vtables registered by a host, or plugins loaded on demand.
//
// Plugins are libxrt_backend_<engine>.so, searched first in the directory that holds libxrt.so itself, then in
// the ':'-separated directories of $XRT_BACKEND_PATH. A plugin is dlopen'ed only when a session needs its engine,
// and is never unloaded (engines register exit handlers and thread-locals; unloading them is not safe).
// Thread-safe.
#ifndef XRT_RUNTIME_SRC_BACKEND_REGISTRY_H_
#define XRT_RUNTIME_SRC_BACKEND_REGISTRY_H_

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "status.h"
#include "xrt/xrt.h"

namespace xrt::core {

// A registered backend: the copied vtable and where it came from. Sessions hold a shared_ptr, so a later
// registration under the same name does not pull the vtable from under a live session.
struct Backend {
  xrt_backend_vtable_t vtable{};
  std::string name;
  std::string origin;  // "registered by the host" or the plugin's path

  std::string Version() const;
  bool HasDevice(const std::string& device) const;
};

class BackendRegistry {
 public:
  static BackendRegistry& Get();

  // Validates and copies the vtable. INVALID_ARGUMENT (NULL or missing fields), INCOMPATIBLE (ABI version).
  Status Register(const xrt_backend_vtable_t* vtable, const std::string& origin);
  // The backend for `engine`: a registered one, else its plugin, loaded now. UNAVAILABLE (what was tried, the
  // dlerror text, and how to install the engine) when there is none.
  Result<std::shared_ptr<const Backend>> Acquire(const std::string& engine);
  // Registered names and plugin files found, sorted and unique; loads nothing.
  std::vector<std::string> List();
  // The plugin directories, in search order.
  static std::vector<std::string> SearchDirs();

 private:
  BackendRegistry() = default;
  Result<std::shared_ptr<const Backend>> LoadPlugin(const std::string& engine);

  std::recursive_mutex mu_;  // recursive: a plugin's entry point may call xrt_backend_register() while we load it
  std::map<std::string, std::shared_ptr<const Backend>> backends_;
};

}  // namespace xrt::core

#endif  // XRT_RUNTIME_SRC_BACKEND_REGISTRY_H_
