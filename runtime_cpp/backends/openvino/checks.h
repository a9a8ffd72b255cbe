// checks.h - what the OpenVINO plugin checks in a bundle before OpenVINO sees it (SECURITY.md, "The engine
// boundary"). Header-only and free of OpenVINO so the fuzzer (checks_fuzz.cc) and the plugin share one copy.
//
// - Artifact type: the `model` artifact must be OpenVINO IR XML. OpenVINO's read_model() detects the format itself,
//   so ONNX bytes would reach its ONNX reader, which reads external data from the working directory.
// - Options: the bundle's variant options are allow-listed and bounded. Nothing that touches the file system or
//   host resources is taken from a bundle (CACHE_DIR and other paths, streams); a thread count is clamped to the
//   CPUs this process may use.
#ifndef XRT_BACKENDS_OPENVINO_CHECKS_H_
#define XRT_BACKENDS_OPENVINO_CHECKS_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <string>

#include <nlohmann/json.hpp>

namespace xrt::openvino_backend {

// Whether bytes are OpenVINO IR XML: an optional UTF-8 BOM, then only whitespace, XML declarations / processing
// instructions and comments before the root element, which must be <net> (no DOCTYPE, no other root). Every other
// format OpenVINO reads (ONNX, TensorFlow and PaddlePaddle protobufs, TFLite) starts differently, so the IR
// frontend is the only one that can claim such bytes. On false, *why says what was found.
inline bool IsIrXml(const uint8_t* data, size_t size, std::string* why) {
  if (data == nullptr || size == 0) {
    *why = "it is empty";
    return false;
  }
  const char* p = reinterpret_cast<const char*>(data);
  const char* end = p + size;
  auto starts = [&](const char* s) {
    const size_t n = std::strlen(s);
    return static_cast<size_t>(end - p) >= n && std::memcmp(p, s, n) == 0;
  };
  auto skip_past = [&](const char* terminator) {  // false when the terminator never comes
    const size_t n = std::strlen(terminator);
    for (; static_cast<size_t>(end - p) >= n; ++p) {
      if (std::memcmp(p, terminator, n) == 0) {
        p += n;
        return true;
      }
    }
    p = end;
    return false;
  };
  if (starts("\xEF\xBB\xBF")) p += 3;
  for (;;) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')) ++p;
    if (starts("<?")) {
      if (!skip_past("?>")) break;
    } else if (starts("<!--")) {
      if (!skip_past("-->")) break;
    } else {
      break;
    }
  }
  if (starts("<net") && end - p > 4 && (p[4] == ' ' || p[4] == '\t' || p[4] == '\r' || p[4] == '\n' ||
                                        p[4] == '>' || p[4] == '/')) {
    return true;
  }
  // Say what it looks like, for the message: the usual mistakes are an ONNX file and a truncated or empty XML.
  const unsigned char first = data[0];
  if (first == 0x08) {
    *why = "it looks like a protobuf (an ONNX model?), not OpenVINO IR XML";
  } else if (p >= end) {
    *why = "it holds no XML element";
  } else if (*p == '<') {
    std::string element(p, static_cast<size_t>(std::min<ptrdiff_t>(end - p, 16)));
    for (char& c : element) {
      if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f) c = '?';
    }
    *why = "its first element is not <net> (starts with \"" + element + "\")";
  } else {
    *why = "it is not XML";
  }
  return false;
}

// OpenVINO CPU blobs (CompiledModel::export_model) embed the model as IR XML, which the CPU plugin reads back with
// format detection on import. The layout (OpenVINO 2026: "RR_UPCVO", u32 version, u64 meta length, meta, then six
// u64 offsets/sizes relative to the end of the meta; the model XML XOR-encoded with a fixed key) is an OpenVINO
// internal: a blob whose embedded model cannot be found and seen to be IR is not imported (the plugin compiles the
// IR instead, which is always correct; only load time is lost).
inline bool BlobModelIsIr(const uint8_t* data, size_t size) {
  if (data == nullptr || size < 68 || std::memcmp(data, "RR_UPCVO", 8) != 0) return false;
  auto u64 = [&](size_t at) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = (v << 8) | data[at + static_cast<size_t>(i)];
    return v;
  };
  const uint64_t meta = u64(12);
  if (meta > size || 20 + meta > size - 48) return false;
  const size_t base = static_cast<size_t>(20 + meta);
  const uint64_t model_offset = u64(base + 32), model_size = u64(base + 40);
  if (model_offset > size - base || model_size > size - base - model_offset || model_size == 0) return false;
  static const uint8_t kKey[] = {0x30, 0x60, 0x70, 0x02, 0x04, 0x08, 0x3F, 0x6F, 0x72, 0x74, 0x78, 0x7F};
  uint8_t head[4096];
  const size_t n = static_cast<size_t>(std::min<uint64_t>(model_size, sizeof(head)));
  for (size_t i = 0; i < n; ++i) head[i] = data[base + model_offset + i] ^ kKey[i % sizeof(kKey)];
  std::string why;
  if (IsIrXml(head, n, &why)) return true;
  // A model longer than the probe may still be IR whose root comes after 4 KiB of prologue: not imported either.
  return false;
}

