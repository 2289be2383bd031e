"""One run of an experiment: :class:`RunTrainer`, the batch loop (spec §5), checkpoints and resume.

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
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import __version__
from ..config import INFERENCE_CHUNK_CPU, INFERENCE_CHUNK_GPU, ConfigError, ExperimentConfig
from ..data.core50 import preprocess
from ..methods import DECAY_MULTS, make_method
from ..models import BRNConfig, MobileNetV1, param_names_by_kind, recompute_bn_relu, split
from ..models.weights import load_weights
from ..replay import make_replay
from ..results import write_json, write_metrics
from ..rowfile import RowFile
from ..streams import Stream
from ..utils import configure_cuda, release_free_memory
from .checkpoints import CHECKPOINT, Checkpoints
from .evaluation import TestEvaluation
from .loop import run_batches
from .memory_update import MemoryUpdates
from .minibatches import Minibatch, Schedule, hits, pad_indices, plan_batch

log = logging.getLogger("latent_replay.train")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: 'cuda' requested but no CUDA device is available (use auto or cpu)")
    return torch.device(name)


@dataclass
class _Batch:
    """What the iterations of one batch share (:meth:`RunTrainer._begin_batch`)."""

    index: int
    phase: int
    ids: list
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


def resolve_preprocessing(preprocessing: str, weights_info: dict) -> str:
    """The preprocessing in force: the configured one, or for ``auto`` what the loaded weights expect
    (``load_weights``' ``preprocessing``), ``caffe`` for random initial weights."""
    if preprocessing != "auto":
        return preprocessing
    return weights_info.get("preprocessing") or "caffe"


# ------------------------------------------------------------------------------------------ run
class RunTrainer(TestEvaluation, MemoryUpdates, Checkpoints):
    """Trains one run of one experiment; see the module docstring."""

    def __init__(self, cfg: ExperimentConfig, run: int, stream: Stream, device: torch.device, out_dir: Path,
                 progress: bool = True, stop_after: int | None = None):
        self.cfg, self.run, self.stream = cfg, run, stream
        self.device, self.dir, self.progress, self.stop_after = device, out_dir, progress, stop_after
        self.chunk = cfg.inference_chunk or (INFERENCE_CHUNK_CPU if device.type == "cpu" else INFERENCE_CHUNK_GPU)
        prepare_device(device, cfg)
        fid = cfg.fidelity
        self.fid = fid
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed * 1000 + run)   # the initial weights depend on (seed, run) only
            self.model = MobileNetV1(num_classes=stream.n_classes, fc_bias=fid.classifier_bias).to(device)
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
        test_idx = np.arange(len(stream.test))
        if fid.padded_test_set:
            test_idx = pad_indices(len(stream.test), cfg.test_minibatch)
        self.test_ids = [stream.test.ids[i] for i in test_idx]
        # on a GPU the test frames stay on the device; on the CPU they are read from the frame store
        # when an evaluation needs them (once the test latents are cached, no longer at all)
        self._test_frames = None if device.type == "cpu" else self._read_test_frames()
        self.test_labels = torch.from_numpy(stream.test.labels[test_idx]).to(device)

    # ---------------------------------------------------------------- helpers
    def _read_test_frames(self) -> torch.Tensor:
        return torch.from_numpy(self.stream.inputs(self.test_ids)).to(self.device)

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
    def _batch_patterns(self, b: int) -> tuple[list, np.ndarray]:
        """The ids and labels of batch ``b`` (of every batch up to it for a cumulative method)."""
        batches = self.stream.batches[: b + 1] if self.cumulative else [self.stream.batches[b]]
        return [i for e in batches for i in e.ids], np.concatenate([e.labels for e in batches])

    def train_batch(self, b: int) -> dict:
        t_start = time.perf_counter()
        exp = self._begin_batch(b)
        t_start += self._cache_seconds   # the test-latent pass it may have made is timed as evaluation
        for it in range(exp.sched.iterations):
            mb = self._minibatch(exp, it)
            self._optimise(mb)
            if b == 0 and self.global_iter == 1 and self.fid.eval_at_iteration_1:
                self._sync()
                self._log_eval(0, "iteration_1", time.perf_counter() - t_start, len(exp.ids))
                self._set_modes(b)
                t_start = time.perf_counter()   # the batch row counts the training after that row's
        self.method.after_training(b)
        self._sync()
        # evaluate at the end of training, as the original does (spec §5.4), then fill the memory: its
        # batch-0 pass under stored_latents=train_epoch0 moves every BRN layer's statistics (B11)
        row = self._log_eval(b, "batch", time.perf_counter() - t_start, len(exp.ids))
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
        ids, labels_np = self._batch_patterns(b)
        new_frames = torch.from_numpy(self.stream.inputs(ids)).to(self.device)
        new_labels = torch.from_numpy(labels_np).to(self.device)
        self.seen.update(int(c) for c in np.unique(labels_np))
        mixing = self.memory is not None and b > 0 and len(self.memory) > 0
        sched = plan_batch(len(ids), len(self.memory) if mixing else 0, minibatch=cfg.minibatch,
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
        return _Batch(b, phase, ids, new_frames, new_labels, sched, on_device, mixing, incremental_split, native,
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
        if not exp.incremental_split or exp.native:   # frames all through: new ones, then replayed frames
            x = self._pre(frames[idx] if m_x is None else torch.cat([frames[idx], m_x]))
            if not exp.incremental_split:
                return Minibatch(self.model, x, y, len(idx))
            with torch.no_grad():
                h = self.lower(x)
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

    # ---------------------------------------------------------------- the run
    def train(self) -> dict:
        n = batches_to_train(self.cfg, self.stream)
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
            run_batches(self, n, self.dir, checkpoint_every=self.cfg.checkpoint_every, stop_after=self.stop_after,
                        bar=bar, name=f"run {self.run}")
        accs = [r["test_accuracy"] for r in self.rows if r["kind"] == "batch"]
        summary = {
            "experiment": self.cfg.experiment_name, "run": self.run, "finished": True, "batches": n,
            "scenario_batches": len(self.stream.batches),
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


def batches_to_train(cfg: ExperimentConfig, stream: Stream) -> int:
    """The batches a run of ``stream`` trains: all of them, or the first ``max_batches``."""
    n = len(stream.batches)
    return n if cfg.max_batches is None else min(cfg.max_batches, n)
