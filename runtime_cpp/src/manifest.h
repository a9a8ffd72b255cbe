// manifest.h - the manifest's model description and variants (formats/xrtpkg.md, "Manifest"), validated.
//
// The format reader only guarantees the manifest is a JSON object; everything the runtime relies on (names,
// dtypes, shapes, variants, artifact sections) is checked here, and a malformed manifest is DATA_CORRUPT with a
// message naming the key path and the value found.
#ifndef XRT_RUNTIME_SRC_MANIFEST_H_
#define XRT_RUNTIME_SRC_MANIFEST_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "status.h"
#include "xrt/xrt.h"
#include "xrtpkg_reader.h"

namespace xrt::core {

// One model input or output. shape[d] is -1 for a dynamic dim, whose symbolic name (if any) is dim_names[d].
struct TensorSpec {
  std::string name;
  xrt_dtype_t dtype = XRT_DTYPE_INVALID;
  std::vector<int64_t> shape;
  std::vector<std::optional<std::string>> dim_names;
  std::vector<const char*> dim_name_ptrs;  // C view of dim_names (NULL where absent); filled by Model::Finalize()
  // Non-empty for a sequence, map or optional (manifest key `type`): its rendering, e.g.
  // "sequence<map<int64, float32>>". dtype is then XRT_DTYPE_INVALID and shape empty.
  std::string value_type;

  // "float32[batch, 3, 640, 640]" ("?" for an unnamed dynamic dim).
  std::string Describe() const;
};

struct Variant {
  std::string id;
  std::string target;
  std::string device;     // lower-case
  std::string engine;     // [A-Za-z0-9_]{1,64}: it names a plugin file, so nothing else is accepted
  std::string precision;
  std::string why;
  std::vector<std::pair<std::string, std::string>> artifacts;  // role -> section name, sorted by role
  std::string options_json;                                    // the "options" object ("{}" when absent)
  std::string engine_version_requirement;                      // requires.engine_version ("" when absent)
  // requires.cpu_arch: the CPU architectures ("x86_64", "aarch64") the variant's artifacts run on; empty: any.
  std::vector<std::string> cpu_archs;
  std::vector<std::string> fallback_devices;  // lower-case devices this variant may also run on (e.g. an NPU IR on cpu)
};

// Caps on the manifest's counts (formats/xrtpkg.md, "Invariants"), so that the cost of parsing a manifest and of
// choosing a variant grows linearly with the bundle: over a cap is RESOURCE_EXHAUSTED. Real bundles are far below
// them (one variant per target and engine, at most a few fallback devices).
inline constexpr size_t kMaxVariants = 256;
inline constexpr size_t kMaxFallbackDevices = 16;  // per variant
inline constexpr size_t kMaxArtifacts = 16;        // per variant
inline constexpr size_t kMaxCpuArchs = 16;         // per variant (requires.cpu_arch)
inline constexpr size_t kMaxTensors = 4096;        // model inputs, and model outputs, each
inline constexpr size_t kMaxTypeDepth = 8;         // nesting of a `type` (sequence<map<...>> is 2)
// (a tensor's rank is capped at XRT_MAX_RANK)

struct Model {
  std::string name;
  std::vector<TensorSpec> inputs;
  std::vector<TensorSpec> outputs;
  std::vector<Variant> variants;

  // Fills the C pointer views. Call once the Model sits at its final address; it must not move afterwards.
  void Finalize();
};

// Parses and validates the manifest's "model" and "variants"; `bundle` resolves artifact section names.
Result<std::unique_ptr<Model>> ParseModel(const nlohmann::json& manifest, const format::Bundle& bundle);

// Whether `version` (e.g. "2026.4.1-20512-abc") satisfies `requirement` (">=2026.0", ">1", "==1.20", "<=2", "<3",
// or a bare version meaning ">="). Unparseable input gives an error message in *out_problem.
bool VersionSatisfies(const std::string& version, const std::string& requirement, std::string* out_problem);

// The CPU architecture this runtime was built for, in requires.cpu_arch spelling ("x86_64", "aarch64", ...).
const char* HostCpuArch();

}  // namespace xrt::core

#endif  // XRT_RUNTIME_SRC_MANIFEST_H_
