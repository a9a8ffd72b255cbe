// Hostile arguments to xrt_session_run / xrt_outputs_get through the plain C API, on a real session (the OpenVINO
// plugin and the golden tiny model y = Relu(x @ W + b), x: float32[1, 4]); skipped, saying why, without the plugin.
// Every case must return a status (never abort, never throw across the ABI), and the session must stay usable: the
// next valid run gives the same bytes as before. Also: 32 threads x 1000 runs on one xrt_session_t, every output
// bit-identical to the single-thread result (the thread-safety xrt.h documents). Complements c_api_test.cc (NULL
// arguments, options, xrt_backend_list's short buffers, golden verdicts).
#include "xrt/xrt.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "xrtpkg_test_builder.h"

namespace {

namespace fs = std::filesystem;
const fs::path kTiny = fs::path(XRT_GOLDEN_DIR) / "tiny_model.xrtpkg";
const fs::path kPlugin = fs::path(XRT_TEST_LIB_DIR) / "libxrt_backend_openvino.so";

// The status code of a call, freeing the status; the message must be non-empty for an error.
xrt_status_code_t Code(xrt_status_t s) {
  const xrt_status_code_t code = xrt_status_code(s);
  if (s != nullptr) {
    EXPECT_GT(std::strlen(xrt_status_message(s)), 0u);
  }
  xrt_status_free(s);
  return code;
}

class CApiHardening : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(kPlugin)) GTEST_SKIP() << kPlugin << " was not built (XRT_BUILD_OPENVINO=OFF?)";
    ::unsetenv("XRT_BACKEND_PATH");
    ASSERT_EQ(Code(xrt_bundle_open_file(kTiny.c_str(), nullptr, &bundle_)), XRT_STATUS_OK);
    xrt_session_options_t options;
    xrt_session_options_initialize(&options);
    options.engine = "openvino";
    ASSERT_EQ(Code(xrt_session_create(bundle_, &options, &session_)), XRT_STATUS_OK);
  }
  void TearDown() override {
    xrt_session_release(session_);  // NULL (skipped set-up) is a no-op
    xrt_bundle_release(bundle_);
  }
  // Runs x (float32[1, 4]) and returns y's bytes; empty on error.
  std::vector<uint8_t> Run(const float* x) {
    const int64_t shape[2] = {1, 4};
    xrt_tensor_view_t in{XRT_DTYPE_FLOAT32, 2, shape, const_cast<float*>(x), 16};
    xrt_outputs_t* out = nullptr;
    if (Code(xrt_session_run(session_, nullptr, &in, 1, &out)) != XRT_STATUS_OK) return {};
    xrt_tensor_view_t y;
    EXPECT_EQ(Code(xrt_outputs_get(out, 0, &y, nullptr)), XRT_STATUS_OK);
    std::vector<uint8_t> bytes(static_cast<const uint8_t*>(y.data), static_cast<const uint8_t*>(y.data) + y.byte_size);
    xrt_outputs_release(out);
    return bytes;
  }
  xrt_bundle_t* bundle_ = nullptr;
  xrt_session_t* session_ = nullptr;
};

