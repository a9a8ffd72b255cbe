// xpuruntime._core: the Python binding of the C API (xrt.h), with nanobind.
//
// nanobind over pybind11: its ndarray type hands numpy buffers to C++ without a copy (and back, with an owner),
// its call overhead is a fraction of pybind11's (we budget ~10 us per run() for the whole runtime), and modules
// are several times smaller.
//
// Contracts
// - Every non-OK xrt_status_t is turned into a Python exception in one place (RaiseStatus), through the factory
//   that xpuruntime/_errors.py installs, so the typed exception carries the C status code and message.
// - Session.run releases the GIL while the runtime runs. A backend written in Python (ONNX Runtime's, see
//   xpuruntime/_ort_backend.py) re-acquires it inside its callbacks.
// - Input arrays are borrowed for the duration of run(); output arrays alias runtime memory and pin it (each
//   array's capsule holds a reference to the xrt_outputs_t they came from).
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "xrt/xrt.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace {

nb::object& ErrorFactory() {
  static nb::object* factory = new nb::object();  // leaked on purpose: must outlive interpreter teardown order
  return *factory;
}

// Consumes `status` (non-NULL) and raises the matching Python exception.
[[noreturn]] void RaiseStatus(xrt_status_t status) {
  const int code = static_cast<int>(xrt_status_code(status));
  std::string message = xrt_status_message(status);
  xrt_status_free(status);
  if (ErrorFactory().is_valid()) {
    nb::object exc = ErrorFactory()(code, message);
    PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(exc.ptr())), exc.ptr());
    throw nb::python_error();
  }
  throw std::runtime_error(std::string(xrt_status_code_string(static_cast<xrt_status_code_t>(code))) + ": " +
                           message);
}

inline void Check(xrt_status_t status) {
  if (status) RaiseStatus(status);
}

// dlpack dtype <-> xrt dtype.
xrt_dtype_t FromDlpack(nb::dlpack::dtype dt) {
  using nb::dlpack::dtype_code;
  const auto code = static_cast<dtype_code>(dt.code);
  if (dt.lanes != 1) return XRT_DTYPE_INVALID;
  switch (code) {
    case dtype_code::Float:
      return dt.bits == 32 ? XRT_DTYPE_FLOAT32 : dt.bits == 16 ? XRT_DTYPE_FLOAT16 : dt.bits == 64 ? XRT_DTYPE_FLOAT64
                                                                                                : XRT_DTYPE_INVALID;
    case dtype_code::Bfloat:
      return dt.bits == 16 ? XRT_DTYPE_BFLOAT16 : XRT_DTYPE_INVALID;
    case dtype_code::Int:
      return dt.bits == 8 ? XRT_DTYPE_INT8 : dt.bits == 16 ? XRT_DTYPE_INT16 : dt.bits == 32 ? XRT_DTYPE_INT32
             : dt.bits == 64                               ? XRT_DTYPE_INT64
                                                           : XRT_DTYPE_INVALID;
    case dtype_code::UInt:
      return dt.bits == 8 ? XRT_DTYPE_UINT8 : dt.bits == 16 ? XRT_DTYPE_UINT16 : dt.bits == 32 ? XRT_DTYPE_UINT32
             : dt.bits == 64                                ? XRT_DTYPE_UINT64
                                                            : XRT_DTYPE_INVALID;
    case dtype_code::Bool:
      return dt.bits == 8 ? XRT_DTYPE_BOOL : XRT_DTYPE_INVALID;
    default:
      return XRT_DTYPE_INVALID;
  }
}

nb::dlpack::dtype ToDlpack(xrt_dtype_t dtype) {
  using nb::dlpack::dtype_code;
  auto make = [](dtype_code code, uint8_t bits) {
    nb::dlpack::dtype d;
    d.code = static_cast<uint8_t>(code);
    d.bits = bits;
    d.lanes = 1;
    return d;
  };
  switch (dtype) {
    case XRT_DTYPE_FLOAT32: return make(dtype_code::Float, 32);
    case XRT_DTYPE_FLOAT16: return make(dtype_code::Float, 16);
    case XRT_DTYPE_BFLOAT16: return make(dtype_code::Bfloat, 16);
    case XRT_DTYPE_FLOAT64: return make(dtype_code::Float, 64);
    case XRT_DTYPE_INT8: return make(dtype_code::Int, 8);
    case XRT_DTYPE_UINT8: return make(dtype_code::UInt, 8);
    case XRT_DTYPE_INT16: return make(dtype_code::Int, 16);
    case XRT_DTYPE_UINT16: return make(dtype_code::UInt, 16);
    case XRT_DTYPE_INT32: return make(dtype_code::Int, 32);
    case XRT_DTYPE_UINT32: return make(dtype_code::UInt, 32);
    case XRT_DTYPE_INT64: return make(dtype_code::Int, 64);
    case XRT_DTYPE_UINT64: return make(dtype_code::UInt, 64);
    case XRT_DTYPE_BOOL: return make(dtype_code::Bool, 8);
    default: return make(dtype_code::UInt, 8);
  }
}

