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


def compare(variant: str, name: str, got: np.ndarray, ref: np.ndarray, rtol: float, atol: float) -> Comparison:
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
