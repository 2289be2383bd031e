"""The trainer: minibatch plans (spec §5.2), the latent path, resume, result files, and learning."""
from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from latent_replay.config import ConfigError, ExperimentConfig
from latent_replay.data.nicv2 import inventory_from_root, write_nicv2
from latent_replay.data.synthetic import write_synthetic_core50
from latent_replay.figures.experiments import load_experiments
from latent_replay.rowfile import RowFile
from latent_replay.train import RunTrainer, Trainer, hits, pad_indices, pad_random, plan_batch


def _plan(n, m, pad, count_memory=True, epochs=4):
    return plan_batch(n, m, minibatch=128, epochs=epochs, pad=pad, count_memory=count_memory,
                      perm=np.random.default_rng(0).permutation)


@pytest.mark.parametrize("pad", [True, False])
@pytest.mark.parametrize("n, m, k_new, k_mem, new_len, mem_len, per_epoch", [
    (2999, 0, 128, 0, 3072, 0, 24),        # batch 0
    (300, 1500, 21, 107, 315, 1605, 15),   # NICv2-391
    (600, 1500, 37, 91, 629, 1547, 17),    # NICv2-196
    (1500, 1500, 64, 64, 1536, 1536, 24),  # NICv2-79
    (300, 0, 128, 0, 384, 0, 3),           # NICv2-391 without replay
])
def test_spec_table_5_2(pad, n, m, k_new, k_mem, new_len, mem_len, per_epoch):
    """Both profiles: the original's split, padded lengths and iteration count (spec §5.2)."""
    s = _plan(n, m, pad)
    assert (s.k_new, s.k_mem, s.iters_per_epoch, s.iterations) == (k_new, k_mem, per_epoch, 4 * per_epoch)
    assert (len(s.new_order), len(s.mem_order)) == (new_len, mem_len)
    assert set(s.new_order.tolist()) == set(range(n)) and set(s.mem_order.tolist()) == set(range(m))
    seen = np.concatenate([s.new_rows(it) for it in range(s.iters_per_epoch)])
    assert set(seen.tolist()) == set(range(n))  # one epoch visits every new pattern
    # every minibatch is full: exactly k_new new and k_mem memory rows
    assert all((len(s.new_rows(it)), len(s.mem_rows(it))) == (k_new, k_mem) for it in range(s.iterations))