using InArray = nb::ndarray<nb::ro, nb::c_contig, nb::device::cpu>;
// Session.run's inputs: any object nanobind imports without a copy (numpy and the buffer protocol, or DLPack:
// __dlpack__ objects and DLPack capsules), on any device; the placement is checked per input.
using PlacedInArray = nb::ndarray<nb::ro, nb::c_contig>;
// Outputs left on a device: the array-API framework, so nanobind returns its own nb_ndarray object with
// __dlpack__ and __dlpack_device__ (torch.from_dlpack, cupy.from_dlpack, ...). Without a framework it returns a bare
// DLPack capsule, which those functions no longer accept (seen on the H200 with torch 2.11).
using DeviceOutArray = nb::ndarray<nb::array_api>;  // writable: each run allocates its own device outputs

// Where a DLPack tensor lives, as the C API says it; false (with `what` set) for devices the runtime cannot take.
bool PlacementOf(int32_t device_type, int32_t device_id, xrt_placement_t* out, std::string* what) {
  if (device_type == nb::device::cpu::value || device_type == nb::device::cuda_host::value) {
    *out = {XRT_MEMORY_HOST, 0};  // pinned host memory is host memory
    return true;
  }
  if (device_type == nb::device::cuda::value || device_type == nb::device::cuda_managed::value) {
    *out = {XRT_MEMORY_CUDA, device_id};
    return true;
  }
  *what = "DLPack device type " + std::to_string(device_type) + " (device " + std::to_string(device_id) +
          "); the runtime takes cpu and cuda tensors";
  return false;
}
using OutArray = nb::ndarray<nb::numpy>;
using RoOutArray = nb::ndarray<nb::numpy, nb::ro>;

// ---- Bundle / Session wrappers ---------------------------------------------------------------------------------------

struct BundleDeleter {
  void operator()(xrt_bundle_t* b) const { xrt_bundle_release(b); }
};

class Bundle {
 public:
  // trusted_keys: raw 32-byte Ed25519 public keys (the Python loader reads .pub files); see xrt_bundle_open_options_t.
  Bundle(const std::string& path, const std::vector<nb::bytes>& trusted_keys, bool require_signature) {
    std::vector<uint8_t> keys;
    keys.reserve(trusted_keys.size() * 32);
    for (const nb::bytes& k : trusted_keys) {
      if (k.size() != 32) {
        RaiseStatus(xrt_status_make(XRT_STATUS_INVALID_ARGUMENT,
                                    ("a trusted key must be a 32-byte raw Ed25519 public key, got " +
                                     std::to_string(k.size()) + " bytes").c_str()));
      }
      const auto* p = static_cast<const uint8_t*>(static_cast<const void*>(k.c_str()));
      keys.insert(keys.end(), p, p + 32);
    }
    xrt_bundle_open_options_t options;
    xrt_bundle_open_options_initialize(&options);
    options.trusted_keys = keys.empty() ? nullptr : keys.data();
    options.trusted_key_count = trusted_keys.size();
    options.require_signature = require_signature ? 1u : 0u;
    xrt_bundle_t* raw = nullptr;
    xrt_status_t status;
    {
      nb::gil_scoped_release release;  // opening verifies every digest: can take a while for large weights
      status = xrt_bundle_open_file(path.c_str(), &options, &raw);
    }
    Check(status);
    bundle_.reset(raw);
  }
  // The signer's raw public key, or None for an unsigned bundle.
  nb::object signer() const {
    uint8_t key[32];
    if (!xrt_bundle_signer(bundle_.get(), key)) return nb::none();
    return nb::bytes(reinterpret_cast<const char*>(key), sizeof(key));
  }
  std::string manifest() const {
    size_t size = 0;
    const char* text = xrt_bundle_manifest(bundle_.get(), &size);
    return std::string(text, size);
  }
  // A section's bytes (decompressed), e.g. "decisions.json". NotFound when absent.
  nb::bytes section(const std::string& name) const {
    xrt_section_t* raw = nullptr;
    Check(xrt_bundle_read_section(bundle_.get(), name.c_str(), &raw));
    std::unique_ptr<xrt_section_t, void (*)(xrt_section_t*)> section(raw, xrt_section_release);
    return nb::bytes(static_cast<const char*>(xrt_section_data(raw)), xrt_section_size(raw));
  }
  std::pair<uint32_t, uint32_t> version() const {
    uint32_t major = 0, minor = 0;
    xrt_bundle_format_version(bundle_.get(), &major, &minor);
    return {major, minor};
  }
  xrt_bundle_t* get() const { return bundle_.get(); }

 private:
  std::unique_ptr<xrt_bundle_t, BundleDeleter> bundle_;
};

