// xrt-run: runs an .xrtpkg bundle through libxrt from the command line (the C++ counterpart of `xrtc run`, in the
// spirit of trtexec): load, run once on given or random inputs, print the decision and the outputs, optionally save
// the outputs and benchmark. See Usage() for flags and exit codes.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <limits>
#include <memory>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "npy_io.h"
#include "profile_report.h"
#include "xrt/xrt.h"

namespace xrt {
namespace tools {
namespace {

using Clock = std::chrono::steady_clock;
using Json = nlohmann::ordered_json;

constexpr int kExitOk = 0;
constexpr int kExitRuntime = 1;
constexpr int kExitUsage = 2;
constexpr int kExitIncompatible = 5;
constexpr int kExitExists = 11;
// The engine the Python loader registers (through ONNX Runtime's Python API); C/C++ processes do not have it.
constexpr char kPythonOnlyEngine[] = "onnxruntime";

const char kUsage[] =
    "usage: xrt-run BUNDLE [options]\n"
    "\n"
    "Runs an .xrtpkg bundle once (or benchmarks it) and prints which variant ran, why, and its outputs.\n"
    "\n"
    "inputs (default: random inputs from the bundle's input info; floats ~ N(0,1), ints in [0,100), random bools):\n"
    "  --inputs FILE.npz        arrays keyed by input name, or the corpus layout (__names__ + in0, in1, ...)\n"
    "  --max-input-bytes N      refuse an --inputs archive whose arrays decompress to more (default 2 GiB)\n"
    "  --input NAME=FILE.npy    one input (repeatable; overrides the same name from --inputs)\n"
    "  --shape NAME=1x3x224x224 shape of a random input with dynamic dims (repeatable)\n"
    "  --seed S                 seed for random inputs (default 0; the same inputs as xrtc run --seed)\n"
    "selection:\n"
    "  --device D               cpu (default), cuda, gpu, npu: the device a variant is built for\n"
    "  --fallback D[,D]         devices to try when D has no usable variant; 'none' for none (default: the\n"
    "                           bundle's chain, e.g. an npu-intel variant falls back to cpu)\n"
    "  --cache-dir DIR          engine compile cache for variants compiled at load (NPU, CPU without a blob)\n"
    "  --engine E               only this engine (openvino, onnxruntime, ...)\n"
    "  --variant ID             exactly this variant\n"
    "signatures:\n"
    "  --trusted-key NAME.pub   accept only bundles signed by this Ed25519 key (repeatable; `xrtc keygen` writes\n"
    "                           NAME.pub: 64 hex characters)\n"
    "  --require-signature      refuse unsigned bundles (any valid signer unless --trusted-key is given)\n"
    "outputs:\n"
    "  --save-outputs OUT.npz   write the outputs (uncompressed .npz, keys = output names), atomically\n"
    "  --force                  overwrite OUT.npz if it exists\n"
    "benchmark:\n"
    "  --bench N                after the first run, N timed runs: p50/p90/p99/min/mean in ms\n"
    "  --warmup N               untimed runs before the timed ones (default 10; needs --bench)\n"
    "profile (the engine's own profiler: OpenVINO per-layer counters, cuda per-launch events; it slows runs):\n"
    "  --profile TRACE.json     after the first run, --profile-runs runs with the engine's profiler: prints the\n"
    "                           top entries with the ONNX nodes each ran (as `xrtc profile`) and writes a Chrome\n"
    "                           trace (ui.perfetto.dev, chrome://tracing); --json adds the profile to the report\n"
    "  --profile-runs N         profiled runs to average (default 20)\n"
    "  --top N                  entries in the table (default 15)\n"
    "reporting:\n"
    "  --quiet                  print only errors and the final PASSED/FAILED line\n"
    "  --json                   print one JSON object on stdout (PASSED/FAILED goes to stderr)\n"
    "  -h, --help               this text\n"
    "\n"
    "exit codes: 0 ok; 1 runtime error (missing/corrupt bundle, untrusted or unsigned bundle under a signature\n"
    "policy (PERMISSION_DENIED), engine failure); 2 usage error or bad inputs\n"
    "(INVALID_ARGUMENT); 5 bundle incompatible with this runtime/device or backend unavailable (INCOMPATIBLE,\n"
    "UNAVAILABLE); 11 the output file exists (ALREADY_EXISTS).\n";

// An error carrying an xrt status code; main() prints it and maps the code to the exit code.
class ToolError : public std::runtime_error {
 public:
  ToolError(xrt_status_code_t code, const std::string& message) : std::runtime_error(message), code_(code) {}
  xrt_status_code_t code() const { return code_; }

