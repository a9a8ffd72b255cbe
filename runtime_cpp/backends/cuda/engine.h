// engine.h - one initialised cuda variant: modules, one device allocation, cuBLASLt descriptors, a CUDA graph per
// input shape. Talks to the GPU only through the DriverApi / CublasLtApi tables (cuda_api.h), so the tests run all
// of its logic against a fake driver.
#ifndef XRT_BACKENDS_CUDA_ENGINE_H_
#define XRT_BACKENDS_CUDA_ENGINE_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "cuda_api.h"
#include "plan.h"
#include "xrt/xrt.h"

namespace xrt {
namespace cuda_backend {

struct EngineOptions {
  int device_ordinal = 0;
  bool profile = false;        // run the launches without the graph, each timed with CUDA events
  int replay_timing = 0;       // after each run, time this many graph replays on the device-resident inputs
  std::string report_path;     // JSON lines for profile/replay reports; empty: stderr
  size_t workspace_bytes = 32u << 20;  // cuBLASLt workspace
  int tune_gemms = 0;          // > 1: static plans try up to this many heuristic candidates per GEMM configuration
                               // in the captured graph at init and keep the fastest (stored algorithms accepted by
                               // cublasLtMatmulAlgoCheck are used as they are); <= 1: the heuristic's first
  size_t max_graphs = 64;
  // programmatic dependent launch for kernels whose image allows it (env XRT_CUDA_PDL=1). Off by default: on the
  // H200 it made BERT-base b1s128 slower (0.384 ms against 0.371 without; bench/gpu/RESULTS.md)
  bool pdl = false;
  // Where Create was given no cuBLASLt table: loads it (the plugin's dlopen, maybe still running in the background)
  // when the plan's GEMMs first need it, after the weights are uploaded, so that the upload overlaps the load.
  std::function<const CublasLtApi*(std::string* error)> load_cublaslt;
  // Creates a cuBLASLt handle and warms its heuristics (one query) with the engine's context current, or returns
  // null; called on a helper thread while the weights upload, and owned by the engine. *warm_ms: how long it took.
  std::function<cublasLtHandle_t(double* warm_ms)> take_warm_cublaslt;
  // Loads cuBLAS for a plan whose GEMMs name library "cublas" (matmul = cublas); never called for other plans.
  // Null, or null returned: such a plan fails init with the error (naming libcublas.so.13 and what to install).
  std::function<const CublasApi*(std::string* error)> load_cublas;
  // A static plan whose GEMMs have Triton stand-ins (PLAN.md) does not wait for cuBLASLt: its graph is captured with
  // the stand-ins and runs while a helper thread loads cuBLASLt and captures the cuBLASLt graph, which later runs
  // switch to. Only where cuBLASLt comes through load_cublaslt, never when profiling or tuning (env
  // XRT_CUDA_STAND_INS=0 turns it off: init then waits for cuBLASLt as before).
  bool stand_ins = true;
};

struct ByteSpan {
  const void* data = nullptr;
  uint64_t size = 0;
};

// Artifacts by role, borrowed for the engine's lifetime (the core keeps them alive until destroy()).
struct EngineArtifacts {
  const void* plan = nullptr;
  uint64_t plan_size = 0;
  const void* weights = nullptr;
  uint64_t weights_size = 0;
  const void* kernels = nullptr;
  uint64_t kernels_size = 0;
  // "weights.1", "weights.2", ...: the parts after "weights" (above), in order; the weights space the plan's offsets
  // address is their concatenation (PLAN.md). Empty for a variant stored as one "weights" section.
  std::vector<ByteSpan> more_weights;
};

class Engine {
 public:
  // lt may be null: then options.load_cublaslt loads it when the GEMMs need it, or a plan with GEMMs fails with
  // lt_error in the message.
  static xrt_status_t Create(const DriverApi* drv, const CublasLtApi* lt, const std::string& lt_error,
                             const EngineArtifacts& artifacts, const EngineOptions& options,
                             std::unique_ptr<Engine>* out);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Serialised: one arena, one stream. Outputs are host buffers the caller releases through output.release.
  xrt_status_t Execute(const xrt_tensor_view_t* inputs, size_t input_count, xrt_backend_output_t* outputs,
                       size_t output_count);
  // Execute() for inputs that may be on the device (input_placements may be NULL: all host), ordered on
  // run.stream, with outputs left on the device when run.outputs_on_device (xrt.h, xrt_session_run_placed).
  // Device inputs are copied device-to-device on the engine's stream into the plan's input buffers (the graphs
  // were captured on them); device outputs are copied into a fresh allocation per output (later runs reuse the
  // plan's buffers), freed by their release. The engine's stream waits for run.stream (an event) before the
  // first copy, and run.stream waits for the engine's stream after the last.
  xrt_status_t ExecutePlaced(const xrt_run_options_t& run, const xrt_tensor_view_t* inputs,
                             const xrt_placement_t* input_placements, size_t input_count,
                             xrt_backend_output_t* outputs, xrt_placement_t* output_placements, size_t output_count);

