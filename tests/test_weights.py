"""Weight import (pytorchcv mobilenet_w1, .caffemodel), own checkpoints and the `weights` CLI group."""
from __future__ import annotations

import logging
import struct

import numpy as np
import pytest
import torch
from torch import nn

from latent_replay.models import CONV_LAYERS, INCREMENTAL_LATENT, MobileNetV1, split
from latent_replay.models.caffemodel import (
    CaffeLayer, export_caffemodel, import_caffemodel, model_to_caffe_layers, read_caffemodel, write_caffemodel,
)
from latent_replay.models.weights import (
    ImportReport, import_pytorchcv, load_checkpoint, load_weights, pytorchcv_key_map, save_checkpoint,
)

pytorchcv_provider = pytest.importorskip("pytorchcv.model_provider")


def _pytorchcv_mobilenet(seed=0) -> nn.Module:
    """pytorchcv's own mobilenet_w1 (no download) with random weights and non-trivial BN statistics."""
    torch.manual_seed(seed)
    net = pytorchcv_provider.get_model("mobilenet_w1", pretrained=False)
    with torch.no_grad():
        for mod in net.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.normal_(0, 0.3)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.normal_(0, 0.2)
        net.output.bias.normal_()
    return net.eval()


@pytest.fixture(scope="module")
def pcv():
    return _pytorchcv_mobilenet()


@pytest.fixture(scope="module")
def x():
    return torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(2))


def _random_model(seed=0, **kw) -> MobileNetV1:
    torch.manual_seed(seed)
    m = MobileNetV1(**kw)
    with torch.no_grad():
        for name in CONV_LAYERS:
            block = m.layer(name)
            c = block.brn.num_features
            block.brn.A_mu.normal_()
            block.brn.A_var.uniform_(1, 3)
            block.brn.S.fill_(3.0)
            block.brn.t.fill_(11)
            block.scale.weight.uniform_(0.5, 1.5)
            block.scale.bias.normal_(0, 0.1, generator=None)
            assert c == block.scale.weight.numel()
        m.mid_fc7.bias.normal_()
    return m


# ------------------------------------------------------------------------------------------------
# pytorchcv
# ------------------------------------------------------------------------------------------------
def test_pytorchcv_key_map_covers_the_real_model(pcv):
    keymap = pytorchcv_key_map()
    theirs = pcv.state_dict()
    ours = MobileNetV1().state_dict()
    assert len(keymap) == 27 * 5
    for src, dst in keymap.items():
        assert src in theirs, src
        assert theirs[src].shape == ours[dst].shape, (src, dst)
    left = {k for k in theirs if k not in keymap}
    assert left == {k for k in theirs if k.endswith("num_batches_tracked")} | {"output.weight", "output.bias"}
    # block order follows spec §9.1: stage4.unit2 is conv5_1, stage5.unit1 is conv5_6
    assert keymap["features.stage4.unit2.dw_conv.conv.weight"] == "conv5_1_dw.conv.weight"
    assert keymap["features.stage5.unit1.pw_conv.bn.running_var"] == "conv5_6_sep.brn.A_var"


def test_pytorchcv_import_gives_the_same_features(pcv, x):
    m = MobileNetV1()
    report = import_pytorchcv(m, pcv)
    assert report.missing == ["mid_fc7.weight", "mid_fc7.bias"]
    assert {src for src, _ in report.skipped} >= {"output.weight", "output.bias"}
    brn = m.conv5_4_dw.brn
    assert float(brn.S) == 100.0 and int(brn.t) == 0
    ref_mean = pcv.features.stage4.unit5.dw_conv.bn.running_mean
    assert torch.allclose(brn.running_stats()[0], ref_mean, rtol=1e-6, atol=1e-7)
    m.eval()
    feats = nn.Sequential(*list(pcv.features.children())[:-1])   # drop the 7x7 pool (224 input only)
    lower, _ = split(m, "pool6")
    with torch.no_grad():
        expected = feats(x).mean(dim=(2, 3))
        got = lower(x)
        assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5)
        # and at an intermediate latent: pytorchcv's stage4.unit5.dw_conv output is conv5_4/dw
        lat = nn.Sequential(pcv.features.init_block, pcv.features.stage1, pcv.features.stage2, pcv.features.stage3,
                            *list(pcv.features.stage4.children())[:4], pcv.features.stage4.unit5.dw_conv)(x)
        assert torch.allclose(split(m, "conv5_4/dw")[0](x), lat, atol=1e-5, rtol=1e-5)