TEST_F(CApiHardening, HostileRunArgumentsAreStatusesAndTheSessionStaysUsable) {
  const float x[4] = {1.0f, -2.0f, 3.0f, 0.5f};
  const std::vector<uint8_t> before = Run(x);
  ASSERT_EQ(before.size(), 12u);

  const int64_t good[2] = {1, 4}, negative[2] = {1, -4}, zero[2] = {0, 4}, wrong[2] = {1, 5};
  const int64_t overflow[4] = {INT64_C(1) << 40, INT64_C(1) << 40, 1, 4};  // numel * 4 overflows 64 bits
  const int64_t deep[XRT_MAX_RANK + 1] = {};
  float data[4] = {};
  struct Case {
    const char* what;
    xrt_tensor_view_t view;
    const char* name;
  };
  const Case cases[] = {
      {"negative dim", {XRT_DTYPE_FLOAT32, 2, negative, data, 16}, nullptr},
      {"zero-size dim where 1 is static", {XRT_DTYPE_FLOAT32, 2, zero, data, 0}, nullptr},
      {"wrong static dim", {XRT_DTYPE_FLOAT32, 2, wrong, data, 20}, nullptr},
      {"numel overflow", {XRT_DTYPE_FLOAT32, 4, overflow, data, 16}, nullptr},
      {"rank over XRT_MAX_RANK", {XRT_DTYPE_FLOAT32, XRT_MAX_RANK + 1, deep, data, 0}, nullptr},
      {"rank 2 with NULL shape", {XRT_DTYPE_FLOAT32, 2, nullptr, data, 16}, nullptr},
      {"byte_size too small", {XRT_DTYPE_FLOAT32, 2, good, data, 15}, nullptr},
      {"byte_size too large", {XRT_DTYPE_FLOAT32, 2, good, data, 17}, nullptr},
      {"NULL data", {XRT_DTYPE_FLOAT32, 2, good, nullptr, 16}, nullptr},
      {"dtype INVALID", {XRT_DTYPE_INVALID, 2, good, data, 16}, nullptr},
      {"dtype out of the enum", {static_cast<xrt_dtype_t>(1234), 2, good, data, 16}, nullptr},
      {"wrong dtype", {XRT_DTYPE_INT32, 2, good, data, 16}, nullptr},
      {"unknown name", {XRT_DTYPE_FLOAT32, 2, good, data, 16}, "nope"},
      {"empty name", {XRT_DTYPE_FLOAT32, 2, good, data, 16}, ""},
  };
  for (const Case& c : cases) {
    xrt_outputs_t* out = reinterpret_cast<xrt_outputs_t*>(0x1);  // must be reset to NULL on error
    const char* names[1] = {c.name};
    const xrt_status_code_t code =
        Code(xrt_session_run(session_, c.name ? names : nullptr, &c.view, 1, &out));
    EXPECT_EQ(code, XRT_STATUS_INVALID_ARGUMENT) << c.what;
    EXPECT_EQ(out, nullptr) << c.what;
  }
  // Counts and names: none, too many, duplicate, a NULL entry in names.
  xrt_tensor_view_t in{XRT_DTYPE_FLOAT32, 2, good, data, 16};
  xrt_tensor_view_t two[2] = {in, in};
  xrt_outputs_t* out = nullptr;
  EXPECT_EQ(Code(xrt_session_run(session_, nullptr, nullptr, 0, &out)), XRT_STATUS_INVALID_ARGUMENT);
  EXPECT_EQ(Code(xrt_session_run(session_, nullptr, two, 2, &out)), XRT_STATUS_INVALID_ARGUMENT);
  const char* dup[2] = {"x", "x"};
  EXPECT_EQ(Code(xrt_session_run(session_, dup, two, 2, &out)), XRT_STATUS_INVALID_ARGUMENT);
  const char* null_name[1] = {nullptr};
  EXPECT_EQ(Code(xrt_session_run(session_, null_name, &in, 1, &out)), XRT_STATUS_INVALID_ARGUMENT);
  EXPECT_EQ(Code(xrt_session_run(session_, nullptr, nullptr, 1, &out)), XRT_STATUS_INVALID_ARGUMENT);
  EXPECT_EQ(out, nullptr);

  // Output accessors: index out of range, NULL view; the name is optional.
  ASSERT_EQ(Code(xrt_session_run(session_, nullptr, &in, 1, &out)), XRT_STATUS_OK);
  xrt_tensor_view_t y;
  EXPECT_EQ(Code(xrt_outputs_get(out, 1, &y, nullptr)), XRT_STATUS_INVALID_ARGUMENT);
  EXPECT_EQ(Code(xrt_outputs_get(out, SIZE_MAX, &y, nullptr)), XRT_STATUS_INVALID_ARGUMENT);
  EXPECT_EQ(Code(xrt_outputs_get(out, 0, nullptr, nullptr)), XRT_STATUS_INVALID_ARGUMENT);
  const char* name = nullptr;
  EXPECT_EQ(Code(xrt_outputs_get(out, 0, &y, &name)), XRT_STATUS_OK);
  EXPECT_STREQ(name, "y");
  xrt_outputs_release(out);
  xrt_outputs_release(nullptr);
  xrt_io_info_t info;
  EXPECT_EQ(Code(xrt_session_input_info(session_, 1, &info)), XRT_STATUS_INVALID_ARGUMENT);
  EXPECT_EQ(Code(xrt_session_output_info(session_, SIZE_MAX, &info)), XRT_STATUS_INVALID_ARGUMENT);

  // After all of that, the same input gives the same bytes.
  EXPECT_EQ(Run(x), before);
}

