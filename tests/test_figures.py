"""Figures and tables from result folders: discovery, grouping, table values, files, reference parser."""
from __future__ import annotations

import math
import shutil
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from latent_replay import figures as F
from latent_replay.config import ExperimentConfig
from latent_replay.results import CONFIG_FILE, write_json, write_metrics

BYTES = {"float32": 4, "float16": 2, "uint8": 1}
SHAPES = {"data": 3 * 128 * 128, "conv4_1/dw": 256 * 16 * 16, "conv5_4/dw": 512 * 8 * 8, "pool6": 1024}


def write_run(exp_dir: Path, run: int, accs, *, seconds=(10.0, 2.0), memory=0, pattern_bytes=0,
              finished=True, iteration_1=None):
    """metrics.csv (and summary.json when finished) through the project's own writers."""
    rows = []
    if iteration_1 is not None:
        rows.append(dict(batch=0, kind="iteration_1", iteration=1, test_accuracy=iteration_1, train_loss=3.0,
                         train_accuracy=0.1, train_seconds=0.5, eval_seconds=0.25, new_frames=0, classes_seen=10,
                         memory_patterns=0, memory_bytes=0))
    for b, acc in enumerate(accs):
        rows.append(dict(batch=b, kind="batch", iteration=10 * (b + 1), test_accuracy=acc, train_loss=1.0,
                         train_accuracy=0.5, train_seconds=seconds[0] if b == 0 else seconds[1] + 0.1 * run,
                         eval_seconds=0.5, new_frames=300, classes_seen=10, memory_patterns=memory,
                         memory_bytes=memory * (pattern_bytes + 8)))
    write_metrics(exp_dir / f"run{run}" / "metrics.csv", rows)
    if finished:
        batch_rows = [r for r in rows if r["kind"] == "batch"]
        write_json(exp_dir / f"run{run}" / "summary.json", {
            "run": run, "finished": True, "batches": len(accs), "final_accuracy": accs[-1],
            "average_accuracy": float(np.mean(accs)), "train_seconds": sum(r["train_seconds"] for r in rows),
            "eval_seconds": sum(r["eval_seconds"] for r in rows), "memory_bytes": batch_rows[-1]["memory_bytes"],
            "device": "cpu"})


def write_experiment(root: Path, folder: str, finals: dict, partial=(), **cfg):
    """An experiment whose run r reaches ``finals[r]`` after 4 batches (linear from 0.1)."""
    config = ExperimentConfig(runs=sorted(set(finals) | set(partial)), **cfg)
    exp_dir = root / folder
    config.save(exp_dir / CONFIG_FILE)
    memory = config.replay_memory if config.uses_replay else 0
    pattern = SHAPES[config.resolved_latent_layer] * (BYTES[config.latent_dtype] if config.uses_latent else 1)
    for r, final in finals.items():
        write_run(exp_dir, r, list(np.linspace(0.1, final, 4)), memory=memory, pattern_bytes=pattern)
    for r in partial:
        write_run(exp_dir, r, [0.1, 0.2], memory=memory, pattern_bytes=pattern, finished=False)
    return exp_dir


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """Folder names say nothing: grouping must come from the saved configs."""
    root = tmp_path_factory.mktemp("results")
    a, b = root / "sweep_a", root / "nested" / "sweep_b"
    write_experiment(a, "e1", {0: 0.50, 1: 0.52, 2: 0.57}, partial=[3], method="ar1free", latent_layer="conv5_4/dw")
    write_experiment(a, "e2", {0: 0.40, 1: 0.44}, method="ar1free", latent_layer="conv4_1/dw")
    write_experiment(a, "e3", {0: 0.45, 1: 0.47}, method="ar1free", latent_layer="conv5_4/dw", replay_memory=500)
    write_experiment(a, "e4", {0: 0.60, 1: 0.62}, method="ar1free", replay="native")
    write_experiment(b, "e5", {0: 0.55, 1: 0.58}, method="cwr", latent_layer="pool6")
    write_experiment(b, "e6", {0: 0.30, 1: 0.32}, method="ar1free", replay="none")
    write_experiment(b, "e7", {0: 0.51, 1: 0.49}, method="ar1free", latent_layer="conv5_4/dw", latent_dtype="uint8")
    write_experiment(b, "e8", {0: 0.70}, method="ar1", scenario=79, latent_layer="conv5_4/dw")
    write_experiment(b, "only_partial", {}, partial=[0], method="naive", replay="none")
    (b / "broken").mkdir()
    (b / "broken" / CONFIG_FILE).write_text('{"method": "sgd"}\n')
    return root


