"""The checks of the launcher's arguments, in the original's order (spec §2.1 items 1-14), then the new
options: :func:`original_items` and :func:`new_options` (called by :func:`~latent_replay.launch.plan.validate`);
the dataset, filelists and weights on disk."""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import NamedTuple, Optional

from ..config import LATENT_LAYERS, PROFILES
from ..data.classes import IMAGES_DIR, LABELS_FILE, NUM_CLASSES
from ..registry import METHODS as REGISTRY_METHODS
from ..registry import REPLAYS as REGISTRY_REPLAYS
from .args import (DEFAULT_LAYER, DEFAULT_MEMORY, DEVICES, LAUNCHERS, NVIDIA_DOCKER, SCENARIOS, UsageError,
                   _int_value, _invalid_choice, _launcher_names, _run_numbers, default_image)


class Original(NamedTuple):
    """The values of the original launcher's arguments (items 1-13), checked."""

    method: str          # the registered names
    scenario: int
    replay: str
    db: Path             # resolved
    flavour: str         # "old" / "new"
    layer: str
    memory: int


class Options(NamedTuple):
    """The new options, checked."""

    runs: list
    out_dir: Path        # resolved, as the paths below
    filelists: Path
    weights: Optional[Path]
    image: str
    max_batches: Optional[int]


def original_items(ns, info: list[str]) -> Original:
    """Items 1-13 in the original's order (``info`` receives the lines to print on success)."""
    # 1-3: method, scenario, replay
    method, scenario, replay = _names(ns)
    latent = replay in ("latent", "generative")
    # 4-6: dataset root, labels file, image folder
    db = _check_dataset(ns.db_path)
    # 7: docker flavour
    if ns.nvidia_docker not in NVIDIA_DOCKER:
        raise _invalid_choice("--nvidia_docker", ns.nvidia_docker, NVIDIA_DOCKER)
    flavour = NVIDIA_DOCKER[ns.nvidia_docker]
    layer = _latent_layer(ns, method, latent, info)   # 8-11
    memory = _replay_memory(ns, replay)               # 12-13
    return Original(method, scenario, replay, db, flavour, layer, memory)


def _names(ns) -> tuple[str, int, str]:
    """Items 1-3: METHOD, SCENARIO, REPLAY; the method and replay as registered."""
    methods, replays = _launcher_names(REGISTRY_METHODS), _launcher_names(REGISTRY_REPLAYS)
    if ns.method not in methods:
        raise _invalid_choice("METHOD", ns.method, tuple(methods))
    if ns.scenario not in SCENARIOS:
        raise _invalid_choice("SCENARIO", ns.scenario, SCENARIOS)
    if ns.replay not in replays:
        raise _invalid_choice("REPLAY", ns.replay, tuple(replays))
    return methods[ns.method], int(ns.scenario), replays[ns.replay]


def _latent_layer(ns, method: str, latent: bool, info: list[str]) -> str:
    """Items 8-11: the latent layer."""
    # 8: latent layer name
    layer = DEFAULT_LAYER if ns.latent_layer is None else ns.latent_layer
    if layer not in LATENT_LAYERS:
        raise _invalid_choice("--latent_layer", layer, LATENT_LAYERS)
    # 9: an explicit layer needs a latent replay
    if ns.latent_layer is not None and not latent:
        raise UsageError("--latent_layer", f"only used with latent or generative replay (REPLAY is {ns.replay!r}; "
                                           "leave the option out or choose REPLAY latent)")
    # 10-11: CWR* trains only the classifier, so its latent replay is at pool6
    if method == "cwr" and latent:
        if ns.latent_layer is not None and layer != "pool6":
            raise UsageError("--latent_layer", f"CWR trains only the classifier, so {ns.replay} replay must use "
                                               f"pool6 (got {layer!r}; leave the option out or choose pool6)")
        if ns.latent_layer is None:
            layer = "pool6"
            info.append(f"CWR with {ns.replay} replay: latent layer pool6 (the only one CWR* supports)")
    return layer


def _replay_memory(ns, replay: str) -> int:
    """Items 12-13: the memory size."""
    # 12: memory size
    if ns.replay_memory is None:
        memory = DEFAULT_MEMORY
    else:
        memory = _int_value("--replay_memory", ns.replay_memory, "expected an integer > 0")
        if memory <= 0:
            raise UsageError("--replay_memory", f"must be an integer > 0, got {memory}")
    # 13: a memory without replay
    if ns.replay_memory is not None and replay == "none":
        raise UsageError("--replay_memory", "only used with replay (REPLAY is 'no'; choose pure, latent or generative)")
    return memory


