// The cuda engine on a real GPU through the dlopened driver, cuBLASLt and cuBLAS: a hand-written PTX kernel
// between two cuBLASLt (or cuBLAS) GEMMs (fp32), and an fp16 GEMM with the GELU+bias epilogue, each against a float64
// host reference, in graphs, in profiling mode and with replay timing. Skips, saying why, on machines without a
// driver or GPU.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cuda_api.h"
#include "engine.h"

namespace xrt {
namespace cuda_backend {
namespace {

using nlohmann::json;

// relu(x, y, n, scratch): y[i] = max(x[i], 0) for i < n; 64 threads a block. Written by hand for this test.
const char kReluPtx[] = R"(.version 7.0
.target sm_70
.address_size 64
.visible .entry relu_f32(.param .u64 px, .param .u64 py, .param .u32 pn, .param .u64 pscratch)
{
  .reg .pred %p<2>;
  .reg .b32 %r<6>;
  .reg .f32 %f<3>;
  .reg .b64 %rd<7>;
  ld.param.u64 %rd1, [px];
  ld.param.u64 %rd2, [py];
  ld.param.u32 %r1, [pn];
  mov.u32 %r2, %ctaid.x;
  mov.u32 %r3, %ntid.x;
  mov.u32 %r4, %tid.x;
  mad.lo.s32 %r5, %r2, %r3, %r4;
  setp.ge.u32 %p1, %r5, %r1;
  @%p1 bra DONE;
  cvta.to.global.u64 %rd3, %rd1;
  cvta.to.global.u64 %rd4, %rd2;
  mul.wide.u32 %rd5, %r5, 4;
  add.s64 %rd6, %rd3, %rd5;
  ld.global.f32 %f1, [%rd6];
  max.f32 %f2, %f1, 0f00000000;
  add.s64 %rd6, %rd4, %rd5;
  st.global.f32 [%rd6], %f2;
DONE:
  ret;
}
)";

uint16_t ToHalf(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const int32_t exp = static_cast<int32_t>((x >> 23) & 0xff) - 112;
  const uint32_t mant = x & 0x7fffffu;
  if (exp <= 0) return static_cast<uint16_t>(sign);
  if (exp >= 31) return static_cast<uint16_t>(sign | 0x7c00u);
  uint32_t h = sign | (static_cast<uint32_t>(exp) << 10) | (mant >> 13);
  if ((mant & 0x1fffu) > 0x1000u || ((mant & 0x1fffu) == 0x1000u && (h & 1u))) ++h;
  return static_cast<uint16_t>(h);
}
float FromHalf(uint16_t h) {
  const uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ffu;
  if (exp == 0) return (sign ? -1.f : 1.f) * std::ldexp(static_cast<float>(mant), -24);
  const uint32_t x = sign | ((exp + 112) << 23) | (mant << 13);
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

class CudaGpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string error;
    drv_ = LoadDriver(&error);
    if (drv_ == nullptr) {
      EXPECT_EQ(error.rfind("libcuda.so.1 not found: no NVIDIA driver; this variant needs a CUDA GPU", 0), 0u) << error;
      GTEST_SKIP() << "no GPU: " << error;
    }
    int count = 0;
    if (drv_->cuInit(0) != CUDA_SUCCESS || drv_->cuDeviceGetCount(&count) != CUDA_SUCCESS || count == 0) {
      GTEST_SKIP() << "the NVIDIA driver is present but reports no CUDA device";
    }
    lt_ = LoadCublasLt(&lt_error_);
    if (lt_ == nullptr) GTEST_SKIP() << lt_error_;
  }
  std::unique_ptr<Engine> Create(const json& plan, const std::string& weights, const std::string& kernels,
                                 EngineOptions o = {}) {
    text_ = plan.dump();
    EngineArtifacts a{text_.data(), text_.size(), weights.data(), weights.size(), kernels.data(), kernels.size(), {}};
    std::unique_ptr<Engine> e;
    xrt_status_t s = Engine::Create(drv_, lt_, lt_error_, a, o, &e);
    EXPECT_EQ(s, nullptr) << xrt_status_message(s);
    xrt_status_free(s);
    return e;
  }
  const DriverApi* drv_ = nullptr;
  const CublasLtApi* lt_ = nullptr;
  std::string lt_error_, text_;
};

std::string Append(std::string* blob, const void* data, size_t bytes) {
  const size_t off = blob->size();
  blob->append(static_cast<const char*>(data), bytes);
  blob->resize((blob->size() + 255) / 256 * 256, '\0');
  return std::to_string(off);
}

// y[b,N] = relu(x[b,K] @ W1[K,H] + b1) @ W2[N,H]^T + b2 (fp32), batch up to 64: the hand-written PTX kernel between
// two cuBLASLt GEMMs, with its float64 host reference.
struct ReluMlp {
  static constexpr int K = 96, H = 160, N = 48, B = 64;
  std::vector<float> w1 = std::vector<float>(K * H), b1 = std::vector<float>(H), w2 = std::vector<float>(N * H),
                     b2 = std::vector<float>(N);
  std::string weights, kernels = kReluPtx;
  json plan;
  explicit ReluMlp(std::mt19937& rng) {
    std::normal_distribution<float> nd(0.f, 1.f);
    for (auto* v : {&w1, &b1, &w2, &b2}) for (float& f : *v) f = nd(rng) * 0.2f;
    const uint64_t o1 = std::stoull(Append(&weights, w1.data(), w1.size() * 4));
    const uint64_t ob1 = std::stoull(Append(&weights, b1.data(), b1.size() * 4));
    const uint64_t o2 = std::stoull(Append(&weights, w2.data(), w2.size() * 4));
    const uint64_t ob2 = std::stoull(Append(&weights, b2.data(), b2.size() * 4));
    const json bh = {{"mul", {"batch", H}}};
    plan = {
      {"format", "xrt-cuda-plan"}, {"version", 1}, {"dims", {{"batch", {{"max", B}}}}},
      {"tensors",
       {{{"name", "x"}, {"dtype", "float32"}, {"shape", {"batch", K}}, {"storage", "input"}, {"bytes_max", B * K * 4}},
        {{"name", "w1"}, {"dtype", "float32"}, {"shape", {K, H}}, {"storage", "weight"}, {"offset", o1}, {"bytes_max", K * H * 4}},
        {{"name", "b1"}, {"dtype", "float32"}, {"shape", {H}}, {"storage", "weight"}, {"offset", ob1}, {"bytes_max", H * 4}},
        {{"name", "h"}, {"dtype", "float32"}, {"shape", {"batch", H}}, {"storage", "arena"}, {"offset", 0}, {"bytes_max", B * H * 4}},
        {{"name", "r"}, {"dtype", "float32"}, {"shape", {"batch", H}}, {"storage", "arena"}, {"offset", B * H * 4}, {"bytes_max", B * H * 4}},
        {{"name", "w2"}, {"dtype", "float32"}, {"shape", {N, H}}, {"storage", "weight"}, {"offset", o2}, {"bytes_max", N * H * 4}},
        {{"name", "b2"}, {"dtype", "float32"}, {"shape", {N}}, {"storage", "weight"}, {"offset", ob2}, {"bytes_max", N * 4}},
        {{"name", "y"}, {"dtype", "float32"}, {"shape", {"batch", N}}, {"storage", "output"}, {"bytes_max", B * N * 4}}}},
      {"inputs", {0}}, {"outputs", {7}}, {"arena_bytes", 2 * B * H * 4},
      {"kernels", {{{"entry", "relu_f32"}, {"num_warps", 2}, {"shared_mem", 0},
                    {"params", {{{"tensor", 3}}, {{"tensor", 4}}, {{"dim", bh}}, {{"scratch", "global"}}}},
                    {"images", {{"ptx", {0, kernels.size()}}}}, {"group", "relu"}, {"onnx_nodes", {"Relu"}}}}},
      {"gemms", {{{"m", "batch"}, {"n", H}, {"k", K}, {"a", 0}, {"b", 1}, {"c", 3}, {"bias", 2}, {"dtype", "float32"},
                  {"epilogue", "bias"}, {"onnx_nodes", {"MatMul", "Add"}}},
                 {{"m", "batch"}, {"n", N}, {"k", H}, {"a", 4}, {"b", 5}, {"c", 7}, {"bias", 6}, {"trans_b", true},
                  {"dtype", "float32"}, {"epilogue", "bias"}, {"onnx_nodes", {"Gemm"}}}}},
      {"launches", {{{"gemm", 0}}, {{"kernel", 0}, {"grid", {{{"cdiv", {bh, 64}}}, 1, 1}}}, {{"gemm", 1}}}},
    };
  }
  // ||y - reference|| / ||reference|| over a batch.
  double RelErr(const std::vector<float>& x, const float* y, int batch) const {
    double num = 0, den = 0;
    for (int b = 0; b < batch; ++b) {
      std::vector<double> h(H);
      for (int j = 0; j < H; ++j) {
        double acc = b1[j];
        for (int i = 0; i < K; ++i) acc += double(x[b * K + i]) * w1[i * H + j];
        h[j] = acc > 0 ? acc : 0;
      }
      for (int n = 0; n < N; ++n) {
        double acc = b2[n];
        for (int j = 0; j < H; ++j) acc += h[j] * w2[n * H + j];
        num += (y[b * N + n] - acc) * (y[b * N + n] - acc);
        den += acc * acc;
      }
    }
    return std::sqrt(num / den);
  }

