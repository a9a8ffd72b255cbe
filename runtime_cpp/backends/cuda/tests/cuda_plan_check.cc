// cuda_plan_check PLAN.json WEIGHTS KERNELS: the plugin's plan validation (ParsePlan, then CheckBinding at the max
// dims) on a compiler's output, without a GPU. Prints "ok: ..." and exits 0, or prints the plugin's error and exits 1.
// tests/cuda/test_cuda_runtime_load.py runs it on bundles xrtc just wrote: the two sides of PLAN.md stay in step.
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include "plan.h"

namespace {
bool Slurp(const char* path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::ostringstream s;
  s << in.rdbuf();
  *out = s.str();
  return true;
}
}  // namespace

int main(int argc, char** argv) {
  namespace cb = xrt::cuda_backend;
  if (argc != 4) {
    std::fprintf(stderr, "usage: cuda_plan_check PLAN.json WEIGHTS KERNELS\n");
    return 2;
  }
  std::string plan_text, weights, kernels;
  if (!Slurp(argv[1], &plan_text) || !Slurp(argv[2], &weights) || !Slurp(argv[3], &kernels)) {
    std::fprintf(stderr, "cannot read the inputs\n");
    return 2;
  }
  cb::Plan plan;
  cb::PlanError e = cb::ParsePlan(plan_text, weights.size(), kernels.size(), &plan);
  if (e.ok()) {
    std::vector<int64_t> max_values;
    for (const auto& d : plan.dims) max_values.push_back(d.max);
    e = cb::CheckBinding(plan, max_values);
  }
  if (!e.ok()) {
    std::printf("%s\n", e.message.c_str());
    return 1;
  }
  std::printf("ok: %zu tensors, %zu kernels, %zu gemms, %zu launches, arena %llu bytes\n", plan.tensors.size(),
              plan.kernels.size(), plan.gemms.size(), plan.launches.size(),
              static_cast<unsigned long long>(plan.arena_bytes));
  return 0;
}