def new_options(ns, original: Original, filelist_checks: dict | None) -> Options:
    """The new rules and options, in the order of the command line's help: JOINT without replay, ``--runs``,
    ``--launcher``, ``--device``, ``--profile``, ``--out``, ``--filelists`` (with the frames they name),
    ``--weights``, ``--image``, ``--max_batches``."""
    if original.method == "joint" and original.replay != "none":
        raise UsageError("REPLAY", f"JOINT retrains on all the data seen so far and takes no replay "
                                   f"(got {ns.replay!r}; choose no)")
    runs = _run_numbers(ns.runs)
    if ns.launcher not in LAUNCHERS:
        raise _invalid_choice("--launcher", ns.launcher, LAUNCHERS)
    if ns.device not in DEVICES:
        raise _invalid_choice("--device", ns.device, DEVICES)
    if ns.profile not in PROFILES:
        raise _invalid_choice("--profile", ns.profile, PROFILES)
    out_dir = Path(ns.out).expanduser().resolve()
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError("--out", f"{ns.out!r} is not a folder")
    db = original.db
    filelists = Path(ns.filelists).expanduser().resolve() if ns.filelists else _default_filelists(db)
    _check_filelists_once(filelist_checks, filelists, original.scenario, runs, db / IMAGES_DIR, db)
    weights = None
    if ns.weights is not None:
        weights = Path(ns.weights).expanduser().resolve()
        if not weights.is_file():
            raise UsageError("--weights", f"{ns.weights!r} is not a file (a converted checkpoint, pytorchcv "
                                          "state dict or .caffemodel; see models/README.md)")
    image = ns.image if ns.image is not None else default_image()
    if not image or any(c.isspace() for c in image) or image.startswith("-"):
        raise UsageError("--image", f"{image!r} is not an image name (NAME[:TAG])")
    max_batches = None
    if ns.max_batches is not None:
        max_batches = _int_value("--max_batches", ns.max_batches, "expected an integer >= 1")
        if max_batches < 1:
            raise UsageError("--max_batches", f"must be an integer >= 1, got {max_batches}")
    return Options(runs, out_dir, filelists, weights, image, max_batches)


def _check_dataset(db_path: str) -> Path:
    """Original items 4-6: the folder, the labels file, the image folder."""
    what = f"expected a CORe50 root holding {LABELS_FILE} and {IMAGES_DIR}/"
    db = Path(db_path).expanduser()
    if not db.exists():
        raise UsageError("DB_PATH", f"{db_path!r} does not exist ({what})")
    if not db.is_dir():
        raise UsageError("DB_PATH", f"{db_path!r} is not a folder ({what})")
    db = db.resolve()
    labels = db / LABELS_FILE
    if not labels.is_file():
        raise UsageError("DB_PATH", f"{labels} is missing ({what}; it lists the {NUM_CLASSES} object names)")
    try:
        names = [ln for ln in labels.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError("DB_PATH", f"{labels} cannot be read ({exc.__class__.__name__}: {exc})") from None
    if len(names) != NUM_CLASSES:
        raise UsageError("DB_PATH", f"{labels} has {len(names)} object names, expected {NUM_CLASSES}")
    if not (db / IMAGES_DIR).is_dir():
        raise UsageError("DB_PATH", f"{db / IMAGES_DIR} is missing ({what}; "
                                    f"{IMAGES_DIR}/s<S>/o<O>/C_<ss>_<oo>_<fff>.png)")
    return db


def _default_filelists(db: Path) -> Path:
    """DB_PATH/batch_filelists if present, else the shipped official lists."""
    from ..data.filelists import FilelistError, default_filelists_root

    try:
        return default_filelists_root(db)
    except FilelistError as exc:
        raise UsageError("--filelists", str(exc)) from None


def _filelists_hint(path: Path, db: Path, missing_frames: bool = False) -> str:
    """What to do when the filelists at ``path`` lack a scenario or run, or name frames DB_PATH lacks ("" if
    nothing more can be said)."""
    from ..data.filelists import FilelistError, shipped_filelists_root

    try:
        shipped = path == shipped_filelists_root()
    except FilelistError:
        shipped = False
    q = shlex.quote
    if missing_frames:
        return (f"the shipped lists name frames of the full CORe50; for a partial dataset make lists of its "
                f"frames: latent-replay filelists make {q(str(db))} --out {q(str(db / 'batch_filelists'))}, "
                "used by default") if shipped else ""
    if shipped:
        return f"the shipped lists hold runs 0-4; all 10 official runs: latent-replay download filelists --root {q(str(db))}"
    return f"make them with: latent-replay filelists make {q(str(db))} --out {q(str(path))}"


def _check_filelists(path: Path, scenario: int, runs: list[int], images_dir: Path, db: Path) -> None:
    from ..data.filelists import FilelistError, PathIndex
    from ..data.nicv2 import load_scenario

    if not path.is_dir():
        raise UsageError("--filelists", f"{path} is not a folder of NICv2 filelists "
                                        f"({_filelists_hint(path, db)}, or pass --filelists DIR)")
    index = PathIndex(images_dir)
    try:
        for run in runs:
            sc = load_scenario(path, scenario, run)
            for fl in (*sc.batches, sc.test):
                index.check(fl)
    except FilelistError as exc:
        msg, hint = str(exc), ""
        if "no folder for NICv2" in msg:
            hint = _filelists_hint(path, db)
        elif " does not exist under " in msg:
            hint = _filelists_hint(path, db, missing_frames=True)
        raise UsageError("--filelists", f"{msg} ({hint})" if hint else msg) from None


def _check_filelists_once(memo: dict | None, path: Path, scenario: int, runs: list[int], images_dir: Path,
                          db: Path) -> None:
    if memo is None:
        return _check_filelists(path, scenario, runs, images_dir, db)
    key = (str(path), scenario, tuple(runs), str(images_dir), str(db))
    if key not in memo:
        try:
            _check_filelists(path, scenario, runs, images_dir, db)
            memo[key] = None
        except UsageError as exc:
            memo[key] = exc
    if memo[key] is not None:
        raise memo[key]
