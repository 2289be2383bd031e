"""Run checkpoints: what a run keeps to resume at a batch boundary (:class:`Checkpoints`, a part of
:class:`~latent_replay.engine.run.RunTrainer`), written atomically and refused when they were written
under other training settings (:class:`StaleCheckpoint`)."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from .. import __version__
from ..config import ConfigError

log = logging.getLogger("latent_replay.train")
CHECKPOINT = "checkpoint.pt"


class StaleCheckpoint(ConfigError):
    """A run checkpoint (``path``) written under other training settings (``changed``) than the config."""

    def __init__(self, message: str, path: Path, changed: list[str]):
        super().__init__(message)
        self.path, self.changed = path, changed


class Checkpoints:
    """Part of :class:`~latent_replay.engine.run.RunTrainer`: its checkpoint, saved and loaded."""

    def state(self) -> dict:
        return {
            "format": "latent-replay-run-checkpoint", "version": __version__, "config": self.cfg.to_dict(),
            "fidelity": self.cfg.describe_fidelity(), "preprocessing": self.preprocessing,
            "run": self.run, "batches_done": self.batches_done, "global_iter": self.global_iter,
            "rows": self.rows, "seen": sorted(self.seen), "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None,
            "method": self.method.state_dict(), "memory": self.memory.state_dict() if self.memory else None,
            "rng": self.rng.bit_generator.state,
        }

    def save_checkpoint(self) -> None:
        path = self.dir / CHECKPOINT
        tmp = path.with_name(f".{CHECKPOINT}.tmp")
        torch.save(self.state(), tmp)
        os.replace(tmp, path)

    def load_checkpoint(self, path: Path) -> None:
        try:
            # onto the CPU: every part moves what it keeps to its device (a GPU run's checkpoint would
            # otherwise put numpy-bound tensors, e.g. GLR's slot table, on the GPU)
            state = torch.load(path, map_location="cpu", weights_only=False)
        except torch.OutOfMemoryError:
            raise                # a good checkpoint on a full device: not the file's fault
        except Exception as e:   # torch raises many kinds (pickle, zip reader, OSError, EOF)
            if "CUDA" in str(e):
                raise
            detail = " ".join(str(e).split())[:200] or type(e).__name__
            raise ConfigError(f"{path}: cannot read the run checkpoint ({detail}); delete it, or use --force, "
                              "to train the run again") from None
        if not isinstance(state, dict) or state.get("format") != "latent-replay-run-checkpoint":
            raise ConfigError(f"{path}: not a run checkpoint of this suite")
        # the config keeps only the overrides of its profile: compare every switch in force too, so a
        # default changed between versions cannot change a run halfway
        changed = self.cfg.trained_otherwise(state["config"], state.get("fidelity"), state.get("preprocessing"),
                                             self.preprocessing)
        if changed:
            why = "; a fidelity.* default may have changed between versions" \
                if any(k.startswith("fidelity.") for k in changed) else ""
            raise StaleCheckpoint(f"{path}: the checkpoint was written with another configuration (changed: "
                                  f"{', '.join(changed)}{why}): use --force to start the run again", path, changed)
        if "fidelity" not in state:
            log.warning("%s: written before checkpoints recorded every fidelity switch; resuming with the "
                        "switches in force now (AR1*'s importance_from default changed to 'updates')", path)
        self.batches_done, self.global_iter = state["batches_done"], state["global_iter"]
        self.rows, self.seen = state["rows"], set(state["seen"])
        if self.batches_done >= 2 and not self.cumulative:   # batch 1 switched the BRN settings
            self.model.set_brn_config(self._incremental_brn())
        self.model.load_state_dict(state["model"])
        self.method.load_state_dict(state["method"])
        if self.memory is not None:
            self.memory.load_state_dict(state["memory"])
        self.rng.bit_generator.state = state["rng"]
        # batch 0 and batch 1 (and every batch of joint) build their optimiser afresh (train_batch): only
        # after batch 1 can the saved state be the one the next batch goes on with (momentum_persists)
        if state["optimizer"] is not None and self.batches_done >= 2 and not self.cumulative:
            self._build_optimizer(self.batches_done)
            if self.fid.momentum_persists:
                self.optimizer.load_state_dict(state["optimizer"])
