"""Batch Renormalization against a float64 reference written from the formulas of spec §4.3."""
from __future__ import annotations

import math

import pytest
import torch

from latent_replay.models.batch_renorm import (
    FIRST_BATCH, INCREMENTAL_LATENT, INCREMENTAL_NATIVE, BatchRenorm2d, BRNConfig, Scale, renorm_limits,
)


class ReferenceBRN:
    """Straight transcription of the Caffe layer (float64, per channel), independent of the module."""

    def __init__(self, channels: int, cfg: BRNConfig):
        self.cfg = cfg
        self.A_mu = torch.zeros(channels, dtype=torch.float64)
        self.A_var = torch.zeros(channels, dtype=torch.float64)
        self.S = 0.0
        self.t = 0

    def estimates(self):
        if self.S == 0:
            return torch.zeros_like(self.A_mu), torch.zeros_like(self.A_var)
        return self.A_mu / self.S, self.A_var / self.S

    def limits(self, t=None):
        c, t = self.cfg, (self.t if t is None else t)
        r_cur = min(max(1 + (t - c.t0 + 1) * (c.r_max - 1) / (c.t_r - c.t0), 1.0), c.r_max)
        d_cur = min(max((t - c.t0 + 1) * c.d_max / (c.t_d - c.t0), 0.0), c.d_max)
        return r_cur, d_cur

    def train_forward(self, x: torch.Tensor):
        """Returns y, x_hat, r, d, sqrt(v_B + eps); updates the accumulators (not t)."""
        c = self.cfg
        x = x.to(torch.float64)
        n, ch, h, w = x.shape
        m = n * h * w
        mu = x.mean(dim=(0, 2, 3))
        v = ((x - mu.view(1, -1, 1, 1)) ** 2).mean(dim=(0, 2, 3))
        active = self.t >= c.t0
        if active:
            mu_hat, var_hat = self.estimates()
            sigma_hat = torch.sqrt(var_hat + c.eps)
        self.S = c.moving_fraction * self.S + 1
        self.A_mu = c.moving_fraction * self.A_mu + mu
        self.A_var = c.moving_fraction * self.A_var + m / (m - 1) * v
        std = torch.sqrt(v + c.eps)
        x_hat = (x - mu.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
        if active:
            r_cur, d_cur = self.limits()
            r = torch.clamp(std / sigma_hat, 1 / r_cur, r_cur)
            d = torch.clamp((mu - mu_hat) / sigma_hat, -d_cur, d_cur)
        else:
            r, d = torch.ones(ch, dtype=torch.float64), torch.zeros(ch, dtype=torch.float64)
        y = r.view(1, -1, 1, 1) * x_hat + d.view(1, -1, 1, 1)
        return y, x_hat, r, d, std

    @staticmethod
    def input_grad(g, x_hat, r, std):
        """Caffe backward: batch-norm gradient through (mu_B, v_B), multiplied by r."""
        g = g.to(torch.float64)
        mean_g = g.mean(dim=(0, 2, 3), keepdim=True)
        mean_gx = (g * x_hat).mean(dim=(0, 2, 3), keepdim=True)
        return r.view(1, -1, 1, 1) * (g - mean_g - mean_gx * x_hat) / std.view(1, -1, 1, 1)

    def eval_forward(self, x):
        mu_hat, var_hat = self.estimates()
        return (x.to(torch.float64) - mu_hat.view(1, -1, 1, 1)) / torch.sqrt(var_hat + self.cfg.eps).view(1, -1, 1, 1)

    def rescale(self, w):
        if self.S > 0:
            self.A_mu = self.A_mu * (w / self.S)
            self.A_var = self.A_var * (w / self.S)
        self.S = float(w)


# a short schedule so that warm-up, ramp and the cap all happen within a dozen steps
SHORT = BRNConfig(t0=3, t_r=7, t_d=9, r_max=2.0, d_max=1.0, moving_fraction=0.8)


def _batches(steps, channels=4, seed=0, n=3, hw=5):
    g = torch.Generator().manual_seed(seed)
    for i in range(steps):
        # drifting means and scales so that r and d get clipped in the ramp
        scale = torch.exp(torch.randn(channels, generator=g) * (0.2 + 0.3 * (i % 3)))
        shift = torch.randn(channels, generator=g) * (0.5 + i % 4)
        yield torch.randn(n, channels, hw, hw, generator=g) * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)