// Same-thread pass-through for backends written in Python. While Session::run waits in xrt_session_run, a Python
// backend's execute() runs on the same thread (the core calls backends synchronously): it reuses the caller's own
// numpy input objects instead of wrapping views again, and Session::run hands back the backend's numpy outputs
// instead of wrapping them again. Matching is by data pointer, dtype and shape, so a match is the same tensor.
// Saves ~5 us per tensor (nanobind's ndarray export), which is most of the runtime's overhead on tiny models.
struct PyTensorRef {
  const void* data;
  xrt_dtype_t dtype;
  uint32_t rank;
  const int64_t* shape;
  PyObject* object;  // borrowed: the owner keeps it alive for the match's lifetime
};
struct PyRunContext {
  std::vector<PyTensorRef> inputs;   // the caller's arrays (alive: Session::run holds them)
  std::vector<PyTensorRef> outputs;  // the backend's arrays (alive: the xrt outputs own a reference)
  std::vector<int64_t> output_shapes;
};
thread_local PyRunContext* t_run_context = nullptr;

PyObject* FindTensor(const std::vector<PyTensorRef>& refs, const void* data, xrt_dtype_t dtype, uint32_t rank,
                     const int64_t* shape) {
  for (const PyTensorRef& r : refs) {
    if (r.data == data && r.dtype == dtype && r.rank == rank &&
        std::equal(shape, shape + rank, r.shape)) {
      return r.object;
    }
  }
  return nullptr;
}

// Shared by every output array of one run: releases the outputs when the last array dies.
struct OutputsHolder {
  xrt_outputs_t* outputs;
  ~OutputsHolder() { xrt_outputs_release(outputs); }
};

// ---- String tensors (XRT_DTYPE_STRING) ----------------------------------------------------------------------------
// numpy arrays of str (dtype kind 'U') or of Python objects (str or bytes elements) cross the C API as arrays of
// xrt_string_t pointing at UTF-8 bytes; they come back as numpy object arrays of str, as ONNX Runtime returns them.

bool IsStringArray(nb::handle item) {
  if (!nb::hasattr(item, "dtype") || !nb::hasattr(item, "shape") || !nb::hasattr(item, "ravel")) return false;
  nb::object kind = item.attr("dtype").attr("kind");
  if (!nb::isinstance<nb::str>(kind)) return false;
  const std::string k = nb::cast<std::string>(kind);
  return k == "U" || k == "O" || k == "S";
}

// The UTF-8 bytes of a str or bytes element (borrowed from `element`, which the caller keeps alive).
bool ElementBytes(nb::handle element, xrt_string_t* out) {
  if (PyUnicode_Check(element.ptr())) {
    Py_ssize_t size = 0;
    const char* data = PyUnicode_AsUTF8AndSize(element.ptr(), &size);
    if (!data) {
      PyErr_Clear();
      return false;  // lone surrogates: not encodable as UTF-8
    }
    *out = {data, static_cast<uint64_t>(size)};
    return true;
  }
  if (PyBytes_Check(element.ptr())) {
    *out = {PyBytes_AS_STRING(element.ptr()), static_cast<uint64_t>(PyBytes_GET_SIZE(element.ptr()))};
    return true;
  }
  return false;
}

// A string tensor's elements as xrt_string_t, borrowing from `keep` (the flattened Python list). Raises
// INVALID_ARGUMENT naming `what` when an element is neither str nor bytes.
void StringElements(nb::handle array, const std::string& what, std::vector<int64_t>* shape, nb::list* keep,
                    std::vector<xrt_string_t>* items) {
  nb::tuple dims = nb::cast<nb::tuple>(array.attr("shape"));
  for (nb::handle d : dims) shape->push_back(nb::cast<int64_t>(d));
  *keep = nb::cast<nb::list>(array.attr("ravel")().attr("tolist")());
  items->resize(nb::len(*keep));
  size_t i = 0;
  for (nb::handle element : *keep) {
    if (!ElementBytes(element, &(*items)[i])) {
      const std::string type_name = nb::cast<std::string>(
          nb::handle(reinterpret_cast<PyObject*>(Py_TYPE(element.ptr()))).attr("__name__"));
      const std::string message =
          what + ": element " + std::to_string(i) + " of a string tensor " +
          (PyUnicode_Check(element.ptr())
               ? std::string("is a str that cannot be encoded as UTF-8 (a lone surrogate)")
               : "is a " + type_name + ", not str or bytes (object arrays are taken as string tensors only; pass a "
                                       "numeric array for a numeric input)");
      Check(xrt_status_make(XRT_STATUS_INVALID_ARGUMENT, message.c_str()));
    }
    ++i;
  }
}

