"""CORe50 filelists: read, write and validate the official format; discover scenario folders.

The official format is one pattern per line, ``<relative path> <label>``, for example
``s1/o1/C_01_01_000.png 0``: the path is relative to the dataset's ``core50_128x128`` folder and the
label is the object number minus one (0..49).

Scenario folders come in three namings, all accepted when reading:

* ``NICv2_<S>/run<R>/`` (this suite, ``batch_filelists/``),
* ``NIC_v2_<S>/run<R>/`` (CORe50's ``batches_filelists_NICv2.zip``),
* ``sIII_v2_<S>/run<R>/`` (the Latent Replay release),

each holding ``train_batch_<XX>_filelist.txt`` with the batch number padded to two or three digits.
The test lists (``test_filelist.txt``, ``test_filelist_20.txt``) are looked up in the run folder,
then the scenario folder, then the filelists root.

The suite ships CORe50's official lists (runs 0-4 of each scenario, both test lists) in the checkout's
``batch_filelists/``; :func:`default_filelists_root` is the folder every command uses when given none.
"""
from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .classes import NUM_CLASSES

#: ``s<session>/o<object>/C_<ss>_<oo>_<fff>.png`` (the CORe50 128x128 frame naming).
FRAME_RE = re.compile(r"^s(\d{1,2})/o(\d{1,2})/C_(\d{2})_(\d{2})_(\d{3})\.png$")
BATCH_FILE_RE = re.compile(r"^train_batch_(\d{2,3})_filelist\.txt$")
SCENARIOS = (79, 196, 391)
#: Folder namings of a scenario, ours first.
SCENARIO_DIR_NAMES = ("NICv2_{s}", "NIC_v2_{s}", "sIII_v2_{s}")
TEST_FULL = "test_filelist.txt"
TEST_REDUCED = "test_filelist_20.txt"
#: The reduced test list keeps every 20th line of the full one (indices 0, 20, 40, ...).
REDUCED_STEP = 20
#: The folder of the shipped lists in the checkout, and the default folder name under a dataset root.
FILELISTS_DIR = "batch_filelists"
#: Names the shipped lists' folder for an installed copy without the checkout (the Docker image sets it).
FILELISTS_ENV = "LATENT_REPLAY_FILELISTS"
#: ``<checkout>/project_source/latent_replay/data/filelists.py`` -> ``<checkout>``.
_CHECKOUT = Path(__file__).resolve().parents[3]


class FilelistError(ValueError):
    """A filelist or filelists folder is malformed; the message names the file (and line)."""


