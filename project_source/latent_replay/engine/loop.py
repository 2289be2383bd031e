"""The batch loop the suite's trainers run on: batch after batch, ``metrics.csv`` rewritten after each
(so an interrupted run keeps every finished batch's row), a checkpoint every ``checkpoint_every``
batches and after the last, and an early stop on request (for tests and demos of resume).

A trainer is anything with ``batches_done``, ``rows`` (the metrics rows so far) and
``train_batch(b) -> row``, and ``save_checkpoint()`` if it checkpoints: the main pipeline's
:class:`~latent_replay.engine.run.RunTrainer` and glr-bench's run (:mod:`latent_replay.glr_bench.loop`)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional, Protocol

from ..results import write_metrics

log = logging.getLogger("latent_replay.train")


class BatchTrainer(Protocol):
    batches_done: int
    rows: list[dict]

    def train_batch(self, b: int) -> dict:
        """Train batch ``b``, evaluate, and return (and append to ``rows``) its metrics row."""

    def save_checkpoint(self) -> None:
        """Save what resuming after the batches done needs (not called with ``checkpoint_every=None``,
        so a trainer that never checkpoints need not have it)."""


def run_batches(trainer: BatchTrainer, n: int, folder: Optional[Path], *, checkpoint_every: Optional[int] = 1,
                stop_after: Optional[int] = None, bar: Any = None, name: str = "run") -> None:
    """Train ``trainer``'s batches ``batches_done .. n-1``, writing ``folder/metrics.csv`` after each (none
    without a folder) and checkpointing every ``checkpoint_every`` batches and after the last (None: never). With
    ``stop_after``, stop (KeyboardInterrupt) after that many batches, as an interruption would."""
    for b in range(trainer.batches_done, n):
        row = trainer.train_batch(b)
        trainer.batches_done = b + 1
        if folder is not None:
            write_metrics(folder / "metrics.csv", trainer.rows)
        stopping = stop_after is not None and b + 1 >= stop_after
        if checkpoint_every is not None and ((b + 1) % checkpoint_every == 0 or b + 1 == n or stopping):
            trainer.save_checkpoint()
        if bar is not None:
            bar.set_postfix(acc=f"{row['test_accuracy']:.3f}", refresh=False)
            bar.update(1)
        log.debug("%s batch %d: acc %.4f loss %.4f (%.2fs train, %.2fs eval)", name, b, row["test_accuracy"],
                  row.get("train_loss", float("nan")), row["train_seconds"], row["eval_seconds"])
        if stopping and b + 1 < n:
            raise KeyboardInterrupt(f"stopped after batch {b} (stop_after)")
