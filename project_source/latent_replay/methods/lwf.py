"""Learning without Forgetting (Li & Hoiem, ECCV 2016 / TPAMI 2018), for one growing classifier.

At the start of every incremental batch the network as it stands is kept, frozen, in eval mode. Each
iteration adds to the cross-entropy a distillation term that keeps the network's outputs for the
classes seen before the batch close to the kept network's on the same rows:

``loss = CE(z, y) + lam * T^2 * KL(softmax(z_old[:, C] / T) || softmax(z[:, C] / T))``

with ``z`` the logits, ``z_old`` the kept network's, ``C`` the classes seen in earlier batches, ``T``
the temperature (Li & Hoiem use 2) and ``lam`` the weight of the old outputs (1 in the paper). The
kept network sees exactly what the learning part sees (the frames, or the latents above a latent
replay layer, replayed rows included). Which layers learn is the naive method's (spec §4.4).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..models import split
from ..registry import METHODS, Interval
from .base import Method


@dataclass
class LwFParams:
    """LwF's own parameters (``method_params`` of the config)."""

    #: Weight of the distillation term (λ_o of Li & Hoiem).
    lam: float = 1.0
    #: Softmax temperature of the distillation (T).
    temperature: float = 2.0

    _parameter_constraints = {"lam": Interval(0, None, closed="left"), "temperature": Interval(0, None, closed="neither")}


@METHODS.register("lwf", title="LwF", aliases=("LWF",), colour="#2ca02c", params=LwFParams, order=5)
class LwF(Method):
    name = "lwf"

    def __init__(self, cfg, model):
        super().__init__(cfg, model)
        self.params = LwFParams(**cfg.method_params)
        self.seen: set[int] = set()          # classes of the batches before this one
        self.old: torch.nn.Module | None = None
        self._old_parts: dict[str, torch.nn.Module] = {}
        self._old_classes: torch.Tensor | None = None

    def before_batch(self, batch_index: int, labels: torch.Tensor, new_labels: torch.Tensor | None = None) -> None:
        self.old, self._old_parts = None, {}
        if batch_index > 0 and self.seen:
            self.old = copy.deepcopy(self.model).eval().requires_grad_(False)
            self._old_classes = torch.tensor(sorted(self.seen), device=labels.device)
        self.seen.update(int(c) for c in torch.unique(new_labels if new_labels is not None else labels))

    def _old_part(self, layer: str) -> torch.nn.Module:
        """The kept network's part that matches the learning part (above ``layer``, or all of it)."""
        if layer not in self._old_parts:
            self._old_parts[layer] = self.old if layer == "data" else split(self.old, layer)[1]
        return self._old_parts[layer]

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, minibatch) -> torch.Tensor:
        ce = F.cross_entropy(logits, labels)
        if self.old is None or self.params.lam == 0:
            return ce
        with torch.no_grad():
            old = self._old_part(minibatch.layer)(minibatch.inputs)[:, self._old_classes]
        t = self.params.temperature
        kd = F.kl_div(F.log_softmax(logits[:, self._old_classes] / t, dim=1), F.log_softmax(old / t, dim=1),
                      reduction="batchmean", log_target=True)
        return ce + self.params.lam * t * t * kd

    def state_dict(self) -> dict:
        # the kept network is the model at the start of a batch: a resumed run (which starts at a batch
        # boundary) takes it again; only the classes seen so far are state
        return {"seen": sorted(self.seen)}

    def load_state_dict(self, state: dict) -> None:
        self.seen = set(state.get("seen", []))
