"""Minibatches (spec §5.2-5.3): how a batch's new patterns and the memory are padded, shuffled and cut
into iterations (:func:`plan_batch`, :class:`Schedule`), what one iteration hands the learning part
(:class:`Minibatch`), and how a prediction counts as right (:func:`hits`)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


def pad_indices(n: int, k: int) -> np.ndarray:
    """Caffe padding: prepend the first (k - n mod k) items so the length is a multiple of k. Where the
    list is shorter than the padding it needs (a 15-frame test list, 100 per test minibatch), the
    prepended items cycle through it (the original indexes past its end and fails)."""
    extra = (-n) % k
    return np.concatenate([np.arange(extra) % max(n, 1), np.arange(n)]).astype(np.int64)


def pad_random(n: int, k: int, perm) -> np.ndarray:
    """The fixed profile's padding: every index once, then (k - n mod k) more drawn at random, distinct
    (the first ones of a fresh permutation ``perm(n)``; further permutations where the padding is longer
    than the list), so the length is a multiple of k."""
    extra = (-n) % k
    fill = [perm(n) for _ in range(math.ceil(extra / n))] if n and extra else []
    return np.concatenate([np.arange(n), *fill]).astype(np.int64)[:n + extra]


@dataclass
class Schedule:
    """The minibatch plan of one batch (spec §5.2-5.3): iteration ``it`` takes chunk ``it mod chunks``
    of the padded, shuffled new patterns (``k_new`` rows) and of the padded, shuffled memory (``k_mem``
    rows), so every minibatch holds exactly ``k_new + k_mem`` rows."""

    k_new: int
    k_mem: int
    iters_per_epoch: int
    iterations: int
    new_order: np.ndarray   # indices into the batch's patterns (padded, shuffled)
    mem_order: np.ndarray   # indices into the memory (padded, shuffled)

    def _rows(self, order: np.ndarray, k: int, it: int) -> np.ndarray:
        chunks = math.ceil(len(order) / k)
        j = it % chunks
        return order[j * k:(j + 1) * k]

    def new_rows(self, it: int) -> np.ndarray:
        return self._rows(self.new_order, self.k_new, it)

    def mem_rows(self, it: int) -> np.ndarray:
        return self._rows(self.mem_order, self.k_mem, it) if self.k_mem else self.mem_order[:0]

    @property
    def new_chunks(self) -> int:
        return math.ceil(len(self.new_order) / self.k_new)


def plan_batch(n_new: int, n_mem: int, *, minibatch: int, epochs: float, pad: bool, count_memory: bool,
               perm) -> Schedule:
    """Split, padding, shuffling and iteration count for ``n_new`` new and ``n_mem`` memory patterns.

    Both profiles run the original's count, ceil(count / minibatch) iterations per epoch with count =
    n_new + n_mem (``count_memory`` false, only for the original's replay-when-none bug B1: n_new), and
    pad the new patterns to a multiple of k_new and the memory to a multiple of k_mem, so that every
    minibatch is full. They differ in the padding rows: ``pad`` (B6, the caffe profile) prepends the
    first ones; otherwise they are distinct rows drawn at random (:func:`pad_random`). The padded lists
    are shuffled once per batch (spec §5.3) with ``perm(n)``, a permutation of n.

    An epoch visits every new pattern when it has at least as many iterations as the padded new list
    has chunks (every incremental batch of the NICv2 lists); where rounding k_new down makes one chunk
    more than that (tiny batches), the chunks cycle across epoch boundaries as in the original, so each
    pattern is visited in ``iterations`` consecutive chunks, i.e. floor or ceil of iterations / chunks
    times per batch.
    """
    # round half to even, as the original's np.round (spec §5.2): 128·5/256 = 2.5 -> 2
    k_new = minibatch if n_mem == 0 else int(round(minibatch * n_new / (n_new + n_mem)))
    k_new = min(max(k_new, 1), minibatch)
    k_mem = minibatch - k_new if n_mem else 0
    if k_mem == 0:
        n_mem = 0
    count = n_new + (n_mem if count_memory else 0)
    per_epoch = math.ceil(count / minibatch)
    padded = pad_indices if pad else (lambda n, k: pad_random(n, k, perm))
    new_idx = padded(n_new, k_new)
    mem_idx = padded(n_mem, k_mem) if n_mem else np.zeros(0, np.int64)
    new_order = new_idx[perm(len(new_idx))]
    mem_order = mem_idx[perm(len(mem_idx))] if n_mem else mem_idx
    return Schedule(k_new, k_mem, per_epoch, max(1, int(round(epochs * per_epoch))), new_order, mem_order)


def hits(logits: torch.Tensor, labels: torch.Tensor, ties_miss: bool = False) -> torch.Tensor:
    """Per row, whether the prediction is right: the first highest score is the label (argmax), or with
    ``ties_miss`` (Caffe's Accuracy layer) the label's score is strictly above every other score."""
    if not ties_miss:
        return logits.argmax(1) == labels
    return (logits >= logits.gather(1, labels[:, None])).sum(1) == 1


@dataclass
class Minibatch:
    """One iteration's rows as the learning part sees them (what :meth:`Method.loss` is given):
    ``part`` (the whole network, or the part above the split layer ``layer``) and its ``inputs``
    (preprocessed frames or latents: ``new_rows`` new patterns first, then replayed ones), and their
    ``labels``."""

    part: torch.nn.Module
    inputs: torch.Tensor
    labels: torch.Tensor
    new_rows: int
    #: The layer ``part`` starts above (its input is that layer's output), "data" for the whole network.
    layer: str = "data"
