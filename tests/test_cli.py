"""The ``latent-replay`` command line: outputs, files, one-line errors and exit codes."""
from __future__ import annotations

from click.testing import CliRunner

from latent_replay.cli import main


def run(*args):
    return CliRunner().invoke(main, ["--log-level", "WARNING", *map(str, args)])


def test_filelists_make_check_summary(tiny_root, tmp_path):
    out = tmp_path / "lists"
    r = run("filelists", "make", tiny_root, "--out", out, "--scenario", "391", "--runs", "0-1")
    assert r.exit_code == 0, r.output
    assert "wrote NICv2-391 runs 0..1 from 132 frames" in r.output
    assert sorted(p.name for p in (out / "NICv2_391").iterdir()) == ["run0", "run1"]
    r = run("filelists", "make", tiny_root, "--out", out, "--scenario", "391", "--runs", "0")
    assert r.exit_code == 1 and r.stderr.count("\n") == 1
    assert r.stderr == f"Error: {out / 'NICv2_391'} already exists (use --force to replace it)\n"
    assert (out / "NICv2_391" / "run1").is_dir()  # nothing was lost
    r = run("filelists", "check", out, "--root", tiny_root, "--scenario", "391", "--runs", "0,1")
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[1].startswith("ok NICv2-391 run 1: 30 batches, 96 train frames, 2 test frames")
    # a frame in two train batches, or in a train batch and the test list, is refused (the official lists
    # have neither)
    b0, b3 = (out / "NICv2_391" / "run0" / f"train_batch_{i:02d}_filelist.txt" for i in (0, 3))
    first, original = b0.read_text().splitlines()[0], b3.read_text()
    b3.write_text(original + first + "\n")
    r = run("filelists", "check", out, "--scenario", "391", "--runs", "0")
    assert r.exit_code == 1 and r.stderr == (f"Error: {out}: NICv2-391 run 0: {first.split()[0]} is in train batch 0 "
                                             "and in train batch 3\n")
    b3.write_text(original)
    test = (out / "test_filelist_20.txt").read_text().splitlines()[0]
    b3.write_text(original + test + "\n")
    r = run("filelists", "check", out, "--scenario", "391", "--runs", "0")
    assert r.exit_code == 1 and r.stderr.endswith(f"{test.split()[0]} is in train batch 3 and in the test list\n")
    b3.write_text(original)
    r = run("filelists", "summary", out, "--scenario", "391", "--run", "0")
    assert r.exit_code == 0
    assert "NICv2-391 run 0: 30 batches, 96 train frames, 2 test frames, 4 classes" in r.output
    assert "    0       9  0,5,10             0,5,10" in r.output


def test_cli_errors_are_one_line(tiny_root, tmp_path):
    out = tmp_path / "lists"
    assert run("filelists", "make", tiny_root, "--out", out, "--scenario", "79", "--runs", "0").exit_code == 0
    bad = out / "NICv2_79" / "run0" / "train_batch_01_filelist.txt"
    lines = bad.read_text().splitlines()
    lines[2] = lines[2].rsplit(" ", 1)[0] + " 77"
    bad.write_text("\n".join(lines) + "\n")
    r = run("filelists", "check", out, "--scenario", "79", "--runs", "0")
    assert r.exit_code == 1
    assert r.stderr == f"Error: {bad}:3: label 77 outside 0..49\n"
    r = run("filelists", "make", tmp_path / "missing", "--out", out)
    assert r.exit_code == 1 and r.stderr == f"Error: {tmp_path / 'missing'}: dataset root does not exist\n"
    r = run("filelists", "make", tiny_root, "--runs", "x")
    assert r.exit_code == 2
    assert r.stderr.splitlines()[-1] == ("Error: Invalid value for '--runs': 'x' is not a list or range of "
                                         "integers (e.g. 0-4 or 0,2,4)")
    r = run("filelists", "check", out, "--scenario", "80")
    assert r.exit_code == 2 and "'80' is not one of '79', '196', '391'" in r.output


