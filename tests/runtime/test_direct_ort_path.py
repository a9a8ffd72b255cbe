"""run() on an ONNX Runtime CPU variant calls ONNX Runtime's session directly (Session._run_direct, no hop through the
C++ core): same outputs as the core's path, and bad inputs still raise the core's typed errors (the direct call
falls back to the core's path wherever ONNX Runtime refuses). ~5 s."""

from __future__ import annotations

import types

import numpy as np
import pytest

import xpuruntime as xrt


@pytest.fixture(scope="module")
def sessions(sample_bundle):
    ort = xrt.load(sample_bundle, engine="onnxruntime")
    ov = xrt.load(sample_bundle, engine="openvino")
    yield ort, ov
    ort.close()
    ov.close()


def _feeds(session, seed=0):
    rng = np.random.default_rng(seed)
    return {i.name: rng.standard_normal([d if isinstance(d, int) else 1 for d in i.shape]).astype(i.dtype)
            for i in session.inputs}


def test_direct_path_is_taken_only_for_onnxruntime_cpu(sessions):
    ort, ov = sessions
    assert ort.engine == "onnxruntime" and ort._direct is not None
    assert ov.engine == "openvino" and ov._direct is None


def test_same_outputs_as_the_core_path(sessions):
    ort, ov = sessions
    feeds = _feeds(ort)
    direct = ort.run(feeds)
    # a read-only mapping is not a dict: the call goes through the C++ core and the backend's callback
    through_core = ort.run(types.MappingProxyType(feeds))
    assert list(direct) == [o.name for o in ort.outputs] == list(through_core)
    for name in direct:
        assert direct[name].dtype == through_core[name].dtype
        np.testing.assert_array_equal(direct[name], through_core[name])
    np.testing.assert_allclose(direct[ort.outputs[0].name], ov.run(feeds)[ov.outputs[0].name], rtol=1e-3, atol=1e-4)
    only = ort.run(feeds, [ort.outputs[0].name])
    assert list(only) == [ort.outputs[0].name]
    with pytest.raises(xrt.InvalidArgument, match="unknown output"):
        ort.run(feeds, ["nope"])


def test_bad_inputs_raise_the_cores_typed_errors(sessions):
    ort, ov = sessions
    name = ort.inputs[0].name
    good = _feeds(ort)
    bad_cases = [
        {name: good[name].astype(np.float64)},  # wrong dtype
        {name: good[name][..., :-1].copy()},  # wrong static dim
        {name: good[name][0].copy()},  # wrong rank
        {"not_an_input": good[name]},  # unknown name, right count
        {},  # missing
    ]
    for feeds in bad_cases:
        with pytest.raises(xrt.InvalidArgument) as direct_err:
            ort.run(feeds)
        with pytest.raises(xrt.InvalidArgument) as core_err:
            ov.run(feeds)  # the core's check, on an engine without the direct path
        assert str(direct_err.value) == str(core_err.value), feeds


def test_closed_session_refuses(sample_bundle):
    session = xrt.load(sample_bundle, engine="onnxruntime")
    feeds = _feeds(session)
    session.run(feeds)
    session.close()
    with pytest.raises(xrt.FailedPrecondition):
        session.run(feeds)
