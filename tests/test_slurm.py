"""`latent-replay sweep` on a real Slurm: a one-node cluster (munged, slurmctld, slurmd) started on this machine.

Slow, root only, and only when asked for: ``make slurm-test`` (installs slurmctld, slurmd, slurm-client and munge
from Debian when missing, then runs ``pytest -m slow tests/test_slurm.py``), or ``LATENT_REPLAY_SLURM_TEST=1``.
It skips when the daemons are not installed. Everything lives in a temporary folder: its own munge key and
socket, a slurm.conf on free ports (``SLURM_CONF`` points the clients to it), state and spool folders; the
daemons run in the foreground and are stopped at the end. No systemd or cgroups are needed
(``ProctrackType=proctrack/linuxproc``, ``TaskPlugin=task/none``).

The test submits a sweep of 2 experiments x 2 runs on a tiny synthetic CORe50 (CPU, 4 batches per run),
cancels one task with ``scancel`` once it has trained a batch, checks ``sweep status`` (running, pending,
then failed), resubmits with ``sweep resubmit`` (only that task goes out again, and it resumes from its
checkpoint), and checks the result files and the final status.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo")


def _wanted(config) -> bool:
    return "slow" in (config.getoption("markexpr") or "") or os.environ.get("LATENT_REPLAY_SLURM_TEST") == "1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return 1024


class Cluster:
    """munged + slurmctld + slurmd on localhost, in the foreground, all files under one folder."""

    def __init__(self, work: Path):
        self.work = work
        self.procs: list[subprocess.Popen] = []
        self.host = socket.gethostname().split(".")[0]
        self.conf = work / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    def _write_conf(self) -> None:
        w = self.work
        for d in ("state", "spool", "log"):
            (w / d).mkdir()
        cpus = os.cpu_count() or 1
        memory = max(256, int(_memory_mb() * 0.9))
        self.conf.write_text(f"""\
