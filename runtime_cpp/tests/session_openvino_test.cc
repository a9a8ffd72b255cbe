// Sessions that execute, through the real OpenVINO plugin (libxrt_backend_openvino.so, helper-built next to
// libxrt.so) on the golden tiny model y = Relu(x @ W + b). Skipped, with the reason, when the plugin was not built
// (-DXRT_BUILD_OPENVINO=OFF). The expected outputs are computed here from the weights inside the bundle.
#include "xrt/xrt.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "xrt/xrt.hpp"
#include "xrtpkg_reader.h"
#include "xrtpkg_test_builder.h"

namespace {

namespace fs = std::filesystem;

const fs::path kTiny = fs::path(XRT_GOLDEN_DIR) / "tiny_model.xrtpkg";
const fs::path kPlugin = fs::path(XRT_TEST_LIB_DIR) / "libxrt_backend_openvino.so";

std::vector<uint8_t> ReadFile(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// W (4x3) and b (3) read from the bundle's OpenVINO IR: the xml's f32 Const layers give offset and shape into
// the .bin section. OpenVINO stores W transposed ("3, 4") for MatMul(transpose_b).
struct Reference {
  float w[4][3];
  float b[3];
  std::vector<float> Run(const float x[4]) const {
    std::vector<float> y(3);
    for (int j = 0; j < 3; ++j) {
      float acc = b[j];
      for (int k = 0; k < 4; ++k) acc += x[k] * w[k][j];
      y[j] = std::max(acc, 0.0f);
    }
    return y;
  }
};

bool LoadReference(const std::vector<uint8_t>& file, Reference* ref, std::string* why) {
  auto verified = xrt::format::Bundle::Verify(file.data(), file.size());
  if (!verified.ok()) return *why = verified.error().message, false;
  const auto& b = verified.value();
  auto xml = b.GetSection(*b.Find("cpu-openvino.xml"));
  auto bin = b.GetSection(*b.Find("cpu-openvino.bin"));
  if (!xml.ok() || !bin.ok()) return *why = "sections", false;
  const std::string text(xml.value().view());
  const std::regex data_re(R"re(<data element_type="f32" shape="([0-9, ]+)" offset="([0-9]+)" size="([0-9]+)")re");
  bool have_w = false, have_b = false;
  for (auto it = std::sregex_iterator(text.begin(), text.end(), data_re); it != std::sregex_iterator(); ++it) {
    const std::string shape = (*it)[1];
    const size_t offset = std::stoul((*it)[2]), size = std::stoul((*it)[3]);
    if (offset + size > bin.value().size()) return *why = "const past the weights", false;
    std::vector<float> v(size / 4);
    std::memcpy(v.data(), bin.value().data() + offset, size);
    if (size == 48 && (shape == "3, 4" || shape == "4, 3")) {
      for (int k = 0; k < 4; ++k)
        for (int j = 0; j < 3; ++j) ref->w[k][j] = shape == "3, 4" ? v[j * 4 + k] : v[k * 3 + j];
      have_w = true;
    } else if (size == 12) {
      std::memcpy(ref->b, v.data(), 12);
      have_b = true;
    }
  }
  if (!have_w || !have_b) return *why = "W or b not found in the IR", false;
  return true;
}

class OpenVinoSession : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(kPlugin)) GTEST_SKIP() << kPlugin << " was not built (XRT_BUILD_OPENVINO=OFF?)";
    if (!fs::exists(kTiny)) GTEST_SKIP() << "no golden " << kTiny;
    ::unsetenv("XRT_BACKEND_PATH");  // the plugin must be found next to libxrt.so
    bytes_ = ReadFile(kTiny);
    std::string why;
    ASSERT_TRUE(LoadReference(bytes_, &ref_, &why)) << why;
  }
  std::vector<uint8_t> bytes_;
  Reference ref_{};
};

void ExpectNear(const xrt::OutputView& y, const std::vector<float>& want) {
  ASSERT_EQ(y.name, "y");
  ASSERT_EQ(y.shape, (std::vector<int64_t>{1, 3}));
  ASSERT_EQ(y.byte_size, 12u);
  const float* got = y.As<float>();
  for (int j = 0; j < 3; ++j) EXPECT_NEAR(got[j], want[j], 1e-5f) << "y[" << j << "]";
}

