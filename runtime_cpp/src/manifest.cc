#include "manifest.h"

#include <algorithm>
#include <cctype>
#include <set>

#include "dtype.h"

namespace xrt::core {
namespace {

std::vector<std::string> SplitRequirements(const std::string& requirement) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (start <= requirement.size()) {
    const size_t comma = std::min(requirement.find(',', start), requirement.size());
    std::string part = requirement.substr(start, comma - start);
    part.erase(0, part.find_first_not_of(' '));
    part.erase(part.find_last_not_of(' ') + 1);
    parts.push_back(part);
    start = comma + 1;
  }
  return parts;
}


using nlohmann::json;

bool ParseRequirement(const std::string& requirement, std::string* out_op, std::vector<uint64_t>* out_version);

// A short rendering of a JSON value for messages (long values are cut). Containers are described, not dumped:
// dump() recurses, and a hostile manifest may nest millions of levels deep.
std::string Show(const json& v) {
  if (v.is_array()) return Cat("an array of ", v.size(), " entries");
  if (v.is_object()) return Cat("an object of ", v.size(), " keys");
  std::string s = v.dump(-1, ' ', /*ensure_ascii=*/true, json::error_handler_t::replace);
  if (s.size() > 80) s = s.substr(0, 77) + "...";
  return s;
}

// Nesting depth, computed without recursion (a scalar is 0, [] is 1).
size_t Depth(const json& root) {
  size_t max_depth = 0;
  std::vector<std::pair<const json*, size_t>> stack = {{&root, 0}};
  while (!stack.empty()) {
    auto [v, depth] = stack.back();
    stack.pop_back();
    if (!v->is_structured()) continue;
    max_depth = std::max(max_depth, depth + 1);
    for (const auto& child : *v) stack.emplace_back(&child, depth + 1);
  }
  return max_depth;
}
constexpr size_t kMaxOptionsDepth = 16;

Status OverCap(const std::string& path, size_t count, size_t cap, const char* what) {
  return ResourceExhausted("manifest: ", path, " has ", count, " ", what, ", over the runtime's cap of ", cap,
                           " (formats/xrtpkg.md, \"Invariants\"); re-create the bundle with xrtc");
}

Status Bad(const std::string& path, const std::string& problem) {
  return DataCorrupt("malformed manifest: ", path, " ", problem,
                     " (re-create the bundle with a matching xrtc; formats/xrtpkg.md describes the keys)");
}

std::string Lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

// Reads a required non-empty string member.
Status RequiredString(const json& obj, const char* key, const std::string& path, std::string* out) {
  auto it = obj.find(key);
  if (it == obj.end()) return Bad(path + "." + key, "is missing");
  if (!it->is_string() || it->get_ref<const std::string&>().empty()) {
    return Bad(path + "." + key, Cat("must be a non-empty string, is ", Show(*it)));
  }
  *out = it->get<std::string>();
  return Status();
}

// Reads an optional string member ("" when absent).
Status OptionalString(const json& obj, const char* key, const std::string& path, std::string* out) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return Status();
  if (!it->is_string()) return Bad(path + "." + key, Cat("must be a string, is ", Show(*it)));
  *out = it->get<std::string>();
  return Status();
}