// The placed entry point on a real cpu engine (OpenVINO: a backend without execute_placed): host views give the same
// bytes as xrt_session_run, outputs_on_device leaves host outputs on the host, and device tensors, streams and
// hostile struct sizes are statuses naming what was wrong; the session stays usable.
TEST_F(CApiHardening, PlacedRunsOnACpuEngineMatchThePlainRunAndRefuseDeviceMemory) {
  const float x[4] = {1.0f, -2.0f, 3.0f, 0.5f};
  const std::vector<uint8_t> before = Run(x);
  ASSERT_EQ(before.size(), 12u);
  const int64_t shape[2] = {1, 4};
  xrt_placed_view_t in{};
  in.struct_size = sizeof(in);
  in.placement = {XRT_MEMORY_HOST, 0};
  in.view = {XRT_DTYPE_FLOAT32, 2, shape, const_cast<float*>(x), 16};
  xrt_run_options_t options;
  xrt_run_options_initialize(&options);
  for (uint32_t on_device : {0u, 1u}) {
    options.outputs_on_device = on_device;
    xrt_outputs_t* out = nullptr;
    ASSERT_EQ(Code(xrt_session_run_placed(session_, &options, nullptr, &in, 1, &out)), XRT_STATUS_OK);
    xrt_placed_view_t y{};
    y.struct_size = sizeof(y);
    ASSERT_EQ(Code(xrt_outputs_get_placed(out, 0, &y, nullptr)), XRT_STATUS_OK);
    EXPECT_EQ(y.placement.kind, XRT_MEMORY_HOST);
    const auto* bytes = static_cast<const uint8_t*>(y.view.data);
    EXPECT_EQ(std::vector<uint8_t>(bytes, bytes + y.view.byte_size), before) << "outputs_on_device=" << on_device;
    xrt_outputs_release(out);
  }
  xrt_outputs_t* out = nullptr;
  xrt_placed_view_t device = in;
  device.placement = {XRT_MEMORY_CUDA, 0};
  xrt_status_t s = xrt_session_run_placed(session_, nullptr, nullptr, &device, 1, &out);
  EXPECT_EQ(xrt_status_code(s), XRT_STATUS_UNIMPLEMENTED);
  EXPECT_NE(std::string(xrt_status_message(s)).find("is in cuda:0 memory, but engine openvino"), std::string::npos)
      << xrt_status_message(s);
  xrt_status_free(s);
  options.outputs_on_device = 0;
  options.stream = reinterpret_cast<void*>(0x10);
  EXPECT_EQ(Code(xrt_session_run_placed(session_, &options, nullptr, &in, 1, &out)), XRT_STATUS_INVALID_ARGUMENT);
  options.stream = nullptr;
  options.struct_size = 0;
  EXPECT_EQ(Code(xrt_session_run_placed(session_, &options, nullptr, &in, 1, &out)), XRT_STATUS_INVALID_ARGUMENT);
  xrt_placed_view_t bad = in;
  bad.struct_size = 0;  // would make a zero stride
  EXPECT_EQ(Code(xrt_session_run_placed(session_, nullptr, nullptr, &bad, 1, &out)), XRT_STATUS_INVALID_ARGUMENT);
  bad = in;
  bad.placement.kind = -1;
  EXPECT_EQ(Code(xrt_session_run_placed(session_, nullptr, nullptr, &bad, 1, &out)), XRT_STATUS_INVALID_ARGUMENT);
  EXPECT_EQ(Code(xrt_session_run_placed(session_, nullptr, nullptr, nullptr, 1, &out)), XRT_STATUS_INVALID_ARGUMENT);
  EXPECT_EQ(Code(xrt_session_run_placed(session_, nullptr, nullptr, &in, 1, nullptr)), XRT_STATUS_INVALID_ARGUMENT);
  EXPECT_EQ(out, nullptr);
  EXPECT_EQ(Run(x), before);
}

