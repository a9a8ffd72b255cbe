#include "session.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstring>
#include <optional>
#include <unordered_map>
#include <unordered_set>

#include <nlohmann/json.hpp>

#include "dtype.h"

namespace xrt::core {
namespace {

constexpr char kCallerCacheDirKey[] = "xrt.cache_dir";

std::string Lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

// A device's kind: "cuda:1" -> "cuda". Variants are built for a kind; the engine gets the full name (its ordinal).
std::string DeviceKind(const std::string& device) { return device.substr(0, device.find(':')); }

std::string NameList(const std::vector<TensorSpec>& specs) {
  std::string s;
  for (const auto& t : specs) s += Cat(s.empty() ? "" : ", ", "\"", t.name, "\" ", t.Describe());
  return s.empty() ? "(none)" : s;
}

std::string VariantList(const std::vector<Variant>& variants) {
  std::string s;
  for (const auto& v : variants) s += Cat(s.empty() ? "" : ", ", v.id, " (", v.engine, " on ", v.device, ")");
  return s.empty() ? "(none)" : s;
}

// "float16[1, 3, 640, 640]", for what a caller or an engine gave.
std::string DescribeGiven(xrt_dtype_t dtype, uint32_t rank, const int64_t* shape) {
  std::string s = DtypeName(dtype);
  if (dtype == XRT_DTYPE_INVALID) s = Cat("dtype ", static_cast<int>(dtype));
  if (rank > XRT_MAX_RANK) return Cat(s, " of rank ", rank);
  if (shape == nullptr && rank > 0) return Cat(s, " of rank ", rank, " with shape NULL");
  s += "[";
  for (uint32_t d = 0; d < rank; ++d) s += Cat(d ? ", " : "", shape[d]);
  return s + "]";
}

// Checks one input against its spec; the message names the input, what was expected and what was given.
Status CheckTensor(const TensorSpec& spec, const xrt_tensor_view_t& t) {
  auto fail = [&](const std::string& what) {
    return InvalidArgument("input \"", spec.name, "\": expected ", spec.Describe(), ", given ",
                           DescribeGiven(t.dtype, t.rank, t.shape), ": ", what);
  };
  if (t.dtype != spec.dtype) return fail("wrong dtype");
  if (t.rank > XRT_MAX_RANK) return fail(Cat("rank is over the maximum of ", XRT_MAX_RANK));
  if (t.rank > 0 && t.shape == nullptr) return fail("shape is NULL");
  if (t.rank != spec.shape.size()) return fail(Cat("rank ", t.rank, " != ", spec.shape.size()));
  for (uint32_t d = 0; d < t.rank; ++d) {
    if (t.shape[d] < 0) return fail(Cat("dim ", d, " is negative"));
    if (spec.shape[d] >= 0 && t.shape[d] != spec.shape[d]) {
      return fail(Cat("dim ", d, " is ", t.shape[d], ", must be ", spec.shape[d]));
    }
  }
  uint64_t bytes = 0;
  if (!ByteSize(t.dtype, t.shape, t.rank, &bytes)) return fail("its byte size overflows 64 bits");
  if (t.byte_size != bytes) {
    return fail(Cat("byte_size is ", t.byte_size, ", the shape and dtype need ", bytes));
  }
  if (t.data == nullptr && t.byte_size != 0) return fail("data is NULL");
  uint64_t bad = 0;
  if (t.dtype == XRT_DTYPE_STRING &&
      !CheckStrings(static_cast<const xrt_string_t*>(t.data), t.byte_size / sizeof(xrt_string_t), &bad)) {
    return fail(Cat("string element ", bad, " has NULL data and a non-zero size"));
  }
  return Status();
}

// "cuda:0", "host": for messages.
std::string PlacementName(const xrt_placement_t& p) {
  switch (p.kind) {
    case XRT_MEMORY_HOST: return "host";
    case XRT_MEMORY_CUDA: return Cat("cuda:", p.device_id);
  }
  return Cat("memory kind ", static_cast<int>(p.kind));
}

// Checks a placed input's placement; runs before CheckTensor, which reads a string tensor's elements.
Status CheckPlacement(const TensorSpec& spec, const xrt_tensor_view_t& t, const xrt_placement_t& p) {
  if (p.kind != XRT_MEMORY_HOST && p.kind != XRT_MEMORY_CUDA) {
    return InvalidArgument("input \"", spec.name, "\": unknown memory kind ", static_cast<int>(p.kind),
                           " (known: XRT_MEMORY_HOST, XRT_MEMORY_CUDA)");
  }
  if (p.kind == XRT_MEMORY_HOST && p.device_id != 0) {
    return InvalidArgument("input \"", spec.name, "\": host memory with device_id ", p.device_id, " (must be 0)");
  }
  if (p.kind == XRT_MEMORY_CUDA && p.device_id < 0) {
    return InvalidArgument("input \"", spec.name, "\": cuda device_id ", p.device_id, " is negative");
  }
  if (p.kind != XRT_MEMORY_HOST && t.dtype == XRT_DTYPE_STRING) {
    return InvalidArgument("input \"", spec.name, "\": a string tensor must be in host memory, given in ",
                           PlacementName(p), " memory");
  }
  return Status();
}

// Checks an engine's output against the manifest; a mismatch is the engine's bug (INTERNAL).
Status CheckOutput(const TensorSpec& spec, const xrt_backend_output_t& o, const xrt_placement_t& placement,
                   const std::string& engine) {
  auto fail = [&](const std::string& what) {
    return Internal("engine ", engine, " returned output \"", spec.name, "\" as ",
                    DescribeGiven(o.dtype, o.rank, o.shape), " but the manifest says ", spec.Describe(), ": ", what,
                    " (a backend bug)");
  };
  if (o.dtype != spec.dtype) return fail("wrong dtype");
  if (o.rank > XRT_MAX_RANK) return fail("rank over the maximum");
  if (o.rank != spec.shape.size()) return fail("wrong rank");
  for (uint32_t d = 0; d < o.rank; ++d) {
    if (o.shape[d] < 0) return fail(Cat("dim ", d, " is negative"));
    if (spec.shape[d] >= 0 && o.shape[d] != spec.shape[d]) return fail(Cat("dim ", d, " differs"));
  }
  uint64_t bytes = 0;
  if (!ByteSize(o.dtype, o.shape, o.rank, &bytes)) return fail("byte size overflows");
  if (o.byte_size != bytes) return fail(Cat("byte_size is ", o.byte_size, ", expected ", bytes));
  if (o.data == nullptr && o.byte_size != 0) return fail("data is NULL");
  if (placement.kind != XRT_MEMORY_HOST && o.dtype == XRT_DTYPE_STRING) return fail("a string tensor on a device");
  if (placement.kind != XRT_MEMORY_HOST && placement.kind != XRT_MEMORY_CUDA) {
    return fail(Cat("unknown memory kind ", static_cast<int>(placement.kind)));
  }
  uint64_t bad = 0;
  if (placement.kind == XRT_MEMORY_HOST && o.dtype == XRT_DTYPE_STRING &&
      !CheckStrings(static_cast<const xrt_string_t*>(o.data), o.byte_size / sizeof(xrt_string_t), &bad)) {
    return fail(Cat("string element ", bad, " has NULL data and a non-zero size"));
  }
  return Status();
}

std::string Join(const std::vector<std::string>& items, size_t from) {
  std::string out;
  for (size_t i = from; i < items.size(); ++i) out += (out.empty() ? "" : ", ") + items[i];
  return out;
}

// "cpu (onnxruntime, openvino)": the devices any registered or discoverable backend reports, probed over the
// device names the runtime knows. Loads plugins (only on the error / fallback path).
std::string PresentDevices() {
  static const char* const kKnown[] = {"cpu", "gpu", "npu", "cuda"};
  std::string out;
  for (const char* d : kKnown) {
    std::string engines;
    for (const std::string& name : BackendRegistry::Get().List()) {
      auto b = BackendRegistry::Get().Acquire(name);
      if (b.ok() && b.value()->HasDevice(d)) engines += (engines.empty() ? "" : ", ") + name;
    }
    if (!engines.empty()) out += Cat(out.empty() ? "" : "; ", d, " (", engines, ")");
  }
  return out.empty() ? "none" : out;
}

}  // namespace

Result<std::shared_ptr<Session>> Session::Create(std::shared_ptr<const Bundle> bundle, const SessionOptions& options) {
  XRT_ASSIGN_OR_RETURN(const Model* model, bundle->model(), "");
  const auto& variants = model->variants;

  // Candidates: the named variant, or all (in manifest order); then the engine filter.
  std::vector<const Variant*> candidates;
  if (!options.variant.empty()) {
    for (const auto& v : variants) {
      if (v.id == options.variant) candidates.push_back(&v);
    }
    if (candidates.empty()) {
      return NotFound("bundle ", bundle->origin(), " has no variant \"", options.variant,
                      "\"; its variants are: ", VariantList(variants));
    }
  } else {
    for (const auto& v : variants) candidates.push_back(&v);
  }
  if (!options.engine.empty()) {
    candidates.erase(std::remove_if(candidates.begin(), candidates.end(),
                                    [&](const Variant* v) { return v->engine != options.engine; }),
                     candidates.end());
    if (candidates.empty()) {
      return NotFound("bundle ", bundle->origin(), " has no variant for engine \"", options.engine,
                      "\"", options.variant.empty() ? "" : Cat(" named \"", options.variant, "\""),
                      "; its variants are: ", VariantList(variants));
    }
  }
  const std::string requested = [&] {
    std::string d = Lower(options.device);
    return d.empty() ? (options.variant.empty() ? std::string("cpu") : candidates.front()->device) : d;
  }();

  // Devices to try: the requested one, then the fallback chain: the caller's, or the one the variants built for
  // the requested device declare (fallback_devices, in manifest order).
  std::vector<std::string> devices = {requested};
  std::string chain_origin = "the caller's fallback";
  std::vector<std::string> chain;
  if (options.fallback_given) {
    for (const auto& d : options.fallback) chain.push_back(Lower(d));
  } else {
    chain_origin = "the bundle's fallback chain";
    for (const Variant* v : candidates) {
      if (v->device != DeviceKind(requested)) continue;
      for (const auto& d : v->fallback_devices) chain.push_back(d);
    }
  }
  // Linear in the chain: a hash set for the de-duplication, and the variants for each device indexed once below
  // (a bundle's chain is at most kMaxVariants x kMaxFallbackDevices entries; the caller's is the caller's).
  std::unordered_set<std::string> seen_devices = {requested};
  for (const auto& d : chain) {
    if (seen_devices.insert(d).second) devices.push_back(d);
  }
  // device -> candidates built for it, and -> candidates that declare it as a fallback (manifest order each).
  std::unordered_map<std::string, std::vector<const Variant*>> built_for, falls_back_to;
  for (const Variant* v : candidates) {
    built_for[v->device].push_back(v);
    std::unordered_set<std::string> declared;  // a device listed twice by one variant counts once
    for (const auto& d : v->fallback_devices) {
      if (d != v->device && declared.insert(d).second) falls_back_to[d].push_back(v);
    }
  }

  auto session = std::shared_ptr<Session>(new Session());
  session->bundle_ = bundle;
  session->model_ = model;

  // Hands variant `v`'s artifacts and options to `b` on device `d`. A failure of the bundle (an artifact that does
  // not read, an option only the caller may set) is final: *fatal is set. A failure of the backend's init is not:
  // the caller records it and tries the next variant.
  void* handle = nullptr;
  const double verify_seconds_before = bundle->section_verify_seconds();
  double init_seconds = 0.0;  // the engine's init() of the variant that initialised (load profile)
  // without_weights: the variant's "weights" artifact is left out (neither read nor verified); see its caller.
  auto try_init = [&](const Variant& v, const std::shared_ptr<const Backend>& b, const std::string& d,
                      bool* fatal, bool without_weights) -> Status {
    *fatal = true;
    session->artifact_bytes_.clear();
    std::vector<xrt_backend_artifact_t> artifacts;
    const format::Bundle& reader = bundle->reader();
    if (reader.verifies_on_use()) {  // the variant's sections are read and verified in parallel, before any is used
      std::vector<size_t> indices;
      for (const auto& [role, section] : v.artifacts) {
        if (without_weights && role == "weights") continue;
        if (const auto index = reader.Find(section)) indices.push_back(*index);
      }
      if (auto err = reader.Prefetch(indices)) {
        return FromFormatError(*err).WithContext(Cat("variant ", v.id, ": artifacts"));
      }
    }
    for (const auto& [role, section] : v.artifacts) {
      if (without_weights && role == "weights") continue;
      const auto index = reader.Find(section);
      if (!index) return Internal("variant ", v.id, ": section ", section, " vanished");
      auto bytes = reader.GetSection(*index);
      if (!bytes.ok()) {
        return FromFormatError(bytes.error()).WithContext(Cat("variant ", v.id, ": artifact ", role));
      }
      format::SectionBytes sb = std::move(bytes).value();
      if (!sb.owned() && reinterpret_cast<uintptr_t>(sb.data()) % 64 != 0) {
        // Only for bundles opened from caller memory that is not 64-byte aligned: xrt.h promises aligned artifacts.
        try {
          format::SectionBytes copy = format::SectionBytes::Allocate(sb.size());
          if (sb.size()) std::memcpy(copy.mutable_data(), sb.data(), static_cast<size_t>(sb.size()));
          sb = std::move(copy);
        } catch (const std::bad_alloc&) {
          return ResourceExhausted("variant ", v.id, ": cannot allocate ", sb.size(), " bytes for artifact ", role);
        }
      }
      artifacts.push_back(xrt_backend_artifact_t{role.c_str(), sb.data(), sb.size()});
      session->artifact_bytes_.push_back(std::move(sb));
    }
    std::string options_json = v.options_json;
    // Options that touch the file system come from the caller, never the bundle: "xrt.cache_dir" is the only key
    // the core adds, so a bundle that sets it is refused here, for every engine (each backend allow-lists the rest).
    nlohmann::json o = nlohmann::json::parse(options_json, nullptr, /*allow_exceptions=*/false);
    if (o.is_object() && o.contains(kCallerCacheDirKey)) {
      return InvalidArgument("variant ", v.id, " of bundle ", bundle->origin(), " sets option \"",
                             kCallerCacheDirKey, "\"; a cache folder is the caller's choice (load(cache_dir=...), "
                             "xrt-run --cache-dir, xrt_session_options_t.cache_dir), never a bundle's: rebuild the "
                             "bundle with xrtc");
    }
    if (!options.cache_dir.empty() && o.is_object()) {  // the runtime's own option: handed to the engine
      o[kCallerCacheDirKey] = options.cache_dir;
      options_json = o.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    }
    // Profiling: only to engines with the profile hook (a plugin built before it may refuse the unknown key);
    // xrt_session_profile() then says the engine does not profile.
    if (options.profile && b->vtable.profile != nullptr && o.is_object()) {
      o["xrt.profile"] = "1";
      options_json = o.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    }
    *fatal = false;
    const auto& vt = b->vtable;
    handle = nullptr;
    const auto init_start = std::chrono::steady_clock::now();
    Status init = Status::FromC(vt.init(vt.self, d.c_str(), artifacts.data(), artifacts.size(),
                                        options_json.c_str(), &handle));
    init_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - init_start).count();
    if (!init.ok()) {
      session->artifact_bytes_.clear();
      return std::move(init).WithContext(
          Cat("engine ", v.engine, " (", b->origin, ") failed to initialise variant ", v.id));
    }
    return Status();
  };