TEST_F(OpenVinoSession, PicksOpenVinoAndRunsTheModel) {
  xrt::Bundle bundle = xrt::Bundle::OpenFile(kTiny.string());
  xrt::Session session(bundle);
  auto describe = nlohmann::json::parse(session.describe());
  EXPECT_EQ(describe["variant"], "cpu-openvino");
  EXPECT_EQ(describe["engine"], "openvino");
  EXPECT_EQ(describe["device"], "cpu");
  EXPECT_TRUE(describe["skipped"].empty());
  EXPECT_NE(describe["reason"].get<std::string>().find("preference order"), std::string::npos);
  EXPECT_EQ(describe["engine_version"].get<std::string>().rfind("2026.", 0), 0u) << describe;

  auto inputs = session.inputs();
  ASSERT_EQ(inputs.size(), 1u);
  EXPECT_EQ(inputs[0].name, "x");
  EXPECT_EQ(inputs[0].dtype, XRT_DTYPE_FLOAT32);
  EXPECT_EQ(inputs[0].shape, (std::vector<int64_t>{1, 4}));

  const std::vector<int64_t> shape = {1, 4};
  const float x[4] = {1.0f, -2.0f, 3.0f, 0.5f};
  const std::vector<float> want = ref_.Run(x);
  ASSERT_GT(want[0] + want[1] + want[2], 0.0f) << "pick an input with a non-zero output";
  {
    xrt::Outputs out = session.Run({xrt::TensorView::Of(x, shape)});
    ASSERT_EQ(out.size(), 1u);
    ExpectNear(out.Get(0), want);
  }
  {
    xrt::Outputs out = session.Run({{"x", xrt::TensorView::Of(x, shape)}});
    ExpectNear(out.Get(0), want);
  }
}

TEST_F(OpenVinoSession, OutputsKeepTheSessionAlive) {
  const std::vector<int64_t> shape = {1, 4};
  const float x[4] = {0.25f, 0.5f, -1.0f, 2.0f};
  std::unique_ptr<xrt::Outputs> out;
  {
    xrt::Bundle bundle = xrt::Bundle::OpenMemory(bytes_.data(), bytes_.size());
    xrt::Session session(bundle);
    out = std::make_unique<xrt::Outputs>(session.Run({xrt::TensorView::Of(x, shape)}));
  }  // session and bundle released first
  ExpectNear(out->Get(0), ref_.Run(x));
}

