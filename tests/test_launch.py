"""prepare_experiment.py (latent_replay.launch): the original's arguments, validation order (spec §2.1 items
1-14), the JSON written, both run-script flavours (golden files, shellcheck) and the local launcher end to end.

Regenerate the golden files after a deliberate change: ``LATENT_REPLAY_UPDATE_GOLDEN=1 pytest tests/test_launch.py``.
"""
from __future__ import annotations

import dataclasses

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from latent_replay import __version__
from latent_replay import launch
from latent_replay.config import LATENT_LAYERS, SCHEMA_VERSION, ExperimentConfig
from latent_replay.data.nicv2 import inventory_from_root, write_nicv2
from latent_replay.launch import CONFIG_FILE, RUN_SCRIPT, Mount, Plan, main

REPO = Path(__file__).resolve().parents[1]
SHIM = REPO / "run_experiments" / "prepare_experiment.py"
GOLDEN = Path(__file__).resolve().parent / "golden"
UPDATE = os.environ.get("LATENT_REPLAY_UPDATE_GOLDEN") == "1"
SHELLCHECK = shutil.which("shellcheck")
needs_shellcheck = pytest.mark.skipif(SHELLCHECK is None, reason="shellcheck is not installed (Debian package "
                                      "'shellcheck'; `make docker-test` installs it)")


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    """A tiny CORe50 root (path with a space) with NICv2-391 and -79 filelists in DB_PATH/batch_filelists."""
    from conftest import write_tiny_root

    root = write_tiny_root(tmp_path_factory.mktemp("launch") / "core 50")
    write_nicv2(root / "batch_filelists", inventory_from_root(root / "core50_128x128"), scenarios=(391, 79), runs=range(5))
    return root


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_rejected(code, err, out_dir, starts):
    assert code == 2
    assert err.count("\n") == 1, err
    assert err.startswith(f"prepare_experiment.py: error: {starts}"), err
    assert not Path(out_dir).exists()   # nothing written


# ----------------------------------------------------------------------------------- basics
def test_list_layers_and_help(capsys):
    code, out, err = run(["list_layers"], capsys)
    assert code == 0 and out.split() == list(LATENT_LAYERS) and len(LATENT_LAYERS) == 15 and not err
    code, out, _ = run(["-h"], capsys)
    assert code == 0 and "METHOD SCENARIO REPLAY DB_PATH" in out and "--nvidia_docker" in out
    code, _, err = run(["list_layers", "391", "no", "/x"], capsys)   # list_layers only as the only argument
    assert code == 2 and "argument METHOD: invalid choice 'list_layers'" in err


def test_missing_and_unknown_arguments_are_one_line(db, tmp_path, capsys):
    code, _, err = run(["CWR", "391"], capsys)
    assert code == 2 and err == ("prepare_experiment.py: error: the following arguments are required: REPLAY, DB_PATH "
                                 "(see -h)\n")
    code, _, err = run(["AR1F", "391", "latent", db, "--out", tmp_path / "o", "--bogus", "1"], capsys)
    assert_rejected(code, err, tmp_path / "o", "unrecognized arguments: --bogus 1")


# ------------------------------------------------------------------------- every rule, one by one
def _no_labels(tmp_path):
    d = tmp_path / "nolabels"
    (d / "core50_128x128").mkdir(parents=True)
    return d


def _no_images(tmp_path):
    d = tmp_path / "noimages"
    d.mkdir()
    (d / "core50_labels.txt").write_text("\n".join(f"obj{i}" for i in range(50)) + "\n")
    return d


def _bad_labels(tmp_path):
    d = _no_labels(tmp_path)
    (d / "core50_labels.txt").write_text("a\nb\n")
    return d


