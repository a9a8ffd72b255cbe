/* xrt.h - the xpuruntime C API.
 *
 * Conventions
 * - Every fallible function returns `xrt_status_t`: NULL means OK; a non-NULL status is owned by the caller, who
 *   must pass it to xrt_status_free(). No C++ exception ever crosses this API.
 * - `out_` parameters receive results the caller owns and must release with the named function; arguments marked
 *   "borrowed" must outlive the call (or the object, where stated).
 * - Options structs are filled by their `_initialize()` function first, so new fields never break callers.
 * - Thread-safety: xrt_bundle_t is immutable after open and thread-safe. xrt_session_t is thread-safe:
 *   xrt_session_run() may be called concurrently from many threads. xrt_outputs_t is thread-compatible
 *   (one thread at a time). Releasing an object while another thread uses it is undefined.
 */
#ifndef XRT_XRT_H_
#define XRT_XRT_H_

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#define XRT_API __declspec(dllexport)
#else
#define XRT_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped when a struct or vtable below changes incompatibly. Backends and callers pass the value they were built with. */
#define XRT_ABI_VERSION 1u
#define XRT_MAX_RANK 16

/* ---- Status ------------------------------------------------------------------------------------------------------
 * Codes are part of the ABI: numbered once, never renumbered. Callers branch on codes, never on message text. */
typedef enum xrt_status_code_e {
  XRT_STATUS_OK = 0,
  XRT_STATUS_INVALID_ARGUMENT = 1,   /* the caller passed a bad value: NULL, wrong dtype/shape, unknown input name */
  XRT_STATUS_NOT_FOUND = 2,          /* a file, section, name or variant that does not exist */
  XRT_STATUS_FAILED_PRECONDITION = 3,/* calls in the wrong order, or an object in the wrong state */
  XRT_STATUS_RESOURCE_EXHAUSTED = 4, /* allocation failed, or a size is over a documented cap */
  XRT_STATUS_UNAVAILABLE = 5,        /* a backend or device is not present on this machine */
  XRT_STATUS_INCOMPATIBLE = 6,       /* the bundle targets another format major, device or engine version */
  XRT_STATUS_DATA_CORRUPT = 7,       /* bundle bytes fail a structural or digest check */
  XRT_STATUS_UNIMPLEMENTED = 8,      /* a feature this build does not have (the message names the build option) */
  XRT_STATUS_INTERNAL = 9,           /* an engine failed unexpectedly, or a bug */
  XRT_STATUS_IO = 10,                /* the operating system refused a read or write */
  XRT_STATUS_ALREADY_EXISTS = 11,    /* an output path exists and overwriting was not asked for */
  XRT_STATUS_PERMISSION_DENIED = 12, /* the bundle is not signed by a trusted key, or a signature is required and
                                        absent (xrt_bundle_open_options_t); a signature that does not match the
                                        bytes is DATA_CORRUPT */
} xrt_status_code_t;

typedef struct xrt_status_s* xrt_status_t;

/* Returns XRT_STATUS_OK for NULL. */
XRT_API xrt_status_code_t xrt_status_code(xrt_status_t status);
/* Returns "" for NULL. The string lives until xrt_status_free(status). */
XRT_API const char* xrt_status_message(xrt_status_t status);
/* Frees a status; NULL is a no-op. */
XRT_API void xrt_status_free(xrt_status_t status);
/* Creates a status (for backends). code OK returns NULL. message is copied; NULL means "". Never fails: on
 * allocation failure a static RESOURCE_EXHAUSTED status is returned (freeing it is a no-op). */
XRT_API xrt_status_t xrt_status_make(xrt_status_code_t code, const char* message);
/* "OK", "INVALID_ARGUMENT", ...; "UNKNOWN" for values outside the enum. Static storage. */
XRT_API const char* xrt_status_code_string(xrt_status_code_t code);