  nlohmann::json skipped = nlohmann::json::array();
  std::string tried;  // for the error message
  const Variant* chosen = nullptr;
  std::shared_ptr<const Backend> backend;
  std::string device;
  size_t for_device = 0, incompatible = 0;
  std::optional<Status> first_init_failure;  // returned when no variant initialises and every other one was skipped
  auto skip = [&](const Variant& v, const std::string& on, const std::string& why) {
    skipped.push_back({{"variant", v.id}, {"engine", v.engine}, {"device", on}, {"reason", why}});
    tried += Cat("\n  - ", v.id, " (", v.engine, " on ", on, "): ", why);
  };
  for (const std::string& d : devices) {
    // Variants built for d, then (on a fallback device) variants that declare d as a fallback.
    std::vector<const Variant*> order;
    if (auto it = built_for.find(DeviceKind(d)); it != built_for.end()) order = it->second;
    if (auto it = falls_back_to.find(DeviceKind(d)); it != falls_back_to.end()) {
      order.insert(order.end(), it->second.begin(), it->second.end());
    }
    if (order.empty()) {
      for (const Variant* v : candidates) skip(*v, d, Cat("built for device ", v->device, ", not ", d));
      continue;
    }
    for (const Variant* v : order) {
      ++for_device;
      // Before the engine: an artifact built for another CPU (e.g. an x86-64 blob on an Arm board) never loads.
      if (!v->cpu_archs.empty() &&
          std::find(v->cpu_archs.begin(), v->cpu_archs.end(), HostCpuArch()) == v->cpu_archs.end()) {
        ++incompatible;
        skip(*v, d, Cat("built for CPU architecture ", Join(v->cpu_archs, 0), " (requires.cpu_arch), this machine is ",
                        HostCpuArch()));
        continue;
      }
      auto acquired = BackendRegistry::Get().Acquire(v->engine);
      if (!acquired.ok()) {
        skip(*v, d, acquired.status().message());
        continue;
      }
      const auto& b = acquired.value();
      if (!b->HasDevice(d)) {
        skip(*v, d, Cat("engine ", v->engine, " (", b->origin, ") has no device ", d, " on this machine"));
        continue;
      }
      if (!v->engine_version_requirement.empty()) {
        std::string problem;
        if (!VersionSatisfies(b->Version(), v->engine_version_requirement, &problem)) {
          ++incompatible;
          skip(*v, d, Cat("engine ", v->engine, ": ", problem));
          continue;
        }
      }
      bool fatal = false;
      // A variant with a compiled artifact (an OpenVINO blob holds its weights) is first offered without its
      // "weights" (the shared weight store, issue 16): when the engine imports the blob, the store is neither read
      // nor kept (load time and peak memory). An engine that cannot use the blob here (another build, another CPU)
      // fails for want of weights and gets the variant again, whole.
      auto has_role = [&](const char* role) {
        return std::any_of(v->artifacts.begin(), v->artifacts.end(), [&](const auto& a) { return a.first == role; });
      };
      const bool blob_first = !options.profile && has_role("compiled") && has_role("weights");
      Status init = try_init(*v, b, d, &fatal, blob_first);
      if (!init.ok() && !fatal && blob_first) init = try_init(*v, b, d, &fatal, false);
      if (!init.ok()) {
        if (fatal) return init;
        // The engine is present but refused this variant (a driver, a plugin or memory): try the next one.
        skip(*v, d, init.message());
        if (!first_init_failure) first_init_failure = std::move(init);
        continue;
      }
      chosen = v;
      backend = std::move(acquired).value();
      device = d;
      break;
    }
    if (chosen != nullptr) break;
  }
  if (chosen == nullptr) {
    if (first_init_failure) {  // an engine was there but refused: its code (one attempt: its own message)
      if (skipped.size() == 1) return std::move(*first_init_failure);
      return Status(first_init_failure->code(), Cat("no variant of bundle ", bundle->origin(), " could start on device ",
                                                    requested, " (devices present here: ", PresentDevices(),
                                                    "); tried:", tried));
    }
    std::string what = Cat("no usable variant for device ", requested, " in bundle ", bundle->origin());
    if (devices.size() > 1) what += Cat(" (nor on ", chain_origin, ": ", Join(devices, 1), ")");
    else if (requested != "cpu") what += " and no fallback allowed";
    what += Cat("; devices present here: ", PresentDevices());
    if (for_device == 0) return NotFound(what, "; tried:", tried.empty() ? " (no variants)" : tried);
    if (incompatible == for_device) return Incompatible(what, "; tried:", tried);
    return Unavailable(what, "; tried:", tried);
  }

