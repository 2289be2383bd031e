"""Process and machine figures shared by the benchmark scripts (Linux /proc; no third-party imports,
so the Avalanche worker can use it from its own virtual environment).

* :func:`peak_rss` / :func:`reset_peak_rss`: the resident-set high-water mark of this process
  (``VmHWM``) and its reset (``/proc/self/clear_refs``, value 5), so a benchmark can report the peak
  of one phase (the incremental batches) next to the peak of the whole process;
* :func:`run_measured`: run a worker process and record the wall time, the load before it and how
  many cores *other* processes kept busy meanwhile (to tell a clean measurement from a disturbed one);
* :func:`emit`: the benchmarks' output, one indented JSON object on stdout and optionally in a file.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path


def proc_status(*keys: str) -> dict[str, int]:
    """Bytes of the given ``/proc/self/status`` fields (e.g. ``VmRSS``, ``RssAnon``), those present."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key = line.split(":", 1)[0]
        if key in keys:
            out[key] = int(line.split()[1]) * 1024        # the file gives kB
    return out


def peak_rss() -> int:
    """Bytes: the highest resident set size of this process since start or the last reset."""
    hwm = proc_status("VmHWM").get("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024   # KiB on Linux


def reset_peak_rss() -> bool:
    """Start a new high-water mark at the current resident set size; False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def cpu_busy_seconds() -> float:
    """Busy CPU seconds of the whole machine so far (all cores, /proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")   # minus idle, iowait


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def worker_env(tuned_glibc: str | None, work: Path) -> dict:
    """The environment of a worker: ``GLIBC_TUNABLES`` set to ``tuned_glibc`` (or unset for None),
    bytecode cached in the work folder rather than in the virtual environments."""
    env = dict(os.environ)
    if tuned_glibc:
        env["GLIBC_TUNABLES"] = tuned_glibc
    else:
        env.pop("GLIBC_TUNABLES", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    return env


def run_measured(cmd: list[str], env: dict, result: Path, label: str, script: str) -> dict:
    """Run ``cmd``; return the JSON it wrote to ``result`` plus wall time, load and other cores."""
    load = os.getloadavg()[0]
    busy0, mine0, t0 = cpu_busy_seconds(), children_cpu(), time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{script}: {label} failed (exit {proc.returncode}):\n{proc.stdout[-4000:]}")
    out = json.loads(result.read_text())
    other = (cpu_busy_seconds() - busy0) - (children_cpu() - mine0)
    out.update(wall_seconds=wall, load1_before=load, other_cores=max(0.0, other / wall))
    print(f"  {label:50s} {wall:7.1f}s  load {load:4.2f}  other cores {out['other_cores']:4.2f}", file=sys.stderr)
    return out


def emit(out: dict, path: str | None) -> dict:
    """Print ``out`` as indented JSON and, when ``path`` is given, write the same text there."""
    text = json.dumps(out, indent=2)
    if path:
        Path(path).write_text(text + "\n")
    print(text)
    return out