def test_presets_match_spec_table():
    assert (FIRST_BATCH.t0, FIRST_BATCH.t_r, FIRST_BATCH.t_d) == (48, 96, 96)
    assert (FIRST_BATCH.r_max, FIRST_BATCH.d_max, FIRST_BATCH.moving_fraction) == (3.0, 5.0, 0.99)
    for cfg, w in ((INCREMENTAL_NATIVE, 10000), (INCREMENTAL_LATENT, 20000)):
        assert (cfg.t0, cfg.t_r, cfg.t_d, cfg.r_max, cfg.d_max) == (0, 1, 1, 1.25, 0.5)
        assert cfg.moving_fraction == pytest.approx(1 - 1 / w, abs=1e-15)
    assert FIRST_BATCH.eps == 1e-5
    assert BRNConfig.from_dict(INCREMENTAL_LATENT.to_dict()) == INCREMENTAL_LATENT
    with pytest.raises(ValueError):
        BRNConfig(r_max=0.5)


def test_schedule_first_batch():
    # warm-up: inactive until step 48; ramp reaches the caps exactly at step 95 (spec §4.3)
    assert not renorm_limits(47, FIRST_BATCH)[0]
    active, r_cur, d_cur = renorm_limits(48, FIRST_BATCH)
    assert active and r_cur == pytest.approx(1 + 2 / 48) and d_cur == pytest.approx(5 / 48)
    assert renorm_limits(94, FIRST_BATCH)[1] < 3.0
    assert renorm_limits(95, FIRST_BATCH)[1:] == (3.0, 5.0)
    assert renorm_limits(10_000, FIRST_BATCH)[1:] == (3.0, 5.0)
    for t in (0, 1, 500):
        assert renorm_limits(t, INCREMENTAL_LATENT) == (True, 1.25, 0.5)
    # tensor version agrees with the python one
    for t in (0, 47, 48, 70, 95, 200):
        a, r, d = renorm_limits(torch.tensor(t), FIRST_BATCH)
        a2, r2, d2 = renorm_limits(t, FIRST_BATCH)
        if a2:
            assert bool(a) and float(r) == pytest.approx(r2) and float(d) == pytest.approx(d2)
        else:
            assert not bool(a)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 2e-5)])
def test_training_steps_match_reference(dtype, tol):
    """Warm-up (t < t0), ramp and the cap; forward, running statistics and input gradients."""
    torch.manual_seed(0)
    brn = BatchRenorm2d(4, SHORT).to(dtype)
    ref = ReferenceBRN(4, SHORT)
    clipped_r = clipped_d = 0
    for step, x in enumerate(_batches(12)):
        x = x.to(dtype).requires_grad_()
        y = brn(x)
        y_ref, x_hat, r, d, std = ref.train_forward(x.detach())
        assert torch.allclose(y.double(), y_ref, atol=tol * 10, rtol=tol), f"forward differs at step {step}"
        g = torch.randn_like(y)
        y.backward(g)
        ref.t += 1   # Caffe advances t in backward
        assert torch.allclose(x.grad.double(), ReferenceBRN.input_grad(g, x_hat, r, std), atol=tol * 10, rtol=tol)
        assert int(brn.t) == ref.t
        assert float(brn.S) == pytest.approx(ref.S, rel=1e-6)
        assert torch.allclose(brn.A_mu.double(), ref.A_mu, rtol=tol, atol=tol)
        assert torch.allclose(brn.A_var.double(), ref.A_var, rtol=tol, atol=tol)
        if step >= SHORT.t0:
            r_cur, d_cur = ref.limits(step)
            clipped_r += int(torch.isclose(r, torch.tensor(r_cur, dtype=torch.float64)).any()
                             or torch.isclose(r, torch.tensor(1 / r_cur, dtype=torch.float64)).any())
            clipped_d += int(torch.isclose(d.abs(), torch.tensor(d_cur, dtype=torch.float64)).any())
        else:
            assert torch.equal(r, torch.ones(4, dtype=torch.float64))
    assert clipped_r >= 3 and clipped_d >= 3, "the batches must exercise the r/d clipping"


def test_warmup_is_plain_batch_norm():
    brn = BatchRenorm2d(3, FIRST_BATCH)
    x = torch.randn(4, 3, 6, 6) * 3 + 1
    y = brn(x)
    expected = torch.nn.functional.batch_norm(x, None, None, training=True, eps=1e-5)
    assert torch.allclose(y, expected, atol=1e-6)


