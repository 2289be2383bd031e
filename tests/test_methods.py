"""CWR* consolidation and AR1* importance against hand-computed / float64 reference values."""
from __future__ import annotations

import math

import torch

from latent_replay.methods import CWRHead, Importance


def _head(bias: bool):
    fc = torch.nn.Linear(2, 3, bias=bias)
    return fc, CWRHead(fc)


def test_cwr_consolidation_hand_computed():
    fc, head = _head(bias=False)
    head.reset(torch.tensor([0, 0, 1]), load=False)
    assert torch.equal(fc.weight, torch.zeros(3, 2))
    with torch.no_grad():
        fc.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0], [9.0, 9.0]]))  # "trained"; class 2 absent
    head.consolidate()
    # mean over all entries of the present rows = 2.5; w_past = 0 for first-time classes
    assert torch.allclose(head.cw, torch.tensor([[-1.5, -0.5], [0.5, 1.5], [0.0, 0.0]]))
    assert head.counts.tolist() == [2, 1, 0]
    assert torch.equal(fc.weight, head.cw)  # consolidated weights loaded for evaluation
    # batch 1: classes 1 (seen again: loaded) and 2 (new: W = 0)
    head.reset(torch.tensor([1, 2, 2]), load=True)
    assert torch.allclose(fc.weight, torch.tensor([[0.0, 0.0], [0.5, 1.5], [0.0, 0.0]]))
    with torch.no_grad():
        fc.weight.copy_(torch.tensor([[7.0, 7.0], [1.0, 1.0], [2.0, 0.0]]))
    head.consolidate()
    # mean = (1 + 1 + 2 + 0) / 4 = 1; class 1: w_past = sqrt(1/1) = 1; class 2: w_past = 0
    want = torch.tensor([[-1.5, -0.5], [(0.5 + 0.0) / 2, (1.5 + 0.0) / 2], [1.0, -1.0]])
    assert torch.allclose(head.cw, want)
    assert head.counts.tolist() == [2, 2, 2]


def test_cwr_weighted_average_and_caffe_bias():
    fc, head = _head(bias=True)
    head.reset(torch.tensor([0, 0, 0, 0]), load=False)
    assert fc.bias.tolist() == [1.0, 1.0, 1.0]
    with torch.no_grad():
        fc.weight[0] = torch.tensor([2.0, 0.0])
    head.consolidate()
    assert torch.allclose(head.cw[0], torch.tensor([1.0, -1.0])) and head.cb.tolist() == [1.0, 0.0, 0.0]
    assert fc.bias.tolist() == [1.0, 0.0, 0.0]  # evaluation: consolidated bias 1, never-seen 0
    head.reset(torch.tensor([0]), load=True)  # N = 4 past patterns, n = 1 now -> w_past = 2
    with torch.no_grad():
        fc.weight[0] = torch.tensor([4.0, 2.0])
    head.consolidate()
    w = math.sqrt(4 / 1)
    assert torch.allclose(head.cw[0], (w * torch.tensor([1.0, -1.0]) + torch.tensor([1.0, -1.0])) / (w + 1))
    # a class first seen after batch 0 loads its initial consolidated bias, 0, and keeps it (the
    # original's load_weights_nic); the batch-0 class keeps 1; the absent class is reset to 1
    head.reset(torch.tensor([0, 1]), load=True)
    assert fc.bias.tolist() == [1.0, 0.0, 1.0]
    head.consolidate()
    assert head.cb.tolist() == [1.0, 0.0, 0.0] and fc.bias.tolist() == [1.0, 0.0, 0.0]


