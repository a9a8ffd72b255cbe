// Tests for npy_io: .npy parsing/serialising and .npz reading/writing. Files written by numpy itself are covered by
// tests/cpp_runner/test_xrt_run.py (numpy.savez inputs, numpy.load of saved outputs).

#include "npy_io.h"

#include <unistd.h>
#include <zip.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace xrt {
namespace tools {
namespace {

// A .npy file with an arbitrary header dict (version 1.0, padded like numpy) followed by `data`.
std::vector<uint8_t> RawNpy(const std::string& dict, const std::vector<uint8_t>& data, uint8_t major = 1) {
  std::string header = dict;
  const size_t prefix = major == 1 ? 10 : 12;
  header.append((64 - (prefix + header.size() + 1) % 64) % 64, ' ');
  header.push_back('\n');
  std::vector<uint8_t> out = {0x93, 'N', 'U', 'M', 'P', 'Y', major, 0};
  const size_t n = header.size();
  out.push_back(static_cast<uint8_t>(n & 0xFF));
  out.push_back(static_cast<uint8_t>((n >> 8) & 0xFF));
  if (major != 1) {
    out.push_back(static_cast<uint8_t>((n >> 16) & 0xFF));
    out.push_back(static_cast<uint8_t>((n >> 24) & 0xFF));
  }
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

std::string ErrorOf(const std::vector<uint8_t>& bytes) {
  try {
    ParseNpy(bytes.data(), bytes.size(), "t.npy");
  } catch (const NpyError& e) {
    return e.what();
  }
  return "";
}

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/npy_io_test.XXXXXX";
    path_ = mkdtemp(tmpl);
  }
  ~TempDir() { std::system(("rm -rf '" + path_ + "'").c_str()); }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

Array MakeArray(xrt_dtype_t dtype, std::vector<int64_t> shape) {
  Array a;
  a.dtype = dtype;
  a.shape = std::move(shape);
  a.data.resize(a.element_count() * xrt_dtype_size(dtype));
  for (size_t i = 0; i < a.data.size(); ++i) a.data[i] = static_cast<uint8_t>(i * 7 + 1);
  return a;
}

TEST(NpyTest, RoundTripsEveryDtype) {
  const xrt_dtype_t dtypes[] = {XRT_DTYPE_FLOAT32, XRT_DTYPE_FLOAT16, XRT_DTYPE_FLOAT64, XRT_DTYPE_INT8,
                                XRT_DTYPE_UINT8,   XRT_DTYPE_INT16,   XRT_DTYPE_UINT16,  XRT_DTYPE_INT32,
                                XRT_DTYPE_UINT32,  XRT_DTYPE_INT64,   XRT_DTYPE_UINT64,  XRT_DTYPE_BOOL};
  for (xrt_dtype_t dtype : dtypes) {
    const Array a = MakeArray(dtype, {2, 3});
    const std::vector<uint8_t> bytes = SerializeNpy(a);
    const size_t header_len = bytes[8] | (bytes[9] << 8);
    EXPECT_EQ((10 + header_len) % 64, 0u) << xrt_dtype_name(dtype);
    const Array b = ParseNpy(bytes.data(), bytes.size(), "t.npy");
    EXPECT_EQ(b.dtype, dtype);
    EXPECT_EQ(b.shape, a.shape);
    EXPECT_EQ(b.data, a.data);
  }
}

TEST(NpyTest, RoundTripsScalarsVectorsAndEmptyArrays) {
  for (const std::vector<int64_t>& shape : {std::vector<int64_t>{}, {5}, {0, 4}, {1, 1, 1, 1, 1, 1, 1, 1}}) {
    const Array a = MakeArray(XRT_DTYPE_FLOAT32, shape);
    const std::vector<uint8_t> bytes = SerializeNpy(a);
    const Array b = ParseNpy(bytes.data(), bytes.size(), "t.npy");
    EXPECT_EQ(b.shape, shape);
    EXPECT_EQ(b.data, a.data);
  }
}

TEST(NpyTest, SerializedHeaderIsWhatNumpyWrites) {
  const std::vector<uint8_t> bytes = SerializeNpy(MakeArray(XRT_DTYPE_INT64, {3}));
  const std::string header(bytes.begin() + 10, bytes.begin() + 10 + (bytes[8] | (bytes[9] << 8)));
  EXPECT_EQ(header.rfind("{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }", 0), 0u) << header;
  EXPECT_EQ(header.back(), '\n');
}

TEST(NpyTest, AcceptsVersion2AndOddSpacing) {
  const std::vector<uint8_t> data(8, 0);
  const auto v2 = RawNpy("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", data, 2);
  EXPECT_EQ(ParseNpy(v2.data(), v2.size(), "t").shape, std::vector<int64_t>{2});
  const auto spaced = RawNpy("{ \"shape\":(1,2) ,'descr':'<i4','fortran_order':False}", data);
  const Array a = ParseNpy(spaced.data(), spaced.size(), "t");
  EXPECT_EQ(a.dtype, XRT_DTYPE_INT32);
  EXPECT_EQ(a.shape, (std::vector<int64_t>{1, 2}));
}

TEST(NpyTest, RejectsWhatItCannotRead) {
  const std::vector<uint8_t> four(4, 0);
  EXPECT_NE(ErrorOf({'n', 'o', 'p', 'e', 0, 0, 0, 0, 0, 0, 0}).find("bad magic"), std::string::npos);
  EXPECT_NE(ErrorOf(RawNpy("{'descr': '<f4', 'fortran_order': True, 'shape': (1,), }", four)).find("Fortran"),
            std::string::npos);
  EXPECT_NE(ErrorOf(RawNpy("{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }", four)).find("big-endian"),
            std::string::npos);
  EXPECT_NE(ErrorOf(RawNpy("{'descr': '|O', 'fortran_order': False, 'shape': (1,), }", four)).find("object"),
            std::string::npos);
  EXPECT_NE(ErrorOf(RawNpy("{'descr': '<U1', 'fortran_order': False, 'shape': (1,), }", four)).find("string"),
            std::string::npos);
  EXPECT_NE(ErrorOf(RawNpy("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }", four))
                .find("structured"),
            std::string::npos);
  EXPECT_NE(ErrorOf(RawNpy("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", four)).find("truncated"),
            std::string::npos);
  EXPECT_NE(ErrorOf(RawNpy("{'descr': '<f4', 'fortran_order': False, 'shape': (), }", {0, 0, 0, 0, 9}))
                .find("unexpected bytes"),
            std::string::npos);
  EXPECT_NE(ErrorOf(RawNpy("{'descr': '<f4', 'fortran_order': False}", four)).find("lacks"), std::string::npos);
  EXPECT_NE(ErrorOf(RawNpy("{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }", four)).find("shape"),
            std::string::npos);
  EXPECT_NE(ErrorOf(RawNpy("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999, 99999999999), }", four))
                .find("overflows"),
            std::string::npos);
  std::vector<uint8_t> v9 = RawNpy("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", four);
  v9[6] = 9;
  EXPECT_NE(ErrorOf(v9).find("version"), std::string::npos);
  std::vector<uint8_t> long_header = RawNpy("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", four);
  long_header[9] = 0x7F;  // header length beyond the file
  EXPECT_NE(ErrorOf(long_header).find("truncated"), std::string::npos);
}

TEST(NpyTest, ParsesUnicodeNameLists) {
  std::vector<uint8_t> data;
  auto put = [&data](uint32_t cp) {
    for (int b = 0; b < 4; ++b) data.push_back(static_cast<uint8_t>(cp >> (8 * b)));
  };
  for (uint32_t cp : std::initializer_list<uint32_t>{'x', 0, 0}) put(cp);
  for (uint32_t cp : std::initializer_list<uint32_t>{'s', 't', 0xE9}) put(cp);  // "sté"
  const auto bytes = RawNpy("{'descr': '<U3', 'fortran_order': False, 'shape': (2,), }", data);
  const std::vector<std::string> names = ParseNpyStrings(bytes.data(), bytes.size(), "t");
  ASSERT_EQ(names.size(), 2u);
  EXPECT_EQ(names[0], "x");
  EXPECT_EQ(names[1], "st\xC3\xA9");
}

TEST(NpzTest, WritesAndReadsBack) {
  TempDir dir;
  const std::string path = dir.file("out.npz");
  std::vector<NamedArray> arrays = {{"a", MakeArray(XRT_DTYPE_FLOAT32, {2, 2})},
                                    {"save_infer_model/scale_0.tmp_1", MakeArray(XRT_DTYPE_INT64, {3})}};
  WriteNpz(path, arrays, /*overwrite=*/false);
  const std::vector<NamedArray> back = ReadNpz(path);
  ASSERT_EQ(back.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(back[i].name, arrays[i].name);
    EXPECT_EQ(back[i].array.dtype, arrays[i].array.dtype);
    EXPECT_EQ(back[i].array.shape, arrays[i].array.shape);
    EXPECT_EQ(back[i].array.data, arrays[i].array.data);
  }
  // Deterministic bytes: writing the same arrays again gives the same file.
  const std::string again = dir.file("again.npz");
  WriteNpz(again, arrays, false);
  EXPECT_EQ(ReadAll(path), ReadAll(again));
}

TEST(NpzTest, RefusesToOverwriteWithoutPermission) {
  TempDir dir;
  const std::string path = dir.file("out.npz");
  { std::ofstream(path) << "keep me"; }
  const std::vector<NamedArray> arrays = {{"a", MakeArray(XRT_DTYPE_UINT8, {4})}};
  EXPECT_THROW(WriteNpz(path, arrays, false), FileExistsError);
  EXPECT_EQ(ReadAll(path), "keep me");
  WriteNpz(path, arrays, /*overwrite=*/true);
  EXPECT_EQ(ReadNpz(path).at(0).array.data, arrays[0].array.data);
  // No temporary files are left behind.
  EXPECT_EQ(std::system(("test $(ls -A '" + dir.file("") + "' | wc -l) -eq 1").c_str()), 0);
}

TEST(NpzTest, RejectsUnsafeMemberNames) {
  TempDir dir;
  for (const char* name : {"../evil", "/abs", "a/../../b", ""}) {
    EXPECT_THROW(WriteNpz(dir.file("x.npz"), {{name, MakeArray(XRT_DTYPE_UINT8, {1})}}, false), NpyError) << name;
  }
}

TEST(NpzTest, ReadsTheCorpusNamesConvention) {
  TempDir dir;
  const std::string path = dir.file("corpus.npz");
  std::vector<uint8_t> names_data;
  for (uint32_t cp : std::initializer_list<uint32_t>{'x', 0, 's', 'r'}) {
    for (int b = 0; b < 4; ++b) names_data.push_back(static_cast<uint8_t>(cp >> (8 * b)));
  }
  const std::vector<std::vector<uint8_t>> members = {
      SerializeNpy(MakeArray(XRT_DTYPE_INT64, {})),  // in1 first: order comes from __names__, not the archive
      SerializeNpy(MakeArray(XRT_DTYPE_FLOAT32, {1, 3})),
      RawNpy("{'descr': '<U2', 'fortran_order': False, 'shape': (2,), }", names_data)};
  const char* member_names[] = {"in1.npy", "in0.npy", "__names__.npy"};
  int err = 0;
  zip_t* za = zip_open(path.c_str(), ZIP_CREATE | ZIP_TRUNCATE, &err);
  ASSERT_NE(za, nullptr);
  for (size_t i = 0; i < members.size(); ++i) {
    zip_source_t* src = zip_source_buffer(za, members[i].data(), members[i].size(), 0);
    ASSERT_GE(zip_file_add(za, member_names[i], src, 0), 0);
  }
  ASSERT_EQ(zip_close(za), 0);
  const std::vector<NamedArray> arrays = ReadNpz(path);
  ASSERT_EQ(arrays.size(), 2u);
  EXPECT_EQ(arrays[0].name, "x");
  EXPECT_EQ(arrays[0].array.dtype, XRT_DTYPE_FLOAT32);
  EXPECT_EQ(arrays[1].name, "sr");
  EXPECT_EQ(arrays[1].array.dtype, XRT_DTYPE_INT64);
}

TEST(NpzTest, ReportsBadArchives) {
  TempDir dir;
  EXPECT_THROW(ReadNpz(dir.file("missing.npz")), NpyError);
  const std::string junk = dir.file("junk.npz");
  { std::ofstream(junk) << "this is not a zip file"; }
  try {
    ReadNpz(junk);
    FAIL() << "expected NpyError";
  } catch (const NpyError& e) {
    EXPECT_NE(std::string(e.what()).find("numpy.savez"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace tools
}  // namespace xrt