TEST_F(CApiHardening, BackendListShortBuffers) {
  size_t full = 0;
  ASSERT_EQ(Code(xrt_backend_list(nullptr, 0, &full)), XRT_STATUS_OK);
  ASSERT_GT(full, 0u);  // the OpenVINO plugin file at least
  std::string whole(full + 1, '\xAA');
  ASSERT_EQ(Code(xrt_backend_list(whole.data(), whole.size(), nullptr)), XRT_STATUS_OK);
  whole.resize(full);
  for (size_t capacity = 1; capacity <= full + 1; ++capacity) {
    std::vector<char> buf(capacity + 8, '\xAA');  // canaries after the capacity
    size_t length = 0;
    ASSERT_EQ(Code(xrt_backend_list(buf.data(), capacity, &length)), XRT_STATUS_OK);
    EXPECT_EQ(length, full);
    const size_t n = std::min(full, capacity - 1);
    EXPECT_EQ(std::string(buf.data(), n), whole.substr(0, n));
    EXPECT_EQ(buf[n], '\0');
    for (size_t k = capacity; k < buf.size(); ++k) EXPECT_EQ(buf[k], '\xAA') << "wrote past capacity " << capacity;
  }
}

TEST_F(CApiHardening, ThirtyTwoThreadsTimesAThousandRunsOnOneSession) {
  // Eight distinct inputs, their single-thread outputs first.
  std::vector<std::vector<float>> inputs;
  std::vector<std::vector<uint8_t>> expected;
  for (int k = 0; k < 8; ++k) {
    inputs.push_back({0.5f * k, -0.25f * k, 1.0f + k, 0.125f * (k % 3)});
    expected.push_back(Run(inputs.back().data()));
    ASSERT_EQ(expected.back().size(), 12u);
  }
  const int threads = 32, runs = 1000;
  std::atomic<int> mismatches{0}, errors{0}, done{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      const int64_t shape[2] = {1, 4};
      for (int i = 0; i < runs; ++i) {
        const int k = (t + i) % 8;
        xrt_tensor_view_t in{XRT_DTYPE_FLOAT32, 2, shape, inputs[k].data(), 16};
        xrt_outputs_t* out = nullptr;
        xrt_status_t s = xrt_session_run(session_, nullptr, &in, 1, &out);
        if (s != nullptr) {
          xrt_status_free(s);
          ++errors;
          continue;
        }
        xrt_tensor_view_t y;
        xrt_status_free(xrt_outputs_get(out, 0, &y, nullptr));
        if (y.byte_size != 12 || std::memcmp(y.data, expected[k].data(), 12) != 0) ++mismatches;
        xrt_outputs_release(out);
        ++done;
      }
    });
  }
  for (auto& th : pool) th.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(mismatches.load(), 0);
  EXPECT_EQ(done.load(), threads * runs);
}

