// c_api.cc - every extern "C" entry point of xrt.h. Each checks its pointers (INVALID_ARGUMENT), converts the
// internal Status to an owned xrt_status_t, and catches every exception: none crosses the C ABI.
#include <cstddef>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "backend_registry.h"
#include "bundle.h"
#include "dtype.h"
#include "session.h"
#include "status.h"
#include "xrt/xrt.h"

using xrt::core::Cat;
using xrt::core::Status;

struct xrt_bundle_s {
  std::shared_ptr<const xrt::core::Bundle> impl;
};
struct xrt_session_s {
  std::shared_ptr<xrt::core::Session> impl;
};
struct xrt_section_s {
  std::shared_ptr<const xrt::core::Bundle> bundle;  // keeps borrowed bytes alive
  xrt::format::SectionBytes bytes;
};
struct xrt_outputs_s {
  std::unique_ptr<xrt::core::Outputs> impl;
};
struct xrt_profile_s {
  std::string json;
};

namespace {

// Returned when a status cannot be allocated; xrt_status_free ignores it. The message fits the small-string
// buffer, so building this object allocates nothing.
xrt_status_s g_out_of_memory{XRT_STATUS_RESOURCE_EXHAUSTED, "out of memory"};

xrt_status_t Null(const char* function, const char* argument) {
  return Status(XRT_STATUS_INVALID_ARGUMENT, Cat(function, ": ", argument, " is NULL")).ToC();
}

// Called inside a catch block: turns the exception being handled into a status. Never throws.
xrt_status_t FromException(const char* function) noexcept {
  try {
    try {
      throw;
    } catch (const std::bad_alloc&) {
      return &g_out_of_memory;
    } catch (const std::exception& e) {
      return Status(XRT_STATUS_INTERNAL, Cat(function, ": unexpected exception: ", e.what())).ToC();
    } catch (...) {
      return Status(XRT_STATUS_INTERNAL, Cat(function, ": unexpected non-standard exception")).ToC();
    }
  } catch (...) {  // building the message failed
    return &g_out_of_memory;
  }
}


#define XRT_C_TRY try {
#define XRT_C_CATCH \
  }                 \
  catch (...) {     \
    return FromException(__func__); \
  }
#define XRT_CHECK_ARG(arg) \
  if ((arg) == nullptr) return Null(__func__, #arg)

// The options struct's declared size must cover the fields this build reads (callers with newer, larger
// structs are fine: their extra fields are ignored).
template <typename T>
xrt_status_t CheckStructSize(const T* options, const char* function, const char* initializer) {
  if (options != nullptr && options->struct_size < sizeof(T)) {
    return Status(XRT_STATUS_INVALID_ARGUMENT, Cat(function, ": options->struct_size is ", options->struct_size,
                                                   ", expected at least ", sizeof(T), ": fill the options with ",
                                                   initializer, "() first"))
        .ToC();
  }
  return nullptr;
}

constexpr size_t kMaxTrustedKeys = 65536;

// Reads the signature policy from bundle options. Callers built before the policy fields existed pass a
// struct_size that ends before them (at least the original 8 bytes): they get no policy.
xrt_status_t BundlePolicy(const xrt_bundle_open_options_t* options, const char* function,
                          xrt::format::VerifyOptions* out_policy) {
  *out_policy = {};
  if (options == nullptr) return nullptr;
  constexpr size_t kOriginalSize = offsetof(xrt_bundle_open_options_t, trusted_keys);
  if (options->struct_size < kOriginalSize) {
    return Status(XRT_STATUS_INVALID_ARGUMENT,
                  Cat(function, ": options->struct_size is ", options->struct_size, ", expected at least ",
                      kOriginalSize, ": fill the options with xrt_bundle_open_options_initialize() first"))
        .ToC();
  }
  if (options->struct_size < offsetof(xrt_bundle_open_options_t, require_signature) + sizeof(uint32_t)) {
    return nullptr;
  }
  if (options->trusted_key_count > 0 && options->trusted_keys == nullptr) {
    return Status(XRT_STATUS_INVALID_ARGUMENT, Cat(function, ": options->trusted_keys is NULL but trusted_key_count is ",
                                                   options->trusted_key_count))
        .ToC();
  }
  if (options->trusted_key_count > kMaxTrustedKeys) {
    return Status(XRT_STATUS_INVALID_ARGUMENT, Cat(function, ": options->trusted_key_count is ",
                                                   options->trusted_key_count, ", above the limit of ",
                                                   kMaxTrustedKeys))
        .ToC();
  }
  out_policy->trusted_keys = options->trusted_keys;
  out_policy->trusted_key_count = options->trusted_key_count;
  out_policy->require_signature = options->require_signature != 0;
  return nullptr;
}

xrt_status_t WrapBundle(xrt::core::Result<std::shared_ptr<const xrt::core::Bundle>> opened,
                        xrt_bundle_t** out_bundle) {
  if (!opened.ok()) return opened.status().ToC();
  auto handle = std::make_unique<xrt_bundle_s>();
  handle->impl = std::move(opened).value();
  *out_bundle = handle.release();
  return nullptr;
}

xrt_status_t IoInfo(const std::vector<xrt::core::TensorSpec>& specs, size_t index, xrt_io_info_t* out_info,
                    const char* function) {
  if (index >= specs.size()) {
    return Status(XRT_STATUS_INVALID_ARGUMENT,
                  Cat(function, ": index ", index, " is out of range (", specs.size(), " entries)"))
        .ToC();
  }
  const auto& t = specs[index];
  out_info->name = t.name.c_str();
  out_info->dtype = t.dtype;
  out_info->rank = static_cast<uint32_t>(t.shape.size());
  out_info->shape = t.shape.data();
  out_info->dim_names = t.dim_name_ptrs.data();
  return nullptr;
}

}  // namespace

