"""LwF (methods/lwf.py): its parameters, the distillation term, and a tiny experiment with it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from latent_replay.config import ConfigError, ExperimentConfig
from latent_replay.methods import make_method
from latent_replay.registry import METHODS
from latent_replay.train import Minibatch, Trainer
from conftest import tiny_config


def test_registered_with_its_parameters():
    entry = METHODS.get("LWF")
    assert entry.name == "lwf" and entry.title == "LwF" and "lwf" in METHODS.names()
    cfg = ExperimentConfig(method="lwf", replay="none")
    assert cfg.method_params == {"lam": 1.0, "temperature": 2.0}
    assert ExperimentConfig(method="lwf", method_params={"lam": 3}).method_params == {"lam": 3.0, "temperature": 2.0}
    assert ExperimentConfig(method="naive").method_params == {}


@pytest.mark.parametrize("params, message", [
    ({"lam": -1.0}, "method_params.lam: must be >= 0, got -1.0"),
    ({"temperature": 0}, "method_params.temperature: must be > 0, got 0.0"),
    ({"temperature": "hot"}, "method_params.temperature: expected float, got str 'hot'"),
    ({"alpha": 1.0}, "method_params.alpha: unknown key"),
])
def test_bad_parameters_name_the_key(params, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        ExperimentConfig(method="lwf", method_params=params)


def test_other_methods_take_no_parameters():
    with pytest.raises(ConfigError, match="method_params: method 'naive' takes no parameters"):
        ExperimentConfig(method="naive", method_params={"lam": 1.0})


def test_loss_is_cross_entropy_plus_the_distillation_of_the_old_classes():
    torch.manual_seed(0)
    cfg = ExperimentConfig(method="lwf", replay="none", method_params={"lam": 0.5, "temperature": 3.0})
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 50))
    lwf = make_method(cfg, model)
    labels0 = torch.tensor([0, 1, 2, 2])
    lwf.before_batch(0, labels0, labels0)
    x = torch.randn(4, 3, 4, 4)
    logits = model(x)
    assert torch.equal(lwf.loss(logits, labels0, Minibatch(model, x, labels0, 4, "data")), F.cross_entropy(logits, labels0))
    labels1 = torch.tensor([3, 3, 4, 4])
    lwf.before_batch(1, labels1, labels1)
    with torch.no_grad():
        model[1].weight.add_(0.1)   # the model moves away from the kept copy
    logits = model(x)
    old = lwf.old(x).detach()
    c = [0, 1, 2]
    kd = (F.softmax(old[:, c] / 3, 1) * (F.log_softmax(old[:, c] / 3, 1) - F.log_softmax(logits[:, c] / 3, 1))).sum(1).mean()
    got = lwf.loss(logits, labels1, Minibatch(model, x, labels1, 4, "data"))
    assert torch.allclose(got, F.cross_entropy(logits, labels1) + 0.5 * 9 * kd, rtol=1e-5)
    assert lwf.state_dict() == {"seen": [0, 1, 2, 3, 4]}


@pytest.mark.parametrize("replay, layer", [("none", "conv5_4/dw"), ("latent", "conv5_4/dw")])
def test_trains_and_resumes_in_the_golden_setting(tiny_nicv2, tmp_path, replay, layer):
    """The golden grid's tiny setting (tests/test_golden.py), with and without latent replay; an
    interrupted run resumes to the same metrics."""
    whole = tiny_config(tiny_nicv2, tmp_path / "whole", method="lwf", replay=replay, latent_layer=layer)
    Trainer(whole, progress=False).run_all()
    cut = whole.replace(out=str(tmp_path / "cut"))
    with pytest.raises(KeyboardInterrupt):
        Trainer(cut, progress=False).run_all(stop_after=2)
    Trainer(cut, progress=False).run_all()
    runs = [Path(c.out) / c.experiment_name / "run0" for c in (whole, cut)]
    metrics = [[line.split(",")[:6] for line in (d / "metrics.csv").read_text().splitlines()] for d in runs]
    assert metrics[0] == metrics[1] and len(metrics[0]) == 5
    summary = json.loads((runs[0] / "summary.json").read_text())
    assert summary["config"]["method"] == {"name": "lwf", "params": {"lam": 1.0, "temperature": 2.0}} and summary["config"]["method"]["params"]["lam"] == 1.0
    assert 0 < summary["final_accuracy"] <= 1