@pytest.mark.parametrize("n, k", [(300, 21), (2999, 128), (5, 4), (3, 8), (1, 5), (0, 4)])
def test_padding_rows(n, k):
    """caffe prepends the first rows (cycling when the list is shorter than the padding: the original
    fails there); fixed pads with distinct random rows (again cycling only when it must)."""
    extra = (-n) % k
    caffe = pad_indices(n, k)
    assert caffe.tolist() == [i % max(n, 1) for i in range(extra)] + list(range(n))
    fixed = pad_random(n, k, np.random.default_rng(0).permutation)
    assert len(fixed) == n + extra and fixed[:n].tolist() == list(range(n))
    counts = np.bincount(fixed, minlength=max(n, 1))[:n] if n else []
    assert all(c in (1 + extra // n, 2 + extra // n) for c in counts) if n else len(fixed) == 0
    if 0 < extra <= n:
        assert len(set(fixed[n:].tolist())) == extra   # distinct padding rows


def test_padded_test_list_shorter_than_a_test_minibatch():
    """A 15-frame test list with 100 per test minibatch: padding cycles instead of failing."""
    assert len(pad_indices(15, 100)) == 100 and set(pad_indices(15, 100).tolist()) == set(range(15))


def test_tiny_batches_cycle_chunks_across_epochs():
    """Where rounding k_new down gives the padded batch one chunk more than an epoch has iterations, the
    chunks cycle across epoch boundaries (as the original): every pattern is still visited, floor or
    ceil of iterations / chunks times."""
    s = _plan(20, 300, pad=False)   # k_new = round(8.0) = 8: 3 chunks; ceil(320/128) = 3 iterations / epoch
    assert (s.k_new, s.new_chunks, s.iters_per_epoch) == (8, 3, 3)
    s = _plan(11, 117, pad=False)   # k_new = 11, 1 chunk; 1 iteration per epoch
    assert (s.new_chunks, s.iters_per_epoch) == (1, 1)
    s = _plan(13, 243, pad=False)   # k_new = round(6.5) = 6: 3 chunks, but ceil(256/128) = 2 per epoch
    assert (s.k_new, s.new_chunks, s.iters_per_epoch, s.iterations) == (6, 3, 2, 8)
    first_epoch = np.concatenate([s.new_rows(it) for it in range(2)])
    assert set(first_epoch.tolist()) != set(range(13))        # an epoch cannot visit all 13
    visits = np.bincount(np.concatenate([s.new_rows(it) for it in range(s.iterations)]), minlength=13)
    assert visits.min() >= 8 // 3 and set(range(13)) <= set(np.flatnonzero(visits).tolist())


@pytest.mark.parametrize("n, m, k_new", [(5, 251, 2), (3, 253, 2), (7, 249, 4), (300, 1500, 21)])
def test_split_rounds_half_to_even_as_the_original(n, m, k_new):
    """k_new = round(128·n/(n+M)) with numpy's rounding (half to even): 2.5 -> 2, 1.5 -> 2, 3.5 -> 4."""
    assert _plan(n, m, pad=True).k_new == k_new == int(np.round(128 * n / (n + m)))


def test_caffe_replay_when_none_sees_252_of_300():
    s = _plan(300, 1500, pad=True, count_memory=False)  # B1: memory mixed in but not counted
    assert (s.k_new, s.iterations) == (21, 12)
    assert len(set(np.concatenate([s.new_rows(i) for i in range(12)]).tolist())) <= 252


def test_pad_indices():
    assert pad_indices(5, 4).tolist() == [0, 1, 2, 0, 1, 2, 3, 4]
    assert pad_indices(8, 4).tolist() == list(range(8))


def test_ties_count_as_miss_like_caffe():
    logits = torch.tensor([[1.0, 1.0, 0.0], [0.0, 2.0, 1.0], [3.0, 3.0, 3.0], [0.0, 1.0, 1.0]])
    labels = torch.tensor([0, 1, 2, 2])
    assert hits(logits, labels).tolist() == [True, True, False, False]           # argmax: first index wins
    assert hits(logits, labels, ties_miss=True).tolist() == [False, True, False, False]


# ------------------------------------------------------------------------------ tiny experiments
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """5 objects (one per category) x 11 sessions x 6 frames of 32x32, NICv2-391 run 0."""
    base = tmp_path_factory.mktemp("tiny")
    info = write_synthetic_core50(base / "core50", sessions=11, categories=5, objects_per_category=1, frames=6,
                                  size=32, progress=False)
    write_nicv2(base / "lists", inventory_from_root(info.out_dir / "core50_128x128"), scenarios=(391,), runs=(0, 1))
    return base


def _cfg(tiny, tmp_path, **kw):
    base = dict(dataset_root=str(tiny / "core50"), filelists=str(tiny / "lists"), cache_dir=str(tiny / "cache"),
                out=str(tmp_path / "results"), runs=[0], scenario=391, test_list="full", minibatch=32,
                lr_first_batch=0.02, epochs_first_batch=100, lr=0.005, brn_past_weight=100.0,
                brn_first_batch={"t0": 20, "t_r": 60, "t_d": 60, "r_max": 3.0, "d_max": 5.0, "moving_fraction": 0.9},
                method="ar1free", replay="latent", replay_memory=60, device="cpu")
    base.update(kw)
    return ExperimentConfig(**base)


def test_latent_path_equals_full_network(tiny, tmp_path):
    cfg = _cfg(tiny, tmp_path, epochs_first_batch=2, max_batches=2)
    trainer = Trainer(cfg, progress=False)
    rt = RunTrainer(cfg, 0, trainer.stream(0), trainer.device, tmp_path, progress=False)
    rt.train_batch(0)
    rt.batches_done = 1
    rt.train_batch(1)
    rt.model.eval()
    x = rt._pre(rt.test_frames[:8])
    with torch.no_grad():
        latent = rt.lower(x)
        assert latent.shape[1:] == (512, 2, 2)  # conv5_4/dw at 32x32
        empty = latent[:0]
        assert torch.allclose(rt.upper(torch.cat([latent, empty])), rt.model(x), atol=1e-5)
        assert rt.evaluate() == pytest.approx(
            float((rt.model(rt._pre(rt.test_frames)).argmax(1) == rt.test_labels).float().mean()))


def test_result_files_and_metrics(tiny, tmp_path):
    cfg = _cfg(tiny, tmp_path, epochs_first_batch=2, max_batches=3, runs=[0, 1], profile="caffe",
               fidelity={"first_batch_brn_start": "pretrained"})
    summaries = Trainer(cfg, progress=False).run_all()
    exp = tmp_path / "results" / cfg.experiment_name
    assert ExperimentConfig.load(exp / "exp_configuration.json") == cfg
    m = pd.read_csv(exp / "run0" / "metrics.csv")
    assert list(m.columns[:6]) == ["batch", "kind", "iteration", "test_accuracy", "train_loss", "train_accuracy"]
    # caffe profile: the extra evaluation after iteration 1 (B7), then one row per batch
    assert m["kind"].tolist() == ["iteration_1", "batch", "batch", "batch"] and m["iteration"].iloc[0] == 1
    # caffe padding: batch 0 (30 frames) padded to 32 candidates; then min(M/(b+1), padded) new ones
    # (batch 1: 6 frames, k_new 5 -> 10 padded; batch 2: k_new 4 -> 8) while the memory fills up
    assert m["memory_patterns"].tolist() == [0, 32, 42, 50]
    assert (m["memory_bytes"] == m["memory_patterns"] * (512 * 2 * 2 * 4 + 8)).all()
    # padded test set (B6): 90 test frames padded to a multiple of 100 -> accuracies in 1/100 steps
    assert all(abs(a * 100 - round(a * 100)) < 1e-9 for a in m["test_accuracy"])
    s = json.loads((exp / "run1" / "summary.json").read_text())
    assert s["finished"] and s["batches"] == 3 and s["fidelity"]["stored_latents"] == "train_epoch0"
    agg = pd.read_csv(exp / "summary.csv")
    assert agg["runs"].tolist() == [2, 2, 2, 2]
    both = [pd.read_csv(exp / f"run{r}" / "metrics.csv")["test_accuracy"] for r in (0, 1)]
    assert np.allclose(agg["test_accuracy_mean"], (both[0] + both[1]) / 2)
    assert len(summaries) == 2
    # a finished run is skipped unless --force
    assert Trainer(cfg, progress=False).run_all() == []


@pytest.mark.parametrize("profile,stop", [("fixed", 2), ("caffe", 2), ("caffe", 1)])
def test_resume_equals_uninterrupted(tiny, tmp_path, profile, stop):
    """Interrupted after ``stop`` batches and resumed. After batch 0 the caffe profile (momentum that
    persists from batch 2 on) has a batch-0 optimiser in its checkpoint, which batch 1 does not use."""
    cfg = _cfg(tiny, tmp_path, epochs_first_batch=3, max_batches=5, profile=profile,
               **({"fidelity": {"first_batch_brn_start": "pretrained"}} if profile == "caffe" else {}))
    Trainer(cfg, progress=False).run_all()
    cfg2 = cfg.replace(out=str(tmp_path / "interrupted"))
    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg2, progress=False).run_all(stop_after=stop)
    d = tmp_path / "interrupted" / cfg.experiment_name / "run0"
    assert (d / "checkpoint.pt").is_file() and not (d / "summary.json").exists()
    assert len(pd.read_csv(d / "metrics.csv").query("kind == 'batch'")) == stop
    Trainer(cfg2, progress=False).run_all()
    cols = ["batch", "iteration", "test_accuracy", "train_loss", "train_accuracy", "memory_patterns", "memory_bytes"]
    a = pd.read_csv(tmp_path / "results" / cfg.experiment_name / "run0" / "metrics.csv")[cols]
    b = pd.read_csv(d / "metrics.csv")[cols]
    pd.testing.assert_frame_equal(a, b)


def test_checkpoint_every_resumes_from_the_last_checkpoint(tiny, tmp_path, monkeypatch):
    """checkpoint_every=2: a crash in batch 3 loses batch 2 (trained after the last checkpoint); the
    resumed run drops its metrics row at once, trains it again and ends with the uninterrupted
    run's metrics."""
    cfg = _cfg(tiny, tmp_path, epochs_first_batch=3, max_batches=5, checkpoint_every=2)
    Trainer(cfg, progress=False).run_all()
    cfg2 = cfg.replace(out=str(tmp_path / "crashed"))
    d = tmp_path / "crashed" / cfg.experiment_name / "run0"
    real, saved = RunTrainer.train_batch, []

    def crash_at(k):
        def train_batch(self, b):
            if b == k:
                raise RuntimeError("power cut")
            return real(self, b)
        return train_batch

    monkeypatch.setattr(RunTrainer, "save_checkpoint", lambda self, f=RunTrainer.save_checkpoint: (
        saved.append(self.batches_done), f(self))[1])
    monkeypatch.setattr(RunTrainer, "train_batch", crash_at(3))
    with pytest.raises(RuntimeError, match="power cut"):
        Trainer(cfg2, progress=False).run_all()
    assert saved == [2] and len(pd.read_csv(d / "metrics.csv").query("kind == 'batch'")) == 3
    monkeypatch.setattr(RunTrainer, "train_batch", crash_at(2))   # resumes after batch 1, crashes at once
    with pytest.raises(RuntimeError, match="power cut"):
        Trainer(cfg2, progress=False).run_all()
    assert len(pd.read_csv(d / "metrics.csv").query("kind == 'batch'")) == 2   # batch 2's stale row is gone
    monkeypatch.setattr(RunTrainer, "train_batch", real)
    loads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **kw: (loads.append(kw.get("map_location")), real_load(*a, **kw))[1])
    Trainer(cfg2, progress=False).run_all()
    assert loads == ["cpu"]     # every part moves what it keeps to its device (a GPU's numpy-bound tensors)
    assert saved == [2, 4, 5]   # every second batch and the last one
    cols = ["batch", "iteration", "test_accuracy", "train_loss", "train_accuracy", "memory_patterns", "memory_bytes"]
    a = pd.read_csv(tmp_path / "results" / cfg.experiment_name / "run0" / "metrics.csv")[cols]
    pd.testing.assert_frame_equal(a, pd.read_csv(d / "metrics.csv")[cols])
    with pytest.raises(ConfigError, match="checkpoint_every: must be >= 1, got 0"):
        cfg.replace(checkpoint_every=0)