def test_pytorchcv_import_with_head_matches_logits(pcv):
    m = MobileNetV1(num_classes=1000)
    report = import_pytorchcv(m, pcv.state_dict(), map_head=True, stats_weight=1.0)
    assert report.complete
    m.eval()
    x224 = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert torch.allclose(m(x224), pcv(x224), atol=1e-4, rtol=1e-4)
    assert float(m.conv1.brn.S) == 1.0


def test_pytorchcv_import_from_file_and_errors(pcv, tmp_path, caplog):
    path = tmp_path / "mobilenet_w1-0895-7e1d739f.pth"
    torch.save(pcv.state_dict(), path)
    m = MobileNetV1()
    with caplog.at_level(logging.WARNING):
        info = load_weights(m, path)
    assert info["preprocessing"] == "imagenet" and isinstance(info["report"], ImportReport)
    assert "mid_fc7.weight" in caplog.text   # missing tensors are logged
    assert torch.equal(m.conv1.conv.weight, pcv.features.init_block.conv.weight)
    bad = tmp_path / "bad.pth"
    torch.save({"foo": torch.zeros(3)}, bad)
    with pytest.raises(ValueError, match="no pytorchcv mobilenet_w1 key"):
        import_pytorchcv(MobileNetV1(), bad)
    wrong = dict(pcv.state_dict())
    wrong["features.init_block.conv.weight"] = torch.zeros(16, 3, 3, 3)
    with pytest.raises(ValueError, match=r"features\.init_block\.conv\.weight .*conv1\.conv\.weight"):
        import_pytorchcv(MobileNetV1(), wrong)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="junk.pth"):
        import_pytorchcv(MobileNetV1(), junk)


def test_load_weights_without_file_logs_random_init(caplog):
    with caplog.at_level(logging.WARNING):
        info = load_weights(MobileNetV1(), None)
    assert info["source"] == "random"
    assert "random initialisation" in caplog.text


# ------------------------------------------------------------------------------------------------
# caffemodel
# ------------------------------------------------------------------------------------------------
def test_hand_encoded_netparameter_is_decoded():
    """A NetParameter encoded by hand from the protobuf spec (independent of our writer)."""
    blob = bytes([0x3A, 0x03, 0x0A, 0x01, 0x02]) + bytes([0x2A, 0x08]) + struct.pack("<2f", 1.0, 2.0)
    layer = bytes([0x0A, 0x01]) + b"a" + bytes([0x12, 0x05]) + b"Scale" + bytes([0x3A, len(blob)]) + blob
    legacy_blob = bytes([0x08, 0x01, 0x10, 0x03, 0x18, 0x01, 0x20, 0x01]) + bytes([0x2A, 0x0C]) \
        + struct.pack("<3f", 1, 2, 3)   # num 1, channels 3, height 1, width 1
    v1_layer = bytes([0x22, 0x01]) + b"b" + bytes([0x28, 0x04]) + bytes([0x32, len(legacy_blob)]) + legacy_blob
    net = bytes([0x0A, 0x03]) + b"net" + bytes([0xA2, 0x06, len(layer)]) + layer + bytes([0x12, len(v1_layer)]) \
        + v1_layer + bytes([0x18, 0x05])   # trailing unknown varint field 3
    layers = read_caffemodel(net)
    assert [(ly.name, ly.type) for ly in layers] == [("a", "Scale"), ("b", "Convolution")]
    assert layers[0].blobs[0].tolist() == [1.0, 2.0]
    assert layers[1].blobs[0].shape == (1, 3, 1, 1) and layers[1].blobs[0].ravel().tolist() == [1, 2, 3]


def test_caffemodel_round_trip(tmp_path, x):
    m = _random_model()
    path = export_caffemodel(m, tmp_path / "ours.caffemodel")
    layers = read_caffemodel(path)
    assert [ly.name for ly in layers[:3]] == ["conv1", "conv1/brn", "conv1/scale"]
    assert layers[-1].name == "mid_fc7" and layers[-1].blobs[0].shape == (50, 1024, 1, 1)
    m2 = MobileNetV1()
    report = import_caffemodel(m2, path)
    assert report.complete and not report.skipped
    for k, v in m.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k]), k
    m.eval()
    m2.eval()
    with torch.no_grad():
        assert torch.equal(m(x), m2(x))