// The variant options a bundle may set, checked and converted. Properties go to compile_model; "xrt." keys are for
// the plugin. xrt.cache_dir is the caller's (the core adds it and refuses a bundle that sets it), accepted here only
// because the core is the one passing it. `cpus` bounds INFERENCE_NUM_THREADS; a clamp is noted in `notes`.
struct ParsedOptions {
  std::map<std::string, std::string> properties;
  std::map<std::string, std::string> xrt;
  std::string notes;
};

inline const char* AllowedOptionsText() {
  return "INFERENCE_NUM_THREADS, INFERENCE_PRECISION_HINT, PERFORMANCE_HINT, xrt.compiled_build, "
         "xrt.compiled_capabilities, xrt.compiled_device, xrt.compiled_weights";
}

// Returns "" when the options are acceptable, else the message (INVALID_ARGUMENT).
inline std::string ParseOptions(const char* options_json, unsigned cpus, ParsedOptions* out) {
  if (options_json == nullptr || options_json[0] == '\0') return "";
  const nlohmann::json options = nlohmann::json::parse(options_json, nullptr, /*allow_exceptions=*/false);
  if (options.is_discarded() || !options.is_object()) {
    return "openvino: variant options must be a JSON object of strings";
  }
  auto shown = [](const nlohmann::json& v) {
    std::string s = v.dump(-1, ' ', true, nlohmann::json::error_handler_t::replace);
    return s.size() > 80 ? s.substr(0, 77) + "..." : s;
  };
  for (const auto& [key, value] : options.items()) {
    std::string text;
    if (value.is_string()) {
      text = value.get<std::string>();
    } else if (value.is_number_integer() || value.is_number_unsigned()) {
      text = value.dump();  // OpenVINO parses numeric properties from their string form
    } else {
      return "openvino: option '" + key + "' must be a string, got " + shown(value) + " (write it as \"...\")";
    }
    if (key == "xrt.cache_dir") {
      out->xrt[key] = text;
    } else if (key == "xrt.profile") {  // the core's (xrt_session_options_t.profile): PERF_COUNT on
      if (text != "0" && text != "1") return "openvino: option xrt.profile is " + shown(value) + "; allowed: 0, 1";
      out->xrt[key] = text;
    } else if (key == "xrt.compiled_device" || key == "xrt.compiled_build" || key == "xrt.compiled_capabilities") {
      if (text.size() > 4096) return "openvino: option '" + key + "' is over 4096 characters";
      out->xrt[key] = text;
    } else if (key == "xrt.compiled_weights") {  // "store": the blob holds no weights (formats/xrtpkg.md)
      if (text != "store") return "openvino: option xrt.compiled_weights is " + shown(value) + "; allowed: store";
      out->xrt[key] = text;
    } else if (key == "INFERENCE_PRECISION_HINT") {
      if (text != "f32" && text != "f16" && text != "bf16") {
        return "openvino: option INFERENCE_PRECISION_HINT is " + shown(value) + "; allowed: f32, f16, bf16";
      }
      out->properties[key] = text;
    } else if (key == "PERFORMANCE_HINT") {
      if (text != "LATENCY" && text != "THROUGHPUT" && text != "CUMULATIVE_THROUGHPUT") {
        return "openvino: option PERFORMANCE_HINT is " + shown(value) +
               "; allowed: LATENCY, THROUGHPUT, CUMULATIVE_THROUGHPUT";
      }
      out->properties[key] = text;
    } else if (key == "INFERENCE_NUM_THREADS") {
      // 0 is OpenVINO's "its own default"; more than the CPUs here is clamped (a bundle must not size the host).
      uint64_t n = 0;
      bool ok = !text.empty() && text.size() <= 19;
      for (char c : text) ok = ok && c >= '0' && c <= '9';
      if (ok) n = std::stoull(text);
      if (!ok) return "openvino: option INFERENCE_NUM_THREADS is " + shown(value) + "; expected an integer >= 0";
      if (cpus > 0 && n > cpus) {
        out->notes += (out->notes.empty() ? "" : "; ") + ("INFERENCE_NUM_THREADS " + text + " clamped to " +
                                                           std::to_string(cpus) + " (the CPUs this process may use)");
        n = cpus;
      }
      out->properties[key] = std::to_string(n);
    } else {
      return "openvino: variant option '" + key + "' is not allowed in a bundle; allowed: " +
             AllowedOptionsText() +
             " (cache folders, paths and other host settings come from the caller, e.g. load(cache_dir=...))";
    }
  }
  return "";
}

}  // namespace xrt::openvino_backend

#endif  // XRT_BACKENDS_OPENVINO_CHECKS_H_
