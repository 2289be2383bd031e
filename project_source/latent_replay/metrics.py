"""Continual-learning metrics from an accuracy matrix (glr-spec §7, §11.14).

``A[i, j]`` is the accuracy on experience ``j``'s test set after training experience ``i``
(T x T, experiences 0-based; the GLR driver evaluates every experience after every experience, so
entries with ``i < j`` exist too). With ``T`` experiences:

* final average accuracy: ``mean_j A[T-1, j]`` (the paper's "Final Avg Acc");
* average forgetting (Chaudhry et al. 2018): ``mean_{j<T-1} (max_{i<T-1} A[i, j] - A[T-1, j])``,
  the best earlier accuracy minus the final one (glr-spec §7.4);
* backward transfer (Lopez-Paz & Ranzato 2017): ``mean_{j<T-1} (A[T-1, j] - A[j, j])``;
* forward transfer (Lopez-Paz & Ranzato 2017): ``mean_{j>0} (A[j-1, j] - b_j)`` for a baseline
  ``b_j`` (e.g. the accuracy of the initial model on experience ``j``, or chance).

Metrics that need at least two experiences are NaN for ``T = 1``.
"""
from __future__ import annotations

import numpy as np


def _matrix(A) -> np.ndarray:
    a = np.asarray(A, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] == 0:
        raise ValueError(f"the accuracy matrix must be square T x T with T >= 1, got shape {a.shape}")
    return a


def final_average_accuracy(A) -> float:
    """Mean accuracy over all experiences after training the last one: ``mean_j A[T-1, j]``."""
    a = _matrix(A)
    return float(a[-1].mean())


def average_forgetting(A, *, since_trained: bool = False) -> float:
    """``mean_{j<T-1} (max_i A[i, j] - A[T-1, j])`` with ``i`` over ``0..T-2``.

    ``since_trained`` restricts the maximum to ``j <= i <= T-2`` (only after experience ``j`` was
    trained); the default takes every earlier evaluation, as glr-spec §7.4.
    """
    a = _matrix(A)
    t = len(a)
    if t < 2:
        return float("nan")
    drops = []
    for j in range(t - 1):
        earlier = a[j:t - 1, j] if since_trained else a[: t - 1, j]
        drops.append(earlier.max() - a[-1, j])
    return float(np.mean(drops))


def backward_transfer(A) -> float:
    """``mean_{j<T-1} (A[T-1, j] - A[j, j])``: negative when old experiences are forgotten."""
    a = _matrix(A)
    t = len(a)
    if t < 2:
        return float("nan")
    return float(np.mean(a[-1, : t - 1] - np.diag(a)[: t - 1]))


def forward_transfer(A, baseline) -> float:
    """``mean_{j>0} (A[j-1, j] - b_j)``; ``baseline`` is a scalar or the T values ``b_j``."""
    a = _matrix(A)
    t = len(a)
    if t < 2:
        return float("nan")
    b = np.broadcast_to(np.asarray(baseline, dtype=np.float64), (t,))
    return float(np.mean([a[j - 1, j] - b[j] for j in range(1, t)]))


def summary(A) -> dict:
    """The matrix metrics that need no baseline, as a dict."""
    return {"final_average_accuracy": final_average_accuracy(A), "average_forgetting": average_forgetting(A),
            "backward_transfer": backward_transfer(A)}


def accuracy_matrix_frame(A, names=None):
    """The matrix as a tidy :class:`pandas.DataFrame` with columns ``train_exp``, ``eval_exp`` and
    ``accuracy`` (one row per entry, ordered by ``train_exp`` then ``eval_exp``). ``names`` optionally
    labels the experiences (default 0..T-1)."""
    import pandas as pd

    a = _matrix(A)
    t = len(a)
    labels = list(range(t)) if names is None else list(names)
    if len(labels) != t:
        raise ValueError(f"{len(labels)} names for {t} experiences")
    i, j = np.meshgrid(np.arange(t), np.arange(t), indexing="ij")
    return pd.DataFrame({"train_exp": [labels[k] for k in i.ravel()], "eval_exp": [labels[k] for k in j.ravel()],
                         "accuracy": a.ravel()})
