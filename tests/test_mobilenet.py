"""MobileNetV1 with Caffe names: counts, latent table, split exactness, parameter groups, BRN steps."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from latent_replay.models import (
    CAFFE_NAMES, CONV_LAYERS, INCREMENTAL_LATENT, LATENT_LAYERS, MobileNetV1, caffe_blob_count, caffe_layer_of,
    conv_fc_parameter_count, latent_shape, mac_counts, mac_fraction_below, param_names_by_kind, split, stop_layer,
)

# spec §4.5: latent layer, stored shape, stop layer, % of forward MACs below (incl.) the latent
SPEC_TABLE = [
    ("data", (3, 128, 128), "conv1", 0.0),
    ("conv2_1/dw", (32, 64, 64), "conv2_1/sep", 2.5),
    ("conv2_2/dw", (64, 32, 32), "conv2_2/sep", 7.4),
    ("conv3_1/dw", (128, 32, 32), "conv3_1/sep", 12.5),
    ("conv3_2/dw", (128, 16, 16), "conv3_2/sep", 21.8),
    ("conv4_1/dw", (256, 16, 16), "conv4_1/sep", 26.6),
    ("conv4_2/dw", (256, 8, 8), "conv4_2/sep", 35.7),
    ("conv5_1/dw", (512, 8, 8), "conv5_1/sep", 40.4),
    ("conv5_2/dw", (512, 8, 8), "conv5_2/sep", 49.6),
    ("conv5_3/dw", (512, 8, 8), "conv5_3/sep", 58.8),
    ("conv5_4/dw", (512, 8, 8), "conv5_4/sep", 68.0),
    ("conv5_5/dw", (512, 8, 8), "conv5_5/sep", 77.2),
    ("conv5_6/dw", (512, 4, 4), "conv5_6/sep", 86.3),
    ("conv6/dw", (1024, 4, 4), "conv6/sep", 90.9),
    ("pool6", (1024,), "mid_fc7", 100.0),
]


def _with_stats(model: MobileNetV1, seed: int = 0) -> MobileNetV1:
    """Give every BRN plausible running statistics so that eval mode is well conditioned."""
    g = torch.Generator().manual_seed(seed)
    for brn in model.brn_layers().values():
        c = brn.num_features
        brn.set_running_stats(torch.randn(c, generator=g) * 0.1, torch.rand(c, generator=g) + 0.5, normaliser=7.0)
    return model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return _with_stats(MobileNetV1()).eval()


@pytest.fixture(scope="module")
def x():
    return torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(1))


def test_layer_names():
    assert CAFFE_NAMES[:3] == ("conv1", "conv2_1/dw", "conv2_1/sep")
    assert CAFFE_NAMES[-4:] == ("conv6/dw", "conv6/sep", "pool6", "mid_fc7")
    assert len(CONV_LAYERS) == 27
    assert [row[0] for row in SPEC_TABLE] == list(LATENT_LAYERS)
    m = MobileNetV1()
    assert m.layer("conv5_4/dw") is m.conv5_4_dw
    assert m.layer("conv5_4/dw").conv.groups == 512 and m.layer("conv5_4/dw").conv.bias is None
    assert m.layer("mid_fc7").out_features == 50 and m.mid_fc7.bias is not None
    assert caffe_layer_of("conv5_4_sep.scale.weight") == "conv5_4/sep"
    assert caffe_layer_of("mid_fc7.bias") == "mid_fc7"
    with pytest.raises(ValueError, match="unknown layer"):
        m.layer("conv7")
    with pytest.raises(KeyError):
        caffe_layer_of("features.0.weight")


def test_parameter_counts():
    m = MobileNetV1()
    assert conv_fc_parameter_count(m) == 3_236_338
    assert caffe_blob_count(m) == 3_280_168
    assert sum(p.numel() for p in m.parameters()) == 3_236_338 + 2 * 10_944   # + gamma, beta


def test_macs_and_latent_table():
    macs = mac_counts()
    assert list(macs) == list(CAFFE_NAMES)
    total = sum(macs.values())
    assert abs(total - 185.4e6) / 185.4e6 < 0.005
    assert macs["conv1"] == 64 * 64 * 32 * 27 and macs["mid_fc7"] == 1024 * 50
    assert mac_counts(MobileNetV1()) == macs   # same numbers from a real (non-meta) model
    for name, shape, stop, pct in SPEC_TABLE:
        assert latent_shape(name) == shape, name
        assert stop_layer(name) == stop, name
        assert round(100 * mac_fraction_below(name), 1) == pct, name
    assert latent_shape("conv5_4/dw", input_size=224) == (512, 14, 14)
    with pytest.raises(ValueError):
        latent_shape("conv5_4/sep")


def test_split_is_exact_for_every_latent_layer(model, x):
    """Eval mode: upper(lower(x)) == model(x) bit for bit, and the latent has the spec §4.5 shape."""
    with torch.no_grad():
        full = model(x)
        assert full.shape == (2, 50)
        for name, shape, *_ in SPEC_TABLE:
            lower, upper = model.split(name)
            latent = lower(x)
            assert latent.shape == (2,) + shape, name
            assert torch.equal(upper(latent), full), name
    lower, upper = split(model, "data")
    assert len(lower) == 0 and len(upper) == len(CAFFE_NAMES)
    lower, upper = split(model, "pool6")
    assert list(upper) == [model.mid_fc7]


def test_split_shares_parameters(model):
    lower, upper = split(model, "conv5_4/dw")
    ids = {id(p) for p in model.parameters()}
    assert {id(p) for p in lower.parameters()} | {id(p) for p in upper.parameters()} == ids
    assert not ({id(p) for p in lower.parameters()} & {id(p) for p in upper.parameters()})
    assert lower[0] is model.conv1 and upper[0] is model.conv5_4_sep
    assert list(lower.state_dict())[0] == "conv1.conv.weight"


def test_split_exact_in_training_mode(x):
    torch.manual_seed(3)
    a = _with_stats(MobileNetV1())
    b = copy.deepcopy(a)
    a.train()
    b.train()
    lower, upper = split(b, "conv5_4/dw")
    ya, yb = a(x), upper(lower(x))
    assert torch.equal(ya, yb)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k


def test_param_groups_by_kind():
    m = MobileNetV1()
    names = param_names_by_kind(m)
    assert {k: len(v) for k, v in names.items()} == {
        "conv1": 1, "depthwise": 13, "pointwise": 13, "scale": 54, "fc_weight": 1, "fc_bias": 1}
    flat = [n for v in names.values() for n in v]
    assert sorted(flat) == sorted(n for n, _ in m.named_parameters())
    assert names["depthwise"][0] == "conv2_1_dw.conv.weight" and names["pointwise"][-1] == "conv6_sep.conv.weight"
    groups = m.param_groups_by_kind()
    assert groups["fc_weight"][0] is m.mid_fc7.weight
    assert sum(p.numel() for p in groups["scale"]) == 2 * 10_944


def test_brn_steps_follow_the_backward_stop(x):
    """Latent replay: lower part forward-only in training mode, upper part trained."""
    torch.manual_seed(4)
    m = MobileNetV1().train()
    lower, upper = split(m, "conv5_4/dw")
    with torch.no_grad():
        lat = lower(x)
    replay = torch.randn(3, *latent_shape("conv5_4/dw"))
    out = upper(torch.cat([lat, replay]))
    F.cross_entropy(out, torch.tensor([0, 1, 2, 3, 4])).backward()
    steps = {n: int(b.t) for n, b in m.brn_layers().items()}
    below = CONV_LAYERS[:CONV_LAYERS.index("conv5_4/dw") + 1]
    assert all(steps[n] == 0 for n in below) and all(steps[n] == 1 for n in CONV_LAYERS if n not in below)
    assert all(float(m.layer(n).brn.S) == 1.0 for n in CONV_LAYERS)   # every training forward accumulates
    assert all(p.grad is None for p in lower.parameters())
    # a full training step advances every counter
    F.cross_entropy(m(x), torch.tensor([0, 1])).backward()
    assert all(int(b.t) == steps[n] + 1 for n, b in m.brn_layers().items())


def test_brn_config_and_past_weight_for_all_layers(x):
    m = MobileNetV1().train()
    with torch.no_grad():
        m(x)
    stats = {n: b.running_stats()[0].clone() for n, b in m.brn_layers().items()}
    m.set_brn_config(INCREMENTAL_LATENT)
    m.rescale_brn_past_weight(20000)
    assert m.brn_config == INCREMENTAL_LATENT
    for n, b in m.brn_layers().items():
        assert b.config == INCREMENTAL_LATENT and float(b.S) == 20000
        assert torch.allclose(b.running_stats()[0], stats[n], rtol=1e-5, atol=1e-7)


def test_channels_last(x):
    torch.manual_seed(5)
    a = _with_stats(MobileNetV1())
    b = copy.deepcopy(a).to(memory_format=torch.channels_last)
    xc = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        a.eval()
        b.eval()
        assert torch.allclose(a(x), b(xc), atol=1e-5, rtol=1e-4)
        a.train()
        b.train()
        assert torch.allclose(a(x), b(xc), atol=1e-4, rtol=1e-4)
    assert b.conv6_sep.conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_backward_runs_and_reaches_every_parameter(x):
    m = MobileNetV1().train()
    F.cross_entropy(m(x), torch.tensor([1, 2])).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(model, x):
    gpu = copy.deepcopy(model).cuda()
    with torch.no_grad():
        assert torch.allclose(gpu(x.cuda()).cpu(), model(x), atol=1e-4, rtol=1e-3)
    cpu = copy.deepcopy(model).train()
    gpu.train()
    F.cross_entropy(gpu(x.cuda()), torch.tensor([1, 2], device="cuda")).backward()
    F.cross_entropy(cpu(x), torch.tensor([1, 2])).backward()
    for (name, b_gpu), b_cpu in zip(gpu.brn_layers().items(), cpu.brn_layers().values()):
        assert int(b_gpu.t) == int(b_cpu.t) == 1, name
        for buf in ("A_mu", "A_var", "S"):
            assert torch.allclose(getattr(b_gpu, buf).cpu(), getattr(b_cpu, buf), rtol=1e-3, atol=1e-4), (name, buf)


@pytest.mark.slow
@pytest.mark.parametrize("step_on", ["forward", "backward"])
def test_torch_compile(x, step_on):
    torch.manual_seed(6)
    m = _with_stats(MobileNetV1(step_on=step_on))
    ref = copy.deepcopy(m)
    compiled = torch.compile(m)
    with torch.no_grad():
        m.eval()
        ref.eval()
        assert torch.allclose(compiled(x), ref(x), atol=1e-4, rtol=1e-4)
    m.train()
    ref.train()
    y = compiled(x)
    y.sum().backward()
    assert torch.allclose(y, ref(x), atol=1e-4, rtol=1e-4)
    assert int(m.conv1.brn.t) == 1 and float(m.conv1.brn.S) == pytest.approx(float(ref.conv1.brn.S))