  std::string reason;
  if (!options.variant.empty()) {
    reason = Cat("variant ", chosen->id, " requested by the caller");
  } else {
    reason = Cat("first variant in the manifest's preference order for device ", device,
                 options.engine.empty() ? "" : Cat(" and engine ", options.engine),
                 " whose engine is available here");
    if (!skipped.empty()) reason += Cat(" (", skipped.size(), " skipped)");
  }
  if (!chosen->why.empty()) reason += Cat("; compiler: ", chosen->why);
  std::string fallback_reason;
  if (device != requested) {
    fallback_reason = Cat("no usable variant for device ", requested, " (devices present here: ", PresentDevices(),
                          "); ran on ", device, " per ", chain_origin);
  }

  session->variant_ = chosen;
  session->profiling_ = options.profile;
  session->backend_ = backend;
  session->device_ = device;
  session->handle_ = handle;

  nlohmann::json describe = {{"variant", chosen->id},
                             {"engine", chosen->engine},
                             {"engine_version", backend->Version()},
                             {"device", device},
                             {"requested_device", requested},
                             {"reason", reason},
                             {"skipped", std::move(skipped)}};
  if (!fallback_reason.empty()) describe["fallback"] = fallback_reason;
  // Where session creation's time went (xrtc run --profile-load): reading and verifying sections on first use
  // (0 when they were verified at open, or by an earlier session), and the engine's init of the chosen variant.
  describe["load"] = {{"sections_verified_on_use", bundle->reader().verifies_on_use()},
                      {"section_verify_s", bundle->section_verify_seconds() - verify_seconds_before},
                      {"open_verify_s", bundle->open_verify_seconds()},
                      {"engine_init_s", init_seconds}};
  session->describe_ = describe.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  session->describe();  // the first text, with the engine's describe() as of init
  return session;
}

