"""The CPU tuner on a small real model (the sample CNN, both engines): `--tune fast` measures real candidates, the
winner passed the accuracy gate, goes first with its options, and the runtime loads it with them; the manifest, the
decision log and `xrtc explain` carry the candidate table; a second compile on this machine reuses the DB entry
without measuring; `xrtc tune` tunes an existing CPU bundle; `--tune off` is byte-identical to no flag. ~40 s."""

from __future__ import annotations

import json

import pytest
import xrtpkg
from xrt_testutil import SAMPLE, run_tool

import xpuruntime as xrt
from xrtc.tuning import cpu


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tuned")
    db = folder / "tuning.sqlite"
    out = folder / "tuned.xrtpkg"
    proc = run_tool("xrtc", "compile", SAMPLE, "--target", "cpu", "-o", out, "--tune", "fast", "--tuning-db", db)
    assert proc.returncode == 0, proc.stderr
    return out, db, proc


def test_winner_is_gated_first_and_loaded_with_its_options(tuned):
    out, _db, proc = tuned
    manifest = xrtpkg.read(out).manifest
    record = manifest["tuning"]
    rows = {r["id"]: r for r in record["candidates"]}
    assert len(rows) >= 4 and {r["engine"] for r in rows.values()} == {"openvino", "onnxruntime"}
    won = rows[record["winner"]["candidate"]]
    assert won["outcome"] == "won" and won["accuracy"]["passed"] and won["runs"] >= 10
    rounds = cpu._BUDGET["fast"][1]
    base = rows[record["baseline"]["candidate"]]
    under_load = record["machine_load"]["under_load"]
    gain = cpu.LOADED_MIN_GAIN if under_load else cpu.MIN_GAIN
    keys = {"openvino": "INFERENCE_NUM_THREADS", "onnxruntime": "intra_op_num_threads"}
    cpus = record["machine_load"]["cpus"]

    def threads(r):
        return min(cpus, int(r["options"].get(keys[r["engine"]], cpus)))

    timed = [r for r in rows.values() if r["median_ms"] is not None]
    consistent = [r for r in timed if r is base or r["rounds_won_vs_baseline"] >= rounds - 1]
    # under load (the tuner measured others' CPU share while timing), fewer threads than the own choice may not win
    eligible = [r for r in consistent if r is base or not (under_load and threads(r) < threads(base))]
    fastest = min(r["score_ms"] for r in eligible)
    recheck = record["recheck"]
    # the fastest (by its slowest round's median) of the eligible candidates faster than the bundle's own choice in
    # all but one paired round, kept by the final A/B re-check; or the bundle's own choice where none beat it by the
    # gain, or where the timed rounds' winner lost the re-check
    if won is base:
        assert fastest > won["score_ms"] * (1 - gain) or (recheck is not None and not recheck["kept"])
    else:
        assert won["score_ms"] == fastest and won["score_ms"] <= base["score_ms"] * (1 - gain)
        assert recheck["kept"] and recheck["rounds_won"] >= cpu.RECHECK_ROUNDS - 1
    assert won["score_ms"] >= won["median_ms"] * 0.5 and record["winner"]["score_ms"] == won["score_ms"]
    for r in rows.values():
        if r is not won:
            assert r["outcome"] == "lost" and r["why"]
            if r in timed and r not in consistent and r["score_ms"] < won["score_ms"]:
                assert "not a consistent win" in r["why"] or "under load with fewer threads" in r["why"], r
            if r in consistent and r not in eligible and r["score_ms"] < won["score_ms"]:
                assert "under load with fewer threads" in r["why"], r
    assert "machine load while timing" in proc.stdout
    first = manifest["variants"][0]
    assert first["id"] == won["variant"] and first["options"] == won["options"]
    assert record["baseline"]["median_ms"] > 0 and record["hardware"] and record["versions"]["tuner"]
    # The runtime takes the winner and accepts its options (a key outside its allow-lists would refuse the load).
    from xrtc.gate import golden_arrays

    bundle = xrtpkg.read(out)
    feeds, references = golden_arrays(bundle, manifest["golden"])
    with xrt.load(out) as session:
        assert session.variant == won["variant"]
        got = session.run(feeds)
        for name, ref in references.items():
            assert abs(got[name] - ref).max() <= won["accuracy"]["max_abs_err"][name] * 1.01 + 1e-6
    assert "winner" in proc.stdout and "median ms" in proc.stdout  # compile prints the table


