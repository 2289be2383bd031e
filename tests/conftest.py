"""Shared fixtures: tiny CORe50-shaped dataset roots written by the tests themselves, the shipped filelists."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from latent_replay.config import ExperimentConfig
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


@pytest.fixture(scope="module")
def tiny_nicv2(tmp_path_factory) -> Path:
    """A tiny synthetic CORe50 (5 objects, one per category, x 11 sessions x 6 frames of 32x32) under
    ``core50/`` with its NICv2-391 run-0 filelists under ``lists/`` (the golden grid's scenario)."""
    from latent_replay.data.nicv2 import inventory_from_root, write_nicv2
    from latent_replay.data.synthetic import write_synthetic_core50

    base = tmp_path_factory.mktemp("tiny_nicv2")
    info = write_synthetic_core50(base / "core50", sessions=11, categories=5, objects_per_category=1, frames=6,
                                  size=32, progress=False)
    write_nicv2(base / "lists", inventory_from_root(info.out_dir / "core50_128x128"), scenarios=(391,), runs=(0,))
    return base


def tiny_config(tiny: Path, out: Path, **keys) -> ExperimentConfig:
    """An experiment on :func:`tiny_nicv2` with the golden grid's training settings (4 batches, a few
    epochs, a 24-pattern memory); ``keys`` set the rest (method, replay, ...)."""
    base = dict(dataset_root=str(tiny / "core50"), filelists=str(tiny / "lists"), cache_dir=str(tiny / "cache"),
                out=str(out), runs=[0], scenario=391, test_list="full", minibatch=16, max_batches=4,
                epochs_first_batch=4, epochs=2, lr_first_batch=0.02, lr=0.005, brn_past_weight=100.0,
                brn_first_batch={"t0": 4, "t_r": 8, "t_d": 8, "r_max": 3.0, "d_max": 5.0, "moving_fraction": 0.9},
                replay_memory=24, device="cpu")
    return ExperimentConfig(**{**base, **keys})