RULES = [  # (id, argv builder, expected message start)
    ("1 method", lambda db, t: ["XYZ", "391", "latent", db],
     "argument METHOD: invalid choice 'XYZ' (choose from NAIVE, JOINT, CWR, AR1S, AR1F, LWF)"),
    ("1 method case", lambda db, t: ["cwr", "391", "latent", db], "argument METHOD: invalid choice 'cwr'"),
    ("2 scenario", lambda db, t: ["CWR", "80", "latent", db],
     "argument SCENARIO: invalid choice '80' (choose from 79, 196, 391)"),
    # B17: the original printed the method here; the replay value is shown
    ("3 replay", lambda db, t: ["CWR", "391", "foo", db],
     "argument REPLAY: invalid choice 'foo' (choose from no, pure, latent, generative)"),
    ("4 db missing", lambda db, t: ["CWR", "391", "no", t / "nope"], "argument DB_PATH: "),
    ("4 db is a file", lambda db, t: ["CWR", "391", "no", db / "core50_labels.txt"], "argument DB_PATH: "),
    ("5 labels", lambda db, t: ["CWR", "391", "no", _no_labels(t)], "argument DB_PATH: "),
    ("5 labels count", lambda db, t: ["CWR", "391", "no", _bad_labels(t)], "argument DB_PATH: "),
    ("6 images", lambda db, t: ["CWR", "391", "no", _no_images(t)], "argument DB_PATH: "),
    # B17: the original named only old/new
    ("7 nvidia_docker", lambda db, t: ["CWR", "391", "no", db, "--nvidia_docker", "v3"],
     "argument --nvidia_docker: invalid choice 'v3' (choose from old, nvidia-docker2, new, nvidia-container-toolkit)"),
    ("8 layer", lambda db, t: ["AR1F", "391", "latent", db, "--latent_layer", "conv9"],
     "argument --latent_layer: invalid choice 'conv9' (choose from data, conv2_1/dw,"),
    ("9 layer without latent (no)", lambda db, t: ["AR1F", "391", "no", db, "--latent_layer", "conv5_4/dw"],
     "argument --latent_layer: only used with latent or generative replay (REPLAY is 'no'"),
    ("9 layer without latent (pure)", lambda db, t: ["AR1F", "391", "pure", db, "--latent_layer", "pool6"],
     "argument --latent_layer: only used with latent or generative replay (REPLAY is 'pure'"),
    ("10 CWR layer", lambda db, t: ["CWR", "391", "latent", db, "--latent_layer", "conv5_4/dw"],
     "argument --latent_layer: CWR trains only the classifier, so latent replay must use pool6 (got 'conv5_4/dw'"),
    ("10 CWR layer generative", lambda db, t: ["CWR", "391", "generative", db, "--latent_layer", "conv6/dw"],
     "argument --latent_layer: CWR trains only the classifier, so generative replay must use pool6"),
    ("12 memory int", lambda db, t: ["AR1F", "391", "latent", db, "--replay_memory", "lots"],
     "argument --replay_memory: invalid int value 'lots' (expected an integer > 0)"),
    ("12 memory float", lambda db, t: ["AR1F", "391", "latent", db, "--replay_memory", "1.5"],
     "argument --replay_memory: invalid int value '1.5'"),
    ("12 memory zero", lambda db, t: ["AR1F", "391", "latent", db, "--replay_memory", "0"],
     "argument --replay_memory: must be an integer > 0, got 0"),
    ("12 memory negative", lambda db, t: ["AR1F", "391", "pure", db, "--replay_memory", "-5"],
     "argument --replay_memory: must be an integer > 0, got -5"),
    ("13 memory without replay", lambda db, t: ["AR1F", "391", "no", db, "--replay_memory", "100"],
     "argument --replay_memory: only used with replay (REPLAY is 'no'; choose pure, latent or generative)"),
    ("joint with replay", lambda db, t: ["JOINT", "391", "pure", db],
     "argument REPLAY: JOINT retrains on all the data seen so far and takes no replay (got 'pure'; choose no)"),
    ("runs", lambda db, t: ["AR1F", "391", "no", db, "--runs", "0-x"], "argument --runs: '0-x' is not a list or range"),
    ("runs empty range", lambda db, t: ["AR1F", "391", "no", db, "--runs", "4-0"], "argument --runs: range '4-0' is empty"),
    ("launcher", lambda db, t: ["AR1F", "391", "no", db, "--launcher", "slurm"],
     "argument --launcher: invalid choice 'slurm' (choose from docker, local)"),
    ("device", lambda db, t: ["AR1F", "391", "no", db, "--device", "tpu"],
     "argument --device: invalid choice 'tpu' (choose from auto, cpu, cuda)"),
    ("profile", lambda db, t: ["AR1F", "391", "no", db, "--profile", "exact"],
     "argument --profile: invalid choice 'exact' (choose from fixed, caffe)"),
    ("out is a file", lambda db, t: ["AR1F", "391", "no", db, "--out", db / "core50_labels.txt"], "argument --out: "),
    ("filelists missing", lambda db, t: ["AR1F", "391", "no", db, "--filelists", t / "nolists"],
     "argument --filelists: "),
    ("filelists lack the run", lambda db, t: ["AR1F", "391", "no", db, "--runs", "7"],
     "argument --filelists: "),
    ("filelists lack the scenario", lambda db, t: ["AR1F", "196", "no", db], "argument --filelists: "),
    ("weights", lambda db, t: ["AR1F", "391", "no", db, "--weights", t / "w.pt"], "argument --weights: "),
    ("image", lambda db, t: ["AR1F", "391", "no", db, "--image", "a b"], "argument --image: 'a b' is not an image name"),
    ("max_batches", lambda db, t: ["AR1F", "391", "no", db, "--max_batches", "0"],
     "argument --max_batches: must be an integer >= 1, got 0"),
    ("set syntax", lambda db, t: ["AR1F", "391", "no", db, "--set", "epochs"], "argument --set: 'epochs' is not KEY=VALUE"),
    ("set unknown", lambda db, t: ["AR1F", "391", "no", db, "--set", "epoch=1"],
     "argument --set: unknown config key 'epoch'"),
    ("set managed", lambda db, t: ["AR1F", "391", "no", db, "--set", "runs=[1]"],
     "argument --set: 'runs' is set by --runs, not --set"),
    ("set managed by section", lambda db, t: ["AR1F", "391", "latent", db, "--set", "replay.params.memory=5"],
     "argument --set: 'replay_memory' is set by --replay_memory, not --set"),
    ("set section value", lambda db, t: ["AR1F", "391", "no", db, "--set", "schedule.epochs=-1"],
     "argument --set: schedule.epochs: must be > 0, got -1.0"),
    ("set value", lambda db, t: ["AR1F", "391", "no", db, "--set", "epochs=-1"],
     "argument --set: epochs: must be > 0, got -1"),
    ("set name newline", lambda db, t: ["AR1F", "391", "no", db, "--set", "name=x\necho INJECTED"],
     "argument --set: name: 'x\\necho INJECTED' is not a plain folder name"),
    ("set nested", lambda db, t: ["AR1F", "391", "no", db, "--set", "fidelity.importance_from=magic"],
     "argument --set: fidelity.importance_from: 'magic' is not one of gradients, updates"),
    ("set name", lambda db, t: ["AR1F", "391", "no", db, "--set", "name=../up"],
     "argument --set: name: '../up' is not a plain folder name"),
    ("docker path with colon", lambda db, t: ["AR1F", "391", "no", db, "--out", t / "a:b"],
     "argument --out: "),
]