// A numpy object array of str from a string view; an element that is not UTF-8 raises `code` naming `what`
// (INVALID_ARGUMENT for a caller's input, INTERNAL for an engine's output).
nb::object StringsToNumpy(const xrt_string_t* items, uint32_t rank, const int64_t* shape, const std::string& what,
                          xrt_status_code_t code) {
  uint64_t n = 1;
  for (uint32_t d = 0; d < rank; ++d) n *= static_cast<uint64_t>(shape[d]);
  nb::list values;
  for (uint64_t i = 0; i < n; ++i) {
    PyObject* str = PyUnicode_DecodeUTF8(items[i].data ? items[i].data : "", static_cast<Py_ssize_t>(items[i].size),
                                         "strict");
    if (!str) {
      PyErr_Clear();
      Check(xrt_status_make(code, (what + ": string element " + std::to_string(i) + " is not valid UTF-8").c_str()));
    }
    values.append(nb::steal(str));
  }
  nb::module_ np = nb::module_::import_("numpy");
  nb::object flat = np.attr("empty")(n, "dtype"_a = np.attr("object_"));
  for (uint64_t i = 0; i < n; ++i) flat[nb::int_(i)] = values[i];
  nb::list dims;
  for (uint32_t d = 0; d < rank; ++d) dims.append(shape[d]);
  return flat.attr("reshape")(nb::tuple(dims));
}

// Owns a Python backend's string output while the core holds it: the encoded elements and the original array.
struct StringOutput {
  std::vector<std::string> bytes;
  std::vector<xrt_string_t> items;
  PyObject* original = nullptr;  // owned reference
};

void ReleaseStringOutput(void* owner) {
  nb::gil_scoped_acquire gil;
  auto* out = static_cast<StringOutput*>(owner);
  Py_XDECREF(out->original);
  delete out;
}

nb::tuple IoInfoToPython(const xrt_io_info_t& info) {
  nb::list shape;
  for (uint32_t d = 0; d < info.rank; ++d) {
    if (info.shape[d] >= 0) {
      shape.append(nb::int_(info.shape[d]));
    } else if (info.dim_names && info.dim_names[d]) {
      shape.append(nb::str(info.dim_names[d]));
    } else {
      shape.append(nb::none());
    }
  }
  return nb::make_tuple(nb::str(info.name), nb::str(xrt_dtype_name(info.dtype)), nb::tuple(shape));
}

class Session {
 public:
  // fallback: None = the bundle's chain; a list (maybe empty) = exactly these devices after `device`.
  Session(const Bundle& bundle, const std::string& device, const std::string& engine, const std::string& variant,
          const std::optional<std::vector<std::string>>& fallback, const std::string& cache_dir) {
    std::string fallback_text;
    if (fallback) {
      for (const auto& d : *fallback) fallback_text += (fallback_text.empty() ? "" : ",") + d;
    }
    xrt_session_options_t options;
    xrt_session_options_initialize(&options);
    options.device = device.c_str();
    options.engine = engine.empty() ? nullptr : engine.c_str();
    options.variant = variant.empty() ? nullptr : variant.c_str();
    options.fallback = fallback ? fallback_text.c_str() : nullptr;
    options.cache_dir = cache_dir.empty() ? nullptr : cache_dir.c_str();
    xrt_session_t* raw = nullptr;
    // The GIL stays held: a Python backend's init runs here and would re-acquire it anyway, and engines that
    // compile in init are not something another Python thread should race with during load.
    Check(xrt_session_create(bundle.get(), &options, &raw));
    session_ = raw;
  }
  ~Session() { xrt_session_release(session_); }
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  std::string describe() const { return xrt_session_describe(session_); }

  nb::list inputs() const { return Infos(xrt_session_input_count(session_), xrt_session_input_info); }
  nb::list outputs() const { return Infos(xrt_session_output_count(session_), xrt_session_output_info); }

