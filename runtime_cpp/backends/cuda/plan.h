// plan.h - the cuda variant's execution plan (PLAN.md beside this file): parsing and validation.
//
// Everything here is plain C++ (no CUDA): a bundle's plan is untrusted input, so ParsePlan checks every id, dtype,
// expression, image range and region bound before the engine touches a device, and CheckBinding repeats the
// shape-dependent checks for each set of bound dims before a graph is captured for them.
#ifndef XRT_BACKENDS_CUDA_PLAN_H_
#define XRT_BACKENDS_CUDA_PLAN_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "xrt/xrt.h"

namespace xrt {
namespace cuda_backend {

// A failure with the xrt status code it maps to; empty message = OK.
struct PlanError {
  xrt_status_code_t code = XRT_STATUS_OK;
  std::string message;
  bool ok() const { return message.empty(); }
};

// int | dim | {"mul": [...]} | {"cdiv": [a, b]}: evaluated with overflow checks over bound dims.
struct Expr {
  enum Kind { kConst, kDim, kMul, kCdiv } kind = kConst;
  int64_t value = 0;  // kConst
  int dim = -1;       // kDim: index into Plan::dims
  std::vector<Expr> args;
};

enum class Storage { kInput, kOutput, kWeight, kArena };

struct TensorSpec {
  std::string name;
  xrt_dtype_t dtype = XRT_DTYPE_INVALID;
  std::vector<Expr> shape;
  Storage storage = Storage::kArena;
  uint64_t offset = 0;     // weights: into the weights artifact; arena: into the arena
  uint64_t bytes_max = 0;  // the region's size
};

struct ParamSpec {
  enum Kind { kTensor, kDim, kScalar, kScratch } kind = kTensor;
  int tensor = -1;
  Expr dim;                                // kDim: passed as int32
  xrt_dtype_t scalar_dtype = XRT_DTYPE_INVALID;  // kScalar: float32 | int32 | int64 | float64
  double scalar_value = 0;
  int64_t scalar_int = 0;
  size_t Size() const;  // bytes of the argument as the kernel takes it
};

struct KernelSpec {
  std::string entry;
  int num_warps = 4;
  int shared_mem = 0;
  std::vector<ParamSpec> params;
  std::map<std::string, std::pair<uint64_t, uint64_t>> images;  // arch ("sm_90a", "ptx") -> [offset, size]
  // images (archs) whose kernel waits for the previous grid first (griddepcontrol.wait): launched from one of them,
  // the kernel may use programmatic dependent launch
  std::vector<std::string> pdl_archs;
  std::string group;
  std::vector<std::string> onnx_nodes;
  std::string source_sha256;
};

struct GemmSpec {
  Expr m;
  int64_t n = 0, k = 0;
  int a = -1, b = -1, c = -1, bias = -1;
  bool trans_a = false, trans_b = false;
  xrt_dtype_t dtype = XRT_DTYPE_INVALID;
  std::string compute = "32F";   // 32F | 32F_FAST_TF32 | 16F
  std::string epilogue = "none";  // none | bias | gelu_bias
  float alpha = 1.0f;
  std::string algo_source = "heuristic";  // heuristic | tuned
  std::vector<uint8_t> algo_config;       // 64 bytes (cublasLtMatmulAlgo_t) or empty
  std::vector<std::string> onnx_nodes;
  // "cublasLt" (absent in the plan) or "cublas" (matmul = cublas: cublasGemmEx, epilogue none, compute 32F or
  // 32F_FAST_TF32, no stored algorithm, no stand-in). A plan's GEMMs all name one library.
  std::string library = "cublasLt";
  // The same GEMM as a Triton kernel (an index into Plan::kernels, launched on stand_in_grid): the engine runs it
  // until cuBLASLt has loaded (PLAN.md "stand-in kernels"). -1: none. A plan gives one for every GEMM or none.
  int stand_in = -1;
  int64_t stand_in_grid[3] = {1, 1, 1};
};

struct LaunchSpec {
  bool is_kernel = true;
  int index = -1;
  Expr grid[3];
};

struct DimSpec {
  std::string name;
  int64_t max = 0;
};

struct Plan {
  std::string triton_version;
  std::vector<std::string> archs;
  std::vector<DimSpec> dims;
  std::vector<TensorSpec> tensors;
  std::vector<int> inputs, outputs;  // tensor ids in the manifest's order
  uint64_t arena_bytes = 0;
  std::vector<uint64_t> weights_parts;  // sizes of "weights", "weights.1", ... when the plan declares them
  std::vector<KernelSpec> kernels;
  std::vector<GemmSpec> gemms;
  std::vector<LaunchSpec> launches;
};

// Caps on what a plan may ask for (a hostile plan must not make init allocate or loop without bound).
constexpr size_t kMaxPlanItems = 1 << 20;      // tensors, kernels, gemms, launches, params each
constexpr int kMaxExprDepth = 16;
constexpr size_t kMaxWeightParts = 4096;         // "weights", "weights.1", ... (16 MiB each: 64 GiB)
constexpr int64_t kMaxDimValue = int64_t{1} << 31;

// Parses and validates the plan JSON against the sizes of the weights and kernels artifacts.
PlanError ParsePlan(const std::string& json, uint64_t weights_size, uint64_t kernels_size, Plan* out);

// Evaluates an expression over bound dims (values[i] for dims[i]); false on overflow or division by zero.
bool Eval(const Expr& e, const std::vector<int64_t>& values, int64_t* out);

// Binds dims from the input shapes (inputs in the manifest's order): each input tensor's shape expressions must
// evaluate to the given shape; a bare dim name binds that dim. Every dim must end up bound, 1 <= value <= max.
PlanError BindDims(const Plan& plan, const xrt_tensor_view_t* inputs, size_t input_count,
                   std::vector<int64_t>* out_values);

// Bytes of tensor `id` at the bound dims; false on overflow.
bool TensorBytes(const Plan& plan, int id, const std::vector<int64_t>& values, uint64_t* out);

// The shape-dependent checks for one binding: every tensor within its region, every GEMM operand within its
// tensor, every grid within launch limits.
PlanError CheckBinding(const Plan& plan, const std::vector<int64_t>& values);

std::string DimsKey(const Plan& plan, const std::vector<int64_t>& values);  // "batch=1,seq=128"

}  // namespace cuda_backend
}  // namespace xrt

#endif  // XRT_BACKENDS_CUDA_PLAN_H_
