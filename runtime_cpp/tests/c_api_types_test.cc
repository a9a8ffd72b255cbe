// Tests of string tensors (XRT_DTYPE_STRING) and of value types (manifest `type`: sequence, map, optional) through
// the C API. ONNX Runtime, the engine that runs such models, is reachable only through the Python loader (its wheel
// ships no C headers; tests/runtime/test_types.py runs it end to end), so the string tensors here cross the C API
// into a backend this test registers, which transforms them (reverses each string, returns byte lengths): what is
// under test is the core's contract (layout, checks, ownership), not an engine's results.
#include "xrt/xrt.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "status_holder.h"
#include "xrtpkg_test_builder.h"

namespace {

using xrt::format::testing::Build;
using xrt::format::testing::Plain;
using xrt::format::testing::Zstd;

// ---- A backend that takes string tensors: "rev" = each string reversed, "len" = int64 byte lengths ----
struct StringOutputs {
  std::vector<std::string> bytes;
  std::vector<xrt_string_t> items;
};
int g_break_output = 0;  // 1: the backend returns an element with NULL data and size 3 (a backend bug)

const char* Version(void*) { return "1.0"; }
int HasCpu(void*, const char* device) { return std::strcmp(device, "cpu") == 0; }
xrt_status_t Init(void*, const char*, const xrt_backend_artifact_t*, size_t, const char*, void** out) {
  *out = nullptr;
  return nullptr;
}
void ReleaseStrings(void* owner) { delete static_cast<StringOutputs*>(owner); }
void ReleaseLengths(void* owner) { delete static_cast<std::vector<int64_t>*>(owner); }
xrt_status_t Execute(void*, void*, const xrt_tensor_view_t* in, size_t n_in, xrt_backend_output_t* out, size_t n_out) {
  if (n_in != 1 || n_out != 2 || in[0].dtype != XRT_DTYPE_STRING) {
    return xrt_status_make(XRT_STATUS_INVALID_ARGUMENT, "strtest takes one string tensor");
  }
  const auto* items = static_cast<const xrt_string_t*>(in[0].data);
  const size_t n = in[0].byte_size / sizeof(xrt_string_t);
  auto strings = std::make_unique<StringOutputs>();
  auto lengths = std::make_unique<std::vector<int64_t>>();
  strings->bytes.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    std::string s(items[i].data ? items[i].data : "", items[i].size);
    std::reverse(s.begin(), s.end());
    strings->bytes.push_back(std::move(s));
    lengths->push_back(static_cast<int64_t>(items[i].size));
  }
  for (const std::string& s : strings->bytes) strings->items.push_back({s.data(), s.size()});
  if (g_break_output && n > 0) strings->items[0] = {nullptr, 3};
  for (int k = 0; k < 2; ++k) {
    out[k].rank = in[0].rank;
    std::copy(in[0].shape, in[0].shape + in[0].rank, out[k].shape);
  }
  out[0].dtype = XRT_DTYPE_STRING;
  out[0].data = strings->items.data();
  out[0].byte_size = n * sizeof(xrt_string_t);
  out[0].owner = strings.release();
  out[0].release = ReleaseStrings;
  out[1].dtype = XRT_DTYPE_INT64;
  out[1].data = lengths->data();
  out[1].byte_size = n * sizeof(int64_t);
  out[1].owner = lengths.release();
  out[1].release = ReleaseLengths;
  return nullptr;
}
void Destroy(void*, void*) {}

nlohmann::json Manifest(nlohmann::json outputs) {
  return {{"format", {{"name", "xrtpkg"}, {"version", "1.0"}}},
          {"model",
           {{"name", "m"},
            {"inputs", {{{"name", "text"}, {"dtype", "string"}, {"shape", {"n"}}}}},
            {"outputs", std::move(outputs)}}},
          {"variants",
           {{{"id", "v"}, {"device", "cpu"}, {"engine", "strtest"}, {"artifacts", {{"model", "model.bin"}}}}}}};
}

nlohmann::json StringOutputsSpec() {
  return {{{"name", "rev"}, {"dtype", "string"}, {"shape", {"n"}}},
          {{"name", "len"}, {"dtype", "int64"}, {"shape", {"n"}}}};
}

struct Loaded {
  std::vector<uint8_t> bytes;
  xrt_bundle_t* bundle = nullptr;
  xrt_session_t* session = nullptr;
  ~Loaded() {
    xrt_session_release(session);
    xrt_bundle_release(bundle);
  }
};

// Opens a bundle with `manifest_text`; with `session` also creates its session (asserting both succeed).
void Load(const std::string& manifest_text, Loaded* l, bool session = true) {
  l->bytes = Build({Zstd("manifest", manifest_text), Plain("model.bin", std::string("strtest has no model"))});
  ASSERT_OK(xrt_bundle_open_memory(l->bytes.data(), l->bytes.size(), nullptr, &l->bundle));
  if (session) ASSERT_OK(xrt_session_create(l->bundle, nullptr, &l->session));
}