@pytest.fixture(scope="module")
def experiments(results):
    notes = []
    exps = F.load_experiments([results], notes)
    return exps, notes


def _by_folder(exps):
    return {e.path.name: e for e in exps}


# ---------------------------------------------------------------------- discovery
def test_discovery_reports_partial_missing_and_invalid(experiments):
    exps, notes = experiments
    by = _by_folder(exps)
    assert set(by) == {"e1", "e2", "e3", "e4", "e5", "e6", "e7", "e8", "only_partial"}
    assert [r.number for r in by["e1"].runs] == [0, 1, 2]
    assert by["e1"].left_out == ["run3: partial: metrics.csv without summary.json (unfinished or running)"]
    assert not by["only_partial"].finished
    text = "\n".join(notes)
    assert "e1: run3: partial" in text and "only_partial: no finished run" in text
    assert "broken: left out, invalid configuration" in text and "method" in text
    # the experiment's words come from its config, not its folder
    assert (by["e4"].replay, by["e4"].layer, by["e4"].storage) == ("native", "data", "images")
    assert (by["e6"].layer, by["e6"].memory, by["e6"].storage) == (None, None, None)


def test_unreadable_runs_are_left_out(tmp_path):
    exp = write_experiment(tmp_path, "x", {0: 0.5, 1: 0.6})
    (exp / "run1" / "metrics.csv").write_text("")
    write_json(exp / "run2" / "summary.json", {"finished": True})  # summary without metrics
    notes = []
    (e,) = F.load_experiments([tmp_path], notes)
    assert [r.number for r in e.runs] == [0]
    assert e.left_out == ["run1: unreadable metrics.csv (No columns to parse from file)",
                          "run2: no metrics.csv (summary.json without metrics)"]
    assert F.summary_table([e])["runs"].tolist() == [1]


def test_runs_trained_with_another_configuration_are_left_out(tmp_path):
    """The experiment's config replaced after its runs finished (prepare --force, an edit): a run whose
    summary.json records other training settings is not drawn under the new label; other spellings of
    where things are and how they ran, and summaries without a config, still count."""
    exp = write_experiment(tmp_path, "x", {0: 0.5, 1: 0.6, 2: 0.7, 3: 0.8})
    config = ExperimentConfig.load(exp / CONFIG_FILE).to_flat()   # summaries of schema 1 are flat
    in_force = ExperimentConfig.load(exp / CONFIG_FILE).describe_fidelity()
    assert ExperimentConfig.load(exp / CONFIG_FILE).method != "ar1"
    for run, changes, extra in ((0, {}, {"fidelity": in_force, "preprocessing": "caffe"}),
                                (1, {"lr": 0.5, "epochs": 1.0}, {}),
                                (2, {"dataset_root": "/data", "device": "cuda"}, {}),
                                (4, {}, {"fidelity": {**in_force, "classifier_bias": True}}),
                                (6, {}, {"fidelity": {**in_force, "importance_from": "gradients"}}),  # AR1* only
                                (5, {}, {"preprocessing": "imagenet"})):
        if run > 3:
            write_run(exp, run, [0.1, 0.2, 0.3, 0.4])
        summary = json.loads((exp / f"run{run}" / "summary.json").read_text())
        write_json(exp / f"run{run}" / "summary.json", {**summary, "config": {**config, **changes}, **extra})
    notes = []
    (e,) = F.load_experiments([tmp_path], notes)
    assert [r.number for r in e.runs] == [0, 2, 3, 6]
    assert e.left_out == ["run1: trained with another configuration than the experiment's (changed: schedule.epochs, schedule.lr)",
                          "run4: trained with another configuration than the experiment's "
                          "(changed: fidelity.classifier_bias)",
                          "run5: trained with another configuration than the experiment's (changed: model.preprocessing)"]
    assert f"{exp}: run1: trained with another configuration than the experiment's (changed: schedule.epochs, schedule.lr); left out" in notes