const std::string& Session::describe() const {
  std::lock_guard<std::mutex> lock(describe_mu_);
  const xrt_backend_vtable_t& vt = backend_->vtable;
  const char* info = vt.describe != nullptr && handle_ != nullptr ? vt.describe(vt.self, handle_) : nullptr;
  if (described_.empty() || info != engine_info_seen_) {  // a backend returns a new pointer when its text changes
    nlohmann::json out = nlohmann::json::parse(describe_, nullptr, /*allow_exceptions=*/false);
    nlohmann::json parsed = nlohmann::json::parse(info ? info : "", nullptr, /*allow_exceptions=*/false);
    if (out.is_object() && parsed.is_object()) out["engine_info"] = std::move(parsed);
    std::string text = out.is_object() ? out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
                                       : describe_;
    if (described_.empty() || text != described_.back()) described_.push_back(std::move(text));
    engine_info_seen_ = info;
  }
  return described_.back();
}

Session::~Session() {
  // A C++ backend that lets an exception escape its C entry point must not terminate the host.
  try {
    if (handle_ != nullptr) backend_->vtable.destroy(backend_->vtable.self, handle_);
  } catch (...) {
  }
  // artifact_bytes_ are freed after destroy(), as xrt.h promises the backend.
}

Result<std::unique_ptr<Outputs>> Session::Run(const char* const* names, const xrt_tensor_view_t* inputs,
                                              size_t input_count) const {
  xrt_run_options_t options{};
  options.struct_size = sizeof(options);
  return RunPlaced(options, names, inputs, nullptr, input_count);
}

