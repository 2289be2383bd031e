"""recompute_bn_relu: one saved activation per conv layer, the same gradients and statistics."""
from __future__ import annotations

import copy
import threading
import weakref

import pytest
import torch
import torch.nn.functional as F

from latent_replay.models import MobileNetV1, recompute_bn_relu, split
from latent_replay.models import recompute


def _data(n=8, size=32, channels_last=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=g)
    y = torch.randint(0, 50, (n,), generator=g)
    return (x.contiguous(memory_format=torch.channels_last) if channels_last else x), y


def _train(model, x, y, on, steps=3, params=None, lr=0.05):
    """``steps`` SGD steps; returns the registry counts of each step."""
    opt = torch.optim.SGD(params if params is not None else model.parameters(), lr=lr, momentum=0.9)
    packed = []
    for _ in range(steps):
        opt.zero_grad()
        with recompute_bn_relu(on) as reg:
            out = model(x)
        F.cross_entropy(out, y).backward()
        opt.step()
        packed.append(reg.packed if reg is not None else None)
    return packed


@pytest.mark.parametrize("channels_last", [False, True])
def test_whole_network_same_parameters_and_brn_state(channels_last):
    """Bitwise the same weights, BRN accumulators and step counters after three steps; every block
    output but the last (pool6 keeps no input) is saved twice: by its ReLU and by the next conv."""
    torch.manual_seed(0)
    base = MobileNetV1().train()
    if channels_last:
        base = base.to(memory_format=torch.channels_last)
    x, y = _data(channels_last=channels_last)
    plain, fast = copy.deepcopy(base), copy.deepcopy(base)
    assert _train(plain, x, y, False) == [None] * 3
    assert _train(fast, x, y, True) == [27 + 26] * 3
    a, b = plain.state_dict(), fast.state_dict()
    assert all(torch.isfinite(a[k]).all() and torch.equal(a[k], b[k]) for k in a)
    assert int(fast.conv1.brn.t) == 3


def test_upper_part_same_parameters():
    """The latent-replay path: only the upper part trains, on latents that need no gradient."""
    torch.manual_seed(1)
    base = MobileNetV1().train()
    g = torch.Generator().manual_seed(1)
    h = torch.rand(16, 512, 4, 4, generator=g)       # latents at conv5_4/dw (after a ReLU: >= 0)
    y = torch.randint(0, 50, (16,), generator=g)
    results = []
    for on in (False, True):
        model = copy.deepcopy(base)
        _, upper = split(model, "conv5_4/dw")
        upper.train()
        packed = _train(upper, h, y, on, params=upper.parameters(), lr=0.01)
        results.append((packed, model.state_dict()))
    (_, a), (packed, b) = results
    assert packed == [7 + 6] * 3         # conv5_4/sep .. conv6/sep
    assert all(torch.isfinite(a[k]).all() and torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["conv6_sep.conv.weight"], base.state_dict()["conv6_sep.conv.weight"])


def _saved_bytes(model, x, on):
    """Bytes of the distinct activation storages (not weights) the forward keeps for the backward pass."""
    kept = {}
    original = recompute._Registry.pack

    def keep(t):
        if t.dim() == 4 and t.shape[0] == len(x):
            kept[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()

    def counting(self, t):
        saved = original(self, t)
        if saved is t:
            keep(t)
        return saved

    def plain(t):
        keep(t)
        return t

    recompute._Registry.pack = counting
    try:
        if on:
            with recompute_bn_relu():
                out = model(x)
        else:
            with torch.autograd.graph.saved_tensors_hooks(plain, lambda t: t):
                out = model(x)
    finally:
        recompute._Registry.pack = original
    return sum(kept.values()), out


def test_about_half_the_saved_activations():
    torch.manual_seed(2)
    model = MobileNetV1().train()
    x, _ = _data(n=4, size=64)
    plain, _ = _saved_bytes(copy.deepcopy(model), x, False)
    fast, out = _saved_bytes(copy.deepcopy(model), x, True)
    # each block keeps its normalisation input; its ReLU output (the next conv's input) is recomputed
    assert 0.40 * plain < fast < 0.6 * plain
    out.sum().backward()     # the tokens still unpack after the context has closed


def test_second_backward_recomputes():
    torch.manual_seed(3)
    model = MobileNetV1().train()
    x, y = _data()
    with recompute_bn_relu():
        loss = F.cross_entropy(model(x), y)
    first = torch.autograd.grad(loss, list(model.parameters()), retain_graph=True)
    second = torch.autograd.grad(loss, list(model.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(first, second))


def test_nothing_is_replaced_without_gradients_or_in_eval_mode():
    torch.manual_seed(4)
    model = MobileNetV1()
    x, _ = _data()
    with recompute_bn_relu() as reg, torch.no_grad():
        model.train()(x)
    assert reg.packed == 0
    with recompute_bn_relu() as reg:
        model.eval()(x).sum().backward()
    assert reg.packed == 0


def test_a_freed_output_address_is_not_mistaken_for_it():
    """The registry keys outputs by address; once an output is freed a new tensor may get its address,
    and it must then be saved as itself."""
    with recompute_bn_relu() as reg:
        y = torch.ones(4, requires_grad=True) * 2
        z = torch.ones(4)
        recompute.register_block_output(y, z, (torch.ones(1), torch.zeros(1), None, None), 1e-5)
        entry = next(iter(reg.outputs.values()))
        dead = weakref.ref(y)
        del y
        assert dead() is None
        other = torch.full((4,), 3.0)
        reg.outputs[other.untyped_storage().data_ptr()] = entry
        assert reg.pack(other) is other
        view = torch.zeros(8)
        reg.outputs[view.untyped_storage().data_ptr()] = (weakref.ref(view), entry[1])
        assert reg.pack(view[:4]) is not entry[1]        # same storage, another shape: not the output
    assert reg.packed == 0 and reg.outputs == {}


def test_not_reentrant():
    with recompute_bn_relu():
        with pytest.raises(RuntimeError, match="already active"):
            with recompute_bn_relu():
                pass
    assert not recompute.active()
    with recompute_bn_relu(False) as reg:
        assert reg is None and not recompute.active()


def test_other_threads_and_graph_building_backward():
    """The context is this thread's; a create_graph backward is refused with a clear error."""
    torch.manual_seed(5)
    model = MobileNetV1().train()
    x, y = _data()
    seen = []
    with recompute_bn_relu():
        worker = threading.Thread(target=lambda: seen.append(recompute.active()))
        worker.start()
        worker.join()
        loss = F.cross_entropy(model(x), y)
    assert seen == [False]
    with pytest.raises(RuntimeError, match="create_graph=True"):
        torch.autograd.grad(loss, list(model.parameters()), create_graph=True)