def test_cache_command(tiny_root, tmp_path):
    out = tmp_path / "lists"
    run("filelists", "make", tiny_root, "--out", out, "--scenario", "196", "--runs", "0")
    args = ("cache", tiny_root, out, "--scenario", "196", "--runs", "0", "--cache-dir", tmp_path / "c")
    r = run(*args)
    assert r.exit_code == 0, r.output
    # 96 training frames (all runs share them) + 2 reduced-test frames, each decoded once
    assert r.stdout.startswith("98 frames decoded (0.0 MB) in ")
    assert run(*args).stdout.startswith("98 frames already cached")


def test_default_filelists_folder(tiny_root, tmp_path):
    """Without FILELISTS_DIR: the shipped official lists, or ROOT/batch_filelists where a dataset root is given
    and holds one (where `filelists make` writes by default)."""
    from conftest import SHIPPED_FILELISTS

    r = run("filelists", "summary")
    assert r.exit_code == 0 and r.stdout.startswith("NICv2-391 run 0: 391 batches, 119894 train frames, 2249 test "
                                                    "frames, 50 classes"), r.output
    assert "last batch introducing a new class: 340" in r.stdout
    r = run("filelists", "check", "--scenario", "196", "--runs", "4")
    assert r.stdout == (f"ok NICv2-196 run 4: 196 batches, 119894 train frames, 2249 test frames "
                        f"({SHIPPED_FILELISTS / 'NICv2_196' / 'run4'})\n"), r.output
    r = run("filelists", "check", "--root", tiny_root, "--scenario", "196", "--runs", "0")
    assert r.exit_code == 1 and r.stderr.startswith(f"Error: {SHIPPED_FILELISTS / 'NICv2_196' / 'run0'}/train_batch_")
    r = run("filelists", "make", tiny_root, "--scenario", "196", "--runs", "0")
    assert r.exit_code == 0 and r.stdout.endswith(f"to {tiny_root / 'batch_filelists'}\n"), r.output
    r = run("filelists", "check", "--root", tiny_root, "--scenario", "196", "--runs", "0")
    assert r.stdout.endswith(f"({tiny_root / 'batch_filelists' / 'NICv2_196' / 'run0'})\n"), r.output
    r = run("cache", tiny_root, "--scenario", "196", "--runs", "0", "--cache-dir", tmp_path / "c")
    assert r.exit_code == 0 and r.stdout.startswith("98 frames decoded"), r.output


def test_synth_command_and_demo(tmp_path, monkeypatch):
    r = run("synth", tmp_path / "s", "--sessions", "3", "--categories", "1", "--objects-per-category", "1",
            "--frames", "2", "--size", "16")
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("synthetic CORe50: 6 images, sessions 3, objects 1, 2 frames/video, 16x16")
    assert sorted(p.name for p in (tmp_path / "s" / "core50_128x128").iterdir()) == ["s1", "s2", "s3"]
    r = run("synth", tmp_path / "bad", "--sessions", "12")
    assert r.exit_code == 1 and r.stderr.startswith("Error: sessions must be an integer in [1, 11]")

    import latent_replay.demo as demo
    monkeypatch.setattr(demo, "DEMO_DATASET", dict(sessions=11, categories=2, objects_per_category=2, frames=2, size=32))
    monkeypatch.setattr(demo, "DEMO_TRAINING", {**demo.DEMO_TRAINING, "epochs_first_batch": 2, "max_batches": 3})
    out = tmp_path / "demo"
    first = run("demo", "--out", out)
    assert first.exit_code == 0, first.output
    assert "NICv2-391 run 0: 31 batches, 64 train frames" in first.stdout
    assert (out / "batch_filelists" / "NICv2_79" / "run4" / "train_batch_00_filelist.txt").is_file()
    table = first.stdout.split("experiment", 1)[1].splitlines()
    assert table[1].startswith("ar1free_nicv2_391_latent_conv5_4dw_m300") and table[2].startswith("naive_nicv2_391_none")
    for name in ("ar1free_nicv2_391_latent_conv5_4dw_m300", "naive_nicv2_391_none"):
        assert len((out / "results" / name / "run0" / "metrics.csv").read_text().splitlines()) == 1 + 3
    assert (out / "figures" / "fig1_accuracy_vs_batches.png").is_file() and (out / "figures" / "summary.md").is_file()
    second = run("demo", "--out", out)  # reuses dataset, cache and finished runs
    assert second.exit_code == 0 and second.stdout.split("experiment", 1)[1] == first.stdout.split("experiment", 1)[1]
    assert "set aside" not in second.stdout
    # a later version with other demo settings: the former results are set aside, not refused
    monkeypatch.setattr(demo, "DEMO_TRAINING", {**demo.DEMO_TRAINING, "lr": 0.01, "max_batches": 2})
    (out / "results" / "naive_nicv2_391_none" / "run0" / "summary.json").unlink()     # as if interrupted
    third = run("demo", "--out", out)
    assert third.exit_code == 0, third.output
    for name in ("ar1free_nicv2_391_latent_conv5_4dw_m300", "naive_nicv2_391_none"):
        assert f"{out / 'results' / name / 'run0'} was trained with another configuration (changed: schedule.lr): set aside " \
               "as run0.former" in third.stdout
        assert len((out / "results" / name / "run0" / "metrics.csv").read_text().splitlines()) == 1 + 2
        assert len((out / "results" / name / "run0.former" / "metrics.csv").read_text().splitlines()) == 1 + 3
    # an unfinished run whose checkpoint an older version wrote under a default changed since: set aside too
    import torch

    run0 = out / "results" / "ar1free_nicv2_391_latent_conv5_4dw_m300" / "run0"
    state = torch.load(run0 / "checkpoint.pt", weights_only=False)
    state["fidelity"]["lower_drift"] = True
    torch.save(state, run0 / "checkpoint.pt")
    (run0 / "summary.json").unlink()
    fourth = run("demo", "--out", out)
    assert fourth.exit_code == 0, fourth.output
    assert (f"{run0} was trained with another configuration (changed: fidelity.lower_drift): set aside as "
            "run0.former2") in fourth.stdout
    assert (run0 / "summary.json").is_file() and not (run0.parent / "run0.former2" / "summary.json").exists()