@pytest.mark.parametrize("rule, build, expected", RULES, ids=[r[0] for r in RULES])
def test_each_rule_rejects_with_one_line(rule, build, expected, db, tmp_path, capsys):
    out = tmp_path / "results"
    argv = build(db, tmp_path)
    if "--out" not in argv:
        argv += ["--out", out]
    code, stdout, err = run(argv, capsys)
    assert_rejected(code, err, out, expected)
    assert stdout == ""   # not even the info lines of earlier items


ORDER = [  # several faults at once: the earliest item of spec §2.1 is reported
    (["XYZ", "80", "foo", "/nope", "--nvidia_docker", "v3"], "argument METHOD"),
    (["CWR", "80", "foo", "/nope"], "argument SCENARIO"),
    (["CWR", "391", "foo", "/nope"], "argument REPLAY"),
    (["CWR", "391", "no", "/nope", "--nvidia_docker", "v3", "--latent_layer", "x"], "argument DB_PATH"),
    (["CWR", "391", "no", "{db}", "--nvidia_docker", "v3", "--latent_layer", "x"], "argument --nvidia_docker"),
    (["AR1F", "391", "no", "{db}", "--latent_layer", "x", "--replay_memory", "0"], "argument --latent_layer: invalid"),
    (["AR1F", "391", "no", "{db}", "--latent_layer", "pool6", "--replay_memory", "5"], "argument --latent_layer: only"),
    (["CWR", "391", "latent", "{db}", "--latent_layer", "conv6/dw", "--replay_memory", "x"],
     "argument --latent_layer: CWR"),
    (["AR1F", "391", "no", "{db}", "--replay_memory", "x", "--runs", "q"], "argument --replay_memory: invalid int"),
    (["JOINT", "391", "no", "{db}", "--replay_memory", "9", "--runs", "q"], "argument --replay_memory: only used"),
    (["JOINT", "391", "latent", "{db}", "--runs", "q", "--device", "tpu"], "argument REPLAY: JOINT"),
    (["AR1F", "391", "no", "{db}", "--device", "tpu", "--runs", "q", "--launcher", "x"], "argument --runs"),
    (["AR1F", "391", "no", "{db}", "--device", "tpu", "--launcher", "x"], "argument --launcher"),
    (["AR1F", "391", "no", "{db}", "--profile", "x", "--device", "tpu"], "argument --device"),
    (["AR1F", "196", "no", "{db}", "--weights", "/nope.pt", "--profile", "x"], "argument --profile"),
    (["AR1F", "196", "no", "{db}", "--weights", "/nope.pt"], "argument --filelists"),
    # options given before the positionals do not change the order
    (["--nvidia_docker", "v3", "--latent_layer", "x", "XYZ", "391", "no", "{db}"], "argument METHOD"),
]


@pytest.mark.parametrize("argv, expected", ORDER, ids=[e for _, e in ORDER])
def test_validation_order_follows_the_original(argv, expected, db, tmp_path, capsys):
    out = tmp_path / "results"
    code, _, err = run([str(a).replace("{db}", str(db)) for a in argv] + ["--out", out], capsys)
    assert_rejected(code, err, out, expected)


# --------------------------------------------------------------------------- what gets written
def test_cwr_latent_forced_to_pool6_and_memory_info(db, tmp_path, capsys):
    code, out, err = run(["CWR", "391", "latent", db, "--out", tmp_path / "r", "--runs", "0"], capsys)
    assert code == 0, err
    assert out.splitlines()[:2] == ["info: CWR with latent replay: latent layer pool6 (the only one CWR* supports)",
                                    "info: replay memory not given: 1500 patterns"]
    cfg = ExperimentConfig.load(tmp_path / "r" / "cwr_nicv2_391_latent_pool6_m1500" / CONFIG_FILE)
    assert cfg.latent_layer == "pool6" and cfg.replay_memory == 1500
    # explicit pool6 is fine and prints no forcing line
    code, out, _ = run(["CWR", "391", "latent", db, "--latent_layer", "pool6", "--replay_memory", "300",
                        "--out", tmp_path / "r2", "--runs", "0"], capsys)
    assert code == 0 and "info:" not in out


@pytest.mark.parametrize("replay, profile, info", [("no", "fixed", False), ("pure", "fixed", True),
                                                   ("no", "caffe", True)])
def test_memory_info_only_when_a_memory_is_used(replay, profile, info, db, tmp_path, capsys):
    # B1/B17: the original printed "1500 will be used" also without replay; the caffe profile keeps B1's memory
    code, out, err = run(["AR1S", "391", replay, db, "--profile", profile, "--out", tmp_path / "r", "--runs", "0"], capsys)
    assert code == 0, err
    assert ("info: replay memory not given: 1500 patterns" in out) is info