def test_bad_inputs_fail_before_training(tiny, tmp_path):
    with pytest.raises(ConfigError, match="weights: .*nope.pt: no such file"):
        Trainer(_cfg(tiny, tmp_path, weights=str(tmp_path / "nope.pt")), progress=False)
    with pytest.raises(Exception, match="no folder for NICv2-79 run 0"):
        Trainer(_cfg(tiny, tmp_path, scenario=79), progress=False)
    with pytest.raises(Exception, match=r"^dataset_root: /datasets: dataset root does not exist$"):
        Trainer(ExperimentConfig(runs=[0], out=str(tmp_path / "results")), progress=False)   # a config of {}
    assert not (tmp_path / "results").exists()


def test_learning_latent_replay_beats_naive_and_joint_beats_both(tiny, tmp_path):
    """On a tiny NICv2-391-shaped stream: joint > AR1*-free + latent replay > naive (last 5 evaluations)."""
    late = {}
    for method, replay in (("naive", "none"), ("ar1free", "latent"), ("joint", "none")):
        cfg = _cfg(tiny, tmp_path, method=method, replay=replay, max_batches=16)
        Trainer(cfg, progress=False).run_all()
        m = pd.read_csv(tmp_path / "results" / cfg.experiment_name / "run0" / "metrics.csv")
        late[method] = m["test_accuracy"].iloc[-5:].mean()
    assert late["ar1free"] > late["naive"] + 0.05, late
    assert late["joint"] > late["ar1free"] + 0.05, late


def test_ar1_star_tracks_only_moving_weights_and_damps_them(tiny, tmp_path):
    cfg = _cfg(tiny, tmp_path, method="ar1", epochs_first_batch=3, max_batches=3)
    trainer = Trainer(cfg, progress=False)
    rt = RunTrainer(cfg, 0, trainer.stream(0), trainer.device, tmp_path, progress=False)
    for b in range(3):
        rt.train_batch(b)
        rt.batches_done = b + 1
    imp = rt.method.importance
    # batch 0 trains every conv; afterwards only the 1x1 convs above conv5_4/dw can move
    assert set(imp.tau) == {"conv5_4_sep.conv.weight", "conv5_5_sep.conv.weight", "conv5_6_sep.conv.weight",
                            "conv6_sep.conv.weight"}
    assert float(imp.F["conv1.conv.weight"].max()) > 0  # importance from batch 0
    assert all(float(f.max()) <= cfg.method_params["f_max"] * (1 + 1e-6) for f in imp.F.values())


@pytest.mark.parametrize("sampling", ["buffer", "on_the_fly"])
def test_generative_latent_replay_runs_and_resumes(tiny, tmp_path, sampling):
    cfg = _cfg(tiny, tmp_path, replay="generative", epochs_first_batch=3, max_batches=4, glr={"sampling": sampling})
    Trainer(cfg, progress=False).run_all()
    m = pd.read_csv(tmp_path / "results" / cfg.experiment_name / "run0" / "metrics.csv")
    assert m["memory_patterns"].tolist() == [30, 36, 42, 48]  # + min(M/(b+1), 6 frames) new rows, M = 60
    assert (m["memory_bytes"] > 0).all()
    buffer_bytes = 48 * 512 * 2 * 2 * 4
    if sampling == "on_the_fly":  # only the per-class Gaussians and the slot labels are kept
        assert m["memory_bytes"].iloc[-1] < buffer_bytes
    cfg2 = cfg.replace(out=str(tmp_path / "interrupted"))
    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg2, progress=False).run_all(stop_after=2)
    Trainer(cfg2, progress=False).run_all()
    b = pd.read_csv(tmp_path / "interrupted" / cfg.experiment_name / "run0" / "metrics.csv")
    cols = ["test_accuracy", "train_loss", "memory_patterns"]
    pd.testing.assert_frame_equal(m[cols], b[cols])


def test_test_latents_in_a_file(tiny, tmp_path):
    """Issue #8: on the CPU the cached test latents live in an unnamed file (test_latents_in_file), read
    back chunk by chunk: the same latents and exactly the same metrics as keeping them in memory."""
    cols = ["batch", "iteration", "test_accuracy", "train_loss", "train_accuracy", "memory_patterns"]
    in_file = _cfg(tiny, tmp_path, epochs_first_batch=3, max_batches=3)
    in_memory = in_file.replace(out=str(tmp_path / "memory"), test_latents_in_file=False)
    a, b = (pd.read_csv(Path(c.out) / c.experiment_name / "run0" / "metrics.csv")[cols]
            for c in (in_file, in_memory) if Trainer(c, progress=False).run_all() is not None)
    pd.testing.assert_frame_equal(a, b)
    trainer = Trainer(in_file, progress=False)
    folder = trainer.frames.cache_file.parent
    before = sorted(folder.iterdir())
    rt = RunTrainer(in_file, 0, trainer.stream(0), torch.device("cpu"), tmp_path / "run",
                    progress=False)
    rt.train_batch(0)
    rt.batches_done = 1
    rt.train_batch(1)
    assert isinstance(rt.test_cache, RowFile) and sorted(folder.iterdir()) == before   # no name
    rt.model.eval()
    expected = rt._lower_pass(rt.lower, rt.test_frames)
    assert torch.equal(torch.cat([c.clone() for c in rt.test_cache.chunks(7)]), expected)
    assert rt.test_cache.nbytes == expected.nbytes
    rt.test_cache.close()


def test_test_latents_file_falls_back(tiny, tmp_path, monkeypatch, caplog):
    """A frame cache folder that cannot take the file (read-only, or full: RowFile reserves the whole
    size when it is made): the run folder takes it; neither, or a write that still fails: the latents
    stay in memory, with a warning, the same accuracy, and the failed file is closed."""
    import errno

    import latent_replay.engine.evaluation as train_module

    cfg = _cfg(tiny, tmp_path, epochs_first_batch=2, max_batches=2)
    trainer = Trainer(cfg, progress=False)
    refused, made = set(), []

    class PickyRowFile(RowFile):
        def __init__(self, n, template, directory):
            if Path(directory) in refused:
                raise OSError(errno.ENOSPC, "No space left on device", str(directory))
            super().__init__(n, template, directory)
            made.append((Path(directory), self))

    monkeypatch.setattr(train_module, "RowFile", PickyRowFile)

    def cached_after_batch_1(run_dir):
        rt = RunTrainer(cfg, 0, trainer.stream(0), torch.device("cpu"), run_dir,
                        progress=False)
        rt.train_batch(0)
        rt.batches_done = 1
        rt.train_batch(1)
        return rt

    reference = cached_after_batch_1(tmp_path / "a")
    assert made[-1][0] == trainer.frames.cache_file.parent and isinstance(reference.test_cache, RowFile)
    refused.add(trainer.frames.cache_file.parent)
    rt = cached_after_batch_1(tmp_path / "b")
    assert made[-1][0] == tmp_path / "b" and isinstance(rt.test_cache, RowFile)
    assert "no temporary file in" in caplog.text
    refused.add(tmp_path / "c")
    rt = cached_after_batch_1(tmp_path / "c")
    assert isinstance(rt.test_cache, torch.Tensor) and rt.evaluate() == reference.evaluate()

    def failing_write(self, rows):
        raise OSError(errno.EIO, "Input/output error")

    refused.clear()
    monkeypatch.setattr(PickyRowFile, "append", failing_write)
    rt = cached_after_batch_1(tmp_path / "d")
    assert isinstance(rt.test_cache, torch.Tensor) and rt.evaluate() == reference.evaluate()
    assert "writing them to a file failed ([Errno 5] Input/output error); keeping them in memory" in caplog.text
    assert made[-1][1]._file.closed


