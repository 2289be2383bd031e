"""``prepare_experiment.py``: the original launcher's command line, writing the trainer's config and a run script.

    prepare_experiment.py METHOD SCENARIO REPLAY DB_PATH [--latent_layer L] [--replay_memory N]
                          [--nvidia_docker old|new|nvidia-docker2|nvidia-container-toolkit] [options]
    prepare_experiment.py list_layers

The positional arguments and the three original options take exactly the original's values and are
checked in the original's order (spec §2.1, items 1-14), with its message bugs fixed (§11 B17): every
rejection is one line ``PROG: error: argument NAME: ...`` naming the accepted values, exit code 2, and
nothing is written. New: METHOD ``NAIVE``/``JOINT``, REPLAY ``generative``, ``--runs``, ``--launcher``,
``--device``, ``--profile``, ``--out``, ``--filelists``, ``--weights``, ``--image``, ``--max_batches``,
``--set KEY=VALUE`` and ``--force``, checked after the original ones in that order.

On success the experiment folder ``<out>/<experiment_name>/`` (where the trainer also writes
``run<R>/``) receives ``exp_configuration.json`` (the trainer's :class:`ExperimentConfig`, with the
paths the trainer will see: host paths for ``local``, container paths for ``docker``) and an executable
``run_experiment.sh``; both are written atomically, and an existing experiment is replaced only with
``--force``. A failing write exits with 1.

The same command is ``latent-replay prepare`` (:data:`prepare_command`); ``run_experiments/prepare_experiment.py``
is a shim calling :func:`main`.

Modules: :mod:`.args` (the accepted values, :class:`UsageError`, the parser, value parsing, ``--set``),
:mod:`.checks` (items 1-14 and the new options; the dataset, filelists and weights on disk), :mod:`.mounts`
(the paths the trainer sees, the container's mounts), :mod:`.plan` (:class:`Plan`, :func:`validate`,
:func:`plan_experiment`), :mod:`.script` (the run scripts, the trainer's Python), :mod:`.command`
(:func:`write_plan`, :func:`main`, :data:`prepare_command`). A test that monkeypatches one of these names
patches it on the module that owns it (e.g. ``launch.checks._check_filelists``, ``launch.script.repo_root``):
the package only re-exports them.
"""
from ..registry import METHODS as REGISTRY_METHODS
from ..registry import REPLAYS as REGISTRY_REPLAYS
from ..results import CONFIG_FILE
from .args import (DEFAULT_LAYER, DEFAULT_MEMORY, DEFAULT_OUT, DEFAULT_RUNS, DEVICES, LAUNCHERS, MANAGED_KEYS,
                   NVIDIA_DOCKER, PROG, SCENARIOS, UsageError, _launcher_names, build_parser, default_image)
from .checks import _check_filelists  # noqa: F401  (tests patch it in launch.checks)
from .command import _display, main, prepare_command, write_plan  # noqa: F401  (_display: sweep, tests)
from .mounts import CONTAINER_DATASETS, CONTAINER_FILELISTS, CONTAINER_RESULTS, CONTAINER_WEIGHTS, Mount
from .plan import RUN_SCRIPT, Plan, plan_experiment, validate
from .script import (FIRST_CHECK, GLIBC_TUNABLES, GPU_OPTIONS, describe, render_docker_script, render_local_script,
                     render_script, repo_root, trainer_command, trainer_python)

__all__ = [
    "CONFIG_FILE", "DEFAULT_LAYER", "DEFAULT_MEMORY", "DEFAULT_OUT", "DEFAULT_RUNS", "DEVICES", "LAUNCHERS",
    "MANAGED_KEYS", "NVIDIA_DOCKER", "PROG", "SCENARIOS", "UsageError", "build_parser", "default_image", "main",
    "prepare_command", "write_plan", "CONTAINER_DATASETS", "CONTAINER_FILELISTS", "CONTAINER_RESULTS",
    "CONTAINER_WEIGHTS", "Mount", "RUN_SCRIPT", "Plan", "plan_experiment", "validate", "FIRST_CHECK",
    "GLIBC_TUNABLES", "GPU_OPTIONS", "describe", "render_docker_script", "render_local_script", "render_script",
    "repo_root", "trainer_command", "trainer_python", "METHODS", "REPLAYS",
]


def __getattr__(name: str):
    """``METHODS`` and ``REPLAYS``: the names the launcher accepts, read from the registries when asked
    for (so importing the launcher does not import every method)."""
    if name in ("METHODS", "REPLAYS"):
        return tuple(_launcher_names(REGISTRY_METHODS if name == "METHODS" else REGISTRY_REPLAYS))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