def test_same_experiment_reached_twice_is_loaded_once(results):
    exps = F.load_experiments([results, results / "sweep_a", results / "sweep_a" / "e1"])
    assert len(exps) == 9


# ---------------------------------------------------------------------- summary table
def test_summary_values_by_hand(experiments):
    exps, _ = experiments
    table = F.summary_table(exps).set_index("experiment")
    assert len(table) == 8  # the experiment without a finished run is not in the table
    r = table.loc["ar1free_nicv2_391_latent_conv5_4dw_m1500"]
    finals = np.array([50.0, 52.0, 57.0])
    assert r["runs"] == 3 and r["runs_left_out"] == 1 and r["batches"] == 4
    assert r["final_acc_pct_mean"] == pytest.approx(53.0)
    assert r["final_acc_pct_std"] == pytest.approx(math.sqrt((9 + 1 + 16) / 3))  # population std
    avgs = (10.0 + finals) / 2  # mean of a linear ramp 10% -> final
    assert r["avg_acc_pct_mean"] == pytest.approx(avgs.mean())
    assert r["avg_acc_pct_std"] == pytest.approx(avgs.std())
    per_run_train = np.array([10.0 + 3 * (2.0 + 0.1 * k) for k in range(3)])
    assert r["train_s_per_run"] == pytest.approx(per_run_train.mean())
    assert r["train_s_total"] == pytest.approx(per_run_train.sum())
    assert r["eval_s_per_run"] == pytest.approx(2.0) and r["eval_s_total"] == pytest.approx(6.0)
    assert r["train_s_per_batch"] == pytest.approx(2.1)  # incremental batches, mean over runs
    assert r["memory_bytes"] == 1500 * (32768 * 4 + 8)
    assert (r["method"], r["replay"], r["latent_layer"], r["replay_memory"], r["storage"]) == \
        ("ar1free", "latent", "conv5_4/dw", 1500, "float32")
    none = table.loc["ar1free_nicv2_391_none"]
    assert pd.isna(none["replay_memory"]) and none["latent_layer"] == "" and none["memory_bytes"] == 0
    one = table.loc["ar1_nicv2_79_latent_conv5_4dw_m1500"]
    assert (one["runs"], one["final_acc_pct_mean"], one["final_acc_pct_std"]) == (1, pytest.approx(70.0), 0.0)


def test_summary_table_accepts_folders(results):
    assert len(F.summary_table([results])) == 8


# ---------------------------------------------------------------------- grouping
def test_figure1_grouping_and_curves(experiments):
    exps, _ = experiments
    panels = F.accuracy_panels(exps)
    assert list(panels) == [79, 391]
    labels = [ln.label for ln in panels[391]]
    assert labels == [  # methods in the project's order (METHODS), then replay, layer, memory, dtype
        "CWR* + latent replay @ pool6 (M=1500, float32)",
        "AR1*-free, no replay",
        "AR1*-free + native replay (M=1500)",
        "AR1*-free + latent replay @ conv4_1/dw (M=1500, float32)",
        "AR1*-free + latent replay @ conv5_4/dw (M=500, float32)",
        "AR1*-free + latent replay @ conv5_4/dw (M=1500, float32)",
        "AR1*-free + latent replay @ conv5_4/dw (M=1500, uint8)",
    ]
    assert [ln.label for ln in panels[79]] == ["AR1* + latent replay @ conv5_4/dw (M=1500, float32)"]
    line = panels[391][5]
    assert list(line.curve["x"]) == [1, 2, 3, 4]  # encountered batches
    assert line.curve["runs"].tolist() == [3, 3, 3, 3]  # the partial run is left out
    assert line.curve["mean"].iloc[-1] == pytest.approx(53.0)
    assert line.curve["std"].iloc[-1] == pytest.approx(math.sqrt(26 / 3))
    # one colour family per method: every AR1*-free line differs from CWR*'s
    cwr = panels[391][0].colour
    assert all(ln.colour != cwr for ln in panels[391][1:])


