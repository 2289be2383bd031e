"""Batch Renormalization with the exact semantics of the custom Caffe ``BatchReNorm`` layer (spec §4.3).

Per channel the layer keeps the four Caffe blobs as buffers:

* ``A_mu``  – accumulated mean (shape ``C``),
* ``A_var`` – accumulated *unbiased* variance (shape ``C``),
* ``S``     – the normaliser (a scalar; Caffe's "past weight"),
* ``t``     – the step counter (a scalar, int64).

The running estimates are ``mu_hat = A_mu / S`` and ``var_hat = A_var / S`` (both 0 while ``S == 0``).

Training forward on a minibatch with ``m = N*H*W`` values per channel:

1. batch mean ``mu_B`` and biased batch variance ``v_B``;
2. if ``t >= t0``: snapshot ``mu_hat`` and ``sigma_hat = sqrt(var_hat + eps)`` *before* the update;
3. always: ``S <- lam*S + 1``, ``A_mu <- lam*A_mu + mu_B``, ``A_var <- lam*A_var + m/(m-1)*v_B``;
4. ``x_hat = (x - mu_B) / sqrt(v_B + eps)``;
5. if ``t >= t0``: ``r = clip(sqrt(v_B + eps)/sigma_hat, 1/r_cur, r_cur)``,
   ``d = clip((mu_B - mu_hat)/sigma_hat, -d_cur, d_cur)``, ``y = r*x_hat + d``; else ``y = x_hat``;
   ``r`` and ``d`` are constants for autograd (so the input gradient is the batch-norm gradient times r);
6. ``r_cur = clamp(1 + (t - t0 + 1)(r_max - 1)/(t_r - t0), 1, r_max)``,
   ``d_cur = clamp((t - t0 + 1) d_max/(t_d - t0), 0, d_max)``.

Test mode (``module.eval()``, Caffe's ``use_global_stats``): ``y = (x - mu_hat)/sqrt(var_hat + eps)``.

**When t advances.** Caffe increments ``t`` in the layer's *backward* (TRAIN phase only), so a layer
below a backward stop, or a training-mode forward that is never back-propagated (e.g. the extra pass
that collects batch-0 latents), never advances ``t``. ``step_on='backward'`` (default) reproduces this
with an autograd hook on the layer output: ``t`` grows by one each time a gradient reaches the layer.
If nothing at or below the layer requires a gradient, the output does not require one and ``t`` stays
put. ``step_on='forward'`` instead advances ``t`` at every training forward (simpler, and free of
autograd hooks; both modes work under ``torch.compile``). With the incremental settings
(t0 = 0, t_r = t_d = 1) the schedule is constant, so the difference only matters during batch 0.

**Affine.** The per-channel gamma/beta live in a separate :class:`Scale` module (Caffe ``Scale``
layer, so they can get their own learning rate); :meth:`BatchRenorm2d.forward` optionally takes them
and folds ``gamma*(r*x_hat + d) + beta`` into a single fused ``F.batch_norm`` call (weight ``gamma*r``,
bias ``gamma*d + beta``); the batch statistics needed for r and d come from one extra reduction
(``torch.batch_norm_update_stats``, the statistics half of the fused kernel). The running statistics
are updated under ``no_grad``. Channels-last tensors on the CPU are the exception: there the fused
kernel's statistics have about 1e-4 relative error on the variance, so the layer computes them in two
passes and normalises with them, keeping the fused kernel's backward (:class:`_NormaliseWithBatchStats`).

Deviations from Caffe, where Caffe's behaviour is undefined: with ``S == 0`` the snapshot uses
``mu_hat = var_hat = 0`` (Caffe computes ``0 * inf = NaN``), and :meth:`rescale_past_weight` on a layer
with ``S == 0`` only sets ``S`` (the estimates stay 0).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "BRNConfig", "FIRST_BATCH", "INCREMENTAL_NATIVE", "INCREMENTAL_LATENT", "STEP_ON",
    "BatchRenorm2d", "Scale", "renorm_limits",
]

STEP_ON = ("backward", "forward")


@dataclass(frozen=True)
class BRNConfig:
    """Hyper-parameters of one Caffe ``batch_renorm_param`` (spec §4.3 table).

    ``t0`` = ``step_to_init``, ``t_r``/``t_d`` = ``step_to_r_max``/``step_to_d_max``,
    ``moving_fraction`` = ``moving_average_fraction`` (lambda).
    """

    t0: int = 48
    t_r: int = 96
    t_d: int = 96
    r_max: float = 3.0
    d_max: float = 5.0
    moving_fraction: float = 0.99
    eps: float = 1e-5

    def __post_init__(self):
        if self.r_max < 1 or self.d_max < 0:
            raise ValueError(f"BRNConfig: need r_max >= 1 and d_max >= 0, got {self.r_max}, {self.d_max}")
        if not 0 <= self.moving_fraction <= 1:
            raise ValueError(f"BRNConfig: moving_fraction must be in [0, 1], got {self.moving_fraction}")
        if self.eps <= 0:
            raise ValueError(f"BRNConfig: eps must be > 0, got {self.eps}")

    @classmethod
    def first_batch(cls) -> "BRNConfig":
        """Batch 0 (``…first_batch_brn2``): t0 48, ramp to r_max 3 / d_max 5 at step 96, lambda 0.99."""
        return cls()

    @classmethod
    def incremental(cls, past_weight: float = 20000) -> "BRNConfig":
        """Batches >= 1 (``…froz_brn3[b]``): t0 0, t_r = t_d = 1, r_max 1.25, d_max 0.5, lambda = 1 - 1/W.

        W = ``brn_past_weight``: 10000 for no/native replay, 20000 for latent replay.
        """
        if past_weight < 1:
            raise ValueError(f"BRNConfig.incremental: past_weight must be >= 1, got {past_weight}")
        return cls(t0=0, t_r=1, t_d=1, r_max=1.25, d_max=0.5, moving_fraction=1.0 - 1.0 / past_weight)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "BRNConfig":
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})


FIRST_BATCH = BRNConfig.first_batch()
INCREMENTAL_NATIVE = BRNConfig.incremental(10000)
INCREMENTAL_LATENT = BRNConfig.incremental(20000)


def renorm_limits(t: torch.Tensor | int, cfg: BRNConfig, dtype: torch.dtype = torch.float32) -> tuple:
    """``(active, r_cur, d_cur)`` of the Caffe schedule at step ``t`` (tensors if ``t`` is a tensor).

    ``active`` is ``t >= t0``; outside it r_cur/d_cur are meaningless. ``t_r <= t0`` (or ``t_d <= t0``)
    means the limit is reached immediately (Caffe would divide by zero and clamp the infinity).
    """
    k = t - cfg.t0 + 1
    r_slope = (cfg.r_max - 1.0) / (cfg.t_r - cfg.t0) if cfg.t_r > cfg.t0 else math.inf
    d_slope = cfg.d_max / (cfg.t_d - cfg.t0) if cfg.t_d > cfg.t0 else math.inf
    if isinstance(t, torch.Tensor):
        k = k.to(dtype).clamp_min(1.0)   # k >= 1 whenever active; avoids inf * 0
        r_cur = (1.0 + k * r_slope).clamp(1.0, cfg.r_max) if r_slope != math.inf else torch.full_like(k, cfg.r_max)
        d_cur = (k * d_slope).clamp(0.0, cfg.d_max) if d_slope != math.inf else torch.full_like(k, cfg.d_max)
        return t >= cfg.t0, r_cur, d_cur
    k = max(k, 1)
    r_cur = cfg.r_max if r_slope == math.inf else min(max(1.0 + k * r_slope, 1.0), cfg.r_max)
    d_cur = cfg.d_max if d_slope == math.inf else min(max(k * d_slope, 0.0), cfg.d_max)
    return t >= cfg.t0, r_cur, d_cur


def _fused_stats_imprecise(x: torch.Tensor) -> bool:
    """Whether PyTorch's CPU batch-norm kernels reduce ``x`` in the channels-last layout (an ``N x C``
    tensor, or a 4-D one not in the default layout), where their statistics carry about 1e-4 relative
    error on the variance (measured on a 128x32x64x64 conv1-like input; 5e-8 in the default layout)."""
    return x.device.type == "cpu" and (x.dim() == 2 or not x.is_contiguous())


def _batch_stats(x: torch.Tensor, dims: list[int], precise: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel batch mean and biased variance.

    ``torch.batch_norm_update_stats`` is the statistics half of the fused batch-norm kernel (CPU and
    CUDA); on channels-last CPU tensors it is ~20x faster than ``torch.var_mean``, but imprecise
    (:func:`_fused_stats_imprecise`): ``precise`` takes two passes instead, the mean and then the mean
    square deviation from it (about 3e-7 relative error, 3-4x the fused kernel's time).
    """
    if precise:
        mean = x.mean(dim=dims)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return mean, (x - mean.view(shape)).square_().mean(dim=dims)
    if x.device.type in ("cpu", "cuda"):
        return torch.batch_norm_update_stats(x, None, None, 0.0)
    var, mean = torch.var_mean(x, dim=dims, unbiased=False)
    return mean, var