void RegisterOnce() {
  static const bool done = [] {
    xrt_backend_vtable_t v{sizeof(xrt_backend_vtable_t), XRT_ABI_VERSION, "strtest", nullptr, Version, HasCpu,
                           Init, Execute, Destroy, nullptr, nullptr, nullptr};
    StatusHolder h(xrt_backend_register(&v));
    return h.code() == "OK";
  }();
  ASSERT_TRUE(done);
}

TEST(StringTensors, CrossTheApiBothWays) {
  RegisterOnce();
  Loaded l;
  Load(Manifest(StringOutputsSpec()).dump(), &l);
  xrt_io_info_t info;
  ASSERT_OK(xrt_session_input_info(l.session, 0, &info));
  EXPECT_EQ(info.dtype, XRT_DTYPE_STRING);
  // UTF-8, an empty string (NULL data is fine with size 0) and an embedded NUL.
  const std::string zoe = "Zo\xc3\xab", nul("a\0b", 3);
  const xrt_string_t items[4] = {{"hello", 5}, {zoe.data(), zoe.size()}, {nullptr, 0}, {nul.data(), nul.size()}};
  const int64_t shape[1] = {4};
  xrt_tensor_view_t view{XRT_DTYPE_STRING, 1, shape, const_cast<xrt_string_t*>(items), sizeof(items)};
  xrt_outputs_t* outs = nullptr;
  ASSERT_OK(xrt_session_run(l.session, nullptr, &view, 1, &outs));
  xrt_tensor_view_t rev, len;
  ASSERT_OK(xrt_outputs_get(outs, 0, &rev, nullptr));
  ASSERT_OK(xrt_outputs_get(outs, 1, &len, nullptr));
  ASSERT_EQ(rev.dtype, XRT_DTYPE_STRING);
  ASSERT_EQ(rev.byte_size, 4 * sizeof(xrt_string_t));
  const auto* got = static_cast<const xrt_string_t*>(rev.data);
  EXPECT_EQ(std::string(got[0].data, got[0].size), "olleh");
  EXPECT_EQ(std::string(got[1].data, got[1].size), "\xab\xc3oZ");  // bytes reversed: the backend's business
  EXPECT_EQ(got[2].size, 0u);
  EXPECT_EQ(std::string(got[3].data, got[3].size), std::string("b\0a", 3));
  const auto* lengths = static_cast<const int64_t*>(len.data);
  EXPECT_EQ(std::vector<int64_t>(lengths, lengths + 4), (std::vector<int64_t>{5, 4, 0, 3}));
  xrt_outputs_release(outs);
}

TEST(StringTensors, BadViewsAreInvalidArgument) {
  RegisterOnce();
  Loaded l;
  Load(Manifest(StringOutputsSpec()).dump(), &l);
  const int64_t shape[1] = {2};
  xrt_outputs_t* outs = nullptr;
  // An element with NULL data and a non-zero size: refused before any backend reads it.
  const xrt_string_t null_item[2] = {{"ok", 2}, {nullptr, 7}};
  xrt_tensor_view_t view{XRT_DTYPE_STRING, 1, shape, const_cast<xrt_string_t*>(null_item), sizeof(null_item)};
  EXPECT_STATUS(xrt_session_run(l.session, nullptr, &view, 1, &outs), "INVALID_ARGUMENT",
                "string element 1 has NULL data and a non-zero size");
  // byte_size must be numel * sizeof(xrt_string_t), not the characters' byte count.
  const xrt_string_t ok[2] = {{"ab", 2}, {"c", 1}};
  view = {XRT_DTYPE_STRING, 1, shape, const_cast<xrt_string_t*>(ok), 3};
  EXPECT_STATUS(xrt_session_run(l.session, nullptr, &view, 1, &outs), "INVALID_ARGUMENT",
                "byte_size is 3, the shape and dtype need 32");
  // A numeric tensor where the model takes strings.
  const int64_t numbers[2] = {1, 2};
  view = {XRT_DTYPE_INT64, 1, shape, const_cast<int64_t*>(numbers), sizeof(numbers)};
  EXPECT_STATUS(xrt_session_run(l.session, nullptr, &view, 1, &outs), "INVALID_ARGUMENT",
                "expected string[n], given int64[2]: wrong dtype");
  // Strings live on the host: a string view declared in device memory is refused before its elements are read.
  xrt_placed_view_t placed{};
  placed.struct_size = sizeof(placed);
  placed.placement = {XRT_MEMORY_CUDA, 0};
  placed.view = {XRT_DTYPE_STRING, 1, shape, reinterpret_cast<void*>(uintptr_t{0x10}), 2 * sizeof(xrt_string_t)};
  EXPECT_STATUS(xrt_session_run_placed(l.session, nullptr, nullptr, &placed, 1, &outs), "INVALID_ARGUMENT",
                "a string tensor must be in host memory, given in cuda:0 memory");
  EXPECT_EQ(outs, nullptr);
}