def test_fused_scale_matches_separate_scale():
    torch.manual_seed(1)
    cfg = SHORT
    a, b = BatchRenorm2d(5, cfg), BatchRenorm2d(5, cfg)
    sa, sb = Scale(5), Scale(5)
    with torch.no_grad():
        for s in (sa, sb):
            s.weight.copy_(torch.linspace(0.5, 2.0, 5))
            s.bias.copy_(torch.linspace(-1.0, 1.0, 5))
    for x in _batches(6, channels=5, seed=3):
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya = a(xa, sa.weight, sa.bias)
        yb = sb(b(xb))
        assert torch.allclose(ya, yb, atol=1e-5)
        g = torch.randn_like(ya)
        ya.backward(g)
        yb.backward(g)
        assert torch.allclose(xa.grad, xb.grad, atol=1e-4, rtol=1e-4)
    assert torch.allclose(sa.weight.grad, sb.weight.grad, atol=1e-4, rtol=1e-4)
    assert torch.allclose(sa.bias.grad, sb.bias.grad, atol=1e-4)
    assert int(a.t) == int(b.t) == 6


def test_eval_mode_uses_running_estimates_and_does_not_update():
    brn = BatchRenorm2d(4, SHORT).double()
    ref = ReferenceBRN(4, SHORT)
    x_test = torch.randn(2, 4, 3, 3, dtype=torch.float64) * 2 + 0.5
    brn.eval()   # S == 0: estimates are 0, y = x / sqrt(eps)
    assert torch.allclose(brn(x_test), x_test / math.sqrt(1e-5))
    brn.train()
    for x in _batches(5):
        brn(x.double())
        ref.train_forward(x)
    brn.eval()
    before = {k: v.clone() for k, v in brn.state_dict().items()}
    x = x_test.clone().requires_grad_()
    y = brn(x)
    assert torch.allclose(y, ref.eval_forward(x_test), atol=1e-12)
    y.sum().backward()   # eval backward: g / sqrt(var_hat + eps), no step
    _, var_hat = ref.estimates()
    assert torch.allclose(x.grad, (1 / torch.sqrt(var_hat + 1e-5)).view(1, -1, 1, 1).expand_as(x))
    for k, v in brn.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_rescale_past_weight():
    brn = BatchRenorm2d(4, SHORT).double()
    ref = ReferenceBRN(4, SHORT)
    for x in _batches(5):
        brn(x.double())
        ref.train_forward(x)
    mu0, var0 = (t.clone() for t in brn.running_stats())
    brn.rescale_past_weight(20000)
    ref.rescale(20000)
    assert float(brn.S) == 20000
    mu1, var1 = brn.running_stats()
    assert torch.allclose(mu1, mu0, rtol=1e-12) and torch.allclose(var1, var0, rtol=1e-12)
    # with lambda = 1 - 1/W, S stays at W and the estimates move by exactly 1/W toward the batch stats
    brn.set_config(INCREMENTAL_LATENT)
    ref.cfg = INCREMENTAL_LATENT
    x = next(_batches(1, seed=9)).double()
    y = brn(x)
    y_ref, *_ = ref.train_forward(x)
    assert float(brn.S) == pytest.approx(20000, rel=1e-12)
    mu_b = x.mean(dim=(0, 2, 3))
    assert torch.allclose(brn.running_stats()[0], mu0 + (mu_b - mu0) / 20000, rtol=1e-10, atol=1e-12)
    assert torch.allclose(y, y_ref, atol=1e-10)
    # S == 0: only S is set
    fresh = BatchRenorm2d(2)
    fresh.rescale_past_weight(10000)
    assert float(fresh.S) == 10000 and not fresh.A_mu.any() and not fresh.A_var.any()


def test_step_counter_backward_semantics():
    brn = BatchRenorm2d(3, SHORT)
    x = torch.randn(2, 3, 4, 4)
    brn(x)                                  # input needs no grad: no backward can reach the layer
    assert int(brn.t) == 0 and float(brn.S) == 1.0
    xg = x.clone().requires_grad_()
    y = brn(xg)                             # forward without backward: t unchanged, statistics updated
    assert int(brn.t) == 0 and float(brn.S) == pytest.approx(1.8)
    y.sum().backward()
    assert int(brn.t) == 1
    with torch.no_grad():
        brn(xg)
    assert int(brn.t) == 1
    # with a trainable affine the gradient reaches the layer even if its input is frozen
    scale = Scale(3)
    brn(x, scale.weight, scale.bias).sum().backward()
    assert int(brn.t) == 2
    brn.eval()
    brn(xg).sum().backward()
    assert int(brn.t) == 2


