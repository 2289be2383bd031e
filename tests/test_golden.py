"""Golden metrics: a grid of tiny experiments whose results must not change while the code moves.

Every combination of profile (fixed, caffe) x method (naive, joint, CWR*, AR1*-free, AR1*) x replay
(none, native, latent at two layers, latent in three dtypes, generative in both GLR profiles; CWR*'s
latent replay at pool6, the only layer it allows) trains
a few batches of a tiny synthetic NICv2-391 run; one experiment is also interrupted and resumed. Each
run's ``metrics.csv`` without its seconds columns, the metric fields of its ``summary.json``, and the
tables of ``glr-bench``'s default run are compared byte for byte with ``tests/golden/metrics_grid.json``
and ``tests/golden/glr_bench_default.json``; a combination the config refuses is recorded with its
error. The numbers depend on the CPU's kernels (their vector width) and the thread count: the files
record both, and on another CPU capability the comparison is skipped, saying so.

A golden file changes only in a commit of its own that says why. To write them again, run
``LATENT_REPLAY_UPDATE_GOLDEN=1 make test PYTEST_ARGS=tests/test_golden.py``.
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from latent_replay.config import ConfigError, ExperimentConfig
from latent_replay.train import Trainer
from conftest import tiny_config

GOLDEN = Path(__file__).resolve().parent / "golden"
GRID_FILE, GLR_FILE = GOLDEN / "metrics_grid.json", GOLDEN / "glr_bench_default.json"
WRITE = os.environ.get("LATENT_REPLAY_UPDATE_GOLDEN") == "1"
#: summary.json fields that are results (not times, versions or the config's spelling).
SUMMARY_FIELDS = ("experiment", "run", "finished", "batches", "scenario_batches", "final_accuracy",
                  "average_accuracy", "iterations", "memory_bytes", "weights", "preprocessing")
METHODS = ("naive", "joint", "cwr", "ar1free", "ar1")
#: replay name -> config keys
REPLAYS = {
    "none": {"replay": "none"},
    "native": {"replay": "native"},
    "latent@conv5_4/dw": {"replay": "latent", "latent_layer": "conv5_4/dw"},
    "latent@conv4_1/dw": {"replay": "latent", "latent_layer": "conv4_1/dw"},
    "latent@conv5_4/dw/float16": {"replay": "latent", "latent_layer": "conv5_4/dw", "latent_dtype": "float16"},
    "latent@conv5_4/dw/uint8": {"replay": "latent", "latent_layer": "conv5_4/dw", "latent_dtype": "uint8"},
    "generative/fixed": {"replay": "generative", "latent_layer": "conv5_4/dw", "glr_profile": "fixed"},
    "generative/reference": {"replay": "generative", "latent_layer": "conv5_4/dw", "glr_profile": "reference"},
}
GRID = [(profile, method, replay) for profile in ("fixed", "caffe") for method in METHODS for replay in REPLAYS]
#: The experiment also trained with an interruption after batch 2 and a resume: the same golden rows.
RESUMED = ("caffe", "ar1", "latent@conv5_4/dw")


def _environment() -> dict:
    return {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads()}


def _load(path: Path) -> dict:
    if WRITE:
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    if data["environment"]["cpu_capability"] != _environment()["cpu_capability"]:
        pytest.skip(f"{path.name} was recorded with CPU capability {data['environment']['cpu_capability']}, this "
                    f"machine has {_environment()['cpu_capability']}: its float kernels round otherwise")
    return data


def _save(path: Path, results: dict) -> None:
    path.write_text(json.dumps({"environment": _environment(), "results": results}, indent=1, sort_keys=True) + "\n",
                    encoding="utf-8")


def _without_seconds(csv_text: str) -> str:
    """The CSV as written, less the columns whose name ends in ``seconds`` (byte for byte otherwise)."""
    rows = list(csv.reader(io.StringIO(csv_text)))
    keep = [i for i, name in enumerate(rows[0]) if not name.endswith("seconds")]
    return "\n".join(",".join(row[i] for i in keep) for row in rows) + "\n"


def _config(tiny: Path, out: Path, profile: str, method: str, replay: str) -> ExperimentConfig:
    keys = dict(profile=profile, method=method, **REPLAYS[replay])
    if replay.startswith("generative"):
        keys["glr"] = {"pca_components": 8}
    if method == "cwr" and "latent_layer" in keys:   # CWR* trains only the classifier: its latents are pool6's
        keys["latent_layer"] = "pool6"
    return tiny_config(tiny, out, **keys)


def _result(run_folder: Path) -> dict:
    summary = json.loads((run_folder / "summary.json").read_text(encoding="utf-8"))
    return {"metrics": _without_seconds((run_folder / "metrics.csv").read_text(encoding="utf-8")),
            "summary": {k: summary[k] for k in SUMMARY_FIELDS}}


@pytest.fixture(scope="module")
def grid_results(tiny_nicv2, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("golden_results")
    results = {}
    for profile, method, replay in GRID:
        key = f"{profile}/{method}/{replay}"
        try:
            cfg = _config(tiny_nicv2, out, profile, method, replay)
        except ConfigError as exc:
            results[key] = {"refused": str(exc)}
            continue
        Trainer(cfg, progress=False).run_all()
        results[key] = _result(out / cfg.experiment_name / "run0")
    if WRITE:
        _save(GRID_FILE, results)
    return results


@pytest.mark.parametrize("profile, method, replay", GRID, ids=["/".join(c) for c in GRID])
def test_grid_metrics_are_unchanged(grid_results, profile, method, replay):
    key = f"{profile}/{method}/{replay}"
    assert grid_results[key] == _load(GRID_FILE)["results"][key] if not WRITE else grid_results[key]


def test_the_grid_covers_every_method_and_replay(grid_results):
    trained = {k for k, v in grid_results.items() if "metrics" in v}
    assert {k.split("/")[1] for k in trained} == set(METHODS)
    assert {k.split("/", 2)[2] for k in trained} == set(REPLAYS)
    assert len(trained) >= 60


def test_a_resumed_run_has_the_golden_metrics(tiny_nicv2, tmp_path):
    cfg = _config(tiny_nicv2, tmp_path, *RESUMED)
    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg, progress=False).run_all(stop_after=2)
    Trainer(cfg, progress=False).run_all()
    got = _result(tmp_path / cfg.experiment_name / "run0")
    if not WRITE:
        assert got == _load(GRID_FILE)["results"]["/".join(RESUMED)]


def test_glr_bench_default_tables_are_unchanged(tmp_path):
    from latent_replay.cli import main

    r = CliRunner().invoke(main, ["--log-level", "WARNING", "glr-bench", "--out", str(tmp_path), "--no-progress",
                                  "--no-plot", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    tables = {f"{folder.name}/{name}": _without_seconds((folder / name).read_text(encoding="utf-8"))
              for folder in sorted(p for p in tmp_path.iterdir() if p.is_dir())
              for name in ("summary.csv", "summary_mean.csv", "accuracy_matrix.csv")}
    assert len(tables) >= 6
    if WRITE:
        _save(GLR_FILE, tables)
    else:
        assert tables == _load(GLR_FILE)["results"]
