#include "profile_report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <set>
#include <stdexcept>

namespace xrt::tools {
namespace {

using Json = nlohmann::ordered_json;

double Number(const Json& object, const char* key) {
  const auto it = object.find(key);
  return it != object.end() && it->is_number() ? it->get<double>() : 0.0;
}

std::string Text(const Json& object, const char* key, const std::string& fallback = "") {
  const auto it = object.find(key);
  return it != object.end() && it->is_string() ? it->get<std::string>() : fallback;
}

// The plan node an engine's name came from: the name itself or its longest known '/'-prefix (OpenVINO's ONNX
// frontend splits a Conv with bias into "<node>/WithoutBiases" and "<node>"); "" when none is known.
std::string OnnxName(std::string name, const std::set<std::string>& known) {
  const size_t first = name.find_first_not_of(" \t");
  const size_t last = name.find_last_not_of(" \t");
  name = first == std::string::npos ? "" : name.substr(first, last - first + 1);
  while (!name.empty()) {
    if (known.count(name)) return name;
    const size_t slash = name.rfind('/');
    name = slash == std::string::npos ? "" : name.substr(0, slash);
  }
  return "";
}

struct Entry {
  std::string name, type, kind, stream;
  double ms = 0;
  std::vector<std::string> onnx_nodes;
};

// Nodes no entry names (profiling.py _reconcile): an entry naming no node takes the first unnamed node of its op
// type; a node still unnamed joins the entry of the nearest earlier node. Returns node -> how it was attributed.
std::map<std::string, std::string> Reconcile(std::vector<Entry>* entries, const std::vector<PlanNode>& nodes) {
  std::set<std::string> named;
  for (const Entry& e : *entries) named.insert(e.onnx_nodes.begin(), e.onnx_nodes.end());
  std::map<std::string, std::string> how;
  for (Entry& e : *entries) {
    if (!e.onnx_nodes.empty() || e.kind != "compute") continue;
    const std::string op = e.type.substr(0, e.type.find(' '));
    for (const PlanNode& n : nodes) {
      if (named.count(n.name) || n.op != op) continue;
      e.onnx_nodes.push_back(n.name);
      named.insert(n.name);
      how[n.name] = "matched by op type";
      break;
    }
  }
  std::map<std::string, size_t> owner;
  for (size_t i = 0; i < entries->size(); ++i) {
    for (const std::string& n : (*entries)[i].onnx_nodes) owner.emplace(n, i);
  }
  size_t previous = SIZE_MAX;
  for (const PlanNode& n : nodes) {
    if (auto it = owner.find(n.name); it != owner.end()) {
      previous = it->second;
    } else if (previous != SIZE_MAX) {
      (*entries)[previous].onnx_nodes.push_back(n.name);
      how[n.name] = "fused into the earlier entry " + (*entries)[previous].name + " (attributed by graph order)";
    }
  }
  return how;
}

Json EntryJson(const Entry& e) {
  return {{"name", e.name}, {"type", e.type}, {"kind", e.kind}, {"ms", e.ms}, {"stream", e.stream},
          {"onnx_nodes", e.onnx_nodes}};
}

double Round3(double v) { return std::round(v * 1e3) / 1e3; }

}  // namespace

std::vector<PlanNode> PlanNodes(const std::string& decisions_json) {
  std::vector<PlanNode> nodes;
  const Json d = Json::parse(decisions_json, nullptr, /*allow_exceptions=*/false);
  if (!d.is_object() || !d.contains("nodes") || !d["nodes"].is_array()) return nodes;
  for (const Json& n : d["nodes"]) {
    if (n.is_object() && n.contains("name") && n["name"].is_string()) nodes.push_back({Text(n, "name"), Text(n, "op")});
  }
  return nodes;
}

Json BuildProfile(const ProfileRuns& runs, const std::vector<PlanNode>& nodes) {
  const Json& after = runs.after;
  if (!after.is_object() || !after.contains("records") || !after["records"].is_array()) {
    throw std::runtime_error("the engine's profile has no records");
  }
  const bool since_init = Text(after, "window") == "since_init";
  const double window_runs = Number(after, "runs") - (since_init ? Number(runs.before, "runs") : 0.0);
  if (window_runs <= 0 || runs.run_ms.empty()) {
    throw std::runtime_error("the engine's profiler recorded no run (its records cover " +
                             std::to_string(static_cast<long long>(window_runs)) + " runs)");
  }
  std::map<std::string, double> before_ms;  // (stream, name) -> ms before the window
  if (since_init && runs.before.contains("records") && runs.before["records"].is_array()) {
    for (const Json& r : runs.before["records"]) before_ms[Text(r, "stream") + "\n" + Text(r, "name")] += Number(r, "ms");
  }
  std::set<std::string> known;
  for (const PlanNode& n : nodes) known.insert(n.name);
  std::vector<Entry> entries;
  for (const Json& r : after["records"]) {
    if (!r.is_object()) continue;
    Entry e{Text(r, "name"), Text(r, "type"), Text(r, "kind", "compute"), Text(r, "stream", "engine"), 0.0, {}};
    e.ms = (Number(r, "ms") - before_ms[e.stream + "\n" + e.name]) / window_runs;
    if (r.contains("onnx_nodes") && r["onnx_nodes"].is_array()) {
      for (const Json& source : r["onnx_nodes"]) {
        if (!source.is_string()) continue;
        // Without a plan, the engine's names stand as they are.
        const std::string n = known.empty() ? source.get<std::string>() : OnnxName(source.get<std::string>(), known);
        if (!n.empty() && std::find(e.onnx_nodes.begin(), e.onnx_nodes.end(), n) == e.onnx_nodes.end()) {
          e.onnx_nodes.push_back(n);
        }
      }
    }
    entries.push_back(std::move(e));
  }
  const std::map<std::string, std::string> how = Reconcile(&entries, nodes);

  double mean_run = 0;
  for (double ms : runs.run_ms) mean_run += ms;
  mean_run /= static_cast<double>(runs.run_ms.size());
  std::vector<double> sorted = runs.run_ms;
  std::sort(sorted.begin(), sorted.end());
  const size_t mid = sorted.size() / 2;
  const double median = sorted.size() % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;

  // The trace (profiling.py _trace): a host track with each run; per run, the mean entries laid out from its start
  // on their stream's track, copies and syncs on the stream's own "copies and syncs" track.
  Json trace = Json::array();
  trace.push_back({{"ph", "M"}, {"pid", 1}, {"name", "process_name"}, {"args", {{"name", "xrt " + runs.variant}}}});
  std::vector<std::string> track_names = {"host: runs"};
  auto track_of = [&](const Entry& e) {
    const std::string name = (e.kind == "copy" || e.kind == "sync") ? e.stream + ": copies and syncs" : e.stream;
    auto it = std::find(track_names.begin(), track_names.end(), name);
    if (it == track_names.end()) it = track_names.insert(track_names.end(), name);
    return static_cast<int>(it - track_names.begin()) + 1;
  };
  for (const Entry& e : entries) track_of(e);
  for (size_t t = 0; t < track_names.size(); ++t) {
    trace.push_back({{"ph", "M"}, {"pid", 1}, {"tid", t + 1}, {"name", "thread_name"},
                     {"args", {{"name", track_names[t]}}}});
  }
  std::map<std::string, double> clocks;  // per track: where the next entry of this run starts
  for (size_t i = 0; i < runs.run_ms.size(); ++i) {
    const double start = i < runs.run_start_us.size() ? runs.run_start_us[i] : 0.0;
    trace.push_back({{"ph", "X"}, {"pid", 1}, {"tid", 1}, {"name", "run " + std::to_string(i)}, {"cat", "run"},
                     {"ts", Round3(start)}, {"dur", Round3(runs.run_ms[i] * 1e3)}, {"args", Json::object()}});
    double clock = start;  // entries run one after another on the engine's streams
    for (const Entry& e : entries) {
      trace.push_back({{"ph", "X"}, {"pid", 1}, {"tid", track_of(e)}, {"name", e.name}, {"cat", e.kind},
                       {"ts", Round3(clock)}, {"dur", Round3(std::max(e.ms, 0.0) * 1e3)},
                       {"args", {{"type", e.type}, {"onnx_nodes", e.onnx_nodes}}}});
      clock += std::max(e.ms, 0.0) * 1e3;
    }
  }

  // The overhead entry and the per-node view (profiling.py _finish).
  double accounted = 0;
  for (const Entry& e : entries) accounted += e.ms;
  if (mean_run > accounted) {
    entries.push_back({"(engine overhead)", "overhead", "overhead", "engine", mean_run - accounted, {}});
  }
  std::map<std::string, double> by_node;
  std::map<std::string, std::vector<std::string>> entry_names;
  for (const Entry& e : entries) {
    for (const std::string& n : e.onnx_nodes) {
      by_node[n] += e.ms / static_cast<double>(e.onnx_nodes.size());
      entry_names[n].push_back(e.name);
    }
  }
  Json node_view = Json::array();
  for (const PlanNode& n : nodes) {
    const bool timed = entry_names.count(n.name) > 0;
    const auto attributed = how.find(n.name);
    const std::string status = !timed ? "removed by engine"
                               : attributed == how.end() ? "timed"
                                                         : "timed, " + attributed->second;
    node_view.push_back({{"name", n.name}, {"op", n.op}, {"ms", timed ? by_node[n.name] : 0.0},
                         {"entries", timed ? entry_names[n.name] : std::vector<std::string>{}}, {"status", status}});
  }
  std::stable_sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) { return a.ms > b.ms; });
  Json entries_json = Json::array();
  for (const Entry& e : entries) entries_json.push_back(EntryJson(e));
  return {{"profile_format", 1},
          {"bundle", runs.bundle},
          {"variant", runs.variant},
          {"engine", runs.engine},
          {"device", runs.device},
          {"tool", "xrt-run"},
          {"runs", runs.run_ms.size()},
          {"runs_dropped_as_outliers", 0},
          {"run_ms", mean_run},
          {"wall_ms", median},
          {"records_window", since_init ? "since_init" : "last_run"},
          {"entries", std::move(entries_json)},
          {"nodes", std::move(node_view)},
          {"trace", std::move(trace)}};
}