/* ---- Element types ------------------------------------------------------------------------------------------------ */
typedef enum xrt_dtype_e {
  XRT_DTYPE_INVALID = 0,
  XRT_DTYPE_FLOAT32 = 1,
  XRT_DTYPE_FLOAT16 = 2,
  XRT_DTYPE_BFLOAT16 = 3,
  XRT_DTYPE_FLOAT64 = 4,
  XRT_DTYPE_INT8 = 5,
  XRT_DTYPE_UINT8 = 6,
  XRT_DTYPE_INT16 = 7,
  XRT_DTYPE_UINT16 = 8,
  XRT_DTYPE_INT32 = 9,
  XRT_DTYPE_UINT32 = 10,
  XRT_DTYPE_INT64 = 11,
  XRT_DTYPE_UINT64 = 12,
  XRT_DTYPE_BOOL = 13,
  /* Added in 0.3 (manifest dtype "string", ONNX `tensor(string)`): a tensor of byte strings. The view's data is
   * an array of product(shape) xrt_string_t (so byte_size = numel * sizeof(xrt_string_t)); the bytes they point
   * to are borrowed like the data (inputs: for the call; outputs: until xrt_outputs_release). Strings are UTF-8
   * by convention, are not NUL-terminated and may contain NUL; an element with size > 0 must have non-NULL data.
   * Engines that cannot take strings (OpenVINO) refuse them; xrtc builds only ONNX Runtime variants for such
   * models. Backends built before 0.3 never see this dtype unless a bundle declares it, and must refuse dtypes
   * they do not know (the OpenVINO plugin does). */
  XRT_DTYPE_STRING = 14,
} xrt_dtype_t;

/* One element of an XRT_DTYPE_STRING tensor: `size` bytes at `data` (NULL allowed only when size is 0). */
typedef struct xrt_string_t {
  const char* data;
  uint64_t size;
} xrt_string_t;

/* Bytes per element (sizeof(xrt_string_t) for XRT_DTYPE_STRING); 0 for XRT_DTYPE_INVALID or unknown values. */
XRT_API size_t xrt_dtype_size(xrt_dtype_t dtype);
/* NumPy name ("float32", ...), as used in the manifest; "invalid" for unknown values. Static storage. */
XRT_API const char* xrt_dtype_name(xrt_dtype_t dtype);
/* Inverse of xrt_dtype_name; XRT_DTYPE_INVALID for unknown names. */
XRT_API xrt_dtype_t xrt_dtype_from_name(const char* name);

/* A borrowed view of a dense, C-contiguous tensor. */
typedef struct xrt_tensor_view_t {
  xrt_dtype_t dtype;
  uint32_t rank;          /* <= XRT_MAX_RANK */
  const int64_t* shape;   /* rank entries, each >= 0; borrowed */
  void* data;             /* borrowed; may be NULL only when byte_size == 0 */
  uint64_t byte_size;     /* must equal product(shape) * xrt_dtype_size(dtype) */
} xrt_tensor_view_t;

/* ---- Placement: tensors that live on a device (added in 0.4) ------------------------------------------------------
 * A tensor's bytes live in host memory or in a CUDA device's memory. The core never touches device memory and links
 * no CUDA: it checks the view (dtype, shape, byte_size) and hands the placement and the pointer to the backend. */
typedef enum xrt_memory_kind_e {
  XRT_MEMORY_HOST = 0,  /* host memory (pageable or pinned); device_id is 0 */
  XRT_MEMORY_CUDA = 1,  /* CUDA device memory (or managed memory): data is a CUdeviceptr on device device_id, in the
                           primary context of that device */
} xrt_memory_kind_t;

/* Where a tensor lives. Frozen layout (8 bytes): later kinds are new enum values, never new fields. `kind` is an
 * int32_t holding an xrt_memory_kind_t (an enum field could not carry a value from a newer caller: reading an
 * out-of-range enum is undefined in C++; the core refuses unknown kinds with INVALID_ARGUMENT). */
typedef struct xrt_placement_t {
  int32_t kind;           /* xrt_memory_kind_t */
  int32_t device_id;      /* the CUDA device ordinal for XRT_MEMORY_CUDA; 0 for host */
} xrt_placement_t;

/* A tensor view with its placement: what xrt_session_run_placed() takes and xrt_outputs_get_placed() returns.
 * Versioned by struct_size (fill it with sizeof(xrt_placed_view_t)); an array of them is read with a stride of
 * its first element's struct_size, and every element must carry the same value. */
typedef struct xrt_placed_view_t {
  uint32_t struct_size;      /* sizeof(xrt_placed_view_t) as the caller was built */
  uint32_t reserved;         /* 0 */
  xrt_placement_t placement; /* {XRT_MEMORY_HOST, 0} for host memory */
  xrt_tensor_view_t view;    /* as for xrt_session_run(); for device memory, data is the device address */
} xrt_placed_view_t;