 private:
  xrt_status_code_t code_;
};

// A command-line mistake: exit 2, with a hint to --help.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

int ExitCodeFor(xrt_status_code_t code) {
  switch (code) {
    case XRT_STATUS_OK: return kExitOk;
    case XRT_STATUS_INVALID_ARGUMENT: return kExitUsage;
    case XRT_STATUS_UNAVAILABLE:
    case XRT_STATUS_INCOMPATIBLE: return kExitIncompatible;
    case XRT_STATUS_ALREADY_EXISTS: return kExitExists;
    default: return kExitRuntime;
  }
}

// Takes ownership of `status`; throws ToolError when it is not OK.
void Check(xrt_status_t status, const std::string& context = "") {
  if (status == nullptr) return;
  const xrt_status_code_t code = xrt_status_code(status);
  std::string message = xrt_status_message(status);
  xrt_status_free(status);
  throw ToolError(code, context.empty() ? message : context + ": " + message);
}

struct BundleDeleter {
  void operator()(xrt_bundle_t* b) const { xrt_bundle_release(b); }
};
struct SessionDeleter {
  void operator()(xrt_session_t* s) const { xrt_session_release(s); }
};
struct OutputsDeleter {
  void operator()(xrt_outputs_t* o) const { xrt_outputs_release(o); }
};
using BundlePtr = std::unique_ptr<xrt_bundle_t, BundleDeleter>;
using SessionPtr = std::unique_ptr<xrt_session_t, SessionDeleter>;
using OutputsPtr = std::unique_ptr<xrt_outputs_t, OutputsDeleter>;

double MsSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

// ---- Command line --------------------------------------------------------------------------------------------------

struct Options {
  std::string bundle;
  std::string inputs_npz;
  std::vector<std::pair<std::string, std::string>> input_files;  // name, path
  std::vector<std::pair<std::string, std::vector<int64_t>>> shapes;
  std::string device = "cpu";
  bool fallback_given = false;  // false: the bundle's chain
  std::string fallback;         // ','-separated devices; "" with fallback_given: none
  std::string cache_dir;
  std::string engine;
  std::string variant;
  std::string save_outputs;
  bool force = false;
  bool quiet = false;
  bool json = false;
  bool help = false;
  int64_t bench = 0;
  int64_t warmup = 10;
  std::string profile;  // the trace file of --profile; "" = no profiling
  int64_t profile_runs = 20;
  int64_t top = 15;
  bool warmup_given = false;
  uint64_t seed = 0;
  uint64_t max_input_bytes = kDefaultMaxNpzBytes;
  std::vector<uint8_t> trusted_keys;  // 32 bytes per --trusted-key, back to back
  size_t trusted_key_count = 0;
  bool require_signature = false;
};

uint64_t ParseUnsigned(const std::string& flag, const std::string& text, uint64_t max) {
  if (text.empty() || text.size() > 20 || text.find_first_not_of("0123456789") != std::string::npos) {
    throw UsageError(flag + " expects a non-negative integer, got '" + text + "'");
  }
  uint64_t v = 0;
  for (char c : text) {
    const uint64_t digit = static_cast<uint64_t>(c - '0');
    if (v > (std::numeric_limits<uint64_t>::max() - digit) / 10) {
      throw UsageError(flag + ": '" + text + "' is too large");
    }
    v = v * 10 + digit;
  }
  if (v > max) throw UsageError(flag + ": '" + text + "' is too large (at most " + std::to_string(max) + ")");
  return v;
}

// "NAME=VALUE" split at the first '=' (split_last: at the last one).
std::pair<std::string, std::string> SplitAssignment(const std::string& flag, const std::string& text,
                                                    const char* example, bool split_last = false) {
  const size_t eq = split_last ? text.rfind('=') : text.find('=');
  if (eq == std::string::npos || eq == 0) {
    throw UsageError(flag + " expects NAME=" + example + ", got '" + text + "'");
  }
  return {text.substr(0, eq), text.substr(eq + 1)};
}

std::vector<int64_t> ParseDims(const std::string& flag, const std::string& text) {
  std::vector<int64_t> dims;
  if (text.empty()) return dims;  // A scalar.
  size_t start = 0;
  while (true) {
    const size_t x = text.find('x', start);
    const std::string part = text.substr(start, x == std::string::npos ? std::string::npos : x - start);
    dims.push_back(static_cast<int64_t>(
        ParseUnsigned(flag, part, static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))));
    if (x == std::string::npos) break;
    start = x + 1;
  }
  if (dims.size() > XRT_MAX_RANK) throw UsageError(flag + ": rank above " + std::to_string(XRT_MAX_RANK));
  return dims;
}

// A public key file of `xrtc keygen`: 64 hex characters (surrounding whitespace ignored) -> 32 raw bytes.
void ReadPublicKeyFile(const std::string& path, std::vector<uint8_t>* out_keys) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) {
    throw UsageError("--trusted-key " + path + ": cannot open: " + std::strerror(errno));
  }
  char buffer[4096];
  const size_t n = std::fread(buffer, 1, sizeof(buffer), f);
  std::fclose(f);
  std::string text(buffer, n);
  const size_t first = text.find_first_not_of(" \t\r\n");
  const size_t last = text.find_last_not_of(" \t\r\n");
  text = first == std::string::npos ? "" : text.substr(first, last - first + 1);
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  bool ok = text.size() == 64;
  for (size_t i = 0; ok && i < text.size(); ++i) ok = hex(text[i]) >= 0;
  if (!ok) {
    throw UsageError("--trusted-key " + path + " is not an Ed25519 public key: expected 64 hex characters (as " +
                     "written by `xrtc keygen` into NAME.pub)");
  }
  for (size_t i = 0; i < 64; i += 2) {
    out_keys->push_back(static_cast<uint8_t>(hex(text[i]) * 16 + hex(text[i + 1])));
  }
}

