"""The ONNX Runtime backend checks a bundle's ONNX artifact without importing the onnx package (issue 16, load cost:
`import onnx` is ~14 MB of RSS and 0.3-1.7 s on a cold process, mostly ml_dtypes): xpuruntime.onnx_tensors parses with
onnx's generated protobuf module alone. Each case runs in a fresh interpreter, since the point is what is imported."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _model_bytes() -> bytes:
    weight = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], [weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def _fresh(code: str, model: bytes, tmp_path) -> str:
    path = tmp_path / "m.onnx"
    path.write_bytes(model)
    proc = subprocess.run([sys.executable, "-P", "-c", textwrap.dedent(code), str(path)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_check_inline_does_not_import_onnx_and_returns_onnx_model_proto(tmp_path):
    out = _fresh("""
        import sys
        from pathlib import Path
        from xpuruntime.onnx_tensors import check_inline
        model = check_inline(Path(sys.argv[1]).read_bytes())
        print("onnx" in sys.modules, "ml_dtypes" in sys.modules, end=" ")
        import onnx  # afterwards: the same class, no descriptor-pool conflict
        print(type(model) is onnx.ModelProto, model.graph.initializer[0].name)
        """, _model_bytes(), tmp_path)
    assert out == "False False True w"


def test_onnx_imported_first_gives_the_same_class(tmp_path):
    out = _fresh("""
        import sys
        from pathlib import Path
        import onnx
        from xpuruntime.onnx_tensors import check_inline
        print(type(check_inline(Path(sys.argv[1]).read_bytes())) is onnx.ModelProto)
        """, _model_bytes(), tmp_path)
    assert out == "True"


def test_not_a_model_is_refused_as_before(tmp_path):
    from xpuruntime.onnx_tensors import ExternalDataError, check_inline

    for junk in (b"\xff" * 64, _model_bytes() + b"\x07"):  # not protobuf; a model with a truncated field after it
        try:
            check_inline(junk)
        except ExternalDataError as err:
            assert "not an ONNX model" in str(err)
        else:
            raise AssertionError(f"accepted {junk[:8]!r}")
    assert isinstance(check_inline(_model_bytes()), onnx.ModelProto)