/* Options of one run (added in 0.4). Fill with xrt_run_options_initialize() first. */
typedef struct xrt_run_options_t {
  uint32_t struct_size;         /* sizeof(xrt_run_options_t) */
  /* 0 (default): every output is copied to host memory the runtime owns. Non-zero: outputs stay where the
   * session's device computed them, with no copy to the host: on a cuda session, CUDA device memory on the
   * session's device (xrt_outputs_get_placed says so); on a cpu session, host memory as always. A device output
   * is memory the runtime allocated for this run alone (later runs never write it); it lives until
   * xrt_outputs_release(), which frees it with cuMemFree (that waits for the device work still using it). */
  uint32_t outputs_on_device;
  /* A CUstream (as an opaque pointer) on the session's device, or NULL for the CUDA legacy default stream. The run
   * waits for the work already submitted to it, and work submitted to it after the call sees the run's results.
   * With a non-NULL stream and outputs_on_device the call may return before the device has finished: the outputs
   * are ready in the stream's order (host inputs in pageable memory are consumed before it returns; pinned ones may
   * still be read by the device: keep them unchanged until the stream has passed the run). Otherwise (NULL stream,
   * or host outputs) the outputs are complete when the call returns. The engine runs on its own stream, joined to this one with events. Sessions whose engine has no device
   * (cpu) refuse a non-NULL stream (INVALID_ARGUMENT): there is nothing to order. */
  void* stream;
} xrt_run_options_t;

/* ---- Bundles ------------------------------------------------------------------------------------------------------ */
typedef struct xrt_bundle_s xrt_bundle_t;

typedef struct xrt_bundle_open_options_t {
  uint32_t struct_size;   /* sizeof(xrt_bundle_open_options_t) */
  uint32_t reserved;
  /* Signature policy (format 1.1, formats/xrtpkg.md "Signature"; callers built before these fields existed pass a
   * smaller struct_size and get no policy). A signed bundle's Ed25519 signature is always verified, before
   * anything past the 64-byte header is parsed; that proves the bytes are what the embedded key signed, not who
   * holds the key. With trusted_key_count > 0 the bundle must be signed by one of the trusted keys; with
   * require_signature (and no keys) by any key. Either refuses an unsigned bundle (PERMISSION_DENIED). */
  const uint8_t* trusted_keys;  /* trusted_key_count raw 32-byte Ed25519 public keys, back to back; borrowed for
                                   the call; NULL only when trusted_key_count is 0 */
  size_t trusted_key_count;     /* at most 65536 */
  uint32_t require_signature;   /* non-zero: refuse unsigned bundles even without trusted keys */
} xrt_bundle_open_options_t;

XRT_API void xrt_bundle_open_options_initialize(xrt_bundle_open_options_t* out_options);

/* Opens a bundle file and verifies it (formats/xrtpkg.md). A signed bundle is read whole into private memory and
 * verified there (signature, structure, every digest, the manifest). An unsigned one is verified on use: structure
 * and manifest now, each other section when it is first needed (a session's variant, xrt_bundle_read_section), read
 * into private memory and verified there first (DATA_CORRUPT naming the section). Either way later writes,
 * truncation or replacement of the file never reach an engine: verified sections are kept; a section first needed
 * after an in-place change fails its check (deploy a new bundle by writing it elsewhere and renaming it over the old
 * one). options may be NULL (no signature policy). On success the caller owns *out_bundle:
 * xrt_bundle_release(). Errors: INVALID_ARGUMENT (NULL, or trusted_keys NULL with a non-zero count), NOT_FOUND /
 * IO (file), DATA_CORRUPT / INCOMPATIBLE / RESOURCE_EXHAUSTED (bytes), PERMISSION_DENIED (signature policy). */
XRT_API xrt_status_t xrt_bundle_open_file(const char* path, const xrt_bundle_open_options_t* options,
                                          xrt_bundle_t** out_bundle);
/* Like xrt_bundle_open_file over bytes in memory. The bytes are borrowed: they must outlive the bundle and every
 * session created from it. */
XRT_API xrt_status_t xrt_bundle_open_memory(const void* data, size_t size, const xrt_bundle_open_options_t* options,
                                            xrt_bundle_t** out_bundle);