  // Runs `e` at batch 1, 37, 64 and 1 again on random inputs; each output against the float64 reference.
  void ExpectRunsMatch(Engine& e, std::mt19937& rng, const char* label, bool profile) const {
    std::normal_distribution<float> nd(0.f, 1.f);
    for (int batch : {1, 37, 64, 1}) {
      std::vector<float> x(batch * K);
      for (float& f : x) f = nd(rng);
      const int64_t shape[2] = {batch, K};
      xrt_tensor_view_t in{XRT_DTYPE_FLOAT32, 2, shape, x.data(), x.size() * 4};
      xrt_backend_output_t out{};
      xrt_status_t s = e.Execute(&in, 1, &out, 1);
      ASSERT_EQ(s, nullptr) << xrt_status_message(s);
      const double rel = RelErr(x, static_cast<const float*>(out.data), batch);
      std::printf("fp32 %s profile=%d batch=%d rel_err=%.3g report=%s\n", label, profile, batch, rel,
                  e.LastReport().substr(0, 200).c_str());
      EXPECT_LT(rel, 5e-3) << "(cuBLASLt may use TF32 for fp32 only if asked: expect ~1e-6)";
      out.release(out.owner);
    }
  }
};

TEST_F(CudaGpuTest, PtxKernelBetweenTwoGemmsMatchesFloat64Reference) {
  std::mt19937 rng(7);
  const ReluMlp mlp(rng);
  const json& plan = mlp.plan;
  const std::string& weights = mlp.weights;
  const std::string& kernels = mlp.kernels;
  for (bool profile : {false, true}) {
    EngineOptions o;
    o.profile = profile;
    o.replay_timing = profile ? 0 : 50;
    std::unique_ptr<Engine> e = Create(plan, weights, kernels, o);
    ASSERT_NE(e, nullptr);
    std::printf("describe: %s\n", e->Describe().c_str());
    mlp.ExpectRunsMatch(*e, rng, "mlp", profile);
  }
}

// matmul = cublas: the same MLP with its GEMMs as plain cublasGemmEx calls (no epilogue: biases zero here; the
// compiler runs them in a Triton kernel after the GEMM), captured in the graph, against the float64 reference.
TEST_F(CudaGpuTest, CublasGemmsAroundAPtxKernelMatchFloat64Reference) {
  std::mt19937 rng(11);
  ReluMlp mlp(rng);
  std::fill(mlp.b1.begin(), mlp.b1.end(), 0.0f);
  std::fill(mlp.b2.begin(), mlp.b2.end(), 0.0f);
  json plan = mlp.plan;
  for (auto& gemm : plan["gemms"]) gemm["library"] = "cublas", gemm["epilogue"] = "none", gemm["bias"] = nullptr;
  std::string error;
  if (LoadCublas(&error) == nullptr) GTEST_SKIP() << error;
  for (bool profile : {false, true}) {
    EngineOptions o;
    o.profile = profile;
    o.load_cublas = [](std::string* why) { return LoadCublas(why); };
    std::unique_ptr<Engine> e = Create(plan, mlp.weights, mlp.kernels, o);
    ASSERT_NE(e, nullptr);
    const json info = json::parse(e->Describe());
    std::printf("describe: %s\n", e->Describe().c_str());
    EXPECT_EQ(info["gemm_algos"][0]["library"], "cublas");
    EXPECT_GT(info["cublas"]["version"].get<int>(), 0);
    mlp.ExpectRunsMatch(*e, rng, "cublas mlp", profile);
  }
}

// The real loader, with or without a GPU: a missing libcublas.so.13 is an error naming it, what to install and where
// it looked; where the library is found, its table is complete.
TEST(CublasLoaderTest, MissingLibcublasNamesTheLibraryAndWhatToInstall) {
  setenv("XRT_CUBLAS", "/nonexistent/libcublas.so.13", 1);
  std::string error;
  const CublasApi* api = LoadCublas(&error);
  unsetenv("XRT_CUBLAS");
  if (api != nullptr) {
    EXPECT_NE(api->cublasGemmEx, nullptr);
    EXPECT_NE(api->cublasSetWorkspace_v2, nullptr);
    GTEST_SKIP() << "libcublas.so.13 is installed here (" << api->path << "): the missing case cannot be shown";
  }
  EXPECT_EQ(error.rfind("libcublas.so.13 not found (pip install nvidia-cublas, or set XRT_CUBLAS", 0), 0u) << error;
  EXPECT_NE(error.find("/nonexistent/libcublas.so.13"), std::string::npos) << error;
}

// Profiling mode on the GPU: the launches, the input upload and the output download timed with CUDA events, the
// final synchronisation with the host clock; the profile records (the plugin's hook) carry each as its own record.
TEST_F(CudaGpuTest, ProfiledRunTimesLaunchesCopiesAndTheSync) {
  constexpr int K = ReluMlp::K, batch = 64;
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.f, 1.f);
  const ReluMlp mlp(rng);
  EngineOptions o;
  o.profile = true;
  std::unique_ptr<Engine> e = Create(mlp.plan, mlp.weights, mlp.kernels, o);
  ASSERT_NE(e, nullptr);
  std::vector<float> x(batch * K);
  for (float& f : x) f = nd(rng);
  const int64_t shape[2] = {batch, K};
  xrt_tensor_view_t in{XRT_DTYPE_FLOAT32, 2, shape, x.data(), x.size() * 4};
  for (int run = 0; run < 3; ++run) {
    xrt_backend_output_t out{};
    xrt_status_t s = e->Execute(&in, 1, &out, 1);
    ASSERT_EQ(s, nullptr) << xrt_status_message(s);
    EXPECT_LT(mlp.RelErr(x, static_cast<const float*>(out.data), batch), 5e-3);
    out.release(out.owner);
  }
  const json report = json::parse(e->LastReport());
  std::printf("profiled run: %s\n", report.dump().c_str());
  ASSERT_EQ(report["copies"].size(), 2u);
  EXPECT_EQ(report["copies"][0]["bytes"], batch * K * 4);
  EXPECT_GT(report["copies"][0]["ms"].get<double>(), 0.0);
  EXPECT_GT(report["copies"][1]["ms"].get<double>(), 0.0);
  EXPECT_GE(report["syncs"][0]["ms"].get<double>(), 0.0);
  for (const auto& l : report["launches"]) EXPECT_GT(l["ms"].get<double>(), 0.0) << l.dump();
  std::string records;
  ASSERT_EQ(e->ProfileRecords(&records), nullptr);
  std::map<std::string, int> kinds;
  const json parsed = json::parse(records);  // not a range over a temporary's member: it would dangle
  for (const auto& r : parsed["records"]) ++kinds[r["kind"].get<std::string>()];
  EXPECT_EQ(kinds["compute"], static_cast<int>(report["launches"].size()));
  EXPECT_EQ(kinds["copy"], 2);
  EXPECT_EQ(kinds["sync"], 1);
}

