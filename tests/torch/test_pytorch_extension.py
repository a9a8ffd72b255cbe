"""xpuruntime.pytorch (the [torch] extra) on a CPU build of PyTorch: the kernel policy mapped onto PyTorch's
switches and read back (fixed refuses and changes nothing, prefer records a warning), autocast's measured precision
per op class, capture_graph() refusing without CUDA (its block-skipping replay mechanism is checked on its own),
the promised example as written, and the sample that trains, exports, compiles with the same policy and compares.
CUDA-only behaviour (cuBLASLt preference, graph capture and replay) runs where a GPU is present."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed: the [torch] extra "
                            "(pip install 'xpuruntime[torch]') is needed for xpuruntime.pytorch's tests")

import xpuruntime as xrt  # noqa: E402
import xpuruntime.pytorch as xrt_torch  # noqa: E402
from xpuruntime.policy import Knob, PolicyError  # noqa: E402

CUDA = torch.cuda.is_available()
SAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "samples",
                      "train_export_compile.py")


@pytest.fixture(autouse=True)
def fresh_state():
    xrt_torch.reset()
    yield
    xrt_torch.reset()


@pytest.mark.skipif(CUDA, reason="checks the CPU behaviour of CUDA-only choices")
def test_cuda_choices_on_cpu_prefer_records_fixed_refuses_unchanged():
    before = xrt_torch.explain()["switches"]
    with pytest.raises(xrt.Unavailable, match="attention=flash_v2: flash_v2 is a CUDA kernel"):
        xrt_torch.set_kernel_policy(matmul="engine", attention=Knob("flash_v2", "fixed"))
    assert xrt_torch.explain()["switches"] == before  # nothing changed
    result = xrt_torch.set_kernel_policy(attention="flash_v2", matmul="cublasLt")
    assert [w.split(":")[0] for w in result["warnings"]] == ["prefer matmul=cublasLt", "prefer attention=flash_v2"]
    assert xrt_torch.explain()["warnings"] == result["warnings"]
    with pytest.raises(PolicyError, match="not one of"):
        xrt_torch.set_kernel_policy(attention="flash_v3")


@pytest.mark.skipif(not CUDA, reason="no CUDA device: cuBLASLt and FlashAttention-2 are CUDA choices")
def test_cuda_choices_hold_on_a_gpu():
    xrt_torch.set_kernel_policy(matmul=Knob("cublasLt", "fixed"), attention=Knob("flash_v2", "fixed"))
    report = xrt_torch.explain()
    print(f"on {torch.cuda.get_device_name()}: {report['switches']}, "
          f"SDPA selects {report['attention_backend_selected']}")
    assert report["switches"]["preferred_blas_library"].lower() == "cublaslt"
    assert report["attention_backend_selected"] == "flash" and report["warnings"] == []


def test_attention_choice_is_what_pytorch_selects():
    xrt_torch.set_kernel_policy(attention=Knob("math", "fixed"))
    assert xrt_torch.explain()["attention_backend_selected"] == "math"
    assert xrt_torch.explain()["switches"]["sdpa_enabled"] == {"flash": False, "mem_efficient": False, "math": True,
                                                               "cudnn": False}
    xrt_torch.set_kernel_policy(policy=xrt.KernelPolicy(attention="flash"))  # prefer: math stays as the fallback
    assert xrt_torch.explain()["attention_backend_selected"] == "flash"
    assert xrt_torch.explain()["switches"]["sdpa_enabled"]["math"] is True


def test_tf32_follows_the_execution_precision():
    xrt_torch.set_kernel_policy(exec_policy=xrt.ExecutionPolicy(precision="tf32"))
    assert torch.get_float32_matmul_precision() == "high" and torch.backends.cuda.matmul.allow_tf32
    xrt_torch.set_kernel_policy(exec_policy=xrt.ExecutionPolicy(precision="fp32"))
    assert torch.get_float32_matmul_precision() == "highest" and not torch.backends.cudnn.allow_tf32


def test_autocast_precision_per_op_class():
    layer = torch.nn.Linear(8, 8).to("cuda" if CUDA else "cpu")
    x = torch.randn(2, 8, device=layer.weight.device)
    with xrt_torch.autocast(fp16=True) as record:
        y = layer(x)
        p = torch.softmax(y, -1)
    assert y.dtype == torch.float16
    # The record is measured: what softmax made of a matmul's output here is what explain() says.
    assert record["ops"]["matmul"] == record["ops"]["linear"] == "float16", record
    assert record["ops"]["softmax"] == str(p.dtype).replace("torch.", ""), record
    print(f"autocast fp16 on {record['device']}: {record['ops']}")
    with xrt_torch.autocast(bf16=True):
        assert layer(x).dtype == torch.bfloat16
    assert [(r["dtype"], r["entered"]) for r in xrt_torch.explain()["autocast"]] == [("fp16", 1), ("bf16", 1)]
    with pytest.raises(xrt.InvalidArgument, match="ask for one"):
        with xrt_torch.autocast(fp16=True, bf16=True):
            pass
    with pytest.raises(PolicyError, match="contradicts the policy's fixed precision fp32"):
        with xrt_torch.autocast(fp16=True, exec_policy=xrt.ExecutionPolicy(precision=Knob("fp32", "fixed"))):
            pass


@pytest.mark.skipif(CUDA, reason="this machine has CUDA: the capture itself is tested")
def test_capture_graph_refuses_without_cuda():
    ran = []
    with pytest.raises(xrt.Unavailable, match="capture_graph\\(\\) needs a CUDA device"):
        with xrt_torch.capture_graph():
            ran.append(1)
    assert not ran
    assert xrt_torch.explain()["capture_graph"][0]["captured"] is False


def test_replay_skips_the_block():
    """The mechanism capture_graph() replays with: the block's statements do not run, the code after it does."""
    ran = []
    with xrt_torch._SkipBlock(sys._getframe(0)):
        ran.append("body")
    ran.append("after")
    assert ran == ["after"] and sys.gettrace() is None