@pytest.mark.parametrize("v1,legacy", [(True, True), (False, True)])
def test_caffemodel_legacy_layouts(tmp_path, v1, legacy):
    m = _random_model(seed=1)
    layers = [ly for ly in model_to_caffe_layers(m) if not ly.name.endswith(("/brn", "/scale"))]
    path = write_caffemodel(tmp_path / "legacy.caffemodel", layers, v1=v1, legacy_shape=legacy)
    read = read_caffemodel(path)
    assert read[0].blobs[0].shape == (32, 3, 3, 3)
    if v1:
        assert read[0].type == "Convolution"
    m2 = MobileNetV1()
    report = import_caffemodel(m2, path)
    assert torch.equal(m2.conv5_4_dw.conv.weight, m.conv5_4_dw.conv.weight)
    assert torch.equal(m2.mid_fc7.bias, m.mid_fc7.bias)
    assert "conv1.scale.weight" in report.missing and "conv1.brn.A_mu" in report.missing


def _imagenet_style_layers(model: MobileNetV1) -> list[CaffeLayer]:
    """What the ImageNet MobileNet caffemodel most likely holds: conv, <name>/bn (BatchNorm), <name>/scale, fc7."""
    out = []
    for ly in model_to_caffe_layers(model):
        if ly.name.endswith("/brn"):
            out.append(CaffeLayer(ly.name[:-4] + "/bn", "BatchNorm", ly.blobs[:3]))
        elif ly.name == "mid_fc7":
            out.append(CaffeLayer("fc7", "Convolution", [np.zeros((1000, 1024, 1, 1), np.float32),
                                                           np.zeros(1000, np.float32)]))
        else:
            out.append(ly)
    out.append(CaffeLayer("pool6", "Pooling", []))
    return out


def test_caffemodel_batchnorm_naming_and_report(tmp_path, caplog):
    src = _random_model(seed=2)
    path = write_caffemodel(tmp_path / "imagenet.caffemodel", _imagenet_style_layers(src))
    m = MobileNetV1()
    m.conv1.brn.t.fill_(5)
    with caplog.at_level(logging.WARNING):
        report = import_caffemodel(m, path, stats_weight=None)
    assert torch.equal(m.conv3_1_sep.brn.A_var, src.conv3_1_sep.brn.A_var)
    assert float(m.conv3_1_sep.brn.S) == 3.0 and int(m.conv1.brn.t) == 0
    # by default the /bn statistics keep their mean and variance under the pytorchcv import's S = 100
    m100 = MobileNetV1()
    import_caffemodel(m100, path)
    assert float(m100.conv3_1_sep.brn.S) == 100.0
    for got, want in zip(m100.conv3_1_sep.brn.running_stats(), src.conv3_1_sep.brn.running_stats()):
        assert torch.allclose(got, want, rtol=1e-6)
    assert report.missing == ["mid_fc7.weight", "mid_fc7.bias"]
    assert [s for s, _ in report.skipped] == ["fc7 (Convolution, 2 blobs)"]
    assert "fc7" in caplog.text and "mid_fc7.weight" in caplog.text
    # Caffe's name-based copy leaves the /brn statistics empty (spec B14)
    m2 = MobileNetV1()
    report2 = import_caffemodel(m2, path, bn_stats=False)
    assert float(m2.conv1.brn.S) == 0.0 and "conv1.brn.A_mu" in report2.missing
    assert len(report2.skipped) == 28
    # /brn takes precedence over /bn of the same conv
    layers = _imagenet_style_layers(src) + [CaffeLayer("conv1/brn", "BatchReNorm",
                                                       [np.ones(32, np.float32), np.ones(32, np.float32),
                                                        np.array([2.0], np.float32), np.array([7.0], np.float32)])]
    m3 = MobileNetV1()
    report3 = import_caffemodel(m3, layers)
    assert float(m3.conv1.brn.S) == 2.0 and int(m3.conv1.brn.t) == 7
    assert ("conv1/bn (BatchNorm, 3 blobs)", "superseded by conv1/brn") in report3.skipped