Options ParseArgs(int argc, char** argv) {
  Options o;
  const std::vector<std::string> valued = {"--inputs", "--input",        "--shape", "--device", "--engine",
                                           "--variant", "--save-outputs", "--bench", "--warmup", "--seed",
                                           "--trusted-key", "--fallback", "--cache-dir", "--max-input-bytes",
                                           "--profile", "--profile-runs", "--top"};
  const std::vector<std::string> boolean = {"--force", "--quiet", "--json", "--help", "--require-signature"};
  bool positional_only = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (positional_only || arg.empty() || arg[0] != '-' || arg == "-") {
      if (!o.bundle.empty()) throw UsageError("unexpected argument '" + arg + "' (only one BUNDLE is accepted)");
      o.bundle = arg;
      continue;
    }
    if (arg == "--") {
      positional_only = true;
      continue;
    }
    if (arg == "-h") arg = "--help";
    std::string flag = arg;
    std::optional<std::string> value;
    const size_t eq = arg.find('=');
    if (eq != std::string::npos) {
      flag = arg.substr(0, eq);
      value = arg.substr(eq + 1);
    }
    const bool is_valued = std::find(valued.begin(), valued.end(), flag) != valued.end();
    const bool is_bool = std::find(boolean.begin(), boolean.end(), flag) != boolean.end();
    if (!is_valued && !is_bool) throw UsageError("unknown option '" + flag + "'");
    if (is_bool) {
      if (value) throw UsageError(flag + " takes no value");
      if (flag == "--force") o.force = true;
      if (flag == "--quiet") o.quiet = true;
      if (flag == "--json") o.json = true;
      if (flag == "--help") o.help = true;
      if (flag == "--require-signature") o.require_signature = true;
      continue;
    }
    if (!value) {
      if (i + 1 >= argc) throw UsageError(flag + " needs a value");
      value = argv[++i];
    }
    const std::string& v = *value;
    if (flag == "--inputs") {
      if (!o.inputs_npz.empty()) throw UsageError("--inputs given twice");
      o.inputs_npz = v;
    } else if (flag == "--input") {
      o.input_files.push_back(SplitAssignment(flag, v, "FILE.npy"));
    } else if (flag == "--shape") {
      auto [name, dims] = SplitAssignment(flag, v, "1x3x224x224", /*split_last=*/true);
      o.shapes.emplace_back(name, ParseDims(flag, dims));
    } else if (flag == "--device") {
      o.device = v;
    } else if (flag == "--fallback") {
      o.fallback = v == "none" ? std::string() : v;
      o.fallback_given = true;
    } else if (flag == "--cache-dir") {
      o.cache_dir = v;
    } else if (flag == "--profile") {
      if (v.empty()) throw UsageError("--profile expects a trace file name");
      o.profile = v;
    } else if (flag == "--profile-runs") {
      o.profile_runs = static_cast<int64_t>(ParseUnsigned(flag, v, 1000000));
      if (o.profile_runs < 1) throw UsageError("--profile-runs must be at least 1");
    } else if (flag == "--top") {
      o.top = static_cast<int64_t>(ParseUnsigned(flag, v, 1000000));
    } else if (flag == "--engine") {
      o.engine = v;
    } else if (flag == "--variant") {
      o.variant = v;
    } else if (flag == "--save-outputs") {
      if (v.empty()) throw UsageError("--save-outputs needs a file name");
      o.save_outputs = v;
    } else if (flag == "--bench") {
      o.bench = static_cast<int64_t>(ParseUnsigned(flag, v, 10'000'000));
      if (o.bench == 0) throw UsageError("--bench expects at least 1 run");
    } else if (flag == "--warmup") {
      o.warmup = static_cast<int64_t>(ParseUnsigned(flag, v, 10'000'000));
      o.warmup_given = true;
    } else if (flag == "--trusted-key") {
      ReadPublicKeyFile(v, &o.trusted_keys);
      ++o.trusted_key_count;
    } else if (flag == "--seed") {
      o.seed = ParseUnsigned(flag, v, std::numeric_limits<uint64_t>::max());
    } else if (flag == "--max-input-bytes") {
      o.max_input_bytes = ParseUnsigned(flag, v, std::numeric_limits<uint64_t>::max());
    }
  }
  if (o.help) return o;
  if (o.bundle.empty()) throw UsageError("missing BUNDLE (the .xrtpkg file to run)");
  if (o.warmup_given && o.bench == 0) throw UsageError("--warmup needs --bench");
  if (!o.shapes.empty() && (!o.inputs_npz.empty() || !o.input_files.empty())) {
    throw UsageError("--shape sets the shape of random inputs; it cannot be combined with --inputs/--input");
  }
  return o;
}

// ---- Tensors -------------------------------------------------------------------------------------------------------

std::string ShapeText(const int64_t* shape, size_t rank) {
  std::string s = "[";
  for (size_t d = 0; d < rank; ++d) {
    if (d) s += ",";
    s += std::to_string(shape[d]);
  }
  return s + "]";
}

std::string ShapeText(const std::vector<int64_t>& shape) { return ShapeText(shape.data(), shape.size()); }

Json ShapeJson(const int64_t* shape, size_t rank) {
  Json a = Json::array();
  for (size_t d = 0; d < rank; ++d) a.push_back(shape[d]);
  return a;
}

float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1F;
  const uint32_t mant = h & 0x3FF;
  float value;
  if (exp == 0) {
    value = std::ldexp(static_cast<float>(mant), -24);  // zero or subnormal
  } else if (exp == 31) {
    value = mant ? std::numeric_limits<float>::quiet_NaN() : std::numeric_limits<float>::infinity();
  } else {
    value = std::ldexp(static_cast<float>(mant | 0x400), static_cast<int>(exp) - 25);
  }
  return sign ? -value : value;
}

// Round to nearest even; used only for random inputs, whose values stay well inside the half range.
uint16_t FloatToHalf(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000);
  const float a = std::fabs(f);
  if (std::isnan(f)) return static_cast<uint16_t>(sign | 0x7E00);
  if (a >= 65520.0f) return static_cast<uint16_t>(sign | 0x7C00);
  if (a < std::ldexp(1.0f, -14)) {  // subnormal half: a multiple of 2^-24
    return static_cast<uint16_t>(sign | static_cast<uint16_t>(std::nearbyint(std::ldexp(a, 24))));
  }
  int e;
  const float m = std::frexp(a, &e);  // a = m * 2^e, m in [0.5, 1)
  uint32_t mant = static_cast<uint32_t>(std::nearbyint(std::ldexp(m, 11)));  // 11 significant bits
  if (mant == 2048) {
    mant = 1024;
    ++e;
  }
  const uint32_t exp = static_cast<uint32_t>(e - 1 + 15);
  if (exp >= 31) return static_cast<uint16_t>(sign | 0x7C00);
  return static_cast<uint16_t>(sign | (exp << 10) | (mant & 0x3FF));
}

float Bf16ToFloat(uint16_t b) {
  const uint32_t x = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

uint16_t FloatToBf16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if (std::isnan(f)) return static_cast<uint16_t>((x >> 16) | 0x40);
  x += 0x7FFF + ((x >> 16) & 1);
  return static_cast<uint16_t>(x >> 16);
}

double ElementAsDouble(xrt_dtype_t dtype, const uint8_t* p) {
  switch (dtype) {
    case XRT_DTYPE_FLOAT32: { float v; std::memcpy(&v, p, 4); return v; }
    case XRT_DTYPE_FLOAT16: { uint16_t v; std::memcpy(&v, p, 2); return HalfToFloat(v); }
    case XRT_DTYPE_BFLOAT16: { uint16_t v; std::memcpy(&v, p, 2); return Bf16ToFloat(v); }
    case XRT_DTYPE_FLOAT64: { double v; std::memcpy(&v, p, 8); return v; }
    case XRT_DTYPE_INT8: return static_cast<int8_t>(*p);
    case XRT_DTYPE_UINT8: return *p;
    case XRT_DTYPE_INT16: { int16_t v; std::memcpy(&v, p, 2); return v; }
    case XRT_DTYPE_UINT16: { uint16_t v; std::memcpy(&v, p, 2); return v; }
    case XRT_DTYPE_INT32: { int32_t v; std::memcpy(&v, p, 4); return v; }
    case XRT_DTYPE_UINT32: { uint32_t v; std::memcpy(&v, p, 4); return v; }
    case XRT_DTYPE_INT64: { int64_t v; std::memcpy(&v, p, 8); return static_cast<double>(v); }
    case XRT_DTYPE_UINT64: { uint64_t v; std::memcpy(&v, p, 8); return static_cast<double>(v); }
    case XRT_DTYPE_BOOL: return *p ? 1.0 : 0.0;
    default: return std::numeric_limits<double>::quiet_NaN();
  }
}