def test_iteration_1_is_drawn_at_zero(tmp_path):
    exp = tmp_path / "x"
    ExperimentConfig(runs=[0, 1], profile="caffe").save(exp / CONFIG_FILE)
    write_run(exp, 0, [0.2, 0.3], iteration_1=0.07)
    write_run(exp, 1, [0.4, 0.5], iteration_1=0.09)
    (e,) = F.load_experiments([tmp_path])
    curve = F.accuracy_curve(e)
    assert curve["x"].tolist() == [0, 1, 2]
    assert curve["mean"].tolist() == pytest.approx([8.0, 30.0, 40.0])


def test_layer_and_memory_grouping(experiments):
    exps, _ = experiments
    panels = F.layer_series(exps, "final_accuracy")
    assert list(panels) == [391]  # NICv2-79 has a single layer
    series, baselines = panels[391]
    points = {s.label: {x: round(p[0], 6) for x, p in s.points.items()} for s in series}
    assert list(points)[0].startswith("CWR*")
    assert points == {
        "AR1*-free + native replay (M=1500)": {"data": 61.0},
        "AR1*-free + latent replay (M=500, float32)": {"conv5_4/dw": 46.0},
        "AR1*-free + latent replay (M=1500, float32)": {"conv4_1/dw": 42.0, "conv5_4/dw": 53.0},
        "AR1*-free + latent replay (M=1500, uint8)": {"conv5_4/dw": 50.0},
        "CWR* + latent replay (M=1500, float32)": {"pool6": 56.5},
    }
    assert [b.label for b in baselines] == ["AR1*-free, no replay"]
    assert baselines[0].points[None][0] == pytest.approx(31.0)
    mem = F.memory_series(exps)
    assert list(mem) == [391]
    series, baselines = mem[391]  # only the configurations run with several memory sizes
    assert [s.label for s in series] == ["AR1*-free + latent replay @ conv5_4/dw (float32)"]
    assert series[0].frame()["x"].tolist() == [500, 1500]
    assert series[0].frame()["mean"].tolist() == pytest.approx([46.0, 53.0])
    assert [b.label for b in baselines] == ["AR1*-free, no replay"]
    # dtype is drawn as marker fill, memory size as marker shape, native replay as a star
    by_label = {s.label: s for s in panels[391][0]}
    assert by_label["AR1*-free + latent replay (M=1500, uint8)"].fill == "none"
    assert by_label["AR1*-free + native replay (M=1500)"].marker == "*"
    assert by_label["AR1*-free + latent replay (M=500, float32)"].marker != \
        by_label["AR1*-free + latent replay (M=1500, float32)"].marker


def test_method_colours_are_consistent_across_figures(experiments):
    from matplotlib.colors import to_rgb

    exps, _ = experiments
    cwr = to_rgb(F.METHOD_COLOURS["cwr"])
    line = [ln for ln in F.accuracy_panels(exps)[391] if ln.experiment.method == "cwr"][0]
    series = [s for s in F.layer_series(exps)[391][0] if s.method == "cwr"][0]
    cost = [s for s in F.layer_series(exps, "seconds_per_batch")[391][0] if s.method == "cwr"][0]
    assert np.allclose(line.colour, cwr) and np.allclose(series.colour, cwr) and np.allclose(cost.colour, cwr)
    # the AR1*-free variants are shades of one blue, lighter for lower layers
    ar1free = [s.colour for s in F.layer_series(exps)[391][0] if s.method == "ar1free"]
    assert len(set(ar1free)) == len(ar1free) and sum(ar1free[0]) > sum(ar1free[-1])