/* Releases the caller's reference. Sessions keep their bundle alive. NULL is a no-op. */
XRT_API void xrt_bundle_release(xrt_bundle_t* bundle);
/* The manifest's JSON text (not NUL-terminated past *out_size; a NUL does follow it). Borrowed: lives as long as the
 * bundle. */
XRT_API const char* xrt_bundle_manifest(const xrt_bundle_t* bundle, size_t* out_size);
XRT_API void xrt_bundle_format_version(const xrt_bundle_t* bundle, uint32_t* out_major, uint32_t* out_minor);
/* Returns 1 when the bundle is signed (its signature was verified at open) and copies the signer's raw 32-byte
 * Ed25519 public key to out_public_key (may be NULL); 0 for an unsigned bundle or a NULL bundle. */
XRT_API int xrt_bundle_signer(const xrt_bundle_t* bundle, uint8_t* out_public_key);

/* One section's bytes, decompressed (xrt_bundle_read_section). Owned by the caller: xrt_section_release(). */
typedef struct xrt_section_s xrt_section_t;
/* Reads section `name` (formats/xrtpkg.md; e.g. "decisions.json", "plan.json", golden data "golden.in.0.npy" as the
 * manifest names them). Its digest is verified before its bytes are returned (at open, or on its first read); a
 * compressed section is decompressed into a new buffer, an uncompressed one is borrowed from the bundle (kept alive
 * by the section). Errors: INVALID_ARGUMENT (NULL), NOT_FOUND (no such section), RESOURCE_EXHAUSTED (cannot
 * allocate), DATA_CORRUPT (the section fails its check on first read). */
XRT_API xrt_status_t xrt_bundle_read_section(const xrt_bundle_t* bundle, const char* name,
                                             xrt_section_t** out_section);
XRT_API const void* xrt_section_data(const xrt_section_t* section);
XRT_API uint64_t xrt_section_size(const xrt_section_t* section);
/* NULL is a no-op. */
XRT_API void xrt_section_release(xrt_section_t* section);

/* ---- Backends -----------------------------------------------------------------------------------------------------
 * An engine (OpenVINO, ONNX Runtime, ...) is a backend: a vtable registered by name. The core links no engine.
 * Plugins are shared libraries named libxrt_backend_<engine>.so, found next to libxrt.so or in the directories of
 * $XRT_BACKEND_PATH (':'-separated), loaded only when a variant needs them; each exports
 *     xrt_status_t xrt_backend_plugin_get(uint32_t host_abi_version, xrt_backend_vtable_t* out_vtable);
 * The host zero-fills *out_vtable and sets its struct_size to the size of its own xrt_backend_vtable_t (hosts before
 * 0.4 leave it 0: their struct ends before execute_placed); the plugin writes no byte past it
 * (xrt_backend_vtable_copy_out below), so a plugin built against a newer xrt.h loads into an older host.
 * A host (e.g. the Python loader) may also register a vtable directly. A later registration of a name replaces an
 * earlier one for sessions created afterwards. */

/* One artifact handed to a backend: a role from the manifest ("model", "weights") and its bytes (borrowed: valid
 * until destroy() of the handle created from it). data is 64-byte aligned when the section is uncompressed. */
typedef struct xrt_backend_artifact_t {
  const char* role;
  const void* data;
  uint64_t size;
} xrt_backend_artifact_t;

/* One output produced by execute(). The backend fills every field; the core calls release(owner) exactly once
 * when the caller releases the outputs (release may be NULL when owner needs no cleanup). */
typedef struct xrt_backend_output_t {
  xrt_dtype_t dtype;
  uint32_t rank;
  int64_t shape[XRT_MAX_RANK];
  void* data;
  uint64_t byte_size;
  void* owner;
  void (*release)(void* owner);
} xrt_backend_output_t;

