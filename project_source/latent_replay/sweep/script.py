"""The job-array script ``sweep.sbatch``: the template ``job.sbatch.in`` (shipped with the package) filled in
from a :class:`ScriptSpec`.

Template fields are written ``{{ name }}``. A field alone on its line stands for a block of lines (none:
the line goes); any other field for text inside its line.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from .. import __version__, launch
from ..utils import format_int_list
from .expand import Expansion
from .schema import LOG_DIR, SlurmOptions
from .tasks import array_spec

TEMPLATE = Path(__file__).resolve().parent / "job.sbatch.in"
_FIELD = re.compile(r"\{\{ (\w+) \}\}")


def fill_template(template: str, fields: dict) -> str:
    """``template`` with its ``{{ name }}`` fields replaced: a list (a block of lines) where the field is alone
    on its line, else text. Every field must be given and every value used (ValueError naming it)."""
    used: set[str] = set()

    def value(name: str):
        if name not in fields:
            raise ValueError(f"{TEMPLATE.name}: no value for the field {name!r}")
        used.add(name)
        return fields[name]

    lines = []
    for line in template.split("\n"):
        alone = _FIELD.fullmatch(line)
        if alone:
            lines += value(alone.group(1))
        else:
            lines.append(_FIELD.sub(lambda m: str(value(m.group(1))), line))
    unused = sorted(set(fields) - used)
    if unused:
        raise ValueError(f"{TEMPLATE.name}: no field {unused[0]!r}")
    return "\n".join(lines)


@dataclass
class ScriptSpec:
    """Everything :func:`render_sbatch` needs (no file-system access but the template)."""

    name: str
    sweep_dir: Path
    #: The task indices of tasks.tsv.
    indices: list
    experiments: int
    runs: list
    slurm: SlurmOptions
    container: str = "none"
    gpu: bool = False
    image: str = ""
    mounts: list = field(default_factory=list)
    flavour: str = "new"
    command: list = field(default_factory=list)
    env: dict = field(default_factory=dict)


def script_spec(expansion: Expansion, indices: Sequence[int]) -> ScriptSpec:
    sweep = expansion.sweep
    first = expansion.experiments[0].plan
    command, env = launch.trainer_command() if sweep.container == "none" else ([], {})
    return ScriptSpec(name=sweep.name, sweep_dir=sweep.out, indices=sorted(indices),
                      experiments=len(expansion.experiments), runs=list(sweep.runs), slurm=sweep.slurm,
                      container=sweep.container, gpu=sweep.gpu, image=sweep.image, mounts=list(first.mounts),
                      flavour=launch.NVIDIA_DOCKER[sweep.nvidia_docker], command=command, env=env)


def render_sbatch(spec: ScriptSpec) -> str:
    """The job-array script: ``#SBATCH`` options, then the task: look up tasks.tsv, record state, run the trainer."""
    s = spec.slurm
    chunked = bool(spec.indices) and max(spec.indices) >= s.max_array_size
    setup = ["# slurm.setup of the sweep file", *s.setup, ""] if s.setup else []
    fields = {
        "name": spec.name, "experiments": spec.experiments, "runs": format_int_list(spec.runs),
        "tasks": len(spec.indices), "version": __version__, "how": _how(spec),
        "chunk_note": [f"# More tasks than MaxArraySize ({s.max_array_size}): submitted as several arrays, each "
                       "with LATENT_REPLAY_TASK_OFFSET."] if chunked else [],
        "directives": [f"#SBATCH {_directive(d)}" for d in _directives(spec, chunked)],
        "sweep_dir": shlex.quote(str(spec.sweep_dir)),
        "stop_container": ['        "$docker" stop --time 10 "$container" >/dev/null 2>&1 || true']
        if spec.container == "docker" else [],
        "setup": setup, "glibc_tunables": launch.GLIBC_TUNABLES, "trainer": _trainer(spec),
    }
    return fill_template(TEMPLATE.read_text(encoding="utf-8"), fields)


def _how(spec: ScriptSpec) -> str:
    if spec.container == "none":
        return "trains with the installed latent-replay (no container)"
    if spec.container == "docker":
        return f"trains in the docker image {spec.image}" + (" with the task's GPUs" if spec.gpu else ", no GPU")
    return f"trains in the Apptainer image {spec.image}" + (" with the task's GPUs (--nv)" if spec.gpu else ", no GPU")


