"""`xrtc inspect`: what is inside a bundle, for which devices, which decisions and why."""

from __future__ import annotations

import json
import sys

from .. import weight_store
from ..errors import IncompatibleError, XrtcError


def _shape_text(shape) -> str:
    if shape is None:
        return "[unknown rank]"
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def read_bundle(path: str):
    """xrtpkg.read with full verification; FormatError -> IncompatibleError (5) or XrtcError (1), with status."""
    import xrtpkg

    try:
        return xrtpkg.read(path)
    except xrtpkg.FormatError as err:
        kind = IncompatibleError if err.status == "INCOMPATIBLE" else XrtcError
        raise kind(f"{path}: {err.status}: {err.message}") from err
    except FileNotFoundError as err:
        raise XrtcError(f"{path}: no such file") from err
    except IsADirectoryError as err:
        raise XrtcError(f"{path}: is a folder, not a bundle") from err
    except OSError as err:
        raise XrtcError(f"{path}: cannot read: {err.strerror or err}") from err


def describe(path: str, bundle) -> dict:
    """The JSON form of `xrtc inspect --json` (stable keys)."""
    return {
        "file": path,
        "version": f"{bundle.major}.{bundle.minor}",
        "file_size": bundle.file_size,
        # Ed25519 public key (hex) whose signature was verified, or null; who holds it is not checked here.
        "signer": bundle.signer.hex() if getattr(bundle, "signer", None) else None,
        "sections": [{"name": s.name, "compressed": s.compressed, "stored_size": s.stored_size, "size": s.size,
                      "sha256": s.sha256} for s in bundle.sections],
        "manifest": bundle.manifest,
    }


def render_text(info: dict) -> str:
    m = info["manifest"]
    lines = [f"bundle   {info['file']}", f"format   xrtpkg {info['version']}, {info['file_size']} bytes"]
    if info.get("signer"):
        lines.append(f"signed   ed25519 key {info['signer']} (signature valid; to require this signer, pass "
                     "--trusted-key to xrtc run/verify)")
    else:
        lines.append("signed   no")
    model = m.get("model", {})
    lines.append(f"model    {model.get('name', '?')}")
    for role in ("inputs", "outputs"):
        for t in model.get(role, []):
            if "type" in t:  # a sequence, map or optional (formats/xrtpkg.md, "Value types")
                from xpuruntime._session import render_type

                try:
                    text = render_type(t["type"])
                except (AttributeError, KeyError, TypeError, ValueError):
                    text = "malformed type (the runtime refuses this bundle)"
                lines.append(f"  {role[:-1]:<7} {t.get('name')}: {text} (runs from Python only, on ONNX Runtime)")
                continue
            lines.append(f"  {role[:-1]:<7} {t.get('name')}: {t.get('dtype')} {_shape_text(t.get('shape'))}"
                         + (f" (the source model declares {_shape_text(t['declared_shape'])}, which it does not "
                            "produce)" if "declared_shape" in t else ""))
    if m.get("unverified"):
        lines.append(f"verified NO: compiled with {m['unverified'].get('requested', '--allow-unverified')}: "
                     f"{m['unverified'].get('reason', '')}")
    lines.append(f"sections ({len(info['sections'])})")
    lines.append(f"  {'name':<28} {'zstd':<4} {'stored':>12} {'size':>12}  sha256")
    for s in info["sections"]:
        lines.append(f"  {s['name']:<28} {'yes' if s['compressed'] else 'no':<4} {s['stored_size']:>12} "
                     f"{s['size']:>12}  {s['sha256'][:16]}")
    lines.extend(weight_store.describe(m, info["sections"]))
    lines.append("variants (preference order)")
    for i, v in enumerate(m.get("variants", []), 1):
        req = v.get("requires", {})
        lines.append(f"  {i}. {v.get('id')}: engine {v.get('engine')}, device {v.get('device')}, precision "
                     f"{v.get('precision')}, requires {req.get('engine')} {req.get('engine_version', '')} on "
                     f"{', '.join(req.get('devices', []))}")
        lines.append(f"     artifacts {json.dumps(v.get('artifacts', {}), sort_keys=True)}, options "
                     f"{json.dumps(v.get('options', {}), sort_keys=True)}")
        if v.get("fallback_devices"):
            lines.append(f"     falls back to: {', '.join(v['fallback_devices'])} (same artifacts, where "
                         f"{v.get('device')} is absent)")
        acc = v.get("accuracy")
        if acc:
            errs = ", ".join(f"{k} {e:.3g}" for k, e in acc.get("max_abs_err", {}).items())
            lines.append(f"     accuracy: {'pass' if acc.get('passed') else 'FAIL'}, max abs err {errs} vs ONNX "
                         f"Runtime (rtol {acc.get('rtol')}, atol {acc.get('atol')}; ran on {acc.get('ran_on', '?')})")
            if acc.get("method"):  # NPU variants: how their fp16 arithmetic was measured without an NPU
                lines.append(f"       measured as: {acc['method']}")
        elif m.get("unverified"):
            lines.append("     accuracy: NOT VERIFIED (see `verified` above)")
        else:  # bundles from before the gate was required
            lines.append("     accuracy: not measured at compile (no record in the bundle)")
        lines.append(f"     why: {v.get('why', '')}")
    excluded = m.get("excluded", [])
    lines.append(f"excluded ({len(excluded)})")
    for e in excluded:
        lines.append(f"  {e.get('target')}-{e.get('engine')}: {e.get('reason')}")
    prov = m.get("provenance", {})
    src = prov.get("source", {})
    lines.append("provenance")
    lines.append(f"  source   {src.get('name')} (sha256 {str(src.get('sha256', ''))[:16]}, opset {src.get('opset')}, "
                 f"producer {src.get('producer') or '?'})")
    lines.append(f"  command  {prov.get('command')}")
    tools = prov.get("tools", {})
    lines.append("  tools    " + ", ".join(f"{k} {tools[k]}" for k in sorted(tools)))
    lines.append(f"  policy   {json.dumps(prov.get('policy', {}), sort_keys=True)}")
    for p in prov.get("passes", []):
        extra = f", removed {p['removed_count']}" if p.get("removed_count") else ""
        if p.get("rolled_back"):
            lines.append(f"  pass     {p.get('name')}: ROLLED BACK ({p['rolled_back']})")
            continue
        lines.append(f"  pass     {p.get('name')}: {p.get('nodes_before')} -> {p.get('nodes_after')} nodes, "
                     f"changed {p.get('changed')}{extra}")
    return "\n".join(lines)


class Inspect:
    """Show what is inside a .xrtpkg bundle: header, sections, model inputs/outputs, variants in preference order
    (with why), excluded variants and provenance.

    The bundle is fully verified first (checksums, layout); a bad bundle fails with the reader's status
    (DATA_CORRUPT, INCOMPATIBLE: exit code 5, RESOURCE_EXHAUSTED).
    """

    name = "inspect"

    def add_args(self, parser) -> None:
        parser.add_argument("bundle", metavar="BUNDLE.xrtpkg", help="the bundle to inspect")
        parser.add_argument("--json", action="store_true", help="print one JSON object (stable keys) instead of text")

    def run(self, args) -> int:
        info = describe(args.bundle, read_bundle(args.bundle))
        if args.json:
            print(json.dumps(info, indent=2, sort_keys=True, ensure_ascii=False))
        else:
            print(render_text(info))
        sys.stdout.flush()
        return 0