  // names[i] names arrays[i]. Returns the outputs in the session's output order: numpy arrays, except outputs left
  // on a device (outputs_on_device on a cuda session), which come back as DLPack-capable nb_ndarray objects that
  // own the device memory. stream: a CUstream as an integer (0: none, the legacy default stream). Runs that use
  // neither a device input, nor a stream, nor device outputs take xrt_session_run (the path every engine has).
  nb::list run(const std::vector<std::string>& names, nb::list array_objects, bool outputs_on_device = false,
               uintptr_t stream = 0) {
    std::vector<PlacedInArray> arrays;
    arrays.reserve(nb::len(array_objects));
    // String inputs (by position): their shapes, the flattened Python lists the elements borrow from, the items.
    struct StringInput {
      size_t index;
      std::vector<int64_t> shape;
      nb::list keep;
      std::vector<xrt_string_t> items;
    };
    std::vector<StringInput> strings;
    for (nb::handle item : array_objects) {
      PlacedInArray a;
      if (!nb::isinstance<nb::capsule>(item) && IsStringArray(item)) {
        StringInput si;
        si.index = arrays.size();
        StringElements(item, "input '" + (arrays.size() < names.size() ? names[arrays.size()] : std::string("?")) +
                                 "'", &si.shape, &si.keep, &si.items);
        strings.push_back(std::move(si));
        arrays.push_back(PlacedInArray());
        continue;
      }
      if (!nb::try_cast(item, a, /*convert=*/false)) {
        Check(xrt_status_make(XRT_STATUS_INVALID_ARGUMENT,
                              ("input '" + (arrays.size() < names.size() ? names[arrays.size()] : std::string("?")) +
                               "': expected a C-contiguous numpy array or DLPack tensor of a numeric or bool dtype, "
                               "got " +
                               nb::cast<std::string>(nb::str(nb::handle(reinterpret_cast<PyObject*>(Py_TYPE(item.ptr()))))))
                                  .c_str()));
      }
      arrays.push_back(std::move(a));
    }
    if (names.size() != arrays.size()) {
      Check(xrt_status_make(XRT_STATUS_INVALID_ARGUMENT, "run(): names and arrays differ in length"));
    }
    const size_t n = arrays.size();
    std::vector<const char*> name_ptrs(n);
    std::vector<xrt_tensor_view_t> views(n);
    std::vector<xrt_placement_t> placements(n, xrt_placement_t{XRT_MEMORY_HOST, 0});
    bool placed = outputs_on_device || stream != 0;
    std::vector<int64_t> shapes;
    size_t total_rank = 0;
    for (const auto& a : arrays) total_rank += a.is_valid() ? a.ndim() : 0;
    shapes.reserve(total_rank);
    size_t next_string = 0;
    for (size_t i = 0; i < n; ++i) {
      const PlacedInArray& a = arrays[i];
      name_ptrs[i] = names[i].c_str();
      if (next_string < strings.size() && strings[next_string].index == i) {
        StringInput& si = strings[next_string++];
        views[i].dtype = XRT_DTYPE_STRING;
        views[i].rank = static_cast<uint32_t>(si.shape.size());
        views[i].shape = si.shape.data();
        views[i].data = si.items.data();
        views[i].byte_size = static_cast<uint64_t>(si.items.size()) * sizeof(xrt_string_t);
        continue;
      }
      const xrt_dtype_t dtype = FromDlpack(a.dtype());
      if (dtype == XRT_DTYPE_INVALID) {
        Check(xrt_status_make(XRT_STATUS_INVALID_ARGUMENT,
                              ("input '" + names[i] + "': unsupported element type (use a numeric or bool array)")
                                  .c_str()));
      }
      const size_t start = shapes.size();
      for (size_t d = 0; d < a.ndim(); ++d) shapes.push_back(static_cast<int64_t>(a.shape(d)));
      views[i].dtype = dtype;
      views[i].rank = static_cast<uint32_t>(a.ndim());
      views[i].shape = shapes.data() + start;
      views[i].data = const_cast<void*>(a.data());
      views[i].byte_size = static_cast<uint64_t>(a.nbytes());
      std::string what;
      if (!PlacementOf(a.device_type(), a.device_id(), &placements[i], &what)) {
        Check(xrt_status_make(XRT_STATUS_INVALID_ARGUMENT, ("input '" + names[i] + "': " + what).c_str()));
      }
      placed = placed || placements[i].kind != XRT_MEMORY_HOST;
    }
    PyRunContext context;
    context.inputs.reserve(n);
    // Only numpy arrays pass through to a Python backend as themselves; other DLPack producers (torch, capsules)
    // are wrapped as numpy views there, as engines written in Python expect numpy.
    static PyTypeObject* const numpy_ndarray =
        reinterpret_cast<PyTypeObject*>(nb::object(nb::module_::import_("numpy").attr("ndarray")).release().ptr());
    for (size_t i = 0; i < n; ++i) {
      if (Py_TYPE(array_objects[i].ptr()) != numpy_ndarray && views[i].dtype != XRT_DTYPE_STRING) continue;
      context.inputs.push_back(
          {views[i].data, views[i].dtype, views[i].rank, views[i].shape, array_objects[i].ptr()});
    }
    struct ContextScope {  // restores the previous context (run() may nest through a Python backend)
      PyRunContext* saved;
      explicit ContextScope(PyRunContext* c) : saved(t_run_context) { t_run_context = c; }
      ~ContextScope() { t_run_context = saved; }
    } scope(&context);
    xrt_outputs_t* raw = nullptr;
    xrt_status_t status;
    {
      nb::gil_scoped_release release;
      // Never NULL names: NULL means "positional" in the C API, but Python inputs are always named (even none).
      static const char* const kNoNames[1] = {nullptr};
      if (!placed) {
        status = xrt_session_run(session_, n ? name_ptrs.data() : kNoNames, views.data(), n, &raw);
      } else {
        std::vector<xrt_placed_view_t> placed_views(n);
        for (size_t i = 0; i < n; ++i) {
          placed_views[i].struct_size = sizeof(xrt_placed_view_t);
          placed_views[i].placement = placements[i];
          placed_views[i].view = views[i];
        }
        xrt_run_options_t options;
        xrt_run_options_initialize(&options);
        options.outputs_on_device = outputs_on_device ? 1 : 0;
        options.stream = reinterpret_cast<void*>(stream);
        status = xrt_session_run_placed(session_, &options, n ? name_ptrs.data() : kNoNames, placed_views.data(), n,
                                        &raw);
      }
    }
    Check(status);
    // Outputs a Python backend produced go back as the very same numpy objects; the others alias runtime memory,
    // pinned by one capsule shared (through Python reference counting) by all of this run's arrays.
    std::unique_ptr<OutputsHolder> holder(new OutputsHolder{raw});
    nb::capsule owner;
    nb::list result;
    const size_t count = xrt_outputs_count(raw);
    for (size_t i = 0; i < count; ++i) {
      xrt_placed_view_t placed_view{};
      placed_view.struct_size = sizeof(placed_view);
      Check(xrt_outputs_get_placed(raw, i, &placed_view, nullptr));
      xrt_tensor_view_t view = placed_view.view;
      if (placed_view.placement.kind == XRT_MEMORY_CUDA) {  // stays on the device: a DLPack-capable nb_ndarray
        if (!owner.is_valid()) {
          owner = nb::capsule(holder.release(), [](void* p) noexcept { delete static_cast<OutputsHolder*>(p); });
        }
        size_t shape[XRT_MAX_RANK];
        for (uint32_t d = 0; d < view.rank; ++d) shape[d] = static_cast<size_t>(view.shape[d]);
        DeviceOutArray arr(view.data, view.rank, shape, owner, nullptr, ToDlpack(view.dtype),
                           nb::device::cuda::value, placed_view.placement.device_id);
        result.append(arr.cast());
        continue;
      }
      if (PyObject* same = FindTensor(context.outputs, view.data, view.dtype, view.rank, view.shape)) {
        result.append(nb::borrow(same));
        continue;
      }
      if (view.dtype == XRT_DTYPE_STRING) {  // copied out: Python strings own their bytes
        const char* name = nullptr;
        xrt_outputs_get(raw, i, &view, &name);
        result.append(StringsToNumpy(static_cast<const xrt_string_t*>(view.data), view.rank, view.shape,
                                     std::string("output '") + (name ? name : "?") + "'", XRT_STATUS_INTERNAL));
        continue;
      }
      if (!owner.is_valid()) {
        owner = nb::capsule(holder.release(), [](void* p) noexcept { delete static_cast<OutputsHolder*>(p); });
      }
      size_t shape[XRT_MAX_RANK];
      for (uint32_t d = 0; d < view.rank; ++d) shape[d] = static_cast<size_t>(view.shape[d]);
      OutArray arr(view.data, view.rank, shape, owner, nullptr, ToDlpack(view.dtype));
      result.append(arr.cast());
    }
    return result;  // a holder not moved into a capsule releases the outputs here (the result holds its arrays)
  }

