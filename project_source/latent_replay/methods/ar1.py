"""AR1*-free (spec §6.3) and AR1* (spec §6.2): CWR* plus free or importance-damped shared layers.

AR1* keeps, for every convolution weight (conv1, depthwise, pointwise; never Scale, BRN or the
classifier), an importance F in [0, F_max]:

* batch start: θ_start ← θ, trajectory τ ← 0;
* every step: τ ← τ + u ⊙ Δθ with Δθ = θ_new − θ_old and u = −Δθ (the applied update, the original's
  ``importance_from = "updates"``, so τ = −Σ Δθ²) or u = g, the raw loss gradient (``"gradients"``:
  the SI path integral, τ = Σ g·Δθ);
* batch end: Ω ← Ω + c·τ / ((θ_end − θ_start)² + ξ), F ← clip(−Ω, 0, F_max), θ* ← θ_end;
* while training: the regularised gradient of each such weight is scaled by (1 − F/F_max), i.e.
  g' = (g + wd·θ)·(1 − F/F_max) (Caffe ``L2ewcMod``): weights that mattered stop moving.

With the fidelity switch ``ar1_as_ar1free`` (B2) the bookkeeping runs but the scaling is not applied,
as in the original release, whose AR1S solver was never loaded.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..models import param_names_by_kind
from ..registry import METHODS, Interval
from .cwr import CWRStar

IMPORTANCE_KINDS = ("conv1", "depthwise", "pointwise")


@METHODS.register("ar1free", title="AR1*-free", aliases=("AR1F",), colour="#1f77b4", order=4)
class AR1Free(CWRStar):
    """CWR* head + free training of the 1x1 convs and Scale layers (classifier at 10x by default)."""

    name = "ar1free"
    classifier_only = False
    classifier_lr_mult = 10.0


class Importance:
    """The SI-style importance of AR1* over a set of named parameters."""

    def __init__(self, params: dict[str, torch.nn.Parameter], *, c: float, xi: float, f_max: float,
                 mode: str = "updates"):
        if mode not in ("gradients", "updates"):
            raise ValueError(f"importance mode must be 'gradients' or 'updates', got {mode!r}")
        self.params, self.c, self.xi, self.f_max, self.mode = params, c, xi, f_max, mode
        zeros = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
        self.omega = {n: z.clone() for n, z in zeros.items()}
        self.F = {n: z.clone() for n, z in zeros.items()}
        self.theta_star = {n: p.detach().float().clone() for n, p in params.items()}
        self.theta_start: dict[str, torch.Tensor] = {}
        self.tau: dict[str, torch.Tensor] = {}
        self._old: dict[str, torch.Tensor] = {}
        self._grad: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def start_batch(self, tracked: set[str] | None = None) -> None:
        """θ_start ← θ, τ ← 0 for the parameters that can move in this batch (default: all)."""
        names = self.params if tracked is None else [n for n in self.params if n in tracked]
        self.theta_start = {n: self.params[n].detach().float().clone() for n in names}
        self.tau = {n: torch.zeros_like(self.theta_start[n]) for n in names}

    @torch.no_grad()
    def snapshot(self) -> None:
        """Before the optimiser step: θ_old and (SI mode) the raw gradient."""
        for n in self.tau:
            p = self.params[n]
            self._old[n] = p.detach().float().clone()
            if self.mode == "gradients":
                self._grad[n] = p.grad.detach().float().clone() if p.grad is not None else torch.zeros_like(p, dtype=torch.float32)

    @torch.no_grad()
    def scale_gradients(self) -> None:
        """g ← g · (1 − F/F_max) on the regularised gradients (call after weight decay is added)."""
        for n, p in self.params.items():
            if p.grad is not None:
                p.grad.mul_((1.0 - self.F[n] / self.f_max).to(p.grad.dtype))

    @torch.no_grad()
    def accumulate(self) -> None:
        """After the optimiser step: τ ← τ + u ⊙ Δθ."""
        for n in self.tau:
            delta = self.params[n].detach().float() - self._old[n]
            u = -delta if self.mode == "updates" else self._grad[n]
            self.tau[n].add_(u * delta)

    @torch.no_grad()
    def end_batch(self) -> None:
        """Ω ← Ω + c·τ/((θ_end − θ_start)² + ξ), F ← clip(−Ω, 0, F_max), θ* ← θ_end."""
        for n in self.tau:
            end = self.params[n].detach().float()
            self.omega[n].add_(self.c * self.tau[n] / ((end - self.theta_start[n]) ** 2 + self.xi))
            self.F[n] = torch.clamp(-self.omega[n], 0.0, self.f_max)
            self.theta_star[n] = end.clone()
        self._old.clear()
        self._grad.clear()

    def saturation(self) -> float:
        """Fraction of tracked weights at F = F_max (fully frozen)."""
        total = sum(f.numel() for f in self.F.values())
        return sum(int((f >= self.f_max).sum()) for f in self.F.values()) / max(total, 1)

    def state_dict(self) -> dict:
        return {"omega": {n: t.cpu() for n, t in self.omega.items()}, "F": {n: t.cpu() for n, t in self.F.items()},
                "theta_star": {n: t.cpu() for n, t in self.theta_star.items()}}

    def load_state_dict(self, state: dict) -> None:
        for key in ("omega", "F", "theta_star"):
            target = getattr(self, key)
            for n, t in state[key].items():
                target[n] = t.to(self.params[n].device)


@dataclass
class AR1Params:
    """AR1*'s own parameters (``method.params`` of a config; schema 1 wrote them as ``ar1_f_max``,
    ``ar1_c`` and ``ar1_xi``). The original's values (spec §6.2), calibrated for importance from the
    applied updates."""

    #: F_max, the importance at which a weight stops moving (the original's ``ewc_clip_to``).
    f_max: float = 0.001
    #: c, the pre-multiplier of each batch's path integral (``ewc_w``).
    c: float = 1.0
    #: xi, the damping of the squared total displacement.
    xi: float = 1e-7

    _parameter_constraints = {"f_max": Interval(0, None, closed="neither"), "c": Interval(0, None, closed="left"),
                              "xi": Interval(0, None, closed="neither")}


@METHODS.register("ar1", title="AR1*", aliases=("AR1S",), colour="#d62728", params=AR1Params, order=3)
class AR1Star(AR1Free):
    """AR1*: AR1*-free with the importance-based gradient scaling on the shared convolution weights."""

    name = "ar1"

    def __init__(self, cfg, model):
        super().__init__(cfg, model)
        names = param_names_by_kind(model)
        all_params = dict(model.named_parameters())
        tracked = {n: all_params[n] for k in IMPORTANCE_KINDS for n in names[k]}
        params = AR1Params(**cfg.method_params)
        self.importance = Importance(tracked, c=params.c, xi=params.xi, f_max=params.f_max,
                                     mode=cfg.fidelity.importance_from)
        self.apply_scaling = not cfg.fidelity.ar1_as_ar1free
        self.moving: set[str] | None = None

    def set_moving(self, names: set[str]) -> None:
        self.moving = names

    def before_batch(self, batch_index: int, labels: torch.Tensor, new_labels: torch.Tensor | None = None) -> None:
        super().before_batch(batch_index, labels, new_labels)
        self.importance.start_batch(self.moving)   # frozen weights cannot move: no bookkeeping

    def after_backward(self) -> None:
        self.importance.snapshot()

    def adjust_gradients(self) -> None:
        if self.apply_scaling:
            self.importance.scale_gradients()

    def after_step(self) -> None:
        self.importance.accumulate()

    def after_training(self, batch_index: int) -> None:
        super().after_training(batch_index)
        self.importance.end_batch()

    def state_dict(self) -> dict:
        return {**super().state_dict(), "importance": self.importance.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.importance.load_state_dict(state["importance"])