class _NormaliseWithBatchStats(torch.autograd.Function):
    """``y = (x - mean) / sqrt(var + eps) * w + b`` with the batch statistics given, and the gradient of
    training-mode batch normalisation (the statistics are functions of ``x``): PyTorch's own fused
    backward kernel, fed the given statistics. The forward is the fused kernel's inference form, so
    :func:`F.batch_norm` with ``(mean, var)`` as running statistics recomputes ``y`` bitwise."""

    @staticmethod
    def forward(ctx, x, w, b, mean, var, eps):
        invstd = torch.rsqrt(var + eps)
        ctx.save_for_backward(x, w, mean, invstd)
        ctx.eps = eps
        return F.batch_norm(x, mean, var, w, b, False, 0.0, eps)

    @staticmethod
    def backward(ctx, grad):
        x, w, mean, invstd = ctx.saved_tensors
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]]
        gx, gw, gb = torch.ops.aten.native_batch_norm_backward(grad, x, w, None, None, mean, invstd, True,
                                                               ctx.eps, mask)
        return gx, gw, gb, None, None, None


class Scale(nn.Module):
    """Caffe ``Scale`` layer with ``bias_term``: per-channel ``y = gamma * x + beta``.

    ``weight`` is gamma (init 1), ``bias`` is beta (init 0). Inside the network the block passes them
    to :class:`BatchRenorm2d`, which fuses them into its normalisation; :meth:`forward` is the
    standalone version.
    """

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return x * self.weight.view(shape) + self.bias.view(shape)

    def extra_repr(self) -> str:
        return str(self.num_features)


