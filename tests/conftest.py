"""Shared fixtures: tiny CORe50-shaped dataset roots written by the tests themselves, the shipped filelists."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from latent_replay.data.classes import CORE50_CLASS_NAMES
from latent_replay.data.filelists import frame_path

#: The official CORe50 NICv2 filelists shipped in the repository (runs 0-4, both test lists).
SHIPPED_FILELISTS = Path(__file__).resolve().parents[1] / "batch_filelists"


def write_tiny_root(root: Path, sessions=range(1, 12), objects=(1, 2, 6, 11), frames=3, size=8, seed=0) -> Path:
    """A dataset root with real PNGs: each image is a flat colour that encodes (session, object, frame)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "core50_labels.txt").write_text("\n".join(CORE50_CLASS_NAMES) + "\n")
    rng = np.random.default_rng(seed)
    for s in sessions:
        for o in objects:
            for f in range(frames):
                p = root / "core50_128x128" / frame_path(s, o, f)
                p.parent.mkdir(parents=True, exist_ok=True)
                img = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
                Image.fromarray(img).save(p)
    return root


@pytest.fixture
def tiny_root(tmp_path) -> Path:
    return write_tiny_root(tmp_path / "core50")


@pytest.fixture(scope="session")
def shipped_filelists() -> Path:
    """The repository's ``batch_filelists/`` (always present: they are part of the repository)."""
    assert (SHIPPED_FILELISTS / "NICv2_391" / "run0").is_dir(), f"{SHIPPED_FILELISTS}: the shipped filelists are missing"
    return SHIPPED_FILELISTS