def test_training_does_not_load_pandas():
    """The subcommands of other modules load on use: `latent-replay train` (the trainer and its metrics.csv
    writer) runs without pandas and matplotlib (38 MB resident, a second of start-up on 2 cores)."""
    import subprocess
    import sys

    code = ("import sys; from latent_replay.cli import main; import latent_replay.train; "
            "main.get_command(None, 'train'); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'pandas', 'matplotlib', 'sklearn'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert set(main.list_commands(None)) >= {"train", "figures", "sweep", "prepare", "glr-bench", "weights"}
    assert main.get_command(None, "figures").name == "figures"


def test_usage_errors_are_one_line():
    """click's usage errors, the group's own and any subcommand's (lazily loaded or not, nested or not),
    are one `Error:` line with exit code 2; a group called without arguments shows its help."""
    cases = [
        (("train", "--bogus"), "Error: No such option '--bogus'. (Did you mean one of: '--out', '--runs'?)"),
        (("train", "--runs", "x"),
         "Error: Invalid value for '--runs': 'x' is not a list or range of integers (e.g. 0-4 or 0,2,4)"),
        (("sweep", "status"), "Error: Missing argument 'SWEEP_DIR'."),
        (("figures", "--formats", "png"), "Error: No such option '--formats'. Did you mean '--format'?"),
        (("--bogus",), "Error: No such option '--bogus'."),
    ]
    for args, message in cases:
        r = CliRunner().invoke(main, list(args))
        assert (r.exit_code, r.stderr) == (2, message + "\n"), args
    r = CliRunner().invoke(main, ["sweep"])
    assert r.exit_code == 2 and "Usage: main sweep" in r.output and "Error" not in r.output


def test_an_output_path_that_cannot_be_written_is_one_line(tmp_path):
    """A file where a folder should be (or a folder without write permission) is named in one line."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = run("synth", blocker / "core", "--sessions", 1)
    assert r.exit_code == 1 and r.output.count("\n") == 1 and str(blocker) in r.output, r.output
    r = run("glr-bench", "--out", blocker / "gb", "--experiences", 2, "--epochs", 1, "--seeds", 1,
            "--max-train", 50, "--no-progress")
    assert r.exit_code == 1 and r.output.count("\n") == 1 and str(blocker) in r.output, r.output
    r = run("filelists", "make", tmp_path, "--seed", -1)
    assert r.exit_code == 2 and "'--seed': -1 is not in the range x>=0" in r.output
