"""How xrtc compares an engine's output with the reference (ONNX Runtime on the source model): used by the
accuracy gate, --validate-passes and `xrtc verify`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


# Elementwise |got - ref| <= atol_eff + rtol * |ref|, with atol_eff = atol * max(1, max|ref|) so that outputs of
# large magnitude (logits, pixel-scale maps) are judged relative to their scale. Defaults per precision live with the
# policy (xpuruntime.policy.DEFAULT_TOLERANCES); as (rtol, atol) pairs here.
def default_tolerance(precision: str) -> tuple[float, float]:
    """(rtol, atol) for a variant precision (fp32 for unknown ones)."""
    from xpuruntime.policy import DEFAULT_TOLERANCES

    tol = DEFAULT_TOLERANCES.get(precision, DEFAULT_TOLERANCES["fp32"])
    return tol["rtol"], tol["atol"]


@dataclass
class Comparison:
    variant: str
    output: str
    max_abs_err: float
    max_rel_err: float
    worst_index: list
    rtol: float
    atol: float
    passed: bool
    note: str = ""


def _leaves(value, path: str, out: list) -> None:
    """(path, leaf) pairs of a sequence (list), map (dict: keys in sorted order), optional (None) or tensor."""
    if isinstance(value, list):
        out.append((f"{path}#len", len(value)))
        for i, v in enumerate(value):
            _leaves(v, f"{path}[{i}]", out)
    elif isinstance(value, dict):
        out.append((f"{path}#keys", sorted(value, key=repr)))
        for k in sorted(value, key=repr):
            _leaves(value[k], f"{path}[{k!r}]", out)
    elif value is None:
        out.append((f"{path}#none", None))
    else:
        out.append((path, np.asarray(value)))


def _compare_values(variant: str, name: str, got, ref, rtol: float, atol: float) -> Comparison:
    """Sequences, maps and optionals: the structure (lengths, map keys, None) must be identical; string leaves
    must be equal; numeric leaves are compared together with the tensor rule below (per-key map values included)."""
    g_leaves, r_leaves = [], []
    _leaves(got, "", g_leaves)
    _leaves(ref, "", r_leaves)
    numeric_g, numeric_r = [], []
    for (gp, gv), (rp, rv) in zip(g_leaves, r_leaves):
        structural = gp != rp or not isinstance(rv, np.ndarray) or not isinstance(gv, np.ndarray)
        if structural and (gp != rp or gv != rv):
            return Comparison(variant, name, float("inf"), float("inf"), [], rtol, atol, False,
                              f"structure differs at {rp or 'top'}: got {str(gv)[:60]}, reference {str(rv)[:60]}")
        if structural:
            continue
        if gv.shape != rv.shape:
            return Comparison(variant, name, float("inf"), float("inf"), [], rtol, atol, False,
                              f"at {rp}: got shape {list(gv.shape)}, reference {list(rv.shape)}")
        if rv.dtype.kind in "OUS" or gv.dtype.kind in "OUS":
            if gv.tolist() != rv.tolist():
                return Comparison(variant, name, float("inf"), float("inf"), [], rtol, atol, False,
                                  f"at {rp}: strings differ")
            continue
        numeric_g.append(gv.astype(np.float64).ravel())
        numeric_r.append(rv.astype(np.float64).ravel())
    if len(g_leaves) != len(r_leaves):
        return Comparison(variant, name, float("inf"), float("inf"), [], rtol, atol, False, "structure differs")
    if not numeric_r:
        return Comparison(variant, name, 0.0, 0.0, [], rtol, atol, True, "structure and strings equal")
    c = compare(variant, name, np.concatenate(numeric_g), np.concatenate(numeric_r), rtol, atol)
    c.note = "per element of the structure" + (f"; {c.note}" if c.note else "")
    return c


def compare(variant: str, name: str, got, ref, rtol: float, atol: float) -> Comparison:
    """One output against its reference. Tensors: the rule above (integers, bools and strings exactly); sequences,
    maps and optionals: `_compare_values`."""
    if not isinstance(got, np.ndarray) or not isinstance(ref, np.ndarray):
        return _compare_values(variant, name, got, ref, rtol, atol)
    if ref.dtype.kind in "OUS" and got.dtype.kind in "OUS" and got.shape == ref.shape:
        diff = np.array([a != b for a, b in zip(got.ravel().tolist(), ref.ravel().tolist())], dtype=bool)
        bad = int(diff.sum())
        idx = list(np.unravel_index(int(np.argmax(diff)), got.shape)) if bad else []
        return Comparison(variant, name, float(bad), float(bad), [int(i) for i in idx], 0.0, 0.0, bad == 0,
                          "exact match required for string outputs" + (f": {bad} differ" if bad else ""))
    if got.shape != ref.shape or got.dtype != ref.dtype:
        return Comparison(variant, name, float("inf"), float("inf"), [], rtol, atol, False,
                          f"got {got.dtype}{list(got.shape)}, reference {ref.dtype}{list(ref.shape)}")
    if got.size == 0:
        return Comparison(variant, name, 0.0, 0.0, [], rtol, atol, True, "empty")
    if got.dtype.kind not in "fc":
        diff = got != ref
        bad = int(diff.sum())
        idx = list(np.unravel_index(int(np.argmax(diff)), got.shape)) if bad else []
        return Comparison(variant, name, float(bad), float(bad), [int(i) for i in idx], 0.0, 0.0, bad == 0,
                          "exact match required for integer/bool outputs" + (f": {bad} differ" if bad else ""))
    g = got.astype(np.float64)
    r = ref.astype(np.float64)
    # Equal values match, infinities of the same sign (masked attention scores are -inf) and NaN where the
    # reference has NaN included; any other NaN or infinity is an infinite error. The tolerance scales with the
    # reference's finite values only, so an infinity elsewhere in the output cannot widen it.
    same = (g == r) | (np.isnan(g) & np.isnan(r))
    with np.errstate(invalid="ignore"):
        err = np.where(same, 0.0, np.abs(g - r))
    err = np.where(np.isnan(err), np.inf, err)
    finite_r = np.abs(np.where(np.isfinite(r), r, 0.0))
    scale = max(1.0, float(finite_r.max()))
    limit = atol * scale + rtol * finite_r
    excess = err - limit
    worst = int(np.argmax(excess))
    passed = bool((excess <= 0).all())
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.where(same, 0.0, err / np.maximum(np.abs(r), 1e-12))
    return Comparison(variant, name, float(err.max()), float(rel.flat[int(np.argmax(err))]),
                      [int(i) for i in np.unravel_index(worst, got.shape)], rtol, atol, passed,
                      "" if passed else f"worst: got {float(got.flat[worst]):.6g}, reference "
                      f"{float(ref.flat[worst]):.6g}")