class BatchRenorm2d(nn.Module):
    """Caffe ``BatchReNorm`` (no affine; see the module docstring for the exact semantics).

    Args:
        num_features: channels ``C`` (inputs are ``N x C x H x W`` or ``N x C``).
        config: schedule and moving fraction; change later with :meth:`set_config`.
        step_on: ``'backward'`` (Caffe-faithful, default) or ``'forward'``: when ``t`` advances.
    """

    def __init__(self, num_features: int, config: BRNConfig = FIRST_BATCH, step_on: str = "backward"):
        super().__init__()
        if step_on not in STEP_ON:
            raise ValueError(f"step_on must be one of {STEP_ON}, got {step_on!r}")
        self.num_features = num_features
        self.config = config
        self.step_on = step_on
        self.register_buffer("A_mu", torch.zeros(num_features))
        self.register_buffer("A_var", torch.zeros(num_features))
        self.register_buffer("S", torch.zeros(()))
        self.register_buffer("t", torch.zeros((), dtype=torch.long))

    # -- configuration -------------------------------------------------------------------------
    def set_config(self, config: BRNConfig) -> None:
        self.config = config

    @property
    def eps(self) -> float:
        return self.config.eps

    @torch.no_grad()
    def rescale_past_weight(self, weight: float) -> None:
        """Caffe ``set_brn_past_weight``: ``A *= W/S`` and ``S = W`` (running estimates unchanged)."""
        if weight <= 0:
            raise ValueError(f"past weight must be > 0, got {weight}")
        s = self.S.clone()
        factor = torch.where(s > 0, weight / torch.where(s > 0, s, torch.ones_like(s)), 0.0)
        self.A_mu.mul_(factor)
        self.A_var.mul_(factor)
        self.S.fill_(weight)

    @torch.no_grad()
    def set_running_stats(self, mean: torch.Tensor, var: torch.Tensor, normaliser: float = 1.0,
                          step: int | None = None) -> None:
        """Set the estimates to ``mean``/``var`` with normaliser ``S`` (``A = stat * S``)."""
        self.A_mu.copy_(torch.as_tensor(mean, dtype=self.A_mu.dtype) * normaliser)
        self.A_var.copy_(torch.as_tensor(var, dtype=self.A_var.dtype) * normaliser)
        self.S.fill_(normaliser)
        if step is not None:
            self.t.fill_(int(step))

    def running_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu_hat, var_hat) = (A_mu/S, A_var/S)``, zeros while ``S == 0``."""
        nz = self.S != 0
        safe = torch.where(nz, self.S, torch.ones_like(self.S))
        return torch.where(nz, self.A_mu / safe, 0.0), torch.where(nz, self.A_var / safe, 0.0)

    # -- forward -------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, weight: torch.Tensor | None = None,
                bias: torch.Tensor | None = None) -> torch.Tensor:
        """Normalise ``x``; if ``weight``/``bias`` (the Scale's gamma/beta) are given, apply them fused."""
        if x.dim() < 2 or x.shape[1] != self.num_features:
            raise ValueError(f"BatchRenorm2d({self.num_features}): bad input shape {tuple(x.shape)}")
        if not self.training:
            mean, var = self.running_stats()
            dtype = x.dtype if weight is None else weight.dtype   # mixed precision: stats follow the affine
            return F.batch_norm(x, mean.to(dtype), var.to(dtype), weight, bias, False, 0.0, self.eps)
        return self.train_forward(x, weight, bias)[0]

    def train_forward(self, x: torch.Tensor, weight: torch.Tensor | None = None,
                      bias: torch.Tensor | None = None) -> tuple:
        """Training-mode forward: ``(y, affine)``, where ``affine = (w, b, mean, var)`` are the (detached)
        weight and bias of the fused ``F.batch_norm`` call and the batch statistics it was given (None
        where the kernel computes them), so that ``y == F.batch_norm(x, mean, var, w, b, mean is None,
        0.0, eps)`` can be recomputed from ``x`` alone without touching the running statistics (None for
        the one-value-per-channel path, which does not use the fused kernel).

        Where the fused kernel's statistics are imprecise (channels-last on the CPU), the layer computes
        them itself (:func:`_batch_stats`) and normalises with them (:class:`_NormaliseWithBatchStats`),
        so the layout does not change the numbers beyond float32 rounding."""
        dims = [0] + list(range(2, x.dim()))
        m = x.numel() // x.shape[1]
        precise = _fused_stats_imprecise(x)
        with torch.no_grad():
            mean_b, var_b = _batch_stats(x.detach(), dims, precise)
            r, d = self._renorm_factors(mean_b, var_b)
            self._accumulate(mean_b, var_b, m)
            if self.step_on == "forward":
                self.t.add_(1)
        dtype = x.dtype if weight is None else weight.dtype
        r, d = r.to(dtype), d.to(dtype)
        if weight is None:
            w, b = r, (d if bias is None else d + bias)
        else:
            w = weight * r
            b = weight * d if bias is None else weight * d + bias
        affine = None
        if m > 1 and precise:
            mean_b, var_b = mean_b.to(dtype), var_b.to(dtype)
            y = _NormaliseWithBatchStats.apply(x, w, b, mean_b, var_b, self.eps)
            affine = (w.detach(), b.detach(), mean_b, var_b)
        elif m > 1:
            y = F.batch_norm(x, None, None, w, b, True, 0.0, self.eps)
            affine = (w.detach(), b.detach(), None, None)
        else:   # F.batch_norm refuses one value per channel; as in Caffe, x_hat = 0 (and so is its gradient)
            shape = (1, -1) + (1,) * (x.dim() - 2)
            x_hat = (x - x.mean(dim=dims, keepdim=True)) * torch.rsqrt(var_b.to(x.dtype) + self.eps).view(shape)
            y = x_hat * w.view(shape) + b.view(shape)
        if self.step_on == "backward" and y.requires_grad:
            y.register_hook(self._count_step)
        return y, affine

    def _renorm_factors(self, mean_b, var_b):
        """r, d of step 5 from the *pre-update* estimates (r = 1, d = 0 before t0)."""
        cfg = self.config
        active, r_cur, d_cur = renorm_limits(self.t, cfg, mean_b.dtype)
        mu_hat, var_hat = self.running_stats()
        sigma_hat = torch.sqrt(var_hat + cfg.eps)
        r = torch.maximum(torch.minimum(torch.sqrt(var_b + cfg.eps) / sigma_hat, r_cur), 1.0 / r_cur)
        d = torch.maximum(torch.minimum((mean_b - mu_hat) / sigma_hat, d_cur), -d_cur)
        r = torch.where(active, r, torch.ones_like(r))
        d = torch.where(active, d, torch.zeros_like(d))
        return r, d

    def _accumulate(self, mean_b, var_b, m: int) -> None:
        lam = self.config.moving_fraction
        corr = m / (m - 1) if m > 1 else 1.0
        self.S.mul_(lam).add_(1.0)
        self.A_mu.mul_(lam).add_(mean_b.to(self.A_mu.dtype))
        self.A_var.mul_(lam).add_(var_b.to(self.A_var.dtype), alpha=corr)

    def _count_step(self, grad):
        with torch.no_grad():
            self.t.add_(1)
        return None

    def extra_repr(self) -> str:
        c = self.config
        return (f"{self.num_features}, t0={c.t0}, t_r={c.t_r}, t_d={c.t_d}, r_max={c.r_max}, d_max={c.d_max}, "
                f"moving_fraction={c.moving_fraction}, eps={c.eps}, step_on={self.step_on!r}")