// ---- A host-registered engine, so the core's concurrent paths run under TSan too ----------------------------------
// OpenVINO cannot run under the sanitizers (its TBB is loaded with RTLD_DEEPBIND), so this small engine, registered
// through the public xrt_backend_register() as a host would, computes y = x * scale, with `scale` (a float32) read
// from the bundle's "model" artifact. It exercises everything in the core between the C API and an engine: variant
// selection, input checks, the backend vtable, output ownership and release, across threads.
struct ScaleHandle {
  float scale;
};
const char* ScaleVersion(void*) { return "1.0"; }
int ScaleHasDevice(void*, const char* device) { return std::strcmp(device, "cpu") == 0; }
xrt_status_t ScaleInit(void*, const char*, const xrt_backend_artifact_t* artifacts, size_t count, const char*,
                       void** out_handle) {
  if (count != 1 || artifacts[0].size != sizeof(float)) {
    return xrt_status_make(XRT_STATUS_DATA_CORRUPT, "scale engine: the model artifact is one float32");
  }
  auto* h = new ScaleHandle;
  std::memcpy(&h->scale, artifacts[0].data, sizeof(float));
  *out_handle = h;
  return nullptr;
}
xrt_status_t ScaleExecute(void*, void* handle, const xrt_tensor_view_t* inputs, size_t, xrt_backend_output_t* outputs,
                          size_t) {
  const float scale = static_cast<ScaleHandle*>(handle)->scale;
  const xrt_tensor_view_t& x = inputs[0];
  xrt_backend_output_t& y = outputs[0];
  y.dtype = XRT_DTYPE_FLOAT32;
  y.rank = x.rank;
  for (uint32_t d = 0; d < x.rank; ++d) y.shape[d] = x.shape[d];
  y.byte_size = x.byte_size;
  y.data = std::malloc(x.byte_size ? x.byte_size : 1);
  if (y.data == nullptr) return xrt_status_make(XRT_STATUS_RESOURCE_EXHAUSTED, "scale engine: out of memory");
  for (uint64_t i = 0; i < x.byte_size / sizeof(float); ++i) {
    static_cast<float*>(y.data)[i] = static_cast<const float*>(x.data)[i] * scale;
  }
  y.owner = y.data;
  y.release = std::free;
  return nullptr;
}
void ScaleDestroy(void*, void* handle) { delete static_cast<ScaleHandle*>(handle); }

TEST(CApiConcurrency, ThirtyTwoThreadsTimesAThousandRunsThroughAHostBackend) {
  xrt_backend_vtable_t vt{};
  vt.struct_size = sizeof(vt);
  vt.abi_version = XRT_ABI_VERSION;
  vt.name = "scale";
  vt.version = ScaleVersion;
  vt.has_device = ScaleHasDevice;
  vt.init = ScaleInit;
  vt.execute = ScaleExecute;
  vt.destroy = ScaleDestroy;
  ASSERT_EQ(Code(xrt_backend_register(&vt)), XRT_STATUS_OK);

  const nlohmann::json manifest = {
      {"format", {{"name", "xrtpkg"}, {"version", "1.0"}}},
      {"model",
       {{"name", "scale"},
        {"inputs", {{{"name", "x"}, {"dtype", "float32"}, {"shape", {"batch", 4}}}}},
        {"outputs", {{{"name", "y"}, {"dtype", "float32"}, {"shape", {"batch", 4}}}}}}},
      {"variants",
       {{{"id", "cpu-scale"}, {"target", "cpu"}, {"device", "cpu"}, {"engine", "scale"}, {"precision", "fp32"},
         {"artifacts", {{"model", "scale.bin"}}}, {"options", nlohmann::json::object()}, {"why", "test"}}}}};
  const float scale = 1.5f;
  std::vector<uint8_t> weights(sizeof(float));
  std::memcpy(weights.data(), &scale, sizeof(float));
  using namespace xrt::format::testing;
  const auto bytes = Build({Zstd("manifest", manifest.dump()), Plain("scale.bin", weights)});
  xrt_bundle_t* bundle = nullptr;
  ASSERT_EQ(Code(xrt_bundle_open_memory(bytes.data(), bytes.size(), nullptr, &bundle)), XRT_STATUS_OK);
  xrt_session_t* session = nullptr;
  ASSERT_EQ(Code(xrt_session_create(bundle, nullptr, &session)), XRT_STATUS_OK);
  xrt_bundle_release(bundle);  // the session keeps it alive

  const int threads = 32, runs = 1000;
  std::atomic<int> bad{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      for (int i = 0; i < runs; ++i) {
        const int64_t shape[2] = {1 + (i % 3), 4};
        std::vector<float> x(static_cast<size_t>(shape[0] * 4));
        for (size_t k = 0; k < x.size(); ++k) x[k] = static_cast<float>(t * 1000 + i) + 0.25f * k;
        xrt_tensor_view_t in{XRT_DTYPE_FLOAT32, 2, shape, x.data(), x.size() * sizeof(float)};
        const char* names[1] = {"x"};
        xrt_outputs_t* out = nullptr;
        xrt_status_t s = xrt_session_run(session, names, &in, 1, &out);
        if (s != nullptr) {
          xrt_status_free(s);
          ++bad;
          continue;
        }
        xrt_tensor_view_t y;
        xrt_status_free(xrt_outputs_get(out, 0, &y, nullptr));
        for (size_t k = 0; k < x.size(); ++k) {
          if (static_cast<const float*>(y.data)[k] != x[k] * scale) {
            ++bad;
            break;
          }
        }
        xrt_outputs_release(out);
      }
    });
  }
  for (auto& th : pool) th.join();
  xrt_session_release(session);
  EXPECT_EQ(bad.load(), 0);
}

}  // namespace

