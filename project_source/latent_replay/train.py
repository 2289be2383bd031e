"""The trainer: for run in runs: for batch in scenario: train → evaluate → log → checkpoint.

Spec §5 (procedure), §6 (methods via :mod:`latent_replay.methods`), §7 (replay via
:mod:`latent_replay.replay`), §8 (evaluation and logs), with every behaviour of spec §11 behind a
:class:`~latent_replay.config.Fidelity` switch.

One training iteration of an incremental batch (b > 0): k_new new patterns and k_mem memory patterns
(k_new = round(128·n/(n+M)), never hard-coded). The network is split at the *split layer*: the latent
layer for latent replay, ``pool6`` for CWR* (only the classifier learns), ``data`` otherwise. The lower
part is frozen and runs without gradients: below a latent replay layer in eval mode (or training-mode
BRN with drifting moments under ``lower_drift``); CWR*'s backbone without latent replay always in
training mode, its BRN moments moving as in the original. Its output for the new patterns is
concatenated with the replayed latents and the upper part learns. Batch 0 trains the whole network.
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from . import __version__
from .config import INFERENCE_CHUNK_CPU, INFERENCE_CHUNK_GPU, RESUMABLE_CHANGES, ConfigError, ExperimentConfig
from .data.core50 import DatasetError, FrameStore, load_frames, open_root, preprocess
from .data.filelists import default_filelists_root
from .data.nicv2 import Scenario, load_scenario
from .methods import DECAY_MULTS, make_method
from .models import BRNConfig, MobileNetV1, param_names_by_kind, recompute_bn_relu, split
from .models.weights import load_weights
from .replay import ExperienceData, make_replay
from .results import (CONFIG_FILE, aggregate_runs, read_summary, run_dir, run_dirs, stale_runs, write_json,
                      write_metrics)
from .rowfile import RowFile
from .utils import configure_cuda, release_free_memory

log = logging.getLogger(__name__)
CHECKPOINT = "checkpoint.pt"
#: Test-set latents are cached only below this size.
TEST_CACHE_LIMIT_BYTES = 2 * 1024 ** 3


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: 'cuda' requested but no CUDA device is available (use auto or cpu)")
    return torch.device(name)


# ---------------------------------------------------------------------------------------- schedule
def pad_indices(n: int, k: int) -> np.ndarray:
    """Caffe padding: prepend the first (k - n mod k) items so the length is a multiple of k. Where the
    list is shorter than the padding it needs (a 15-frame test list, 100 per test minibatch), the
    prepended items cycle through it (the original indexes past its end and fails)."""
    extra = (-n) % k
    return np.concatenate([np.arange(extra) % max(n, 1), np.arange(n)]).astype(np.int64)


def pad_random(n: int, k: int, perm) -> np.ndarray:
    """The fixed profile's padding: every index once, then (k - n mod k) more drawn at random, distinct
    (the first ones of a fresh permutation ``perm(n)``; further permutations where the padding is longer
    than the list), so the length is a multiple of k."""
    extra = (-n) % k
    fill = [perm(n) for _ in range(math.ceil(extra / n))] if n and extra else []
    return np.concatenate([np.arange(n), *fill]).astype(np.int64)[:n + extra]


@dataclass
class Schedule:
    """The minibatch plan of one batch (spec §5.2-5.3): iteration ``it`` takes chunk ``it mod chunks``
    of the padded, shuffled new patterns (``k_new`` rows) and of the padded, shuffled memory (``k_mem``
    rows), so every minibatch holds exactly ``k_new + k_mem`` rows."""

    k_new: int
    k_mem: int
    iters_per_epoch: int
    iterations: int
    new_order: np.ndarray   # indices into the batch's patterns (padded, shuffled)
    mem_order: np.ndarray   # indices into the memory (padded, shuffled)

    def _rows(self, order: np.ndarray, k: int, it: int) -> np.ndarray:
        chunks = math.ceil(len(order) / k)
        j = it % chunks
        return order[j * k:(j + 1) * k]

    def new_rows(self, it: int) -> np.ndarray:
        return self._rows(self.new_order, self.k_new, it)

    def mem_rows(self, it: int) -> np.ndarray:
        return self._rows(self.mem_order, self.k_mem, it) if self.k_mem else self.mem_order[:0]

    @property
    def new_chunks(self) -> int:
        return math.ceil(len(self.new_order) / self.k_new)


def plan_batch(n_new: int, n_mem: int, *, minibatch: int, epochs: float, pad: bool, count_memory: bool,
               perm) -> Schedule:
    """Split, padding, shuffling and iteration count for ``n_new`` new and ``n_mem`` memory patterns.

    Both profiles run the original's count, ceil(count / minibatch) iterations per epoch with count =
    n_new + n_mem (``count_memory`` false, only for the original's replay-when-none bug B1: n_new), and
    pad the new patterns to a multiple of k_new and the memory to a multiple of k_mem, so that every
    minibatch is full. They differ in the padding rows: ``pad`` (B6, the caffe profile) prepends the
    first ones; otherwise they are distinct rows drawn at random (:func:`pad_random`). The padded lists
    are shuffled once per batch (spec §5.3) with ``perm(n)``, a permutation of n.

    An epoch visits every new pattern when it has at least as many iterations as the padded new list
    has chunks (every incremental batch of the NICv2 lists); where rounding k_new down makes one chunk
    more than that (tiny batches), the chunks cycle across epoch boundaries as in the original, so each
    pattern is visited in ``iterations`` consecutive chunks, i.e. floor or ceil of iterations / chunks
    times per batch.
    """
    # round half to even, as the original's np.round (spec §5.2): 128·5/256 = 2.5 -> 2
    k_new = minibatch if n_mem == 0 else int(round(minibatch * n_new / (n_new + n_mem)))
    k_new = min(max(k_new, 1), minibatch)
    k_mem = minibatch - k_new if n_mem else 0
    if k_mem == 0:
        n_mem = 0
    count = n_new + (n_mem if count_memory else 0)
    per_epoch = math.ceil(count / minibatch)
    padded = pad_indices if pad else (lambda n, k: pad_random(n, k, perm))
    new_idx = padded(n_new, k_new)
    mem_idx = padded(n_mem, k_mem) if n_mem else np.zeros(0, np.int64)
    new_order = new_idx[perm(len(new_idx))]
    mem_order = mem_idx[perm(len(mem_idx))] if n_mem else mem_idx
    return Schedule(k_new, k_mem, per_epoch, max(1, int(round(epochs * per_epoch))), new_order, mem_order)


def hits(logits: torch.Tensor, labels: torch.Tensor, ties_miss: bool = False) -> torch.Tensor:
    """Per row, whether the prediction is right: the first highest score is the label (argmax), or with
    ``ties_miss`` (Caffe's Accuracy layer) the label's score is strictly above every other score."""
    if not ties_miss:
        return logits.argmax(1) == labels
    return (logits >= logits.gather(1, labels[:, None])).sum(1) == 1


@dataclass
class Minibatch:
    """One iteration's rows as the learning part sees them (what :meth:`Method.loss` is given):
    ``part`` (the whole network, or the part above the split layer ``layer``) and its ``inputs``
    (preprocessed frames or latents: ``new_rows`` new patterns first, then replayed ones), and their
    ``labels``."""

    part: torch.nn.Module
    inputs: torch.Tensor
    labels: torch.Tensor
    new_rows: int
    #: The layer ``part`` starts above (its input is that layer's output), "data" for the whole network.
    layer: str = "data"


@dataclass
class _Batch:
    """What the iterations of one batch share (:meth:`RunTrainer._begin_batch`)."""

    index: int
    phase: int
    paths: list
    new_frames: torch.Tensor
    new_labels: torch.Tensor
    sched: Schedule
    on_device: Schedule
    mixing: bool
    incremental_split: bool
    native: bool
    feats: torch.Tensor | None
    epoch0: dict | None      # first-epoch latents by padded position (stored_latents train_epoch0, B11)


def prepare_device(device: torch.device, cfg: ExperimentConfig) -> None:
    """Process-wide settings for a run on ``device``: on CUDA, the numerics of ``cuda_reproducible``."""
    if device.type == "cuda":
        configure_cuda(cfg.cuda_reproducible)


class StaleCheckpoint(ConfigError):
    """A run checkpoint (``path``) written under other training settings (``changed``) than the config."""

    def __init__(self, message: str, path: Path, changed: list[str]):
        super().__init__(message)
        self.path, self.changed = path, changed


def resolve_preprocessing(preprocessing: str, weights_info: dict) -> str:
    """The preprocessing in force: the configured one, or for ``auto`` what the loaded weights expect
    (``load_weights``' ``preprocessing``), ``caffe`` for random initial weights."""
    if preprocessing != "auto":
        return preprocessing
    return weights_info.get("preprocessing") or "caffe"


# ------------------------------------------------------------------------------------------ run
class RunTrainer:
    """Trains one run of one experiment; see the module docstring."""

    def __init__(self, cfg: ExperimentConfig, run: int, scenario: Scenario, frames: FrameStore,
                 device: torch.device, out_dir: Path, progress: bool = True, stop_after: int | None = None):
        self.cfg, self.run, self.scenario, self.frames = cfg, run, scenario, frames
        self.device, self.dir, self.progress, self.stop_after = device, out_dir, progress, stop_after
        self.chunk = cfg.inference_chunk or (INFERENCE_CHUNK_CPU if device.type == "cpu" else INFERENCE_CHUNK_GPU)
        prepare_device(device, cfg)
        fid = cfg.fidelity
        self.fid = fid
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed * 1000 + run)   # the initial weights depend on (seed, run) only
            self.model = MobileNetV1(fc_bias=fid.classifier_bias).to(device)
        self.weights_info = load_weights(self.model, cfg.weights)
        self.preprocessing = resolve_preprocessing(cfg.preprocessing, self.weights_info)
        if fid.first_batch_brn_start == "zero" or self.weights_info["source"] == "random":
            for brn in self.model.brn_layers().values():
                brn.set_running_stats(torch.zeros(brn.num_features), torch.zeros(brn.num_features), 0.0, step=0)
        fb = cfg.brn_first_batch
        self.model.set_brn_config(BRNConfig(t0=fb.t0, t_r=fb.t_r, t_d=fb.t_d, r_max=fb.r_max, d_max=fb.d_max,
                                            moving_fraction=0.99 if fb.moving_fraction is None else fb.moving_fraction))
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.method = make_method(cfg, self.model)
        self.cumulative = bool(getattr(self.method, "cumulative", False))
        self.split_layer = "pool6" if self.method.classifier_only else cfg.resolved_latent_layer
        self.lower, self.upper = split(self.model, self.split_layer)
        self.memory_layer = cfg.latent_layer if cfg.uses_latent else "data"
        self.mem_lower, self.mem_upper = split(self.model, self.memory_layer)
        self.memory = make_replay(cfg, device, seed=cfg.seed * 1000 + run)
        self.rng = np.random.default_rng([cfg.seed, run])
        self.optimizer: torch.optim.Optimizer | None = None
        self.decay_only: list[torch.nn.Parameter] = []
        self.batches_done = 0
        self.global_iter = 0
        self.rows: list[dict] = []
        self.seen: set[int] = set()
        self.test_cache: torch.Tensor | RowFile | None = None
        self._loss_sum = self._correct = self._rows_seen = self._iters = 0.0
        self._cache_seconds = 0.0   # the test-latent pass done before a batch's training, reported as eval
        test_idx = np.arange(len(scenario.test))
        if fid.padded_test_set:
            test_idx = pad_indices(len(scenario.test), cfg.test_minibatch)
        self.test_paths = [scenario.test.paths[i] for i in test_idx]
        # on a GPU the test frames stay on the device; on the CPU they are read from the frame store
        # when an evaluation needs them (once the test latents are cached, no longer at all)
        self._test_frames = None if device.type == "cpu" else self._read_test_frames()
        self.test_labels = torch.from_numpy(scenario.test.labels[test_idx]).to(device)

    # ---------------------------------------------------------------- helpers
    def _read_test_frames(self) -> torch.Tensor:
        return torch.from_numpy(self.frames.get(self.test_paths)).to(self.device)

    @property
    def test_frames(self) -> torch.Tensor:
        """The test frames (uint8, N x H x W x 3), resident on a GPU, read on demand on the CPU."""
        return self._test_frames if self._test_frames is not None else self._read_test_frames()

    def _rng(self):
        """The generator for one shuffle or memory choice (B5: re-seeded to 0 each time)."""
        return np.random.RandomState(0) if self.fid.reseed_rng_each_shuffle else self.rng

    def _perm(self, n: int) -> np.ndarray:
        return self._rng().permutation(n)

    def _pre(self, frames_u8: torch.Tensor) -> torch.Tensor:
        return preprocess(frames_u8, self.preprocessing, channels_last=self.cfg.channels_last)

    @property
    def lower_fixed(self) -> bool:
        """Whether the part below the split is frozen in eval mode from batch 1 on: below a latent (or
        generative) replay layer unless ``lower_drift`` (B12). CWR*'s backbone below pool6 without latent
        replay is frozen by its learning rates only: its BRN layers normalise with the minibatch's
        statistics and keep updating their moments, in both profiles, as the original (spec §5.6, §7.3)."""
        return self.cfg.uses_latent and not self.fid.lower_drift

    @property
    def lower_frozen_eval(self) -> bool:
        """Whether the lower part is a fixed function in incremental batches (eval mode, no drift)."""
        return self.batches_done >= 1 and self.split_layer != "data" and self.lower_fixed

    def _set_modes(self, batch_index: int) -> None:
        self.model.train()
        if batch_index > 0 and self.lower_fixed:
            self.lower.eval()

    def _incremental_brn(self) -> BRNConfig:
        s, w = self.cfg.brn_incremental, self.cfg.resolved_past_weight
        lam = s.moving_fraction if s.moving_fraction is not None else 1.0 - 1.0 / w
        return BRNConfig(t0=s.t0, t_r=s.t_r, t_d=s.t_d, r_max=s.r_max, d_max=s.d_max, moving_fraction=lam)

    def _enter_incremental(self) -> None:
        """The switch at batch 1 (spec §5.5): incremental BRN settings and past-weight rescale."""
        self.model.set_brn_config(self._incremental_brn())
        self.model.rescale_brn_past_weight(self.cfg.resolved_past_weight)

    def _build_optimizer(self, batch_index: int) -> None:
        cfg = self.cfg
        mults = self.method.lr_mults(batch_index)
        base = cfg.lr_first_batch if batch_index == 0 else cfg.resolved_lr
        # split() keeps the model's attribute names, so the lower part's names are the model's
        below = {n for n, _ in self.lower.named_parameters()} if batch_index > 0 else set()
        params = dict(self.model.named_parameters())
        groups: dict[tuple[float, float], list] = {}
        self.decay_only = []
        for kind, names in param_names_by_kind(self.model).items():
            lr = base * mults[kind]
            for n in names:
                p = params[n]
                if lr == 0:
                    p.requires_grad_(False)
                    continue
                if n in below:
                    p.requires_grad_(False)
                    if self.fid.lower_drift and DECAY_MULTS[kind] > 0:
                        self.decay_only.append(p)
                        groups.setdefault((lr, DECAY_MULTS[kind]), []).append(p)
                    continue
                p.requires_grad_(True)
                groups.setdefault((lr, DECAY_MULTS[kind]), []).append(p)
        self.optimizer = torch.optim.SGD(
            [{"params": ps, "lr": lr, "decay": d} for (lr, d), ps in groups.items()],
            lr=base, momentum=cfg.momentum, weight_decay=0.0)
        in_optimizer = {id(p) for ps in groups.values() for p in ps}
        self.method.set_moving({n for n, p in params.items() if id(p) in in_optimizer})

    def _apply_weight_decay(self) -> None:
        wd = self.cfg.weight_decay
        for group in self.optimizer.param_groups:
            if group["decay"] == 0 or wd == 0:
                continue
            for p in group["params"]:
                if p.grad is None:
                    p.grad = p.detach() * (wd * group["decay"])
                else:
                    p.grad.add_(p.detach(), alpha=wd * group["decay"])

    # ---------------------------------------------------------------- evaluation
    @torch.inference_mode()
    def evaluate(self) -> float:
        self.model.eval()
        use_cache = self.cfg.cache_test_latents and self.lower_frozen_eval
        correct, ties = 0, self.fid.count_ties_as_miss
        if use_cache:
            self._ensure_test_cache()
        cached = use_cache and self.test_cache is not None
        frames = None if cached else self.test_frames
        # the upper part alone on cached latents has small activations: training-minibatch-sized chunks
        # run as fast as larger ones and reuse the training iterations' freed blocks (measured)
        chunk = max(self.cfg.test_minibatch, self.cfg.minibatch) if cached else self.chunk
        starts = range(0, len(self.test_labels), chunk)
        if cached:
            latents = (self.test_cache.chunks(chunk) if isinstance(self.test_cache, RowFile)
                       else self.test_cache.split(chunk))
            outputs = (self.upper(h) for h in latents)
        else:
            outputs = (self.model(self._pre(frames[i:i + chunk])) for i in starts)
        for i, logits in zip(starts, outputs):
            correct += hits(logits, self.test_labels[i:i + chunk], ties).sum()   # read once, at the end
        return int(correct) / len(self.test_labels)

    @property
    def _test_cache_due(self) -> bool:
        """Whether the test latents are to be cached now (switch on, lower part frozen, not cached yet)."""
        return self.test_cache is None and self.cfg.cache_test_latents and self.lower_frozen_eval

    def _ensure_test_cache(self) -> None:
        """Cache the test latents (lower part, eval mode) once, if they fit in TEST_CACHE_LIMIT_BYTES.
        Called while the lower part is frozen: at the start of the first incremental batch (when the
        heap holds the least, so the one-time pass does not stack on the batch's working set) or at
        the first evaluation after a resume."""
        if not self._test_cache_due:
            return
        if self._latent_bytes(self.split_layer) * len(self.test_labels) <= TEST_CACHE_LIMIT_BYTES:
            self.model.eval()
            frames = self.test_frames
            if self.cfg.test_latents_in_file and self.device.type == "cpu":
                self.test_cache = self._test_latents_file(frames)
            if self.test_cache is None:
                self.test_cache = self._lower_pass(self.lower, frames)
            self._test_frames = None   # a GPU's copy is not needed while the cache lasts (read again if dropped)
            self._release()   # once: the whole test list went through the lower part

    def _test_latents_file(self, frames: torch.Tensor) -> RowFile | None:
        """The lower part's latents of ``frames`` written to a :class:`RowFile` in the frame cache's
        folder, else in the run folder (where the file cannot be made or its size reserved: read-only,
        full); None, with a warning, where neither can take it or a write fails: the latents are then
        kept in memory."""
        chunks = self._lower_chunks(self.lower, frames)
        first = next(chunks, None)
        if first is None:
            return None
        cache = self.frames.cache_file
        rows = None
        for folder in ([Path(cache).parent] if cache is not None else []) + [self.dir]:
            try:
                rows = RowFile(len(frames), first[1], folder)
                break
            except OSError as exc:
                log.warning("test latents: no temporary file in %s (%s)", folder, exc)
        if rows is None:
            return None
        try:
            for _, y in itertools.chain([first], chunks):
                rows.append(y)
        except OSError as exc:
            log.warning("test latents: writing them to a file failed (%s); keeping them in memory", exc)
            rows.close()
            return None
        return rows

    def _drop_test_cache(self) -> None:
        if isinstance(self.test_cache, RowFile):
            self.test_cache.close()
        self.test_cache = None

    def _latent_bytes(self, layer: str) -> int:
        from .models import latent_shape

        return 4 * int(np.prod(latent_shape(layer, int(self.frames.images.shape[1]))))

    def _log_eval(self, batch_index: int, kind: str, train_seconds: float, new_frames: int) -> dict:
        t0 = time.perf_counter()
        acc = self.evaluate()
        self._sync()
        row = {
            "batch": batch_index, "kind": kind, "iteration": self.global_iter, "test_accuracy": acc,
            "train_loss": float(self._loss_sum) / max(self._iters, 1),
            "train_accuracy": float(self._correct) / max(self._rows_seen, 1),
            "train_seconds": train_seconds, "eval_seconds": time.perf_counter() - t0 + self._cache_seconds,
            "new_frames": new_frames,
            "classes_seen": len(self.seen), "memory_patterns": len(self.memory) if self.memory else 0,
            "memory_bytes": self.memory.nbytes if self.memory else 0,
        }
        self._loss_sum = self._correct = self._rows_seen = self._iters = self._cache_seconds = 0.0
        self.rows.append(row)
        return row

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # ---------------------------------------------------------------- one batch
    def _batch_patterns(self, b: int) -> tuple[list[str], np.ndarray]:
        if self.cumulative:
            paths = [p for fl in self.scenario.batches[: b + 1] for p in fl.paths]
            labels = np.concatenate([fl.labels for fl in self.scenario.batches[: b + 1]])
            return paths, labels
        fl = self.scenario.batches[b]
        return list(fl.paths), fl.labels

    def train_batch(self, b: int) -> dict:
        t_start = time.perf_counter()
        exp = self._begin_batch(b)
        t_start += self._cache_seconds   # the test-latent pass it may have made is timed as evaluation
        for it in range(exp.sched.iterations):
            mb = self._minibatch(exp, it)
            self._optimise(mb)
            if b == 0 and self.global_iter == 1 and self.fid.eval_at_iteration_1:
                self._sync()
                self._log_eval(0, "iteration_1", time.perf_counter() - t_start, len(exp.paths))
                self._set_modes(b)
                t_start = time.perf_counter()   # the batch row counts the training after that row's
        self.method.after_training(b)
        self._sync()
        # evaluate at the end of training, as the original does (spec §5.4), then fill the memory: its
        # batch-0 pass under stored_latents=train_epoch0 moves every BRN layer's statistics (B11)
        row = self._log_eval(b, "batch", time.perf_counter() - t_start, len(exp.paths))
        if self.memory is not None and not self.cumulative:
            t_memory = time.perf_counter()
            self._update_memory(b, exp.sched, exp.new_frames, exp.new_labels, exp.feats, exp.epoch0)
            self._sync()
            row["train_seconds"] += time.perf_counter() - t_memory   # the memory update is training time
            row["memory_patterns"], row["memory_bytes"] = len(self.memory), self.memory.nbytes
        if exp.phase == 0:   # the whole network's activations are free now: give them back to the kernel once
            self._release()
        return row

    def _begin_batch(self, b: int) -> "_Batch":
        """Everything a batch's iterations share: its optimiser and modes, data, plan and lower-part latents."""
        cfg, fid = self.cfg, self.fid
        # joint retrains like batch 0 (whole network, first-batch settings) on everything seen so far
        phase = 0 if self.cumulative else b
        if phase == 1:
            self._enter_incremental()
        if phase <= 1 or not fid.momentum_persists:
            self._build_optimizer(phase)
        paths, labels_np = self._batch_patterns(b)
        new_frames = torch.from_numpy(self.frames.get(paths)).to(self.device)
        new_labels = torch.from_numpy(labels_np).to(self.device)
        self.seen.update(int(c) for c in np.unique(labels_np))
        mixing = self.memory is not None and b > 0 and len(self.memory) > 0
        sched = plan_batch(len(paths), len(self.memory) if mixing else 0, minibatch=cfg.minibatch,
                           epochs=cfg.epochs_first_batch if b == 0 else cfg.epochs,
                           pad=fid.pad_training_like_caffe, count_memory=cfg.uses_replay, perm=self._perm)
        trained_labels = torch.cat([new_labels, self.memory.labels]) if mixing else new_labels
        self.method.before_batch(b, trained_labels, new_labels)
        incremental_split = phase > 0 and self.split_layer != "data"
        self._cache_seconds = 0.0
        if incremental_split and self._test_cache_due:
            self._sync()                     # timed as evaluation, not as training
            t_cache = time.perf_counter()
            self._ensure_test_cache()
            self._sync()
            self._cache_seconds = time.perf_counter() - t_cache
        self._set_modes(phase)
        native = self.memory is not None and self.memory.stores == "frames"
        feats = None
        if incremental_split and not native and cfg.precompute_lower and self.lower_frozen_eval:
            feats = self._lower_pass(self.lower, new_frames)
        capture = cfg.uses_latent and fid.stored_latents == "train_epoch0" and b > 0 and self.memory is not None
        # the minibatch rows as device tensors, uploaded once: on a GPU a copy per iteration waits for it
        on_device = dataclasses.replace(sched, new_order=torch.as_tensor(sched.new_order, device=self.device),
                                        mem_order=torch.as_tensor(sched.mem_order, device=self.device))
        return _Batch(b, phase, paths, new_frames, new_labels, sched, on_device, mixing, incremental_split, native,
                      feats, {} if capture else None)

    def _minibatch(self, exp: "_Batch", it: int) -> "Minibatch":
        """Iteration ``it``'s rows: the part that learns, its input (new rows, then replayed ones), labels."""
        idx = exp.on_device.new_rows(it)
        y = exp.new_labels[idx]
        m_x = None
        if exp.mixing and exp.sched.k_mem:
            m_x, m_y = self.memory.get(exp.on_device.mem_rows(it))
            y = torch.cat([y, m_y])
        frames = exp.new_frames
        if not exp.incremental_split and m_x is not None and self.cfg.uses_latent:
            # latent replay at `data`: the memory holds preprocessed frames, the new ones are raw
            x = self._pre(frames[idx])
            return Minibatch(self.model, torch.cat([x, m_x.to(x.dtype)]), y, len(idx))
        if not exp.incremental_split:
            return Minibatch(self.model, self._pre(frames[idx] if m_x is None else torch.cat([frames[idx], m_x])), y,
                             len(idx))
        if exp.native:
            with torch.no_grad():
                h = self.lower(self._pre(frames[idx] if m_x is None else torch.cat([frames[idx], m_x])))
            return Minibatch(self.upper, h, y, len(idx), self.split_layer)
        if exp.feats is not None:
            h = exp.feats[idx]
        else:
            with torch.no_grad():
                h = self.lower(self._pre(frames[idx]))
        if exp.epoch0 is not None and it < exp.sched.new_chunks:
            exp.epoch0[(it % exp.sched.new_chunks) * exp.sched.k_new] = h.detach().clone()
        if m_x is not None:
            h = torch.cat([h, m_x.to(h.dtype)])
        return Minibatch(self.upper, h, y, len(idx), self.split_layer)

    def _optimise(self, mb: "Minibatch") -> None:
        """One iteration: forward of the learning part, the method's loss, backward, hooks, step, sums."""
        with recompute_bn_relu(self.cfg.recompute_bn_relu):
            out = mb.part(mb.inputs)
        loss = self.method.loss(out, mb.labels, mb)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.method.after_backward()
        self._apply_weight_decay()
        self.method.adjust_gradients()
        self.optimizer.step()
        self.method.after_step()
        self.global_iter += 1
        # kept on the device (read once per evaluation: a read per iteration waits for a GPU); float64
        # sums of the float32 losses, as Python floats would add them
        self._loss_sum += loss.detach().double()
        self._correct += hits(out.detach(), mb.labels, self.fid.count_ties_as_miss).sum().double()
        self._rows_seen += len(mb.labels)
        self._iters += 1

    @torch.no_grad()
    def _update_memory(self, b, sched, new_frames, new_labels, feats, epoch0) -> None:
        cfg, fid = self.cfg, self.fid
        # candidates are positions in the batch; the epoch-0 latents (B11) come in the order the first
        # epoch visited the patterns, so with them the candidates follow that order, padded or not
        epoch0_order = cfg.uses_latent and fid.stored_latents == "train_epoch0"
        cand = sched.new_order if fid.pad_training_like_caffe or epoch0_order else np.arange(len(new_labels))
        def rows(pick: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(cand[pick], device=self.device)

        data = ExperienceData(b, len(cand), labels=lambda pick: new_labels[rows(pick)],
                              frames=lambda pick: new_frames[rows(pick)],
                              latents=lambda pick: self._memory_latents(b, sched, new_frames, feats, epoch0, cand, pick))
        self.memory.after_experience(self._rng(), data)

    def _memory_latents(self, b, sched, new_frames, feats, epoch0, cand, pick) -> torch.Tensor:
        """Latents at the memory layer of the candidates ``cand[pick]`` (B11 decides which)."""
        rows = torch.as_tensor(cand[pick], device=self.device)
        if self.fid.stored_latents == "train_epoch0":
            return self._epoch0_latents(b, sched, new_frames, epoch0)[torch.as_tensor(pick, device=self.device)]
        if feats is not None and self.memory_layer == self.split_layer:
            return feats[rows]
        return self._eval_latents(new_frames[rows])

    def _eval_latents(self, frames_u8: torch.Tensor) -> torch.Tensor:
        """Latents at the memory layer in eval mode with the current weights (B11 fixed)."""
        self.model.eval()
        return self._lower_pass(self.mem_lower, frames_u8)

    @torch.no_grad()
    def _lower_pass(self, part: torch.nn.Module, frames_u8: torch.Tensor) -> torch.Tensor:
        """``part`` (in its current mode) on every frame, ``inference_chunk`` frames at a time, into one
        preallocated output (no concatenated copy). The forwards run in inference mode; the output is
        allocated outside it (unless the caller is in inference mode), so training can use it as is."""
        out = torch.empty(0)
        for i, y in self._lower_chunks(part, frames_u8):
            if i == 0:
                layout = torch.channels_last if y.dim() == 4 and self.cfg.channels_last else torch.contiguous_format
                out = torch.empty((len(frames_u8),) + tuple(y.shape[1:]), dtype=y.dtype, device=y.device,
                                  memory_format=layout)
            out[i:i + len(y)] = y
        return out

    def _lower_chunks(self, part: torch.nn.Module, frames_u8: torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
        """``(i, part(frames i..i+k))`` for ``k = inference_chunk`` frames at a time, in inference mode."""
        k = self.chunk
        for i in range(0, len(frames_u8), k):
            with torch.inference_mode():
                y = part(self._pre(frames_u8[i:i + k]))
            yield i, y      # outside inference mode: what the caller makes from y is ordinary (y is not)

    def _release(self) -> None:
        """Return freed heap memory to the kernel (``release_memory``): only after batch 0 and after
        the one-time test-latent pass; after every batch it would cost ~9 % of an incremental batch
        in page faults (measured)."""
        if self.cfg.release_memory and self.device.type == "cpu":
            release_free_memory()

    def _epoch0_latents(self, b, sched, new_frames, epoch0) -> torch.Tensor:
        """Latents of every padded position, as the original stores them (B11)."""
        if b > 0:
            chunks = []
            for j in range(sched.new_chunks):   # chunks the first epoch did not reach: lower pass now
                start = j * sched.k_new
                if start not in epoch0:
                    rows = torch.as_tensor(sched.new_order[start:start + sched.k_new], device=self.device)
                    epoch0[start] = self.lower(self._pre(new_frames[rows]))
                chunks.append(epoch0[start])
            return torch.cat(chunks)
        # batch 0: an extra training-mode pass of the whole network over the padded, shuffled batch, as
        # the original's net.forward(): it updates the moments of every BRN layer, above the memory
        # layer too; the latents are read at the memory layer
        self.model.train()
        k = self.cfg.minibatch
        order = torch.as_tensor(sched.new_order, device=self.device)
        chunks = []
        for i in range(0, len(order), k):
            chunks.append(self.mem_lower(self._pre(new_frames[order[i:i + k]])))
            self.mem_upper(chunks[-1])
        return torch.cat(chunks)

    # ---------------------------------------------------------------- checkpoints
    def state(self) -> dict:
        return {
            "format": "latent-replay-run-checkpoint", "version": __version__, "config": self.cfg.to_dict(),
            "fidelity": self.cfg.describe_fidelity(), "preprocessing": self.preprocessing,
            "run": self.run, "batches_done": self.batches_done, "global_iter": self.global_iter,
            "rows": self.rows, "seen": sorted(self.seen), "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None,
            "method": self.method.state_dict(), "memory": self.memory.state_dict() if self.memory else None,
            "rng": self.rng.bit_generator.state,
        }

    def save_checkpoint(self) -> None:
        path = self.dir / CHECKPOINT
        tmp = path.with_name(f".{CHECKPOINT}.tmp")
        torch.save(self.state(), tmp)
        os.replace(tmp, path)

    def load_checkpoint(self, path: Path) -> None:
        try:
            # onto the CPU: every part moves what it keeps to its device (a GPU run's checkpoint would
            # otherwise put numpy-bound tensors, e.g. GLR's slot table, on the GPU)
            state = torch.load(path, map_location="cpu", weights_only=False)
        except torch.OutOfMemoryError:
            raise                # a good checkpoint on a full device: not the file's fault
        except Exception as e:   # torch raises many kinds (pickle, zip reader, OSError, EOF)
            if "CUDA" in str(e):
                raise
            detail = " ".join(str(e).split())[:200] or type(e).__name__
            raise ConfigError(f"{path}: cannot read the run checkpoint ({detail}); delete it, or use --force, "
                              "to train the run again") from None
        if not isinstance(state, dict) or state.get("format") != "latent-replay-run-checkpoint":
            raise ConfigError(f"{path}: not a run checkpoint of this suite")
        # the config keeps only the overrides of its profile: compare every switch in force too, so a
        # default changed between versions cannot change a run halfway
        changed = self.cfg.trained_otherwise(state["config"], state.get("fidelity"), state.get("preprocessing"),
                                             self.preprocessing)
        if changed:
            why = "; a fidelity.* default may have changed between versions" \
                if any(k.startswith("fidelity.") for k in changed) else ""
            raise StaleCheckpoint(f"{path}: the checkpoint was written with another configuration (changed: "
                                  f"{', '.join(changed)}{why}): use --force to start the run again", path, changed)
        if "fidelity" not in state:
            log.warning("%s: written before checkpoints recorded every fidelity switch; resuming with the "
                        "switches in force now (AR1*'s importance_from default changed to 'updates')", path)
        self.batches_done, self.global_iter = state["batches_done"], state["global_iter"]
        self.rows, self.seen = state["rows"], set(state["seen"])
        if self.batches_done >= 2 and not self.cumulative:   # batch 1 switched the BRN settings
            self.model.set_brn_config(self._incremental_brn())
        self.model.load_state_dict(state["model"])
        self.method.load_state_dict(state["method"])
        if self.memory is not None:
            self.memory.load_state_dict(state["memory"])
        self.rng.bit_generator.state = state["rng"]
        # batch 0 and batch 1 (and every batch of joint) build their optimiser afresh (train_batch): only
        # after batch 1 can the saved state be the one the next batch goes on with (momentum_persists)
        if state["optimizer"] is not None and self.batches_done >= 2 and not self.cumulative:
            self._build_optimizer(self.batches_done)
            if self.fid.momentum_persists:
                self.optimizer.load_state_dict(state["optimizer"])

    # ---------------------------------------------------------------- the run
    def train(self) -> dict:
        n = batches_to_train(self.cfg, self.scenario)
        ckpt = self.dir / CHECKPOINT
        if ckpt.exists() or ckpt.is_symlink():
            self.load_checkpoint(ckpt)
            log.info("run %d: resuming after batch %d of %d", self.run, self.batches_done - 1, n)
            # batches after the checkpoint (checkpoint_every > 1) are trained again: drop their rows now
            write_metrics(self.dir / "metrics.csv", self.rows)
        bar = tqdm(total=n, initial=self.batches_done, desc=f"run {self.run}", unit="batch",
                   disable=not self.progress)
        with bar, contextlib.ExitStack() as stack:
            stack.callback(self._drop_test_cache)
            for b in range(self.batches_done, n):
                row = self.train_batch(b)
                self.batches_done = b + 1
                write_metrics(self.dir / "metrics.csv", self.rows)
                stopping = self.stop_after is not None and b + 1 >= self.stop_after
                if (b + 1) % self.cfg.checkpoint_every == 0 or b + 1 == n or stopping:
                    self.save_checkpoint()
                bar.set_postfix(acc=f"{row['test_accuracy']:.3f}", refresh=False)
                bar.update(1)
                log.debug("run %d batch %d: acc %.4f loss %.4f (%.2fs train, %.2fs eval)", self.run, b,
                          row["test_accuracy"], row["train_loss"], row["train_seconds"], row["eval_seconds"])
                if self.stop_after is not None and b + 1 >= self.stop_after and b + 1 < n:
                    raise KeyboardInterrupt(f"stopped after batch {b} (stop_after)")
        accs = [r["test_accuracy"] for r in self.rows if r["kind"] == "batch"]
        summary = {
            "experiment": self.cfg.experiment_name, "run": self.run, "finished": True, "batches": n,
            "scenario_batches": len(self.scenario),
            "final_accuracy": accs[-1], "average_accuracy": float(np.mean(accs)),
            "train_seconds": float(sum(r["train_seconds"] for r in self.rows)),
            "eval_seconds": float(sum(r["eval_seconds"] for r in self.rows)),
            "iterations": self.global_iter, "memory_bytes": self.memory.nbytes if self.memory else 0,
            "device": str(self.device), "torch": torch.__version__, "suite": __version__,
            "weights": self.weights_info["source"], "preprocessing": self.preprocessing,
            "fidelity": self.cfg.describe_fidelity(),
            "config": self.cfg.to_dict(),
        }
        write_json(self.dir / "summary.json", summary)
        return summary


def batches_to_train(cfg: ExperimentConfig, scenario: Scenario) -> int:
    """The batches a run of ``scenario`` trains: all of them, or the first ``max_batches``."""
    n = len(scenario)
    return n if cfg.max_batches is None else min(cfg.max_batches, n)


def _summary_batches(run_folder: Path) -> int:
    """Batches a finished run's summary.json says it trained (0 when unreadable: train it again)."""
    batches = (read_summary(run_folder) or {}).get("batches")
    return batches if isinstance(batches, int) and not isinstance(batches, bool) else 0


#: What ``latent-replay train`` can override on its command line (for that call only).
CLI_OVERRIDES = ("runs", "device", "out")


def _without(config: dict, keys) -> dict:
    return {k: v for k, v in config.items() if k not in keys}


def _identity(config: dict) -> dict:
    return _without(config, RESUMABLE_CHANGES)


# ------------------------------------------------------------------------------------- experiment
class Trainer:
    """Runs the requested runs of one experiment config; validates all inputs before training."""

    def __init__(self, cfg: ExperimentConfig, *, progress: bool = True):
        self.cfg = cfg
        self.progress = progress
        self.device = resolve_device(cfg.device)
        try:
            self.root = open_root(cfg.dataset_root)
        except DatasetError as exc:   # name the config key: the default (/datasets) may not be what was meant
            raise DatasetError(f"dataset_root: {exc}") from None
        if cfg.weights is not None and not Path(cfg.weights).is_file():
            raise ConfigError(f"weights: {cfg.weights}: no such file")
        filelists = cfg.filelists if cfg.filelists is not None else default_filelists_root(cfg.dataset_root)
        self.scenarios = {r: load_scenario(filelists, cfg.scenario, r, reduced_test=cfg.test_list == "reduced",
                                           images_dir=self.root.images_dir) for r in cfg.runs}
        self._check_weights()
        paths = {p for sc in self.scenarios.values() for fl in (*sc.batches, sc.test) for p in fl.paths}
        self.frames = load_frames(self.root.images_dir, paths, cache_dir=cfg.cache_dir, progress=progress)
        self.experiment_dir = Path(cfg.out) / cfg.experiment_name

    def _check_weights(self) -> None:
        """Check the weights file and resolve the preprocessing the runs will use (``self.preprocessing``)."""
        self.preprocessing = resolve_preprocessing(self.cfg.preprocessing, {})
        if self.cfg.weights is None:
            return
        probe = MobileNetV1(fc_bias=self.cfg.fidelity.classifier_bias)
        info = load_weights(probe, self.cfg.weights)
        self.preprocessing = resolve_preprocessing(self.cfg.preprocessing, info)
        if self.cfg.preprocessing == "auto":
            log.info("preprocessing: %s, as the weights %s expect", self.preprocessing, self.cfg.weights)
        elif info["preprocessing"] and info["preprocessing"] != self.cfg.preprocessing:
            log.warning("weights %s expect %s preprocessing but the config uses %s (spec B15)",
                        self.cfg.weights, info["preprocessing"], self.cfg.preprocessing)

    def _record_config(self, force: bool = False) -> None:
        """Write the experiment's config, keeping what the command line only overrode for this call.

        Where the folder already holds the same experiment's config (e.g. the one ``prepare`` wrote,
        which ``run_experiment.sh`` points at), ``--runs``, ``--device`` and ``--out`` must not narrow
        or change it for later calls: it is kept, with any new runs appended to its ``runs``. Where
        it differs in an execution key too (changed in the config file), this config is written, with
        the saved runs kept and the new ones appended. Nothing is written when a refusal (other
        results, stale runs) stops the call."""
        path = self.experiment_dir / CONFIG_FILE
        cfg, saved = self.cfg, None
        if path.is_file():
            try:
                saved = ExperimentConfig.load(path)
            except ConfigError:
                saved = None
        old, new = (saved.to_dict() if saved is not None else None), cfg.to_dict()
        same = saved is not None and _identity(old) == _identity(new)
        if saved is not None and not same:
            self._refuse_other_results(path, old, force)
        if not force:
            self._refuse_stale_runs()
        if same:
            runs = list(saved.runs) + [r for r in cfg.runs if r not in saved.runs]
            if _without(old, CLI_OVERRIDES) == _without(new, CLI_OVERRIDES):
                if runs != list(saved.runs):
                    saved.replace(runs=runs).save(path)
                return
            cfg = cfg.replace(runs=runs)      # execution keys changed: record them, keep the runs
        cfg.save(path)

    def _refuse_other_results(self, path: Path, saved: dict, force: bool) -> None:
        """The folder's config (``saved``, its dict) may train otherwise than this one: its results must not
        end up labelled with this config. Refused while a run folder holds results, unless ``force`` (which
        trains this call's runs again; other runs' results are then left, with a warning)."""
        changed = self.cfg.trained_otherwise(saved)
        if not changed:   # the same training, written differently (another path spelling, name, auto)
            return
        with_results = [d.name for _, d in run_dirs(self.experiment_dir)
                        if any((d / f).exists() for f in (CHECKPOINT, "metrics.csv", "summary.json"))]
        if not with_results:
            return
        if not force:
            raise ConfigError(f"{path}: the experiment's results ({', '.join(with_results)}) were trained with "
                              f"another configuration (changed: {', '.join(changed)}); give this one another "
                              "name or out, or use --force to train it again")
        others = [n for n in with_results if n not in {f"run{r}" for r in self.cfg.runs}]
        if others:
            log.warning("%s: %s keep results of the former configuration (changed: %s); summary.csv and "
                        "figures leave them out", self.experiment_dir, ", ".join(others), ", ".join(changed))

    def _refuse_stale_runs(self) -> None:
        """A run to train that finished with another configuration than this one (the experiment's config
        file edited since, or a default changed by a later version of the suite) is not done: refused,
        naming it, so its results neither get this configuration's label nor count as finished."""
        stale = stale_runs(self.experiment_dir, self.cfg, self.cfg.runs, self.preprocessing)
        if not stale:
            return
        d, changed = stale[0]
        more = f" (and {', '.join(x.name for x, _ in stale[1:])})" if len(stale) > 1 else ""
        if changed == ["preprocessing"]:   # 'auto' now resolves otherwise: only the weights tell, so say it here
            used = (read_summary(d) or {}).get("preprocessing")
            raise ConfigError(f"{d}{more}: finished with {used} preprocessing, but this configuration's "
                              f"({self.cfg.preprocessing}, weights {self.cfg.weights}) is {self.preprocessing}; "
                              f"set preprocessing to {used} to keep it, or use --force to train it again")
        raise ConfigError(f"{d}{more}: finished with another configuration than this one (changed: "
                          f"{', '.join(changed)}); use --force to train it again, or prepare the experiment "
                          "again with --force, which sets such runs aside")

    def run_all(self, *, force: bool = False, stop_after: int | None = None) -> list[dict]:
        self.experiment_dir.mkdir(parents=True, exist_ok=True)
        self._record_config(force)
        if force:   # the runs it lists are trained again: an interrupted call must not leave it behind
            (self.experiment_dir / "summary.csv").unlink(missing_ok=True)
        summaries = []
        for r in self.cfg.runs:
            d = run_dir(self.cfg.out, self.cfg.experiment_name, r)
            if force and d.exists():
                shutil.rmtree(d)
            if (d / "summary.json").is_file():
                done, wanted = _summary_batches(d), batches_to_train(self.cfg, self.scenarios[r])
                if done >= wanted:
                    log.info("run %d already finished in %s (use --force to train it again)", r, d)
                    continue
                # it stopped at an earlier max_batches: go on from its checkpoint (unfinished until then)
                log.info("run %d stopped after %d batch(es); continuing to %d", r, done, wanted)
                (d / "summary.json").unlink()
            d.mkdir(parents=True, exist_ok=True)
            rt = RunTrainer(self.cfg, r, self.scenarios[r], self.frames, self.device, d, self.progress, stop_after)
            summary = rt.train()
            del rt   # the next run's trainer must not meet this one's model, memory and test frames on the device
            summaries.append(summary)
            log.info("run %d finished: final accuracy %.4f, average %.4f, %.1fs training", r,
                     summary["final_accuracy"], summary["average_accuracy"], summary["train_seconds"])
        aggregate_runs(self.experiment_dir)
        return summaries