// Parses a value `type` (formats/xrtpkg.md, "Value types") into its rendering. A string is a tensor dtype (the
// elements of sequences and map values); an object has exactly one key: "sequence" or "optional" (a type), or
// "map" ({"key": an integer dtype or "string", "value": a type}). Depth is capped before recursing deeper.
Status ParseValueType(const json& t, const std::string& path, size_t depth, std::string* out) {
  if (t.is_string()) {
    const std::string& name = t.get_ref<const std::string&>();
    if (DtypeFromName(name) == XRT_DTYPE_INVALID) {
      return Bad(path, Cat("is \"", name.substr(0, 64), "\", not one of: ", DtypeNameList()));
    }
    *out = Cat("tensor(", name, ")");
    return Status();
  }
  // Only sequence, map and optional count as levels (sequence<map<int64, float32>> is 2 deep).
  if (depth > kMaxTypeDepth) return Bad(path, Cat("nests deeper than ", kMaxTypeDepth, " levels"));
  if (!t.is_object() || t.size() != 1) {
    return Bad(path, Cat("must be a dtype name or an object with one key (sequence, map, optional), is ", Show(t)));
  }
  const std::string& kind = t.begin().key();
  const json& inner = t.begin().value();
  std::string rendered;
  if (kind == "sequence" || kind == "optional") {
    XRT_RETURN_IF_ERROR(ParseValueType(inner, Cat(path, ".", kind), depth + 1, &rendered), "");
    *out = Cat(kind, "<", rendered, ">");
    return Status();
  }
  if (kind == "map") {
    const std::string mpath = path + ".map";
    if (!inner.is_object()) return Bad(mpath, Cat("must be an object {key, value}, is ", Show(inner)));
    if (inner.size() != 2 || !inner.contains("key") || !inner.contains("value")) {
      return Bad(mpath, "must have exactly the keys \"key\" and \"value\"");
    }
    const json& key = inner["key"];
    static const char* const kKeys[] = {"string", "int64", "int32", "int16", "int8", "uint64", "uint32", "uint16",
                                        "uint8"};
    const bool key_ok = key.is_string() && std::any_of(std::begin(kKeys), std::end(kKeys), [&](const char* k) {
                          return key.get_ref<const std::string&>() == k;
                        });
    if (!key_ok) return Bad(mpath + ".key", Cat("is ", Show(key), "; a map key is \"string\" or an integer dtype"));
    XRT_RETURN_IF_ERROR(ParseValueType(inner["value"], mpath + ".value", depth + 1, &rendered), "");
    *out = Cat("map<", key.get<std::string>(), ", ", rendered, ">");
    return Status();
  }
  return Bad(path, Cat("has unknown type \"", kind.substr(0, 64), "\" (known: sequence, map, optional)"));
}

Result<std::vector<TensorSpec>> ParseTensors(const json& model, const char* key) {
  const std::string path = Cat("model.", key);
  auto it = model.find(key);
  if (it == model.end()) return Bad(path, "is missing");
  if (!it->is_array()) return Bad(path, Cat("must be an array, is ", Show(*it)));
  if (it->size() > kMaxTensors) return OverCap(path, it->size(), kMaxTensors, "entries");
  std::vector<TensorSpec> specs;
  std::set<std::string> names;
  for (size_t i = 0; i < it->size(); ++i) {
    const json& t = (*it)[i];
    const std::string tpath = Cat(path, "[", i, "]");
    if (!t.is_object()) return Bad(tpath, Cat("must be an object, is ", Show(t)));
    TensorSpec spec;
    XRT_RETURN_IF_ERROR(RequiredString(t, "name", tpath, &spec.name), "");
    if (!names.insert(spec.name).second) return Bad(tpath + ".name", Cat("\"", spec.name, "\" is used twice"));
    if (auto type = t.find("type"); type != t.end()) {  // a sequence, map or optional: no dtype, no shape
      if (t.contains("dtype") || t.contains("shape")) {
        return Bad(tpath, "has a \"type\" and a \"dtype\" or \"shape\"; a value has one or the other");
      }
      if (!type->is_object()) return Bad(tpath + ".type", Cat("must be an object, is ", Show(*type)));
      XRT_RETURN_IF_ERROR(ParseValueType(*type, tpath + ".type", 1, &spec.value_type), "");
      specs.push_back(std::move(spec));
      continue;
    }
    std::string dtype;
    XRT_RETURN_IF_ERROR(RequiredString(t, "dtype", tpath, &dtype), "");
    spec.dtype = DtypeFromName(dtype);
    if (spec.dtype == XRT_DTYPE_INVALID) {
      return Bad(tpath + ".dtype", Cat("is \"", dtype, "\", not one of: ", DtypeNameList()));
    }
    auto shape = t.find("shape");
    if (shape == t.end()) return Bad(tpath + ".shape", "is missing");
    if (!shape->is_array()) return Bad(tpath + ".shape", Cat("must be an array, is ", Show(*shape)));
    if (shape->size() > XRT_MAX_RANK) {
      return Bad(tpath + ".shape", Cat("has rank ", shape->size(), ", over the maximum of ", XRT_MAX_RANK));
    }
    for (size_t d = 0; d < shape->size(); ++d) {
      const json& dim = (*shape)[d];
      if (dim.is_number_unsigned() && dim.get<uint64_t>() <= static_cast<uint64_t>(INT64_MAX)) {
        spec.shape.push_back(static_cast<int64_t>(dim.get<uint64_t>()));
        spec.dim_names.emplace_back(std::nullopt);
      } else if (dim.is_number_integer() && !dim.is_number_unsigned() && dim.get<int64_t>() >= 0) {
        spec.shape.push_back(dim.get<int64_t>());
        spec.dim_names.emplace_back(std::nullopt);
      } else if (dim.is_string()) {
        spec.shape.push_back(-1);
        const std::string& sym = dim.get_ref<const std::string&>();
        spec.dim_names.emplace_back(sym.empty() ? std::nullopt : std::optional<std::string>(sym));
      } else if (dim.is_null()) {
        spec.shape.push_back(-1);
        spec.dim_names.emplace_back(std::nullopt);
      } else {
        return Bad(Cat(tpath, ".shape[", d, "]"),
                   Cat("is ", Show(dim), "; a dim is an integer >= 0, a symbolic name (string) or null"));
      }
    }
    specs.push_back(std::move(spec));
  }
  return specs;
}