@dataclass(frozen=True)
class Filelist:
    """The patterns of one filelist: relative paths and integer labels, in file order."""

    paths: tuple[str, ...]
    labels: np.ndarray
    source: str = "<memory>"
    #: 1-based line number of each pattern in ``source`` (None for lists built in memory).
    lines: tuple[int, ...] | None = None

    def __post_init__(self):
        if len(self.paths) != len(self.labels):
            raise ValueError(f"{self.source}: {len(self.paths)} paths but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def classes(self) -> tuple[int, ...]:
        """Sorted distinct labels."""
        return tuple(int(c) for c in np.unique(self.labels))

    def every(self, step: int) -> "Filelist":
        """Every ``step``-th pattern starting at the first (how the reduced test list is made)."""
        lines = self.lines[::step] if self.lines is not None else None
        return Filelist(self.paths[::step], self.labels[::step].copy(), self.source, lines)

    def where(self, index: int) -> str:
        """``file:line`` (or ``file: pattern N``) of pattern ``index``, for error messages."""
        if self.lines is not None:
            return f"{self.source}:{self.lines[index]}"
        return f"{self.source}: pattern {index + 1}"


def parse_frame_path(path: str) -> tuple[int, int, int] | None:
    """(session, object, frame) of a CORe50 frame path, or None if the name does not follow it.

    The folder numbers must agree with the numbers inside the file name.
    """
    m = FRAME_RE.match(path)
    if not m:
        return None
    s_dir, o_dir, s_file, o_file, frame = map(int, m.groups())
    if s_dir != s_file or o_dir != o_file:
        return None
    return s_dir, o_dir, frame


def frame_path(session: int, obj: int, frame: int) -> str:
    """Relative path of a frame, e.g. ``frame_path(1, 1, 0) == 's1/o1/C_01_01_000.png'``."""
    return f"s{session}/o{obj}/C_{session:02d}_{obj:02d}_{frame:03d}.png"


def read_filelist(path: str | os.PathLike, *, allow_empty: bool = False) -> Filelist:
    """Read and validate one filelist.

    Blank lines are ignored. Every other line must be ``<path> <label>`` with a CORe50 frame path and
    a label in 0..49 equal to the object number minus one. Errors name the file and the line.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FilelistError(f"{path}: filelist not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise FilelistError(f"{path}: cannot read filelist ({exc})") from None
    paths: list[str] = []
    labels: list[int] = []
    line_numbers: list[int] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        where = f"{path}:{lineno}"
        if len(fields) != 2:
            raise FilelistError(f"{where}: malformed line {line.strip()!r} (expected '<path> <label>')")
        rel, label_text = fields
        try:
            label = int(label_text)
        except ValueError:
            raise FilelistError(f"{where}: label {label_text!r} is not an integer") from None
        if not 0 <= label < NUM_CLASSES:
            raise FilelistError(f"{where}: label {label} outside 0..{NUM_CLASSES - 1}")
        parsed = parse_frame_path(rel)
        if parsed is None:
            raise FilelistError(
                f"{where}: path {rel!r} is not a CORe50 frame (expected s<S>/o<O>/C_<SS>_<OO>_<FFF>.png)"
            )
        if parsed[1] - 1 != label:
            raise FilelistError(
                f"{where}: label {label} disagrees with object folder o{parsed[1]} (expected {parsed[1] - 1})"
            )
        paths.append(rel)
        labels.append(label)
        line_numbers.append(lineno)
    if not paths and not allow_empty:
        raise FilelistError(f"{path}: empty filelist (no patterns)")
    return Filelist(tuple(paths), np.asarray(labels, dtype=np.int64), str(path), tuple(line_numbers))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        os.chmod(tmp, 0o666 & ~_umask())   # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_filelist(path: str | os.PathLike, paths: Sequence[str], labels: Iterable[int]) -> None:
    """Write a filelist in the official format (atomically)."""
    labels = [int(x) for x in labels]
    if len(labels) != len(paths):
        raise ValueError(f"{path}: {len(paths)} paths but {len(labels)} labels")
    atomic_write_text(path, "".join(f"{p} {lab}\n" for p, lab in zip(paths, labels)))


def shipped_filelists_root() -> Path:
    """The official NICv2 filelists shipped with the suite: ``$LATENT_REPLAY_FILELISTS`` when set (the
    Docker image sets it to its copy), else the checkout's ``batch_filelists/``."""
    env = os.environ.get(FILELISTS_ENV)
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise FilelistError(f"{FILELISTS_ENV}={env}: not a folder (it names the shipped {FILELISTS_DIR}/)")
        return path.resolve()
    if (_CHECKOUT / FILELISTS_DIR).is_dir():
        return _CHECKOUT / FILELISTS_DIR
    raise FilelistError(f"no shipped filelists: {_CHECKOUT / FILELISTS_DIR} does not exist (an installed copy "
                        f"without the checkout) and {FILELISTS_ENV} is not set (set it to a checkout's "
                        f"{FILELISTS_DIR}/, or name a filelists folder)")


def default_filelists_root(dataset_root: str | os.PathLike | None = None) -> Path:
    """The filelists folder to use when none is given: ``<dataset_root>/batch_filelists`` when that
    folder exists (where ``latent-replay download`` puts the official lists, all 10 runs), else the
    shipped lists (:func:`shipped_filelists_root`)."""
    if dataset_root is not None:
        root = Path(dataset_root).expanduser()
        if (root / FILELISTS_DIR).is_dir():
            return root.resolve() / FILELISTS_DIR
    return shipped_filelists_root()


def find_scenario_dir(filelists_root: str | os.PathLike, scenario: int, run: int) -> Path:
    """The ``<scenario>/run<R>`` folder under ``filelists_root``, in any of the accepted namings."""
    root = Path(filelists_root)
    if not root.is_dir():
        raise FilelistError(f"{root}: filelists folder not found")
    tried = []
    for pattern in SCENARIO_DIR_NAMES:
        candidate = root / pattern.format(s=scenario) / f"run{run}"
        if candidate.is_dir():
            return candidate
        tried.append(candidate.relative_to(root).as_posix())
    raise FilelistError(f"{root}: no folder for NICv2-{scenario} run {run} (looked for {', '.join(tried)})")


def batch_files(run_dir: str | os.PathLike) -> list[Path]:
    """The train batch filelists of a run folder, ordered by batch number, checked to be 0..N-1."""
    run_dir = Path(run_dir)
    numbered: dict[int, Path] = {}
    for entry in run_dir.iterdir():
        m = BATCH_FILE_RE.match(entry.name)
        if not m:
            continue
        idx = int(m.group(1))
        if idx in numbered:
            raise FilelistError(f"{entry}: batch {idx} appears twice (also {numbered[idx].name})")
        numbered[idx] = entry
    if not numbered:
        raise FilelistError(f"{run_dir}: no train_batch_<XX>_filelist.txt files")
    missing = sorted(set(range(max(numbered) + 1)) - set(numbered))
    if missing:
        raise FilelistError(
            f"{run_dir}: batch filelists are not contiguous, missing batch {missing[0]}"
            + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
        )
    return [numbered[i] for i in range(len(numbered))]


def find_test_list(filelists_root: str | os.PathLike, run_dir: str | os.PathLike | None,
                   reduced: bool = True) -> tuple[Path, int]:
    """Locate the test list: ``(file, step)``.

    ``step`` is 1 when the file is the list to use as is, and 20 when only the full list was found
    and the reduced one must be derived from it (every 20th line).
    """
    root = Path(filelists_root)
    folders = []
    if run_dir is not None:
        folders += [Path(run_dir), Path(run_dir).parent]
    folders.append(root)
    names = [(TEST_REDUCED, 1), (TEST_FULL, REDUCED_STEP)] if reduced else [(TEST_FULL, 1)]
    for name, step in names:
        for folder in folders:
            if (folder / name).is_file():
                return folder / name, step
    wanted = TEST_REDUCED + " or " + TEST_FULL if reduced else TEST_FULL
    raise FilelistError(f"{root}: no {wanted} found (looked in {', '.join(str(f) for f in folders)})")


def read_test_list(filelists_root, run_dir=None, reduced: bool = True) -> Filelist:
    """Read the test list (reduced by default), deriving the reduced list when only the full one exists."""
    path, step = find_test_list(filelists_root, run_dir, reduced)
    fl = read_filelist(path)
    return fl.every(step) if step > 1 else fl


@dataclass
class PathIndex:
    """Which frame files exist under an images folder, listed once per ``s<S>/o<O>`` folder."""

    images_dir: Path
    _listing: dict[str, frozenset[str]] = field(default_factory=dict)

    def exists(self, rel: str) -> bool:
        folder, _, name = rel.rpartition("/")
        names = self._listing.get(folder)
        if names is None:
            try:
                names = frozenset(e.name for e in os.scandir(self.images_dir / folder))
            except (FileNotFoundError, NotADirectoryError):
                names = frozenset()
            self._listing[folder] = names
        return name in names

    def check(self, filelist: Filelist) -> None:
        """Raise a FilelistError naming the file and line of the first missing frame (with a count)."""
        missing = [i for i, p in enumerate(filelist.paths) if not self.exists(p)]
        if missing:
            first = missing[0]
            extra = f" ({len(missing)} of {len(filelist)} frames missing)" if len(missing) > 1 else ""
            raise FilelistError(
                f"{filelist.where(first)}: {filelist.paths[first]} does not exist under {self.images_dir}{extra}"
            )