extern "C" {

// ---- Status ----

XRT_API xrt_status_code_t xrt_status_code(xrt_status_t status) {
  return status == nullptr ? XRT_STATUS_OK : status->code;
}

XRT_API const char* xrt_status_message(xrt_status_t status) {
  return status == nullptr ? "" : status->message.c_str();
}

XRT_API void xrt_status_free(xrt_status_t status) {
  if (status != &g_out_of_memory) delete status;
}

XRT_API xrt_status_t xrt_status_make(xrt_status_code_t code, const char* message) {
  if (code == XRT_STATUS_OK) return nullptr;
  try {
    return new xrt_status_s{code, message ? message : ""};
  } catch (...) {
    return &g_out_of_memory;
  }
}

XRT_API const char* xrt_status_code_string(xrt_status_code_t code) {
  switch (code) {
    case XRT_STATUS_OK: return "OK";
    case XRT_STATUS_INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case XRT_STATUS_NOT_FOUND: return "NOT_FOUND";
    case XRT_STATUS_FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case XRT_STATUS_RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case XRT_STATUS_UNAVAILABLE: return "UNAVAILABLE";
    case XRT_STATUS_INCOMPATIBLE: return "INCOMPATIBLE";
    case XRT_STATUS_DATA_CORRUPT: return "DATA_CORRUPT";
    case XRT_STATUS_UNIMPLEMENTED: return "UNIMPLEMENTED";
    case XRT_STATUS_INTERNAL: return "INTERNAL";
    case XRT_STATUS_IO: return "IO";
    case XRT_STATUS_ALREADY_EXISTS: return "ALREADY_EXISTS";
    case XRT_STATUS_PERMISSION_DENIED: return "PERMISSION_DENIED";
  }
  return "UNKNOWN";
}

// ---- Element types ----

XRT_API size_t xrt_dtype_size(xrt_dtype_t dtype) { return xrt::core::DtypeSize(dtype); }
XRT_API const char* xrt_dtype_name(xrt_dtype_t dtype) { return xrt::core::DtypeName(dtype); }
XRT_API xrt_dtype_t xrt_dtype_from_name(const char* name) {
  return name == nullptr ? XRT_DTYPE_INVALID : xrt::core::DtypeFromName(name);
}

// ---- Bundles ----

XRT_API void xrt_bundle_open_options_initialize(xrt_bundle_open_options_t* out_options) {
  if (out_options == nullptr) return;
  std::memset(out_options, 0, sizeof(*out_options));
  out_options->struct_size = sizeof(*out_options);
}

XRT_API xrt_status_t xrt_bundle_open_file(const char* path, const xrt_bundle_open_options_t* options,
                                          xrt_bundle_t** out_bundle) {
  XRT_C_TRY
  XRT_CHECK_ARG(path);
  XRT_CHECK_ARG(out_bundle);
  *out_bundle = nullptr;
  xrt::format::VerifyOptions policy;
  if (xrt_status_t s = BundlePolicy(options, __func__, &policy)) return s;
  return WrapBundle(xrt::core::Bundle::OpenFile(path, policy), out_bundle);
  XRT_C_CATCH
}

XRT_API xrt_status_t xrt_bundle_open_memory(const void* data, size_t size, const xrt_bundle_open_options_t* options,
                                            xrt_bundle_t** out_bundle) {
  XRT_C_TRY
  XRT_CHECK_ARG(out_bundle);
  *out_bundle = nullptr;
  if (data == nullptr && size != 0) return Null(__func__, "data");
  xrt::format::VerifyOptions policy;
  if (xrt_status_t s = BundlePolicy(options, __func__, &policy)) return s;
  return WrapBundle(xrt::core::Bundle::OpenMemory(data, size, policy), out_bundle);
  XRT_C_CATCH
}

XRT_API void xrt_bundle_release(xrt_bundle_t* bundle) { delete bundle; }  // destructors never throw

XRT_API const char* xrt_bundle_manifest(const xrt_bundle_t* bundle, size_t* out_size) {
  if (bundle == nullptr) {
    if (out_size) *out_size = 0;
    return nullptr;
  }
  const std::string& text = bundle->impl->manifest_text();
  if (out_size) *out_size = text.size();
  return text.c_str();
}

XRT_API void xrt_bundle_format_version(const xrt_bundle_t* bundle, uint32_t* out_major, uint32_t* out_minor) {
  const auto* header = bundle ? &bundle->impl->reader().header() : nullptr;
  if (out_major) *out_major = header ? header->major_version : 0;
  if (out_minor) *out_minor = header ? header->minor_version : 0;
}

XRT_API int xrt_bundle_signer(const xrt_bundle_t* bundle, uint8_t* out_public_key) {
  if (bundle == nullptr) return 0;
  const auto& signer = bundle->impl->reader().signer();
  if (!signer) return 0;
  if (out_public_key) std::memcpy(out_public_key, signer->data(), signer->size());
  return 1;
}

XRT_API xrt_status_t xrt_bundle_read_section(const xrt_bundle_t* bundle, const char* name,
                                             xrt_section_t** out_section) {
  XRT_C_TRY
  if (out_section) *out_section = nullptr;
  if (bundle == nullptr || name == nullptr || out_section == nullptr) {
    return xrt_status_make(XRT_STATUS_INVALID_ARGUMENT, "xrt_bundle_read_section: bundle, name and out_section are "
                                                        "required");
  }
  const auto& reader = bundle->impl->reader();
  const auto index = reader.Find(name);
  if (!index) {
    return xrt_status_make(XRT_STATUS_NOT_FOUND,
                           (std::string("the bundle has no section '") + name + "'").c_str());
  }
  auto bytes = reader.GetSection(*index);
  if (!bytes.ok()) return xrt::core::FromFormatError(bytes.error()).ToC();
  auto* section = new (std::nothrow) xrt_section_s{bundle->impl, std::move(bytes).value()};
  if (section == nullptr) return xrt_status_make(XRT_STATUS_RESOURCE_EXHAUSTED, "cannot allocate a section");
  *out_section = section;
  return nullptr;
  XRT_C_CATCH
}

XRT_API const void* xrt_section_data(const xrt_section_t* section) {
  return section ? section->bytes.data() : nullptr;
}

XRT_API uint64_t xrt_section_size(const xrt_section_t* section) { return section ? section->bytes.size() : 0; }

XRT_API void xrt_section_release(xrt_section_t* section) { delete section; }

// ---- Backends ----

XRT_API xrt_status_t xrt_backend_register(const xrt_backend_vtable_t* vtable) {
  XRT_C_TRY
  XRT_CHECK_ARG(vtable);
  return xrt::core::BackendRegistry::Get().Register(vtable, "registered by the host").ToC();
  XRT_C_CATCH
}

XRT_API xrt_status_t xrt_backend_list(char* buffer, size_t capacity, size_t* out_length) {
  XRT_C_TRY
  if (buffer == nullptr && capacity != 0) return Null(__func__, "buffer");
  std::string joined;
  for (const auto& name : xrt::core::BackendRegistry::Get().List()) joined += (joined.empty() ? "" : ",") + name;
  if (out_length) *out_length = joined.size();
  if (capacity > 0) {
    const size_t n = std::min(joined.size(), capacity - 1);
    std::memcpy(buffer, joined.data(), n);
    buffer[n] = '\0';
  }
  return nullptr;
  XRT_C_CATCH
}

// ---- Sessions ----

XRT_API void xrt_session_options_initialize(xrt_session_options_t* out_options) {
  if (out_options == nullptr) return;
  std::memset(out_options, 0, sizeof(*out_options));
  out_options->struct_size = sizeof(*out_options);
}

XRT_API xrt_status_t xrt_session_create(xrt_bundle_t* bundle, const xrt_session_options_t* options,
                                        xrt_session_t** out_session) {
  XRT_C_TRY
  XRT_CHECK_ARG(bundle);
  XRT_CHECK_ARG(out_session);
  *out_session = nullptr;
  constexpr size_t kOriginalSize = offsetof(xrt_session_options_t, fallback);  // fields before 0.2
  if (options != nullptr && options->struct_size < kOriginalSize) {
    return Status(XRT_STATUS_INVALID_ARGUMENT,
                  Cat(__func__, ": options->struct_size is ", options->struct_size, ", expected at least ",
                      kOriginalSize, ": fill the options with xrt_session_options_initialize() first"))
        .ToC();
  }
  xrt::core::SessionOptions opts;
  if (options != nullptr) {
    if (options->device) opts.device = options->device;
    if (options->engine) opts.engine = options->engine;
    if (options->variant) opts.variant = options->variant;
    if (options->struct_size >= offsetof(xrt_session_options_t, cache_dir) + sizeof(const char*)) {
      if (options->fallback) {
        opts.fallback_given = true;
        std::string list = options->fallback;
        size_t start = 0;
        while (start <= list.size()) {
          const size_t comma = std::min(list.find(',', start), list.size());
          std::string item = list.substr(start, comma - start);
          if (!item.empty()) opts.fallback.push_back(item);
          start = comma + 1;
        }
      }
      if (options->cache_dir) opts.cache_dir = options->cache_dir;
    }
    if (options->struct_size >= offsetof(xrt_session_options_t, profile) + sizeof(uint32_t)) {
      opts.profile = options->profile != 0;
    }
  }
  auto created = xrt::core::Session::Create(bundle->impl, opts);
  if (!created.ok()) return created.status().ToC();
  auto handle = std::make_unique<xrt_session_s>();
  handle->impl = std::move(created).value();
  *out_session = handle.release();
  return nullptr;
  XRT_C_CATCH
}

XRT_API void xrt_session_release(xrt_session_t* session) { delete session; }  // destructors never throw

XRT_API const char* xrt_session_describe(const xrt_session_t* session) {
  return session == nullptr ? "" : session->impl->describe().c_str();
}

XRT_API xrt_status_t xrt_session_profile(const xrt_session_t* session, xrt_profile_t** out_profile) {
  XRT_C_TRY
  XRT_CHECK_ARG(session);
  XRT_CHECK_ARG(out_profile);
  *out_profile = nullptr;
  auto json = session->impl->Profile();
  if (!json.ok()) return json.status().ToC();
  *out_profile = new xrt_profile_s{std::move(json).value()};
  return nullptr;
  XRT_C_CATCH
}

XRT_API const char* xrt_profile_json(const xrt_profile_t* profile, size_t* out_size) {
  if (out_size != nullptr) *out_size = profile == nullptr ? 0 : profile->json.size();
  return profile == nullptr ? "" : profile->json.c_str();
}

XRT_API void xrt_profile_release(xrt_profile_t* profile) { delete profile; }

XRT_API size_t xrt_session_input_count(const xrt_session_t* session) {
  return session == nullptr ? 0 : session->impl->model().inputs.size();
}

XRT_API size_t xrt_session_output_count(const xrt_session_t* session) {
  return session == nullptr ? 0 : session->impl->model().outputs.size();
}

XRT_API xrt_status_t xrt_session_input_info(const xrt_session_t* session, size_t index, xrt_io_info_t* out_info) {
  XRT_C_TRY
  XRT_CHECK_ARG(session);
  XRT_CHECK_ARG(out_info);
  return IoInfo(session->impl->model().inputs, index, out_info, __func__);
  XRT_C_CATCH
}

XRT_API xrt_status_t xrt_session_output_info(const xrt_session_t* session, size_t index, xrt_io_info_t* out_info) {
  XRT_C_TRY
  XRT_CHECK_ARG(session);
  XRT_CHECK_ARG(out_info);
  return IoInfo(session->impl->model().outputs, index, out_info, __func__);
  XRT_C_CATCH
}

XRT_API xrt_status_t xrt_session_run(xrt_session_t* session, const char* const* names,
                                     const xrt_tensor_view_t* inputs, size_t input_count,
                                     xrt_outputs_t** out_outputs) {
  XRT_C_TRY
  XRT_CHECK_ARG(session);
  XRT_CHECK_ARG(out_outputs);
  *out_outputs = nullptr;
  if (inputs == nullptr && input_count != 0) return Null(__func__, "inputs");
  auto ran = session->impl->Run(names, inputs, input_count);
  if (!ran.ok()) return ran.status().ToC();
  auto handle = std::make_unique<xrt_outputs_s>();
  handle->impl = std::move(ran).value();
  *out_outputs = handle.release();
  return nullptr;
  XRT_C_CATCH
}

XRT_API void xrt_run_options_initialize(xrt_run_options_t* out_options) {
  if (out_options == nullptr) return;
  std::memset(out_options, 0, sizeof(*out_options));
  out_options->struct_size = sizeof(*out_options);
}

XRT_API xrt_status_t xrt_session_run_placed(xrt_session_t* session, const xrt_run_options_t* options,
                                            const char* const* names, const xrt_placed_view_t* inputs,
                                            size_t input_count, xrt_outputs_t** out_outputs) {
  XRT_C_TRY
  XRT_CHECK_ARG(session);
  XRT_CHECK_ARG(out_outputs);
  *out_outputs = nullptr;
  if (inputs == nullptr && input_count != 0) return Null(__func__, "inputs");
  // Every field of the first layout is read: a smaller struct is a caller that skipped the initializer. A larger
  // one is a newer caller; its extra fields are ignored.
  if (xrt_status_t s = CheckStructSize(options, __func__, "xrt_run_options_initialize")) return s;
  xrt_run_options_t run{};
  xrt_run_options_initialize(&run);
  if (options != nullptr) {
    run.outputs_on_device = options->outputs_on_device;
    run.stream = options->stream;
  }
  // Placed views: read with the stride the caller was built with (its struct_size), so newer callers with larger
  // views work too.
  std::vector<xrt_tensor_view_t> views(input_count);
  std::vector<xrt_placement_t> placements(input_count);
  const uint32_t stride = input_count > 0 ? inputs[0].struct_size : 0;
  for (size_t i = 0; i < input_count; ++i) {
    const auto* v = reinterpret_cast<const xrt_placed_view_t*>(reinterpret_cast<const char*>(inputs) +
                                                               static_cast<size_t>(stride) * i);
    if (v->struct_size < sizeof(xrt_placed_view_t) || v->struct_size != stride) {
      return Status(XRT_STATUS_INVALID_ARGUMENT,
                    Cat(__func__, ": inputs[", i, "].struct_size is ", v->struct_size, ", expected ",
                        i == 0 ? Cat("at least ", sizeof(xrt_placed_view_t)) : Cat(stride, " (as inputs[0])"),
                        ": set struct_size = sizeof(xrt_placed_view_t) in every element"))
          .ToC();
    }
    views[i] = v->view;
    placements[i] = v->placement;
  }
  auto ran = session->impl->RunPlaced(run, names, views.data(), placements.data(), input_count);
  if (!ran.ok()) return ran.status().ToC();
  auto handle = std::make_unique<xrt_outputs_s>();
  handle->impl = std::move(ran).value();
  *out_outputs = handle.release();
  return nullptr;
  XRT_C_CATCH
}

XRT_API size_t xrt_outputs_count(const xrt_outputs_t* outputs) {
  return outputs == nullptr ? 0 : outputs->impl->count();
}

XRT_API xrt_status_t xrt_outputs_get(const xrt_outputs_t* outputs, size_t index, xrt_tensor_view_t* out_view,
                                     const char** out_name) {
  XRT_C_TRY
  XRT_CHECK_ARG(outputs);
  XRT_CHECK_ARG(out_view);
  if (index >= outputs->impl->count()) {
    return Status(XRT_STATUS_INVALID_ARGUMENT,
                  Cat(__func__, ": index ", index, " is out of range (", outputs->impl->count(), " outputs)"))
        .ToC();
  }
  const xrt_placement_t& p = outputs->impl->placement(index);
  if (p.kind != XRT_MEMORY_HOST) {
    return Status(XRT_STATUS_FAILED_PRECONDITION,
                  Cat(__func__, ": output ", index, " (\"", outputs->impl->name(index), "\") is in device memory ",
                      "(cuda:", p.device_id, "), left there by outputs_on_device: read it with "
                      "xrt_outputs_get_placed()"))
        .ToC();
  }
  const xrt_backend_output_t& o = outputs->impl->at(index);
  out_view->dtype = o.dtype;
  out_view->rank = o.rank;
  out_view->shape = o.shape;
  out_view->data = o.data;
  out_view->byte_size = o.byte_size;
  if (out_name) *out_name = outputs->impl->name(index);
  return nullptr;
  XRT_C_CATCH
}

XRT_API xrt_status_t xrt_outputs_get_placed(const xrt_outputs_t* outputs, size_t index, xrt_placed_view_t* out_view,
                                            const char** out_name) {
  XRT_C_TRY
  XRT_CHECK_ARG(outputs);
  XRT_CHECK_ARG(out_view);
  if (out_view->struct_size < sizeof(xrt_placed_view_t)) {
    return Status(XRT_STATUS_INVALID_ARGUMENT,
                  Cat(__func__, ": out_view->struct_size is ", out_view->struct_size, ", expected at least ",
                      sizeof(xrt_placed_view_t), ": set it to sizeof(xrt_placed_view_t)"))
        .ToC();
  }
  if (index >= outputs->impl->count()) {
    return Status(XRT_STATUS_INVALID_ARGUMENT,
                  Cat(__func__, ": index ", index, " is out of range (", outputs->impl->count(), " outputs)"))
        .ToC();
  }
  const xrt_backend_output_t& o = outputs->impl->at(index);
  out_view->reserved = 0;
  out_view->placement = outputs->impl->placement(index);
  out_view->view.dtype = o.dtype;
  out_view->view.rank = o.rank;
  out_view->view.shape = o.shape;
  out_view->view.data = o.data;
  out_view->view.byte_size = o.byte_size;
  if (out_name) *out_name = outputs->impl->name(index);
  return nullptr;
  XRT_C_CATCH
}

XRT_API void xrt_outputs_release(xrt_outputs_t* outputs) { delete outputs; }  // destructors never throw

XRT_API const char* xrt_version(void) { return XRT_VERSION_STRING; }  // from pyproject.toml, through CMake

}  // extern "C"