def test_caffemodel_errors(tmp_path):
    layers = [CaffeLayer("conv2_1/sep", "Convolution", [np.zeros((64, 16, 1, 1), np.float32)])]
    with pytest.raises(ValueError, match=r"blob 'conv2_1/sep'\[0\] has shape \(64, 16, 1, 1\)"):
        import_caffemodel(MobileNetV1(), write_caffemodel(tmp_path / "bad.caffemodel", layers))
    junk = tmp_path / "junk.caffemodel"
    junk.write_bytes(b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff")
    with pytest.raises(ValueError, match="junk.caffemodel: not a Caffe NetParameter"):
        read_caffemodel(junk)
    with pytest.raises(FileNotFoundError):
        read_caffemodel(tmp_path / "missing.caffemodel")
    biased = [CaffeLayer("conv1", "Convolution", [np.zeros((32, 3, 3, 3), np.float32), np.zeros(32, np.float32)])]
    report = import_caffemodel(MobileNetV1(), biased)
    assert report.skipped == [("conv1[1]", "conv bias (our convs are bias-free)")]


def test_load_weights_dispatches_caffemodel(tmp_path):
    path = export_caffemodel(_random_model(seed=3), tmp_path / "MobileNetV1.caffemodel")
    info = load_weights(MobileNetV1(), path)
    assert info["preprocessing"] == "caffe" and info["report"].complete


# ------------------------------------------------------------------------------------------------
# checkpoints
# ------------------------------------------------------------------------------------------------
def test_checkpoint_round_trip(tmp_path, x):
    m = _random_model(seed=4)
    m.set_brn_config(INCREMENTAL_LATENT, layers=["conv6/sep"])
    path = save_checkpoint(tmp_path / "ck" / "batch0.pt", m, source="pytorchcv:mobilenet_w1",
                           preprocessing="imagenet", extra={"batch": 0})
    assert [p.name for p in path.parent.iterdir()] == ["batch0.pt"]   # no temporary file left
    m2, meta = load_checkpoint(path)
    assert meta["source"] == "pytorchcv:mobilenet_w1" and meta["preprocessing"] == "imagenet"
    assert meta["extra"] == {"batch": 0} and meta["num_classes"] == 50
    for k, v in m.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k]), k
    assert m2.conv6_sep.brn.config == INCREMENTAL_LATENT and m2.conv1.brn.config == m.brn_config
    m3 = MobileNetV1()
    load_checkpoint(path, m3)
    m.eval()
    m3.eval()
    with torch.no_grad():
        assert torch.equal(m(x), m3(x))
    info = load_weights(MobileNetV1(), path)
    assert info == {"source": "pytorchcv:mobilenet_w1", "preprocessing": "imagenet", "report": None}


def test_checkpoint_with_or_without_classifier_bias_fits_either_model(tmp_path):
    """`weights convert` keeps pytorchcv's classifier bias, while the default model has none (B8 fixed):
    the bias is dropped, and a model with a bias keeps its own where the checkpoint has none."""
    with_bias = _random_model(seed=5)
    path = save_checkpoint(tmp_path / "b.pt", with_bias, source="x", preprocessing="imagenet")
    plain = MobileNetV1(fc_bias=False)
    load_checkpoint(path, plain)
    assert torch.equal(plain.mid_fc7.weight, with_bias.mid_fc7.weight) and plain.mid_fc7.bias is None
    path2 = save_checkpoint(tmp_path / "n.pt", plain, source="x", preprocessing="imagenet")
    biased = MobileNetV1(fc_bias=True)
    bias = biased.mid_fc7.bias.detach().clone()
    load_checkpoint(path2, biased)
    assert torch.equal(biased.mid_fc7.bias, bias) and torch.equal(biased.conv1.conv.weight, plain.conv1.conv.weight)


def test_convert_refuses_to_overwrite_and_bad_values(tmp_path):
    from click.testing import CliRunner

    from latent_replay.cli import main

    src = tmp_path / "src.pth"
    src.write_bytes(b"source")
    (tmp_path / "old.pt").write_bytes(b"old")
    cases = [(["--out", src], "Invalid value for '--out': " + f"{src} is the source file itself"),
             (["--out", tmp_path / "old.pt"], f"{tmp_path / 'old.pt'} already exists (use --force to replace it)"),
             (["--out", tmp_path / "n.pt", "--num-classes", "0"], "'--num-classes': 0 is not in the range x>=1"),
             (["--out", tmp_path / "n.pt", "--stats-weight", "nan"], "'--stats-weight': nan is not a number > 0")]
    for extra, message in cases:
        r = CliRunner().invoke(main, ["weights", "convert", str(src), "--format", "pytorchcv", *map(str, extra)])
        assert r.exit_code == 2 and message in r.output and r.output.count("\n") == 1, r.output
    assert src.read_bytes() == b"source" and (tmp_path / "old.pt").read_bytes() == b"old"
    assert not (tmp_path / "n.pt").exists()


