// cuda_api.cc - dlopen of libcuda.so.1, libcublasLt.so.13 and libcublas.so.13 into the function tables of cuda_api.h.
#include "cuda_api.h"

#include <dlfcn.h>

#include <cstdlib>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>

namespace xrt {
namespace cuda_backend {
namespace {

#define XRT_CUDA_STR2(x) #x
#define XRT_CUDA_STR(x) XRT_CUDA_STR2(x)  // expands cuda.h's versioned-name macros first
// Resolves api.f from the dlopened `lib`, adding f's name to `missing` when the library lacks it (the three loaders
// below each have locals named api, lib and missing).
#define XRT_CUDA_LOAD(f)                                                                                 \
  api.f = reinterpret_cast<decltype(api.f)>(dlsym(lib, XRT_CUDA_STR(f)));                                \
  if (api.f == nullptr) missing += std::string(missing.empty() ? "" : ", ") + XRT_CUDA_STR(f);

constexpr char kCublasLtSoname[] = "libcublasLt.so.13";
constexpr char kCublasSoname[] = "libcublas.so.13";

// The directory holding this plugin (dladdr of a symbol inside it).
std::string PluginDir() {
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&PluginDir), &info) == 0 || info.dli_fname == nullptr) return "";
  std::string path(info.dli_fname);
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

void AppendDirs(const char* list, std::vector<std::string>* out) {
  if (list == nullptr) return;
  std::stringstream in(list);
  std::string dir;
  while (std::getline(in, dir, ':')) {
    if (!dir.empty()) out->push_back(dir);
  }
}

// site-packages folders of files this process has mapped (a Python that imported torch or the nvidia wheels).
std::vector<std::string> MappedSitePackages() {
  std::vector<std::string> out;
  std::set<std::string> seen;
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    const size_t slash = line.find('/');
    if (slash == std::string::npos) continue;
    const std::string path = line.substr(slash);
    for (const char* marker : {"/site-packages/", "/dist-packages/"}) {
      const size_t at = path.find(marker);
      if (at == std::string::npos) continue;
      const std::string dir = path.substr(0, at + std::string(marker).size() - 1);
      if (seen.insert(dir).second) out.push_back(dir);
    }
  }
  return out;
}

}  // namespace

const DriverApi* LoadDriver(std::string* error) {
  static std::once_flag once;
  static DriverApi api;
  static std::string load_error;
  static bool ok = false;
  std::call_once(once, [] {
    void* lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) {
      const char* why = dlerror();
      load_error = std::string("libcuda.so.1 not found: no NVIDIA driver; this variant needs a CUDA GPU (") +
                   (why ? why : "dlopen failed") + ")";
      return;
    }
    std::string missing;
    XRT_CUDA_DRIVER_FUNCS(XRT_CUDA_LOAD)
#define XRT_CUDA_LOAD_OPTIONAL(f) api.f = reinterpret_cast<decltype(api.f)>(dlsym(lib, XRT_CUDA_STR(f)));
    XRT_CUDA_DRIVER_OPTIONAL_FUNCS(XRT_CUDA_LOAD_OPTIONAL)
#undef XRT_CUDA_LOAD_OPTIONAL
    if (!missing.empty()) {
      load_error = "libcuda.so.1 is too old for this plugin (missing " + missing +
                   "); CUDA 13 needs NVIDIA driver >= 580";
      return;  // the library stays loaded: unloading a driver is never worth the risk
    }
    ok = true;
  });
  if (!ok) {
    if (error) *error = load_error;
    return nullptr;
  }
  return &api;
}

namespace {

// dlopens `soname` from: the file in env `file_env`, the folders of $XRT_CUDA_LIB_PATH, the dynamic loader's own
// search (LD_LIBRARY_PATH, rpath, ld.so.cache), the nvidia/cu13/lib folder of the Python installation next to this
// plugin, and of any site-packages folder this process has mapped. nullptr with *error listing where it looked.
void* OpenCudaLibrary(const char* soname, const char* file_env, std::string* path, std::string* error) {
  std::vector<std::string> candidates;
  if (const char* file = std::getenv(file_env)) candidates.push_back(file);
  std::vector<std::string> dirs;
  AppendDirs(std::getenv("XRT_CUDA_LIB_PATH"), &dirs);
  for (const auto& d : dirs) candidates.push_back(d + "/" + soname);
  candidates.push_back(soname);  // the loader's own search: LD_LIBRARY_PATH, rpath, ld.so.cache
  const std::string here = PluginDir();
  if (!here.empty()) candidates.push_back(here + "/../nvidia/cu13/lib/" + soname);  // wheel layout
  for (const auto& sp : MappedSitePackages()) candidates.push_back(sp + "/nvidia/cu13/lib/" + soname);
  std::string tried;
  for (const auto& c : candidates) {
    if (void* lib = dlopen(c.c_str(), RTLD_NOW | RTLD_LOCAL)) {
      *path = c;
      return lib;
    }
    tried += "\n  " + c;
  }
  if (error) {
    *error = std::string(soname) + " not found (pip install nvidia-cublas, or set " + file_env +
             " to the file or XRT_CUDA_LIB_PATH to its folder); tried:" + tried;
  }
  return nullptr;
}

}  // namespace

const CublasLtApi* LoadCublasLt(std::string* error) {
  static std::mutex mu;
  static CublasLtApi api;
  static bool ok = false;
  std::lock_guard<std::mutex> lock(mu);  // retried on failure: a later Python import may map the wheel's folder
  if (ok) return &api;
  void* lib = OpenCudaLibrary(kCublasLtSoname, "XRT_CUBLASLT", &api.path, error);
  if (lib == nullptr) return nullptr;
  std::string missing;
  XRT_CUBLASLT_FUNCS(XRT_CUDA_LOAD)
  XRT_CUBLASLT_TUNING_FUNCS(XRT_CUDA_LOAD)
  if (!missing.empty()) {
    if (error) *error = api.path + " lacks " + missing + " (need cuBLASLt 13)";
    return nullptr;
  }
  ok = true;
  return &api;
}

const CublasApi* LoadCublas(std::string* error) {
  static std::mutex mu;
  static CublasApi api;
  static bool ok = false;
  std::lock_guard<std::mutex> lock(mu);  // retried on failure, like cuBLASLt
  if (ok) return &api;
  void* lib = OpenCudaLibrary(kCublasSoname, "XRT_CUBLAS", &api.path, error);
  if (lib == nullptr) return nullptr;
  std::string missing;
  XRT_CUBLAS_FUNCS(XRT_CUDA_LOAD)
  XRT_CUDA_LOAD(cublasGemmEx)
  if (!missing.empty()) {
    if (error) *error = api.path + " lacks " + missing + " (need cuBLAS 13: pip install nvidia-cublas)";
    return nullptr;
  }
  ok = true;
  return &api;
}

}  // namespace cuda_backend
}  // namespace xrt