 private:
  using InfoFn = xrt_status_t (*)(const xrt_session_t*, size_t, xrt_io_info_t*);
  nb::list Infos(size_t count, InfoFn fn) const {
    nb::list out;
    for (size_t i = 0; i < count; ++i) {
      xrt_io_info_t info;
      Check(fn(session_, i, &info));
      out.append(IoInfoToPython(info));
    }
    return out;
  }
  xrt_session_t* session_ = nullptr;
};

// ---- Backends written in Python ------------------------------------------------------------------------------------
// The vtable's `self` points at one of these. Registered backends live for the process (the core keeps the vtable).

struct PythonBackend {
  std::string name;
  std::string version;
  nb::object has_device;  // (device: str) -> bool
  nb::object init;        // (device: str, artifacts: dict[str, memoryview], options_json: str) -> handle
  nb::object execute;     // (handle, inputs: list[ndarray]) -> sequence[ndarray]
};

// "<what>: <ExceptionType>: <message>" -- the engine's own words, without the Python traceback (e.what() has it).
// An xpuruntime error (an xrt.Error: integer `code`, str `message`) keeps its status code, so a backend can say
// DATA_CORRUPT or INVALID_ARGUMENT; anything else is INTERNAL.
xrt_status_t StatusFromPythonError(nb::python_error& e, const char* what) {
  std::string message = std::string(what) + ": ";
  try {
    nb::handle value = e.value();
    if (nb::hasattr(value, "code") && nb::hasattr(value, "message") && nb::isinstance<nb::int_>(value.attr("code")) &&
        nb::isinstance<nb::str>(value.attr("message"))) {
      const int code = nb::cast<int>(value.attr("code"));
      if (code > 0 && code <= XRT_STATUS_PERMISSION_DENIED) {
        message += nb::cast<std::string>(value.attr("message"));
        return xrt_status_make(static_cast<xrt_status_code_t>(code), message.c_str());
      }
    }
  } catch (...) {
  }
  try {
    message += nb::cast<std::string>(nb::str(e.type().attr("__name__"))) + ": " +
               nb::cast<std::string>(nb::str(e.value()));
  } catch (...) {
    message += e.what();
  }
  return xrt_status_make(XRT_STATUS_INTERNAL, message.c_str());
}

const char* PyVersion(void* self) { return static_cast<PythonBackend*>(self)->version.c_str(); }

int PyHasDevice(void* self, const char* device) {
  nb::gil_scoped_acquire gil;
  try {
    return nb::cast<bool>(static_cast<PythonBackend*>(self)->has_device(device)) ? 1 : 0;
  } catch (nb::python_error& e) {
    e.discard_as_unraisable("xpuruntime backend has_device");
    return 0;
  } catch (...) {
    return 0;
  }
}