def test_checkpoint_errors(tmp_path, pcv):
    m = MobileNetV1()
    with pytest.raises(ValueError, match="preprocessing"):
        save_checkpoint(tmp_path / "a.pt", m, source="x", preprocessing="bgr")
    with pytest.raises(TypeError, match="JSON"):
        save_checkpoint(tmp_path / "a.pt", m, source="x", preprocessing="caffe", extra={"m": object()})
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"junk\.pt: not a latent-replay MobileNetV1 checkpoint"):
        load_checkpoint(junk)
    plain = tmp_path / "plain.pt"
    torch.save(pcv.state_dict(), plain)
    with pytest.raises(ValueError, match=r"plain\.pt: not a latent-replay MobileNetV1 checkpoint"):
        load_checkpoint(plain)
    with pytest.raises(FileNotFoundError, match="nothere.pt"):
        load_checkpoint(tmp_path / "nothere.pt")
    good = save_checkpoint(tmp_path / "good.pt", m, source="x", preprocessing="caffe")
    with pytest.raises(ValueError, match=r"good\.pt: checkpoint does not fit"):
        load_checkpoint(good, MobileNetV1(num_classes=10))


# ------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------
def test_weights_cli(tmp_path, pcv):
    from click.testing import CliRunner

    from latent_replay.models.commands import weights

    src = tmp_path / "mobilenet_w1.pth"
    torch.save(pcv.state_dict(), src)
    out = tmp_path / "imagenet.pt"
    runner = CliRunner()
    res = runner.invoke(weights, ["convert", str(src), "--format", "pytorchcv", "--out", str(out)])
    assert res.exit_code == 0, res.output
    _, meta = load_checkpoint(out)
    assert meta["preprocessing"] == "imagenet" and meta["source"].startswith("pytorchcv:")
    res = runner.invoke(weights, ["info", str(out)])
    assert res.exit_code == 0 and "imagenet" in res.output and "3,236,338" in res.output
    caffe = export_caffemodel(_random_model(seed=5), tmp_path / "m.caffemodel")
    out2 = tmp_path / "caffe.pt"
    res = runner.invoke(weights, ["convert", str(caffe), "--format", "caffe", "--out", str(out2)])
    assert res.exit_code == 0, res.output
    assert load_checkpoint(out2)[1]["preprocessing"] == "caffe"
    res = runner.invoke(weights, ["info", str(caffe)])
    assert res.exit_code == 0 and "conv1/brn" in res.output
    res = runner.invoke(weights, ["info", str(tmp_path / "missing.pt")])
    assert res.exit_code != 0 and "missing.pt" in res.output
    # a state dict lacking most of the network, or holding NaN, is refused (one line); --allow-missing writes it
    partial = tmp_path / "partial.pth"
    torch.save(dict(list(pcv.state_dict().items())[:5]), partial)
    res = runner.invoke(weights, ["convert", str(partial), "--format", "pytorchcv", "--out", str(tmp_path / "p.pt")])
    assert res.exit_code == 1 and "tensors of the network are not in it" in res.output
    assert res.output.count("\n") == 1 and not (tmp_path / "p.pt").exists()
    res = runner.invoke(weights, ["convert", str(partial), "--format", "pytorchcv", "--out", str(tmp_path / "p.pt"),
                                  "--allow-missing"])
    assert res.exit_code == 0 and (tmp_path / "p.pt").is_file()
    nan = tmp_path / "nan.pth"
    torch.save({k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                for k, v in pcv.state_dict().items()}, nan)
    res = runner.invoke(weights, ["convert", str(nan), "--format", "pytorchcv", "--out", str(tmp_path / "n.pt")])
    assert res.exit_code == 1 and "hold NaN or infinite values" in res.output and not (tmp_path / "n.pt").exists()