struct Stats {
  uint64_t count = 0;
  uint64_t nan_count = 0;
  double min = 0, max = 0, mean = 0;
};

Stats ComputeStats(xrt_dtype_t dtype, const uint8_t* data, uint64_t byte_size) {
  Stats s;
  const size_t item = xrt_dtype_size(dtype);
  if (item == 0) return s;
  double sum = 0;
  bool first = true;
  for (uint64_t off = 0; off + item <= byte_size; off += item) {
    const double v = ElementAsDouble(dtype, data + off);
    if (std::isnan(v)) {
      ++s.nan_count;
      continue;
    }
    if (first || v < s.min) s.min = v;
    if (first || v > s.max) s.max = v;
    first = false;
    sum += v;
    ++s.count;
  }
  if (s.count) s.mean = sum / static_cast<double>(s.count);
  return s;
}

std::string FormatNumber(double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.6g", v);
  return buf;
}

// A random tensor for one input. Floats ~ N(0,1), integers uniform in [0, 100), bools fair coin flips.
// Random inputs, the same bits as `xrtc run --seed S` (compiler/xrtc/tools/_data.py, seeded_inputs): SplitMix64 from
// the seed, drawn in input order then element order. A float is (sum of 4 draws' top 53 bits as a double * 2^-53 - 2)
// * sqrt(3) (mean 0, variance 1, |v| < 3.47), rounded to the dtype through float (float64 kept as is); an integer is
// (draw >> 32) % 100; a bool the draw's top bit. Every step is exact or one IEEE rounding: no library distributions,
// whose algorithms differ between standard libraries.
struct SplitMix64 {
  uint64_t state;
  uint64_t Next() {
    uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  double Normalish() {
    uint64_t sum = 0;
    for (int k = 0; k < 4; ++k) sum += Next() >> 11;
    return (static_cast<double>(sum) * 0x1p-53 - 2.0) * 1.7320508075688772;
  }
};

Array RandomArray(xrt_dtype_t dtype, const std::vector<int64_t>& shape, SplitMix64& rng) {
  Array a;
  a.dtype = dtype;
  a.shape = shape;
  const size_t item = xrt_dtype_size(dtype);
  uint64_t n = 1;
  for (int64_t d : shape) {
    if (d != 0 && n > std::numeric_limits<uint64_t>::max() / static_cast<uint64_t>(d) / std::max<size_t>(item, 1)) {
      throw ToolError(XRT_STATUS_RESOURCE_EXHAUSTED, "random input of shape " + ShapeText(shape) + " is too large");
    }
    n *= static_cast<uint64_t>(d);
  }
  a.data.resize(static_cast<size_t>(n * item));
  uint8_t* p = a.data.data();
  for (uint64_t i = 0; i < n; ++i, p += item) {
    switch (dtype) {
      case XRT_DTYPE_FLOAT32: { const float v = static_cast<float>(rng.Normalish()); std::memcpy(p, &v, 4); break; }
      case XRT_DTYPE_FLOAT64: { const double v = rng.Normalish(); std::memcpy(p, &v, 8); break; }
      case XRT_DTYPE_FLOAT16: {
        const uint16_t v = FloatToHalf(static_cast<float>(rng.Normalish()));
        std::memcpy(p, &v, 2);
        break;
      }
      case XRT_DTYPE_BFLOAT16: {
        const uint16_t v = FloatToBf16(static_cast<float>(rng.Normalish()));
        std::memcpy(p, &v, 2);
        break;
      }
      case XRT_DTYPE_BOOL: *p = static_cast<uint8_t>(rng.Next() >> 63); break;
      default: {
        // Every integer dtype holds [0, 100); write the value little-endian in `item` bytes.
        const uint64_t v = (rng.Next() >> 32) % 100;
        for (size_t b = 0; b < item; ++b) p[b] = static_cast<uint8_t>(v >> (8 * b));
      }
    }
  }
  return a;
}

// ---- The run -------------------------------------------------------------------------------------------------------

struct InputInfo {
  std::string name;
  xrt_dtype_t dtype;
  std::vector<int64_t> shape;              // -1 for dynamic
  std::vector<std::string> dim_names;      // "" for static or unnamed
  std::string Describe() const {
    std::string s = std::string(xrt_dtype_name(dtype)) + " [";
    for (size_t d = 0; d < shape.size(); ++d) {
      if (d) s += ",";
      s += shape[d] >= 0 ? std::to_string(shape[d]) : (dim_names[d].empty() ? "?" : dim_names[d]);
    }
    return s + "]";
  }
};

std::vector<InputInfo> SessionInputs(const xrt_session_t* session) {
  std::vector<InputInfo> out;
  const size_t n = xrt_session_input_count(session);
  for (size_t i = 0; i < n; ++i) {
    xrt_io_info_t info{};
    Check(xrt_session_input_info(session, i, &info), "input info");
    InputInfo in;
    in.name = info.name ? info.name : "";
    in.dtype = info.dtype;
    for (uint32_t d = 0; d < info.rank; ++d) {
      in.shape.push_back(info.shape[d]);
      in.dim_names.push_back(info.dim_names && info.dim_names[d] ? info.dim_names[d] : "");
    }
    out.push_back(std::move(in));
  }
  return out;
}

struct GivenInput {
  std::string name;
  std::string source;  // file it came from, or "random"
  Array array;
};

std::string ListInputs(const std::vector<InputInfo>& infos) {
  std::string s;
  for (const InputInfo& in : infos) {
    if (!s.empty()) s += ", ";
    s += in.name + " (" + in.Describe() + ")";
  }
  return s;
}

// Reads --inputs/--input files (before the bundle is loaded, so a bad file fails fast).
std::vector<GivenInput> ReadInputFiles(const Options& o) {
  std::vector<GivenInput> given;
  auto put = [&given](GivenInput in) {
    for (GivenInput& g : given) {
      if (g.name == in.name) {
        g = std::move(in);  // --input overrides --inputs.
        return;
      }
    }
    given.push_back(std::move(in));
  };
  try {
    if (!o.inputs_npz.empty()) {
      for (NamedArray& a : ReadNpz(o.inputs_npz, o.max_input_bytes)) put({a.name, o.inputs_npz, std::move(a.array)});
    }
    for (const auto& [name, path] : o.input_files) put({name, path, ReadNpyFile(path)});
  } catch (const NpyError& e) {
    throw ToolError(XRT_STATUS_INVALID_ARGUMENT, std::string("bad inputs file: ") + e.what());
  }
  return given;
}

// Checks given inputs' names and dtypes against the session, naming the file each came from (the runtime checks
// shapes and repeats these checks).
void CheckInputs(const std::vector<GivenInput>& given, const std::vector<InputInfo>& infos) {
  for (const GivenInput& g : given) {
    const auto it = std::find_if(infos.begin(), infos.end(), [&](const InputInfo& in) { return in.name == g.name; });
    if (it == infos.end()) {
      throw ToolError(XRT_STATUS_INVALID_ARGUMENT, "unknown input '" + g.name + "' (from " + g.source +
                                                       "); the model's inputs are: " + ListInputs(infos));
    }
    if (it->dtype != g.array.dtype) {
      throw ToolError(XRT_STATUS_INVALID_ARGUMENT,
                      "input '" + g.name + "' (from " + g.source + ") is " + xrt_dtype_name(g.array.dtype) +
                          ", the model expects " + it->Describe() + "; convert it with a.astype(numpy." +
                          xrt_dtype_name(it->dtype) + ")");
    }
  }
  for (const InputInfo& in : infos) {
    const bool found =
        std::any_of(given.begin(), given.end(), [&](const GivenInput& g) { return g.name == in.name; });
    if (!found) {
      throw ToolError(XRT_STATUS_INVALID_ARGUMENT, "input '" + in.name + "' (" + in.Describe() +
                                                       ") is not given; add it to --inputs or pass --input " +
                                                       in.name + "=FILE.npy");
    }
  }
}

std::vector<GivenInput> RandomInputs(const Options& o, const std::vector<InputInfo>& infos) {
  for (const auto& [name, dims] : o.shapes) {
    if (std::none_of(infos.begin(), infos.end(), [&](const InputInfo& in) { return in.name == name; })) {
      throw ToolError(XRT_STATUS_INVALID_ARGUMENT,
                      "--shape names unknown input '" + name + "'; the model's inputs are: " + ListInputs(infos));
    }
  }
  SplitMix64 rng{o.seed};
  std::vector<GivenInput> out;
  for (const InputInfo& in : infos) {
    std::vector<int64_t> shape = in.shape;
    const auto given =
        std::find_if(o.shapes.begin(), o.shapes.end(), [&](const auto& s) { return s.first == in.name; });
    if (given != o.shapes.end()) {
      const std::vector<int64_t>& dims = given->second;
      if (dims.size() != in.shape.size()) {
        throw ToolError(XRT_STATUS_INVALID_ARGUMENT, "--shape for " + in.name + " " + ShapeText(dims) + " has rank " +
                                                         std::to_string(dims.size()) + ", the model expects " +
                                                         in.Describe());
      }
      for (size_t d = 0; d < dims.size(); ++d) {
        if (in.shape[d] >= 0 && in.shape[d] != dims[d]) {
          throw ToolError(XRT_STATUS_INVALID_ARGUMENT, "--shape " + in.name + ": dimension " + std::to_string(d) +
                                                           " is static " + std::to_string(in.shape[d]) +
                                                           " in the model, not " + std::to_string(dims[d]));
        }
      }
      shape = dims;
    } else {
      for (size_t d = 0; d < shape.size(); ++d) {
        if (shape[d] >= 0) continue;
        std::string example;
        for (size_t k = 0; k < shape.size(); ++k) {
          if (k) example += "x";
          example += std::to_string(in.shape[k] >= 0 ? in.shape[k] : 1);
        }
        const std::string dim_name = in.dim_names[d].empty() ? "" : " ('" + in.dim_names[d] + "')";
        throw ToolError(XRT_STATUS_INVALID_ARGUMENT,
                        "input '" + in.name + "' (" + in.Describe() + ") has dynamic dimension " + std::to_string(d) +
                            dim_name + " and no inputs were given; set its shape with --shape " + in.name + "=" +
                            example + " (or pass real inputs with --inputs/--input)");
      }
    }
    out.push_back({in.name, "random", RandomArray(in.dtype, shape, rng)});
  }
  return out;
}

struct BenchResult {
  int64_t runs = 0;
  int64_t warmup = 0;
  double p50 = 0, p90 = 0, p99 = 0, min = 0, mean = 0;
};

double Percentile(const std::vector<double>& sorted, double q) {
  // Nearest rank: the smallest value with at least q of the samples at or below it.
  const size_t rank = static_cast<size_t>(std::ceil(q * static_cast<double>(sorted.size())));
  return sorted[std::min(sorted.size() - 1, rank == 0 ? 0 : rank - 1)];
}

class Runner {
 public:
  explicit Runner(const Options& o) : o_(o) {}

