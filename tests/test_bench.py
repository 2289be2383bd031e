"""Smoke tests of the benchmark scripts in bench/: tiny sizes, JSON shape only (never speeds)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import bench_model  # noqa: E402
import compare_avalanche  # noqa: E402
from synthetic_stream import StreamSpec, load_stream, materialise, render_stream  # noqa: E402


def _run(script: str, *args: str, timeout: int = 600) -> dict:
    proc = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    return json.loads(proc.stdout)


def test_stream_has_the_requested_shapes_and_is_deterministic(tmp_path):
    spec = StreamSpec(size=16, first_frames=2, new_frames=5, incremental_batches=2, test_frames=7)
    frames, index = render_stream(spec)
    assert frames.shape == (20 + 10 + 30, 16, 16, 3) and frames.dtype == np.uint8   # test: 30 videos x 1 frame
    assert [len(b["paths"]) for b in index["batches"]] == [20, 5, 5]
    assert len(index["test"]["paths"]) == 7
    b0 = index["batches"][0]
    assert b0["paths"] == sorted(b0["paths"]) and set(b0["labels"]) == set(range(0, 50, 5))
    for b in index["batches"][1:]:   # one video each: one session, one object
        assert len({p.split("/")[0] for p in b["paths"]}) == 1 and len(set(b["labels"])) == 1
    assert {p.split("/")[0] for p in index["test"]["paths"]} <= {"s3", "s7", "s10"}
    again, _ = render_stream(spec)
    assert np.array_equal(frames, again)

    store, scenario = load_stream(materialise(spec, tmp_path))
    assert len(scenario) == 3 and len(scenario.test) == 7
    first = scenario.batches[1]
    assert np.array_equal(store.get(first.paths[:1])[0], frames[index["batches"][1]["rows"][0]])
    assert first.labels.tolist() == index["batches"][1]["labels"]


def test_bench_trainer_quick_prints_the_figures():
    out = _run("bench_trainer.py", "--quick", "--cases", "none,latent@conv5_4/dw", "--threads", "1")
    assert out["benchmark"] == "trainer_incremental_batch" and out["sizes"]["quick"]
    assert out["first_batch"]["rows"] == 80 and out["first_batch"]["train_img_s"] > 0
    assert set(out["cases"]) == {"none", "latent@conv5_4/dw"}
    lat = out["cases"]["latent@conv5_4/dw"]
    for key in ("train_seconds", "train_img_s", "new_frames_s", "eval_seconds", "eval_first_seconds",
                "eval_full_forward_seconds", "peak_rss_bytes", "memory_bytes"):
        assert lat[key] > 0, key
    assert lat["eval_cache_equal"] and lat["glibc_tuned"] and lat["split_layer"] == "conv5_4/dw"
    # one epoch: ceil((30 + 40) / 16) = 5 full minibatches of 7 new + 9 memory rows
    assert lat["memory_patterns"] == 40 and lat["rows"] == 5 * 16
    assert lat["memory_bytes"] == 40 * (512 * 2 * 2 * 4 + 8)        # conv5_4/dw at 32x32, float32 + labels
    assert out["cases"]["none"]["memory_bytes"] == 0
    assert "cache_test_latents_eval_speedup@conv5_4/dw" in out["derived"]
    assert len(out["runs"]["none"]) == 1 and out["load"]["load1_max"] >= 0


def test_bench_model_counts_and_fields():
    """The arithmetic the roofline fields divide by: the whole network and the part above a layer."""
    from latent_replay.models import mac_counts

    macs = mac_counts(None, 128)
    assert bench_model.part_macs(macs, None) == 185_427_968
    upper = bench_model.part_macs(macs, "conv5_4/dw")
    assert upper == sum(v for k, v in macs.items() if k in (
        "conv5_4/sep", "conv5_5/dw", "conv5_5/sep", "conv5_6/dw", "conv5_6/sep", "conv6/dw", "conv6/sep",
        "mid_fc7")) and 59_000_000 < upper < 60_000_000
    assert bench_model.part_macs(macs, "pool6") == 1024 * 50
    # a training step: forward + weight gradients + input gradients except the first layer's
    assert bench_model.train_macs(macs, "conv5_4/dw") == 3 * upper - macs["conv5_4/sep"]
    assert bench_model.train_macs(macs, "pool6") == 2 * 1024 * 50
    assert bench_model.train_macs(macs, None) == 3 * 185_427_968 - macs["conv1"]
    out = _run("bench_model.py", "--batch-size", "2", "--iters", "1", "--warmup", "0", "--threads", "1",
               "--input-size", "64", "--recompute")
    assert out["recompute_bn_relu"] is True
    assert out["gemm_gflop_s"] > 0 and set(out["results"]) == {"full", "upper@conv5_4/dw", "upper@pool6"}
    for r in out["results"].values():
        assert r["train_gflop_s"] > 0 and r["train_fraction_of_gemm"] == pytest.approx(
            r["train_gflop_s"] / out["gemm_gflop_s"], abs=2e-3)


def test_full_run_quick_reports_and_extrapolates(tmp_path):
    out = _run("full_run.py", "--quick", "--device", "cpu", "--threads", "1", "--work-dir", str(tmp_path))
    assert out["device"] == "cpu" and out["incremental_batches"] == 2 and out["full_run_extrapolated"]
    assert out["cuda_reproducible"] is True
    assert out["train_seconds"] == pytest.approx(out["first_batch_train_seconds"]
                                                 + 2 * out["incremental_train_seconds_median"], abs=0.02)
    assert out["full_run_train_seconds"] == pytest.approx(
        out["first_batch_train_seconds"] + 390 * out["incremental_train_seconds_median"], abs=0.05)
    assert out["under_2_minutes"] == (out["full_run_train_seconds"] < 120) and 0 <= out["final_accuracy"] <= 1
    # a second call reuses the rendered stream and starts the run afresh (no resume from the checkpoint)
    again = _run("full_run.py", "--quick", "--device", "cpu", "--threads", "1", "--work-dir", str(tmp_path), "--tf32")
    assert again["final_accuracy"] == out["final_accuracy"]   # cuda_reproducible changes nothing on the CPU
    assert again["cuda_reproducible"] is False


def test_full_run_stream_is_the_nicv2_391_layout():
    """objects=50: 390 distinct incremental videos, none of them batch 0's, every object present."""
    spec = StreamSpec(size=8, first_frames=2, new_frames=3, incremental_batches=390, test_frames=150, objects=50)
    frames, index = render_stream(spec)
    videos = {tuple(b["paths"][0].split("/")[:2]) for b in index["batches"][1:]}
    assert len(index["batches"]) == 391 and len(videos) == 390
    assert not videos & {("s1", f"o{o}") for o in range(1, 51, 5)}
    assert {v[1] for v in videos} == {f"o{o}" for o in range(1, 51)} and len(index["test"]["paths"]) == 150
    with pytest.raises(ValueError, match="objects must be in 10..50"):
        render_stream(StreamSpec(size=8, objects=51))