def test_explain_and_decision_log_show_the_table(tuned):
    out, _db, _proc = tuned
    shown = run_tool("xrtc", "explain", out, check=True).stdout
    record = xrtpkg.read(out).manifest["tuning"]
    assert "tuning (fast" in shown and record["winner"]["candidate"] in shown
    assert record["static_shape"]["why"].startswith("static shape:") and record["static_shape"]["why"] in shown
    for row in record["candidates"]:
        assert row["id"][:40] in shown
    log = json.loads(run_tool("xrtc", "explain", out, "--json", check=True).stdout)
    assert log["tuning"]["winner"] == record["winner"]
    built = [v for v in log["variants"] if v["status"] == "built"]
    assert built[0]["id"] == record["winner"]["variant"] and built[0]["why"].startswith("tuned (fast)")


def test_second_compile_reuses_the_db_and_tune_tool(tuned, tmp_path, sample_bundle):
    out, db, _proc = tuned
    again = tmp_path / "again.xrtpkg"
    proc = run_tool("xrtc", "compile", SAMPLE, "--target", "cpu", "-o", again, "--tune", "fast", "--tuning-db", db)
    assert proc.returncode == 0, proc.stderr
    assert "reusing entry" in proc.stderr and "timing round" not in proc.stderr
    first, second = xrtpkg.read(out).manifest["tuning"], xrtpkg.read(again).manifest["tuning"]
    assert second["reused_from_db"]["key"] == first["db_key"] and second["winner"] == first["winner"]
    # `xrtc tune` on the untuned bundle of the same model: same graphs, same machine -> the same entry.
    proc = run_tool("xrtc", "tune", sample_bundle, "-o", tmp_path / "plain.tuned.xrtpkg", "--tuning-db", db)
    assert proc.returncode == 0, proc.stderr
    assert xrtpkg.read(tmp_path / "plain.tuned.xrtpkg").manifest["tuning"]["winner"] == first["winner"]
    shown = run_tool("xrtc", "tune-db", "show", "--tuning-db", db, check=True).stdout
    assert "1 entries" in shown and "reusable here" in shown


def test_tune_off_is_byte_identical(tmp_path, sample_bundle):
    plain, off = sample_bundle, tmp_path / "off.xrtpkg"
    run_tool("xrtc", "compile", SAMPLE, "--target", "cpu", "-o", off, "--tune", "off", check=True)
    assert plain.read_bytes() == off.read_bytes()
    assert "tuning" not in xrtpkg.read(off).manifest


def test_unverified_bundle_cannot_be_tuned(tmp_path, sample_bundle):
    import xrtpkg as pkg

    bundle = pkg.read(sample_bundle)
    manifest = {k: v for k, v in bundle.manifest.items() if k != "golden"}
    payloads = [(s.name, bundle.data(s.name), s.compressed) for s in bundle.sections
                if s.name != "manifest" and not s.name.startswith("golden.")]
    no_golden = tmp_path / "no_golden.xrtpkg"
    pkg.write(no_golden, manifest, payloads)
    proc = run_tool("xrtc", "tune", no_golden, "--no-db")
    assert proc.returncode == 2 and "no golden data" in proc.stderr and "Traceback" not in proc.stderr


def test_winner_moves_ahead_of_cpu_variants_only(tmp_path, sample_bundle):
    """npu-intel,cpu: tuning the CPU variants never puts one ahead of the NPU variant the user preferred."""
    bundle = xrtpkg.read(sample_bundle)
    manifest = json.loads(json.dumps(bundle.manifest))
    ov = next(v for v in manifest["variants"] if v["engine"] == "openvino")
    npu = dict(json.loads(json.dumps(ov)), id="npu-intel-openvino", target="npu-intel", device="npu")
    manifest["variants"] = [npu] + manifest["variants"]
    path = tmp_path / "npu_first.xrtpkg"
    xrtpkg.write(path, manifest, [(s.name, bundle.data(s.name), s.compressed) for s in bundle.sections
                                  if s.name != "manifest"])
    last_cpu = manifest["variants"][-1]
    record = {"mode": "fast", "winner": {"candidate": f"{last_cpu['id']}/threads=1", "variant": last_cpu["id"],
                                         "options": dict(last_cpu["options"], x="1"), "median_ms": 1.0}}
    tuned, _ = cpu.apply(xrtpkg.read(path), record)
    assert [v["id"] for v in tuned["variants"]] == ["npu-intel-openvino", last_cpu["id"],
                                                    manifest["variants"][1]["id"]]
    assert tuned["variants"][1]["options"]["x"] == "1" and tuned["tuning"] is record