typedef struct xrt_backend_vtable_t {
  uint32_t struct_size;   /* sizeof(xrt_backend_vtable_t) as the backend was built */
  uint32_t abi_version;   /* XRT_ABI_VERSION as the backend was built */
  const char* name;       /* engine name as in the manifest: "openvino", "onnxruntime"; static or self-owned */
  void* self;             /* passed back to every function */
  /* Engine version string, e.g. "2026.4.1"; static or self-owned. */
  const char* (*version)(void* self);
  /* Whether `device` ("cpu", "npu", "gpu", ...) exists for this engine on this machine. Must be cheap. */
  int (*has_device)(void* self, const char* device);
  /* Prepares a variant for `device`. options_json is the variant's "options" object: it comes from the bundle
   * (untrusted: allow-list its keys, bound its values, never take a path or host resource from it) plus the
   * "xrt.cache_dir" the caller gave, the only key the core adds (a bundle that sets it is refused before init).
   * Check that each artifact is the type the manifest promises before handing it to the engine. On success
   * *out_handle is owned by the backend until destroy(). A variant with both "compiled" and "weights" artifacts is
   * first offered without "weights" (the compiled form carries them): a backend that cannot use the compiled
   * artifact must then fail (not crash) for want of weights; the core calls init again with every artifact. */
  xrt_status_t (*init)(void* self, const char* device, const xrt_backend_artifact_t* artifacts, size_t artifact_count,
                       const char* options_json, void** out_handle);
  /* Runs once. inputs are in the manifest's input order, already checked against it. Fills outputs[0..output_count)
   * in the manifest's output order. Must be safe to call concurrently on one handle. On error, the backend has
   * already released whatever it had put into outputs. */
  xrt_status_t (*execute)(void* self, void* handle, const xrt_tensor_view_t* inputs, size_t input_count,
                          xrt_backend_output_t* outputs, size_t output_count);
  void (*destroy)(void* self, void* handle);
  /* Optional (may be NULL; absent in vtables whose struct_size ends before it): a JSON object describing what the
   * engine did at init (e.g. {"compiled_from": "cache", "cache_dir": ...}), merged into the session's describe()
   * as "engine_info". Owned by the handle, valid until destroy(). The core asks again at each
   * xrt_session_describe: an engine whose description changes after init returns a new pointer (the old text must
   * stay valid until destroy() too). */
  const char* (*describe)(void* self, void* handle);
  /* Optional (added in 0.4; may be NULL; absent in vtables whose struct_size ends before it): execute() for tensors
   * that may live on a device. input_placements[i] says where inputs[i] lives (the core has checked the views as for
   * execute(), and that no string tensor is on a device); `run` is the core's copy of the caller's options (never NULL;
   * read only the fields its struct_size covers): run->stream orders the run (see xrt_session_run_placed) and
   * run->outputs_on_device asks to leave the outputs on the device. The backend writes each output's placement in
   * output_placements[i] (the core pre-fills host); a device output's release(owner) frees its device memory.
   * Backends without this entry get only host tensors: the core refuses device tensors and streams for them. */
  xrt_status_t (*execute_placed)(void* self, void* handle, const xrt_run_options_t* run,
                                 const xrt_tensor_view_t* inputs, const xrt_placement_t* input_placements,
                                 size_t input_count, xrt_backend_output_t* outputs, xrt_placement_t* output_placements,
                                 size_t output_count);
  /* Optional (added in 0.5; may be NULL; absent in vtables whose struct_size ends before it): the per-node profile
   * of the runs so far, for a handle whose init() options carried "xrt.profile": "1" (the core adds it when the
   * session was created with xrt_session_options_t.profile; engines turn their profiler on only then: it costs).
   * The backend calls sink(context, json, size) once with a JSON object ("profile records", format 1):
   *   {"records_format": 1, "engine": "...", "window": "since_init" | "last_run", "runs": N,
   *    "records": [{"name": engine's layer or launch, "type": op / kernel type, "kind": "compute" | "copy" | "sync",
   *                 "stream": track name, "ms": total milliseconds over the window's runs,
   *                 "onnx_nodes": [source (ONNX) node names this record ran, as the engine knows them]}]}
   * "since_init": totals over every completed run since init (take the difference of two calls for a window);
   * "last_run": the last run only. The json is borrowed for the call. A handle created without "xrt.profile" returns
   * FAILED_PRECONDITION. Must be safe to call concurrently with execute(); runs still in flight may be left out. */
  xrt_status_t (*profile)(void* self, void* handle, void (*sink)(void* context, const char* json, size_t size),
                          void* context);
} xrt_backend_vtable_t;

/* For plugins: copies `vtable` into the host's *out without writing past the host's struct (see "Backends"); the
 * copy's struct_size says how much the host got. */