// The data plane on the GPU: an input in device memory, the run ordered on the caller's own stream, the output
// left on the device (its own allocation). Same bytes as the host path; the device path is timed against it.
TEST_F(CudaGpuTest, DeviceInputsAndOutputsOnTheCallersStreamMatchTheHostPath) {
  constexpr int K = ReluMlp::K, N = ReluMlp::N, batch = 37;
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0.f, 1.f);
  const ReluMlp mlp(rng);
  std::unique_ptr<Engine> e = Create(mlp.plan, mlp.weights, mlp.kernels);
  ASSERT_NE(e, nullptr);
  std::vector<float> x(batch * K);
  for (float& f : x) f = nd(rng);
  const int64_t shape[2] = {batch, K};
  const uint64_t in_bytes = x.size() * 4, out_bytes = uint64_t{batch} * N * 4;

  xrt_tensor_view_t host_in{XRT_DTYPE_FLOAT32, 2, shape, x.data(), in_bytes};
  xrt_backend_output_t host_out{};
  xrt_status_t s = e->Execute(&host_in, 1, &host_out, 1);
  ASSERT_EQ(s, nullptr) << xrt_status_message(s);

  // The caller works in its own current context (as torch does); the engine pushes and pops its own around each
  // call, so the caller's stays current.
  CUdevice dev = 0;
  CUcontext ctx = nullptr;
  ASSERT_EQ(drv_->cuDeviceGet(&dev, 0), CUDA_SUCCESS);
  ASSERT_EQ(drv_->cuDevicePrimaryCtxRetain(&ctx, dev), CUDA_SUCCESS);
  ASSERT_EQ(drv_->cuCtxPushCurrent(ctx), CUDA_SUCCESS);
  struct PopAtExit {
    const DriverApi* drv;
    CUdevice dev;
    ~PopAtExit() {
      CUcontext popped = nullptr;
      drv->cuCtxPopCurrent(&popped);
      drv->cuDevicePrimaryCtxRelease(dev);
    }
  } pop_at_exit{drv_, dev};
  CUdeviceptr dx = 0;
  CUstream stream = nullptr;
  ASSERT_EQ(drv_->cuMemAlloc(&dx, in_bytes), CUDA_SUCCESS);
  ASSERT_EQ(drv_->cuMemcpyHtoD(dx, x.data(), in_bytes), CUDA_SUCCESS);
  ASSERT_EQ(drv_->cuStreamCreate(&stream, CU_STREAM_NON_BLOCKING), CUDA_SUCCESS);
  xrt_tensor_view_t dev_in{XRT_DTYPE_FLOAT32, 2, shape, reinterpret_cast<void*>(dx), in_bytes};
  const xrt_placement_t on_device{XRT_MEMORY_CUDA, 0};
  xrt_run_options_t run{};
  run.struct_size = sizeof(run);
  run.stream = stream;
  run.outputs_on_device = 1;
  xrt_backend_output_t dev_out{};
  xrt_placement_t dev_placement{};
  s = e->ExecutePlaced(run, &dev_in, &on_device, 1, &dev_out, &dev_placement, 1);
  ASSERT_EQ(s, nullptr) << xrt_status_message(s);
  EXPECT_EQ(dev_placement.kind, XRT_MEMORY_CUDA);
  ASSERT_EQ(dev_out.byte_size, out_bytes);
  std::vector<float> y(batch * N);
  // Ordered on the caller's stream: this copy sees the run's output without any other synchronisation.
  ASSERT_EQ(drv_->cuMemcpyDtoHAsync(y.data(), reinterpret_cast<CUdeviceptr>(dev_out.data), out_bytes, stream),
            CUDA_SUCCESS);
  ASSERT_EQ(drv_->cuStreamSynchronize(stream), CUDA_SUCCESS);
  EXPECT_EQ(std::memcmp(y.data(), host_out.data, out_bytes), 0) << "the same graph on the same input";
  const double rel = mlp.RelErr(x, y.data(), batch);
  std::printf("device in/out on the caller's stream: rel_err=%.3g\n", rel);
  EXPECT_LT(rel, 5e-3);
  dev_out.release(dev_out.owner);
  host_out.release(host_out.owner);

  // A host address declared as device memory is refused before any copy.
  xrt_tensor_view_t lie{XRT_DTYPE_FLOAT32, 2, shape, x.data(), in_bytes};
  s = e->ExecutePlaced(run, &lie, &on_device, 1, &dev_out, &dev_placement, 1);
  EXPECT_EQ(xrt_status_code(s), XRT_STATUS_INVALID_ARGUMENT);
  EXPECT_NE(std::string(xrt_status_message(s)).find("CUDA does not know its address"), std::string::npos)
      << xrt_status_message(s);
  xrt_status_free(s);

  // Per-run wall time: host in/out (synchronous) against device in/out on the caller's stream (enqueued; one
  // synchronisation at the end).
  const int runs = 200;
  const auto time_us = [&](bool device) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < runs; ++i) {
      xrt_backend_output_t o{};
      xrt_placement_t p{};
      xrt_status_t r = device ? e->ExecutePlaced(run, &dev_in, &on_device, 1, &o, &p, 1) : e->Execute(&host_in, 1, &o, 1);
      EXPECT_EQ(r, nullptr) << xrt_status_message(r);
      xrt_status_free(r);
      if (o.release) o.release(o.owner);
    }
    drv_->cuStreamSynchronize(stream);
    return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / runs;
  };
  const double host_us = time_us(false), device_us = time_us(true);
  std::printf("batch %d: host in/out %.1f us/run, device in/out on a stream %.1f us/run (incl. cuMemAlloc/cuMemFree "
              "of the output)\n", batch, host_us, device_us);
  drv_->cuStreamDestroy(stream);
  drv_->cuMemFree(dx);
}

