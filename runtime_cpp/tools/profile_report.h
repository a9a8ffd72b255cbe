// profile_report.h - xrt-run --profile: an engine's profile records (xrt.h, xrt_session_profile) mapped to the ONNX
// nodes of the bundle's plan, in the schema of `xrtc profile` (compiler/xrtc/profiling.py, profile_format 1): the
// same entries, per-node view, Chrome trace events and top-N table, so both tools' outputs read alike.
#ifndef XRT_RUNTIME_TOOLS_PROFILE_REPORT_H_
#define XRT_RUNTIME_TOOLS_PROFILE_REPORT_H_

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace xrt::tools {

// One node of the plan (decisions.json "nodes"): what every profile entry is mapped back to.
struct PlanNode {
  std::string name;
  std::string op;
};

struct ProfileRuns {
  nlohmann::ordered_json before;    // the records after the warm-up (xrt_session_profile), for "since_init" windows
  nlohmann::ordered_json after;     // the records after the timed runs
  std::vector<double> run_ms;       // each timed run, measured around xrt_session_run
  std::vector<double> run_start_us; // each timed run's start, from the first one
  std::string bundle, variant, engine, device;
};

// The profile (profile_format 1, with "trace": Chrome trace events). Entries are per-run means over the window;
// the "(engine overhead)" entry is the mean run time no record accounts for, so entries sum to run_ms. Throws
// std::runtime_error when the records are not usable (no run in the window).
nlohmann::ordered_json BuildProfile(const ProfileRuns& runs, const std::vector<PlanNode>& nodes);

// The top `top` entries by time with the ONNX nodes each ran, the nodes-timed line and the time per ONNX op type
// (compiler/xrtc/profiling.py top_table, line for line but the first, which says how xrt-run timed the runs).
std::string TopTable(const nlohmann::ordered_json& profile, size_t top);

// The plan's nodes from a decisions.json section's bytes; empty when it has none.
std::vector<PlanNode> PlanNodes(const std::string& decisions_json);

}  // namespace xrt::tools

#endif  // XRT_RUNTIME_TOOLS_PROFILE_REPORT_H_