def test_test_latents_file_at_resume_and_end(tiny, tmp_path, monkeypatch):
    """After a resume the file is made by the first evaluation (inside inference mode): the same
    accuracy as in memory. train() closes it at the end of the run."""
    import latent_replay.engine.evaluation as train_module

    cfg = _cfg(tiny, tmp_path, epochs_first_batch=2, max_batches=2)
    trainer = Trainer(cfg, progress=False)
    rt = RunTrainer(cfg, 0, trainer.stream(0), torch.device("cpu"), tmp_path / "r",
                    progress=False)
    rt.train_batch(0)
    rt.batches_done = 1
    acc = rt.evaluate()
    assert isinstance(rt.test_cache, RowFile)
    rt._drop_test_cache()
    rt.cfg = cfg.replace(test_latents_in_file=False)
    assert rt.evaluate() == acc and isinstance(rt.test_cache, torch.Tensor)
    made = []

    class Recorded(RowFile):
        def __init__(self, *args):
            super().__init__(*args)
            made.append(self)

    monkeypatch.setattr(train_module, "RowFile", Recorded)
    rt = RunTrainer(cfg, 0, trainer.stream(0), torch.device("cpu"), tmp_path / "t",
                    progress=False)
    rt.train()
    assert len(made) == 1 and made[0]._file.closed and rt.test_cache is None


def test_speed_switches_keep_the_metrics(tiny, tmp_path):
    """Issue #8: the speed switches off (the plain path) give the metrics of the default fast path.

    ``channels_last`` is left on: it changes every convolution's rounding, which a randomly initialised
    network trained at a high rate amplifies over batches; its forward/backward equality is
    ``test_mobilenet.py::test_channels_last``."""
    cols = ["batch", "iteration", "test_accuracy", "train_loss", "train_accuracy", "memory_patterns", "memory_bytes"]
    fast = _cfg(tiny, tmp_path, epochs_first_batch=3, max_batches=3, inference_chunk=7)
    plain = fast.replace(out=str(tmp_path / "plain"), precompute_lower=False, cache_test_latents=False,
                         inference_chunk=1000, release_memory=False)
    a, b = (pd.read_csv(Path(c.out) / c.experiment_name / "run0" / "metrics.csv")[cols]
            for c in (fast, plain) if Trainer(c, progress=False).run_all() is not None)
    exact = ["batch", "iteration", "test_accuracy", "memory_patterns", "memory_bytes"]
    pd.testing.assert_frame_equal(a[exact], b[exact])
    # inference_chunk None (the default) is chosen per device: 16 frames per forward on the CPU
    trainer = Trainer(fast.replace(inference_chunk=None), progress=False)
    rt = RunTrainer(trainer.cfg, 0, trainer.stream(0), torch.device("cpu"), tmp_path)
    assert rt.chunk == 16 and RunTrainer(fast, 0, trainer.stream(0), torch.device("cpu"),
                                         tmp_path).chunk == 7
    # the lower part once per batch vs once per minibatch: the same eval-mode function, other batch sizes
    assert np.allclose(a["train_loss"], b["train_loss"], rtol=1e-3)


@pytest.mark.parametrize("method,replay", [("ar1", "native"), ("ar1free", "latent")])
def test_recomputing_block_outputs_keeps_every_metric(tiny, tmp_path, method, replay):
    """``recompute_bn_relu`` changes what the backward pass keeps, not what it computes: the very same
    metrics, training loss included, whole network (native replay, AR1* importance) or upper part."""
    on = _cfg(tiny, tmp_path, method=method, replay=replay, epochs_first_batch=2, epochs=2, max_batches=3,
              recompute_bn_relu=True)
    off = on.replace(out=str(tmp_path / "off"), recompute_bn_relu=False)
    a, b = (pd.read_csv(Path(c.out) / c.experiment_name / "run0" / "metrics.csv")
            for c in (on, off) if Trainer(c, progress=False).run_all() is not None)
    cols = ["batch", "iteration", "test_accuracy", "train_loss", "train_accuracy", "memory_patterns"]
    assert len(a) >= 3
    pd.testing.assert_frame_equal(a[cols], b[cols], check_exact=True)


def test_metrics_csv_is_written_as_pandas_would(tmp_path):
    """write_metrics uses the csv module (the trainer does not import pandas): the very bytes of
    pandas' to_csv with the suite's float format, missing values included."""
    from latent_replay.results import FLOAT_FORMAT, METRIC_COLUMNS, write_metrics

    rows = [dict(batch=0, kind="iteration_1", iteration=1, test_accuracy=0.123456789, train_loss=float("nan"),
                 train_accuracy=1.0, train_seconds=12345678.9, eval_seconds=np.float64(1e-7), new_frames=300,
                 classes_seen=10, memory_patterns=0, memory_bytes=196608000),
            dict(batch=1, kind="batch", iteration=15, test_accuracy=0.5, train_loss=2.25, train_accuracy=0.0,
                 train_seconds=0.1, eval_seconds=3.0, new_frames=300, classes_seen=11, memory_patterns=1500,
                 memory_bytes=196608000)]
    write_metrics(tmp_path / "m.csv", rows)
    expected = pd.DataFrame(rows, columns=list(METRIC_COLUMNS)).to_csv(index=False, float_format=FLOAT_FORMAT)
    assert (tmp_path / "m.csv").read_text() == expected
    write_metrics(tmp_path / "empty.csv", [])
    assert (tmp_path / "empty.csv").read_text() == ",".join(METRIC_COLUMNS) + "\n"