Result<std::unique_ptr<Outputs>> Session::RunPlaced(const xrt_run_options_t& options, const char* const* names,
                                                    const xrt_tensor_view_t* inputs, const xrt_placement_t* placements,
                                                    size_t input_count) const {
  const auto& specs = model_->inputs;
  for (const auto* list : {&model_->inputs, &model_->outputs}) {
    for (const TensorSpec& spec : *list) {
      if (spec.value_type.empty()) continue;
      return Unimplemented((list == &model_->inputs ? "input \"" : "output \""), spec.name, "\" is a ",
                           spec.value_type, ", which the C API does not carry (it carries tensors, strings included);"
                           " run this bundle from Python (xpuruntime.load), which runs such values on ONNX Runtime");
    }
  }
  if (input_count > 0 && inputs == nullptr) return InvalidArgument("inputs is NULL but input_count is ", input_count);
  std::vector<size_t> given(specs.size(), SIZE_MAX);  // spec index -> index into inputs
  if (names == nullptr) {
    if (input_count != specs.size()) {
      return InvalidArgument("given ", input_count, " inputs without names; the model takes ", specs.size(), ": ",
                             NameList(specs));
    }
    for (size_t i = 0; i < specs.size(); ++i) given[i] = i;
  } else {
    for (size_t i = 0; i < input_count; ++i) {
      if (names[i] == nullptr) return InvalidArgument("names[", i, "] is NULL");
      size_t j = 0;
      while (j < specs.size() && specs[j].name != names[i]) ++j;
      if (j == specs.size()) {
        return InvalidArgument("unknown input \"", names[i], "\" (names[", i, "]); the model's inputs are: ",
                               NameList(specs));
      }
      if (given[j] != SIZE_MAX) {
        return InvalidArgument("input \"", names[i], "\" is given twice (names[", given[j], "] and names[", i, "])");
      }
      given[j] = i;
    }
    for (size_t j = 0; j < specs.size(); ++j) {
      if (given[j] == SIZE_MAX) {
        return InvalidArgument("input \"", specs[j].name, "\" (", specs[j].Describe(), ") is missing");
      }
    }
  }
  std::vector<xrt_tensor_view_t> ordered(specs.size());
  std::vector<xrt_placement_t> ordered_placements(specs.size(), xrt_placement_t{XRT_MEMORY_HOST, 0});
  bool any_device = false;
  for (size_t j = 0; j < specs.size(); ++j) {
    ordered[j] = inputs[given[j]];
    // The placement first: a string tensor's elements are read by CheckTensor, which must never touch device memory.
    const xrt_placement_t p = placements ? placements[given[j]] : xrt_placement_t{XRT_MEMORY_HOST, 0};
    XRT_RETURN_IF_ERROR(CheckPlacement(specs[j], ordered[j], p), "");
    XRT_RETURN_IF_ERROR(CheckTensor(specs[j], ordered[j]), "");
    ordered_placements[j] = p;
    if (p.kind != XRT_MEMORY_HOST && !any_device) {
      any_device = true;
      if (!HasExecutePlaced()) {
        return Unimplemented("input \"", specs[j].name, "\" is in ", PlacementName(p), " memory, but engine ",
                             variant_->engine, " (variant ", variant_->id, " on ", device_,
                             ") takes only host memory: copy the tensor to the host, or run a variant whose engine "
                             "takes device memory (the cuda engine: xrtc compile --target cuda)");
      }
    }
  }
  const auto& vt = backend_->vtable;
  if (options.stream != nullptr && !HasExecutePlaced()) {
    return InvalidArgument("a stream was given, but engine ", variant_->engine, " (variant ", variant_->id, " on ",
                           device_, ") runs on the host and has no stream to order: pass no stream");
  }

  // Allocated before execute() so no engine output can leak on an allocation failure afterwards.
  auto outputs = std::make_unique<Outputs>(shared_from_this(), model_->outputs.size());
  // The placed entry only where the caller used what it adds: host runs keep the path every backend has.
  const bool placed = HasExecutePlaced() && (any_device || options.stream != nullptr || options.outputs_on_device);
  Status s = placed ? Status::FromC(vt.execute_placed(vt.self, handle_, &options, ordered.data(),
                                                      ordered_placements.data(), ordered.size(),
                                                      outputs->outputs_.data(), outputs->placements_.data(),
                                                      outputs->outputs_.size()))
                    : Status::FromC(vt.execute(vt.self, handle_, ordered.data(), ordered.size(),
                                               outputs->outputs_.data(), outputs->outputs_.size()));
  if (!s.ok()) {
    // The backend has released what it put into outputs (xrt.h): forget it, do not release it again.
    std::fill(outputs->outputs_.begin(), outputs->outputs_.end(), xrt_backend_output_t{});
    return std::move(s).WithContext(Cat("engine ", variant_->engine, " running variant ", variant_->id));
  }
  for (size_t i = 0; i < model_->outputs.size(); ++i) {
    XRT_RETURN_IF_ERROR(CheckOutput(model_->outputs[i], outputs->outputs_[i], outputs->placements_[i],
                                    variant_->engine), "");
  }
  return outputs;  // on the error returns above, ~Outputs releases what the engine produced
}