// c[M,N] = gelu_tanh(a[M,K] @ b[K,N] + bias) in fp16 with fp32 accumulation.
TEST_F(CudaGpuTest, Fp16GemmWithGeluBiasEpilogueMatchesFloat64Reference) {
  const int M = 256, K = 768, N = 3072;
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<uint16_t> b(K * N), bias(N), a(M * K);
  for (auto& v : b) v = ToHalf(nd(rng) * 0.05f);
  for (auto& v : bias) v = ToHalf(nd(rng) * 0.1f);
  for (auto& v : a) v = ToHalf(nd(rng));
  std::string weights;
  const uint64_t ob = std::stoull(Append(&weights, b.data(), b.size() * 2));
  const uint64_t obias = std::stoull(Append(&weights, bias.data(), bias.size() * 2));
  const json plan = {
      {"format", "xrt-cuda-plan"}, {"version", 1}, {"dims", {{"m", {{"max", M}}}}},
      {"tensors",
       {{{"name", "a"}, {"dtype", "float16"}, {"shape", {"m", K}}, {"storage", "input"}, {"bytes_max", M * K * 2}},
        {{"name", "b"}, {"dtype", "float16"}, {"shape", {K, N}}, {"storage", "weight"}, {"offset", ob}, {"bytes_max", K * N * 2}},
        {{"name", "bias"}, {"dtype", "float16"}, {"shape", {N}}, {"storage", "weight"}, {"offset", obias}, {"bytes_max", N * 2}},
        {{"name", "c"}, {"dtype", "float16"}, {"shape", {"m", N}}, {"storage", "output"}, {"bytes_max", M * N * 2}}}},
      {"inputs", {0}}, {"outputs", {3}}, {"arena_bytes", 0}, {"kernels", json::array()},
      {"gemms", {{{"m", "m"}, {"n", N}, {"k", K}, {"a", 0}, {"b", 1}, {"c", 3}, {"bias", 2}, {"dtype", "float16"},
                  {"epilogue", "gelu_bias"}, {"onnx_nodes", {"MatMul", "Add", "Gelu"}}}}},
      {"launches", {{{"gemm", 0}}}},
  };
  EngineOptions o;
  o.replay_timing = 100;
  std::unique_ptr<Engine> e = Create(plan, weights, "", o);
  ASSERT_NE(e, nullptr);
  const int64_t shape[2] = {M, K};
  xrt_tensor_view_t in{XRT_DTYPE_FLOAT16, 2, shape, a.data(), a.size() * 2};
  xrt_backend_output_t out{};
  xrt_status_t s = e->Execute(&in, 1, &out, 1);
  ASSERT_EQ(s, nullptr) << xrt_status_message(s);
  const uint16_t* c = static_cast<const uint16_t*>(out.data);
  double num = 0, den = 0;
  for (int i = 0; i < M; ++i) {
    for (int j = 0; j < N; j += 7) {
      double acc = FromHalf(bias[j]);
      for (int p = 0; p < K; ++p) acc += double(FromHalf(a[i * K + p])) * FromHalf(b[p * N + j]);
      const double ref = 0.5 * acc * (1 + std::tanh(0.7978845608028654 * (acc + 0.044715 * acc * acc * acc)));
      const double got = FromHalf(c[i * N + j]);
      num += (got - ref) * (got - ref);
      den += ref * ref;
    }
  }
  const double rel = std::sqrt(num / den);
  const json report = json::parse(e->LastReport());
  const double ms = report["median_ms"].get<double>();
  std::printf("fp16 gemm+gelu_bias %dx%dx%d rel_err=%.3g replay median %.4f ms = %.1f TFLOP/s; %s\n", M, N, K, rel, ms,
              2.0 * M * N * K / (ms * 1e-3) / 1e12, e->Describe().c_str());
  EXPECT_LT(rel, 5e-3);
  out.release(out.owner);
}

}  // namespace
}  // namespace cuda_backend
}  // namespace xrt
