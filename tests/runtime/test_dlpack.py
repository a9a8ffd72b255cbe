"""The data plane from Python: DLPack inputs, outputs_on and stream (Session.run), on the sample model's CPU bundle.

CPU DLPack producers (numpy's own ``__dlpack__``, through an object that exposes only the protocol) must give the
same outputs as numpy arrays and as ONNX Runtime on the source model; a CUDA DLPack tensor handed to a cpu session
is refused naming the input and its device. The CUDA tensor is a real DLPack capsule built with ctypes (dlpack.h's
layout) over an address that is never read: the runtime refuses it before any engine runs, as it must on a machine
without a GPU.
"""

from __future__ import annotations

import ctypes

import numpy as np
import onnxruntime
import pytest

import xpuruntime as xrt
from xrt_testutil import SAMPLE

ENGINES = ["openvino", "onnxruntime"]


class DlpackOnly:
    """A CPU tensor that is reachable only through the DLPack protocol (no buffer protocol, no __array__): what a
    torch or jax CPU tensor looks like to the runtime."""

    def __init__(self, array: np.ndarray):
        self._array = array

    def __dlpack__(self, **kwargs):
        return self._array.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._array.__dlpack_device__()

    @property
    def flags(self):
        return self._array.flags


class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", _DLDevice), ("ndim", ctypes.c_int32),
                ("dtype", _DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


class _DLManagedTensor(ctypes.Structure):
    _fields_ = [("dl_tensor", _DLTensor), ("manager_ctx", ctypes.c_void_p), ("deleter", ctypes.c_void_p)]


class CudaDlpack:
    """A float32 CUDA tensor (DLPack device type 2) as torch.cuda exports it: ``__dlpack__(stream=...)`` returns an
    unversioned "dltensor" capsule. Its data address is never dereferenced (no GPU here)."""

    def __init__(self, shape, device_id=0):
        self._shape = (ctypes.c_int64 * len(shape))(*shape)
        self._managed = _DLManagedTensor()
        t = self._managed.dl_tensor
        t.data = 0x7F0000000000  # an address in device memory, as a producer would give
        t.device = _DLDevice(2, device_id)
        t.ndim = len(shape)
        t.dtype = _DLDataType(2, 32, 1)  # kDLFloat, 32 bits
        t.shape = self._shape
        self.streams = []

    def __dlpack__(self, stream=None, **kwargs):
        self.streams.append(stream)
        new_capsule = ctypes.pythonapi.PyCapsule_New
        new_capsule.restype = ctypes.py_object
        new_capsule.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
        return new_capsule(ctypes.addressof(self._managed), b"dltensor", None)

    def __dlpack_device__(self):
        return (2, self._managed.dl_tensor.device.device_id)

    def is_contiguous(self):
        return True


def reference(feeds):
    sess = onnxruntime.InferenceSession(str(SAMPLE), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))


def image(batch=2, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, 3, 64, 64), dtype=np.float32)


@pytest.mark.parametrize("engine", ENGINES)
def test_cpu_dlpack_inputs_match_numpy_and_onnxruntime(sample_bundle, engine):
    sess = xrt.load(sample_bundle, engine=engine)
    x = image()
    from_numpy = sess.run({"image": x})["probabilities"]
    from_dlpack = sess.run({"image": DlpackOnly(x)})["probabilities"]
    strided = np.asfortranarray(x)  # a CPU DLPack tensor that is not C-contiguous: one copy, then the same run
    from_strided = sess.run({"image": DlpackOnly(strided)})["probabilities"]
    ref = reference({"image": x})["probabilities"]
    err = float(np.abs(from_dlpack - ref).max())
    print(f"{engine}: DLPack input vs ONNX Runtime on the source model: max abs err {err:.3e}")
    assert isinstance(from_dlpack, np.ndarray)
    assert np.array_equal(from_dlpack, from_numpy)
    assert np.array_equal(from_strided, from_numpy)
    assert err < 1e-5


@pytest.mark.parametrize("engine", ENGINES)
def test_outputs_on_device_of_a_cpu_session_are_host_numpy(sample_bundle, engine):
    sess = xrt.load(sample_bundle, engine=engine)
    x = image(3, seed=1)
    host = sess.run({"image": x})["probabilities"]
    device = sess.run({"image": DlpackOnly(x)}, outputs_on="device")["probabilities"]
    assert isinstance(device, np.ndarray)
    assert np.array_equal(device, host)


@pytest.mark.parametrize("engine", ENGINES)
def test_cuda_tensor_on_a_cpu_session_is_refused_naming_input_and_device(sample_bundle, engine):
    sess = xrt.load(sample_bundle, engine=engine)
    tensor = CudaDlpack((1, 3, 64, 64))
    with pytest.raises(xrt.Unimplemented) as err:
        sess.run({"image": tensor})
    message = str(err.value)
    print(message)
    assert 'input "image" is in cuda:0 memory' in message
    assert f"engine {engine}" in message and "takes only host memory" in message
    assert tensor.streams == [1], "exported for the legacy default stream when no stream is given"
    # The session still runs host tensors afterwards.
    assert sess.run({"image": image(1)})["probabilities"].shape == (1, 10)


def test_stream_and_outputs_on_are_checked(sample_bundle):
    sess = xrt.load(sample_bundle, engine="openvino")
    x = image(1)
    with pytest.raises(xrt.InvalidArgument, match="a stream was given, but engine openvino"):
        sess.run({"image": x}, stream=0x1234)
    with pytest.raises(xrt.InvalidArgument, match="outputs_on must be 'host'"):
        sess.run({"image": x}, outputs_on="gpu")
    with pytest.raises(xrt.InvalidArgument, match="stream must be a CUstream handle"):
        sess.run({"image": x}, stream="default")
    with pytest.raises(xrt.InvalidArgument, match="DLPack device type 4"):
        sess.run({"image": _OtherDevice()})


class _OtherDevice:
    """A tensor on a device the runtime does not take (DLPack kDLOpenCL)."""

    def __dlpack__(self, **kwargs):
        raise AssertionError("never exported: refused by its device type")

    def __dlpack_device__(self):
        return (4, 0)