// SECURITY.md, "The bundle file after open": the file is read into private memory and verified there, so writing
// it in place, truncating it or replacing it in place (what `cp` does) after open changes no output and cannot
// SIGBUS the process; sessions created afterwards from the same bundle see the verified bytes too.
TEST(CApiBundleFile, ChangesToTheFileAfterOpenReachNothing) {
  if (!fs::exists(kPlugin)) GTEST_SKIP() << kPlugin << " was not built (XRT_BUILD_OPENVINO=OFF?)";
  ::unsetenv("XRT_BACKEND_PATH");
  const fs::path live = fs::temp_directory_path() / ("xrt_live_" + std::to_string(::getpid()) + ".xrtpkg");
  fs::copy_file(kTiny, live, fs::copy_options::overwrite_existing);
  xrt_bundle_t* bundle = nullptr;
  ASSERT_EQ(Code(xrt_bundle_open_file(live.c_str(), nullptr, &bundle)), XRT_STATUS_OK);
  xrt_session_options_t options;
  xrt_session_options_initialize(&options);
  options.engine = "openvino";
  auto run = [&](xrt_session_t* session) {
    const float x[4] = {1.0f, -2.0f, 3.0f, 0.5f};
    const int64_t shape[2] = {1, 4};
    xrt_tensor_view_t in{XRT_DTYPE_FLOAT32, 2, shape, const_cast<float*>(x), 16};
    xrt_outputs_t* out = nullptr;
    std::vector<uint8_t> bytes;
    if (Code(xrt_session_run(session, nullptr, &in, 1, &out)) != XRT_STATUS_OK) return bytes;
    xrt_tensor_view_t y;
    EXPECT_EQ(Code(xrt_outputs_get(out, 0, &y, nullptr)), XRT_STATUS_OK);
    bytes.assign(static_cast<const uint8_t*>(y.data), static_cast<const uint8_t*>(y.data) + y.byte_size);
    xrt_outputs_release(out);
    return bytes;
  };
  xrt_session_t* session = nullptr;
  ASSERT_EQ(Code(xrt_session_create(bundle, &options, &session)), XRT_STATUS_OK);
  const std::vector<uint8_t> before = run(session);
  ASSERT_EQ(before.size(), 12u);

  const auto size = fs::file_size(live);
  {
    FILE* f = std::fopen(live.c_str(), "r+b");
    ASSERT_NE(f, nullptr);
    std::fseek(f, 64, SEEK_SET);
    const std::vector<uint8_t> zeros(size - 64, 0xA5);
    std::fwrite(zeros.data(), 1, zeros.size(), f);
    std::fclose(f);
  }
  EXPECT_EQ(run(session), before) << "in-place write";
  fs::resize_file(live, 0);
  EXPECT_EQ(run(session), before) << "truncated";
  xrt_session_t* later = nullptr;  // a session created after the truncation reads the verified copy
  ASSERT_EQ(Code(xrt_session_create(bundle, &options, &later)), XRT_STATUS_OK);
  EXPECT_EQ(run(later), before) << "new session after truncation";
  xrt_session_release(later);
  xrt_session_release(session);
  xrt_bundle_release(bundle);
  fs::remove(live);
}