  std::string Describe() const;  // JSON; a copy: the switch from the GEMMs' stand-ins to cuBLASLt rewrites it
  // Describe() for the core (xrt.h vtable describe): each distinct text is kept until the engine is destroyed.
  const char* PublishedDescribe();
  // Blocks until the GEMMs have left their stand-ins (or stay on them for good: cuBLASLt unavailable) and switches
  // the graph. Replay timing calls it, so that it times the graph later runs replay. No-op without stand-ins.
  void WaitForGemms();
  // For the process's exit (an atexit handler joins every engine's helper thread before cuBLASLt's own static
  // destructors run: a thread still inside cuBLASLt then would crash the exit).
  void JoinHelperThread();
  const std::string& LastReport() const { return last_report_; }  // the last profile / replay report (JSON)
  // The last profiled run as profile records (xrt.h, xrt_backend_vtable_t.profile; window "last_run"): its launches,
  // input upload, output download and synchronisation. FAILED_PRECONDITION without options.profile or before a run.
  xrt_status_t ProfileRecords(std::string* out_json);
  size_t GraphCount() const { return graphs_.size(); }

 private:
  struct GemmState;  // cuBLASLt descriptors for one GEMM at one binding
  struct Binding {   // everything captured for one set of dim values
    std::vector<int64_t> values;
    std::vector<std::unique_ptr<GemmState>> gemms;
    CUgraphExec exec = nullptr;
    uint64_t last_use = 0;
    bool stand_ins = false;  // captured with the GEMMs' Triton stand-ins (no GemmState)
  };

  Engine(const DriverApi* drv, const CublasLtApi* lt, EngineOptions options);
  xrt_status_t Init(const EngineArtifacts& artifacts, const std::string& lt_error);
  xrt_status_t LoadModules(const EngineArtifacts& artifacts);
  static std::vector<ByteSpan> WeightParts(const EngineArtifacts& artifacts);  // "weights", "weights.1", ...
  xrt_status_t PrepareBinding(const std::vector<int64_t>& values, Binding* binding, bool capture);
  void AddSplitKCandidates(const GemmState& st, int64_t k, size_t workspace, std::vector<cublasLtMatmulAlgo_t>* list);
  xrt_status_t PrepareGemm(int index, const std::vector<int64_t>& values, std::unique_ptr<GemmState>* out,
                           std::string* note);
  xrt_status_t Enqueue(const Binding& binding, std::vector<std::pair<CUevent, CUevent>>* events, CUstream stream);
  xrt_status_t LaunchKernel(int kernel, const int64_t grid[3], const std::vector<int64_t>& values, CUstream stream,
                            const std::string& what);
  xrt_status_t PrepareCublas();  // matmul = cublas: the library, a handle, its workspace, describe()'s notes
  // cuBLAS's stream and the allocation's workspace for `stream` (cublasSetStream resets the workspace to cuBLAS's
  // own pool, which a captured graph must not allocate from); nothing to do when `stream` is already set
  xrt_status_t BindCublasStream(CUstream stream, const std::string& what);
  xrt_status_t CublasFailed(const std::string& what, const char* call, cublasStatus_t st) const;
  xrt_status_t CublasGemm(const GemmSpec& g, const std::vector<int64_t>& values, CUstream stream,
                          const std::string& what);
  xrt_status_t PrepareGemmAlgorithms();  // a handle, and every GEMM's algorithm at the max dims (notes, configs)
  void UpgradeGemms(std::future<cublasLtHandle_t> warm);  // the helper thread of a plan on stand-ins
  void SwitchGraphs();  // under mu_: once the helper is done, its cuBLASLt graph replaces the stand-ins' graph
  void WaitAndSwitch();  // under mu_
  void BuildDescribe();
  xrt_status_t Profile(Binding* binding, std::string* report);  // the launches' report, written by the caller
  xrt_status_t TimeReplays(const Binding& binding);
  void WriteReport(const std::string& line);
  void ReleaseBinding(Binding* binding);
  CUdeviceptr TensorPtr(int id) const;
  xrt_status_t Cu(CUresult r, const std::string& what) const;  // nullptr on success