static inline void xrt_backend_vtable_copy_out(const xrt_backend_vtable_t* vtable, xrt_backend_vtable_t* out) {
  size_t room = out->struct_size != 0 ? out->struct_size : offsetof(xrt_backend_vtable_t, execute_placed);
  size_t n = room < vtable->struct_size ? room : vtable->struct_size;
  const unsigned char* from = (const unsigned char*)vtable;
  unsigned char* to = (unsigned char*)out;
  for (size_t i = 0; i < n; ++i) to[i] = from[i];
  out->struct_size = (uint32_t)n;
}

/* Registers (copies) a vtable. Errors: INVALID_ARGUMENT (NULL fields), INCOMPATIBLE (abi_version). Thread-safe. */
XRT_API xrt_status_t xrt_backend_register(const xrt_backend_vtable_t* vtable);
/* Names of registered backends and plugin files found, ','-separated, without loading any plugin. Writes at most
 * capacity bytes including the NUL; *out_length (optional) receives the full length without the NUL. */
XRT_API xrt_status_t xrt_backend_list(char* buffer, size_t capacity, size_t* out_length);

/* ---- Sessions ------------------------------------------------------------------------------------------------------ */
typedef struct xrt_session_s xrt_session_t;
typedef struct xrt_outputs_s xrt_outputs_t;

typedef struct xrt_session_options_t {
  uint32_t struct_size;   /* sizeof(xrt_session_options_t) */
  uint32_t reserved;
  const char* device;     /* "cpu" (default when NULL) */
  const char* engine;     /* NULL: the manifest's preference among available engines; else only this engine */
  const char* variant;   /* NULL: pick; else the variant with this id */
  /* Added after the first layout; callers built before pass a struct_size that ends above and get the defaults. */
  const char* fallback;   /* devices to try, in order, when `device` has no usable variant, ','-separated ("cpu").
                             NULL: the chain the bundle's variants for `device` declare (their fallback_devices);
                             "": no fallback (a missing device is an error naming the devices present) */
  const char* cache_dir;  /* folder for engine compile caches (OpenVINO CACHE_DIR) of variants compiled at load;
                             NULL or "": no cache. The session's describe() says whether the cache was hit */
  /* Added in 0.5 (callers built before get 0): non-zero turns the engine's per-node profiler on, for
   * xrt_session_profile(). It slows runs down (OpenVINO PERF_COUNT; the cuda engine runs its launches one by one,
   * each timed with CUDA events, instead of its CUDA graph). */
  uint32_t profile;
  uint32_t reserved2;     /* 0 */
} xrt_session_options_t;

XRT_API void xrt_session_options_initialize(xrt_session_options_t* out_options);

/* Picks a variant for the device (manifest order, first whose backend is available and has the device), loads its
 * backend and initialises it. The session retains the bundle. Caller owns *out_session: xrt_session_release().
 * Errors: NOT_FOUND (no variant for the device / named variant / engine), UNAVAILABLE (backend or device absent:
 * the message lists what was tried and why each was skipped), INCOMPATIBLE, INTERNAL (engine failed to load). */
XRT_API xrt_status_t xrt_session_create(xrt_bundle_t* bundle, const xrt_session_options_t* options,
                                        xrt_session_t** out_session);
XRT_API void xrt_session_release(xrt_session_t* session);

/* Which variant runs and why (JSON object: variant, engine, engine_version, device, reason, skipped[], and the
 * engine's engine_info as it is now: it may change after init). Borrowed: lives as long as the session. */
XRT_API const char* xrt_session_describe(const xrt_session_t* session);

/* Input/output metadata from the manifest. Strings and arrays are borrowed from the session. A dynamic dim is -1
 * in shape, with its symbolic name (or NULL when unnamed) in dim_names[d]; dim_names[d] is NULL for static dims. */
/* An input or output whose manifest entry has a `type` (a sequence, map or optional, formats/xrtpkg.md "Value
 * types") has dtype XRT_DTYPE_INVALID and rank 0 here: the C API carries only tensors, so xrt_session_run() on
 * such a session is UNIMPLEMENTED (naming the value); the Python loader runs these bundles on ONNX Runtime. */
typedef struct xrt_io_info_t {
  const char* name;
  xrt_dtype_t dtype;
  uint32_t rank;
  const int64_t* shape;
  const char* const* dim_names;
} xrt_io_info_t;