def test_step_counter_forward_option():
    brn = BatchRenorm2d(3, SHORT, step_on="forward")
    with torch.no_grad():
        brn(torch.randn(2, 3, 4, 4))
        brn(torch.randn(2, 3, 4, 4))
    assert int(brn.t) == 2
    with pytest.raises(ValueError):
        BatchRenorm2d(3, step_on="sometimes")


def test_two_dim_input_and_bad_shape():
    brn = BatchRenorm2d(6, SHORT)
    y = brn(torch.randn(5, 6))
    assert y.shape == (5, 6)
    with pytest.raises(ValueError):
        brn(torch.randn(2, 5, 3, 3))


def test_single_value_batch_has_no_bias_correction():
    brn = BatchRenorm2d(2, SHORT).double()
    x = torch.tensor([[[[1.0]], [[2.0]]]], dtype=torch.float64)   # m = 1 value per channel
    brn(x)
    assert torch.equal(brn.A_var, torch.zeros(2, dtype=torch.float64))
    assert torch.equal(brn.A_mu, torch.tensor([1.0, 2.0], dtype=torch.float64))


def _conv1_like(layout):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 32, 48, 48, generator=g) * 3 + 5   # a large mean: where the fused CPU kernel errs
    return x.contiguous(memory_format=layout)


def _train_step(layout):
    """One training forward/backward of a BRN layer with a fused Scale, past the warm-up (r, d active)."""
    torch.manual_seed(0)
    brn, scale = BatchRenorm2d(32, BRNConfig(t0=0, t_r=1, t_d=1, r_max=1.25, d_max=0.5)), Scale(32)
    brn.set_running_stats(torch.full((32,), 4.9), torch.full((32,), 9.5), 10.0)
    x = _conv1_like(layout).requires_grad_(True)
    y = brn(x, scale.weight, scale.bias)
    (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
    return brn.running_stats(), y.detach().contiguous(), x.grad.contiguous(), scale.weight.grad


def test_channels_last_statistics_outputs_and_gradients_agree_with_the_default_layout():
    """PyTorch's CPU batch-norm kernels have ~1e-4 relative error on the variance of channels-last
    tensors; the layer computes the statistics itself there, so both layouts agree to float32 noise."""
    (m0, v0), y0, gx0, gw0 = _train_step(torch.contiguous_format)
    (m1, v1), y1, gx1, gw1 = _train_step(torch.channels_last)
    x = _conv1_like(torch.contiguous_format).double()
    v_true = x.var(dim=(0, 2, 3), unbiased=False)
    _, v_fused = torch.batch_norm_update_stats(_conv1_like(torch.channels_last), None, None, 0.0)
    assert ((v_fused.double() - v_true).abs() / v_true).max() > 1e-5   # the kernel's error (if fixed, drop this)
    assert torch.allclose(m1, m0, rtol=1e-6) and torch.allclose(v1, v0, rtol=1e-6)
    assert torch.allclose(y1, y0, rtol=0, atol=2e-5)
    assert torch.allclose(gx1, gx0, rtol=1e-4, atol=1e-7) and torch.allclose(gw1, gw0, rtol=1e-4)


def test_channels_last_network_losses_agree_with_the_default_layout():
    """A few training steps of a small conv-BRN network in either layout: the same losses and running
    statistics to float32 noise."""
    from latent_replay.models.mobilenet_v1 import ConvBlock

    def run(layout):
        torch.manual_seed(0)
        net = torch.nn.Sequential(ConvBlock(3, 16, 3, 2), ConvBlock(16, 16, 3, 1, groups=16), ConvBlock(16, 32, 1, 1),
                                  torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(32, 5))
        net = net.to(memory_format=layout)
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
        g = torch.Generator().manual_seed(1)
        losses = []
        for _ in range(4):
            x = (torch.randn(64, 3, 64, 64, generator=g) * 40 + 110).contiguous(memory_format=layout)
            loss = torch.nn.functional.cross_entropy(net(x), torch.randint(0, 5, (64,), generator=g))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return torch.tensor(losses), torch.cat([b.brn.A_var for b in net[:3]])

    (l0, v0), (l1, v1) = run(torch.contiguous_format), run(torch.channels_last)
    # measured: 2e-7 relative on the moments with the layer's own statistics, 8e-6 with the fused kernel's
    assert torch.allclose(l1, l0, rtol=1e-6) and torch.allclose(v1, v0, rtol=1e-6)