@pytest.mark.parametrize("dtype", ["float32", "uint8"])
def test_latent_replay_at_data_stores_preprocessed_frames(tiny, tmp_path, dtype):
    """Latent replay at ``data`` (spec §4.5: the whole network trains) keeps the preprocessed frames
    and trains on them next to the new frames, which arrive raw; it learns like native replay does."""
    cfg = _cfg(tiny, tmp_path, latent_layer="data", latent_dtype=dtype, epochs_first_batch=2, max_batches=3)
    Trainer(cfg, progress=False).run_all()
    m = pd.read_csv(Path(cfg.out) / cfg.experiment_name / "run0" / "metrics.csv").query("kind == 'batch'")
    assert m["batch"].tolist() == [0, 1, 2] and (m["memory_patterns"] > 0).all()
    per_pattern = 3 * 32 * 32 * (4 if dtype == "float32" else 1)
    assert (m["memory_bytes"] >= m["memory_patterns"] * per_pattern).all()
    assert (m["memory_bytes"] < m["memory_patterns"] * per_pattern + 1024).all()
    native = cfg.replace(out=str(tmp_path / "native"), replay="native", latent_dtype="float32")
    Trainer(native, progress=False).run_all()
    n = pd.read_csv(Path(native.out) / native.experiment_name / "run0" / "metrics.csv").query("kind == 'batch'")
    assert n["memory_patterns"].tolist() == m["memory_patterns"].tolist()
    if dtype == "float32":   # the same patterns, stored preprocessed instead of raw: the same learning
        assert np.allclose(m["test_accuracy"], n["test_accuracy"], atol=0.05)


def test_caffe_batch0_latent_pass_updates_every_brn_layer(tiny, tmp_path):
    """B11 as in the original: after batch 0 a training-mode forward of the whole network over the
    padded batch reads the latents, so every BRN layer, above the latent layer too, gets as many moment
    updates as the batch's iterations plus that pass's minibatches."""
    cfg = _cfg(tiny, tmp_path, profile="caffe", epochs_first_batch=2, max_batches=1,
               fidelity={"first_batch_brn_start": "pretrained"})
    trainer = Trainer(cfg, progress=False)
    rt = RunTrainer(cfg, 0, trainer.stream(0), trainer.device, tmp_path, progress=False)
    rt.train_batch(0)
    lam = cfg.brn_first_batch.moving_fraction
    n = int(round(math.log(1 - (1 - lam) * float(rt.model.conv1.brn.S)) / math.log(lam)))
    iterations = rt.global_iter
    assert n > iterations                        # the extra pass counted in the lowest layer
    for name, brn in rt.model.brn_layers().items():
        assert float(brn.S) == pytest.approx(float(rt.model.conv1.brn.S), rel=1e-6), name


@pytest.mark.parametrize("replay, lower_moves", [("none", True), ("native", True), ("latent", False)])
def test_cwr_backbone_runs_training_mode_brn_unless_below_latent_replay(tiny, tmp_path, replay, lower_moves):
    """Spec §7.3: CWR*'s backbone has learning rate 0 but its BRN layers run in training mode and their
    moments keep moving; only below a latent replay layer (here pool6) does the fixed profile freeze them
    in eval mode (B12). The backbone's weights never move."""
    cfg = _cfg(tiny, tmp_path, method="cwr", replay=replay, latent_layer="pool6", epochs_first_batch=2, max_batches=2)
    trainer = Trainer(cfg, progress=False)
    rt = RunTrainer(cfg, 0, trainer.stream(0), trainer.device, tmp_path, progress=False)
    rt.train_batch(0)
    rt.batches_done = 1
    before = {k: v.clone() for k, v in rt.model.state_dict().items()}
    modes = []
    rt.model.conv1.register_forward_hook(lambda m, i, o: modes.append(m.training))
    rt.train_batch(1)
    after = rt.model.state_dict()
    # the running estimates (accumulator / normaliser; batch 1 rescales both to the past weight)
    brn = [k[:-len(".A_mu")] for k in before if k.endswith("brn.A_mu")]
    moved = [k for k in brn if not all(torch.allclose(before[f"{k}.{a}"] / before[f"{k}.S"],
                                                      after[f"{k}.{a}"] / after[f"{k}.S"], rtol=1e-6, atol=0)
                                       for a in ("A_mu", "A_var"))]
    assert len(brn) == 27 and ((len(moved) == len(brn)) if lower_moves else not moved), moved
    assert modes and any(modes) is lower_moves          # training forwards in training mode (evaluation: eval)
    weights = [k for k in before if k.endswith(".weight") and not k.startswith("mid_fc7")]
    assert weights and all(torch.equal(before[k], after[k]) for k in weights)
    assert rt.lower_frozen_eval is not lower_moves


def test_preprocessing_follows_the_weights_unless_forced(tiny, tmp_path, caplog):
    """B15: "auto" (the default) uses what the loaded weights expect: ImageNet mean/std for pytorchcv's
    (recorded in an imported checkpoint), Caffe BGR means for random weights; a forced mismatch warns."""
    from latent_replay.data.core50 import preprocess
    from latent_replay.models import MobileNetV1
    from latent_replay.models.weights import save_checkpoint

    weights = save_checkpoint(tmp_path / "w.pt", MobileNetV1(fc_bias=False), source="pytorchcv:mobilenet_w1",
                              preprocessing="imagenet")
    assert ExperimentConfig().preprocessing == "auto"
    for kw, expected, warned in ((dict(weights=str(weights)), "imagenet", False), ({}, "caffe", False),
                                 (dict(weights=str(weights), preprocessing="caffe"), "caffe", True)):
        cfg = _cfg(tiny, tmp_path, max_batches=1, **kw)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="latent_replay.train"):
            trainer = Trainer(cfg, progress=False)
        assert ("expect imagenet preprocessing but the config uses caffe" in caplog.text) is warned
        rt = RunTrainer(cfg, 0, trainer.stream(0), trainer.device, tmp_path, progress=False)
        assert rt.preprocessing == expected
        frames = rt.test_frames[:2]
        assert torch.equal(rt._pre(frames), preprocess(frames, expected, channels_last=cfg.channels_last))


@pytest.mark.parametrize("count_memory", [True, False])
def test_cwr_counts_with_and_without_the_memory_labels(tiny, tmp_path, count_memory):
    """B9: the original counts every memory label in n_c at every batch; the switch counts new patterns only."""
    cfg = _cfg(tiny, tmp_path, method="cwr", replay="native", epochs_first_batch=1, max_batches=2,
               fidelity={"cwr_count_memory": count_memory, "cwr_mean_shift": "per_feature"})
    trainer = Trainer(cfg, progress=False)
    rt = RunTrainer(cfg, 0, trainer.stream(0), trainer.device, tmp_path, progress=False)
    rt.train_batch(0)
    after0 = rt.method.head.counts.clone()
    memory_labels = rt.memory.labels.clone()
    rt.batches_done = 1
    rt.train_batch(1)
    _, labels1 = rt._batch_patterns(1)
    n = 50
    new = torch.bincount(torch.as_tensor(labels1), minlength=n).double()
    mem = torch.bincount(memory_labels.cpu(), minlength=n).double()
    assert torch.equal(after0, torch.bincount(torch.as_tensor(rt._batch_patterns(0)[1]), minlength=n).double())
    assert torch.equal(rt.method.head.counts.cpu(), after0 + new + (mem if count_memory else 0))
    assert rt.method.head.mean_shift == "per_feature"


