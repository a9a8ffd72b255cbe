"""atheris target for the ONNX Runtime backend's hand-off checks (SECURITY.md, "The engine boundary"): the variant
options allow-list (xpuruntime._ort_backend.session_options) and the ONNX artifact check with its external-data
walk (xpuruntime.onnx_tensors.check_inline), on the same bytes. A refusal must be the typed error (InvalidArgument,
ExternalDataError); any other exception, a hang or an OOM is a finding. Accepted options must hold a thread count
within the CPUs here.

Run through scripts/fuzz.sh (target python_engine), or by hand with the installed package:
    .venv/bin/python -P tests/security/fuzz_engine_boundary.py -max_total_time=60 CORPUS_DIR SEED_DIR
Seeds: the ONNX artifacts of the seed bundles and the hostile models of tests/security/hostile.py.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    import xpuruntime
    from xpuruntime import _ort_backend, onnx_tensors

_CPUS = _ort_backend.usable_cpus()
_STORE = bytes(4096)


def TestOneInput(data: bytes) -> None:  # noqa: N802 (atheris' name)
    try:
        onnx_tensors.check_inline(data)
    except onnx_tensors.ExternalDataError as err:
        assert str(err), "a refusal says why"
    # With a weight store (format 1.2): accepted references give in-bounds views of exactly `length` bytes.
    try:
        model = onnx_tensors.check_inline(data, len(_STORE))
        names, arrays = onnx_tensors.store_arrays(model, _STORE)
        assert len(names) == len(arrays) and all(a.nbytes <= len(_STORE) for a in arrays)
    except onnx_tensors.ExternalDataError as err:
        assert str(err), "a refusal says why"
    text = data.decode("utf-8", "replace")
    try:
        so = _ort_backend.session_options(text)
    except xpuruntime.InvalidArgument as err:
        assert err.message.startswith("onnxruntime: ")
    else:
        assert 0 <= so.intra_op_num_threads <= _CPUS


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