def test_memory_footprint(experiments):
    exps, _ = experiments
    df = F.memory_footprint(exps)
    row = df[(df.layer == "conv5_4/dw") & (df.storage == "uint8")].iloc[0]
    assert row["bytes"] == 1500 * (32768 + 8) and row["raw_image_bytes"] == 1500 * 49152
    native = df[df.storage == "images"].iloc[0]
    assert native["layer"] == "data" and native["bytes"] == 1500 * (49152 + 8)
    # pooled over scenarios and methods (AR1* on NICv2-79 and AR1*-free on NICv2-391, 3 + 1 runs)
    f32 = df[(df.layer == "conv5_4/dw") & (df.storage == "float32") & (df.memory == 1500)].iloc[0]
    assert f32["runs"] == 4


def test_memory_footprint_keeps_generative_replay_apart(tmp_path):
    """A generative memory (density models) at the same layer and size is not averaged with latents."""
    write_experiment(tmp_path, "lat", {0: 0.5}, method="ar1free", latent_layer="conv5_4/dw")
    write_experiment(tmp_path, "glr", {0: 0.4}, method="ar1free", replay="generative", latent_layer="conv5_4/dw")
    df = F.memory_footprint(F.load_experiments([tmp_path]))
    assert sorted(df["storage"]) == ["float32", "generative"] and (df["runs"] == 1).all()
    assert F.STORAGE_STYLE["generative"][1].startswith("generative latent replay")


def test_differing_config_keys_are_named(tmp_path):
    write_experiment(tmp_path, "a", {0: 0.5}, lr=0.001)
    write_experiment(tmp_path, "b", {0: 0.6}, lr=0.0003)
    write_experiment(tmp_path, "c", {0: 0.6}, name="copy", lr=0.0003)  # same training config twice
    labels = [ln.label for ln in F.accuracy_panels(F.load_experiments([tmp_path]))[391]]
    assert sorted(labels) == ["AR1*-free + latent replay @ conv5_4/dw (lr=0.0003) [" + f"{tmp_path.name}/b]",
                              "AR1*-free + latent replay @ conv5_4/dw (lr=0.0003) [" + f"{tmp_path.name}/c]",
                              "AR1*-free + latent replay @ conv5_4/dw (lr=0.001)"]