def test_command_line_overrides_do_not_rewrite_the_prepared_config(tiny, tmp_path):
    """``run_experiment.sh --runs 0`` must not narrow the experiment's config for later calls: the
    prepared config is kept (device too); runs trained beyond it are added to its ``runs``."""
    cfg = _cfg(tiny, tmp_path, runs=[0, 1], device="auto", epochs_first_batch=1, max_batches=1)
    exp = Path(cfg.out) / cfg.experiment_name
    exp.mkdir(parents=True)
    cfg.save(exp / "exp_configuration.json")
    before = (exp / "exp_configuration.json").read_bytes()
    Trainer(cfg.replace(runs=[0], device="cpu"), progress=False).run_all()
    assert (exp / "exp_configuration.json").read_bytes() == before
    narrowed = cfg.replace(runs=[1])
    narrowed.save(exp / "exp_configuration.json")
    Trainer(cfg.replace(runs=[0]), progress=False).run_all()
    assert ExperimentConfig.load(exp / "exp_configuration.json").runs == [1, 0]     # appended
    # an execution key changed in the config file itself is recorded; the runs are kept (in their order)
    (exp / "exp_configuration.json").write_text(cfg.replace(runs=[1, 0]).to_json())
    Trainer(cfg.replace(runs=[0], inference_chunk=5), progress=False).run_all()
    saved = ExperimentConfig.load(exp / "exp_configuration.json")
    assert saved.runs == [1, 0] and saved.inference_chunk == 5
    # a file that is not a config is replaced
    (exp / "exp_configuration.json").write_text("{")
    Trainer(cfg.replace(runs=[0]), progress=False).run_all()
    assert ExperimentConfig.load(exp / "exp_configuration.json").runs == [0]
    # another experiment's config under the same name: refused while runs hold results (which it would
    # mislabel), even when it would train nothing; with --force it replaces them and stale summaries go
    other = cfg.replace(lr=0.5, name=cfg.experiment_name, runs=[0])
    before = (exp / "exp_configuration.json").read_bytes()
    with pytest.raises(ConfigError, match=r"exp_configuration.json: the experiment's results \(run0\) were "
                                          r"trained with another configuration \(changed: schedule.lr\)"):
        Trainer(other, progress=False).run_all()
    assert (exp / "exp_configuration.json").read_bytes() == before
    # the same training written differently is not refused: another spelling of the dataset root, the
    # generated name written out, preprocessing "auto" for what it resolves to (caffe, random weights)
    same = cfg.replace(runs=[0], name=cfg.experiment_name, preprocessing="caffe",
                       dataset_root=str(Path(cfg.dataset_root).parent / "." / Path(cfg.dataset_root).name))
    assert Trainer(same, progress=False).run_all() == []          # run 0 is finished: nothing to train
    Trainer(other, progress=False).run_all(force=True)
    assert ExperimentConfig.load(exp / "exp_configuration.json").lr == 0.5


def test_a_checkpoint_resumes_only_under_the_switches_it_was_written_with(tiny, tmp_path, caplog):
    """The config keeps only a profile's overrides, so a default changed between versions would pass the
    config comparison: the checkpoint records every switch in force, and another set is refused."""
    cfg = _cfg(tiny, tmp_path, method="ar1", epochs_first_batch=1, max_batches=1)
    Trainer(cfg, progress=False).run_all()
    d = Path(cfg.out) / cfg.experiment_name / "run0"
    (d / "summary.json").unlink()
    state = torch.load(d / "checkpoint.pt", weights_only=False)
    assert state["fidelity"] == cfg.describe_fidelity() and state["preprocessing"] == "caffe"
    state["preprocessing"] = "imagenet"                         # what 'auto' resolved to is compared too
    torch.save(state, d / "checkpoint.pt")
    with pytest.raises(ConfigError, match=r"checkpoint.pt: the checkpoint was written with another configuration "
                                          r"\(changed: model.preprocessing\): use --force to start the run again$"):
        Trainer(cfg, progress=False).run_all()
    state["preprocessing"] = "caffe"
    state["fidelity"]["importance_from"] = "gradients"          # as the default was before
    torch.save(state, d / "checkpoint.pt")
    with pytest.raises(ConfigError, match=r"checkpoint.pt: the checkpoint was written with another configuration "
                                          r"\(changed: fidelity.importance_from; a fidelity.\* default may have "
                                          r"changed between versions\): use --force to start the run again$"):
        Trainer(cfg, progress=False).run_all()
    # a key changed in the experiment's config file is named too
    cfg.replace(lr=0.5).save(d.parent / "exp_configuration.json")
    with pytest.raises(ConfigError, match=r"\(changed: fidelity.importance_from, schedule.lr;"):
        Trainer(cfg.replace(lr=0.5), progress=False).run_all()
    cfg.save(d.parent / "exp_configuration.json")
    del state["fidelity"]                                         # written before the switches were recorded
    torch.save(state, d / "checkpoint.pt")
    with caplog.at_level(logging.WARNING, logger="latent_replay.train"):
        Trainer(cfg.replace(max_batches=2), progress=False).run_all()
    assert "written before checkpoints recorded every fidelity switch" in caplog.text


def test_finished_runs_of_another_configuration_are_neither_skipped_nor_averaged(tiny, tmp_path, caplog):
    """The experiment's config file replaced with other training settings (by hand, or by an older
    prepare --force): its finished runs are not done under it (refused, naming them, unless --force), and
    summary.csv averages only the runs trained with it."""
    cfg = _cfg(tiny, tmp_path, epochs_first_batch=1, epochs=1, max_batches=2, runs=[0, 1])
    Trainer(cfg, progress=False).run_all()
    exp = Path(cfg.out) / cfg.experiment_name
    edited = cfg.replace(lr=0.05)
    edited.save(exp / "exp_configuration.json")
    results = {p: p.read_bytes() for p in sorted(exp.rglob("*")) if p.is_file()}
    with pytest.raises(ConfigError, match=rf"^{exp / 'run0'} \(and run1\): finished with another configuration "
                                          r"than this one \(changed: schedule.lr\); use --force"):
        Trainer(edited, progress=False).run_all()
    with pytest.raises(ConfigError, match=r"run1: finished with another"):   # refused before the config is written
        Trainer(edited.replace(runs=[1], inference_chunk=3), progress=False).run_all()
    assert {p: p.read_bytes() for p in results} == results
    # --force for run 0 only: run 1 keeps the former results, which summary.csv leaves out
    with caplog.at_level(logging.WARNING, logger="latent_replay.results"):
        Trainer(edited.replace(runs=[0]), progress=False).run_all(force=True)
    assert f"{exp / 'run1'}: left out of summary.csv: trained with another configuration (changed: schedule.lr)" in caplog.text
    summary = pd.read_csv(exp / "summary.csv")
    run0 = pd.read_csv(exp / "run0" / "metrics.csv")
    assert (summary["runs"] == 1).all()
    assert summary["test_accuracy_mean"].tolist() == pytest.approx(run0["test_accuracy"].tolist(), abs=1e-6)
    assert json.loads((exp / "run0" / "summary.json").read_text())["config"]["schedule"]["lr"] == 0.05
    # what preprocessing 'auto' resolves to comes from the weights: the trainer names it and the way out
    summary = json.loads((exp / "run0" / "summary.json").read_text())
    (exp / "run0" / "summary.json").write_text(json.dumps({**summary, "preprocessing": "imagenet"}))
    with pytest.raises(ConfigError, match=rf"^{exp / 'run0'}: finished with imagenet preprocessing, but this "
                                          r"configuration's \(auto, weights None\) is caffe; set preprocessing to "
                                          r"imagenet to keep it, or use --force to train it again$"):
        Trainer(edited.replace(runs=[0]), progress=False).run_all()
    (exp / "run0" / "summary.json").write_text(json.dumps(summary))
    # nothing trained with it: no summary.csv (not the former one)
    edited.replace(lr=0.5).save(exp / "exp_configuration.json")
    from latent_replay.results import aggregate_runs
    assert aggregate_runs(exp) is None and not (exp / "summary.csv").exists()


