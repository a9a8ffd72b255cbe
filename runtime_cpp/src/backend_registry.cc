#include "backend_registry.h"

#include <cstring>
#include <cstddef>
#include <algorithm>
#include <dirent.h>
#include <dlfcn.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdlib>
#include <set>

namespace xrt::core {
namespace {

constexpr char kPluginPrefix[] = "libxrt_backend_";
constexpr char kPluginSuffix[] = ".so";
constexpr char kPluginEntry[] = "xrt_backend_plugin_get";
using PluginGetFn = xrt_status_t (*)(uint32_t, xrt_backend_vtable_t*);

// What to tell a user whose engine is missing.
std::string InstallHint(const std::string& engine) {
  if (engine == "onnxruntime") {
    return "the onnxruntime engine is registered by the Python loader: open the bundle with xpuruntime.load() "
           "(pip install xpuruntime), or pick another variant";
  }
  return Cat("install xpuruntime[", engine, "] (pip install 'xpuruntime[", engine,
             "]'), or put libxrt_backend_", engine, ".so in a directory of $XRT_BACKEND_PATH");
}

bool IsRegularFile(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string JoinDirs(const std::vector<std::string>& dirs) {
  std::string s;
  for (const auto& d : dirs) s += (s.empty() ? "" : ", ") + d;
  return s.empty() ? "(none)" : s;
}

}  // namespace

std::string Backend::Version() const {
  const char* v = vtable.version(vtable.self);
  return v ? v : "";
}

bool Backend::HasDevice(const std::string& device) const {
  return vtable.has_device(vtable.self, device.c_str()) != 0;
}

BackendRegistry& BackendRegistry::Get() {
  static BackendRegistry* registry = new BackendRegistry();  // never destroyed: plugins outlive static teardown
  return *registry;
}

std::vector<std::string> BackendRegistry::SearchDirs() {
  std::vector<std::string> dirs;
  Dl_info info;
  if (::dladdr(reinterpret_cast<void*>(&xrt_version), &info) != 0 && info.dli_fname != nullptr) {
    std::string self = info.dli_fname;
    const size_t slash = self.rfind('/');
    dirs.push_back(slash == std::string::npos ? "." : (slash == 0 ? "/" : self.substr(0, slash)));
  }
  if (const char* env = std::getenv("XRT_BACKEND_PATH")) {
    std::string paths = env;
    size_t start = 0;
    while (start <= paths.size()) {
      size_t end = paths.find(':', start);
      if (end == std::string::npos) end = paths.size();
      std::string dir = paths.substr(start, end - start);
      if (!dir.empty() && std::find(dirs.begin(), dirs.end(), dir) == dirs.end()) dirs.push_back(dir);
      start = end + 1;
    }
  }
  return dirs;
}

static Result<std::shared_ptr<const Backend>> MakeBackend(const xrt_backend_vtable_t* vtable,
                                                          const std::string& origin) {
  if (vtable == nullptr) return InvalidArgument("vtable is NULL");
  if (vtable->abi_version != XRT_ABI_VERSION) {
    return Incompatible("backend ", vtable->name ? vtable->name : "(unnamed)", " was built for ABI version ",
                        vtable->abi_version, ", this runtime has ABI version ", XRT_ABI_VERSION,
                        ": rebuild the backend against this xrt.h");
  }
  // `describe` is optional and was added last: a vtable may end before it.
  constexpr size_t kRequiredSize = offsetof(xrt_backend_vtable_t, describe);
  if (vtable->struct_size < kRequiredSize) {
    return Incompatible("backend vtable struct_size is ", vtable->struct_size, ", expected at least ",
                        kRequiredSize);
  }
  if (vtable->name == nullptr || vtable->name[0] == '\0') return InvalidArgument("vtable name is NULL or empty");
  const char* missing = !vtable->version      ? "version"
                        : !vtable->has_device ? "has_device"
                        : !vtable->init       ? "init"
                        : !vtable->execute    ? "execute"
                        : !vtable->destroy    ? "destroy"
                                              : nullptr;
  if (missing) return InvalidArgument("backend ", vtable->name, ": vtable function ", missing, " is NULL");
  auto backend = std::make_shared<Backend>();
  backend->vtable = xrt_backend_vtable_t{};
  std::memcpy(&backend->vtable, vtable, std::min<size_t>(vtable->struct_size, sizeof(xrt_backend_vtable_t)));
  backend->vtable.struct_size = sizeof(xrt_backend_vtable_t);
  backend->name = vtable->name;
  backend->vtable.name = backend->name.c_str();  // own the name: the caller's string may be temporary
  backend->origin = origin;
  return std::shared_ptr<const Backend>(std::move(backend));
}

Status BackendRegistry::Register(const xrt_backend_vtable_t* vtable, const std::string& origin) {
  XRT_ASSIGN_OR_RETURN(auto backend, MakeBackend(vtable, origin), "");
  std::lock_guard<std::recursive_mutex> lock(mu_);
  backends_[backend->name] = std::move(backend);
  return Status();
}

Result<std::shared_ptr<const Backend>> BackendRegistry::Acquire(const std::string& engine) {
  // Held across loading, so two sessions never load one plugin twice.
  std::lock_guard<std::recursive_mutex> lock(mu_);
  auto it = backends_.find(engine);
  if (it != backends_.end()) return it->second;
  return LoadPlugin(engine);
}

Result<std::shared_ptr<const Backend>> BackendRegistry::LoadPlugin(const std::string& engine) {
  // `engine` comes from a validated manifest: [A-Za-z0-9_]{1,64}, so it cannot name a path.
  const std::string file = Cat(kPluginPrefix, engine, kPluginSuffix);
  const std::vector<std::string> dirs = SearchDirs();
  for (const std::string& dir : dirs) {
    const std::string path = dir + "/" + file;
    if (!IsRegularFile(path)) continue;
    ::dlerror();
    void* handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) {
      const char* err = ::dlerror();
      return Unavailable("engine ", engine, ": cannot load plugin ", path, ": ", err ? err : "unknown dlopen error",
                         "; ", InstallHint(engine));
    }
    auto get = reinterpret_cast<PluginGetFn>(::dlsym(handle, kPluginEntry));
    if (get == nullptr) {
      return Unavailable("engine ", engine, ": ", path, " is not an xrt backend plugin (it does not export ",
                         kPluginEntry, ")");
    }
    xrt_backend_vtable_t vtable{};
    vtable.struct_size = sizeof(vtable);  // the plugin writes no byte past it (xrt.h, "Backends")
    Status s = Status::FromC(get(XRT_ABI_VERSION, &vtable));
    if (!s.ok()) return std::move(s).WithContext(Cat("engine ", engine, ": plugin ", path));
    if (vtable.name == nullptr || engine != vtable.name) {
      return Unavailable("engine ", engine, ": plugin ", path, " reports engine name \"",
                         vtable.name ? vtable.name : "(null)", "\"");
    }
    XRT_ASSIGN_OR_RETURN(auto backend, MakeBackend(&vtable, path), "engine ", engine, ": plugin ", path);
    backends_[engine] = backend;
    return backend;
  }
  return Unavailable("engine ", engine, ": no plugin ", file, " in ", JoinDirs(dirs), "; ", InstallHint(engine));
}

std::vector<std::string> BackendRegistry::List() {
  std::set<std::string> names;
  {
    std::lock_guard<std::recursive_mutex> lock(mu_);
    for (const auto& [name, backend] : backends_) names.insert(name);
  }
  const std::string prefix = kPluginPrefix, suffix = kPluginSuffix;
  for (const std::string& dir : SearchDirs()) {
    DIR* d = ::opendir(dir.c_str());
    if (d == nullptr) continue;
    while (const dirent* entry = ::readdir(d)) {
      const std::string f = entry->d_name;
      if (f.size() > prefix.size() + suffix.size() && f.compare(0, prefix.size(), prefix) == 0 &&
          f.compare(f.size() - suffix.size(), suffix.size(), suffix) == 0) {
        names.insert(f.substr(prefix.size(), f.size() - prefix.size() - suffix.size()));
      }
    }
    ::closedir(d);
  }
  return std::vector<std::string>(names.begin(), names.end());
}

}  // namespace xrt::core