  int Main() {
    Json report = Json::object();
    report["bundle"] = o_.bundle;
    try {
      Run(&report);
    } catch (const ToolError& e) {
      return Fail(&report, e.code(), e.what());
    } catch (const std::bad_alloc&) {
      return Fail(&report, XRT_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    } catch (const std::exception& e) {
      return Fail(&report, XRT_STATUS_INTERNAL, e.what());
    }
    report["status"] = "PASSED";
    if (o_.json) {
      std::printf("%s\n", report.dump(2).c_str());
      std::fflush(stdout);
      std::fprintf(stderr, "PASSED xrt-run\n");
    } else {
      std::printf("PASSED xrt-run\n");
    }
    return kExitOk;
  }

 private:
  void Say(const std::string& line) const {
    if (!o_.quiet && !o_.json) std::printf("%s\n", line.c_str());
  }

  int Fail(Json* report, xrt_status_code_t code, const std::string& message) const {
    std::fflush(stdout);
    std::fprintf(stderr, "xrt-run: error: %s: %s\n", xrt_status_code_string(code), message.c_str());
    if (o_.json) {
      (*report)["status"] = "FAILED";
      (*report)["error"] = {{"code", xrt_status_code_string(code)}, {"message", message}};
      std::printf("%s\n", report->dump(2).c_str());
      std::fflush(stdout);
      std::fprintf(stderr, "FAILED xrt-run\n");
    } else {
      std::printf("FAILED xrt-run\n");
    }
    return ExitCodeFor(code);
  }

  void Run(Json* report) {
    const bool random = o_.inputs_npz.empty() && o_.input_files.empty();
    std::vector<GivenInput> inputs;
    if (!random) inputs = ReadInputFiles(o_);

    // Refuse an existing output path before doing any work (WriteNpz checks again, atomically, at the end).
    for (const std::string& path : {o_.save_outputs, o_.profile}) {
      if (path.empty() || o_.force) continue;
      if (FILE* f = std::fopen(path.c_str(), "rb")) {
        std::fclose(f);
        throw ToolError(XRT_STATUS_ALREADY_EXISTS, path + " exists; pass --force to overwrite it");
      }
    }

    const Clock::time_point t_open = Clock::now();
    xrt_bundle_t* raw_bundle = nullptr;
    xrt_bundle_open_options_t open_options;
    xrt_bundle_open_options_initialize(&open_options);
    open_options.trusted_keys = o_.trusted_keys.empty() ? nullptr : o_.trusted_keys.data();
    open_options.trusted_key_count = o_.trusted_key_count;
    open_options.require_signature = o_.require_signature ? 1u : 0u;
    Check(xrt_bundle_open_file(o_.bundle.c_str(), &open_options, &raw_bundle));  // Messages name the file.
    BundlePtr bundle(raw_bundle);
    const double open_ms = MsSince(t_open);

    xrt_session_options_t session_options;
    xrt_session_options_initialize(&session_options);
    session_options.device = o_.device.c_str();
    session_options.engine = o_.engine.empty() ? nullptr : o_.engine.c_str();
    session_options.variant = o_.variant.empty() ? nullptr : o_.variant.c_str();
    session_options.fallback = o_.fallback_given ? o_.fallback.c_str() : nullptr;
    session_options.cache_dir = o_.cache_dir.empty() ? nullptr : o_.cache_dir.c_str();
    session_options.profile = o_.profile.empty() ? 0u : 1u;
    const Clock::time_point t_session = Clock::now();
    xrt_session_t* raw_session = nullptr;
    Check(xrt_session_create(bundle.get(), &session_options, &raw_session));
    SessionPtr session(raw_session);
    const double session_ms = MsSince(t_session);

    uint32_t major = 0, minor = 0;
    xrt_bundle_format_version(bundle.get(), &major, &minor);
    (*report)["format_version"] = std::to_string(major) + "." + std::to_string(minor);
    uint8_t signer[32];
    if (xrt_bundle_signer(bundle.get(), signer)) {
      static const char kHex[] = "0123456789abcdef";
      std::string hex;
      for (uint8_t b : signer) hex += {kHex[b >> 4], kHex[b & 15]};
      (*report)["signer"] = hex;
      Say("signed by ed25519 key " + hex + (o_.trusted_key_count > 0 ? " (trusted)" : " (signature valid)"));
    } else {
      (*report)["signer"] = nullptr;
    }
    (*report)["runtime_version"] = xrt_version();
    {
      // A bundle compiled with --allow-unverified (the accuracy gate could not check it) says so here too.
      size_t size = 0;
      const char* text = xrt_bundle_manifest(bundle.get(), &size);
      const Json manifest = text ? Json::parse(text, text + size, nullptr, false) : Json();
      if (manifest.is_object() && manifest.contains("unverified") && manifest.at("unverified").is_object()) {
        const Json& u = manifest.at("unverified");
        const std::string reason =
            u.contains("reason") && u.at("reason").is_string() ? u.at("reason").get<std::string>() : "";
        (*report)["unverified"] = reason;
        Say("UNVERIFIED bundle (compiled with --allow-unverified): " + reason);
      }
    }
    ReportSession(session.get(), report);
    if (!o_.profile.empty()) ReadProfile(session.get());  // an engine that does not profile fails here, before runs

    // Inputs. xrt-run reads and writes numeric .npy/.npz only: a string tensor or a sequence/map/optional
    // (XRT_DTYPE_INVALID in the io info) is refused by name before anything runs.
    const std::vector<InputInfo> infos = SessionInputs(session.get());
    const size_t io_count = infos.size() + xrt_session_output_count(session.get());
    for (size_t i = 0; i < io_count; ++i) {
      xrt_io_info_t info{};
      const bool is_input = i < infos.size();
      Check(is_input ? xrt_session_input_info(session.get(), i, &info)
                     : xrt_session_output_info(session.get(), i - infos.size(), &info),
            "io info");
      if (info.dtype == XRT_DTYPE_STRING || info.dtype == XRT_DTYPE_INVALID) {
        throw ToolError(XRT_STATUS_UNIMPLEMENTED,
                        std::string(is_input ? "input '" : "output '") + info.name + "' is a " +
                            (info.dtype == XRT_DTYPE_STRING ? "string tensor" : "sequence, map or optional") +
                            ", which xrt-run cannot read or write (.npy/.npz numeric arrays only); run this bundle "
                            "from Python: xpuruntime.load(BUNDLE).run({...}) takes and returns numpy string arrays, "
                            "lists and dicts");
      }
    }
    if (random) {
      inputs = RandomInputs(o_, infos);
    } else {
      CheckInputs(inputs, infos);
    }
    std::vector<const char*> names;
    std::vector<xrt_tensor_view_t> views;
    Json inputs_json = Json::array();
    for (GivenInput& in : inputs) {
      names.push_back(in.name.c_str());
      xrt_tensor_view_t v{};
      v.dtype = in.array.dtype;
      v.rank = static_cast<uint32_t>(in.array.shape.size());
      v.shape = in.array.shape.data();
      v.data = in.array.data.empty() ? nullptr : in.array.data.data();
      v.byte_size = in.array.data.size();
      views.push_back(v);
      Say("input  " + in.name + " " + xrt_dtype_name(in.array.dtype) + " " + ShapeText(in.array.shape) + " (" +
          (random ? "random, seed " + std::to_string(o_.seed) : "from " + in.source) + ")");
      inputs_json.push_back({{"name", in.name},
                             {"dtype", xrt_dtype_name(in.array.dtype)},
                             {"shape", ShapeJson(in.array.shape.data(), in.array.shape.size())},
                             {"source", random ? "random" : in.source}});
    }
    (*report)["inputs"] = inputs_json;
    if (random) (*report)["seed"] = o_.seed;

    auto run_once = [&]() {
      xrt_outputs_t* raw = nullptr;
      Check(xrt_session_run(session.get(), names.data(), views.data(), views.size(), &raw), "run");
      return OutputsPtr(raw);
    };

    const Clock::time_point t_first = Clock::now();
    OutputsPtr outputs = run_once();
    const double first_ms = MsSince(t_first);
    char timing[160];
    std::snprintf(timing, sizeof(timing), "load   %.3f ms (open %.3f ms + session %.3f ms), first run %.3f ms",
                  open_ms + session_ms, open_ms, session_ms, first_ms);
    Say(timing);
    (*report)["load_ms"] = open_ms + session_ms;
    (*report)["open_ms"] = open_ms;
    (*report)["session_ms"] = session_ms;
    (*report)["first_run_ms"] = first_ms;

    // Outputs.
    std::vector<NamedArray> to_save;
    Json outputs_json = Json::array();
    const size_t count = xrt_outputs_count(outputs.get());
    for (size_t i = 0; i < count; ++i) {
      xrt_tensor_view_t v{};
      const char* name = nullptr;
      Check(xrt_outputs_get(outputs.get(), i, &v, &name), "output " + std::to_string(i));
      const std::string out_name = name ? name : "output" + std::to_string(i);
      const Stats s = ComputeStats(v.dtype, static_cast<const uint8_t*>(v.data), v.byte_size);
      std::string line = "output " + out_name + " " + xrt_dtype_name(v.dtype) + " " + ShapeText(v.shape, v.rank);
      Json o = {{"name", out_name}, {"dtype", xrt_dtype_name(v.dtype)}, {"shape", ShapeJson(v.shape, v.rank)}};
      if (s.count) {
        line += " min=" + FormatNumber(s.min) + " max=" + FormatNumber(s.max) + " mean=" + FormatNumber(s.mean);
        o["min"] = s.min;
        o["max"] = s.max;
        o["mean"] = s.mean;
      }
      if (s.nan_count) {
        line += " nan=" + std::to_string(s.nan_count);
        o["nan_count"] = s.nan_count;
      }
      Say(line);
      outputs_json.push_back(o);
      if (!o_.save_outputs.empty()) {
        Array a;
        a.dtype = v.dtype;
        a.shape.assign(v.shape, v.shape + v.rank);
        const uint8_t* data = static_cast<const uint8_t*>(v.data);
        a.data.assign(data, data + v.byte_size);
        to_save.push_back({out_name, std::move(a)});
      }
    }
    (*report)["outputs"] = outputs_json;
    outputs.reset();

    if (o_.bench > 0) (*report)["bench"] = Bench(run_once);
    if (!o_.profile.empty()) Profile(bundle.get(), session.get(), run_once, report);

    if (!o_.save_outputs.empty()) {
      try {
        WriteNpz(o_.save_outputs, to_save, o_.force);
      } catch (const FileExistsError& e) {
        throw ToolError(XRT_STATUS_ALREADY_EXISTS, e.what());
      } catch (const NpyError& e) {
        throw ToolError(XRT_STATUS_IO, e.what());
      }
      Say("saved  outputs to " + o_.save_outputs);
      (*report)["saved_outputs"] = o_.save_outputs;
    }
  }

  void ReportSession(const xrt_session_t* session, Json* report) {
    const char* describe = xrt_session_describe(session);
    const Json d = Json::parse(describe ? describe : "", nullptr, /*allow_exceptions=*/false);
    if (d.is_discarded() || !d.is_object()) {
      Say(std::string("session ") + (describe ? describe : "(no description)"));
      (*report)["session"] = describe ? describe : "";
      return;
    }
    (*report)["session"] = d;
    auto str = [&d](const char* key) {
      const auto it = d.find(key);
      return (it != d.end() && it->is_string()) ? it->get<std::string>() : std::string("?");
    };
    Say("variant " + str("variant") + ": engine " + str("engine") + " " + str("engine_version") + " on device " +
        str("device"));
    if (d.contains("reason")) Say("  why: " + str("reason"));
    if (d.contains("fallback")) Say("  fallback: " + str("fallback"));
    if (d.contains("engine_info")) Say("  engine: " + d["engine_info"].dump());
    const auto skipped = d.find("skipped");
    if (skipped != d.end() && skipped->is_array()) {
      for (const Json& s : *skipped) {
        if (s.is_string()) {
          Say("  skipped: " + s.get<std::string>());
        } else if (s.is_object() && s.contains("variant") && s.contains("reason")) {
          auto field = [&s](const char* key) {
            const auto it = s.find(key);
            return (it != s.end() && it->is_string()) ? it->get<std::string>() : std::string("?");
          };
          Say("  skipped: " + field("variant") + " (" + field("engine") + " on " + field("device") +
              "): " + field("reason"));
        } else {
          Say("  skipped: " + s.dump());
        }
      }
      // Both paths pick with the same rule (the manifest's order, first variant whose engine is present), but the
      // ONNX Runtime engine exists only in Python processes (xpuruntime registers it through ONNX Runtime's Python
      // API; the wheel ships no C/C++ headers). When it was skipped here, Python runs another variant than this
      // runner: say so, so that timings from here are not read as the Python application's.
      for (const Json& s : *skipped) {
        if (!s.is_object() || s.value("engine", "") != kPythonOnlyEngine || !s.contains("variant")) continue;
        const std::string python_runs = s.value("variant", "");
        Say("  note: Python (xpuruntime.load) runs " + python_runs + " on this bundle and device, the bundle's "
            "earlier choice: engine " + kPythonOnlyEngine + " is available only through the Python loader. "
            "Outputs and timings here are " + str("variant") + "'s; in Python, xrt.load(BUNDLE, variant=\"" +
            str("variant") + "\") runs the same variant as this runner");
        (*report)["python_runs"] = python_runs;
        break;
      }
    }
  }

  static Json ReadProfile(const xrt_session_t* session) {
    xrt_profile_t* raw = nullptr;
    Check(xrt_session_profile(session, &raw), "--profile");
    size_t size = 0;
    const char* text = xrt_profile_json(raw, &size);
    Json parsed = Json::parse(text, text + size, nullptr, /*allow_exceptions=*/false);
    xrt_profile_release(raw);
    if (!parsed.is_object()) throw ToolError(XRT_STATUS_INTERNAL, "--profile: the engine's profile is not JSON");
    return parsed;
  }

  // --profile: profiled runs back to back (the records are read before and after them: reading between runs
  // would leave gaps in which engine threads fall asleep), mapped to the plan's ONNX nodes (decisions.json).
  template <typename RunOnce>
  void Profile(const xrt_bundle_t* bundle, const xrt_session_t* session, RunOnce& run_once, Json* report) {
    ProfileRuns runs;
    runs.bundle = o_.bundle;
    runs.before = ReadProfile(session);
    const Clock::time_point origin = Clock::now();
    for (int64_t i = 0; i < o_.profile_runs; ++i) {
      const Clock::time_point t = Clock::now();
      OutputsPtr out = run_once();
      runs.run_ms.push_back(MsSince(t));
      runs.run_start_us.push_back(std::chrono::duration<double, std::micro>(t - origin).count());
    }
    runs.after = ReadProfile(session);
    runs.variant = runs.after.value("variant", "");
    runs.device = runs.after.value("device", "");
    runs.engine = runs.after.value("engine", "");
    std::vector<PlanNode> nodes;
    size_t size = 0;
    const char* text = xrt_bundle_manifest(bundle, &size);
    const Json manifest = text ? Json::parse(text, text + size, nullptr, false) : Json();
    if (manifest.is_object() && manifest.contains("decisions") && manifest["decisions"].is_string()) {
      xrt_section_t* section = nullptr;
      Check(xrt_bundle_read_section(bundle, manifest["decisions"].get<std::string>().c_str(), &section),
            "--profile: the decision log");
      nodes = PlanNodes(std::string(static_cast<const char*>(xrt_section_data(section)),
                                    static_cast<size_t>(xrt_section_size(section))));
      xrt_section_release(section);
    }
    Json profile;
    try {
      profile = BuildProfile(runs, nodes);
    } catch (const std::runtime_error& e) {
      throw ToolError(XRT_STATUS_INTERNAL, std::string("--profile: ") + e.what());
    }
    if (nodes.empty()) {
      Say("profile: the bundle has no decision log: entries name the engine's source nodes as it knows them");
    }
    Say(TopTable(profile, static_cast<size_t>(o_.top)));
    WriteTrace(o_.profile, Json{{"traceEvents", profile["trace"]}, {"displayTimeUnit", "ms"}});
    Say("trace written to " + o_.profile + " (open in ui.perfetto.dev or chrome://tracing)");
    profile.erase("trace");
    (*report)["profile"] = std::move(profile);
    (*report)["profile_trace"] = o_.profile;
  }

  // Written whole to a temporary file next to it, then renamed over it (--force was checked up front).
  void WriteTrace(const std::string& path, const Json& trace) const {
    const std::string temporary = path + ".tmp-xrt-run";
    FILE* f = std::fopen(temporary.c_str(), "wb");
    if (f == nullptr) throw ToolError(XRT_STATUS_IO, "--profile " + path + ": cannot write: " + std::strerror(errno));
    const std::string text = trace.dump(1);
    const bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
    if (std::fclose(f) != 0 || !ok || std::rename(temporary.c_str(), path.c_str()) != 0) {
      std::remove(temporary.c_str());
      throw ToolError(XRT_STATUS_IO, "--profile " + path + ": cannot write: " + std::strerror(errno));
    }
  }

  template <typename RunOnce>
  Json Bench(RunOnce& run_once) {
    for (int64_t i = 0; i < o_.warmup; ++i) run_once();
    std::vector<double> ms;
    ms.reserve(static_cast<size_t>(o_.bench));
    for (int64_t i = 0; i < o_.bench; ++i) {
      const Clock::time_point t = Clock::now();
      OutputsPtr out = run_once();
      ms.push_back(MsSince(t));  // The run only: releasing the outputs is not timed.
    }
    std::vector<double> sorted = ms;
    std::sort(sorted.begin(), sorted.end());
    BenchResult r;
    r.runs = o_.bench;
    r.warmup = o_.warmup;
    r.p50 = Percentile(sorted, 0.50);
    r.p90 = Percentile(sorted, 0.90);
    r.p99 = Percentile(sorted, 0.99);
    r.min = sorted.front();
    double sum = 0;
    for (double v : ms) sum += v;
    r.mean = sum / static_cast<double>(ms.size());
    char line[256];
    std::snprintf(line, sizeof(line),
                  "bench  %lld runs after %lld warmup: p50 %.3f ms, p90 %.3f ms, p99 %.3f ms, min %.3f ms, "
                  "mean %.3f ms",
                  static_cast<long long>(r.runs), static_cast<long long>(r.warmup), r.p50, r.p90, r.p99, r.min,
                  r.mean);
    Say(line);
    return {{"runs", r.runs}, {"warmup", r.warmup}, {"p50_ms", r.p50}, {"p90_ms", r.p90},
            {"p99_ms", r.p99}, {"min_ms", r.min},   {"mean_ms", r.mean}};
  }

  const Options& o_;
};

}  // namespace
}  // namespace tools
}  // namespace xrt

int main(int argc, char** argv) {
  using namespace xrt::tools;
  Options options;
  try {
    options = ParseArgs(argc, argv);
  } catch (const UsageError& e) {
    std::fprintf(stderr, "xrt-run: error: %s: %s (see xrt-run --help)\n",
                 xrt_status_code_string(XRT_STATUS_INVALID_ARGUMENT), e.what());
    std::printf("FAILED xrt-run\n");
    return kExitUsage;
  }
  if (options.help) {
    std::printf("%s", kUsage);
    return kExitOk;
  }
  return Runner(options).Main();
}
