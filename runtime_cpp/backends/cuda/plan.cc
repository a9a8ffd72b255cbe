// plan.cc - parsing and validation of the cuda plan (PLAN.md). Every error names the JSON path at fault.
#include "plan.h"

#include <cmath>
#include <cstring>
#include <set>

#include <nlohmann/json.hpp>

namespace xrt {
namespace cuda_backend {
namespace {

using nlohmann::json;

// Thrown inside the parser only; ParsePlan turns it into a PlanError.
struct Bad {
  std::string what;
};

[[noreturn]] void Fail(const std::string& path, const std::string& what) { throw Bad{path + ": " + what}; }

const json& Field(const json& obj, const char* key, const std::string& path) {
  if (!obj.is_object()) Fail(path, "must be an object");
  auto it = obj.find(key);
  if (it == obj.end()) Fail(path, std::string("missing \"") + key + "\"");
  return *it;
}

int64_t Int(const json& v, const std::string& path, int64_t lo, int64_t hi) {
  if (!v.is_number_integer()) Fail(path, "must be an integer, got " + v.dump());
  const int64_t x = v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)
                        ? INT64_MAX
                        : v.get<int64_t>();
  if (x < lo || x > hi) Fail(path, "is " + std::to_string(x) + ", outside [" + std::to_string(lo) + ", " +
                                       std::to_string(hi) + "]");
  return x;
}

uint64_t U64(const json& v, const std::string& path) {
  if (!v.is_number_unsigned() && !(v.is_number_integer() && v.get<int64_t>() >= 0)) {
    Fail(path, "must be a non-negative integer, got " + v.dump());
  }
  return v.get<uint64_t>();
}

std::string Str(const json& v, const std::string& path) {
  if (!v.is_string()) Fail(path, "must be a string, got " + v.dump());
  return v.get<std::string>();
}

const json& Array(const json& v, const std::string& path, size_t max_size = kMaxPlanItems) {
  if (!v.is_array()) Fail(path, "must be an array");
  if (v.size() > max_size) Fail(path, "has " + std::to_string(v.size()) + " entries, over the cap " +
                                          std::to_string(max_size));
  return v;
}

std::vector<std::string> Strings(const json& v, const std::string& path) {
  std::vector<std::string> out;
  for (size_t i = 0; i < Array(v, path).size(); ++i) out.push_back(Str(v[i], path + "[" + std::to_string(i) + "]"));
  return out;
}

Expr ParseExpr(const json& v, const std::map<std::string, int>& dims, const std::string& path, int depth) {
  if (depth > kMaxExprDepth) Fail(path, "expression nested deeper than " + std::to_string(kMaxExprDepth));
  Expr e;
  if (v.is_number_integer()) {
    e.kind = Expr::kConst;
    e.value = Int(v, path, 0, INT64_MAX);
    return e;
  }
  if (v.is_string()) {
    auto it = dims.find(v.get<std::string>());
    if (it == dims.end()) Fail(path, "names dim \"" + v.get<std::string>() + "\", which \"dims\" does not declare");
    e.kind = Expr::kDim;
    e.dim = it->second;
    return e;
  }
  if (v.is_object() && v.size() == 1) {
    const bool mul = v.contains("mul");
    if (mul || v.contains("cdiv")) {
      const json& args = Array(v.begin().value(), path + (mul ? ".mul" : ".cdiv"), 64);
      if (mul ? args.empty() : args.size() != 2) Fail(path, mul ? "mul needs operands" : "cdiv needs 2 operands");
      e.kind = mul ? Expr::kMul : Expr::kCdiv;
      for (size_t i = 0; i < args.size(); ++i) {
        e.args.push_back(ParseExpr(args[i], dims, path + "[" + std::to_string(i) + "]", depth + 1));
      }
      return e;
    }
  }
  Fail(path, "is not an expression (an integer, a dim name, {\"mul\": [...]} or {\"cdiv\": [a, b]}): " + v.dump());
}

xrt_dtype_t Dtype(const json& v, const std::string& path) {
  const std::string name = Str(v, path);
  const xrt_dtype_t d = xrt_dtype_from_name(name.c_str());
  if (d == XRT_DTYPE_INVALID) Fail(path, "unknown dtype \"" + name + "\"");
  return d;
}

int TensorId(const json& v, const Plan& plan, const std::string& path) {
  return static_cast<int>(Int(v, path, 0, static_cast<int64_t>(plan.tensors.size()) - 1));
}

std::vector<uint8_t> Hex(const std::string& s, const std::string& path) {
  if (s.size() % 2 != 0) Fail(path, "hex string of odd length");
  std::vector<uint8_t> out;
  for (size_t i = 0; i < s.size(); i += 2) {
    auto nib = [&](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      Fail(path, "is not hexadecimal");
    };
    out.push_back(static_cast<uint8_t>(nib(s[i]) * 16 + nib(s[i + 1])));
  }
  return out;
}

void CheckRegion(uint64_t offset, uint64_t size, uint64_t limit, const std::string& path, const std::string& what) {
  if (offset > limit || size > limit - offset) {
    Fail(path, "[" + std::to_string(offset) + ", +" + std::to_string(size) + ") lies outside the " + what + " (" +
                   std::to_string(limit) + " bytes)");
  }
}

void ParseInto(const json& j, uint64_t weights_size, uint64_t kernels_size, Plan* plan) {
  if (!j.is_object()) Fail("plan", "must be a JSON object");
  if (Str(Field(j, "format", "plan"), "plan.format") != "xrt-cuda-plan") Fail("plan.format", "is not xrt-cuda-plan");
  const int64_t version = Int(Field(j, "version", "plan"), "plan.version", 0, INT32_MAX);
  if (version != 1) {
    throw Bad{"plan.version is " + std::to_string(version) + "; this plugin reads version 1 (update xpuruntime)"};
  }
  plan->triton_version = j.contains("triton_version") ? Str(j["triton_version"], "plan.triton_version") : "";
  plan->archs = j.contains("archs") ? Strings(j["archs"], "plan.archs") : std::vector<std::string>{};

  std::map<std::string, int> dim_index;
  const json& dims = Field(j, "dims", "plan");
  if (!dims.is_object()) Fail("plan.dims", "must be an object");
  for (const auto& [name, spec] : dims.items()) {
    const std::string path = "plan.dims." + name;
    if (name.empty()) Fail(path, "empty dim name");
    DimSpec d{name, Int(Field(spec, "max", path), path + ".max", 1, kMaxDimValue - 1)};
    dim_index[name] = static_cast<int>(plan->dims.size());
    plan->dims.push_back(d);
  }

  const json& tensors = Array(Field(j, "tensors", "plan"), "plan.tensors");
  for (size_t i = 0; i < tensors.size(); ++i) {
    const std::string path = "plan.tensors[" + std::to_string(i) + "]";
    const json& t = tensors[i];
    TensorSpec s;
    s.name = t.contains("name") ? Str(t["name"], path + ".name") : "";
    s.dtype = Dtype(Field(t, "dtype", path), path + ".dtype");
    const json& shape = Array(Field(t, "shape", path), path + ".shape", XRT_MAX_RANK);
    for (size_t d = 0; d < shape.size(); ++d) {
      s.shape.push_back(ParseExpr(shape[d], dim_index, path + ".shape[" + std::to_string(d) + "]", 0));
    }
    const std::string storage = Str(Field(t, "storage", path), path + ".storage");
    if (storage == "input") s.storage = Storage::kInput;
    else if (storage == "output") s.storage = Storage::kOutput;
    else if (storage == "weight") s.storage = Storage::kWeight;
    else if (storage == "arena") s.storage = Storage::kArena;
    else Fail(path + ".storage", "is \"" + storage + "\"; expected input, output, weight or arena");
    s.offset = t.contains("offset") ? U64(t["offset"], path + ".offset") : 0;
    s.bytes_max = U64(Field(t, "bytes_max", path), path + ".bytes_max");
    plan->tensors.push_back(std::move(s));
  }
  plan->arena_bytes = U64(Field(j, "arena_bytes", "plan"), "plan.arena_bytes");
  // Optional: the sizes of the weights parts ("weights", "weights.1", ...) whose concatenation is the weights space.
  if (j.contains("weights_parts")) {
    const json& parts = Array(j["weights_parts"], "plan.weights_parts", kMaxWeightParts);
    uint64_t sum = 0;
    for (size_t i = 0; i < parts.size(); ++i) {
      const uint64_t bytes = U64(parts[i], "plan.weights_parts[" + std::to_string(i) + "]");
      if (__builtin_add_overflow(sum, bytes, &sum)) Fail("plan.weights_parts", "overflows 64 bits");
      plan->weights_parts.push_back(bytes);
    }
    if (parts.empty()) Fail("plan.weights_parts", "is empty (one part at least: \"weights\")");
    if (sum != weights_size) {
      Fail("plan.weights_parts", "sums to " + std::to_string(sum) + " bytes but the variant's weights parts hold " +
                                     std::to_string(weights_size));
    }
  }

  // Every tensor's bytes at the dims' max values must fit its region, and the region its buffer.
  std::vector<int64_t> max_values;
  for (const auto& d : plan->dims) max_values.push_back(d.max);
  for (size_t i = 0; i < plan->tensors.size(); ++i) {
    const std::string path = "plan.tensors[" + std::to_string(i) + "]";
    const TensorSpec& t = plan->tensors[i];
    uint64_t bytes = 0;
    if (!TensorBytes(*plan, static_cast<int>(i), max_values, &bytes)) Fail(path, "size overflows at the max dims");
    if (bytes > t.bytes_max) {
      Fail(path, "holds " + std::to_string(bytes) + " bytes at the max dims but bytes_max is " +
                     std::to_string(t.bytes_max));
    }
    if (t.storage == Storage::kWeight) {
      for (const auto& e : t.shape) {
        if (e.kind != Expr::kConst) Fail(path, "a weight must have a static shape");
      }
      CheckRegion(t.offset, t.bytes_max, weights_size, path, "weights artifact");
    } else if (t.storage == Storage::kArena) {
      CheckRegion(t.offset, t.bytes_max, plan->arena_bytes, path, "arena (arena_bytes)");
    } else if (t.offset != 0) {
      Fail(path + ".offset", "must be 0 for an input or output");
    }
  }

  // inputs/outputs: each io tensor exactly once, in the manifest's order.
  std::set<int> io_seen;
  for (const char* key : {"inputs", "outputs"}) {
    const bool in = std::strcmp(key, "inputs") == 0;
    const json& ids = Array(Field(j, key, "plan"), std::string("plan.") + key);
    for (size_t i = 0; i < ids.size(); ++i) {
      const std::string path = std::string("plan.") + key + "[" + std::to_string(i) + "]";
      const int id = TensorId(ids[i], *plan, path);
      if (plan->tensors[id].storage != (in ? Storage::kInput : Storage::kOutput)) {
        Fail(path, "tensor " + std::to_string(id) + " does not have storage \"" + (in ? "input" : "output") + "\"");
      }
      if (!io_seen.insert(id).second) Fail(path, "tensor " + std::to_string(id) + " is listed twice");
      (in ? plan->inputs : plan->outputs).push_back(id);
    }
  }
  for (size_t i = 0; i < plan->tensors.size(); ++i) {
    const Storage s = plan->tensors[i].storage;
    if ((s == Storage::kInput || s == Storage::kOutput) && !io_seen.count(static_cast<int>(i))) {
      Fail("plan.tensors[" + std::to_string(i) + "]", "is an input/output missing from plan.inputs/outputs");
    }
  }

  const json& kernels = Array(Field(j, "kernels", "plan"), "plan.kernels");
  for (size_t i = 0; i < kernels.size(); ++i) {
    const std::string path = "plan.kernels[" + std::to_string(i) + "]";
    const json& k = kernels[i];
    KernelSpec s;
    s.entry = Str(Field(k, "entry", path), path + ".entry");
    if (s.entry.empty() || s.entry.find('\0') != std::string::npos) Fail(path + ".entry", "is empty or has a NUL");
    s.num_warps = static_cast<int>(Int(Field(k, "num_warps", path), path + ".num_warps", 1, 32));
    s.shared_mem = static_cast<int>(Int(Field(k, "shared_mem", path), path + ".shared_mem", 0, 1 << 20));
    const json& params = Array(Field(k, "params", path), path + ".params", 256);
    for (size_t p = 0; p < params.size(); ++p) {
      const std::string pp = path + ".params[" + std::to_string(p) + "]";
      const json& v = params[p];
      if (!v.is_object() || v.size() != 1) Fail(pp, "must be an object with one key: tensor, dim, scalar or scratch");
      ParamSpec ps;
      if (v.contains("tensor")) {
        ps.kind = ParamSpec::kTensor;
        ps.tensor = TensorId(v["tensor"], *plan, pp + ".tensor");
      } else if (v.contains("dim")) {
        ps.kind = ParamSpec::kDim;
        ps.dim = ParseExpr(v["dim"], dim_index, pp + ".dim", 0);
      } else if (v.contains("scalar")) {
        ps.kind = ParamSpec::kScalar;
        const json& sc = v["scalar"];
        ps.scalar_dtype = Dtype(Field(sc, "dtype", pp + ".scalar"), pp + ".scalar.dtype");
        const json& value = Field(sc, "value", pp + ".scalar");
        if (!value.is_number()) Fail(pp + ".scalar.value", "must be a number");
        switch (ps.scalar_dtype) {
          case XRT_DTYPE_FLOAT32: case XRT_DTYPE_FLOAT64: ps.scalar_value = value.get<double>(); break;
          case XRT_DTYPE_INT32:
            ps.scalar_int = Int(value, pp + ".scalar.value", INT32_MIN, INT32_MAX); break;
          case XRT_DTYPE_INT64: ps.scalar_int = Int(value, pp + ".scalar.value", INT64_MIN, INT64_MAX); break;
          default: Fail(pp + ".scalar.dtype", "must be float32, float64, int32 or int64");
        }
      } else if (v.contains("scratch")) {
        ps.kind = ParamSpec::kScratch;
        const std::string which = Str(v["scratch"], pp + ".scratch");
        if (which != "global" && which != "profile") Fail(pp + ".scratch", "must be \"global\" or \"profile\"");
      } else {
        Fail(pp, "has no tensor, dim, scalar or scratch key");
      }
      s.params.push_back(std::move(ps));
    }
    const json& images = Field(k, "images", path);
    if (!images.is_object() || images.empty()) Fail(path + ".images", "must be a non-empty object");
    for (const auto& [arch, range] : images.items()) {
      const std::string ip = path + ".images." + arch;
      if (!range.is_array() || range.size() != 2) Fail(ip, "must be [offset, size]");
      const uint64_t off = U64(range[0], ip + "[0]"), size = U64(range[1], ip + "[1]");
      if (size == 0) Fail(ip, "is empty");
      CheckRegion(off, size, kernels_size, ip, "kernels artifact");
      s.images[arch] = {off, size};
    }
    s.pdl_archs = k.contains("pdl_archs") ? Strings(k["pdl_archs"], path + ".pdl_archs") : s.pdl_archs;
    for (const auto& arch : s.pdl_archs) {
      if (arch == "ptx" || !s.images.count(arch)) Fail(path + ".pdl_archs", "names " + arch + ", not a cubin image");
    }
    s.group = k.contains("group") ? Str(k["group"], path + ".group") : "";
    s.onnx_nodes = k.contains("onnx_nodes") ? Strings(k["onnx_nodes"], path + ".onnx_nodes") : s.onnx_nodes;
    s.source_sha256 = k.contains("source_sha256") ? Str(k["source_sha256"], path + ".source_sha256") : "";
    plan->kernels.push_back(std::move(s));
  }

  const json& gemms = Array(Field(j, "gemms", "plan"), "plan.gemms");
  for (size_t i = 0; i < gemms.size(); ++i) {
    const std::string path = "plan.gemms[" + std::to_string(i) + "]";
    const json& g = gemms[i];
    GemmSpec s;
    s.m = ParseExpr(Field(g, "m", path), dim_index, path + ".m", 0);
    s.n = Int(Field(g, "n", path), path + ".n", 1, INT32_MAX);
    s.k = Int(Field(g, "k", path), path + ".k", 1, INT32_MAX);
    s.a = TensorId(Field(g, "a", path), *plan, path + ".a");
    s.b = TensorId(Field(g, "b", path), *plan, path + ".b");
    s.c = TensorId(Field(g, "c", path), *plan, path + ".c");
    if (g.contains("bias") && !g["bias"].is_null()) s.bias = TensorId(g["bias"], *plan, path + ".bias");
    s.trans_a = g.contains("trans_a") && g["trans_a"].is_boolean() && g["trans_a"].get<bool>();
    s.trans_b = g.contains("trans_b") && g["trans_b"].is_boolean() && g["trans_b"].get<bool>();
    s.dtype = Dtype(Field(g, "dtype", path), path + ".dtype");
    if (s.dtype != XRT_DTYPE_FLOAT16 && s.dtype != XRT_DTYPE_BFLOAT16 && s.dtype != XRT_DTYPE_FLOAT32) {
      Fail(path + ".dtype", "must be float16, bfloat16 or float32");
    }
    s.compute = g.contains("compute") ? Str(g["compute"], path + ".compute") : "32F";
    if (s.compute != "32F" && s.compute != "32F_FAST_TF32" && s.compute != "16F") {
      Fail(path + ".compute", "is \"" + s.compute + "\"; expected 32F, 32F_FAST_TF32 or 16F");
    }
    if (s.compute == "16F" && s.dtype != XRT_DTYPE_FLOAT16) Fail(path + ".compute", "16F needs dtype float16");
    if (s.compute == "32F_FAST_TF32" && s.dtype != XRT_DTYPE_FLOAT32) Fail(path + ".compute", "TF32 needs float32");
    s.epilogue = g.contains("epilogue") ? Str(g["epilogue"], path + ".epilogue") : "none";
    const bool with_bias = s.epilogue == "bias" || s.epilogue == "gelu_bias" || s.epilogue == "relu_bias";
    if (!with_bias && s.epilogue != "none" && s.epilogue != "relu" && s.epilogue != "gelu") {
      Fail(path + ".epilogue", "is \"" + s.epilogue + "\"; expected none, bias, relu, relu_bias, gelu or gelu_bias");
    }
    if (with_bias != (s.bias >= 0)) Fail(path, "bias must be given exactly when the epilogue uses it");
    if (g.contains("alpha")) {
      if (!g["alpha"].is_number()) Fail(path + ".alpha", "must be a number");
      s.alpha = g["alpha"].get<float>();
      if (!std::isfinite(s.alpha)) Fail(path + ".alpha", "must be finite");
    }
    for (int id : {s.a, s.b, s.c, s.bias}) {
      if (id >= 0 && plan->tensors[id].dtype != s.dtype) {
        Fail(path, "operand tensor " + std::to_string(id) + " is " + xrt_dtype_name(plan->tensors[id].dtype) +
                       ", the GEMM is " + xrt_dtype_name(s.dtype));
      }
    }
    const Storage cs = plan->tensors[s.c].storage;
    if (cs != Storage::kArena && cs != Storage::kOutput) Fail(path + ".c", "must be an arena or output tensor");
    if (g.contains("algo") && g["algo"].is_object()) {
      const json& algo = g["algo"];
      s.algo_source = algo.contains("source") ? Str(algo["source"], path + ".algo.source") : "heuristic";
      if (algo.contains("config") && !algo["config"].is_null()) {
        s.algo_config = Hex(Str(algo["config"], path + ".algo.config"), path + ".algo.config");
        if (s.algo_config.size() != 64) Fail(path + ".algo.config", "must be 64 bytes (cublasLtMatmulAlgo_t)");
      }
    }
    s.onnx_nodes = g.contains("onnx_nodes") ? Strings(g["onnx_nodes"], path + ".onnx_nodes") : s.onnx_nodes;
    if (g.contains("stand_in")) {  // its Triton twin: static plans only, reading and writing only the operands
      const json& si = g["stand_in"];
      const std::string sp = path + ".stand_in";
      if (!plan->dims.empty()) Fail(sp, "is only allowed in a static plan (no dims)");
      if (!si.is_object()) Fail(sp, "must be {\"kernel\": i, \"grid\": [x, y, z]}");
      s.stand_in = static_cast<int>(Int(Field(si, "kernel", sp), sp + ".kernel", 0,
                                        static_cast<int64_t>(plan->kernels.size()) - 1));
      const json& grid = Field(si, "grid", sp);
      if (!grid.is_array() || grid.size() != 3) Fail(sp + ".grid", "must be [x, y, z]");
      for (int d = 0; d < 3; ++d) {
        s.stand_in_grid[d] = Int(grid[d], sp + ".grid[" + std::to_string(d) + "]", 1, d == 0 ? INT32_MAX : 65535);
      }
      for (const ParamSpec& p : plan->kernels[s.stand_in].params) {
        if (p.kind == ParamSpec::kDim) Fail(sp, "its kernel takes a dim parameter (stand-ins are static)");
        if (p.kind == ParamSpec::kTensor && p.tensor != s.a && p.tensor != s.b && p.tensor != s.c &&
            p.tensor != s.bias) {
          Fail(sp, "its kernel touches tensor " + std::to_string(p.tensor) + ", not one of the GEMM's operands");
        }
      }
    }
    s.library = g.contains("library") ? Str(g["library"], path + ".library") : "cublasLt";
    if (s.library != "cublasLt" && s.library != "cublas") {
      Fail(path + ".library", "is \"" + s.library + "\"; expected cublasLt or cublas");
    }
    if (s.library == "cublas") {  // a plain cublasGemmEx: what it cannot do is refused here, not at run time
      if (s.epilogue != "none") Fail(path + ".epilogue", "must be none for a cublas GEMM");
      if (s.compute == "16F") Fail(path + ".compute", "must be 32F or 32F_FAST_TF32 for a cublas GEMM");
      if (!s.algo_config.empty()) Fail(path + ".algo.config", "is a cuBLASLt algorithm; a cublas GEMM has none");
      if (s.stand_in >= 0) Fail(path + ".stand_in", "is not allowed for a cublas GEMM (the library runs from the start)");
    }
    if (i > 0 && s.library != plan->gemms[0].library) {
      Fail(path + ".library", "differs from plan.gemms[0]'s (a plan's GEMMs all run on one library)");
    }
    if (i > 0 && (s.stand_in >= 0) != (plan->gemms[0].stand_in >= 0)) {
      Fail(path + ".stand_in", "is given for some GEMMs and not others (one for every GEMM or none)");
    }
    plan->gemms.push_back(std::move(s));
  }

  const json& launches = Array(Field(j, "launches", "plan"), "plan.launches");
  for (size_t i = 0; i < launches.size(); ++i) {
    const std::string path = "plan.launches[" + std::to_string(i) + "]";
    const json& l = launches[i];
    LaunchSpec s;
    if (l.is_object() && l.contains("kernel")) {
      s.is_kernel = true;
      s.index = static_cast<int>(Int(l["kernel"], path + ".kernel", 0, static_cast<int64_t>(plan->kernels.size()) - 1));
      const json& grid = Field(l, "grid", path);
      if (!grid.is_array() || grid.size() != 3) Fail(path + ".grid", "must be [x, y, z]");
      for (int d = 0; d < 3; ++d) {
        s.grid[d] = ParseExpr(grid[d], dim_index, path + ".grid[" + std::to_string(d) + "]", 0);
      }
    } else if (l.is_object() && l.contains("gemm")) {
      s.is_kernel = false;
      s.index = static_cast<int>(Int(l["gemm"], path + ".gemm", 0, static_cast<int64_t>(plan->gemms.size()) - 1));
    } else {
      Fail(path, "must be {\"kernel\": i, \"grid\": [...]} or {\"gemm\": j}");
    }
    plan->launches.push_back(std::move(s));
  }
}

bool MulOk(int64_t a, int64_t b, int64_t* out) { return !__builtin_mul_overflow(a, b, out); }

}  // namespace

size_t ParamSpec::Size() const {
  switch (kind) {
    case kTensor: case kScratch: return 8;
    case kDim: return 4;
    case kScalar: return (scalar_dtype == XRT_DTYPE_INT64 || scalar_dtype == XRT_DTYPE_FLOAT64) ? 8 : 4;
  }
  return 0;
}

bool Eval(const Expr& e, const std::vector<int64_t>& values, int64_t* out) {
  switch (e.kind) {
    case Expr::kConst: *out = e.value; return true;
    case Expr::kDim:
      if (e.dim < 0 || static_cast<size_t>(e.dim) >= values.size()) return false;
      *out = values[e.dim];
      return true;
    case Expr::kMul: {
      int64_t acc = 1;
      for (const auto& a : e.args) {
        int64_t v = 0;
        if (!Eval(a, values, &v) || !MulOk(acc, v, &acc)) return false;
      }
      *out = acc;
      return true;
    }
    case Expr::kCdiv: {
      int64_t a = 0, b = 0;
      if (e.args.size() != 2 || !Eval(e.args[0], values, &a) || !Eval(e.args[1], values, &b) || b <= 0 || a < 0) {
        return false;
      }
      *out = a / b + (a % b != 0);
      return true;
    }
  }
  return false;
}

bool TensorBytes(const Plan& plan, int id, const std::vector<int64_t>& values, uint64_t* out) {
  const TensorSpec& t = plan.tensors[id];
  int64_t n = static_cast<int64_t>(xrt_dtype_size(t.dtype));
  for (const auto& e : t.shape) {
    int64_t d = 0;
    if (!Eval(e, values, &d) || d < 0 || !MulOk(n, d, &n)) return false;
  }
  *out = static_cast<uint64_t>(n);
  return true;
}

PlanError ParsePlan(const std::string& text, uint64_t weights_size, uint64_t kernels_size, Plan* out) {
  const json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return {XRT_STATUS_DATA_CORRUPT, "cuda: the plan is not valid JSON (rebuild the bundle)"};
  try {
    Plan plan;
    ParseInto(j, weights_size, kernels_size, &plan);
    *out = std::move(plan);
    return {};
  } catch (const Bad& bad) {
    const xrt_status_code_t code =
        bad.what.rfind("plan.version", 0) == 0 ? XRT_STATUS_INCOMPATIBLE : XRT_STATUS_DATA_CORRUPT;
    return {code, "cuda: invalid plan: " + bad.what + " (rebuild the bundle with xrtc --target cuda)"};
  } catch (const std::exception& e) {
    return {XRT_STATUS_DATA_CORRUPT, std::string("cuda: invalid plan: ") + e.what()};
  }
}

std::string DimsKey(const Plan& plan, const std::vector<int64_t>& values) {
  std::string key;
  for (size_t i = 0; i < plan.dims.size() && i < values.size(); ++i) {
    if (!key.empty()) key += ",";
    key += plan.dims[i].name + "=" + std::to_string(values[i]);
  }
  return key;
}

PlanError BindDims(const Plan& plan, const xrt_tensor_view_t* inputs, size_t input_count,
                   std::vector<int64_t>* out_values) {
  if (input_count != plan.inputs.size()) {
    return {XRT_STATUS_INVALID_ARGUMENT, "cuda: the plan takes " + std::to_string(plan.inputs.size()) +
                                             " inputs, execute got " + std::to_string(input_count)};
  }
  std::vector<int64_t> values(plan.dims.size(), -1);
  auto shape_text = [](const xrt_tensor_view_t& v) {
    std::string s = "[";
    for (uint32_t d = 0; d < v.rank; ++d) s += (d ? "," : "") + std::to_string(v.shape[d]);
    return s + "]";
  };
  // First pass binds bare dims; the second checks every expression against the given shape.
  for (int pass = 0; pass < 2; ++pass) {
    for (size_t i = 0; i < input_count; ++i) {
      const TensorSpec& t = plan.tensors[plan.inputs[i]];
      const xrt_tensor_view_t& v = inputs[i];
      if (v.rank != t.shape.size() || (v.rank != 0 && v.shape == nullptr) || v.dtype != t.dtype) {
        return {XRT_STATUS_INVALID_ARGUMENT, "cuda: input " + std::to_string(i) + " (" + t.name + ") must be " +
                                                 xrt_dtype_name(t.dtype) + " of rank " +
                                                 std::to_string(t.shape.size())};
      }
      for (uint32_t d = 0; d < v.rank; ++d) {
        const Expr& e = t.shape[d];
        if (pass == 0 && e.kind == Expr::kDim) {
          const DimSpec& dim = plan.dims[e.dim];
          const int64_t given = v.shape[d];
          if (given < 1 || given > dim.max) {
            return {XRT_STATUS_INVALID_ARGUMENT, "cuda: input " + t.name + " " + shape_text(v) + ": dim " +
                                                     dim.name + " = " + std::to_string(given) +
                                                     " is outside [1, " + std::to_string(dim.max) +
                                                     "], the range this bundle was compiled for"};
          }
          if (values[e.dim] >= 0 && values[e.dim] != given) {
            return {XRT_STATUS_INVALID_ARGUMENT, "cuda: dim " + dim.name + " is " + std::to_string(values[e.dim]) +
                                                     " in one input and " + std::to_string(given) + " in " + t.name};
          }
          values[e.dim] = given;
        } else if (pass == 1) {
          int64_t want = 0;
          if (!Eval(e, values, &want) || want != v.shape[d]) {
            return {XRT_STATUS_INVALID_ARGUMENT, "cuda: input " + t.name + " has shape " + shape_text(v) +
                                                     ", which does not match the plan's shape at dim " +
                                                     std::to_string(d)};
          }
        }
      }
    }
    if (pass == 0) {
      for (size_t d = 0; d < values.size(); ++d) {
        if (values[d] < 0) {
          return {XRT_STATUS_INVALID_ARGUMENT, "cuda: dim " + plan.dims[d].name +
                                                   " is not the dim of any input (the plan is malformed)"};
        }
      }
    }
  }
  *out_values = std::move(values);
  return {};
}

PlanError CheckBinding(const Plan& plan, const std::vector<int64_t>& values) {
  const std::string at = " at " + DimsKey(plan, values) + " (the bundle is malformed; rebuild it)";
  std::vector<uint64_t> bytes(plan.tensors.size());
  for (size_t i = 0; i < plan.tensors.size(); ++i) {
    if (!TensorBytes(plan, static_cast<int>(i), values, &bytes[i]) || bytes[i] > plan.tensors[i].bytes_max) {
      return {XRT_STATUS_DATA_CORRUPT, "cuda: tensor " + std::to_string(i) + " (" + plan.tensors[i].name +
                                           ") outgrows its bytes_max" + at};
    }
  }
  for (size_t i = 0; i < plan.gemms.size(); ++i) {
    const GemmSpec& g = plan.gemms[i];
    int64_t m = 0;
    const int64_t es = static_cast<int64_t>(xrt_dtype_size(g.dtype));
    int64_t a = 0, b = 0, c = 0, t = 0;
    const bool ok = Eval(g.m, values, &m) && m >= 1 && m <= INT32_MAX && MulOk(m, g.k, &t) && MulOk(t, es, &a) &&
                    MulOk(g.k, g.n, &t) && MulOk(t, es, &b) && MulOk(m, g.n, &t) && MulOk(t, es, &c);
    const auto within = [&](int id, int64_t need) {
      return id < 0 || static_cast<uint64_t>(need) <= plan.tensors[id].bytes_max;
    };
    if (!ok || !within(g.a, a) || !within(g.b, b) || !within(g.c, c) || !within(g.bias, g.n * es)) {
      return {XRT_STATUS_DATA_CORRUPT, "cuda: gemm " + std::to_string(i) + " reaches past an operand's region" + at};
    }
  }
  for (size_t i = 0; i < plan.launches.size(); ++i) {
    const LaunchSpec& l = plan.launches[i];
    if (!l.is_kernel) continue;
    for (int d = 0; d < 3; ++d) {
      int64_t v = 0;
      const int64_t limit = d == 0 ? INT32_MAX : 65535;
      if (!Eval(l.grid[d], values, &v) || v < 1 || v > limit) {
        return {XRT_STATUS_DATA_CORRUPT, "cuda: launch " + std::to_string(i) + " has grid[" + std::to_string(d) +
                                             "] outside [1, " + std::to_string(limit) + "]" + at};
      }
    }
    for (const ParamSpec& p : plan.kernels[l.index].params) {
      int64_t v = 0;
      if (p.kind == ParamSpec::kDim && (!Eval(p.dim, values, &v) || v > INT32_MAX || v < INT32_MIN)) {
        return {XRT_STATUS_DATA_CORRUPT, "cuda: launch " + std::to_string(i) + ": a dim parameter is not an int32" + at};
      }
    }
  }
  return {};
}

}  // namespace cuda_backend
}  // namespace xrt
