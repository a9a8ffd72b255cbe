"""Compares outputs saved by `xrt-run --save-outputs` with ONNX Runtime CPU fp32 on the source model and the same
inputs: prints the relative error ||out - ref|| / ||ref|| and the max abs error per output; exits 1 over --rtol.

    python3 compare.py MODEL.onnx INPUTS.npz OUTPUTS.npz [--rtol 5e-3] [--label fp16]
    python3 compare.py MODEL.onnx INPUTS.npz --make-inputs [--seed 1]   (random inputs from the model's input info;
                                                                         int inputs in [0, 100), masks of ones)
"""
import argparse
import sys

import numpy as np
import onnxruntime as ort


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("inputs")
    ap.add_argument("outputs", nargs="?")
    ap.add_argument("--make-inputs", action="store_true")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rtol", type=float, default=5e-3)
    ap.add_argument("--label", default="")
    a = ap.parse_args()
    if a.make_inputs:
        import onnx
        from onnx import helper
        rng = np.random.default_rng(a.seed)
        feeds = {}
        for i in onnx.load(a.model, load_external_data=False).graph.input:
            t = i.type.tensor_type
            shape = [d.dim_value for d in t.shape.dim]
            dtype = helper.tensor_dtype_to_np_dtype(t.elem_type)
            if np.issubdtype(dtype, np.integer):
                feeds[i.name] = (np.ones(shape, dtype) if "mask" in i.name else rng.integers(0, 100, shape).astype(dtype))
            else:
                feeds[i.name] = rng.standard_normal(shape).astype(dtype)
        np.savez(a.inputs, **feeds)
        return 0
    feeds = dict(np.load(a.inputs))
    sess = ort.InferenceSession(a.model, providers=["CPUExecutionProvider"])
    refs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
    got = dict(np.load(a.outputs))
    ok = True
    for name, ref in refs.items():
        if name not in got:
            print(f"{a.label} {name}: MISSING from {a.outputs}")
            ok = False
            continue
        out = got[name].astype(np.float64)
        ref = ref.astype(np.float64)
        if out.shape != ref.shape:
            print(f"{a.label} {name}: shape {out.shape} != reference {ref.shape}")
            ok = False
            continue
        rel = float(np.linalg.norm(out - ref) / max(np.linalg.norm(ref), 1e-30))
        finite = bool(np.isfinite(out).all())
        print(f"{a.label} {name}: rel_err {rel:.3e} max_abs {float(np.abs(out - ref).max()):.3e} "
              f"finite {finite} (rtol {a.rtol:g})")
        ok = ok and finite and rel <= a.rtol
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
