"""`latent-replay sweep` (latent_replay.sweep): sweep files and their validation, grid expansion through the
launcher, task indices, the job-array script (golden files, shellcheck, signals), submission and resubmission
with a stand-in sbatch/squeue, the status report, the local launcher end to end, figures on a sweep folder.

The real Slurm test is tests/test_slurm.py (slow). Regenerate the golden scripts after a deliberate change:
``LATENT_REPLAY_UPDATE_GOLDEN=1 pytest tests/test_sweep.py``.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
from click.testing import CliRunner

from latent_replay import __version__, launch
from latent_replay import sweep as S
from latent_replay.cli import main
from latent_replay.config import ExperimentConfig
from latent_replay.data.nicv2 import inventory_from_root, write_nicv2
from latent_replay.launch import Mount

REPO = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).resolve().parent / "golden"
UPDATE = os.environ.get("LATENT_REPLAY_UPDATE_GOLDEN") == "1"
SHELLCHECK = shutil.which("shellcheck")


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    """A tiny CORe50 root (path with a space) with NICv2-391 and -79 filelists for runs 0-1."""
    from conftest import write_tiny_root

    root = write_tiny_root(tmp_path_factory.mktemp("sweep") / "core 50")
    write_nicv2(root / "batch_filelists", inventory_from_root(root / "core50_128x128"), scenarios=(391, 79), runs=(0, 1))
    return root


def cli(*args, env=None):
    return CliRunner().invoke(main, ["--log-level", "WARNING", *map(str, args)], env=env)


def sweep_file(tmp_path, data: dict, name="layers.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def base(db, tmp_path, **changes) -> dict:
    data = {"name": "layers", "db_path": str(db), "out": str(tmp_path / "out"), "runs": [0, 1], "device": "cpu",
            "grid": {"method": ["ar1free", "naive"], "replay": ["latent"]},
            "fixed": {"replay_memory": 20, "max_batches": 2},
            "slurm": {"gpus": 0, "throttle": 2, "mem": None}}
    data.update(changes)
    return data


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """sbatch and squeue stand-ins on PATH: sbatch records its arguments and prints job ids 1000, 1001, ...;
    squeue prints the lines of squeue.txt (or fails when squeue.fail exists)."""
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    calls = tmp_path / "sbatch_calls.jsonl"
    (bin_dir / "sbatch").write_text(
        f"#!{sys.executable}\nimport json, sys\nfrom pathlib import Path\n"
        f"calls = Path({str(calls)!r})\n"
        "n = len(calls.read_text().splitlines()) if calls.exists() else 0\n"
        "with calls.open('a') as fh: fh.write(json.dumps(sys.argv[1:]) + '\\n')\n"
        "print(f'{1000 + n};lrtest')\n")
    queue = tmp_path / "squeue.txt"
    (bin_dir / "squeue").write_text(
        f"#!{sys.executable}\nimport sys\nfrom pathlib import Path\n"
        f"q = Path({str(queue)!r})\n"
        f"if Path({str(tmp_path / 'squeue.fail')!r}).exists(): sys.exit(1)\n"
        "print(q.read_text() if q.exists() else '', end='')\n")
    for p in bin_dir.iterdir():
        p.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")

    class Fake:
        def calls(self):
            return [json.loads(ln) for ln in calls.read_text().splitlines()] if calls.exists() else []

        def queue(self, *lines):
            queue.write_text("".join(f"{ln}\n" for ln in lines))

        def fail(self):
            (tmp_path / "squeue.fail").write_text("")

    return Fake()


# ------------------------------------------------------------------------------------- sweep files
@pytest.mark.parametrize("change, expected", [
    ({"bogus": 1}, "bogus: unknown key (known: name, out, db_path"),
    ({"dataset_root": "x"}, "dataset_root: unknown key (the dataset root is db_path)"),
    ({"name": "a/b"}, "name: 'a/b' must be a plain folder name"),
    ({"runs": "0-x"}, "runs: '0-x' is not a list or range of integers"),
    ({"runs": [0, -1]}, "runs: expected run numbers >= 0"),
    ({"device": "tpu"}, "device: 'tpu' is not one of auto, cpu, cuda"),
    ({"container": "podman"}, "container: 'podman' is not one of none, docker, apptainer"),
    ({"nvidia_docker": "x"}, "nvidia_docker: 'x' is not one of old, nvidia-docker2, new, nvidia-container-toolkit"),
    ({"grid": [1]}, "grid: expected an object of config keys and lists of values"),
    ({"grid": {"method": "naive"}}, "grid.method: expected a non-empty list of values, got 'naive'"),
    ({"grid": {"method": []}}, "grid.method: expected a non-empty list of values, got []"),
    ({"grid": {"method": ["XYZ"]}}, "grid.method: 'XYZ' is not one of naive, joint, cwr, ar1, ar1free, lwf"),
    ({"grid": {"latent_layer": ["conv9"]}}, "grid.latent_layer: 'conv9' is not one of data, conv2_1/dw"),
    ({"grid": {"bogus": [1]}}, "grid.bogus: unknown key"),
    ({"grid": {"fidelity.bogus": [True]}}, "grid.fidelity.bogus: unknown key"),
    ({"grid": {"epochs": ["two"]}}, "grid.epochs: expected float, got str 'two'"),
    ({"grid": {"replay_memory": [0]}}, "grid.replay_memory: must be > 0, got 0"),
    ({"grid": [{"method": ["naive"]}, {"method": ["bad"]}]}, "grid[1].method: 'bad' is not one of"),
    ({"grid": {"runs": [[0]]}}, "grid.runs: 'runs' is set by the top-level key 'runs'"),
    ({"fixed": {"dataset_root": "/x"}}, "fixed.dataset_root: 'dataset_root' is set by the top-level key 'db_path'"),
    ({"fixed": {"name": "x"}}, "fixed.name: 'name' is set by the sweep"),
    ({"fixed": {"method": "naive"}}, "fixed.method: also in grid"),
    ({"fixed": {"max_batches": 0}}, "fixed.max_batches: must be >= 1 or null, got 0"),
    ({"slurm": {"partitions": "gpu"}}, "slurm.partitions: unknown key (known: partition, account"),
    ({"slurm": {"time": "2h"}}, "slurm.time: '2h' is not a Slurm time limit"),
    ({"slurm": {"mem": "16GB"}}, "slurm.mem: '16GB' is not a memory size"),
    ({"slurm": {"gpus": -1}}, "slurm.gpus: expected an integer >= 0, got -1"),
    ({"slurm": {"throttle": 0}}, "slurm.throttle: expected an integer >= 1, got 0"),
    ({"slurm": {"partition": "gpu; rm"}}, "slurm.partition: 'gpu; rm' must be one word"),
    ({"slurm": {"extra": ["constraint=a100"]}}, "slurm.extra: 'constraint=a100' is not an sbatch option"),
    ({"slurm": {"setup": ["a\nb"]}}, "slurm.setup: expected a list of one-line strings"),
    ({"container": "apptainer"}, "image: required with container apptainer (a .sif file"),
    ({"container": "apptainer", "image": "nope.sif"}, "image: 'nope.sif' is not a file"),
    ({"container": "apptainer", "image": "x.sif\necho INJECTED"},
     "image: 'x.sif\\necho INJECTED' must be one line without control characters"),
    ({"out": "/tmp/a\"b"}, "out: '/tmp/a\"b' must not contain a double quote"),
])
def test_sweep_file_errors_are_one_line_naming_file_and_key(change, expected, db, tmp_path):
    path = sweep_file(tmp_path, base(db, tmp_path, **change))
    r = cli("sweep", path, "--dry-run")
    assert r.exit_code == 1, r.output
    assert r.stderr.count("\n") == 1 and r.stderr.startswith(f"Error: {path}: {expected}"), r.stderr
    assert not (tmp_path / "out").exists()


def test_file_level_errors(db, tmp_path, monkeypatch):
    r = cli("sweep", tmp_path / "missing.json", "--dry-run")
    assert r.exit_code == 1 and r.stderr == f"Error: {tmp_path / 'missing.json'}: sweep file not found\n"
    bad = tmp_path / "bad.json"
    bad.write_text('{"db_path": "x",\n "grid": {,}}')
    r = cli("sweep", bad)
    assert r.exit_code == 1 and r.stderr.startswith(f"Error: {bad}:2: not valid JSON (")
    bad.write_text("[1, 2]")
    assert cli("sweep", bad).stderr.startswith(f"Error: {bad}: expected an object of sweep keys")
    nodb = sweep_file(tmp_path, {"grid": {}})
    assert "db_path: missing (the CORe50 root" in cli("sweep", nodb).stderr
    # YAML: without PyYAML a one-line hint; with it (a stand-in here) the same sweep as the JSON file
    yml = tmp_path / "layers.yaml"
    yml.write_text(json.dumps(base(db, tmp_path)))
    monkeypatch.setitem(sys.modules, "yaml", None)
    r = cli("sweep", yml, "--dry-run")
    assert r.exit_code == 1 and r.stderr == (f"Error: {yml}: reading YAML needs PyYAML (pip install pyyaml); "
                                             "or write the sweep file as JSON\n")
    stub = types.ModuleType("yaml")
    stub.YAMLError = ValueError
    stub.safe_load = json.loads
    monkeypatch.setitem(sys.modules, "yaml", stub)
    from_json = S.load_sweep(sweep_file(tmp_path, base(db, tmp_path)))
    assert S.load_sweep(yml) == dataclasses.replace(from_json, source=str(yml))


def test_defaults_and_overrides(db, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = {"db_path": "core", "grid": {"method": ["AR1F"]}}
    os.symlink(db, tmp_path / "core")
    sw = S.load_sweep(sweep_file(tmp_path, data, "my sweep.json"))
    assert sw.name == "my-sweep" and sw.out == tmp_path / "results" / "my-sweep"   # relative to the current folder
    assert sw.db_path == db.resolve() and sw.runs == [0, 1, 2, 3, 4] and sw.container == "none" and sw.image == ""
    assert sw.slurm == S.SlurmOptions() and sw.slurm.time == "04:00:00" and sw.slurm.gpus == 1
    sw = S.load_sweep(sweep_file(tmp_path, {**data, "runs": "0-2,7"}), container="docker", out="elsewhere")
    assert sw.runs == [0, 1, 2, 7] and sw.container == "docker" and sw.image == launch.default_image()
    assert sw.out == tmp_path / "elsewhere" and sw.nvidia_docker == "new"


# --------------------------------------------------------------------------------------- expansion
def test_launcher_arguments_of_a_combination(db, tmp_path):
    """A combination goes to the launcher as Python values (launch.plan_experiment), and plans the same
    experiment as the command line of prepare_experiment.py with those values."""
    sw = S.parse_sweep(base(db, tmp_path, filelists=str(db / "batch_filelists")), "s.json")
    values = {"method": "cwr", "replay": "native", "scenario": 79, "replay_memory": 20, "profile": "caffe",
              "epochs": 1, "fidelity.padded_test_set": False, "preprocessing": "imagenet"}
    args = S.launcher_arguments(sw, values)
    assert args == {"method": "cwr", "scenario": 79, "replay": "native", "db_path": db, "replay_memory": 20,
                    "profile": "caffe", "runs": [0, 1], "device": "cpu", "out": tmp_path / "out",
                    "nvidia_docker": "new", "force": True, "launcher": "local", "image": None,
                    "filelists": db / "batch_filelists", "weights": None,
                    "settings": {"epochs": 1, "fidelity.padded_test_set": False, "preprocessing": "imagenet"}}
    argv = ["CWR", "79", "pure", str(db), "--replay_memory", "20", "--profile", "caffe", "--runs", "0,1",
            "--device", "cpu", "--out", str(tmp_path / "out"), "--nvidia_docker", "new", "--force",
            "--launcher", "local", "--filelists", str(db / "batch_filelists"), "--set", "epochs=1",
            "--set", "fidelity.padded_test_set=false", "--set", 'preprocessing="imagenet"']
    assert launch.plan_experiment(**args) == launch.validate(launch.build_parser().parse_args(argv))
    # errors: the command line's messages, the argument named as there
    with pytest.raises(launch.UsageError, match=r"^argument --replay_memory: only used with replay") as exc:
        launch.plan_experiment("naive", 391, "none", db, replay_memory=20)
    assert exc.value.argument == "--replay_memory"
    with pytest.raises(launch.UsageError, match=r"^argument --runs: expected run numbers >= 0, got \[-1\]$"):
        launch.plan_experiment("NAIVE", "391", "no", db, runs=[-1])
    with pytest.raises(launch.UsageError,
                       match=r"^argument --max_batches: invalid int value 2.5 \(expected an integer >= 1\)$"):
        launch.plan_experiment("naive", 391, "none", db, runs=[0], max_batches=2.5)


def test_expansion_skips_invalid_merges_inapplicable_and_names_extra_keys(db, tmp_path):
    data = base(db, tmp_path, grid={"method": ["ar1free", "cwr", "NAIVE"], "replay": ["none", "latent"],
                                    "latent_layer": ["conv5_4/dw", "pool6"], "epochs": [1, 2]})
    ex = S.expand(S.parse_sweep(data, "s.json"))
    assert ex.combinations == 24
    names = [p.name for p in ex.experiments]
    assert names == [
        "ar1free_nicv2_391_none_epochs-1", "ar1free_nicv2_391_none_epochs-2",
        "ar1free_nicv2_391_latent_conv5_4dw_m20_epochs-1", "ar1free_nicv2_391_latent_conv5_4dw_m20_epochs-2",
        "ar1free_nicv2_391_latent_pool6_m20_epochs-1", "ar1free_nicv2_391_latent_pool6_m20_epochs-2",
        "cwr_nicv2_391_none_epochs-1", "cwr_nicv2_391_none_epochs-2",
        "cwr_nicv2_391_latent_pool6_m20_epochs-1", "cwr_nicv2_391_latent_pool6_m20_epochs-2",
        "naive_nicv2_391_none_epochs-1", "naive_nicv2_391_none_epochs-2",
        "naive_nicv2_391_latent_conv5_4dw_m20_epochs-1", "naive_nicv2_391_latent_conv5_4dw_m20_epochs-2",
        "naive_nicv2_391_latent_pool6_m20_epochs-1", "naive_nicv2_391_latent_pool6_m20_epochs-2",
    ]
    # latent_layer (and replay_memory from fixed) do not apply without replay: those combinations merge
    assert ex.merged == 6 and ex.dropped == {"latent_layer"}
    assert [c for c, _ in ex.skipped] == [
        {"method": "cwr", "replay": "latent", "latent_layer": "conv5_4/dw", "epochs": e} for e in (1, 2)]
    assert "CWR trains only the classifier, so latent replay must use pool6" in ex.skipped[0][1]
    cfg = ex.experiments[3].plan.config
    assert (cfg.method, cfg.replay, cfg.latent_layer, cfg.replay_memory, cfg.epochs, cfg.max_batches, cfg.runs) == \
        ("ar1free", "latent", "conv5_4/dw", 20, 2.0, 2, [0, 1])
    assert ex.experiments[0].plan.config.replay_memory == 1500 and ex.experiments[0].values == {
        "method": "ar1free", "replay": "none", "epochs": 1}
    assert ex.experiments[3].plan.experiment_dir == tmp_path / "out" / names[3]


def test_union_of_grids_and_values_that_give_nothing(db, tmp_path):
    data = base(db, tmp_path, grid=[{"method": ["cwr"], "replay": ["latent"]},
                                    {"method": ["ar1free"], "latent_layer": ["conv4_1/dw", "conv5_4/dw"]}],
                fixed={"replay_memory": 20})
    ex = S.expand(S.parse_sweep(data, "s.json"))
    assert [p.name for p in ex.experiments] == ["cwr_nicv2_391_latent_pool6_m20", "ar1free_nicv2_391_latent_conv4_1dw_m20",
                                                "ar1free_nicv2_391_latent_conv5_4dw_m20"]
    assert ex.notes == ["CWR with latent replay: latent layer pool6 (the only one CWR* supports)"]
    bad = base(db, tmp_path, grid={"method": ["cwr", "ar1free"], "latent_layer": ["conv5_4/dw"]})
    with pytest.raises(S.SweepError, match=r"^s.json: grid.method: cwr gives no valid experiment \(argument "
                                           r"--latent_layer: CWR trains only the classifier"):
        S.expand(S.parse_sweep(bad, "s.json"))
    joint = base(db, tmp_path, grid={"method": ["joint"], "replay": ["latent"]})
    with pytest.raises(S.SweepError, match=r"^s.json: no valid experiment in the grid \(first: method=joint, "
                                           r"replay=latent: argument REPLAY: JOINT retrains"):
        S.expand(S.parse_sweep(joint, "s.json"))


def test_example_sweep_file_and_filelists_checked_once(db, tmp_path, monkeypatch):
    data = json.loads((REPO / "run_experiments" / "sweeps" / "example_sweep.json").read_text())
    assert "filelists" not in data   # the default: DB_PATH/batch_filelists if present, else the shipped lists
    del data["weights"]
    data.update(db_path=str(db), out=str(tmp_path / "out"), runs="0-1")
    checks = []
    real = launch.checks._check_filelists

    def counting(*args):
        checks.append(args[1:3])
        return real(*args)

    monkeypatch.setattr(launch.checks, "_check_filelists", counting)
    ex = S.expand(S.parse_sweep(data, "example"))
    assert len(ex.experiments) == 13 and not ex.skipped and ex.merged == 0
    assert [p.name for p in ex.experiments][-3:] == ["ar1free_nicv2_391_native_m1500", "cwr_nicv2_391_none",
                                                     "cwr_nicv2_391_latent_pool6_m1500"]
    assert all(p.plan.config.preprocessing == "imagenet" for p in ex.experiments)
    assert checks == [(391, [0, 1])]            # once for 13 experiments
    assert launch.checks._check_filelists is counting  # and the launcher is left as it was


@pytest.mark.parametrize("change, expected", [
    (lambda db, t: {"db_path": str(t / "nowhere")}, "db_path: '{t}/nowhere' does not exist"),
    (lambda db, t: {"grid": {"scenario": [196]}}, "filelists: {db}/batch_filelists: no folder for NICv2-196 run 0"),
    (lambda db, t: {"weights": str(t / "w.pt")}, "weights: '{t}/w.pt' is not a file"),
    (lambda db, t: {"runs": [5]}, "filelists: "),
])
def test_errors_common_to_every_combination_stop_the_sweep(change, expected, db, tmp_path):
    path = sweep_file(tmp_path, base(db, tmp_path, **change(db, tmp_path)))
    r = cli("sweep", path, "--dry-run")
    assert r.exit_code == 1 and r.stderr.count("\n") == 1, r.output
    assert r.stderr.startswith(f"Error: {path}: {expected.format(t=tmp_path, db=db)}"), r.stderr


def test_dry_run_writes_nothing_and_prints_script_and_command(db, tmp_path, fake_slurm):
    grid = {"method": ["ar1free", "cwr"], "replay": ["none", "latent"], "latent_layer": ["conv5_4/dw"]}
    path = sweep_file(tmp_path, base(db, tmp_path, grid=grid))
    r = cli("sweep", path, "--dry-run")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0] == f"sweep layers: 4 combination(s) -> 3 experiment(s) x run(s) 0-1 = 6 task(s) in {tmp_path / 'out'}"
    assert lines[1].startswith("  skipped (invalid) method=cwr, replay=latent, latent_layer=conv5_4/dw: argument "
                               "--latent_layer: CWR trains only the classifier")
    assert lines[2] == "  tasks: 0 finished, 0 running, 0 pending, 0 failed, 6 missing"
    assert "#SBATCH --array=0-5%2" in r.stdout and "#SBATCH --job-name=lr-layers" in r.stdout
    assert lines[-1] == f"would run: sbatch --parsable --array=0-5%2 {tmp_path / 'out' / 'sweep.sbatch'}"
    assert not (tmp_path / "out").exists() and fake_slurm.calls() == []
    # the same with the subcommand spelled out, with options first, and for the local launcher
    assert cli("sweep", "run", path, "--dry-run").stdout == r.stdout
    assert cli("sweep", "--dry-run", path).stdout == r.stdout
    r = cli("sweep", path, "--dry-run", "--launcher", "local")
    assert r.stdout.splitlines()[-1] == "would run 6 task(s) here, 1 at a time: 0-5"


def test_sweep_help_lists_the_subcommands():
    r = cli("sweep", "-h")
    assert r.exit_code == 0
    assert "SWEEP_FILE [OPTIONS] | status DIR | resubmit DIR" in r.stdout
    for word in ("run", "status", "resubmit"):
        assert f"  {word} " in r.stdout
    assert "--launcher [slurm|local]" in cli("sweep", "run", "-h").stdout


# -------------------------------------------------------------------------------------- task indices
def test_array_spec_and_chunks():
    assert S.array_spec([3, 0, 1, 2, 7, 9, 10, 11]) == "0-3,7,9-11"
    assert S.array_spec([5], 4) == "5%4" and S.array_spec(range(12), 8) == "0-11%8"
    assert S.chunks([0, 1, 999, 1000, 1001, 2500], 1000) == [(0, [0, 1, 999]), (1000, [0, 1]), (2000, [500])]


def test_task_indices_are_stable_when_the_grid_changes(tmp_path):
    d = tmp_path / "s"
    tasks = S.assign_tasks(d, ["a", "b"], [0, 1])
    assert [(t.index, t.experiment, t.run) for t in tasks] == [(0, "a", 0), (1, "a", 1), (2, "b", 0), (3, "b", 1)]
    d.mkdir()
    (d / "tasks.tsv").write_text(S.tasks_text(tasks))
    (d / "state").mkdir()
    (d / "state" / "task3").write_text("task=3\n")
    grown = S.assign_tasks(d, ["c", "a"], [0, 1])   # b dropped, c added: a keeps 0-1, c gets new indices
    assert [(t.index, t.experiment, t.run) for t in grown] == [(0, "a", 0), (1, "a", 1), (4, "c", 0), (5, "c", 1)]
    assert S.read_tasks(d) == tasks
    (d / "tasks.tsv").write_text("task\texperiment\trun\n0\ta\n")
    with pytest.raises(S.SweepError, match="tasks.tsv:2: expected 'task<TAB>experiment<TAB>run'"):
        S.read_tasks(d)
    with pytest.raises(S.SweepError, match="not a sweep folder"):
        S.read_tasks(tmp_path)
    for text, message in (("task\texperiment\trun\n", r"tasks.tsv: no tasks"),
                          ("task\texperiment\trun\n0\ta\t0\n0\tb\t1\n", r"tasks.tsv:3: task 0 already on line 2"),
                          ("task\texperiment\trun\n0\ta\t0\n1\ta\t0\n", r"tasks.tsv:3: experiment and run already on line 2")):
        (d / "tasks.tsv").write_text(text)
        with pytest.raises(S.SweepError, match=message):
            S.read_tasks(d)


# ----------------------------------------------------------------------------------- the script
def _slurm(**kw):
    opts = dict(partition="gpu", account="proj42", qos="normal", time="02:00:00", gpus=1, gpu_type="a100",
                cpus_per_task=4, mem="16G", throttle=8)
    opts.update(kw)
    return S.SlurmOptions(**opts)


SWEEP_DIR = Path("/home/me/sweeps/layers")
MOUNTS = [Mount(Path("/data/core 50"), "/datasets"), Mount(Path("/data/lists"), "/filelists"),
          Mount(SWEEP_DIR, "/results", read_only=False)]
SCRIPTS = {
    "sweep_none.sbatch": lambda: S.ScriptSpec(
        "layers", SWEEP_DIR, list(range(12)), 6, [0, 1], _slurm(extra=["--constraint=a100", "--mail-type=FAIL"],
                                                              setup=["module load cuda/12.4"]),
        container="none", gpu=True, command=["/home/me/.venv/bin/latent-replay"]),
    "sweep_none_pythonpath_cpu.sbatch": lambda: S.ScriptSpec(
        "cpu-run", Path("/home/me/my sweeps/cpu"), [0, 1, 2, 5], 2, [0, 1, 2],
        S.SlurmOptions(gpus=0, time=None, mem=None, cpus_per_task=2), container="none", gpu=False,
        command=["/usr/bin/python3", "-m", "latent_replay.cli"], env={"PYTHONPATH": "/opt/latent replay/project_source"}),
    "sweep_docker_nvidia-container-toolkit.sbatch": lambda: S.ScriptSpec(
        "layers", SWEEP_DIR, list(range(12)), 6, [0, 1], _slurm(), container="docker", gpu=True,
        image=launch.default_image(), mounts=MOUNTS, flavour="new"),
    "sweep_docker_nvidia-docker2.sbatch": lambda: S.ScriptSpec(
        "layers", SWEEP_DIR, list(range(12)), 6, [0, 1], _slurm(gpu_type=None, job_name="my-layers"),
        container="docker", gpu=True, image=launch.default_image(), mounts=MOUNTS, flavour="old"),
    "sweep_apptainer_chunked.sbatch": lambda: S.ScriptSpec(
        "big", SWEEP_DIR, list(range(1500)), 300, [0, 1, 2, 3, 4], _slurm(max_array_size=1001, throttle=None),
        container="apptainer", gpu=True, image="/home/me/latent-replay.sif", mounts=MOUNTS),
}


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_sbatch_script_golden(name):
    text = S.render_sbatch(SCRIPTS[name]()).replace(__version__, "@VERSION@")
    path = GOLDEN / name
    if UPDATE:
        path.write_text(text)
    assert text == path.read_text(), f"{name} differs (LATENT_REPLAY_UPDATE_GOLDEN=1 to regenerate)"


@pytest.mark.skipif(SHELLCHECK is None, reason="shellcheck is not installed (Debian package 'shellcheck')")
def test_golden_scripts_pass_shellcheck():
    r = subprocess.run([SHELLCHECK, "--severity=style", *(str(GOLDEN / n) for n in sorted(SCRIPTS))],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_percent_in_the_sweep_folder_is_not_a_slurm_pattern():
    text = S.render_sbatch(S.ScriptSpec("p", Path("/home/me/100%run"), [0], 1, [0], _slurm(), container="none",
                                        gpu=True, command=["/x/latent-replay"]))
    assert "#SBATCH --output=/home/me/100%%run/logs/%A_%a.out" in text


def test_cpu_sweep_asks_for_no_gpu_and_local_gpu_wins_in_docker_tasks():
    cpu = S.render_sbatch(S.ScriptSpec("cpu", SWEEP_DIR, [0], 1, [0], _slurm(gpus=2), container="none", gpu=False,
                                       command=["/x/latent-replay"]))
    assert "--gres" not in cpu and "#SBATCH --cpus-per-task=4" in cpu
    gpu = S.render_sbatch(SCRIPTS["sweep_docker_nvidia-container-toolkit.sbatch"]())
    assert "#SBATCH --gres=gpu:a100:1" in gpu
    assert 'gpus="${LATENT_REPLAY_TASK_GPUS:-${SLURM_JOB_GPUS:-${CUDA_VISIBLE_DEVICES:-}}}"' in gpu


def _fake_trainer_sweep(tmp_path: Path, sleep: float, setup=()) -> Path:
    """A sweep folder whose script starts a stand-in trainer (records its arguments and pid, sleeps)."""
    d = tmp_path / "fake sweep"
    d.mkdir()
    trainer = tmp_path / "trainer.py"
    trainer.write_text("import json, os, sys, time\n"
                       f"open({str(tmp_path / 'trainer.json')!r}, 'w').write(json.dumps([os.getpid(), sys.argv[1:]]))\n"
                       f"time.sleep({sleep})\nsys.exit(int(os.environ.get('FAKE_EXIT', '0')))\n")
    (d / "tasks.tsv").write_text(S.tasks_text([S.Task(0, "exp a", 3), S.Task(1, "exp_b", 0)]))
    spec = S.ScriptSpec("fake", d, [0, 1], 2, [0, 3], S.SlurmOptions(gpus=0, setup=list(setup)),
                        command=[sys.executable, str(trainer)])
    (d / "sweep.sbatch").write_text(S.render_sbatch(spec))
    return d


def test_task_script_records_state_and_passes_the_exit_code(tmp_path):
    d = _fake_trainer_sweep(tmp_path, 0)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    r = subprocess.run(["bash", str(d / "sweep.sbatch"), "0"], capture_output=True, text=True,
                       env={**env, "FAKE_EXIT": "3", "LATENT_REPLAY_JOB": "local-9"})
    assert r.returncode == 3
    assert r.stdout.startswith(f"task 0: exp a run 3 (job local-9 on {socket.gethostname()}, ")
    assert "task 0: the trainer exited with 3" in r.stderr
    _, argv = json.loads((tmp_path / "trainer.json").read_text())
    assert argv == ["train", "--config", str(d / "exp a" / "exp_configuration.json"), "--runs", "3", "--no-progress"]
    state = S.read_state(d, 0)
    assert state["exit"] == "3" and state["job"] == "local-9" and state["experiment"] == "exp a" and "ended" in state
    # not an array task, or a task that is not in tasks.tsv: exit 2 with one line
    r = subprocess.run(["bash", str(d / "sweep.sbatch")], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "not started as a Slurm array task" in r.stderr
    r = subprocess.run(["bash", str(d / "sweep.sbatch")], capture_output=True, text=True,
                       env={**env, "SLURM_ARRAY_TASK_ID": "1", "LATENT_REPLAY_TASK_OFFSET": "4"})
    assert r.returncode == 2 and f"task 5 is not in {d}/tasks.tsv" in r.stderr
    r = subprocess.run(["bash", str(d / "sweep.sbatch")], capture_output=True, text=True,
                       env={**env, "SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_JOB_ID": "77", "FAKE_EXIT": "0"})
    assert r.returncode == 0
    assert S.read_state(d, 1)["job"] == "77_1" and S.read_state(d, 1)["log"] == f"{d}/logs/77_1.out"


def test_a_failing_setup_line_is_recorded_as_the_task_ending(tmp_path):
    """slurm.setup runs under set -e: a failing line ends the task, and the state file says so (status
    would otherwise call it killed without a trace)."""
    d = _fake_trainer_sweep(tmp_path, 0, setup=["false"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    r = subprocess.run(["bash", str(d / "sweep.sbatch"), "0"], capture_output=True, text=True,
                       env={**env, "LATENT_REPLAY_JOB": "local-9"})
    assert r.returncode == 1 and not (tmp_path / "trainer.json").exists()
    state = S.read_state(d, 0)
    assert state["exit"] == "1" and "ended" in state


def test_task_script_stops_the_trainer_on_sigterm(tmp_path):
    """scancel / the time limit send SIGTERM: the trainer is stopped and the state says exit 143."""
    d = _fake_trainer_sweep(tmp_path, 60)
    proc = subprocess.Popen(["bash", str(d / "sweep.sbatch"), "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 30
    while not (tmp_path / "trainer.json").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    pid, _ = json.loads((tmp_path / "trainer.json").read_text())
    status = {s.task: s for s in S.collect_status(d)}
    assert status[1].state == "running" and status[1].job == f"manual-{proc.pid}"   # alive, same host
    assert status[0].state == "missing"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143 and "task 1: stopped by a signal (exit 143)" in err
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    state = S.read_state(d, 1)
    assert state["exit"] == "143"
    status = S.collect_status(d)[1]
    assert status.state == "failed" and status.detail == "exit 143: terminated (scancel, time limit or preemption)"


# -------------------------------------------------------------------------------------- the status
def _status_folder(tmp_path: Path) -> Path:
    d = tmp_path / "st"
    d.mkdir()
    tasks = [S.Task(i, "exp", i) for i in range(10)]
    (d / "tasks.tsv").write_text(S.tasks_text(tasks))
    (d / "submissions.tsv").write_text("job\tlauncher\toffset\tarray\tsubmitted\n"
                                       "100\tslurm\t0\t0-8%4\tt\n101\tslurm\t0\t6\tt\n102\tslurm\t9\t0\tt\n"
                                       "local-1\tlocal\t0\t7-8\tt\n")
    host = socket.gethostname()

    def state(i, job, ended=None, pid=99999999, log=""):
        lines = [f"task={i}", "experiment=exp", f"run={i}", f"job={job}", f"host={host}", f"pid={pid}",
                 f"log={log}", "started=2026-01-01T00:00:00Z"]
        if ended is not None:
            lines += ["ended=2026-01-01T01:00:00Z", f"exit={ended}"]
        (d / "state").mkdir(exist_ok=True)
        (d / "state" / f"task{i}").write_text("\n".join(lines) + "\n")

    run0 = d / "exp" / "run0"
    run0.mkdir(parents=True)
    (run0 / "summary.json").write_text('{"finished": true, "final_accuracy": 0.8125}')
    (run0 / "metrics.csv").write_text("batch,kind\n0,batch\n1,batch\n")
    state(0, "100_0", 0)
    state(1, "100_1")                                   # running (squeue)
    (d / "exp" / "run1").mkdir()
    (d / "exp" / "run1" / "metrics.csv").write_text("batch,kind,iteration\n0,iteration_1,1\n0,batch,3\n")
    # 2: pending in squeue, never started
    state(3, "100_3", 143, log=str(d / "logs" / "100_3.out"))   # cancelled
    state(4, "100_4")                                   # started, gone from the queue without a summary
    # 5: never submitted
    state(6, "100_6", 143)                              # cancelled, resubmitted as job 101: pending
    return d


def test_status_of_every_kind_of_task(tmp_path, fake_slurm):
    d = _status_folder(tmp_path)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "sweep.sbatch"])   # a task
    try:
        host = socket.gethostname()
        (d / "state" / "task7").write_text(f"task=7\njob=local-1\nhost={host}\npid={sleeper.pid}\nstarted=x\n")
        (d / "state" / "task8").write_text(f"task=8\njob=local-1\nhost={host}\npid=99999999\nstarted=x\n")
        fake_slurm.queue("100|1|RUNNING", "100|2|PENDING", "101|6|PENDING", "102|0|RUNNING", "555|0|RUNNING")
        status = S.collect_status(d)
        got = [(s.task, s.state, s.job, s.exit, s.batches) for s in status]
        assert got == [(0, "finished", "100_0", 0, 2), (1, "running", "100_1", None, 1), (2, "pending", "100_2", None, 0),
                       (3, "failed", "100_3", 143, 0), (4, "failed", "100_4", None, 0), (5, "missing", "", None, 0),
                       (6, "pending", "101_6", None, 0), (7, "running", "local-1", None, 0),
                       (8, "failed", "local-1", None, 0), (9, "running", "102_0", None, 0)]
        assert status[0].detail == "final accuracy 0.8125"
        assert status[3].detail == "exit 143: terminated (scancel, time limit or preemption)"
        assert status[4].detail.startswith("started 2026-01-01T00:00:00Z on ") and "no longer in the queue" in status[4].detail
        assert status[8].detail.endswith("its process is gone")
        text = S.format_status(d, status)
        lines = text.splitlines()
        assert lines[0] == f"sweep {d}: 10 task(s): 1 finished, 3 running, 2 pending, 3 failed, 1 missing"
        assert lines[1].split() == ["experiment", "run", "task", "state", "job", "batches", "detail"]
        assert lines[5].split()[:6] == ["exp", "3", "3", "failed", "100_3", "0"]
        assert lines[5].endswith(f"exit 143: terminated (scancel, time limit or preemption); log {d / 'logs' / '100_3.out'}")
        assert lines[-1] == f"4 task(s) to run again: latent-replay sweep resubmit {d}"
        r = cli("sweep", "status", d, "--json")
        assert r.exit_code == 0
        data = json.loads(r.stdout)
        assert [t["state"] for t in data] == [s.state for s in status] and data[0]["detail"] == "final accuracy 0.8125"
        assert cli("sweep", "status", d).stdout.splitlines()[0] == lines[0]
        # without squeue the state files are all there is: started and not ended counts as running
        fake_slurm.fail()
        status = S.collect_status(d)
        assert status[1].state == "running" and status[1].detail == "started; not verified (squeue unavailable)"
        assert status[2].state == "missing" and status[4].state == "running" and status[6].state == "failed"
    finally:
        sleeper.kill()
        sleeper.wait()
    r = cli("sweep", "status", tmp_path)
    assert r.exit_code == 1 and r.stderr.startswith(f"Error: {tmp_path}: not a sweep folder (no tasks.tsv")


# -------------------------------------------------------------------------------- submit, resubmit
def test_submit_skip_active_and_resubmit_unfinished(db, tmp_path, fake_slurm):
    path = sweep_file(tmp_path, base(db, tmp_path))
    out = tmp_path / "out"
    r = cli("sweep", path)
    assert r.exit_code == 0, r.output
    script = out / "sweep.sbatch"
    assert fake_slurm.calls() == [["--parsable", "--array=0-3%2", str(script)]]
    assert f"submitted job 1000: array 0-3%2 (4 task(s)); logs in {out / 'logs'}" in r.stdout
    assert r.stdout.splitlines()[-1] == f"follow it with: latent-replay sweep status {out}"
    assert os.access(script, os.X_OK) and (out / "logs").is_dir() and (out / "state").is_dir()
    assert (out / "tasks.tsv").read_text() == ("task\texperiment\trun\n"
                                               "0\tar1free_nicv2_391_latent_conv5_4dw_m20\t0\n"
                                               "1\tar1free_nicv2_391_latent_conv5_4dw_m20\t1\n"
                                               "2\tnaive_nicv2_391_latent_conv5_4dw_m20\t0\n"
                                               "3\tnaive_nicv2_391_latent_conv5_4dw_m20\t1\n")
    stored = json.loads((out / "sweep.json").read_text())
    assert stored["format"] == "latent-replay-sweep" and stored["launcher"] == "slurm" and stored["db_path"] == str(db)
    assert stored["experiments"] == ["ar1free_nicv2_391_latent_conv5_4dw_m20", "naive_nicv2_391_latent_conv5_4dw_m20"]
    subs = S.read_submissions(out)
    assert [(s.job, s.launcher, s.offset, s.array) for s in subs] == [("1000", "slurm", 0, "0-3%2")]

    # the files prepare_experiment.py writes, byte for byte
    exp = out / "ar1free_nicv2_391_latent_conv5_4dw_m20"
    before = {n: (exp / n).read_text() for n in ("exp_configuration.json", "run_experiment.sh")}
    code = launch.main(["AR1F", "391", "latent", str(db), "--replay_memory", "20", "--max_batches", "2", "--runs", "0-1",
                        "--device", "cpu", "--launcher", "local", "--out", str(out), "--force"])
    assert code == 0
    assert before == {n: (exp / n).read_text() for n in before}

    # while Slurm holds the tasks, running the sweep again submits nothing
    fake_slurm.queue("1000|0|RUNNING", "1000|1|RUNNING", "1000|2|PENDING", "1000|3|PENDING")
    r = cli("sweep", path)
    assert r.exit_code == 0 and "nothing to submit: every task is finished, running or pending" in r.stdout
    assert "tasks: 0 finished, 2 running, 2 pending, 0 failed, 0 missing" in r.stdout
    assert len(fake_slurm.calls()) == 1

    # task 0 finished, 1 failed, 2 still running, 3 never started (cancelled while pending)
    fake_slurm.queue("1000|2|RUNNING")
    (exp / "run0").mkdir()
    (exp / "run0" / "summary.json").write_text('{"final_accuracy": 0.5}')
    (out / "state" / "task1").write_text("task=1\njob=1000_1\nhost=h\npid=1\nstarted=x\nended=y\nexit=1\n")
    r = cli("sweep", "resubmit", out, "--dry-run")
    assert r.exit_code == 0
    assert r.stdout.splitlines() == [f"sweep {out}: 1 finished, 1 running, 0 pending, 1 failed, 1 missing; 2 to submit",
                                     f"would run: sbatch --parsable --array=1,3%2 {script}"]
    r = cli("sweep", "resubmit", out)
    assert r.exit_code == 0, r.output
    assert fake_slurm.calls()[-1] == ["--parsable", "--array=1,3%2", str(script)]
    assert [s.job for s in S.read_submissions(out)] == ["1000", "1001"]
    fake_slurm.queue("1000|2|RUNNING", "1001|1|PENDING", "1001|3|PENDING")
    assert [s.state for s in S.collect_status(out)] == ["finished", "pending", "running", "pending"]
    assert "nothing to submit" in cli("sweep", "resubmit", out).stdout
    assert len(fake_slurm.calls()) == 2


def test_more_tasks_than_max_array_size_are_submitted_in_chunks(db, tmp_path, fake_slurm):
    data = base(db, tmp_path)
    data["slurm"] = {"gpus": 0, "max_array_size": 3}
    r = cli("sweep", sweep_file(tmp_path, data))
    assert r.exit_code == 0, r.output
    script = str(tmp_path / "out" / "sweep.sbatch")
    assert fake_slurm.calls() == [["--parsable", "--array=0-2", script],
                                  ["--parsable", "--array=0", "--export=ALL,LATENT_REPLAY_TASK_OFFSET=3", script]]
    text = Path(script).read_text()
    assert "#SBATCH --array" not in text and "More tasks than MaxArraySize (3)" in text
    fake_slurm.queue("1001|0|PENDING", "1000|2|RUNNING")
    assert [s.state for s in S.collect_status(tmp_path / "out")] == ["missing", "missing", "running", "pending"]


def test_changed_configuration_needs_force_and_grown_grid_keeps_indices(db, tmp_path, fake_slurm):
    out = tmp_path / "out"
    assert cli("sweep", sweep_file(tmp_path, base(db, tmp_path))).exit_code == 0
    data = base(db, tmp_path)
    data["fixed"] = {**data["fixed"], "epochs": 2}
    path = sweep_file(tmp_path, data)
    exp = out / "ar1free_nicv2_391_latent_conv5_4dw_m20"
    old = json.loads((exp / "exp_configuration.json").read_text())
    (exp / "run0").mkdir()                               # finished with epochs 4
    (exp / "run0" / "summary.json").write_text(json.dumps({"final_accuracy": 0.5, "config": old}))
    r = cli("sweep", path)
    assert r.exit_code == 1 and r.stderr == (
        f"Error: {exp}: it was prepared with schedule.epochs = 4.0, the sweep now gives 2.0; its results would mix two "
        "configurations (choose another out folder, or --force to replace the configuration; its finished runs that "
        "trained otherwise are set aside)\n")
    # the dry run counts the finished run as missing under the new configuration, and moves nothing
    r = cli("sweep", path, "--force", "--dry-run")
    assert r.exit_code == 0 and "tasks: 0 finished, 0 running, 0 pending, 0 failed, 4 missing" in r.stdout
    assert (exp / "run0" / "summary.json").is_file() and not (exp / "run0.former").exists()
    status = S.collect_status(out)[0]
    assert (status.state, status.detail) == ("finished", "final accuracy 0.5000")
    r = cli("sweep", path, "--force")
    assert r.exit_code == 0 and f"{exp.name}: it was prepared with schedule.epochs = 4.0" in r.stdout
    assert f"{exp / 'run0'} was trained with another configuration (changed: schedule.epochs): set aside as run0.former" in r.stdout
    assert json.loads((exp / "run0.former" / "summary.json").read_text())["config"] == old
    assert not (exp / "run0").exists() and fake_slurm.calls()[-1] == ["--parsable", "--array=0-3%2", str(out / "sweep.sbatch")]
    assert json.loads((exp / "exp_configuration.json").read_text())["schedule"]["epochs"] == 2.0
    # a run that finished with other settings than the config (e.g. edited by hand since): not finished;
    # while Slurm lists its task it is pending as any other, and resubmitting sets it aside first (the
    # trainer would refuse it, and the task would fail again at every resubmission)
    (exp / "run0").mkdir()
    (exp / "run0" / "summary.json").write_text(json.dumps({"final_accuracy": 0.5, "config": old}))
    (out / "state" / "task0").write_text("task=0\njob=1001_0\nhost=h\npid=1\nstarted=x\nended=y\nexit=0\n")
    status = S.collect_status(out)[0]
    assert (status.state, status.exit) == ("missing", None)
    assert status.detail == ("finished with another configuration than its experiment's (changed: schedule.epochs); "
                             "submitting it sets that run aside and trains it again")
    fake_slurm.queue("1001|0|PENDING")
    assert S.collect_status(out)[0].state == "pending"
    fake_slurm.queue("1001|1|RUNNING", "1001|2|RUNNING", "1001|3|RUNNING")
    r = cli("sweep", "resubmit", out)
    assert r.exit_code == 0, r.output
    assert (f"{exp / 'run0'} was trained with another configuration (changed: schedule.epochs): set aside as run0.former2"
            in r.stdout)
    assert fake_slurm.calls()[-1] == ["--parsable", "--array=0%2", str(out / "sweep.sbatch")]
    assert not (exp / "run0").exists() and (exp / "run0.former2" / "summary.json").is_file()
    fake_slurm.queue()
    # a config the trainer rewrote with its run only is the same experiment
    cfg = json.loads((exp / "exp_configuration.json").read_text())
    (exp / "exp_configuration.json").write_text(json.dumps({**cfg, "execution": {**cfg["execution"], "runs": [1]}}))
    fake_slurm.queue(*(f"1001|{i}|PENDING" for i in range(4)))
    data["grid"]["method"] = ["naive", "cwr", "ar1free"]
    r = cli("sweep", sweep_file(tmp_path, data))
    assert r.exit_code == 0, r.output
    assert fake_slurm.calls()[-1] == ["--parsable", "--array=4-5%2", str(out / "sweep.sbatch")]
    assert [(t.index, t.experiment.split("_")[0], t.run) for t in S.read_tasks(out)] == [
        (0, "ar1free", 0), (1, "ar1free", 1), (2, "naive", 0), (3, "naive", 1), (4, "cwr", 0), (5, "cwr", 1)]
    assert json.loads((exp / "exp_configuration.json").read_text())["execution"]["runs"] == [0, 1]


def test_no_sbatch_is_one_line_and_writes_nothing(db, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    r = cli("sweep", sweep_file(tmp_path, base(db, tmp_path)))
    assert r.exit_code == 1 and r.stderr == ("Error: sbatch not found: submit from a Slurm login node, or use "
                                             "--launcher local (or --dry-run to see the script)\n")
    assert not (tmp_path / "out").exists()


def test_docker_and_apptainer_sweeps_see_container_paths(db, tmp_path, fake_slurm):
    sif = tmp_path / "lr.sif"
    sif.write_text("")
    for container, image in (("docker", None), ("apptainer", str(sif))):
        out = tmp_path / container
        data = base(db, tmp_path, out=str(out), container=container, device="auto", slurm={"gpus": 1})
        if image:
            data["image"] = image
        assert cli("sweep", sweep_file(tmp_path, data)).exit_code == 0
        exp = out / "ar1free_nicv2_391_latent_conv5_4dw_m20"
        cfg = json.loads((exp / "exp_configuration.json").read_text())["paths"]
        assert (cfg["dataset_root"], cfg["filelists"], cfg["out"]) == ("/datasets", "/datasets/batch_filelists", "/results")
        text = (out / "sweep.sbatch").read_text()
        assert "#SBATCH --gres=gpu:1" in text
        assert f"-v '{db}:/datasets:ro'" in text if container == "docker" else f"--bind '{db}:/datasets:ro'" in text
        assert (exp / "run_experiment.sh").exists() == (container == "docker")
        assert f"    {shlex.quote(str(sif))} \\\n    latent-replay train --config" in text if container == "apptainer" else \
            '    "$image" \\\n    train --config "/results/$experiment/exp_configuration.json"' in text


# ------------------------------------------------------------------------------------ local launcher
def test_local_gpus(monkeypatch):
    assert S.local_gpus("cpu") == [None]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0, 3")
    assert S.local_gpus("auto") == ["0", "3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert S.local_gpus("cuda") == [None]


def test_local_launcher_runs_one_task_per_gpu(tmp_path):
    d = tmp_path / "s"
    (d / "logs").mkdir(parents=True)
    (d / "sweep.sbatch").write_text('#!/usr/bin/env bash\necho "$1 ${CUDA_VISIBLE_DEVICES:-none} $LATENT_REPLAY_JOB '
                                    '${LATENT_REPLAY_TASK_GPUS:-none}"\nsleep 0.3\n[ "$1" != 2 ]\n')
    tasks = [S.Task(i, "e", i) for i in range(4)]
    echoed = []
    results = S.run_local(d, tasks, ["0", "1"], echoed.append)
    assert sorted((t.index, code) for t, code in results) == [(0, 0), (1, 0), (2, 1), (3, 0)]
    job = f"local-{os.getpid()}"
    lines = [(d / "logs" / f"{job}_{i}.out").read_text().split() for i in range(4)]
    assert {ln[1] for ln in lines} == {"0", "1"} and all(ln[1] == ln[3] for ln in lines)   # docker tasks read the latter
    assert echoed[0] == f"running 4 task(s) here (GPU 0, 1); logs in {d / 'logs'}"
    assert any(ln.endswith(f"task 2: e run 2 failed (exit 1; log {d / 'logs' / f'{job}_2.out'})") for ln in echoed)
    assert [(s.job, s.launcher, s.array) for s in S.read_submissions(d)] == [(job, "local", "0-3")]


def test_local_sweep_end_to_end_with_failure_resubmit_and_figures(tmp_path, monkeypatch):
    """Synthetic CORe50 -> sweep --launcher local (the task fails: the labels file is gone) -> status -> fix ->
    sweep resubmit -> finished -> figures straight from the sweep folder."""
    from conftest import write_tiny_root

    root = write_tiny_root(tmp_path / "core50", objects=(1, 2, 6), frames=2)
    write_nicv2(root / "batch_filelists", inventory_from_root(root / "core50_128x128"), scenarios=(391,), runs=(0,))
    monkeypatch.setenv("LATENT_REPLAY_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "sweep"
    path = sweep_file(tmp_path, {"name": "e2e", "db_path": str(root), "out": str(out), "runs": [0], "device": "cpu",
                                 "grid": {"method": ["naive"], "replay": ["latent"]},
                                 "fixed": {"replay_memory": 20, "max_batches": 2, "epochs_first_batch": 1, "epochs": 1}})
    labels = root / "core50_labels.txt"
    hidden = root / "labels.hidden"

    # the expansion checks the dataset, so break it after writing: the task itself must fail
    real_write = S.write_sweep

    def write_then_break(*args, **kwargs):
        real_write(*args, **kwargs)
        labels.rename(hidden)

    monkeypatch.setattr(S.run, "write_sweep", write_then_break)   # where run_sweep looks it up
    r = cli("sweep", path, "--launcher", "local")
    assert r.exit_code == 1, r.output
    assert r.stderr == (f"Error: 1 of 1 task(s) failed (latent-replay sweep status {out}; run them again with "
                        f"latent-replay sweep resubmit {out} --launcher local)\n")
    status = S.collect_status(out)
    assert status[0].state == "failed" and status[0].exit == 1 and status[0].job.startswith("local-")
    assert "Error:" in Path(status[0].log).read_text()
    hidden.rename(labels)
    monkeypatch.setattr(S.run, "write_sweep", real_write)
    r = cli("sweep", "resubmit", out)   # the launcher the sweep was started with: local
    assert r.exit_code == 0, r.output
    assert "[1/1] task 0: naive_nicv2_391_latent_conv5_4dw_m20 run 0 finished" in r.stdout
    status = S.collect_status(out)
    assert status[0].state == "finished" and status[0].batches == 2
    run_dir = out / "naive_nicv2_391_latent_conv5_4dw_m20" / "run0"
    assert json.loads((run_dir / "summary.json").read_text())["batches"] == 2
    assert "nothing to submit" in cli("sweep", path, "--launcher", "local").stdout
    r = cli("figures", out, "--out", tmp_path / "figures", "--format", "png")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "figures" / "fig1_accuracy_vs_batches.png").is_file()
    assert "naive_nicv2_391_latent_conv5_4dw_m20" in (tmp_path / "figures" / "summary.csv").read_text()


def test_one_key_of_a_settings_object(db, tmp_path, fake_slurm):
    """``brn_first_batch.t0`` alone: the other BRN settings keep their defaults."""
    data = base(db, tmp_path)
    data["fixed"] = {**data["fixed"], "brn_first_batch.t0": 10}
    data["grid"] = {"method": ["naive"], "brn_incremental.d_max": [0.25, 0.5]}
    r = cli("sweep", sweep_file(tmp_path, data))
    assert r.exit_code == 0, r.output
    configs = sorted((tmp_path / "out").rglob("exp_configuration.json"))
    assert len(configs) == 2
    loaded = [ExperimentConfig.load(p) for p in configs]
    default = ExperimentConfig()
    assert all(c.brn_first_batch.t0 == 10 and c.brn_first_batch.t_r == default.brn_first_batch.t_r for c in loaded)
    assert sorted(c.brn_incremental.d_max for c in loaded) == [0.25, 0.5]


def test_warns_when_the_tasks_python_has_no_torch(db, tmp_path, fake_slurm, monkeypatch):
    monkeypatch.setattr(launch, "trainer_python", lambda: (Path("/usr/bin/python3"), False))
    r = cli("sweep", sweep_file(tmp_path, base(db, tmp_path)), "--dry-run")
    assert r.exit_code == 0, r.output
    assert ("  warning: the tasks will train with /usr/bin/python3, which has no PyTorch here (make test creates "
            "the checkout's .venv with everything)") in r.stdout.splitlines()
    monkeypatch.setattr(launch, "trainer_python", lambda: (Path("/usr/bin/python3"), True))
    assert "warning" not in cli("sweep", sweep_file(tmp_path, base(db, tmp_path)), "--dry-run").stdout


def test_latent_dtype_applies_to_latent_replay_only():
    """Generative replay fits its density models in float32: a latent_dtype grid merges for it."""
    assert S.applies("latent_dtype", {"replay": "latent"})
    assert not S.applies("latent_dtype", {"replay": "generative"})
    assert not S.applies("latent_dtype", {"replay": "none"})
    assert S.applies("latent_layer", {"replay": "generative"})


def test_ar1_constants_apply_to_ar1_only(db, tmp_path):
    """An ar1_xi grid next to other methods: AR1*'s constants mean nothing for naive, so its combinations
    merge into one experiment instead of training the same thing twice."""
    assert S.applies("ar1_xi", {"method": "ar1"}) and S.applies("ar1_c", {"method": "AR1S"})
    assert not S.applies("ar1_xi", {"method": "naive"}) and not S.applies("ar1_f_max", {})
    ex = S.expand(S.parse_sweep(base(db, tmp_path, grid={"method": ["naive", "ar1"], "ar1_xi": [0.001, 0.01]}),
                                "s.json"))
    assert [p.name for p in ex.experiments] == ["naive_nicv2_391_latent_conv5_4dw_m20",
                                                "ar1_nicv2_391_latent_conv5_4dw_m20_xi0.001",
                                                "ar1_nicv2_391_latent_conv5_4dw_m20_xi0.01"]
    assert ex.experiments[1].plan.config.method_params == {"f_max": 0.001, "c": 1.0, "xi": 0.001}
    same = S.expand(S.parse_sweep(base(db, tmp_path, grid={"method": ["ar1"], "method_params.xi": [0.001]}), "s.json"))
    assert [p.name for p in same.experiments] == ["ar1_nicv2_391_latent_conv5_4dw_m20_xi0.001"]
    assert ex.merged == 1 and ex.dropped == {"ar1_xi"}


def test_a_requeued_task_is_pending_not_failed(tmp_path, fake_slurm):
    """Slurm requeues a preempted task under the same job id: its state file says it ended (exit 143)
    but the queue has it waiting again, so it is pending (resubmitting it would run it twice); the same
    job still listed as running after it ended is Slurm finishing it: failed stays failed."""
    d = _status_folder(tmp_path)
    fake_slurm.queue("100|3|REQUEUED", "100|6|RUNNING")
    status = S.collect_status(d)
    assert (status[3].state, status[3].job, status[3].exit, status[3].detail) == ("pending", "100_3", None, "requeued")
    assert (status[6].state, status[6].exit) == ("failed", 143)


def test_schema2_key_names_in_a_grid_are_the_flat_keys_they_stand_for(db, tmp_path):
    """A grid may name settings by their section (schedule.epochs, method.params.xi): the same experiments
    as the flat names; a replay's memory applies to replay 'none' only where the caffe profile keeps one (B1)."""
    flat = S.expand(S.parse_sweep(base(db, tmp_path, grid={"method": ["ar1"], "epochs": [1, 2],
                                                          "method_params.xi": [0.01]}), "s.json"))
    named = S.expand(S.parse_sweep(base(db, tmp_path, grid={"method.name": ["ar1"], "schedule.epochs": [1, 2],
                                                           "method.params.xi": [0.01]}), "s.json"))
    assert [p.name for p in named.experiments] == [p.name for p in flat.experiments] == [
        "ar1_nicv2_391_latent_conv5_4dw_m20_xi0.01_epochs-1", "ar1_nicv2_391_latent_conv5_4dw_m20_xi0.01_epochs-2"]
    assert [p.plan.config for p in named.experiments] == [p.plan.config for p in flat.experiments]
    with pytest.raises(S.SweepError, match=r"grid.schedule.epochs: expected float, got str 'x'"):
        S.parse_sweep(base(db, tmp_path, grid={"schedule.epochs": ["x"]}), "s.json")
    assert not S.applies("replay_memory", {"method": "naive", "replay": "none"})
    assert S.applies("replay_memory", {"method": "naive", "replay": "none", "profile": "caffe"})
    assert not S.applies("replay_memory", {"method": "naive", "replay": "none", "profile": "caffe",
                                           "fidelity.replay_when_none": False})
    assert not S.applies("replay_memory", {"method": "joint", "replay": "none", "profile": "caffe"})
    assert S.applies("method_params.lam", {"method": "lwf"}) and not S.applies("method_params.lam", {"method": "ar1"})