COMBOS = [(m, r) for m in launch.METHODS for r in launch.REPLAYS if not (m == "JOINT" and r != "no")]


def test_json_for_every_method_and_replay(db, tmp_path, capsys):
    """Docker launcher (container paths: deterministic); compared with tests/golden/prepare_configs.json."""
    found = {}
    for method, replay in COMBOS:
        out = tmp_path / f"{method}-{replay}"
        code, stdout, err = run([method, "391", replay, db, "--out", out], capsys)
        assert code == 0, err
        (exp,) = [p for p in out.iterdir() if p.is_dir()]
        data = json.loads((exp / CONFIG_FILE).read_text())
        cfg = ExperimentConfig.load(exp / CONFIG_FILE)
        assert cfg.to_dict() == data and data["schema_version"] == SCHEMA_VERSION
        assert exp.name == cfg.experiment_name
        assert os.access(exp / RUN_SCRIPT, os.X_OK)
        keys = ("method", "scenario", "replay", "latent_layer", "replay_memory", "runs", "device", "profile",
                "dataset_root", "filelists", "weights", "out", "max_batches", "schema_version")
        flat = {**cfg.to_flat(), "schema_version": data["schema_version"]}
        found[f"{method} {replay}"] = {"experiment": exp.name, **{k: flat[k] for k in keys},
                                       "info": [ln for ln in stdout.splitlines() if ln.startswith("info:")]}
    _golden_json("prepare_configs.json", found)


def _golden_json(name, data):
    path = GOLDEN / name
    text = json.dumps(data, indent=1, sort_keys=True) + "\n"
    if UPDATE:
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert json.loads(path.read_text()) == data, f"{name} differs (LATENT_REPLAY_UPDATE_GOLDEN=1 to regenerate)"


def test_local_paths_and_all_new_options(db, tmp_path, capsys):
    weights = tmp_path / "w dir" / "weights.pt"
    weights.parent.mkdir()
    weights.write_bytes(b"x")
    code, out, err = run(["NAIVE", "79", "generative", db, "--latent_layer", "conv6/dw", "--replay_memory", "200",
                          "--runs", "1", "--launcher", "local", "--device", "cpu", "--profile", "caffe",
                          "--out", tmp_path / "r", "--filelists", db / "batch_filelists", "--weights", weights,
                          "--max_batches", "3", "--set", "epochs=1", "--set", "fidelity.padded_test_set=false",
                          "--set", "name=my run", "--set", "lr=null", "--set", "brn_first_batch.t0=10",
                          "--set", "brn_incremental.d_max=0.25"], capsys)
    assert code == 0, err
    cfg = ExperimentConfig.load(tmp_path / "r" / "my run" / CONFIG_FILE)
    assert (cfg.method, cfg.scenario, cfg.replay, cfg.latent_layer, cfg.replay_memory) == ("naive", 79, "generative",
                                                                                          "conv6/dw", 200)
    assert (cfg.runs, cfg.device, cfg.profile, cfg.max_batches, cfg.epochs) == ([1], "cpu", "caffe", 3, 1.0)
    assert cfg.fidelity.padded_test_set is False and cfg.fidelity.eval_at_iteration_1 is True
    # one key of a settings object, the others keep their defaults
    default = ExperimentConfig()
    assert cfg.brn_first_batch == dataclasses.replace(default.brn_first_batch, t0=10)
    assert cfg.brn_incremental == dataclasses.replace(default.brn_incremental, d_max=0.25)
    assert cfg.dataset_root == str(db) and cfg.filelists == str(db / "batch_filelists")
    assert cfg.weights == str(weights) and cfg.out == str(tmp_path / "r")
    script = (tmp_path / "r" / "my run" / RUN_SCRIPT).read_text()
    assert "docker" not in script and f"--config '{tmp_path / 'r' / 'my run' / CONFIG_FILE}'" in script


def test_docker_mounts_and_container_paths(db, tmp_path, capsys):
    lists = tmp_path / "lists"
    shutil.copytree(db / "batch_filelists", lists)
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"x")
    inside = db / "weights.pt"
    inside.write_bytes(b"x")
    try:
        code, _, err = run(["AR1F", "391", "pure", db, "--filelists", lists, "--weights", weights, "--runs", "0",
                            "--nvidia_docker", "nvidia-container-toolkit", "--out", tmp_path / "r",
                            "--image", "me/lr:dev"], capsys)
        assert code == 0, err
        exp = tmp_path / "r" / "ar1free_nicv2_391_native_m1500"
        cfg = ExperimentConfig.load(exp / CONFIG_FILE)
        assert (cfg.dataset_root, cfg.filelists, cfg.weights, cfg.out) == ("/datasets", "/filelists", "/weights/w.pt",
                                                                           "/results")
        script = (exp / RUN_SCRIPT).read_text()
        for line in (f"-v '{db}:/datasets:ro'", f"-v {lists}:/filelists:ro", f"-v {weights}:/weights/w.pt:ro",
                     f"-v {tmp_path / 'r'}:/results \\", "--gpus all \\", "image=me/lr:dev",
                     f"train --config /results/{exp.name}/{CONFIG_FILE}"):
            assert line in script
        assert "--runtime=nvidia" not in script
        # filelists and weights inside DB_PATH need no extra mount
        code, _, err = run(["AR1F", "391", "pure", db, "--weights", inside, "--runs", "0", "--out", tmp_path / "r2"],
                           capsys)
        assert code == 0, err
        exp = tmp_path / "r2" / "ar1free_nicv2_391_native_m1500"
        cfg = ExperimentConfig.load(exp / CONFIG_FILE)
        assert (cfg.filelists, cfg.weights) == ("/datasets/batch_filelists", "/datasets/weights.pt")
        script = (exp / RUN_SCRIPT).read_text()
        assert script.count("\n    -v ") == 2 and "--runtime=nvidia \\" in script
        # --device cpu: no GPU option at all
        code, _, err = run(["AR1F", "391", "pure", db, "--device", "cpu", "--runs", "0", "--out", tmp_path / "r3"], capsys)
        assert code == 0, err
        script = (tmp_path / "r3" / "ar1free_nicv2_391_native_m1500" / RUN_SCRIPT).read_text()
        assert "--gpus" not in script and "--runtime" not in script
    finally:
        inside.unlink()