def test_cwr_b9_switches_per_feature_mean_and_counts_of_new_patterns_only():
    """B9 alternatives: each feature's mean over the present classes, and class counts from the new
    patterns only (a class present only through the memory keeps its consolidated weights)."""
    fc = torch.nn.Linear(2, 3, bias=False)
    head = CWRHead(fc, mean_shift="per_feature")
    head.reset(torch.tensor([0, 0, 1]), load=False)
    with torch.no_grad():
        fc.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 6.0], [9.0, 9.0]]))
    head.consolidate()
    # per-feature means over classes 0 and 1: (2, 4)
    assert torch.allclose(head.cw, torch.tensor([[-1.0, -2.0], [1.0, 2.0], [0.0, 0.0]]))
    # batch 1: new patterns of class 1, the memory holds class 0 and 1 patterns; only new ones count
    head.reset(torch.tensor([1, 1, 0, 1]), load=True, count_labels=torch.tensor([1, 1]))
    assert head.present.tolist() == [True, True, False] and head.batch_counts.tolist() == [0, 2, 0]
    with torch.no_grad():
        fc.weight.copy_(torch.tensor([[5.0, 5.0], [3.0, 1.0], [0.0, 0.0]]))
    head.consolidate()
    # class 0 (memory only) keeps cw; class 1: w_past = sqrt(1/2), mean (4, 3)
    w = math.sqrt(1 / 2)
    assert torch.allclose(head.cw[0], torch.tensor([-1.0, -2.0]))
    assert torch.allclose(head.cw[1], (w * torch.tensor([1.0, 2.0]) + torch.tensor([-1.0, -2.0])) / (w + 1))
    assert head.counts.tolist() == [2, 3, 0]
    # the original's counting (the default) counts the memory's labels too
    fc2 = torch.nn.Linear(2, 3, bias=False)
    orig = CWRHead(fc2)
    orig.reset(torch.tensor([1, 1, 0, 1]), load=False)
    assert orig.batch_counts.tolist() == [1, 3, 0]
    try:
        CWRHead(fc2, mean_shift="median")
    except ValueError as e:
        assert "mean_shift" in str(e)
    else:
        raise AssertionError("a bad mean_shift was accepted")


def _reference(thetas, grads, mode, c=1.0, xi=1e-7, f_max=1e-3, omega=None):
    """float64 spec §6.2 on one batch of steps: returns (omega, F)."""
    thetas = [t.double() for t in thetas]
    tau = torch.zeros_like(thetas[0])
    for k in range(1, len(thetas)):
        delta = thetas[k] - thetas[k - 1]
        u = -delta if mode == "updates" else grads[k - 1].double()
        tau += u * delta
    total = thetas[-1] - thetas[0]
    omega = (torch.zeros_like(tau) if omega is None else omega) + c * tau / (total ** 2 + xi)
    return omega, torch.clamp(-omega, 0, f_max)


def _simulate(mode, steps=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    p = torch.nn.Parameter(torch.randn(6, generator=g))
    imp = Importance({"w": p}, c=1.0, xi=1e-7, f_max=1e-3, mode=mode)
    thetas, grads = [p.detach().clone()], []
    imp.start_batch()
    for _ in range(steps):
        p.grad = torch.randn(6, generator=g)
        grads.append(p.grad.clone())
        imp.snapshot()
        with torch.no_grad():
            p -= 0.01 * p.grad * torch.rand(6, generator=g)
        imp.accumulate()
        thetas.append(p.detach().clone())
    imp.end_batch()
    return imp, thetas, grads, p


def test_ar1_importance_matches_float64_reference():
    for mode in ("updates", "gradients"):
        imp, thetas, grads, p = _simulate(mode)
        omega, F = _reference(thetas, grads, mode)
        assert torch.allclose(imp.omega["w"].double(), omega, rtol=1e-4, atol=1e-9), mode
        assert torch.allclose(imp.F["w"].double(), F, rtol=1e-4, atol=1e-12), mode
        assert torch.equal(imp.theta_star["w"], p.detach())
    # "updates": Omega = -sum(d^2)/(D^2 + xi) <= 0, so F = min(-Omega, F_max) > 0 and saturates quickly
    imp, *_ = _simulate("updates")
    assert bool((imp.F["w"] > 0).all()) and imp.saturation() == 1.0


def test_ar1_gradient_scaling():
    p = torch.nn.Parameter(torch.ones(4))
    imp = Importance({"w": p}, c=1.0, xi=1e-7, f_max=1e-3, mode="updates")
    imp.F["w"] = torch.tensor([0.0, 2.5e-4, 5e-4, 1e-3])
    p.grad = torch.full((4,), 2.0)
    imp.scale_gradients()
    assert torch.allclose(p.grad, torch.tensor([2.0, 1.5, 1.0, 0.0]))