std::string TopTable(const Json& profile, size_t top) {
  const double run = Number(profile, "run_ms");
  char line[512];
  std::string out;
  // The header of xrtc profile's table; xrt-run times each run around xrt_session_run (there is no separate
  // engine-side clock to read), so it says so and gives the median beside the mean.
  std::snprintf(line, sizeof(line), "variant %s (%s on %s): %.3f ms per run (measured around xrt_session_run, mean "
                "of %lld); median %.3f ms",
                Text(profile, "variant").c_str(), Text(profile, "engine").c_str(), Text(profile, "device").c_str(),
                run, static_cast<long long>(Number(profile, "runs")), Number(profile, "wall_ms"));
  out += line;
  std::snprintf(line, sizeof(line), "\n%9s %6s  %-8s %-32s %-28s onnx nodes\n", "ms", "%", "kind", "entry", "type");
  out += line;
  const Json& entries = profile["entries"];
  for (size_t i = 0; i < entries.size() && i < top; ++i) {
    const Json& e = entries[i];
    std::string nodes;
    const Json& list = e["onnx_nodes"];
    for (size_t k = 0; k < list.size() && k < 4; ++k) nodes += (k ? ", " : "") + list[k].get<std::string>();
    if (list.size() > 4) nodes += " +" + std::to_string(list.size() - 4);
    const double ms = Number(e, "ms");
    std::snprintf(line, sizeof(line), "%9.4f %6.1f  %-8s %-32s %-28s %s\n", ms, run ? 100 * ms / run : 0.0,
                  Text(e, "kind").c_str(), Text(e, "name").substr(0, 32).c_str(), Text(e, "type").substr(0, 28).c_str(),
                  nodes.empty() ? "-" : nodes.c_str());
    out += line;
  }
  const Json& nodes = profile["nodes"];
  std::string removed;
  size_t timed = 0;
  std::map<std::string, std::string> op_of;
  for (const Json& n : nodes) {
    op_of[Text(n, "name")] = Text(n, "op");
    if (Text(n, "status").rfind("timed", 0) == 0) {
      ++timed;
    } else {
      removed += (removed.empty() ? "" : ", ") + Text(n, "name");
    }
  }
  out += std::to_string(timed) + " of " + std::to_string(nodes.size()) + " ONNX nodes timed" +
         (removed.empty() ? "" : "; removed by the engine at load (no run time): " + removed) + "\n";
  // Time per ONNX op type (profiling.py by_op): a fused entry under its first node's op.
  std::map<std::string, double> totals;
  for (const Json& e : entries) {
    const Json& list = e["onnx_nodes"];
    const std::string key = list.empty() ? "(" + Text(e, "kind") + ")"
                                         : (op_of.count(list[0].get<std::string>()) ? op_of[list[0].get<std::string>()]
                                                                                    : "?");
    totals[key] += Number(e, "ms");
  }
  std::vector<std::pair<std::string, double>> by_op(totals.begin(), totals.end());
  std::stable_sort(by_op.begin(), by_op.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
  out += "time by ONNX op type (a fused entry under its first node's op): ";
  for (size_t i = 0; i < by_op.size() && i < 8; ++i) {
    std::snprintf(line, sizeof(line), "%s%s %.3f ms", i ? ", " : "", by_op[i].first.c_str(), by_op[i].second);
    out += line;
  }
  return out;
}

}  // namespace xrt::tools