# ---------------------------------------------------------------------- files written / skipped
def test_make_figures_writes_every_figure(results, tmp_path):
    out = tmp_path / "figs"
    written = F.make_figures([results], out, formats=("png", "pdf"))
    assert set(written) == {"accuracy_vs_batches", "final_accuracy_vs_layer", "cost_vs_layer", "memory_vs_layer",
                            "final_accuracy_vs_memory", "summary"}
    expected = {f"{stem}.{fmt}" for stem in F.FIGURES.values() for fmt in ("png", "pdf")} | {"summary.csv", "summary.md"}
    assert {p.name for p in out.iterdir()} == expected
    assert all(p.stat().st_size > 1000 for ps in written.values() for p in ps if p.suffix in (".png", ".pdf"))
    assert (out / "fig1_accuracy_vs_batches.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "fig1_accuracy_vs_batches.pdf").read_bytes()[:5] == b"%PDF-"
    csv = pd.read_csv(out / "summary.csv")
    assert len(csv) == 8 and csv["final_acc_pct_mean"].round(4).tolist().count(53.0) == 1
    md = (out / "summary.md").read_text()
    assert "| NICv2-391 | AR1*-free + latent replay @ conv5_4/dw (M=1500, float32) " in md
    assert "53.00 ± 2.94" in md and "3 (+1 left out)" in md
    assert "run3: partial" in md and "only_partial: no finished run" in md


def test_figures_with_nothing_to_show_are_skipped(tmp_path, caplog):
    write_experiment(tmp_path / "res", "only", {0: 0.5, 1: 0.6})
    out = tmp_path / "figs"
    with caplog.at_level("INFO", logger="latent_replay.figures"):
        report = F.build_figures([tmp_path / "res"], out)
    assert set(report.written) == {"accuracy_vs_batches", "summary"}
    assert set(report.skipped) == {"final_accuracy_vs_layer", "cost_vs_layer", "memory_vs_layer",
                                   "final_accuracy_vs_memory"}
    assert {p.name for p in out.iterdir()} == {"fig1_accuracy_vs_batches.png", "summary.csv", "summary.md"}
    assert "skipped final_accuracy_vs_memory: no configuration was run with two or more memory sizes" in caplog.text


def test_nothing_finished_writes_nothing(tmp_path):
    write_experiment(tmp_path / "res", "p", {}, partial=[0])
    assert F.make_figures([tmp_path / "res"], tmp_path / "figs") == {}
    assert not (tmp_path / "figs").exists()


def test_cli(results, tmp_path):
    out = tmp_path / "figs"
    r = CliRunner().invoke(F.figures_command, [str(results), "--out", str(out), "--format", "png"])
    assert r.exit_code == 0, r.output
    assert "wrote accuracy_vs_batches: " in r.output and "wrote summary: " in r.output
    assert "run3: partial" in r.output
    assert len(list(out.glob("*.png"))) == 5
    r = CliRunner().invoke(F.figures_command, [str(results), "--out", str(out), "--format", "png,jpx"])
    assert r.exit_code == 1 and "format 'jpx' is not supported" in r.output
    ref = tmp_path / "ref.tsv"
    ref.write_text(SYNTHETIC_TSV.replace("79", "391"))
    r = CliRunner().invoke(F.figures_command, [str(results), "--out", str(out), "--format", "png", "--reference",
                                               str(ref), "--reference-strategies", "AR1*"])
    assert r.exit_code == 0, r.output
    assert "| NICv2-391 | AR1* | 2 |" in (out / "summary.md").read_text()
    assert "| NICv2-391 | naive |" not in (out / "summary.md").read_text()
    empty = tmp_path / "empty"
    empty.mkdir()
    r = CliRunner().invoke(F.figures_command, [str(empty), "--out", str(out)])
    assert r.exit_code == 1 and "no experiment with a finished run" in r.output


# ---------------------------------------------------------------------- reference curves
SYNTHETIC_TSV = (
    "###################################\n# scenario: NICv2 - 79\n# net: MobileNet v1\n# strategy: AR1*\n"
    "###################################\n"
    "7,174\t14\t20,5\n7,174\t16\t21,5\n"
    "###################################\n# scenario: NICv2 - 79\n# net: MobileNet v1\n# strategy: NAIVE\n"
    "###################################\n"
    "1,5\t10\t11\n\n"
)


def test_reference_parser_synthetic(tmp_path):
    p = tmp_path / "results_79_multirun.tsv"
    p.write_text(SYNTHETIC_TSV)
    scenario, curves = F.read_reference_tsv(p)
    assert scenario == 79 and list(curves) == ["AR1*", "NAIVE"]
    np.testing.assert_allclose(curves["AR1*"], [[7.174, 14, 20.5], [7.174, 16, 21.5]])
    assert curves["NAIVE"].shape == (1, 3)
    # scenario from the header when the name has none; strategy filter by display name
    q = tmp_path / "curves.tsv"
    q.write_text(SYNTHETIC_TSV)
    assert list(F.load_reference(q, ["naive"])[79]) == ["NAIVE"]
    with pytest.raises(ValueError, match="no reference strategy named ewc"):
        F.load_reference(q, ["EWC"])
    with pytest.raises(ValueError, match=r"missing: no such file or folder"):
        F.load_reference(tmp_path / "missing")
    bad = tmp_path / "results_391_bad.tsv"
    bad.write_text("# strategy: X\n1,0\t2,0\n1,0\n")
    with pytest.raises(ValueError, match=r"results_391_bad.tsv:3: 1 values"):
        F.read_reference_tsv(bad)


def test_reference_alignment():
    # num_batches + 1 points: point 0 is after iteration 1 (x = 0), point k after batch k-1 (x = k)
    assert F.reference_x(80, 79).tolist() == list(range(80))
    assert F.reference_x(79, 79).tolist() == list(range(1, 80))


def test_reference_overlay_is_drawn(results, tmp_path):
    p = tmp_path / "ref" / "results_391_multirun.tsv"
    p.parent.mkdir()
    p.write_text(SYNTHETIC_TSV.replace("79", "391"))
    written = F.make_figures([results], tmp_path / "figs", reference=p.parent)
    assert "accuracy_vs_batches" in written
    md = (tmp_path / "figs" / "summary.md").read_text()
    assert "| NICv2-391 | AR1* | 2 | 21.00 ± 0.50 |" in md


def test_reference_parser_real_files():
    """The published curves shipped with the package (the default of `figures --reference`)."""
    ref = F.load_reference(F.REFERENCE_RESULTS)
    assert sorted(ref) == [79, 196, 391]
    published = {  # the NICv2 paper's data: mean ± population std of the final value over 10 runs
        391: {"AR1*": (56.32, 1.00), "CWR*": (56.99, 0.91)},
        196: {"AR1*": (60.58, 1.36), "CWR*": (56.88, 0.85)},
        79: {"AR1*": (63.50, 1.14), "CWR*": (57.07, 1.87)},
    }
    for s, strategies in published.items():
        assert set(ref[s]) == {"AR1*", "CWR*", "LWF", "NAIVE", "EWC", "AR1*_BN"}
        for strategy, (mean, std) in strategies.items():
            arr = ref[s][strategy]
            assert arr.shape == (10, s + 1)
            assert round(arr[:, -1].mean(), 2) == mean and round(arr[:, -1].std(), 2) == std
        assert ref[s]["AR1*"][:, 0] == pytest.approx(7.174) and ref[s]["AR1*"][:, 1] == pytest.approx(14.0)
    assert round(ref[391]["NAIVE"][:, -1].mean(), 2) == 8.03
    assert round(ref[79]["EWC"][:, -1].mean(), 2) == 36.98


def test_shipped_reference_curves_are_documented():
    """Beside the copies: their source, licence and checksums (unmodified copies of the published files)."""
    import hashlib

    note = (F.REFERENCE_RESULTS / "README.md").read_text()
    tsvs = sorted(F.REFERENCE_RESULTS.glob("*.tsv"))
    assert [p.name for p in tsvs] == [f"results_{s}_multirun.tsv" for s in (196, 391, 79)]
    for p in tsvs:
        assert f"| `{p.name}` | {p.stat().st_size:,} | `{hashlib.sha256(p.read_bytes()).hexdigest()}` |" in note
    assert "https://github.com/vlomonaco/core50" in note and "arXiv:1907.03799" in note
    assert "CC BY 4.0" in note and "https://creativecommons.org/licenses/by/4.0/" in note


def _published_rows(out: Path) -> list[str]:
    md = (out / "summary.md").read_text()
    return [line for line in md.split("## Published", 1)[1].splitlines() if line.startswith("| NICv2-")] \
        if "## Published" in md else []


def test_cli_reference_default_off_and_folder(results, tmp_path):
    """The shipped curves by default (only the scenarios of the results: 79 and 391 here), none with
    --no-reference, another folder with --reference (a scenario it lacks gets no curve, no error)."""
    def run(out, *args):
        return CliRunner().invoke(F.figures_command, [str(results), "--out", str(tmp_path / out), "--format", "png",
                                                      *args])

    r = run("default")
    assert r.exit_code == 0, r.output
    rows = _published_rows(tmp_path / "default")
    assert "| NICv2-391 | AR1* | 10 | 56.32 ± 1.00 |" in rows and "| NICv2-79 | EWC | 10 | 36.98 ± 5.60 |" in rows
    assert len(rows) == 12 and not any("NICv2-196" in row for row in rows)
    assert (tmp_path / "default" / "fig1_accuracy_vs_batches.png").is_file()
    r = run("off", "--no-reference")
    assert r.exit_code == 0, r.output
    assert _published_rows(tmp_path / "off") == [] and (tmp_path / "off" / "fig1_accuracy_vs_batches.png").is_file()
    ref = tmp_path / "ref" / "results_391_multirun.tsv"
    ref.parent.mkdir()
    ref.write_text(SYNTHETIC_TSV.replace("79", "391"))
    r = run("folder", "--reference", str(ref.parent))
    assert r.exit_code == 0, r.output
    assert _published_rows(tmp_path / "folder") == ["| NICv2-391 | AR1* | 2 | 21.00 ± 0.50 |",
                                                    "| NICv2-391 | naive | 1 | 11.00 ± 0.00 |"]
    r = run("both", "--no-reference", "--reference", str(ref.parent))
    assert r.exit_code == 2 and "--no-reference cannot be combined with --reference" in r.output
    r = run("strategies", "--reference-strategies", "ar1*,cwr*")
    assert r.exit_code == 0, r.output
    assert [row.split(" | ")[1] for row in _published_rows(tmp_path / "strategies")] == ["AR1*", "CWR*"] * 2


def test_accuracy_panels_have_one_y_range_that_fits_every_panel(tmp_path, monkeypatch):
    """The first panel's data must not fix the panels' common y range: a higher curve in a later panel
    stays inside the axes."""
    write_experiment(tmp_path / "res", "low", {0: 0.30}, scenario=79)
    write_experiment(tmp_path / "res", "high", {0: 0.95})
    figs = []
    monkeypatch.setattr(F.plots, "_save", lambda fig, *a: figs.append(fig) or [tmp_path / "fig.png"])
    F.build_figures([tmp_path / "res"], tmp_path / "figs", reference=F.REFERENCE_RESULTS, only=["accuracy_vs_batches"])
    (fig,) = figs
    assert [ax.get_title() for ax in fig.axes] == ["NICv2-79", "NICv2-391"]
    assert all(ax.get_ylim()[0] == 0 and ax.get_ylim()[1] >= 95 for ax in fig.axes)


def test_figures_are_written_atomically(tmp_path):
    """save_figure writes through a temporary file renamed into place: a failed save leaves neither a
    partial figure nor a temporary file behind."""
    from matplotlib.figure import Figure

    fig = Figure()
    fig.add_subplot().plot([0, 1], [1, 0])
    png, pdf = tmp_path / "f" / "curve.png", tmp_path / "f" / "curve.pdf"
    assert F.save_figure(fig, [png, pdf], dpi=50) == [png, pdf]
    assert png.read_bytes().startswith(b"\x89PNG") and pdf.read_bytes().startswith(b"%PDF")
    before = png.read_bytes()
    with pytest.raises(ValueError, match="Format 'nope' is not supported"):
        F.save_figure(fig, [png, tmp_path / "f" / "curve.nope"], dpi=80)
    assert sorted(p.name for p in (tmp_path / "f").iterdir()) == ["curve.pdf", "curve.png"]
    assert png.read_bytes() != before and png.read_bytes().startswith(b"\x89PNG")   # the one before, whole


def test_runs_stopped_by_max_batches_are_named(tmp_path):
    """A run's summary.json records the scenario's length: one cut short by max_batches is noted."""
    exp = write_experiment(tmp_path, "e", {0: 0.5, 1: 0.6})
    for r, total in ((0, 4), (1, 391)):
        path = exp / f"run{r}" / "summary.json"
        write_json(path, {**json.loads(path.read_text()), "scenario_batches": total})
    notes = []
    F.load_experiments([tmp_path], notes)
    assert notes == [f"{exp}: stopped before the end of the scenario by max_batches (run 1: 4 of 391 batches); "
                     "the final accuracy of such a run is that of the last batch it trained"]


def test_folders_that_only_look_like_runs_are_ignored(tmp_path):
    """A backup such as run0.bak beside the runs is neither aggregated nor plotted (it crashed both)."""
    from latent_replay.results import aggregate_runs

    exp = write_experiment(tmp_path, "e", {0: 0.5, 1: 0.7})
    shutil.copytree(exp / "run0", exp / "run0.bak")
    out = aggregate_runs(exp)
    assert out["runs"].max() == 2
    assert out[out["batch"] == 3]["test_accuracy_mean"].iloc[0] == pytest.approx(60.0 / 100)
    (e,) = F.load_experiments([tmp_path])
    assert [r.number for r in e.runs] == [0, 1]
