"""CWR* (spec §6.1): class-specific consolidated output weights.

State: consolidated weights ``cw[c]`` (1024 values) and bias ``cb[c]`` per class, cumulative pattern
counts ``N[c]``. Per batch:

1. present classes P (new patterns and memory labels) and their counts n_c (also from both, B9; with
   ``cwr_count_memory`` off from the new patterns only);
2. reset the live classifier (W = 0, bias = 1 when the Caffe bias is kept, B8) and, for b > 0, load
   ``cw[c]``/``cb[c]`` for every class of P ("NIC loading", the original's ``load_weights_nic``:
   classes seen again start from their consolidated weights; a class seen for the first time after
   batch 0 gets its initial ``cw = 0`` and ``cb = 0``, so with the Caffe bias only the batch-0
   classes are consolidated with bias 1, later ones with bias 0 for good, as in the original code);
3. train (only W at b > 0);
4. consolidate: ḡ = mean of all entries of W[P] (a scalar, B9; ``cwr_mean_shift = "per_feature"``:
   each feature's mean over P); for c in P with n_c > 0, ``w_past = sqrt(N_c / n_c)``,
   ``cw[c] = (w_past * cw[c] + (W[c] - ḡ)) / (w_past + 1)``, ``cb[c] = bias[c]``; then N_c += n_c
   (a class with n_c = 0, present only through the memory when its labels do not count, keeps
   ``cw[c]``: the limit of w_past -> infinity);
5. evaluation uses cw/cb for all 50 classes (never-consolidated classes: 0).
"""
from __future__ import annotations

import math

import torch

from ..registry import METHODS
from .base import Method, present_counts


class CWRHead:
    """The consolidated classifier of CWR* (and AR1*); works on ``model.mid_fc7``."""

    def __init__(self, fc: torch.nn.Linear, *, mean_shift: str = "scalar"):
        if mean_shift not in ("scalar", "per_feature"):
            raise ValueError(f"mean_shift must be 'scalar' or 'per_feature', got {mean_shift!r}")
        self.fc, self.mean_shift = fc, mean_shift
        n, d = fc.weight.shape
        dev = fc.weight.device
        self.cw = torch.zeros(n, d, dtype=torch.float32, device=dev)
        self.cb = torch.zeros(n, dtype=torch.float32, device=dev)
        self.counts = torch.zeros(n, dtype=torch.float64, device=dev)
        self.present = torch.zeros(n, dtype=torch.bool, device=dev)
        self.batch_counts = torch.zeros(n, dtype=torch.float64, device=dev)

    @torch.no_grad()
    def reset(self, labels: torch.Tensor, load: bool, count_labels: torch.Tensor | None = None) -> None:
        """Step 1-2: W = 0 (bias 1), then load the consolidated rows of the present classes (initial
        values, W = 0 and bias 0, for a class never consolidated). ``labels``: every label trained on;
        ``count_labels``: those that count towards n_c (default: all of them)."""
        n = self.cw.shape[0]
        self.present = present_counts(labels.to(self.cw.device), n) > 0
        counted = labels if count_labels is None else count_labels
        self.batch_counts = present_counts(counted.to(self.cw.device), n)
        self.fc.weight.zero_()
        if self.fc.bias is not None:
            self.fc.bias.fill_(1.0)
        if load:
            self.fc.weight[self.present] = self.cw[self.present]
            if self.fc.bias is not None:
                self.fc.bias[self.present] = self.cb[self.present]

    @torch.no_grad()
    def consolidate(self) -> None:
        """Step 4, then step 5 (load every consolidated row for evaluation)."""
        p = self.present
        if not bool(p.any()):
            return
        w = self.fc.weight.detach().float()
        mean = w[p].mean() if self.mean_shift == "scalar" else w[p].mean(dim=0, keepdim=True)
        c = p & (self.batch_counts > 0)
        w_past = torch.sqrt(self.counts[c] / self.batch_counts[c]).float().unsqueeze(1)
        self.cw[c] = (w_past * self.cw[c] + (w[c] - mean)) / (w_past + 1)
        if self.fc.bias is not None:
            self.cb[c] = self.fc.bias[c].float()
        self.counts[c] += self.batch_counts[c]
        self.load_consolidated()

    @torch.no_grad()
    def load_consolidated(self) -> None:
        self.fc.weight.copy_(self.cw)
        if self.fc.bias is not None:
            self.fc.bias.copy_(self.cb)

    def state_dict(self) -> dict:
        return {k: getattr(self, k).cpu() for k in ("cw", "cb", "counts", "present", "batch_counts")}

    def load_state_dict(self, state: dict) -> None:
        for k, v in state.items():
            setattr(self, k, v.to(self.cw.device))


def w_past(total: float, current: float) -> float:
    """The consolidation weight sqrt(N_c / n_c) (0 for a class seen for the first time)."""
    return math.sqrt(total / current)


@METHODS.register("cwr", title="CWR*", aliases=("CWR",), colour="#ff7f0e", order=2)
class CWRStar(Method):
    """CWR*: after batch 0 only the classifier learns, through the consolidated head."""

    name = "cwr"
    uses_cwr_head = True
    classifier_only = True

    def __init__(self, cfg, model):
        super().__init__(cfg, model)
        self.head = CWRHead(model.mid_fc7, mean_shift=cfg.fidelity.cwr_mean_shift)

    def before_batch(self, batch_index: int, labels: torch.Tensor, new_labels: torch.Tensor | None = None) -> None:
        counted = None if self.cfg.fidelity.cwr_count_memory else new_labels
        self.head.reset(labels, load=batch_index > 0, count_labels=counted)

    def after_training(self, batch_index: int) -> None:
        self.head.consolidate()

    def state_dict(self) -> dict:
        return {"head": self.head.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.head.load_state_dict(state["head"])