def test_existing_experiment_needs_force(db, tmp_path, capsys):
    argv = ["AR1F", "391", "latent", db, "--out", tmp_path / "r", "--runs", "0"]
    assert run(argv, capsys)[0] == 0
    exp = tmp_path / "r" / "ar1free_nicv2_391_latent_conv5_4dw_m1500"
    (exp / CONFIG_FILE).write_text("mine")
    code, _, err = run(argv + ["--runs", "1"], capsys)
    assert code == 2 and err.count("\n") == 1 and "argument --force: " in err and "add --force" in err
    assert (exp / CONFIG_FILE).read_text() == "mine"
    (exp / CONFIG_FILE).unlink()   # the script alone also marks a prepared experiment
    code, _, err = run(argv, capsys)
    assert code == 2 and not (exp / CONFIG_FILE).exists()
    (exp / "run0").mkdir()
    code, _, err = run(argv + ["--runs", "1", "--force"], capsys)
    assert code == 0, err
    assert ExperimentConfig.load(exp / CONFIG_FILE).runs == [1] and (exp / "run0").is_dir()
    assert sorted(p.name for p in exp.iterdir()) == ["exp_configuration.json", "run0", "run_experiment.sh"]  # no temps
    assert stat.S_IMODE((exp / RUN_SCRIPT).stat().st_mode) == 0o755


def _finished_run(folder: Path, config: dict, **changes) -> None:
    """A run folder as a finished training leaves it: summary.json recording ``config`` with ``changes``."""
    folder.mkdir(parents=True)
    (folder / "metrics.csv").write_text("batch,kind,test_accuracy\n0,batch,0.5\n")
    (folder / "summary.json").write_text(json.dumps({"finished": True, "batches": 1, "final_accuracy": 0.5,
                                                     "config": {**config, **changes}}))