Result<std::string> Session::Profile() const {
  if (!profiling_) {
    return FailedPrecondition("session of variant ", variant_->id, " was created without profiling: create it with "
                              "xrt_session_options_t.profile = 1 (xrt-run --profile)");
  }
  const auto& vt = backend_->vtable;
  if (vt.profile == nullptr) {
    return Unimplemented("engine ", variant_->engine, " (", backend_->origin, ") does not profile: its plugin has no "
                         "profile hook (plugins built before xpuruntime 0.5); rebuild or update the plugin");
  }
  std::string text;
  Status s = Status::FromC(vt.profile(vt.self, handle_, [](void* context, const char* json, size_t size) {
    if (json != nullptr) static_cast<std::string*>(context)->assign(json, size);
  }, &text));
  if (!s.ok()) return std::move(s).WithContext(Cat("engine ", variant_->engine, " profiling variant ", variant_->id));
  nlohmann::json parsed = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!parsed.is_object() || !parsed.contains("records") || !parsed["records"].is_array()) {
    return Internal("engine ", variant_->engine, " returned a profile that is not a records object (a backend bug)");
  }
  parsed["variant"] = variant_->id;
  parsed["device"] = device_;
  return parsed.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

Outputs::Outputs(std::shared_ptr<const Session> session, size_t count)
    : session_(std::move(session)),
      outputs_(count, xrt_backend_output_t{}),
      placements_(count, xrt_placement_t{XRT_MEMORY_HOST, 0}) {}

Outputs::~Outputs() { ReleaseAll(); }

void Outputs::ReleaseAll() {
  for (auto& o : outputs_) {
    try {
      if (o.release != nullptr) o.release(o.owner);
    } catch (...) {  // as in ~Session: never let a backend's exception terminate the host
    }
    o = xrt_backend_output_t{};
  }
}

}  // namespace xrt::core