def test_unreadable_checkpoints_are_one_line_errors_and_nothing_is_overwritten(tiny, tmp_path):
    cfg = _cfg(tiny, tmp_path, epochs_first_batch=1, max_batches=1)
    Trainer(cfg, progress=False).run_all()
    d = Path(cfg.out) / cfg.experiment_name / "run0"
    (d / "summary.json").unlink()                     # unfinished: the next call resumes from the checkpoint
    metrics = (d / "metrics.csv").read_bytes()
    for content in (b"", b"\x00garbage", b'{"json": 1}', (d / "checkpoint.pt").read_bytes()[:300], None):
        (d / "checkpoint.pt").unlink(missing_ok=True)
        if content is None:
            (d / "checkpoint.pt").mkdir()
        else:
            (d / "checkpoint.pt").write_bytes(content)
        with pytest.raises(ConfigError) as err:
            Trainer(cfg, progress=False).run_all()
        msg = str(err.value)
        assert msg.startswith(f"{d / 'checkpoint.pt'}: cannot read the run checkpoint (") and "\n" not in msg
        assert msg.endswith("delete it, or use --force, to train the run again")
        assert (d / "metrics.csv").read_bytes() == metrics
        if content is None:
            (d / "checkpoint.pt").rmdir()


@pytest.mark.parametrize("pad", [False, True])
def test_epoch0_latents_are_stored_with_their_own_labels(tiny, tmp_path, pad):
    """B11's epoch-0 latents come in the shuffled order of the first epoch; the labels stored with them
    must be theirs, with or without Caffe's padding. At layer ``data`` a latent is the preprocessed
    frame, so every stored row can be traced back to its frame and label."""
    cfg = _cfg(tiny, tmp_path, latent_layer="data", epochs_first_batch=1, epochs=1, max_batches=2,
               fidelity={"stored_latents": "train_epoch0", "pad_training_like_caffe": pad})
    trainer = Trainer(cfg, progress=False)
    rt = RunTrainer(cfg, 0, trainer.stream(0), trainer.device, tmp_path, progress=False)
    for b in range(2):
        rt.train_batch(b)
        rt.batches_done = b + 1
        ids = [i for e in rt.stream.batches[: b + 1] for i in e.ids]
        labels = np.concatenate([e.labels for e in rt.stream.batches[: b + 1]])
        frames = rt._pre(torch.from_numpy(rt.stream.inputs(ids))).flatten(1)
        stored, stored_labels = rt.memory.get(np.arange(len(rt.memory)))
        assert len(rt.memory) > 0
        for row, label in zip(stored.flatten(1), stored_labels.tolist()):
            match = (frames == row).all(1).nonzero().flatten().tolist()
            assert match and {int(labels[i]) for i in match} == {label}


def test_a_run_stopped_by_max_batches_goes_on_when_asked_for_more(tiny, tmp_path):
    """max_batches 2, then 3: the run continues from its checkpoint (not 'already finished') and ends as
    a 3-batch run trained in one go; summary.json says how long the scenario is."""
    whole = _cfg(tiny, tmp_path, epochs_first_batch=2, max_batches=3)
    Trainer(whole, progress=False).run_all()
    staged = whole.replace(out=str(tmp_path / "staged"))
    Trainer(staged.replace(max_batches=2), progress=False).run_all()
    d = Path(staged.out) / staged.experiment_name / "run0"
    first = json.loads((d / "summary.json").read_text())
    assert first["batches"] == 2 and first["scenario_batches"] == len(Trainer(staged, progress=False).scenarios[0])
    assert len(Trainer(staged, progress=False).run_all()) == 1
    assert json.loads((d / "summary.json").read_text())["batches"] == 3
    assert Trainer(staged.replace(max_batches=2), progress=False).run_all() == []     # 3 >= 2: finished
    cols = ["batch", "iteration", "test_accuracy", "train_loss", "train_accuracy", "memory_patterns"]
    a = pd.read_csv(Path(whole.out) / whole.experiment_name / "run0" / "metrics.csv")[cols]
    pd.testing.assert_frame_equal(a, pd.read_csv(d / "metrics.csv")[cols])


def test_batch0_is_evaluated_before_the_memory_pass_and_timed_once(tiny, tmp_path, monkeypatch):
    """As in the original, batch 0 is evaluated at the end of its training, before the memory is filled
    (B11's extra pass moves every BRN layer's statistics, which the logged accuracy must not see; the
    memory fields still show the filled memory). With the iteration-1 evaluation (B7) the two rows'
    training and evaluation seconds add up to the batch's time: nothing is counted twice."""
    cfg = _cfg(tiny, tmp_path, profile="caffe", epochs_first_batch=2, max_batches=1,
               fidelity={"first_batch_brn_start": "pretrained"})
    trainer = Trainer(cfg, progress=False)
    rt = RunTrainer(cfg, 0, trainer.stream(0), trainer.device, tmp_path, progress=False)
    calls = []
    real_update = rt._update_memory

    def evaluate():
        calls.append(("evaluate", float(rt.model.conv6_sep.brn.S)))
        time.sleep(0.4)
        return 0.5

    def update(*args):
        calls.append(("memory", float(rt.model.conv6_sep.brn.S)))
        return real_update(*args)

    monkeypatch.setattr(rt, "evaluate", evaluate)
    monkeypatch.setattr(rt, "_update_memory", update)
    t0 = time.perf_counter()
    rt.train_batch(0)
    wall = time.perf_counter() - t0
    assert [c for c, _ in calls] == ["evaluate", "evaluate", "memory"]
    assert calls[1][1] == calls[2][1]                   # evaluated with the statistics training left
    assert float(rt.model.conv6_sep.brn.S) > calls[2][1]   # which the memory pass then moved
    it1, batch = rt.rows
    assert (it1["kind"], batch["kind"]) == ("iteration_1", "batch")
    assert batch["memory_patterns"] == len(rt.memory) > 0 and batch["memory_bytes"] == rt.memory.nbytes
    counted = sum(r["train_seconds"] + r["eval_seconds"] for r in rt.rows)
    assert counted <= wall + 0.05 and counted > wall - 0.3