def test_promised_example():
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    criterion = torch.nn.CrossEntropyLoss()
    device = "cuda" if CUDA else "cpu"
    model = model.to(device)
    x, t = torch.randn(8, 16, device=device), torch.randint(0, 4, (8,), device=device)

    xrt_torch.set_kernel_policy(attention="flash_v2", matmul="cublasLt")
    if not CUDA:
        with pytest.raises(xrt.Unavailable, match="needs a CUDA device"):
            with xrt_torch.autocast(fp16=True), xrt_torch.capture_graph():
                y = model(x); loss = criterion(y, t); loss.backward()  # noqa: E702
        return
    for _ in range(6):
        with xrt_torch.autocast(fp16=True), xrt_torch.capture_graph():
            y = model(x); loss = criterion(y, t); loss.backward()  # noqa: E702
    (site,) = xrt_torch.explain()["capture_graph"]
    assert site["captured"] and site["replays"] == 2, site
    assert torch.isfinite(loss).item()


def test_sample_trains_exports_compiles_and_matches(tmp_path):
    env = dict(os.environ, XRT_BUNDLE_CACHE=str(tmp_path / "cache"))
    out = subprocess.run([sys.executable, SAMPLE, "--steps", "5", "--out", str(tmp_path)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    print(out.stdout[-1500:])
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "bundle vs PyTorch: max abs err" in out.stdout and ": ok" in out.stdout


def test_body_on_the_with_line_is_refused_when_replaying():
    """A body on the `with` line fires no line event, so it runs: _SkipBlock refuses (the caller then does not
    replay the graph on top of it), tracing restored."""
    ran = []
    with pytest.raises(xrt.InvalidArgument, match="on the `with` line itself .* its own line"):
        with xrt_torch._SkipBlock(sys._getframe(0)): ran.append("body")  # noqa: E701
    assert ran == ["body"] and sys.gettrace() is None


def test_capture_graph_must_be_entered_by_a_with_statement():
    """capture_graph() skips lines of the frame found 2 up: that frame must be the one whose `with` statement
    entered it; ExitStack, a direct __enter__() and a wrapping context manager are refused, named."""
    import contextlib

    @contextlib.contextmanager
    def site():  # as capture_graph() calls it
        yield xrt_torch._with_caller()

    with site() as frame:
        assert frame is sys._getframe(0)
    with pytest.raises(xrt.InvalidArgument, match="does not enter it with a `with` statement"):
        with contextlib.ExitStack() as stack:
            stack.enter_context(site())
    with pytest.raises(xrt.InvalidArgument, match="does not enter it with a `with` statement"):
        site().__enter__()

    @contextlib.contextmanager
    def wrapper():
        with site():
            yield

    with pytest.raises(xrt.InvalidArgument, match=r"wrapper\(\), is a generator"):
        with wrapper():
            pass


def test_empty_capture_is_refused():
    """PyTorch only warns that a captured graph is empty: _end_capture turns that into InvalidArgument and passes
    other warnings on."""
    import warnings

    def empty():
        warnings.warn("The CUDA Graph is empty. This usually means that the graph was attempted to be captured on "
                      "wrong device or stream.", UserWarning)

    with pytest.raises(xrt.InvalidArgument, match="captured CUDA graph is empty"):
        xrt_torch._end_capture(empty)
    with pytest.warns(UserWarning, match="something else"):
        xrt_torch._end_capture(lambda: warnings.warn("something else", UserWarning))


@pytest.mark.skipif(not CUDA, reason="no CUDA device: capture and replay need one (the detection is tested above)")
def test_capture_graph_refusals_on_a_gpu():
    x = torch.ones(4, device="cuda")
    ran = []
    with pytest.raises(xrt.InvalidArgument, match="on the `with` line itself"):
        for _ in range(3):
            with xrt_torch.capture_graph(warmup=1): ran.append(x.mul_(2))  # noqa: E701
    assert len(ran) == 3  # warm-up, capture, then the body ran at the first replay and was refused
    with pytest.raises(xrt.InvalidArgument, match="captured CUDA graph is empty"):
        for _ in range(2):
            with xrt_torch.capture_graph(warmup=1):
                ran.append(torch.ones(2) * 2)  # CPU work only: nothing for the graph