xrt_status_t PyInit(void* self, const char* device, const xrt_backend_artifact_t* artifacts, size_t artifact_count,
                    const char* options_json, void** out_handle) {
  nb::gil_scoped_acquire gil;
  auto* backend = static_cast<PythonBackend*>(self);
  try {
    nb::dict blobs;
    for (size_t i = 0; i < artifact_count; ++i) {
      // Borrowed bytes, valid until destroy(): a read-only memoryview, no copy.
      PyObject* mv = PyMemoryView_FromMemory(static_cast<char*>(const_cast<void*>(artifacts[i].data)),
                                             static_cast<Py_ssize_t>(artifacts[i].size), PyBUF_READ);
      if (!mv) throw nb::python_error();
      blobs[artifacts[i].role] = nb::steal(mv);
    }
    nb::object handle = backend->init(device, blobs, options_json ? options_json : "{}");
    *out_handle = handle.release().ptr();
    return nullptr;
  } catch (nb::python_error& e) {
    return StatusFromPythonError(e, ("backend " + backend->name + " failed to initialise").c_str());
  } catch (const std::exception& e) {
    return xrt_status_make(XRT_STATUS_INTERNAL, e.what());
  }
}

void ReleasePyObject(void* owner) {
  nb::gil_scoped_acquire gil;
  Py_XDECREF(static_cast<PyObject*>(owner));
}

xrt_status_t PyExecute(void* self, void* handle, const xrt_tensor_view_t* inputs, size_t input_count,
                       xrt_backend_output_t* outputs, size_t output_count) {
  nb::gil_scoped_acquire gil;
  auto* backend = static_cast<PythonBackend*>(self);
  size_t filled = 0;
  try {
    nb::list arrays;
    for (size_t i = 0; i < input_count; ++i) {
      const xrt_tensor_view_t& v = inputs[i];
      size_t shape[XRT_MAX_RANK];
      for (uint32_t d = 0; d < v.rank; ++d) shape[d] = static_cast<size_t>(v.shape[d]);
      // Read-only views over the caller's memory, valid for this call only. Strings are always rebuilt as str
      // (the caller's array may hold bytes, which ONNX Runtime would take as their repr).
      if (t_run_context && v.dtype != XRT_DTYPE_STRING) {
        if (PyObject* same = FindTensor(t_run_context->inputs, v.data, v.dtype, v.rank, v.shape)) {
          arrays.append(nb::borrow(same));
          continue;
        }
      }
      if (v.dtype == XRT_DTYPE_STRING) {
        arrays.append(StringsToNumpy(static_cast<const xrt_string_t*>(v.data), v.rank, v.shape,
                                     "input " + std::to_string(i), XRT_STATUS_INVALID_ARGUMENT));
        continue;
      }
      RoOutArray arr(v.data, v.rank, shape, nb::handle(), nullptr, ToDlpack(v.dtype));
      arrays.append(arr.cast());
    }
    nb::object results = backend->execute(nb::handle(static_cast<PyObject*>(handle)), arrays);
    const size_t n = nb::len(results);
    if (n != output_count) {
      return xrt_status_make(XRT_STATUS_INTERNAL, ("backend " + backend->name + " returned " + std::to_string(n) +
                                                   " outputs, expected " + std::to_string(output_count))
                                                      .c_str());
    }
    for (size_t j = 0; j < n; ++j) {
      nb::object item = results[j];
      xrt_backend_output_t& o = outputs[j];
      if (IsStringArray(item)) {
        auto out = std::make_unique<StringOutput>();
        std::vector<int64_t> shape;
        nb::list keep;
        StringElements(item, "output " + std::to_string(j), &shape, &keep, &out->items);
        if (shape.size() > XRT_MAX_RANK) throw std::runtime_error("output rank above XRT_MAX_RANK");
        out->bytes.reserve(out->items.size());
        for (xrt_string_t& e : out->items) {  // private copies: the list `keep` dies here
          out->bytes.emplace_back(e.data ? e.data : "", e.size);
          e.data = out->bytes.back().data();
        }
        o.dtype = XRT_DTYPE_STRING;
        o.rank = static_cast<uint32_t>(shape.size());
        std::copy(shape.begin(), shape.end(), o.shape);
        o.data = out->items.data();
        o.byte_size = static_cast<uint64_t>(out->items.size()) * sizeof(xrt_string_t);
        out->original = item.release().ptr();
        o.owner = out.release();
        o.release = ReleaseStringOutput;
        ++filled;
        continue;
      }
      InArray a = nb::cast<InArray>(item);
      o.dtype = FromDlpack(a.dtype());
      o.rank = static_cast<uint32_t>(a.ndim());
      if (o.rank > XRT_MAX_RANK) throw std::runtime_error("output rank above XRT_MAX_RANK");
      for (uint32_t d = 0; d < o.rank; ++d) o.shape[d] = static_cast<int64_t>(a.shape(d));
      o.data = const_cast<void*>(a.data());
      o.byte_size = static_cast<uint64_t>(a.nbytes());
      o.owner = item.release().ptr();  // keeps the array (and so o.data) alive until release
      o.release = ReleasePyObject;
      ++filled;
    }
    if (t_run_context) {
      PyRunContext& c = *t_run_context;
      c.output_shapes.clear();
      c.output_shapes.reserve(n * XRT_MAX_RANK);  // no reallocation below: the refs point into it
      for (size_t j = 0; j < n; ++j) {
        const size_t at = c.output_shapes.size();
        c.output_shapes.insert(c.output_shapes.end(), outputs[j].shape, outputs[j].shape + outputs[j].rank);
        PyObject* object = outputs[j].release == ReleaseStringOutput
                               ? static_cast<StringOutput*>(outputs[j].owner)->original
                               : static_cast<PyObject*>(outputs[j].owner);
        c.outputs.push_back({outputs[j].data, outputs[j].dtype, outputs[j].rank, c.output_shapes.data() + at, object});
      }
    }
    return nullptr;
  } catch (nb::python_error& e) {
    for (size_t j = 0; j < filled; ++j) outputs[j].release(outputs[j].owner);
    return StatusFromPythonError(e, ("backend " + backend->name + " failed to run").c_str());
  } catch (const std::exception& e) {
    for (size_t j = 0; j < filled; ++j) outputs[j].release(outputs[j].owner);
    return xrt_status_make(XRT_STATUS_INTERNAL, (backend->name + ": " + e.what()).c_str());
  }
}