bool IsEngineName(const std::string& s) {
  if (s.empty() || s.size() > 64) return false;
  return std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isalnum(c) || c == '_'; });
}

Result<Variant> ParseVariant(const json& v, const std::string& path, const format::Bundle& bundle) {
  if (!v.is_object()) return Bad(path, Cat("must be an object, is ", Show(v)));
  Variant out;
  XRT_RETURN_IF_ERROR(RequiredString(v, "id", path, &out.id), "");
  XRT_RETURN_IF_ERROR(RequiredString(v, "device", path, &out.device), "");
  out.device = Lower(out.device);
  XRT_RETURN_IF_ERROR(RequiredString(v, "engine", path, &out.engine), "");
  if (!IsEngineName(out.engine)) {
    return Bad(path + ".engine", Cat("is \"", out.engine, "\"; an engine name is 1..64 of [A-Za-z0-9_]"));
  }
  XRT_RETURN_IF_ERROR(OptionalString(v, "target", path, &out.target), "");
  XRT_RETURN_IF_ERROR(OptionalString(v, "precision", path, &out.precision), "");
  XRT_RETURN_IF_ERROR(OptionalString(v, "why", path, &out.why), "");

  auto artifacts = v.find("artifacts");
  if (artifacts == v.end()) return Bad(path + ".artifacts", "is missing");
  if (!artifacts->is_object()) return Bad(path + ".artifacts", Cat("must be an object, is ", Show(*artifacts)));
  if (artifacts->size() > kMaxArtifacts) return OverCap(path + ".artifacts", artifacts->size(), kMaxArtifacts, "roles");
  for (auto it = artifacts->begin(); it != artifacts->end(); ++it) {  // nlohmann objects iterate in key order
    const std::string apath = Cat(path, ".artifacts.", it.key());
    if (!it.value().is_string()) return Bad(apath, Cat("must be a section name, is ", Show(it.value())));
    const std::string& section = it.value().get_ref<const std::string&>();
    if (!bundle.Find(section)) {
      return Bad(apath, Cat("names section \"", section, "\", which the bundle does not have"));
    }
    if (section == format::kManifestName) return Bad(apath, "names the manifest section");
    out.artifacts.emplace_back(it.key(), section);
  }

  auto options = v.find("options");
  if (options == v.end() || options->is_null()) {
    out.options_json = "{}";
  } else if (!options->is_object()) {
    return Bad(path + ".options", Cat("must be an object, is ", Show(*options)));
  } else if (Depth(*options) > kMaxOptionsDepth) {
    return Bad(path + ".options", Cat("nests deeper than ", kMaxOptionsDepth, " levels"));
  } else {
    out.options_json = options->dump(-1, ' ', false, json::error_handler_t::strict);
  }

  auto requires_it = v.find("requires");
  if (requires_it != v.end() && !requires_it->is_null()) {
    if (!requires_it->is_object()) return Bad(path + ".requires", Cat("must be an object, is ", Show(*requires_it)));
    XRT_RETURN_IF_ERROR(
        OptionalString(*requires_it, "engine_version", path + ".requires", &out.engine_version_requirement), "");
    std::string op;
    std::vector<uint64_t> version;
    bool parsed = true;
    if (!out.engine_version_requirement.empty()) {
      for (const std::string& part : SplitRequirements(out.engine_version_requirement)) {
        parsed = parsed && ParseRequirement(part, &op, &version);
      }
    }
    if (!parsed) {
      return Bad(path + ".requires.engine_version",
                 Cat("is \"", out.engine_version_requirement,
                     "\"; expected a version with an optional operator >=, >, ==, <= or <, e.g. \">=2026.0\" or \">=2024.4,<2027\""));
    }
  }

  if (requires_it != v.end() && requires_it->is_object()) {
    auto arch = requires_it->find("cpu_arch");
    if (arch != requires_it->end() && !arch->is_null()) {
      const std::string apath = path + ".requires.cpu_arch";
      // One name or a list; the Debian/Go spellings amd64 and arm64 are taken as x86_64 and aarch64.
      json names = arch->is_string() ? json::array({*arch}) : *arch;
      if (!names.is_array() || names.empty() || names.size() > kMaxCpuArchs) {
        return Bad(apath, Cat("must be an architecture or a list of 1 to ", kMaxCpuArchs,
                              " architectures such as \"x86_64\" or \"aarch64\", is ", Show(*arch)));
      }
      for (const auto& n : names) {
        const bool valid = n.is_string() && !n.get_ref<const std::string&>().empty() &&
                           n.get_ref<const std::string&>().size() <= 32 &&
                           std::all_of(n.get_ref<const std::string&>().begin(), n.get_ref<const std::string&>().end(),
                                       [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; });
        if (!valid) return Bad(apath, Cat("holds ", Show(n), "; each entry is an architecture such as \"aarch64\""));
        std::string name = Lower(n.get<std::string>());
        if (name == "amd64") name = "x86_64";
        if (name == "arm64") name = "aarch64";
        out.cpu_archs.push_back(std::move(name));
      }
    }
  }

  auto fallback = v.find("fallback_devices");
  if (fallback != v.end() && !fallback->is_null()) {
    if (!fallback->is_array()) return Bad(path + ".fallback_devices", Cat("must be a list of devices, is ", Show(*fallback)));
    if (fallback->size() > kMaxFallbackDevices) {
      return OverCap(path + ".fallback_devices", fallback->size(), kMaxFallbackDevices, "entries");
    }
    for (const auto& d : *fallback) {
      if (!d.is_string() || d.get_ref<const std::string&>().empty() || d.get_ref<const std::string&>().size() > 64) {
        return Bad(path + ".fallback_devices", Cat("holds ", Show(d), "; each entry is a device name such as \"cpu\""));
      }
      out.fallback_devices.push_back(Lower(d.get<std::string>()));
    }
  }
  return out;
}

