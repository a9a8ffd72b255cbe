"""`xrt.InferenceSession`: one call from a model file to a running session, under a policy.

    sess = xrt.InferenceSession("model.onnx", device="cpu", kernel_policy=xrt.KernelPolicy(matmul="mlas"),
                                exec_policy=xrt.ExecutionPolicy(precision="fp16"))
    out = sess.run({"x": x})                 # as xrt.load; sess.run(None, {"x": x}) returns a list, as ONNX Runtime
    sess.explain()                           # what was asked, what runs, every fallback and why, the compile

Given an `.onnx`, the model is compiled by xrtc's own pipeline (`xrtc.build.compile_model`: the same passes, plan,
accuracy gate and bundle as `xrtc compile`) and the bundle is kept in the user's cache folder under a key made of
everything that shapes its bytes (see `InferenceSession._cache_key`: the model's bytes and external data, the
policy, the target, the calibration data, the versions of xpuruntime, the engines and the other packages the compile
uses, a digest of the installed compiler's own sources, and the host CPU), so the next start with the same inputs
loads it without compiling. The cache folder is created private (mode 0o700). A cached bundle is opened like any
other (every digest verified): one that fails to open as corrupt or incompatible, or whose manifest records another
model (`provenance.source.sha256`) or another policy than the one asked, is compiled again, never trusted; an entry
owned by another user is not opened at all (the model is compiled into a private temporary folder instead). The
folder is kept under a size cap by removing its least recently used entries (`prune_bundle_cache`). Given an
`.xrtpkg`, it is loaded as by `xrt.load`.

What the caller asks follows the policy model's modes. `engine=`/`backend=` and `device=` may be bare strings
(mode prefer) or `xrt.Knob(choice, "fixed")`; `fallback=[]` makes the device fixed too. Under `fixed`, a choice
that cannot hold raises (Unavailable for a device or engine not present, InvalidArgument for arguments that
contradict each other, e.g. `providers=` naming another device than a fixed `device=`); under `prefer`, the
session falls back, logs a warning and records the reason (`explain()["fallbacks"]`; `providers=` overriding a
`device=` given as a plain string is recorded there too). The compiler is imported only when an `.onnx` is given.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
import logging
import os
import re
import stat
import sys
import time
from typing import Any, Sequence

from . import _errors
from ._session import Session, default_cache_dir, user_cache_dir
from .policy import ExecutionPolicy, KernelPolicy, Knob, Policy, PolicyError

log = logging.getLogger("xpuruntime")

# Engines users name that no target here builds (xrtc.targets.PLANNED), with what to use instead.
_PLANNED_ENGINES = {"tensorrt": "no TensorRT target is implemented in this xpuruntime yet (planned)"}
# Device name -> the xrtc target compiled for it.
_TARGET_OF_DEVICE = {"cpu": "cpu", "npu": "npu-intel", "cuda": "cuda"}
# ONNX Runtime execution provider -> (device, engine) as InferenceSession understands them.
_PROVIDERS = {"CPUExecutionProvider": ("cpu", None), "CUDAExecutionProvider": ("cuda", None),
              "TensorrtExecutionProvider": ("cuda", "tensorrt"), "OpenVINOExecutionProvider": (None, "openvino")}

compiles = 0  # compiles run by InferenceSession in this process (a cache hit leaves it unchanged)


def bundle_cache_dir() -> str:
    """$XRT_BUNDLE_CACHE, else $XDG_CACHE_HOME/xpuruntime/bundles, else ~/.cache/xpuruntime/bundles."""
    return user_cache_dir("XRT_BUNDLE_CACHE", "bundles")


DEFAULT_CACHE_MAX_BYTES = 8 << 30  # a few large GPU bundles (BERT-base cuda: ~450 MB each); $XRT_BUNDLE_CACHE_MAX_BYTES
_ENTRY = re.compile(r".+-[a-z0-9-]+-[0-9a-f]{32}\.xrtpkg")  # <model stem>-<target>-<key[:32]>.xrtpkg: ours only


def bundle_cache_max_bytes() -> int | None:
    """The bundle cache's size cap: $XRT_BUNDLE_CACHE_MAX_BYTES (bytes, or with a K/M/G suffix; 0: no cap), else
    DEFAULT_CACHE_MAX_BYTES. A value that does not parse is an InvalidArgument naming it."""
    raw = os.environ.get("XRT_BUNDLE_CACHE_MAX_BYTES", "").strip()
    if not raw:
        return DEFAULT_CACHE_MAX_BYTES
    m = re.fullmatch(r"(\d+)\s*([KMG]?)i?B?", raw, re.IGNORECASE)
    if not m:
        raise _errors.InvalidArgument(f"XRT_BUNDLE_CACHE_MAX_BYTES={raw!r} is not a size: give bytes or a number "
                                      "with K, M or G (e.g. 4G); 0 turns the cap off")
    n = int(m.group(1)) << {"": 0, "K": 10, "M": 20, "G": 30}[m.group(2).upper()]
    return n or None


def prune_bundle_cache(folder: str | os.PathLike | None = None, max_bytes: int | None = None,
                       keep: Sequence[str] = ()) -> list[str]:
    """Removes the least recently used bundles of the cache `folder` (default bundle_cache_dir()) until the
    entries' total size is at most `max_bytes` (default bundle_cache_max_bytes()); returns the paths removed.
    Only files named as InferenceSession names its entries and owned by this user are counted and removed (nothing
    else in the folder is touched), never those in `keep`. "Used" is the file's mtime: a cache hit refreshes it.
    A bundle removed while a session holds it open stays valid for that session (the runtime reads the bytes it
    verified into its own memory)."""
    folder = os.fspath(folder) if folder else bundle_cache_dir()
    cap = bundle_cache_max_bytes() if max_bytes is None else max_bytes
    if not cap or not os.path.isdir(folder):
        return []
    keep = {os.path.abspath(k) for k in keep}
    entries = []
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if not _ENTRY.fullmatch(name):
            continue
        try:
            st = os.stat(path, follow_symlinks=False)
        except OSError:
            continue  # removed meanwhile (another process pruning)
        if stat.S_ISREG(st.st_mode) and st.st_uid == os.getuid():
            entries.append((st.st_mtime_ns, st.st_size, path))
    total = sum(size for _, size, _ in entries)
    removed = []
    for _, size, path in sorted(entries):
        if total <= cap:
            break
        if os.path.abspath(path) in keep:
            continue
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
            removed.append(path)
        total -= size
    if removed:
        log.info("InferenceSession: bundle cache over %d bytes: removed %d least recently used bundle(s)", cap,
                 len(removed))
    return removed


def cuda_device_count() -> tuple[int, str]:
    """(number of CUDA devices, why none when 0) through the driver library itself (no CUDA toolkit needed)."""
    import ctypes

    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0, "libcuda.so.1 not found: no NVIDIA driver on this machine"
    count = ctypes.c_int()
    status = cuda.cuInit(0)
    if status != 0:
        return 0, f"the NVIDIA driver found no usable GPU (cuInit returned {status})"
    if cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0, "cuDeviceGetCount failed"
    return count.value, "" if count.value else "the NVIDIA driver reports no GPU"


def _as_knob(what: str, value: Any) -> Knob | None:
    if value is None or isinstance(value, Knob):
        if isinstance(value, Knob) and value.mode not in ("fixed", "prefer"):
            raise _errors.InvalidArgument(f"{what}: mode {value.mode!r} is not one of fixed, prefer")
        return value
    if not isinstance(value, str) or not value:
        raise _errors.InvalidArgument(f"{what} must be a name such as 'cpu' or xrt.Knob(name, 'fixed'), got "
                                      f"{value!r}")
    return Knob(value, "prefer")


def _from_providers(providers, provider_options) -> tuple[str | None, str | None, list[str] | None, dict]:
    """ONNX Runtime's `providers=[...]` (names, or (name, options) pairs) and `provider_options=[...]` as (device,
    engine, fallback devices, options of the first provider). The first provider picks the device (CUDA's
    device_id, OpenVINO's device_type); the later ones are the fallback chain."""
    if isinstance(providers, str) or not isinstance(providers, Sequence) or not providers:
        raise _errors.InvalidArgument(f"providers must be a non-empty list such as ['CPUExecutionProvider'], got "
                                      f"{providers!r}")
    entries = []
    for i, item in enumerate(providers):
        name, options = (item if isinstance(item, tuple) else (item, None))
        if provider_options is not None:
            if len(provider_options) != len(providers):
                raise _errors.InvalidArgument("provider_options must have one dict per provider")
            options = provider_options[i]
        if name not in _PROVIDERS:
            raise _errors.InvalidArgument(f"provider {name!r} is not one xpuruntime maps; known: "
                                          f"{', '.join(_PROVIDERS)} (or pass device=/engine=)")
        device, engine = _PROVIDERS[name]
        options = dict(options or {})
        if name == "CUDAExecutionProvider" and "device_id" in options:
            device = f"cuda:{int(options['device_id'])}"
        if name == "OpenVINOExecutionProvider":
            device = str(options.get("device_type", "CPU")).split("_")[0].lower()
        entries.append((device, engine, options))
    device, engine, options = entries[0]
    fallback = [d for d, _, _ in entries[1:] if d != device] or None
    return device, engine, fallback, options


def _parse_device(text: str) -> tuple[str, int | None]:
    """'cpu' -> ('cpu', None); 'cuda:1' -> ('cuda', 1); 'cuda' -> ('cuda', 0)."""
    name = text.strip().lower()
    kind, _, index = name.partition(":")
    if kind in ("cpu", "npu") and not index:
        return kind, None
    if kind == "cuda" and (not index or index.isdigit()):
        return "cuda", int(index or 0)
    raise _errors.InvalidArgument(f"device {text!r}: use 'cpu', 'npu', 'cuda' or 'cuda:N'")


class InferenceSession:
    """A model running on a device under a policy; see the module docstring. Arguments:

    ``model``: an ``.onnx`` (compiled, cached) or ``.xrtpkg`` (loaded). ``device``: ``"cpu"``, ``"npu"``,
    ``"cuda"``/``"cuda:N"`` (a string: mode prefer; ``xrt.Knob(device, "fixed")``: no fallback; None: ``"cpu"``,
    or the device of the first of ``providers``).
    ``engine`` (alias ``backend``): ``"onnxruntime"``, ``"openvino"``, ``"cuda"`` (``"tensorrt"`` is planned).
    ``kernel_policy`` / ``exec_policy``: ``xrt.KernelPolicy`` / ``xrt.ExecutionPolicy``, over the sections of
    ``policy`` (an ``xrt.Policy`` or a policy TOML path). ``fp16``: True asks for fp16 (as a preferred precision),
    False for fp32. ``fallback``: devices to try after ``device`` (None: the bundle's chain, and the CPU for an
    absent CUDA device; ``[]``: none). ``providers`` / ``provider_options``: ONNX Runtime's spelling of device,
    engine and fallback (a fixed ``device`` they disagree with is InvalidArgument; a plain-string one they
    override is recorded in ``explain()["fallbacks"]``); ``sess_options`` (an ``onnxruntime.SessionOptions``):
    its intra_op_num_threads as the threads knob. ``calibration``: an ``.npz`` of real inputs (int8, the accuracy
    gate). ``cache_dir``: where compiled bundles are kept (default ``bundle_cache_dir()``, created with mode 0o700;
    False: compile every time, keep nothing: ``bundle_path`` is then None, as when a cached entry owned by another
    user is refused). ``progress``: show the compile's stages on stderr (default: when
    stderr is a terminal).
    ``trusted_keys`` / ``require_signature``: as ``xrt.load``.
    """

    def __init__(self, model: str | os.PathLike, device: str | Knob | None = None, *,
                 engine: str | Knob | None = None,
                 backend: str | Knob | None = None, kernel_policy: KernelPolicy | None = None,
                 exec_policy: ExecutionPolicy | None = None, policy: Policy | str | os.PathLike | None = None,
                 fp16: bool | None = None, fallback: list[str] | None = None, providers=None,
                 provider_options=None, sess_options=None, calibration: str | os.PathLike | None = None,
                 cache_dir: str | os.PathLike | bool | None = None, progress: bool | None = None,
                 trusted_keys=None, require_signature: bool = False):
        self._fallbacks: list[dict] = []
        self._compile: dict | None = None
        self._bundle: str | None = None
        self._temp: str | None = None  # a private folder compiled into (cache_dir=False, refused entry): removed
        path = os.fspath(model)
        if not os.path.isfile(path):
            raise _errors.NotFound(f"model {path!r} does not exist (give an .onnx or .xrtpkg file)")
        is_onnx = path.lower().endswith(".onnx")
        if not is_onnx and not path.lower().endswith(".xrtpkg"):
            raise _errors.InvalidArgument(f"model {path!r}: give an .onnx model (compiled here) or an .xrtpkg bundle "
                                          "(from xrtc compile)")
        if fp16 is not None and not isinstance(fp16, bool):
            raise _errors.InvalidArgument(f"fp16 must be True, False or None, got {fp16!r}")

        provider_override = None
        if providers is not None:
            p_device, p_engine, p_fallback, _ = _from_providers(providers, provider_options)
            if p_device and device is not None:
                asked = _as_knob("device", device)
                if _parse_device(asked.choice) != _parse_device(p_device):
                    if asked.mode == "fixed":
                        raise _errors.InvalidArgument(
                            f"device {asked.choice!r} is fixed, but providers= names device {p_device!r} first: pass "
                            "one of them, or make the device a plain string (prefer)")
                    provider_override = (asked.choice, p_device)
            if p_device and (provider_override or device is None):
                device = p_device
            engine = engine or backend or p_engine
            fallback = fallback if fallback is not None else p_fallback
        elif provider_options is not None:
            raise _errors.InvalidArgument("provider_options needs providers (one dict per provider)")
        if device is None:
            device = "cpu"
        if engine is not None and backend is not None and _as_knob("engine", engine) != _as_knob("backend", backend):
            raise _errors.InvalidArgument(f"engine={engine!r} and backend={backend!r} disagree: backend is an alias "
                                          "of engine; pass one")
        engine_knob = _as_knob("engine", engine if engine is not None else backend)
        device_knob = _as_knob("device", device)
        if fallback is not None and (isinstance(fallback, str) or not all(isinstance(d, str) for d in fallback)):
            raise _errors.InvalidArgument(f"fallback must be a list of device names such as ['cpu'], got {fallback!r}")
        device_fixed = device_knob.mode == "fixed" or fallback == []
        if device_knob.mode == "fixed":
            fallback = []  # the runtime's own chain (an NPU variant's CPU fallback) is off too
        self._requested = {"model": os.path.basename(path), "device": device_knob.to_json(),
                           "engine": engine_knob.to_json() if engine_knob else None, "fp16": fp16,
                           "fallback": fallback}

        if provider_override:
            self._fell_back("device", provider_override[0], provider_override[1], "providers= names this device "
                            "first, and wins over a device= given as a preference")
        self._policy = self._resolve_policy(policy, kernel_policy, exec_policy, fp16, sess_options)
        kind, load_device = self._resolve_device(device_knob.choice, device_fixed, fallback)
        if any(f["what"] == "device" for f in self._fallbacks):
            fallback = None  # the chain was applied here
        try:
            if is_onnx:
                target = _TARGET_OF_DEVICE[kind]
                if kind == "cuda" and fallback and "cpu" in fallback:
                    target = "cuda,cpu"  # CPU variants alongside, so the runtime can take the fallback asked for
                self._compile_args = (path, self._policy, target, calibration, progress)
                self._bundle = self._compiled(cache_dir)
            else:
                self._bundle = path
                if calibration is not None:
                    raise _errors.InvalidArgument("calibration applies to compiles: give the .onnx model, not a "
                                                  "bundle")
            self._open(load_device, engine_knob, fallback, trusted_keys, require_signature, from_onnx=is_onnx)
        finally:
            if self._temp is not None:  # the runtime holds the bundle in memory (or the compile failed): keep nothing
                import shutil

                shutil.rmtree(self._temp, ignore_errors=True)
                self._temp = self._bundle = None

    # -- resolution -------------------------------------------------------------------------------------------

    def _fell_back(self, what: str, asked: Any, used: Any, reason: str) -> None:
        self._fallbacks.append({"what": what, "asked": asked, "used": used, "reason": reason})
        log.warning("InferenceSession: %s %s -> %s: %s", what, asked, used, reason)

    def _resolve_policy(self, policy, kernel_policy, exec_policy, fp16, sess_options) -> Policy:
        """One xrt.Policy from `policy` (object or TOML path), the kernel/execution sections given separately
        (they replace the policy's), the fp16 flag, checked for contradictions, and ONNX Runtime's SessionOptions'
        intra_op_num_threads as the threads knob (when the policy sets none)."""
        if policy is None:
            base = Policy()
        elif isinstance(policy, Policy):
            base = policy
        elif isinstance(policy, (str, os.PathLike)):
            base = Policy.from_toml(os.fspath(policy))
        else:
            raise _errors.InvalidArgument(f"policy must be an xrt.Policy or a policy .toml path, got {policy!r}")
        if kernel_policy is not None and not isinstance(kernel_policy, KernelPolicy):
            raise _errors.InvalidArgument(f"kernel_policy must be an xrt.KernelPolicy, got {kernel_policy!r}")
        if exec_policy is not None and not isinstance(exec_policy, ExecutionPolicy):
            raise _errors.InvalidArgument(f"exec_policy must be an xrt.ExecutionPolicy, got {exec_policy!r}")
        execution = dict((exec_policy or base.execution).knobs)
        threads = getattr(sess_options, "intra_op_num_threads", 0) if sess_options is not None else 0
        if threads and "threads" not in execution:
            execution["threads"] = Knob(int(threads), "prefer")
        if fp16 is not None:
            wanted = "fp16" if fp16 else "fp32"
            have = execution.get("precision")
            if have is None or have.choice == wanted:
                execution["precision"] = Knob(wanted, have.mode if have else "prefer")
            elif have.mode == "fixed":
                raise PolicyError(f"fp16={fp16} contradicts the policy's fixed precision {have.choice}: drop fp16=, "
                                  f"or make the precision Knob({have.choice!r}, 'prefer')")
            else:
                self._fell_back("precision", have.choice, wanted, f"fp16={fp16} is explicit and wins over the "
                                f"policy's {have.mode} precision {have.choice}")
                execution["precision"] = Knob(wanted, "prefer")
        return Policy(kernel=kernel_policy or base.kernel, execution=ExecutionPolicy(**execution),
                      tolerance=dict(base.tolerance), shapes=dict(base.shapes), nodes=dict(base.nodes),
                      keep_fp32_ops=list(base.keep_fp32_ops), quantization=dict(base.quantization))

    def _resolve_device(self, text: str, fixed: bool, fallback) -> tuple[str, str]:
        """(device kind for the compile target, device name for the runtime). A CUDA device that is not present:
        Unavailable when fixed; else cuda:0 when there is one, else the first fallback device (the CPU by
        default), recorded."""
        kind, index = _parse_device(text)
        if kind == "npu" and importlib.util.find_spec("openvino") is None:
            reason = ("OpenVINO is not installed, and the NPU is reached through it (pip install "
                      "'xpuruntime[openvino]')")
            if fixed:
                raise _errors.Unavailable(f"device 'npu' is fixed, but {reason}")
            chain = [d for d in (fallback or ["cpu"]) if not d.lower().startswith("npu")]
            if not chain:
                raise _errors.Unavailable(f"device 'npu': {reason}, and the fallback {fallback!r} names no other "
                                          "device; add 'cpu'")
            used, _ = _parse_device(chain[0])
            self._fell_back("device", text, used, reason)
            return self._resolve_device(used, fixed, fallback) if used == "cuda" else (used, used)
        if kind != "cuda":
            return kind, kind
        count, why = cuda_device_count()
        if index < count:
            return "cuda", f"cuda:{index}"
        reason = (f"no CUDA device {index}: this machine has {count} ({why})" if count == 0 or why else
                  f"no CUDA device {index}: this machine has {count} (cuda:0..cuda:{count - 1})")
        if fixed:
            raise _errors.Unavailable(f"device {text!r} is fixed, but {reason}. Pick a device that is present, or "
                                      "let it fall back (a plain device string, fallback=None)")
        if count > 0:
            self._fell_back("device", text, "cuda:0", reason)
            return "cuda", "cuda:0"
        chain = [d for d in (fallback or ["cpu"]) if not d.lower().startswith("cuda")]
        if not chain:
            raise _errors.Unavailable(f"device {text!r}: {reason}, and the fallback {fallback!r} names no other "
                                      "device; add 'cpu'")
        used, _ = _parse_device(chain[0])
        self._fell_back("device", text, used, reason)
        return used, used

    # -- compile and cache ------------------------------------------------------------------------------------

    def _cache_key(self, path: str, policy: Policy, target: str, calibration: str | None) -> str:
        """sha256 over everything that shapes the bundle's bytes: the model file's bytes, the external data files it
        names, the calibration file, the policy (to_json), the target, the versions (package metadata: no imports)
        of xpuruntime, onnx, onnx-graphsurgeon, ONNX Runtime (onnxruntime or onnxruntime-gpu, whichever provides
        the module), openvino, numpy and, where the target includes cuda, triton; xpuruntime's own VERSION; a digest
        of the installed compiler's .py files (`_compiler_digest`); and the host CPU (`_host_fingerprint`). Also
        keeps the model file's own sha256 (`self._source_sha256`), which a cached bundle's manifest must record."""
        from importlib import metadata

        import onnx

        from . import _ort_backend

        h = hashlib.sha256()

        def add_file(label: str, file: str) -> str:
            h.update(f"{label}\0".encode())
            own = hashlib.sha256()
            with open(file, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
                    own.update(chunk)
            return own.hexdigest()

        self._source_sha256 = add_file("model", path)
        proto = onnx.load_model(path, load_external_data=False)
        folder = os.path.dirname(os.path.abspath(path))
        locations = sorted({e.value for t in proto.graph.initializer for e in t.external_data if e.key == "location"})
        for location in locations:  # a missing file is left to the compile, which names it
            file = os.path.join(folder, location)
            if os.path.isfile(file):
                add_file(f"external:{location}", file)
        if calibration is not None:
            add_file("calibration", os.fspath(calibration))
        versions = {}
        for dist in ("xpuruntime", "onnx", "onnx-graphsurgeon", "openvino", "numpy") + \
                (("triton",) if "cuda" in target.split(",") else ()):
            try:
                versions[dist] = metadata.version(dist)
            except metadata.PackageNotFoundError:
                versions[dist] = None
        from ._version import VERSION

        versions["onnxruntime"] = _ort_backend._version()  # the CPU or the GPU build, whichever is installed
        versions["xpuruntime.__version__"] = VERSION
        versions["xrtc sources"] = _compiler_digest()
        h.update(json.dumps({"policy": policy.to_json(), "target": target, "versions": versions,
                             "host": _host_fingerprint()}, sort_keys=True).encode())
        return h.hexdigest()

    def _compiled(self, cache_dir) -> str:
        """The bundle for (model, policy, target): from the cache when an entry exists, else compiled into it
        (written atomically by the bundle writer, so a crash never leaves a half-written entry under the key). The
        cache folder is created with mode 0o700; an entry owned by another user is refused: the model is compiled
        into a private temporary folder instead (removed once loaded), as with cache_dir=False."""
        import tempfile

        path, policy, target, calibration, _ = self._compile_args
        key = self._cache_key(path, policy, target, calibration)
        stem = os.path.splitext(os.path.basename(path))[0]
        name = f"{stem}-{target}-{key[:32]}.xrtpkg"
        refused = None
        if cache_dir is not False:
            folder = os.fspath(cache_dir) if cache_dir else bundle_cache_dir()
            os.makedirs(folder, mode=0o700, exist_ok=True)
            bundle = os.path.join(folder, name)
            if os.path.isfile(bundle) and not _owned(bundle):
                refused = (f"the cached bundle {bundle} is not owned by this user: not trusted; compiling into a "
                           "private temporary folder instead")
                log.warning("InferenceSession: %s", refused)
        if cache_dir is False or refused:
            self._temp = tempfile.mkdtemp(prefix="xrt-session-")  # mode 0o700; removed by __init__
            bundle = os.path.join(self._temp, name)
        state = "off" if cache_dir is False else "refused" if refused else "hit" if os.path.isfile(bundle) else "miss"
        self._compile = {"cache": state, "key": key, "bundle": bundle, "target": target, "seconds": 0.0}
        if refused:
            self._compile["refused"] = refused
        if state != "hit":
            self._run_compile(bundle)
        if state in ("hit", "miss"):  # the entry is now the most recently used; the cache stays under its cap
            with contextlib.suppress(OSError):
                os.utime(bundle)
            evicted = prune_bundle_cache(os.path.dirname(bundle), keep=[bundle])
            if evicted:
                self._compile["evicted"] = [os.path.basename(p) for p in evicted]
        return bundle

    def _run_compile(self, bundle: str) -> None:
        global compiles
        path, policy, target, calibration, progress = self._compile_args
        from xrtc.build import compile_model  # the compiler: imported only when a model must be compiled
        from xrtc.errors import XrtcError
        from xrtc.progress import session_progress

        show = sys.stderr.isatty() if progress is None else bool(progress)
        title = (f"xpuruntime: compiling {os.path.basename(path)} for {target} (first start with this model and "
                 f"policy; the bundle is cached in {os.path.dirname(bundle)})")
        t0 = time.perf_counter()
        try:
            with session_progress(show, title):
                compile_model(path, target, bundle, force=True, policy=policy,
                              calibration_path=os.fspath(calibration) if calibration is not None else None)
        except XrtcError as err:
            raise _compile_error(err, path, target) from err
        compiles += 1
        self._compile["seconds"] = round(time.perf_counter() - t0, 3)

    # -- load -------------------------------------------------------------------------------------------------

    def _open(self, device: str, engine: Knob | None, fallback, trusted_keys, require_signature,
              from_onnx: bool) -> None:
        """Loads the bundle. A cached one that the runtime finds corrupt or incompatible (digests are verified on
        every open), or whose manifest records another source model (provenance.source.sha256) or another policy
        (provenance.policy) than the ones asked, is compiled again, once; a bundle the caller gave is never
        touched."""
        bundle = self._bundle
        try:
            manifest = _manifest(bundle, whole=from_onnx)
            why = self._not_this_compile(manifest) if from_onnx else None
        except (_errors.DataCorrupt, _errors.Incompatible) as err:
            if not from_onnx:
                raise
            why = f"the cached bundle did not open: {err}"
        if why:
            log.warning("InferenceSession: cached bundle %s: %s; compiling it again", bundle, why)
            with contextlib.suppress(FileNotFoundError):  # another process may have removed or replaced it
                os.remove(bundle)
            self._compile.update(cache="rebuilt", rebuilt=why)
            self._run_compile(bundle)
            manifest = _manifest(bundle)
        if not from_onnx:
            self._check_bundle_policy(manifest, self._policy)
        engines = {v.get("engine", "") for v in manifest.get("variants", [])}
        load_engine = self._resolve_engine(engine, engines, device) if engine is not None else None
        self._session = Session(bundle, device, engine=load_engine, trusted_keys=trusted_keys,
                                require_signature=require_signature, fallback=fallback)
        self.inputs, self.outputs = self._session.inputs, self._session.outputs

    def _not_this_compile(self, manifest: dict) -> str | None:
        """Why a cached bundle is not the compile asked for (None when it is): its manifest must record the sha256
        of the model file asked for and the policy asked for (an entry planted or swapped under the key is not)."""
        provenance = manifest.get("provenance", {})
        recorded = provenance.get("source", {}).get("sha256")
        if recorded != self._source_sha256:
            return (f"it was compiled from another model (source sha256 {str(recorded)[:12]}..., not "
                    f"{self._source_sha256[:12]}...)")
        asked = json.loads(json.dumps(self._policy.to_json()))
        if provenance.get("policy", {}) != asked:
            return f"it was compiled with policy {provenance.get('policy')}, not {asked}"
        return None

    def _resolve_engine(self, engine: Knob, present: set[str], device: str) -> str | None:
        """The engine to pin in the runtime, or None (the bundle's order decides) after a recorded fallback."""
        name = engine.choice.lower()
        if name in present:
            return name
        reason = (_PLANNED_ENGINES[name] if name in _PLANNED_ENGINES else
                  f"engine {name!r} is not one this bundle has a variant for")
        reason += f"; variants for device {device} here use: {', '.join(sorted(present)) or 'none'}"
        if engine.mode == "fixed":
            raise _errors.Unavailable(f"engine {name!r} is fixed, but {reason}. Pass one of those engines, or let it "
                                      "fall back (a plain engine string)")
        self._fell_back("engine", name, "the bundle's order", reason)
        return None

    def _check_bundle_policy(self, manifest: dict, asked: Policy) -> None:
        """An .xrtpkg was compiled already: a policy given with it must be the one it was compiled with, when it
        has fixed knobs (else the difference is recorded)."""
        if not asked.to_json():
            return
        recorded = manifest.get("provenance", {}).get("policy", {})
        if recorded == asked.to_json():
            return
        fixed = [f"{k}={v.choice}" for section in (asked.kernel, asked.execution) for k, v in section.knobs.items()
                 if v.mode == "fixed"]
        reason = (f"the bundle was compiled with policy {recorded}, not {asked.to_json()}; a bundle's policy is fixed "
                  "at compile time")
        if fixed:
            raise _errors.Incompatible(f"{reason}, and {', '.join(fixed)} is fixed: give the .onnx model to compile "
                                       "with this policy, or recompile with xrtc compile --policy")
        self._fell_back("policy", asked.to_json(), recorded, reason)

    # -- running ----------------------------------------------------------------------------------------------

    def run(self, *args, **kwargs):
        """``run(feeds)`` -> {output name: array}, as ``xrt.load``'s sessions (``output_names=`` selects some);
        ``run(output_names, feeds)`` -> a list of arrays in the order of ``output_names`` (None: every output), as
        ONNX Runtime's ``InferenceSession.run``."""
        if len(args) == 2 and not kwargs:
            output_names, feeds = args
            if output_names is not None and (isinstance(output_names, str) or
                                             not isinstance(output_names, Sequence)):
                raise _errors.InvalidArgument(f"run(output_names, feeds): output_names must be a list of names or "
                                              f"None, got {output_names!r}")
            names = list(output_names) if output_names is not None else [o.name for o in self.outputs]
            results = self._session.run(feeds, output_names=names)
            return [results[n] for n in names]
        if len(args) == 1 and set(kwargs) <= {"output_names"}:
            return self._session.run(args[0], **kwargs)
        raise _errors.InvalidArgument("use run(feeds) (a dict of input name -> array) or run(output_names, feeds)")

    def get_inputs(self):
        return self.inputs

    def get_outputs(self):
        return self.outputs

    def explain(self) -> dict:
        """The runtime's explain() (variant, engine, device, why; ``decisions``: the plan that ran, per node) plus
        ``requested`` (what the caller asked), ``policy`` (the policy compiled with), ``fallbacks`` (each choice
        that did not hold: what, asked, used, reason) and ``compile`` (cache hit/miss/rebuilt/off/refused, key,
        bundle path, seconds compiling, why rebuilt or refused; None for an .xrtpkg)."""
        out = self._session.explain()
        compile_info = dict(self._compile) if self._compile else None
        out.update(requested=self._requested, policy=self._policy.to_json(), fallbacks=list(self._fallbacks),
                   compile=compile_info)
        return out

    @property
    def engine(self) -> str:
        return self._session.engine

    @property
    def bundle_path(self) -> str:
        return self._bundle

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> "InferenceSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<xpuruntime.InferenceSession model={self._requested['model']!r} variant={self._session.variant!r} "
                f"engine={self.engine!r}>")


def _owned(path: str) -> bool:
    """Whether this user owns `path` (a cache entry another user could have written is not trusted)."""
    return os.stat(path).st_uid == os.getuid()


@functools.lru_cache(maxsize=None)
def _compiler_digest() -> str:
    """sha256 over the installed xrtc package's .py files (relative path and bytes, sorted), once per process: a
    changed compiler never reuses a bundle the old one built. Found without importing xrtc."""
    import importlib.util

    spec = importlib.util.find_spec("xrtc")
    if spec is None or not spec.submodule_search_locations:
        return "not installed"
    h = hashlib.sha256()
    for root in sorted(spec.submodule_search_locations):
        files = []
        for folder, dirs, names in os.walk(root):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            files += [os.path.join(folder, n) for n in names if n.endswith(".py")]
        for file in sorted(files):
            h.update(os.path.relpath(file, root).encode() + b"\0")
            with open(file, "rb") as f:
                h.update(f.read())
            h.update(b"\0")
    return h.hexdigest()


def _host_fingerprint() -> str:
    """The CPU the bundle is compiled on (architecture and feature flags): engine-compiled blobs in a bundle depend
    on it, so a cache folder shared between machines keeps one entry per kind of CPU."""
    import platform

    flags = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            flags = next((line for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        pass
    return platform.machine() + ":" + hashlib.sha256(" ".join(sorted(flags.split())).encode()).hexdigest()[:16]


def _manifest(bundle: str, whole: bool = False) -> dict:
    """The bundle's manifest, opened by the runtime (corrupt bytes raise DataCorrupt). The runtime verifies sections
    on first use (formats/xrtpkg.md); with ``whole`` (a cache entry, which is compiled again when damaged) every
    section is verified now, by the Python reader."""
    if whole:
        import xrtpkg

        try:
            return xrtpkg.read(bundle).manifest
        except xrtpkg.FormatError as err:
            kind = _errors.Incompatible if err.status == "INCOMPATIBLE" else _errors.DataCorrupt
            raise kind(str(err)) from err
    from . import _core

    return json.loads(_core.Bundle(bundle, [], False).manifest)


def _compile_error(err, path: str, target: str) -> _errors.Error:
    """An xrtc error as the xpuruntime error a Python caller catches (xrt.Error), the message kept."""
    from xrtc import errors as x

    kind = {x.EXIT_USAGE: _errors.InvalidArgument, x.EXIT_MISMATCH: _errors.FailedPrecondition,
            x.EXIT_UNSUPPORTED: _errors.Unimplemented, x.EXIT_INCOMPATIBLE: _errors.Incompatible,
            x.EXIT_POLICY: _errors.FailedPrecondition}.get(err.exit_code, _errors.InvalidArgument)
    return kind(f"compiling {os.path.basename(path)} for target {target} failed: {err}")