void PyDestroy(void*, void* handle) {
  nb::gil_scoped_acquire gil;
  Py_XDECREF(static_cast<PyObject*>(handle));
}

void RegisterPythonBackend(const std::string& name, const std::string& version, nb::object has_device,
                           nb::object init, nb::object execute) {
  // Leaked on purpose: the core keeps a copy of the vtable, whose `self` must stay valid for the process.
  auto* backend = new PythonBackend{name, version, std::move(has_device), std::move(init), std::move(execute)};
  xrt_backend_vtable_t vtable;
  std::memset(&vtable, 0, sizeof(vtable));
  vtable.struct_size = sizeof(vtable);
  vtable.abi_version = XRT_ABI_VERSION;
  vtable.name = backend->name.c_str();
  vtable.self = backend;
  vtable.version = PyVersion;
  vtable.has_device = PyHasDevice;
  vtable.init = PyInit;
  vtable.execute = PyExecute;
  vtable.destroy = PyDestroy;
  Check(xrt_backend_register(&vtable));
}

std::string ListBackends() {
  size_t length = 0;
  Check(xrt_backend_list(nullptr, 0, &length));
  std::string out(length + 1, '\0');
  Check(xrt_backend_list(out.data(), out.size(), &length));
  out.resize(length);
  return out;
}

}  // namespace

NB_MODULE(_core, m) {
  m.doc() = "xpuruntime C++ runtime binding (private: use the xpuruntime package)";
  m.def("version", [] { return std::string(xrt_version()); });
  m.def("set_error_factory", [](nb::object factory) { ErrorFactory() = std::move(factory); });
  m.def("register_python_backend", &RegisterPythonBackend, nb::arg("name"), nb::arg("version"),
        nb::arg("has_device"), nb::arg("init"), nb::arg("execute"));
  m.def("list_backends", &ListBackends);
  // Errors are the package's own types from the first call on, whoever imports this module first (the package
  // imports it lazily; tests and tools may import it directly).
  try {
    ErrorFactory() = nb::module_::import_("xpuruntime._errors").attr("from_status");
  } catch (const std::exception&) {
    PyErr_Clear();  // no xpuruntime package next to this module: statuses stay RuntimeError until set_error_factory
  }

  nb::class_<Bundle>(m, "Bundle")
      .def(nb::init<const std::string&, const std::vector<nb::bytes>&, bool>(), nb::arg("path"),
           nb::arg("trusted_keys") = std::vector<nb::bytes>(), nb::arg("require_signature") = false)
      .def_prop_ro("signer", &Bundle::signer)
      .def_prop_ro("manifest", &Bundle::manifest)
      .def("section", &Bundle::section, nb::arg("name"))
      .def_prop_ro("version", &Bundle::version);

  nb::class_<Session>(m, "Session")
      .def(nb::init<const Bundle&, const std::string&, const std::string&, const std::string&,
                    const std::optional<std::vector<std::string>>&, const std::string&>(),
           nb::arg("bundle"), nb::arg("device"), nb::arg("engine"), nb::arg("variant"), nb::arg("fallback").none(),
           nb::arg("cache_dir"), nb::keep_alive<1, 2>())
      .def("describe", &Session::describe)
      .def_prop_ro("inputs", &Session::inputs)
      .def_prop_ro("outputs", &Session::outputs)
      .def("run", &Session::run, nb::arg("names"), nb::arg("arrays"), nb::arg("outputs_on_device") = false,
           nb::arg("stream") = 0);
}