// Leading dotted integers of a version string: "2026.4.1-20512-abc" -> {2026, 4, 1}.
bool ParseVersion(const std::string& s, std::vector<uint64_t>* out, size_t* out_consumed) {
  out->clear();
  size_t i = 0;
  while (true) {
    if (i >= s.size() || !std::isdigit(static_cast<unsigned char>(s[i]))) return false;
    uint64_t v = 0;
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) {
      if (v > (UINT64_MAX - 9) / 10) return false;
      v = v * 10 + static_cast<uint64_t>(s[i] - '0');
      ++i;
    }
    out->push_back(v);
    if (i + 1 < s.size() && s[i] == '.' && std::isdigit(static_cast<unsigned char>(s[i + 1]))) {
      ++i;
      continue;
    }
    if (out_consumed) *out_consumed = i;
    return true;
  }
}

// ">=2026.0" -> (">=", {2026, 0}); a bare version means ">=".
bool ParseRequirement(const std::string& requirement, std::string* out_op, std::vector<uint64_t>* out_version) {
  std::string req = requirement;
  req.erase(std::remove_if(req.begin(), req.end(), [](unsigned char c) { return std::isspace(c); }), req.end());
  *out_op = ">=";
  for (const char* candidate : {">=", "<=", "==", ">", "<"}) {
    if (req.rfind(candidate, 0) == 0) {
      *out_op = candidate;
      req = req.substr(out_op->size());
      break;
    }
  }
  // The whole rest must be the version: "1.2.3", not "1.2rc1" nor "1.2,<2".
  size_t consumed = 0;
  return ParseVersion(req, out_version, &consumed) && consumed == req.size();
}