TEST(StringTensors, ABackendsBadStringOutputIsInternal) {
  RegisterOnce();
  Loaded l;
  Load(Manifest(StringOutputsSpec()).dump(), &l);
  const int64_t shape[1] = {1};
  const xrt_string_t one[1] = {{"abc", 3}};
  xrt_tensor_view_t view{XRT_DTYPE_STRING, 1, shape, const_cast<xrt_string_t*>(one), sizeof(one)};
  xrt_outputs_t* outs = nullptr;
  g_break_output = 1;
  EXPECT_STATUS(xrt_session_run(l.session, nullptr, &view, 1, &outs), "INTERNAL",
                "output \"rev\" as string[1] but the manifest says string[n]: string element 0 has NULL data");
  g_break_output = 0;
  EXPECT_EQ(outs, nullptr);
}

TEST(ValueTypes, RunThroughTheCApiIsUnimplementedNamingTheValue) {
  RegisterOnce();
  auto outputs = StringOutputsSpec();
  outputs.push_back({{"name", "probabilities"},
                     {"type", {{"sequence", {{"map", {{"key", "int64"}, {"value", "float32"}}}}}}}});
  Loaded l;
  Load(Manifest(outputs).dump(), &l);  // the core still parses the types and picks the variant
  xrt_io_info_t info;
  ASSERT_OK(xrt_session_output_info(l.session, 2, &info));
  EXPECT_EQ(info.dtype, XRT_DTYPE_INVALID);
  EXPECT_EQ(info.rank, 0u);
  const int64_t shape[1] = {1};
  const xrt_string_t one[1] = {{"abc", 3}};
  xrt_tensor_view_t view{XRT_DTYPE_STRING, 1, shape, const_cast<xrt_string_t*>(one), sizeof(one)};
  xrt_outputs_t* outs = nullptr;
  EXPECT_STATUS(xrt_session_run(l.session, nullptr, &view, 1, &outs), "UNIMPLEMENTED",
                "output \"probabilities\" is a sequence<map<int64, tensor(float32)>>, which the C API does not "
                "carry");
  EXPECT_EQ(outs, nullptr);
}

TEST(ValueTypes, HostileDeclarationsAreDataCorrupt) {
  RegisterOnce();
  auto nest = [](int levels) {
    nlohmann::json t = "float32";
    for (int i = 0; i < levels; ++i) t = {{"sequence", t}};
    return t;
  };
  struct Case {
    const char* what;
    nlohmann::json type;
    const char* needle;
  };
  const std::vector<Case> cases = {
      {"8 levels is the cap", nest(8), ""},
      {"9 levels", nest(9), "nests deeper than 8 levels"},
      {"unknown type name", {{"tuple", "float32"}}, "has unknown type \"tuple\" (known: sequence, map, optional)"},
      {"unknown dtype", {{"sequence", "float128"}}, "is \"float128\", not one of"},
      {"two keys", {{"sequence", "float32"}, {"optional", "float32"}}, "an object with one key"},
      {"float map key", {{"map", {{"key", "float32"}, {"value", "float32"}}}}, "a map key is \"string\" or an integer"},
      {"map without value", {{"map", {{"key", "int64"}}}}, "must have exactly the keys \"key\" and \"value\""},
      {"bare dtype", "float32", "type must be an object"},
      {"number", 7, "type must be an object"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    auto outputs = StringOutputsSpec();
    outputs.push_back({{"name", "v"}, {"type", c.type}});
    Loaded l;
    Load(Manifest(outputs).dump(), &l, /*session=*/false);
    StatusHolder h(xrt_session_create(l.bundle, nullptr, &l.session));
    if (*c.needle == '\0') {
      EXPECT_EQ(h.code(), "OK") << h.message();
    } else {
      EXPECT_EQ(h.code(), "DATA_CORRUPT") << h.message();
      EXPECT_NE(h.message().find(c.needle), std::string::npos) << h.message();
      EXPECT_EQ(l.session, nullptr);
    }
  }
  // A type next to a dtype is ambiguous: refused.
  auto outputs = StringOutputsSpec();
  outputs.push_back({{"name", "v"}, {"dtype", "float32"}, {"type", {{"sequence", "float32"}}}});
  Loaded l;
  Load(Manifest(outputs).dump(), &l, false);
  EXPECT_STATUS(xrt_session_create(l.bundle, nullptr, &l.session), "DATA_CORRUPT", "a value has one or the other");
  // Nesting a million levels deep never reaches the type parser: the format's manifest cap (64) refuses it at open.
  std::string deep = std::string(1000000, '[') + std::string(1000000, ']');
  std::string text = Manifest(StringOutputsSpec()).dump();
  text.replace(text.find("\"string\""), 8, deep);
  auto bytes = Build({Zstd("manifest", text), Plain("model.bin", std::string("x"))});
  xrt_bundle_t* b = nullptr;
  EXPECT_STATUS(xrt_bundle_open_memory(bytes.data(), bytes.size(), nullptr, &b), "DATA_CORRUPT", "");
  EXPECT_EQ(b, nullptr);
}

}  // namespace
