"""Where the trainer sees the dataset, filelists, weights and results: host paths for ``local``, the image's
folders and the ``docker -v`` mounts that put them there for ``docker``."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .args import UsageError

#: Where the image expects things (the Dockerfile creates these folders).
CONTAINER_DATASETS = "/datasets"
CONTAINER_FILELISTS = "/filelists"
CONTAINER_WEIGHTS = "/weights"
CONTAINER_RESULTS = "/results"


@dataclass
class Mount:
    host: Path
    target: str
    read_only: bool = True

    @property
    def spec(self) -> str:
        return f"{self.host}:{self.target}{':ro' if self.read_only else ''}"


def _inside(path: Path, root: Path) -> Optional[str]:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return None


def trainer_paths(docker: bool, db: Path, out_dir: Path, filelists: Path,
                  weights: Optional[Path]) -> tuple[list[Mount], dict]:
    """The mounts (none for ``local``) and the config's ``dataset_root``, ``filelists``, ``weights`` and
    ``out`` as the trainer sees them."""
    if docker:
        return _container_paths(db, out_dir, filelists, weights)
    return [], dict(dataset_root=str(db), filelists=str(filelists), weights=str(weights) if weights else None,
                    out=str(out_dir))


def _container_paths(db: Path, out_dir: Path, filelists: Path, weights: Optional[Path]) -> tuple[list[Mount], dict]:
    """The image's folders: DB_PATH at /datasets (the filelists and weights inside it are seen there), the
    others mounted at their own folder, the results writable."""
    mounts: list[Mount] = []
    for name, path in (("DB_PATH", db), ("--out", out_dir), ("--filelists", filelists), ("--weights", weights)):
        if path is not None and ":" in str(path):
            raise UsageError(name, f"{path}: docker -v cannot mount a path containing ':' (move it, or use "
                                   "--launcher local)")
    mounts.append(Mount(db, CONTAINER_DATASETS))
    rel = _inside(filelists, db)
    if rel is not None:
        filelists_seen = f"{CONTAINER_DATASETS}/{rel}" if rel != "." else CONTAINER_DATASETS
    else:
        mounts.append(Mount(filelists, CONTAINER_FILELISTS))
        filelists_seen = CONTAINER_FILELISTS
    weights_seen = None
    if weights is not None:
        rel = _inside(weights, db)
        if rel is not None:
            weights_seen = f"{CONTAINER_DATASETS}/{rel}"
        else:
            weights_seen = f"{CONTAINER_WEIGHTS}/{weights.name}"
            mounts.append(Mount(weights, weights_seen))
    mounts.append(Mount(out_dir, CONTAINER_RESULTS, read_only=False))
    paths = dict(dataset_root=CONTAINER_DATASETS, filelists=filelists_seen, weights=weights_seen,
                 out=CONTAINER_RESULTS)
    return mounts, paths