int CompareVersions(std::vector<uint64_t> a, std::vector<uint64_t> b) {
  const size_t n = std::max(a.size(), b.size());
  a.resize(n, 0);
  b.resize(n, 0);
  return a < b ? -1 : (a == b ? 0 : 1);
}

}  // namespace

std::string TensorSpec::Describe() const {
  if (!value_type.empty()) return value_type;
  std::string s = Cat(DtypeName(dtype), "[");
  for (size_t d = 0; d < shape.size(); ++d) {
    if (d) s += ", ";
    if (shape[d] >= 0) {
      s += std::to_string(shape[d]);
    } else {
      s += dim_names[d] ? *dim_names[d] : "?";
    }
  }
  return s + "]";
}

void Model::Finalize() {
  for (auto* list : {&inputs, &outputs}) {
    for (TensorSpec& t : *list) {
      t.dim_name_ptrs.clear();
      for (const auto& n : t.dim_names) t.dim_name_ptrs.push_back(n ? n->c_str() : nullptr);
    }
  }
}

Result<std::unique_ptr<Model>> ParseModel(const nlohmann::json& manifest, const format::Bundle& bundle) {
  auto model_it = manifest.find("model");
  if (model_it == manifest.end()) return Bad("model", "is missing");
  if (!model_it->is_object()) return Bad("model", Cat("must be an object, is ", Show(*model_it)));
  auto model = std::make_unique<Model>();
  XRT_RETURN_IF_ERROR(OptionalString(*model_it, "name", "model", &model->name), "");
  XRT_ASSIGN_OR_RETURN(model->inputs, ParseTensors(*model_it, "inputs"), "");
  XRT_ASSIGN_OR_RETURN(model->outputs, ParseTensors(*model_it, "outputs"), "");

  auto variants = manifest.find("variants");
  if (variants == manifest.end()) return Bad("variants", "is missing");
  if (!variants->is_array()) return Bad("variants", Cat("must be an array, is ", Show(*variants)));
  if (variants->size() > kMaxVariants) return OverCap("variants", variants->size(), kMaxVariants, "entries");
  std::set<std::string> ids;
  for (size_t i = 0; i < variants->size(); ++i) {
    const std::string path = Cat("variants[", i, "]");
    XRT_ASSIGN_OR_RETURN(Variant v, ParseVariant((*variants)[i], path, bundle), "");
    if (!ids.insert(v.id).second) return Bad(path + ".id", Cat("\"", v.id, "\" is used twice"));
    model->variants.push_back(std::move(v));
  }
  model->Finalize();
  return model;
}


// A requirement is one or more comparisons joined by ',' (all must hold): ">=2026.0", ">=2024.4,<2027".
const char* HostCpuArch() {
#if defined(__x86_64__) || defined(_M_X64)
  return "x86_64";
#elif defined(__aarch64__) || defined(_M_ARM64)
  return "aarch64";
#elif defined(__arm__)
  return "arm";
#elif defined(__riscv) && __riscv_xlen == 64
  return "riscv64";
#elif defined(__powerpc64__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  return "ppc64le";
#else
  return "unknown";
#endif
}

bool VersionSatisfies(const std::string& version, const std::string& requirement, std::string* out_problem) {
  if (requirement.find(',') != std::string::npos) {
    for (const std::string& part : SplitRequirements(requirement)) {
      if (!VersionSatisfies(version, part, out_problem)) {
        if (out_problem->rfind("engine version ", 0) == 0) {
          *out_problem = Cat("engine version ", version, " does not satisfy ", requirement);
        }
        return false;
      }
    }
    return true;
  }
  std::string op;
  std::vector<uint64_t> want, have;
  if (!ParseRequirement(requirement, &op, &want)) {
    *out_problem = Cat("cannot interpret the version requirement \"", requirement, "\"");
    return false;
  }
  if (!ParseVersion(version, &have, nullptr)) {
    *out_problem = Cat("cannot interpret the engine version \"", version, "\"");
    return false;
  }
  const int c = CompareVersions(have, want);
  const bool ok = op == ">=" ? c >= 0 : op == "<=" ? c <= 0 : op == "==" ? c == 0 : op == ">" ? c > 0 : c < 0;
  if (!ok) *out_problem = Cat("engine version ", version, " does not satisfy ", requirement);
  return ok;
}

}  // namespace xrt::core