def test_force_sets_aside_finished_runs_of_another_training(db, tmp_path, capsys):
    """prepare --force replacing the configuration: a finished run that trained otherwise is renamed
    run<R>.former (never deleted, never labelled with the new settings, trained again by the run script);
    one trained the same way (or differing only in where things are or how they run) stays."""
    argv = ["AR1F", "391", "latent", db, "--out", tmp_path / "r", "--runs", "0,1,2"]
    assert run(argv, capsys)[0] == 0
    exp = tmp_path / "r" / "ar1free_nicv2_391_latent_conv5_4dw_m1500"
    saved = ExperimentConfig.load(exp / CONFIG_FILE).to_flat()   # summaries of schema 1 are flat
    _finished_run(exp / "run0", saved)
    _finished_run(exp / "run1", saved, lr=0.01, device="cuda", dataset_root="/elsewhere", inference_chunk=64)
    (exp / "run2").mkdir()
    (exp / "run2" / "checkpoint.pt").write_bytes(b"unfinished: its checkpoint is refused when resumed")
    (exp / "run0.former").mkdir()                      # set aside before: the next name is taken
    code, out, err = run(argv + ["--set", "lr=0.01", "--force"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in exp.iterdir()) == [CONFIG_FILE, "run0.former", "run0.former2", "run1", "run2",
                                                     RUN_SCRIPT]
    assert json.loads((exp / "run0.former2" / "summary.json").read_text())["config"]["lr"] == saved["lr"]
    line = [ln for ln in out.splitlines() if "set aside" in ln]
    assert line == [f"info: {launch._display(exp / 'run0')} was trained with another configuration (changed: schedule.lr): "
                    "set aside as run0.former2"]
    # a write that fails moves nothing
    (exp / RUN_SCRIPT).unlink()
    (exp / RUN_SCRIPT).mkdir()
    code, _, err = run(argv + ["--set", "lr=0.02", "--force"], capsys)
    assert code == 1 and "cannot write the experiment" in err and (exp / "run1" / "summary.json").is_file()
    assert not (exp / "run1.former").exists()
    (exp / RUN_SCRIPT).rmdir()
    # the same settings again: nothing more is set aside
    code, out, _ = run(argv + ["--set", "lr=0.01", "--force"], capsys)
    assert code == 0 and "set aside" not in out and (exp / "run1").is_dir()


def test_write_failure_exits_1_with_one_line(db, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run(["AR1F", "391", "no", db, "--out", blocker / "sub", "--runs", "0"], capsys)
    assert code == 1 and err.count("\n") == 1
    assert err.startswith("prepare_experiment.py: error: cannot write the experiment to ")


def test_click_command_is_the_same_launcher(db, tmp_path):
    r = CliRunner().invoke(launch.prepare_command, ["CWR", "80", "no", str(db)])
    assert r.exit_code == 2
    assert r.stderr == ("latent-replay prepare: error: argument SCENARIO: invalid choice '80' "
                        "(choose from 79, 196, 391)\n")
    r = CliRunner().invoke(launch.prepare_command, ["CWR", "391", "no", str(db), "--out", str(tmp_path / "r"),
                                                    "--runs", "0", "--launcher", "local"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "r" / "cwr_nicv2_391_none" / RUN_SCRIPT).is_file()
    r = CliRunner().invoke(launch.prepare_command, ["-h"])
    assert r.exit_code == 0 and "usage: latent-replay prepare" in r.stdout


def test_shim_runs_from_any_folder(db, tmp_path):
    r = subprocess.run([sys.executable, str(SHIM), "AR1S", "391", "nope", str(db)], cwd=tmp_path,
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr == ("prepare_experiment.py: error: argument REPLAY: invalid choice 'nope' "
                                              "(choose from no, pure, latent, generative)\n")
    r = subprocess.run([sys.executable, str(SHIM), "list_layers"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.split()[-1] == "pool6"


def test_shim_without_the_dependencies_uses_the_checkout_venv_or_says_what_to_do(tmp_path):
    """Through its ``#!/usr/bin/env python3`` line the shim may run under a Python without click or numpy:
    it then runs itself again with the checkout's .venv, or fails with one line saying how to get one."""
    venv = REPO / ".venv" / "bin" / "python"
    base = Path(sys.base_prefix) / "bin" / "python3"
    if not venv.is_file() or not base.is_file():
        pytest.skip("needs the checkout's .venv and its base Python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LATENT_REPLAY_SHIM_REEXEC")}
    # -S: no site-packages, so neither click nor numpy (nor an installed latent_replay) can be imported
    r = subprocess.run([str(base), "-S", str(SHIM), "list_layers"], capture_output=True, text=True, env=env,
                       cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.split()[-1] == "pool6", r.stderr
    # a copy of the shim in a folder without .venv or project_source: one line, exit code != 0
    lone = tmp_path / "lone" / "run_experiments" / "prepare_experiment.py"
    lone.parent.mkdir(parents=True)
    shutil.copy(SHIM, lone)
    r = subprocess.run([str(base), "-S", str(lone), "list_layers"], capture_output=True, text=True, env=env,
                       cwd=tmp_path)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr == (f"prepare_experiment.py: {base} lacks the module 'latent_replay' and there is no "
                        f"{tmp_path / 'lone' / '.venv'}: run `make test` (or `make demo`) once in the checkout, "
                        "or `pip install -e .`\n")


# ----------------------------------------------------------------- the shipped filelists by default
@pytest.fixture(scope="module")
def frames_only_core50(tmp_path_factory):
    """A CORe50 folder without filelists holding (empty) every frame that the shipped NICv2-391 run 0 and the
    reduced test list name, all that prepare checks (that each frame exists); runs 1-4 hold the same frames."""
    from conftest import SHIPPED_FILELISTS

    from latent_replay.data.classes import CORE50_CLASS_NAMES
    from latent_replay.data.nicv2 import load_scenario

    root = tmp_path_factory.mktemp("fresh") / "core50"
    images = root / "core50_128x128"
    sc = load_scenario(SHIPPED_FILELISTS, 391, 0)
    paths = {p for fl in (*sc.batches, sc.test) for p in fl.paths}
    for folder in {p.rpartition("/")[0] for p in paths}:
        (images / folder).mkdir(parents=True)
    for p in paths:
        os.close(os.open(images / p, os.O_CREAT | os.O_WRONLY, 0o644))
    (root / "core50_labels.txt").write_text("\n".join(CORE50_CLASS_NAMES) + "\n")
    return root


def test_the_originals_command_on_a_fresh_clone(frames_only_core50, tmp_path):
    """The README's command with only a CORe50 folder: the shipped official lists are the default, mounted
    read-only at /filelists."""
    r = subprocess.run([sys.executable, str(SHIM), "AR1F", "391", "latent", str(frames_only_core50),
                        "--latent_layer", "conv5_4/dw", "--nvidia_docker", "new"],
                       cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("info: replay memory not given: 1500 patterns\n")
    exp = tmp_path / "results" / "ar1free_nicv2_391_latent_conv5_4dw_m1500"
    cfg = ExperimentConfig.load(exp / CONFIG_FILE)
    assert (cfg.method, cfg.scenario, cfg.replay, cfg.latent_layer, cfg.replay_memory, cfg.runs) == \
        ("ar1free", 391, "latent", "conv5_4/dw", 1500, [0, 1, 2, 3, 4])
    assert (cfg.dataset_root, cfg.filelists, cfg.out) == ("/datasets", "/filelists", "/results")
    script = (exp / RUN_SCRIPT).read_text()
    assert f"-v {REPO / 'batch_filelists'}:/filelists:ro" in script and "--gpus all" in script
    assert os.access(exp / RUN_SCRIPT, os.X_OK)


def test_shipped_lists_name_what_is_missing(tiny_root, tmp_path, capsys):
    """Without DB_PATH/batch_filelists the shipped lists are used: a run they lack and frames a partial
    dataset lacks are rejected with what to do."""
    out = tmp_path / "r"
    code, _, err = run(["AR1F", "391", "no", tiny_root, "--runs", "7", "--out", out], capsys)
    assert_rejected(code, err, out, f"argument --filelists: {REPO / 'batch_filelists'}: no folder for NICv2-391 run 7")
    assert "(the shipped lists hold runs 0-4; all 10 official runs: latent-replay download filelists --root" in err
    code, _, err = run(["AR1F", "391", "no", tiny_root, "--runs", "0", "--out", out], capsys)
    assert_rejected(code, err, out, f"argument --filelists: {REPO / 'batch_filelists'}/NICv2_391/run0/train_batch_")
    assert f"does not exist under {tiny_root / 'core50_128x128'} (" in err
    assert f"for a partial dataset make lists of its frames: latent-replay filelists make {tiny_root} --out " \
           f"{tiny_root / 'batch_filelists'}, used by default)" in err


def test_no_shipped_lists_is_one_line(tiny_root, tmp_path, capsys, monkeypatch):
    """An installed copy without the checkout's lists and without LATENT_REPLAY_FILELISTS."""
    from latent_replay.data import filelists

    monkeypatch.setattr(filelists, "_CHECKOUT", tmp_path / "site-packages")
    monkeypatch.delenv(filelists.FILELISTS_ENV, raising=False)
    out = tmp_path / "r"
    code, _, err = run(["AR1F", "391", "no", tiny_root, "--out", out], capsys)
    assert_rejected(code, err, out, "argument --filelists: no shipped filelists: ")
    monkeypatch.setenv(filelists.FILELISTS_ENV, str(tmp_path / "nowhere"))
    code, _, err = run(["AR1F", "391", "no", tiny_root, "--out", out], capsys)
    assert_rejected(code, err, out, f"argument --filelists: LATENT_REPLAY_FILELISTS={tmp_path / 'nowhere'}: not a folder")


# ------------------------------------------------------------------------- run scripts: golden files
def _plan(launcher, flavour, device="auto", mounts=True):
    cfg = ExperimentConfig(method="ar1free", scenario=391, replay="latent", runs=[0, 1, 2, 3, 4], device=device,
                           dataset_root="/datasets" if launcher == "docker" else "/data/core 50",
                           out="/results" if launcher == "docker" else "/home/me/my results")
    out = Path("/home/me/my results")
    ms = [Mount(Path("/data/core 50"), "/datasets"), Mount(Path("/data/lists"), "/filelists"),
          Mount(Path("/data/w.pt"), "/weights/w.pt"), Mount(out, "/results", read_only=False)] if mounts else []
    return Plan(config=cfg, launcher=launcher, experiment_dir=out / cfg.experiment_name, out_dir=out,
                flavour=flavour, image=launch.default_image(), mounts=ms)


SCRIPTS = {
    "run_docker_nvidia-docker2.sh": lambda: launch.render_docker_script(_plan("docker", "old"), Path("/opt/latent replay")),
    "run_docker_nvidia-container-toolkit.sh": lambda: launch.render_docker_script(_plan("docker", "new"),
                                                                                   Path("/opt/latent-replay")),
    "run_docker_cpu_installed.sh": lambda: launch.render_docker_script(_plan("docker", None, "cpu"), None),
    "run_local.sh": lambda: launch.render_local_script(_plan("local", None, mounts=False),
                                                       ["/home/me/.venv/bin/latent-replay"], {}),
    "run_local_pythonpath.sh": lambda: launch.render_local_script(
        _plan("local", None, mounts=False), ["/usr/bin/python3", "-m", "latent_replay.cli"],
        {"PYTHONPATH": "/opt/latent replay/project_source"}),
}


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_run_script_golden(name):
    text = SCRIPTS[name]().replace(__version__, "@VERSION@")
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert text == path.read_text(), f"{name} differs (LATENT_REPLAY_UPDATE_GOLDEN=1 to regenerate)"


@needs_shellcheck
def test_golden_and_written_scripts_pass_shellcheck(db, tmp_path, capsys):
    files = [GOLDEN / n for n in sorted(SCRIPTS)]
    for launcher in ("docker", "local"):
        out = tmp_path / f"re sults {launcher}"
        assert run(["AR1F", "391", "latent", db, "--launcher", launcher, "--out", out, "--runs", "0"], capsys)[0] == 0
        files += list(out.glob(f"*/{RUN_SCRIPT}"))
    r = subprocess.run([SHELLCHECK, "--severity=style", *map(str, files)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_docker_script_with_a_fake_docker(db, tmp_path, capsys):
    """The docker flavour's command line as docker receives it: argument by argument, spaces intact."""
    out = tmp_path / "my results"
    code, _, err = run(["AR1F", "391", "latent", db, "--out", out, "--runs", "0", "--nvidia_docker", "new"], capsys)
    assert code == 0, err
    log = tmp_path / "argv.json"
    fake = tmp_path / "fake docker"
    fake.write_text(f"#!{sys.executable}\nimport json, sys\n"
                    f"if sys.argv[1:3] == ['image', 'inspect']: sys.exit(0)\n"
                    f"json.dump(sys.argv[1:], open({str(log)!r}, 'w'))\nsys.exit(7)\n")
    fake.chmod(0o755)
    script = out / "ar1free_nicv2_391_latent_conv5_4dw_m1500" / RUN_SCRIPT
    env = {**os.environ, "DOCKER": str(fake)}
    env.pop("GLIBC_TUNABLES", None)
    r = subprocess.run(["bash", str(script), "--force"], env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert r.returncode == 7
    assert "training failed (exit 7); if the error is about the GPU or the nvidia runtime, run" in r.stderr
    assert "first_check_nvidia-container-toolkit.sh" in r.stderr
    argv = json.loads(log.read_text())
    uid_gid = f"{os.getuid()}:{os.getgid()}"
    assert argv == ["run", "--rm", "--init", "--gpus", "all", "--network", "none", "--user", uid_gid,
                    "-e", f"GLIBC_TUNABLES={launch.GLIBC_TUNABLES}", "-v", f"{db}:/datasets:ro",
                    "-v", f"{out}:/results", launch.default_image(), "train", "--config",
                    f"/results/ar1free_nicv2_391_latent_conv5_4dw_m1500/{CONFIG_FILE}", "--force"]
    # a missing image: an actionable message instead of a pull from a registry
    fake.write_text("#!/bin/sh\nexit 1\n")
    r = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert r.returncode == 1 and f"image {launch.default_image()} is not available" in r.stderr
    assert "build -t" in r.stderr


# ------------------------------------------------------------------------ the local launcher end to end
def test_local_launcher_end_to_end(tmp_path):
    """Synthetic CORe50 -> prepare_experiment.py --launcher local -> bash run_experiment.sh -> results."""
    from latent_replay.data.synthetic import write_synthetic_core50

    root = tmp_path / "core 50"
    write_synthetic_core50(root, sessions=11, categories=2, objects_per_category=1, frames=2, size=32, progress=False)
    write_nicv2(root / "batch_filelists", inventory_from_root(root / "core50_128x128"), scenarios=(391,), runs=(0,))
    out = tmp_path / "my results"
    r = subprocess.run([sys.executable, str(SHIM), "AR1F", "391", "latent", str(root), "--launcher", "local",
                        "--runs", "0", "--device", "cpu", "--max_batches", "2", "--replay_memory", "20",
                        "--set", "epochs_first_batch=1", "--set", "epochs=1", "--out", str(out)],
                       cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    exp = out / "ar1free_nicv2_391_latent_conv5_4dw_m20"
    assert f"start it with: '{exp.relative_to(tmp_path) / RUN_SCRIPT}'" in r.stdout
    env = {**os.environ, "LATENT_REPLAY_CACHE": str(tmp_path / "cache")}
    r = subprocess.run(["bash", str(exp / RUN_SCRIPT), "--no-progress"], env=env, capture_output=True, text=True,
                       cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = (exp / "run0" / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("batch,kind,iteration,test_accuracy") and len(rows) == 3
    summary = json.loads((exp / "run0" / "summary.json").read_text())
    assert summary["finished"] and summary["batches"] == 2 and summary["device"] == "cpu"
    assert summary["config"]["replay"]["params"]["memory"] == 20
    assert (exp / "summary.csv").is_file()


def test_local_script_uses_a_python_with_torch(db, tmp_path, capsys, monkeypatch):
    """prepare_experiment.py started by a Python without PyTorch (its ``#!/usr/bin/env python3``): the
    local run script uses the checkout's .venv; with no .venv either, prepare warns (and still writes)."""
    real_find_spec = launch.script.importlib.util.find_spec
    monkeypatch.setattr(launch.script.importlib.util, "find_spec",
                        lambda name, *a: None if name == "torch" else real_find_spec(name, *a))
    checkout = tmp_path / "checkout"
    venv_bin = checkout / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "python").write_text("")
    torch_init = checkout / ".venv" / "lib" / "python3.11" / "site-packages" / "torch" / "__init__.py"
    torch_init.parent.mkdir(parents=True)
    torch_init.write_text("")
    monkeypatch.setattr(launch.script, "repo_root", lambda: checkout)
    code, out, err = run(["AR1F", "391", "latent", db, "--launcher", "local", "--out", tmp_path / "a"], capsys)
    assert code == 0 and err == ""
    script = next((tmp_path / "a").rglob(RUN_SCRIPT)).read_text()
    assert f"exec {venv_bin / 'python'} -m latent_replay.cli train" in script
    warning = ("warning: the run script will use {}, which has no PyTorch: it will fail until PyTorch is "
               "installed there (make test creates the checkout's .venv with everything)\n")
    torch_init.unlink()                  # a .venv without PyTorch
    code, out, err = run(["AR1F", "391", "latent", db, "--launcher", "local", "--out", tmp_path / "b"], capsys)
    assert code == 0 and err == warning.format(venv_bin / "python")
    (venv_bin / "python").unlink()       # no .venv
    code, out, err = run(["AR1F", "391", "latent", db, "--launcher", "local", "--out", tmp_path / "c"], capsys)
    assert code == 0 and next((tmp_path / "c").rglob(RUN_SCRIPT)).is_file()
    assert err == warning.format(sys.executable)