XRT_API size_t xrt_session_input_count(const xrt_session_t* session);
XRT_API size_t xrt_session_output_count(const xrt_session_t* session);
XRT_API xrt_status_t xrt_session_input_info(const xrt_session_t* session, size_t index, xrt_io_info_t* out_info);
XRT_API xrt_status_t xrt_session_output_info(const xrt_session_t* session, size_t index, xrt_io_info_t* out_info);

/* Runs the session. UNIMPLEMENTED when an input or output is a sequence, map or optional (see xrt_io_info_t).
 * names[i] names inputs[i]; names may be NULL to pass inputs in the session's input order.
 * Every input must be given exactly once. Input data is borrowed for the duration of the call (never copied where
 * the engine can read it in place). On success the caller owns *out_outputs: xrt_outputs_release().
 * Errors: INVALID_ARGUMENT with the input's name, what was expected (dtype, shape with symbolic names) and what was
 * given: missing, unknown or duplicate name, wrong dtype, rank or dim, byte_size mismatch, NULL data. */
XRT_API xrt_status_t xrt_session_run(xrt_session_t* session, const char* const* names,
                                     const xrt_tensor_view_t* inputs, size_t input_count, xrt_outputs_t** out_outputs);

XRT_API void xrt_run_options_initialize(xrt_run_options_t* out_options);

/* xrt_session_run() for tensors that may live on a device. options may be NULL (defaults). inputs is an array of
 * input_count placed views (see xrt_placed_view_t for the stride rule). Host inputs behave as in xrt_session_run();
 * a CUDA input must be on the session's device; engines that take only host memory (OpenVINO, ONNX Runtime on
 * cpu) refuse device inputs with UNIMPLEMENTED naming the input and its placement. A CUDA input is borrowed for the
 * call like a host one: on a cuda session it is copied device-to-device, in stream order, into the engine's input
 * buffer (its CUDA graphs were captured on fixed addresses). Errors: as xrt_session_run(), plus INVALID_ARGUMENT
 * (struct_size, unknown memory kind, a string tensor on a device, a device other than the session's, a stream on a
 * cpu session) and UNIMPLEMENTED (a device tensor for an engine without device memory). */
XRT_API xrt_status_t xrt_session_run_placed(xrt_session_t* session, const xrt_run_options_t* options,
                                            const char* const* names, const xrt_placed_view_t* inputs,
                                            size_t input_count, xrt_outputs_t** out_outputs);

/* ---- Profiles (added in 0.5) ---------------------------------------------------------------------------------------
 * The engine's per-node profile of a session created with xrt_session_options_t.profile: the JSON object of the
 * backend's profile hook ("profile records", see xrt_backend_vtable_t.profile), with "variant" and "device" added.
 * Owned by the caller: xrt_profile_release(). Errors: INVALID_ARGUMENT (NULL), FAILED_PRECONDITION (the session was
 * created without profile), UNIMPLEMENTED (this engine does not profile: its plugin has no profile hook). */
typedef struct xrt_profile_s xrt_profile_t;
XRT_API xrt_status_t xrt_session_profile(const xrt_session_t* session, xrt_profile_t** out_profile);
/* The JSON text (NUL-terminated; *out_size, optional, receives its length). Borrowed from the profile. */
XRT_API const char* xrt_profile_json(const xrt_profile_t* profile, size_t* out_size);
/* NULL is a no-op. */
XRT_API void xrt_profile_release(xrt_profile_t* profile);

XRT_API size_t xrt_outputs_count(const xrt_outputs_t* outputs);
/* out_view's shape and data are borrowed from outputs; out_name (optional) from the session. An output left on a
 * device (xrt_run_options_t.outputs_on_device) is FAILED_PRECONDITION here: read it with xrt_outputs_get_placed(). */
XRT_API xrt_status_t xrt_outputs_get(const xrt_outputs_t* outputs, size_t index, xrt_tensor_view_t* out_view,
                                     const char** out_name);
/* Like xrt_outputs_get(), for any placement. out_view->struct_size must be set by the caller (fields past it are
 * not written); out_view->placement says where the data lives. */
XRT_API xrt_status_t xrt_outputs_get_placed(const xrt_outputs_t* outputs, size_t index, xrt_placed_view_t* out_view,
                                            const char** out_name);
XRT_API void xrt_outputs_release(xrt_outputs_t* outputs);

XRT_API const char* xrt_version(void);

#ifdef __cplusplus
}  /* extern "C" */
#endif

#endif  /* XRT_XRT_H_ */