  const DriverApi* drv_;
  const CublasLtApi* lt_;
  EngineOptions options_;
  Plan plan_;
  CUdevice device_ = 0;
  CUcontext context_ = nullptr;
  bool context_retained_ = false;
  CUstream stream_ = nullptr;
  std::string arch_;                 // "sm_90a" on a 9.0 device
  std::vector<CUmodule> modules_;
  std::map<std::pair<uint64_t, uint64_t>, CUmodule> loaded_images_;  // image [offset, size] -> module
  std::vector<CUfunction> functions_;
  std::vector<std::string> image_kind_;  // per kernel: the image key loaded
  std::vector<bool> pdl_;                // per kernel: launched with programmatic dependent launch
  CUdeviceptr base_ = 0;             // the one allocation
  uint64_t total_bytes_ = 0;
  uint64_t weights_off_ = 0, arena_off_ = 0, workspace_off_ = 0;
  std::vector<uint64_t> io_off_;     // per tensor id: offset of an io tensor's region in the allocation
  cublasLtHandle_t lt_handle_ = nullptr;
  bool cublas_plan_ = false;                // the plan's GEMMs name library "cublas"
  const CublasApi* cublas_ = nullptr;       // loaded at init for such a plan
  cublasHandle_t cublas_handle_ = nullptr;
  CUstream cublas_stream_ = nullptr;        // the stream last given to cublasSetStream (it resets the workspace)
  int cublas_version_ = 0;
  std::vector<std::string> gemm_notes_;
  xrt_status_t Capture(Binding* binding, CUstream stream);  // (re)captures the binding's graph on `stream`
  xrt_status_t ReplayTimes(const Binding& binding, int replays, std::vector<double>* each, double* back_to_back_ms);
  xrt_status_t TuneInGraph(Binding* binding);
  std::map<std::string, std::vector<cublasLtMatmulAlgo_t>> candidates_;  // configuration -> candidates (tuning)
  std::vector<std::string> gemm_key_;     // per GEMM: its configuration
  std::vector<std::string> gemm_config_;  // per GEMM: the chosen algorithm as hex (describe())
  std::map<std::string, std::string> heuristic_note_;  // GEMM configuration -> how its algorithm was chosen
  struct TuneOutcome {
    size_t candidates = 0, chosen = 0;        // chosen: index into the candidates (0 = the heuristic's first)
    double heuristic_ms = 0, tuned_ms = 0;    // whole-graph replay medians, heuristic's first vs the chosen one
    uint32_t split_k = 1;                     // the chosen algorithm's split-K count (1 = not split)
  };
  std::map<std::string, TuneOutcome> tuning_;  // GEMM configuration -> what the in-graph tuning found
  std::map<std::string, cublasLtMatmulAlgo_t> heuristic_cache_;  // GEMM configuration -> heuristic's algorithm  // per GEMM: stored algo accepted / fallback reason
  std::vector<Binding> graphs_;
  uint64_t use_clock_ = 0;
  // the GEMMs' stand-ins: the helper thread (loads cuBLASLt, prepares the GEMMs, captures upgraded_ on
  // helper_stream_), done_ set when it has finished either way; the switch happens under mu_ on the next run
  std::future<void> helper_;
  std::atomic<bool> helper_done_{false};
  Binding upgraded_;
  CUstream helper_stream_ = nullptr;
  std::string gemms_path_;       // how the GEMMs run (describe)
  double switch_ready_ms_ = -1;  // from init's start to the cuBLASLt graph being ready
  double warm_ms_ = -1;          // cuBLASLt's warm-up on its helper thread
  int lt_version_ = 0;
  bool gemms_prepared_ = false;  // gemm_notes_ / gemm_config_ complete (under describe_mu_ where a helper writes)
  std::string info_base_;        // describe() without the GEMM part (JSON), from init
  std::chrono::steady_clock::time_point init_start_;
  mutable std::mutex describe_mu_;
  std::string describe_;
  std::deque<std::string> published_;  // PublishedDescribe()'s texts (stable addresses)
  std::string last_report_;
  CUevent caller_ready_ = nullptr;  // recorded on the caller's stream, waited for by stream_ (created on first use)
  CUevent engine_done_ = nullptr;   // recorded on stream_, waited for by the caller's stream
  std::mutex mu_;
};

}  // namespace cuda_backend
}  // namespace xrt

#endif  // XRT_BACKENDS_CUDA_ENGINE_H_