def test_cuda_numerics_switch_sets_the_backends(monkeypatch):
    """cuda_reproducible (applied when a run's device is CUDA): IEEE float32 and deterministic cuDNN
    algorithms, or TF32 and the autotuner. The flags are process-wide; checked here without a GPU."""
    import latent_replay.engine.run as T
    from latent_replay.utils import configure_cuda

    calls = []
    monkeypatch.setattr(T, "configure_cuda", calls.append)
    T.prepare_device(torch.device("cpu"), ExperimentConfig())
    T.prepare_device(torch.device("cuda"), ExperimentConfig(cuda_reproducible=False))
    T.prepare_device(torch.device("cuda"), ExperimentConfig())
    assert calls == [False, True]      # what RunTrainer does for its device

    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    before = (cudnn.conv.fp32_precision, matmul.fp32_precision, cudnn.deterministic, cudnn.benchmark)
    try:
        assert ExperimentConfig().cuda_reproducible is True
        configure_cuda(True)
        assert (cudnn.conv.fp32_precision, matmul.fp32_precision, cudnn.deterministic, cudnn.benchmark) == \
            ("ieee", "ieee", True, False)
        configure_cuda(False)
        assert (cudnn.conv.fp32_precision, matmul.fp32_precision, cudnn.deterministic, cudnn.benchmark) == \
            ("tf32", "tf32", False, True)
    finally:
        cudnn.conv.fp32_precision, matmul.fp32_precision, cudnn.deterministic, cudnn.benchmark = before


def test_test_frames_resident_as_on_a_gpu_give_the_same_metrics_and_are_dropped_once_cached(tiny, tmp_path):
    """On a GPU the test frames are kept on the device until their latents are cached (the CPU reads
    them when needed): the same path, run here on CPU tensors, gives the same metrics and lets them go."""
    cfg = _cfg(tiny, tmp_path, epochs_first_batch=2, epochs=1, max_batches=3, test_latents_in_file=False)
    trainer = Trainer(cfg, progress=False)
    rows = {}
    for resident in (False, True):
        d = tmp_path / f"resident-{resident}"
        d.mkdir()
        rt = RunTrainer(cfg, 0, trainer.stream(0), trainer.device, d, False)
        if resident:
            rt._test_frames = rt._read_test_frames()       # what the constructor does on a GPU
        rt.train()
        rows[resident] = [(r["test_accuracy"], r["train_loss"], r["train_accuracy"]) for r in rt.rows]
        assert rt._test_frames is None
    assert rows[True] == rows[False] and len(rows[True]) == 3


def test_filelists_default_to_the_dataset_roots_then_the_shipped_ones(tiny, tmp_path):
    """Without a ``filelists`` key the trainer reads ``<dataset_root>/batch_filelists`` when present (else
    the shipped official lists, tests/test_shipped_filelists.py)."""
    root = tmp_path / "core50"
    root.mkdir()
    for entry in (tiny / "core50").iterdir():
        (root / entry.name).symlink_to(entry)
    (root / "batch_filelists").symlink_to(tiny / "lists")
    cfg = _cfg(tiny, tmp_path, dataset_root=str(root), filelists=None)
    assert ExperimentConfig.from_dict(cfg.to_dict()).filelists is None
    trainer = Trainer(cfg, progress=False)
    assert Path(trainer.scenarios[0].source) == root.resolve() / "batch_filelists" / "NICv2_391" / "run0"


def test_caffe_counts_tied_scores_as_misses(tiny, tmp_path):
    """At iteration 1 CWR*'s reset classifier (W = 0) scores every class alike: Caffe's Accuracy layer
    logs 0 % training accuracy there, argmax the share of class 0 in the minibatch."""
    caffe = _cfg(tiny, tmp_path, method="cwr", replay="none", profile="caffe", max_batches=1, epochs_first_batch=1)
    argmax = caffe.replace(out=str(tmp_path / "argmax"), fidelity={"count_ties_as_miss": False})
    first = {}
    for c in (caffe, argmax):
        Trainer(c, progress=False).run_all()
        m = pd.read_csv(Path(c.out) / c.experiment_name / "run0" / "metrics.csv")
        first[c.fidelity.count_ties_as_miss] = m[m["kind"] == "iteration_1"]["train_accuracy"].item()
    assert first[True] == 0.0 and first[False] > 0.0


def _as_schema1(config: dict) -> dict:
    """A schema-2 config as schema 1 wrote it: flat, every key, AR1*'s constants as ar1_* keys."""
    cfg = ExperimentConfig.from_dict(config)
    flat = {**cfg.to_flat(), "schema_version": 1}
    if cfg.method == "ar1":
        flat.update({f"ar1_{k}": v for k, v in flat.pop("method_params").items()})
    return flat


def test_a_schema1_experiment_folder_resumes_and_aggregates(tiny, tmp_path):
    """An experiment folder written before configs had sections: its config, a finished run's summary and
    an interrupted run's checkpoint all record schema 1. The interrupted run resumes to the metrics of an
    uninterrupted one, the finished one is neither trained again nor left out of summary.csv, and the
    config is written in schema 2 only when written again (an execution key changed)."""
    cfg = _cfg(tiny, tmp_path, method="ar1", runs=[0, 1], max_batches=3, epochs_first_batch=2,
               method_params={"xi": 1e-6})
    Trainer(cfg, progress=False).run_all()
    done = pd.read_csv(tmp_path / "results" / cfg.experiment_name / "run1" / "metrics.csv")
    old = cfg.replace(out=str(tmp_path / "old"))
    with pytest.raises(KeyboardInterrupt):
        Trainer(old.replace(runs=[0]), progress=False).run_all(stop_after=1)
    Trainer(old.replace(runs=[1]), progress=False).run_all()
    exp = tmp_path / "old" / cfg.experiment_name
    path = exp / "exp_configuration.json"
    path.write_text(json.dumps(_as_schema1(json.loads(path.read_text()))))
    summary = json.loads((exp / "run1" / "summary.json").read_text())
    (exp / "run1" / "summary.json").write_text(json.dumps({**summary, "config": _as_schema1(summary["config"])}))
    state = torch.load(exp / "run0" / "checkpoint.pt", weights_only=False)
    state["config"] = _as_schema1(state["config"])
    torch.save(state, exp / "run0" / "checkpoint.pt")
    assert "ar1_xi" in json.loads(path.read_text())
    resumed = ExperimentConfig.load(path)
    assert resumed == old and resumed.method_params["xi"] == 1e-6
    Trainer(resumed, progress=False).run_all()
    cols = ["batch", "test_accuracy", "train_loss", "memory_patterns"]
    for run in (0, 1):
        a = pd.read_csv(tmp_path / "results" / cfg.experiment_name / f"run{run}" / "metrics.csv")[cols]
        pd.testing.assert_frame_equal(a, pd.read_csv(exp / f"run{run}" / "metrics.csv")[cols])
    assert pd.read_csv(exp / "run1" / "metrics.csv")[cols].equals(done[cols])
    assert (pd.read_csv(exp / "summary.csv")["runs"] == 2).all()
    assert json.loads(path.read_text())["schema_version"] == 1   # read, not rewritten
    (plotted,) = load_experiments([tmp_path / "old"])             # and the figures draw both runs
    assert plotted.finished and [r.number for r in plotted.runs] == [0, 1] and not plotted.left_out
    Trainer(resumed.replace(checkpoint_every=2), progress=False)._record_config()
    assert json.loads(path.read_text())["schema_version"] == 2   # written again (an execution key changed): schema 2
