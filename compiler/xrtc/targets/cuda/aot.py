"""Ahead-of-time compilation of the generated Triton kernels to cubins (per architecture) and PTX, on a machine
without a GPU: `triton.compile(ASTSource(...), target=GPUTarget("cuda", cc, 32))`. Triton is imported lazily and
pinned (TRITON_VERSION); a different installed version is refused, since the parameter list and the image format
are version-specific.

Loading a generated source: Triton reads a kernel's source through `inspect`, so each source is written to a file
named by its sha256 in a private folder and imported from there (in the interpreter too, with TRITON_INTERPRET=1).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import sys
import tempfile
import threading

from ...errors import UnsupportedError, UsageError

TRITON_VERSION = "3.6.0"
# arch name -> (compute capability, cubin arch string). sm_90a: Hopper with wgmma (cubins run only on 9.0).
ARCHS = {"sm_80": 80, "sm_86": 86, "sm_89": 89, "sm_90a": 90}
PTX_ARCH = "sm_80"  # the "ptx" image: PTX built for sm_80, JIT-compiled by the driver on any newer GPU
_TT = {"float16": "fp16", "float32": "fp32", "bfloat16": "bf16", "int64": "i64", "int32": "i32", "bool": "i1",
       "int8": "i8", "uint8": "u8"}

_lock = threading.Lock()
_modules: dict[tuple[str, bool], object] = {}
_compiled: dict[tuple, dict] = {}
_folder = None


def require_triton():
    try:
        import triton
    except ImportError as err:
        raise UnsupportedError("--target cuda needs Triton " + TRITON_VERSION + " to generate its kernels: "
                               "pip install 'xpuruntime[cuda-compile]'") from err
    if triton.__version__ != TRITON_VERSION:
        raise UnsupportedError(f"--target cuda is pinned to Triton {TRITON_VERSION} (kernel parameter lists and "
                               f"images are version-specific); installed: {triton.__version__}. pip install "
                               f"triton=={TRITON_VERSION}")
    return triton


def parse_archs(text: str | None) -> list[str]:
    if not text:
        return ["sm_90a"]
    names = [a.strip() for a in text.split(",") if a.strip()]
    bad = [a for a in names if a not in ARCHS]
    if bad or not names or len(set(names)) != len(names):
        raise UsageError(f"--arch {text!r}: give architectures once each from {', '.join(ARCHS)} (e.g. sm_90a,sm_80)")
    return names


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def load_kernel(source: str, interpret: bool = False):
    """The `kernel` function of a generated source (a JITFunction, or Triton's interpreter function)."""
    global _folder
    key = (sha256(source), interpret)
    with _lock:
        if key in _modules:
            return _modules[key]
        if _folder is None:
            _folder = tempfile.mkdtemp(prefix="xrtc-triton-")
        name = f"xrt_{'i' if interpret else 'k'}_{key[0][:24]}"
        path = os.path.join(_folder, name + ".py")
        with open(path, "w", encoding="utf-8") as f:
            f.write(source)
        old = os.environ.get("TRITON_INTERPRET")
        os.environ["TRITON_INTERPRET"] = "1" if interpret else "0"
        try:
            require_triton()
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        finally:
            if old is None:
                os.environ.pop("TRITON_INTERPRET", None)
            else:
                os.environ["TRITON_INTERPRET"] = old
        _modules[key] = module.kernel
        return module.kernel


def waits_for_prior_grid(arch: str) -> bool:
    """Whether a kernel image for `arch` starts with griddepcontrol.wait (codegen's GDC): sm_90 and newer have
    programmatic dependent launch; the PTX image (sm_80) does not, so the driver's JIT of it never does."""
    return ARCHS[arch] >= 90


def compile_kernel(source: str, param_dtypes: list[str], arch: str, num_warps: int, num_stages: int) -> dict:
    """{"cubin": bytes, "ptx": str, "name", "shared", "num_warps", "params": int} for one architecture. Every pointer
    is declared 16-byte aligned (tt.divisibility 16): the plan places every buffer at a 256-byte boundary and the
    plugin allocates inputs/outputs the same way (PLAN.md). There are no integer arguments (static shapes)."""
    triton = require_triton()
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    key = (sha256(source), tuple(param_dtypes), arch, num_warps, num_stages)
    with _lock:
        if key in _compiled:
            return _compiled[key]
    fn = load_kernel(source)
    signature = {f"P{i}": "*" + _TT[d] for i, d in enumerate(param_dtypes)}
    signature["GDC"] = "constexpr"
    attrs = {(i,): [["tt.divisibility", 16]] for i in range(len(param_dtypes))}
    k = triton.compile(ASTSource(fn=fn, signature=signature, constexprs={"GDC": waits_for_prior_grid(arch)},
                                 attrs=attrs),
                       target=GPUTarget("cuda", ARCHS[arch], 32),
                       options={"num_warps": num_warps, "num_stages": num_stages})
    if k.metadata.global_scratch_size or k.metadata.profile_scratch_size:
        raise UnsupportedError(f"a generated kernel needs Triton global scratch ({k.metadata.global_scratch_size} "
                               "bytes), which the cuda plugin does not provide; this is a bug in xrtc's codegen")
    ptx = k.asm["ptx"]
    entry = re.search(r"\.entry\s+(\w+)\(([^)]*)\)", ptx)
    nparams = entry.group(2).count(".param") if entry else -1
    out = {"cubin": bytes(k.asm["cubin"]), "ptx": ptx, "name": k.metadata.name, "shared": int(k.metadata.shared),
           "num_warps": int(k.metadata.num_warps), "params": nparams}
    with _lock:
        _compiled[key] = out
    return out


def cuobjdump() -> str:
    """The cuobjdump the triton wheel ships."""
    triton = require_triton()
    path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    if not os.path.exists(path):
        raise UnsupportedError(f"cuobjdump not found in the triton wheel ({path})")
    return path


def sass(cubin: bytes) -> str:
    """The SASS of a cubin (cuobjdump -sass)."""
    import subprocess

    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(cubin)
        path = f.name
    try:
        return subprocess.run([cuobjdump(), "-sass", path], capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(path)
