"""`xrtc plan` and the policy model need no compiled runtime: a child process whose import of xpuruntime._core
fails (a meta-path hook refuses it, as on a machine where the C++ runtime is not built or cannot load) imports
xpuruntime and its policy, and writes a plan. ~5 s."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "samples" / "sample_cnn.onnx"

CHILD = r"""
import sys

class NoCore:
    def find_spec(self, name, path=None, target=None):
        if name == "xpuruntime._core":
            raise ImportError("xpuruntime._core blocked by the test (no compiled runtime)")
        return None

sys.meta_path.insert(0, NoCore())
import xpuruntime
from xpuruntime.policy import Policy
assert Policy.from_dict({"execution": {"precision": "fp16"}}).execution.get("precision").choice == "fp16"
try:
    xpuruntime.load
except ImportError as err:
    print("load refused:", err)
else:
    raise SystemExit("xpuruntime.load imported with _core blocked")
from xrtc.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_plan_runs_without_the_compiled_runtime(tmp_path):
    policy = tmp_path / "p.toml"
    policy.write_text('[execution]\nprecision = "fp16"\n')
    out = tmp_path / "plan.json"
    proc = subprocess.run([sys.executable, "-c", CHILD, "plan", str(MODEL), "--policy", str(policy), "-o", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    print(proc.stdout, proc.stderr)
    assert proc.returncode == 0, proc.stderr
    assert "load refused:" in proc.stdout and "_core" in proc.stdout
    plan = json.loads(out.read_text())
    assert plan["target"] == "cpu" and {v["precision"] for v in plan["variants"]} == {"fp16"}