TEST_F(OpenVinoSession, InputErrorsNameTheInputAndBothShapes) {
  // The tiny model with its input declared as [batch, 4]: the messages show the symbolic name.
  auto verified = xrt::format::Bundle::Verify(bytes_.data(), bytes_.size());
  ASSERT_TRUE(verified.ok());
  nlohmann::json manifest = verified.value().manifest();
  manifest["model"]["inputs"][0]["shape"] = {"batch", 4};
  std::vector<xrt::format::testing::TestSection> sections = {
      xrt::format::testing::Zstd("manifest", manifest.dump())};
  for (size_t i = 1; i < verified.value().sections().size(); ++i) {
    auto s = verified.value().GetSection(i);
    ASSERT_TRUE(s.ok());
    sections.push_back(xrt::format::testing::Plain(verified.value().sections()[i].name,
                                                   std::vector<uint8_t>(s.value().data(),
                                                                        s.value().data() + s.value().size())));
  }
  const auto dynamic_bytes = xrt::format::testing::Build(sections);
  xrt::Bundle bundle = xrt::Bundle::OpenMemory(dynamic_bytes.data(), dynamic_bytes.size());
  xrt::SessionOptions options;
  options.device = "cpu";
  options.engine = "openvino";
  xrt::Session session(bundle, options);
  auto inputs = session.inputs();
  EXPECT_EQ(inputs[0].shape, (std::vector<int64_t>{-1, 4}));
  EXPECT_EQ(inputs[0].dim_names, (std::vector<std::string>{"batch", ""}));

  float x[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  const std::vector<int64_t> ok_shape = {1, 4}, rank3 = {1, 4, 1}, bad_dim = {1, 5}, neg = {-1, 4};
  int32_t xi[4] = {1, 2, 3, 4};
  auto expect_invalid = [&](std::vector<const char*> names, std::vector<xrt_tensor_view_t> views,
                            const std::string& needle) {
    xrt_outputs_t* out = nullptr;
    xrt_status_t s = xrt_session_run(session.get(), names.empty() ? nullptr : names.data(), views.data(),
                                     views.size(), &out);
    EXPECT_EQ(xrt_status_code(s), XRT_STATUS_INVALID_ARGUMENT) << xrt_status_message(s);
    EXPECT_NE(std::string(xrt_status_message(s)).find(needle), std::string::npos)
        << "want '" << needle << "' in: " << xrt_status_message(s);
    EXPECT_EQ(out, nullptr);
    xrt_status_free(s);
  };
  auto view = [](xrt_dtype_t dtype, const std::vector<int64_t>& shape, void* data, uint64_t bytes) {
    return xrt_tensor_view_t{dtype, static_cast<uint32_t>(shape.size()), shape.data(), data, bytes};
  };
  const auto good = view(XRT_DTYPE_FLOAT32, ok_shape, x, 16);
  expect_invalid({}, {view(XRT_DTYPE_INT32, ok_shape, xi, 16)},
                 "input \"x\": expected float32[batch, 4], given int32[1, 4]: wrong dtype");
  expect_invalid({}, {view(XRT_DTYPE_FLOAT32, rank3, x, 16)}, "given float32[1, 4, 1]: rank 3 != 2");
  expect_invalid({}, {view(XRT_DTYPE_FLOAT32, bad_dim, x, 20)}, "given float32[1, 5]: dim 1 is 5, must be 4");
  expect_invalid({}, {view(XRT_DTYPE_FLOAT32, neg, x, 16)}, "dim 0 is negative");
  expect_invalid({}, {view(XRT_DTYPE_FLOAT32, ok_shape, x, 15)}, "byte_size is 15, the shape and dtype need 16");
  expect_invalid({}, {view(XRT_DTYPE_FLOAT32, ok_shape, nullptr, 16)}, "data is NULL");
  expect_invalid({}, {good, good}, "given 2 inputs without names; the model takes 1: \"x\" float32[batch, 4]");
  expect_invalid({"x", "x"}, {good, good}, "input \"x\" is given twice (names[0] and names[1])");
  expect_invalid({"z"}, {good}, "unknown input \"z\" (names[0]); the model's inputs are: \"x\" float32[batch, 4]");
  expect_invalid({}, {}, "given 0 inputs without names");
  {
    xrt_outputs_t* out = nullptr;
    const char* no_names[1] = {nullptr};
    xrt_status_t s = xrt_session_run(session.get(), no_names, &good, 1, &out);
    EXPECT_NE(std::string(xrt_status_message(s)).find("names[0] is NULL"), std::string::npos);
    xrt_status_free(s);
    s = xrt_session_run(session.get(), no_names, nullptr, 0, &out);
    EXPECT_NE(std::string(xrt_status_message(s)).find("input \"x\" (float32[batch, 4]) is missing"),
              std::string::npos)
        << xrt_status_message(s);
    xrt_status_free(s);
  }
  // The valid call still works after all the refusals, and the batch dim takes the given value.
  xrt::Outputs out = session.Run({xrt::TensorView::Of(x, ok_shape)});
  ExpectNear(out.Get(0), ref_.Run(x));
}

TEST_F(OpenVinoSession, ConcurrentRuns) {
  xrt::Bundle bundle = xrt::Bundle::OpenFile(kTiny.string());
  xrt::Session session(bundle);
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      const std::vector<int64_t> shape = {1, 4};
      for (int i = 0; i < 50; ++i) {
        const float x[4] = {0.1f * i, -0.2f * t, 1.0f + t, 0.5f * (i % 7)};
        const std::vector<float> want = ref_.Run(x);
        xrt::Outputs out = session.Run({xrt::TensorView::Of(x, shape)});
        const float* y = out.Get(0).As<float>();
        for (int j = 0; j < 3; ++j) {
          if (std::fabs(y[j] - want[j]) > 1e-4f) ++failures;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
}

}  // namespace