def test_bench_trainer_rejects_unknown_cases():
    proc = subprocess.run([sys.executable, str(BENCH / "bench_trainer.py"), "--cases", "nope"], capture_output=True,
                          text=True)
    assert proc.returncode == 2 and "unknown case" in proc.stderr


def test_compare_avalanche_our_side_quick():
    out = _run("compare_avalanche.py", "--quick", "--sides", "ours", "--threads", "1")
    ours = out["results"]["ours"]
    assert out["sizes"]["incremental_batches"] == 2 and "ratios" not in out
    assert len(ours["accuracy_per_batch"]) == 3 and 0 <= ours["final_accuracy"] <= 1
    assert ours["incremental_img_s"] > 0 and ours["peak_rss_bytes"] > 0 and ours["memory_bytes"] > 0
    assert 0 < ours["peak_rss_incremental_bytes"] <= ours["peak_rss_bytes"]
    # the quick stream's 24 test latents at conv5_4/dw (128x128): 512 x 8 x 8 float32 each, in a file
    assert ours["test_latents_file_bytes"] == 24 * 512 * 8 * 8 * 4


def test_memory_phases_quick_labels_every_phase():
    out = _run("memory_phases.py", "--quick", "--threads", "1", "--set", "inference_chunk=5")
    phases = {p["phase"] for p in out["phases"]}
    assert {"train_batch(0)", "train_batch(1)", "train_batch(2)", "train_batch(1)>_ensure_test_cache"} <= phases
    assert any(p.startswith("train_batch(1)>") and p.endswith(">_lower_pass") for p in phases)
    assert out["overrides"] == {"inference_chunk": 5} and len(out["train_seconds"]) == 3
    assert 0 < out["peak_rss_incremental_mb"] <= out["peak_rss_mb"]
    assert all(p["rss"] >= p["anon"] > 0 and p["samples"] >= 1 for p in out["phases"])
    ends = out["phase_ends"]
    assert ends[-1]["phase"].startswith("after train_batch(2)") or ends[-1]["phase"].endswith("save_checkpoint")
    assert ends[0]["heap"] is None or ends[0]["heap"]["arena"] >= ends[0]["heap"]["in_use"]


def test_memory_phases_rejects_a_bad_setting():
    proc = subprocess.run([sys.executable, str(BENCH / "memory_phases.py"), "--quick", "--set", "inference_chunk"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "--set takes KEY=JSON" in proc.stderr


def test_compare_summary_and_ratios_from_runs():
    def run(seconds, mismatch=None):
        batches = [{"train_seconds": seconds, "rows": 100, "eval_seconds": 1.0, "test_accuracy": 0.5,
                    "memory_bytes": 10} for _ in range(3)]
        if mismatch is not None:
            for b, m in zip(batches, mismatch):
                b["replay_label_mismatch"] = m
        return {"batches": batches, "peak_rss_bytes": 1000, "peak_rss_incremental_bytes": 400, "wall_seconds": 5.0}

    s = compare_avalanche.summarise(run(2.0, [0.9, 0.0, 0.0]))
    assert s["incremental_img_s"] == 50 and s["first_batch_img_s"] == 50
    assert (s["peak_rss_bytes"], s["peak_rss_incremental_bytes"]) == (1000, 400)
    assert s["replay_label_mismatch_per_batch"] == [0.9, 0.0, 0.0] and s["test_latents_file_bytes"] == 0
    assert "replay_label_mismatch_per_batch" not in compare_avalanche.summarise(run(1.0))
    assert compare_avalanche._median([[1, 2], [3, 4], [5, 6]]) == [3, 4]


@pytest.mark.slow
@pytest.mark.skipif(not (compare_avalanche.DEFAULT_VENV / ".installed").is_file(),
                    reason="Avalanche venv not installed (bench/compare_avalanche.py creates it)")
def test_compare_avalanche_both_sides_quick():
    out = _run("compare_avalanche.py", "--quick", "--threads", "1", timeout=900)
    assert out["versions"]["avalanche"]["avalanche"] == "0.6.0"
    assert set(out["ratios"]) >= {"incremental_throughput_ours_over_avalanche", "peak_rss_ours_over_avalanche",
                                  "peak_rss_incremental_ours_over_avalanche",
                                  "peak_rss_incremental_with_test_latents_file_ours_over_avalanche"}
    assert len(out["results"]["avalanche"]["replay_label_mismatch_per_batch"]) == 3