ClusterName=lrtest
SlurmctldHost={self.host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={w / 'munge' / 'munge.socket'}
CredType=cred/munge
StateSaveLocation={w / 'state'}
SlurmdSpoolDir={w / 'spool'}
SlurmctldPidFile={w / 'slurmctld.pid'}
SlurmdPidFile={w / 'slurmd.pid'}
SlurmctldLogFile={w / 'log' / 'slurmctld.log'}
SlurmdLogFile={w / 'log' / 'slurmd.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
KillWait=5
MinJobAge=600
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName={self.host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} State=UNKNOWN
PartitionName=debug Nodes={self.host} Default=YES MaxTime=INFINITE State=UP
""")

    def _start(self, name: str, cmd: list[str]) -> None:
        log = open(self.work / "log" / f"{name}.out", "w")
        self.procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                           stdin=subprocess.DEVNULL))

    def start(self) -> "Cluster":
        self._write_conf()
        munge = self.work / "munge"
        munge.mkdir(mode=0o700)
        key = munge / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        self._start("munged", ["munged", "--foreground", "--force", f"--key-file={key}",
                               f"--socket={munge / 'munge.socket'}", f"--pid-file={munge / 'munged.pid'}",
                               f"--log-file={munge / 'munged.log'}", f"--seed-file={munge / 'munged.seed'}"])
        self._wait(lambda: (munge / "munge.socket").exists(), 20, "munged did not create its socket")
        self._start("slurmctld", ["slurmctld", "-D", "-i", "-f", str(self.conf)])
        self._start("slurmd", ["slurmd", "-D", "-N", self.host, "-f", str(self.conf)])
        self._wait(lambda: self.run("sinfo", "-h", "-o", "%T").stdout.strip() == "idle", 60,
                   "the node did not become idle")
        return self

    def run(self, *cmd, check: bool = False) -> subprocess.CompletedProcess:
        r = subprocess.run(list(cmd), capture_output=True, text=True, env=self.env, timeout=120)
        if check:
            assert r.returncode == 0, f"{cmd}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
        return r

    def queue(self) -> list[str]:
        return self.run("squeue", "-h", "-r", "-o", "%i %T").stdout.split("\n")[:-1]

    def _wait(self, ready, timeout: float, what: str) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if any(p.poll() is not None for p in self.procs):
                raise RuntimeError(f"{what}: a daemon exited\n{self.logs()}")
            if ready():
                return
            time.sleep(0.2)
        raise RuntimeError(f"{what} within {timeout}s\n{self.logs()}")

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}"
                         for p in sorted((self.work / "log").glob("*")) if p.is_file())

    def stop(self) -> None:
        if len(self.procs) == 3 and all(p.poll() is None for p in self.procs):
            # cancel what is left and let the job steps end while slurmd still listens to them
            self.run("scancel", "--user", "root")
            end = time.monotonic() + 30
            while time.monotonic() < end and self.queue():
                time.sleep(0.5)
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        for p in reversed(self.procs):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _wait_for(cond, timeout: float, what: str, cluster: Cluster, sweep_dir: Path | None = None):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        time.sleep(0.25)
    logs = ""
    if sweep_dir is not None and (sweep_dir / "logs").is_dir():
        logs = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}" for p in (sweep_dir / "logs").iterdir())
    raise AssertionError(f"{what} not within {timeout}s; queue {cluster.queue()}\n{logs}\n{cluster.logs()}")


def _status(cluster: Cluster, sweep_dir: Path) -> dict[int, dict]:
    """`sweep status --json` (a new process: about 4 s)."""
    r = cluster.run(sys.executable, "-m", "latent_replay.cli", "sweep", "status", str(sweep_dir), "--json", check=True)
    return {t["task"]: t for t in json.loads(r.stdout)}


def _status_now(sweep_dir: Path) -> dict[int, dict]:
    """The same status in this process (fast enough to catch a task between two batches)."""
    from dataclasses import asdict

    from latent_replay.sweep import collect_status

    return {s.task: asdict(s) for s in collect_status(sweep_dir)}


@pytest.mark.slow
def test_sweep_on_a_one_node_slurm_cluster(request, tmp_path, monkeypatch):
    if not _wanted(request.config):
        pytest.skip("the Slurm test runs with `make slurm-test` (pytest -m slow tests/test_slurm.py) "
                    "or LATENT_REPLAY_SLURM_TEST=1")
    missing = [t for t in DAEMONS if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (make slurm-test installs slurmctld slurmd slurm-client munge)")
    if os.geteuid() != 0:
        pytest.skip("the Slurm test starts munged, slurmctld and slurmd as root")
    from conftest import write_tiny_root
    from latent_replay.data.nicv2 import inventory_from_root, write_nicv2

    started = time.monotonic()
    root = write_tiny_root(tmp_path / "core50", objects=(1, 2, 6), frames=2)
    write_nicv2(root / "batch_filelists", inventory_from_root(root / "core50_128x128"), scenarios=(391,), runs=(0, 1))
    sweep_dir = tmp_path / "sweep out"   # a space: the #SBATCH --output path is quoted
    sweep_file = tmp_path / "tiny.json"
    sweep_file.write_text(json.dumps({
        "name": "tiny", "db_path": str(root), "out": str(sweep_dir), "runs": [0, 1], "device": "cpu",
        "grid": {"method": ["ar1free", "naive"]},
        "fixed": {"replay": "latent", "replay_memory": 20, "max_batches": 4, "epochs_first_batch": 1, "epochs": 1},
        "slurm": {"gpus": 0, "cpus_per_task": 1, "mem": None, "time": "00:10:00", "throttle": 2},
    }))
    work = Path(tempfile.mkdtemp(prefix="lr-slurm-", dir="/tmp"))   # short: the munge socket path has a limit
    cluster = Cluster(work)
    try:
        cluster.start()
        monkeypatch.setenv("SLURM_CONF", str(cluster.conf))
        cluster.env.update(LATENT_REPLAY_CACHE=str(tmp_path / "cache"), PYTHONUNBUFFERED="1")
        cli = [sys.executable, "-m", "latent_replay.cli", "--log-level", "WARNING", "sweep"]
        r = cluster.run(*cli, str(sweep_file), check=True)
        assert "2 experiment(s) x run(s) 0-1 = 4 task(s)" in r.stdout
        assert "submitted job " in r.stdout and "array 0-3%2 (4 task(s))" in r.stdout, r.stdout
        first_job = r.stdout.split("submitted job ")[1].split(":")[0]
        tasks = [ln.split("\t") for ln in (sweep_dir / "tasks.tsv").read_text().splitlines()[1:]]
        assert [(t[1].split("_")[0], t[2]) for t in tasks] == [("ar1free", "0"), ("ar1free", "1"),
                                                              ("naive", "0"), ("naive", "1")]
        victim = sweep_dir / tasks[0][1] / "run0"

        # tasks 0 and 1 start; 2 and 3 wait for the throttle (%2)
        _wait_for(lambda: (sweep_dir / "state" / "task0").is_file(), 120, "task 0 did not start", cluster, sweep_dir)
        status = _status_now(sweep_dir)
        assert status[0]["state"] == "running" and status[0]["job"] == f"{first_job}_0", status[0]
        assert status[2]["state"] == status[3]["state"] == "pending", status
        # task 0 trains its first batch (checkpoint written), then is cancelled
        _wait_for(lambda: (victim / "checkpoint.pt").is_file() and (victim / "metrics.csv").is_file(), 240,
                  "task 0 did not finish a batch", cluster, sweep_dir)
        cluster.run("scancel", f"{first_job}_0", check=True)
        assert _status_now(sweep_dir)[0]["state"] in ("running", "failed")
        _wait_for(lambda: not any(ln.startswith(f"{first_job}_0 ") for ln in cluster.queue()), 60,
                  "the cancelled task did not leave the queue", cluster, sweep_dir)
        status = _status(cluster, sweep_dir)
        assert status[0]["state"] == "failed" and status[0]["exit"] == 143, status[0]
        assert not (victim / "summary.json").exists()

        _wait_for(lambda: not cluster.queue(), 300, "the other tasks did not finish", cluster, sweep_dir)
        status = _status(cluster, sweep_dir)
        assert [status[i]["state"] for i in range(4)] == ["failed", "finished", "finished", "finished"], status
        r = cluster.run(*cli, "status", str(sweep_dir), check=True)
        assert "4 task(s): 3 finished, 0 running, 0 pending, 1 failed, 0 missing" in r.stdout
        assert "exit 143: terminated (scancel, time limit or preemption)" in r.stdout
        assert "1 task(s) to run again: latent-replay sweep resubmit" in r.stdout

        # resubmit: only task 0 goes out again and resumes from its checkpoint
        r = cluster.run(*cli, "resubmit", str(sweep_dir), check=True)
        assert "1 to submit" in r.stdout and "array 0%2 (1 task(s))" in r.stdout, r.stdout
        second_job = r.stdout.split("submitted job ")[1].split(":")[0]
        assert second_job != first_job
        _wait_for(lambda: not cluster.queue(), 300, "the resubmitted task did not finish", cluster, sweep_dir)
        status = _status(cluster, sweep_dir)
        assert all(status[i]["state"] == "finished" for i in range(4)), status
        log = sweep_dir / "logs" / f"{second_job}_0.out"
        assert f"task 0: {tasks[0][1]} run 0 (job {second_job}_0" in log.read_text()
        assert "resuming after batch 0" in log.read_text()

        for _, exp, run in tasks:
            run_dir = sweep_dir / exp / f"run{run}"
            rows = (run_dir / "metrics.csv").read_text().splitlines()
            assert len(rows) == 5, rows   # header + 4 batches
            summary = json.loads((run_dir / "summary.json").read_text())
            assert summary["finished"] and summary["batches"] == 4 and summary["device"] == "cpu"
        for exp in {t[1] for t in tasks}:
            assert (sweep_dir / exp / "summary.csv").is_file()
        subs = (sweep_dir / "submissions.tsv").read_text().splitlines()[1:]
        assert [s.split("\t")[:4] for s in subs] == [[first_job, "slurm", "0", "0-3%2"], [second_job, "slurm", "0", "0%2"]]
        r = cluster.run(*cli, "resubmit", str(sweep_dir), check=True)
        assert "nothing to submit" in r.stdout
        print(f"slurm sweep test: {time.monotonic() - started:.0f}s")
    finally:
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)
