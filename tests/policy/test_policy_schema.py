"""The policy model: Python objects and the TOML file, validated against the schema with errors that name the key,
the bad value and the allowed values."""

from __future__ import annotations

import pytest

import xpuruntime as xrt
from xpuruntime.policy import ExecutionPolicy, KernelPolicy, Knob, Policy, PolicyError

ISSUE_EXAMPLE = """
[kernel]
matmul = "cublasLt"                                  # short form: mode "prefer"
attention = { choice = "flash_v2", mode = "fixed" }
[execution]
precision = { choice = "fp16", mode = "prefer" }     # fp32 | tf32 | fp16 | bf16 | int8
static_shape = true
[tolerance]
fp16 = { rtol = 1e-2, atol = 1e-3 }
"""


def write(tmp_path, text: str) -> str:
    path = tmp_path / "policy.toml"
    path.write_text(text)
    return str(path)


def test_issue_example_parses_with_short_and_long_forms(tmp_path):
    policy = Policy.from_toml(write(tmp_path, ISSUE_EXAMPLE))
    assert policy.kernel.get("matmul") == Knob("cublasLt", "prefer")
    assert policy.kernel.get("attention") == Knob("flash_v2", "fixed")
    assert policy.kernel.get("conv") == Knob("engine", "prefer")  # unset: the engine's own kernel
    assert policy.execution.get("precision") == Knob("fp16", "prefer")
    assert policy.execution.get("static_shape") == Knob(True, "prefer")
    assert policy.tolerance_for("fp16") == {"rtol": 1e-2, "atol": 1e-3}
    assert policy.tolerance_for("int8") == {"rtol": 1e-1, "atol": 5e-2}  # default


def test_python_objects_equal_the_file(tmp_path):
    from_file = Policy.from_toml(write(tmp_path, ISSUE_EXAMPLE))
    from_code = Policy(kernel=xrt.KernelPolicy(matmul="cublasLt", attention=Knob("flash_v2", "fixed")),
                       execution=xrt.ExecutionPolicy(precision={"choice": "fp16", "mode": "prefer"},
                                                     static_shape=True),
                       tolerance={"fp16": {"rtol": 1e-2, "atol": 1e-3}})
    assert from_code.to_json() == from_file.to_json()
    # to_toml writes a file that reads back to an equal policy
    again = Policy.from_toml(write(tmp_path, from_code.to_toml()))
    assert again.to_json() == from_code.to_json()


@pytest.mark.parametrize("text, expected", [
    ('[execution]\nprecision = "fp8"', ['[execution] precision = "fp8"', "fp32, tf32, fp16, bf16, int8"]),
    ('[kernel]\nmatmul = { choice = "cublasLt", mode = "always" }', ['mode = "always"', "fixed, prefer, auto"]),
    ('[kernel]\ngemm = "cublas"', ["[kernel]", "'gemm'", "matmul, conv, attention"]),
    ('[execution]\nthreads = -2', ["[execution] threads = -2", "0 (engine default) to 1024"]),
    ('[execution]\nstatic_shape = "yes"', ['static_shape = "yes"', "true or false"]),
    ('[tolerance]\nfp16 = { rtol = "big" }', ["[tolerance] fp16.rtol", "finite number"]),
    ('[tolerance]\nfp64 = { rtol = 1 }', ["[tolerance] fp64", "fp32, tf32, fp16, bf16, int8"]),
    ('[shapes]\nx = "1x3xHxW"', ["[shapes] x", "1x3x640x640"]),
    ('[nodes]\n"Conv_1" = "fp12"', ['[nodes] "Conv_1"', "fp32, tf32"]),
    ('[kernels]\nmatmul = "cublas"', ["unknown section(s) ['kernels']", "kernel, execution"]),
    ('[kernel]\nmatmul = { mode = "fixed" }', ["[kernel] matmul", "needs a choice", "auto"]),
    ('[quantization]\nmethod = "kl"', ['method = "kl"', "minmax, entropy, percentile"]),
    ("[execution\nprecision = 1", ["not valid TOML"]),
])
def test_bad_policy_names_key_value_and_allowed(tmp_path, text, expected):
    with pytest.raises(PolicyError) as info:
        Policy.from_toml(write(tmp_path, text))
    message = str(info.value)
    for part in expected:
        assert part in message, message
    assert isinstance(info.value, xrt.InvalidArgument)  # the API's own error type


def test_auto_mode_needs_no_choice():
    assert KernelPolicy(matmul={"mode": "auto"}).get("matmul") == Knob(None, "auto")


def test_cli_flags_override_the_file(tmp_path):
    policy = Policy.from_toml(write(tmp_path, '[execution]\nprecision = { choice = "fp16", mode = "fixed" }\n'
                                              '[shapes]\nx = [1, 3, 32, 32]'))
    merged = policy.with_overrides(precision="int8", shapes={"x": [2, 3, 32, 32], "y": [4]})
    assert merged.execution.get("precision") == Knob("int8", "fixed")  # the file's mode is kept
    assert merged.shapes == {"x": [2, 3, 32, 32], "y": [4]}
    with pytest.raises(PolicyError, match="fp17"):
        policy.with_overrides(precision="fp17")


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(PolicyError, match="does not exist"):
        Policy.from_toml(str(tmp_path / "nope.toml"))


def test_execution_policy_rejects_unknown_knob():
    with pytest.raises(PolicyError, match="known: precision, static_shape, threads, memory"):
        ExecutionPolicy(fp16=True)