def _directives(spec: ScriptSpec, chunked: bool) -> list[str]:
    s = spec.slurm
    directives = [f"--job-name={s.job_name or 'lr-' + spec.name}"]
    if not chunked:
        directives.append(f"--array={array_spec(spec.indices, s.throttle)}")
    # sbatch expands %-patterns in the path: a literal % of the folder is written %%
    directives.append(f"--output={str(spec.sweep_dir).replace('%', '%%')}/{LOG_DIR}/%A_%a.out")
    if s.time:
        directives.append(f"--time={s.time}")
    directives += ["--ntasks=1", f"--cpus-per-task={s.cpus_per_task}"]
    if s.mem:
        directives.append(f"--mem={s.mem}")
    if s.gpus and spec.gpu:      # device cpu: no GPU to wait for
        directives.append(f"--gres=gpu:{s.gpu_type + ':' if s.gpu_type else ''}{s.gpus}")
    for key in ("partition", "account", "qos"):
        if getattr(s, key):
            directives.append(f"--{key}={getattr(s, key)}")
    return directives + list(s.extra)


def _directive(option: str) -> str:
    """An ``#SBATCH`` option; a value with spaces is double-quoted (sbatch reads quoted directive values)."""
    if any(c.isspace() for c in option) and "=" in option:
        key, _, value = option.partition("=")
        return f'{key}="{value}"'
    return option


def _continued(parts: Sequence[str], indent: str = "    ") -> list[str]:
    """One command over several lines, ending in ``&`` (started in the background so that signals reach the trap)."""
    lines = []
    for i, part in enumerate(parts):
        end = " &" if i == len(parts) - 1 else " \\"
        lines.append(f"{indent if i else ''}{part}{end}")
    return lines


def _trainer(spec: ScriptSpec) -> list[str]:
    """The lines that start the trainer in the background for the task's experiment and run."""
    q = shlex.quote
    if spec.container == "none":
        lines = [f'export {key}={q(value)}"${{{key}:+:${key}}}"' for key, value in spec.env.items()]
        config = '"$sweep_dir/$experiment/exp_configuration.json"'
        return lines + _continued([" ".join(q(c) for c in spec.command),
                                   f'train --config {config} --runs "$run" --no-progress'])
    config = f'"{launch.CONTAINER_RESULTS}/$experiment/{launch.CONFIG_FILE}"'
    train = f'train --config {config} --runs "$run" --no-progress'
    if spec.container == "docker":
        return _docker(spec, train)
    parts = ['"$apptainer" exec' + (" --nv" if spec.gpu else ""), *(f"--bind {q(m.spec)}" for m in spec.mounts),
             f"--pwd {launch.CONTAINER_RESULTS}", q(spec.image), f"latent-replay {train}"]
    return ['apptainer="${APPTAINER:-apptainer}"', *_continued(parts)]


def _docker(spec: ScriptSpec, train: str) -> list[str]:
    lines = ['docker="${DOCKER:-docker}"', f"image={shlex.quote(spec.image)}",
             'container="latent-replay-${job}-task${task}"']
    gpu = []
    if spec.gpu:
        lines += ["# the GPU --launcher local gave this task, else Slurm's GPUs (global indices), else those "
                  "of CUDA_VISIBLE_DEVICES, else all",
                  'gpus="${LATENT_REPLAY_TASK_GPUS:-${SLURM_JOB_GPUS:-${CUDA_VISIBLE_DEVICES:-}}}"']
        if spec.flavour == "new":
            lines += ["gpu=(--gpus all)", 'if [ -n "$gpus" ]; then gpu=(--gpus "\\"device=$gpus\\""); fi']
        else:
            lines += ['gpu=(--runtime=nvidia -e "NVIDIA_VISIBLE_DEVICES=${gpus:-all}")']
        gpu = ['"${gpu[@]}"']
    parts = ['"$docker" run --rm --init --pull never --name "$container"', *gpu, "--network none",
             '--user "$(id -u):$(id -g)"', '-e "GLIBC_TUNABLES=$GLIBC_TUNABLES"',
             *(f"-v {shlex.quote(m.spec)}" for m in spec.mounts), '"$image"', train]
    return lines + _continued(parts)
