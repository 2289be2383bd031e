"""One run of the GLR benchmark: :class:`_Run` trains the split MLP through a stream (naive, native
replay, latent replay or generative latent replay), updates its memory and evaluates after every
experience; :func:`run_one` is its entry point, :func:`batch_split` the reference's minibatch split."""
from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..engine.loop import run_batches
from ..replay import ExperienceData, ReplayMemory
from ..results import write_json
from ..replay.generative import GenerativeReplay
from ..streams.base import Experience
from ..streams.digits import DigitStream
from ..utils import seeded_rng
from .model import SplitMLP
from .settings import METHODS, BenchSettings, RunResult, RunSpec

log = logging.getLogger(__package__)   # "latent_replay.glr_bench", the logger of the whole benchmark

EVAL_BATCH = 2048


def batch_split(n_current: int, memory: int, minibatch: int) -> tuple[int, int]:
    """(b_c, b_r): current and replayed rows per minibatch, the reference's formula
    ``b_c = N // ((N + M) // B)``, ``b_r = B - b_c`` (glr-spec §4.3), with at least one replayed row."""
    chunks = max(1, (n_current + memory) // minibatch)
    b_c = min(minibatch - 1, max(1, n_current // chunks))
    return b_c, minibatch - b_c


def _float_images(images: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(images.reshape(len(images), -1)).to(device).float().div_(255.0)


class _Run:
    """The state of one run while it goes through the stream."""

    def __init__(self, spec: RunSpec, settings: BenchSettings, stream: DigitStream, device: torch.device):
        self.spec, self.s, self.stream, self.device = spec, settings, stream, device
        self.gen = torch.Generator().manual_seed(settings.seed)
        self.slot_rng = seeded_rng(settings.seed, "glr-bench-memory-slots")
        in_dim = int(np.prod(stream.input_shape))
        self.model = SplitMLP(in_dim, settings.hidden, stream.n_classes, spec.split, self.gen).to(device)
        self.memory = self._make_memory()
        self.test = [(_float_images(stream.inputs(e.ids), device), torch.from_numpy(e.labels).to(device))
                     for e in stream.test_sets]

    def _make_memory(self):
        spec, s = self.spec, self.s
        if spec.method == "naive":
            return None
        if spec.method == "replay":
            return ReplayMemory(spec.memory, "uint8_frames", self.device)
        if spec.method == "latent":
            return ReplayMemory(spec.memory, "float32", self.device)
        return GenerativeReplay(spec.memory, mode=s.glr_mode, n_components=s.glr_components,
                                covariance_type=s.glr_covariance, reg_covar=s.glr_reg_covar,
                                sampling="buffer" if spec.method == "glr" else "on_the_fly", nonneg=s.glr_nonneg,
                                device=self.device, seed=s.seed)

    # ---------------------------------------------------------------- training
    def _replayed(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(len(self.memory), (n,), generator=self.gen)
        rows, labels = self.memory.get(idx)
        if self.memory.stores == "frames":   # raw uint8 images -> network input
            rows = rows.reshape(n, -1).float().div_(255.0)
        return rows.to(self.device), labels.to(self.device)

    @torch.no_grad()
    def _lower_latents(self, x: torch.Tensor) -> torch.Tensor:
        """The lower part (eval mode) on every row of ``x``, EVAL_BATCH rows at a time."""
        self.model.eval()
        return torch.cat([self.model.lower(x[i:i + EVAL_BATCH]) for i in range(0, len(x), EVAL_BATCH)])

    def train_experience(self, t: int, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
        """Train on experience ``t``; returns the frozen lower part's latents of ``x`` when it was frozen
        (the memory update reuses them), else None."""
        s, model = self.s, self.model
        frozen = self.spec.freezes and t > 0
        if frozen:
            model.lower.requires_grad_(False)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.SGD(params, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
        replay = self.memory is not None and len(self.memory) > 0
        b_c, b_r = batch_split(len(y), self.memory.capacity, s.minibatch) if replay else (s.minibatch, 0)
        if frozen:   # the frozen lower part sees every image the same way: compute its latents once
            x = self._lower_latents(x)
        net = model.upper if frozen else model
        model.train()
        for _ in range(s.epochs):
            order = torch.randperm(len(y), generator=self.gen).to(self.device)
            for start in range(0, len(y), b_c):
                idx = order[start:start + b_c]
                h, target = x[idx], y[idx]
                if b_r:
                    hr, yr = self._replayed(b_r)
                    h, target = torch.cat([h, hr]), torch.cat([target, yr])
                loss = F.cross_entropy(net(h), target)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        return x if frozen else None

    @torch.no_grad()
    def update_memory(self, t: int, exp: Experience, x: torch.Tensor, y: torch.Tensor,
                      z: torch.Tensor | None = None) -> None:
        """Hand experience ``t`` to the memory through the engine's replay interface
        (:meth:`~latent_replay.replay.base.Replay.after_experience`): it takes the images or the latents
        it keeps. ``z``: the latents of ``x`` if already computed with the current (frozen) lower part."""
        if self.memory.stores == "latents" and z is None:
            z = self._lower_latents(x)

        def rows(pick) -> torch.Tensor:
            return torch.as_tensor(pick, device=self.device)

        data = ExperienceData(t, len(y), labels=lambda pick: y[rows(pick)],
                              frames=lambda pick: torch.from_numpy(self.stream.inputs(exp.ids[pick])).to(self.device),
                              latents=lambda pick: z[rows(pick)])
        self.memory.after_experience(self.slot_rng, data)

    @torch.no_grad()
    def evaluate(self) -> np.ndarray:
        self.model.eval()
        accs = []
        for x, y in self.test:
            correct = sum(int((self.model(x[i:i + EVAL_BATCH]).argmax(1) == y[i:i + EVAL_BATCH]).sum())
                          for i in range(0, len(y), EVAL_BATCH))
            accs.append(correct / max(1, len(y)))
        return np.asarray(accs)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def train_batch(self, t: int) -> dict:
        """Experience ``t``: train, put it into the memory (not after the last: nothing would use it),
        evaluate on every experience's test set; the engine's metrics row (``test_accuracy`` on the whole
        test stream, as the main pipeline's on the whole test list)."""
        result, exp = self.result, self.stream.batches[t]
        x = _float_images(self.stream.inputs(exp.ids), self.device)
        y = torch.from_numpy(exp.labels).to(self.device)
        self._sync()
        t0 = time.perf_counter()
        z = self.train_experience(t, x, y)
        self._sync()   # queued GPU work counts where it was queued, not where it is first waited for
        t1 = time.perf_counter()
        if self.memory is not None and t < len(self.stream.batches) - 1:
            self.update_memory(t, exp, x, y, z)
            result.memory_bytes.append(int(self.memory.nbytes))
        self._sync()
        t2 = time.perf_counter()
        result.matrix[t] = self.evaluate()
        result.train_seconds += t1 - t0
        result.update_seconds += t2 - t1
        result.eval_seconds += time.perf_counter() - t2
        log.debug("%s after experience %d: %s", self.spec.name, t, np.round(result.matrix[t], 3).tolist())
        sizes = np.array([len(e) for e in self.stream.test_sets])
        row = {"batch": t, "kind": "batch", "test_accuracy": float(result.matrix[t] @ sizes / sizes.sum()),
               "train_seconds": t1 - t0 + t2 - t1, "eval_seconds": time.perf_counter() - t2, "new_frames": len(y),
               "classes_seen": self.stream.n_classes, "memory_patterns": 0 if self.memory is None else len(self.memory),
               "memory_bytes": 0 if self.memory is None else int(self.memory.nbytes)}
        self.rows.append(row)
        if self.bar is not None:
            self.bar.update(1)
        return row

    def run(self, bar=None, folder: Path | None = None) -> RunResult:
        """Every experience through the engine's batch loop; with ``folder``, an ordinary run folder there
        (``metrics.csv`` after every experience, ``summary.json`` at the end)."""
        T = len(self.stream.batches)
        self.result, self.rows, self.batches_done = RunResult(self.spec, np.zeros((T, T)), self.s.seed), [], 0
        self.bar = bar   # counts experiences; run_batches' own bar would show each row's accuracy
        run_batches(self, T, folder, checkpoint_every=None, name=self.spec.name)
        result = self.result
        result.memory_patterns = 0 if self.memory is None else len(self.memory)
        if isinstance(self.memory, GenerativeReplay):
            h = self.memory.history
            result.glr = {"config": self.memory.config(), "memory_breakdown": self.memory.memory_breakdown(),
                          "label_agreement": [x["label_agreement"] for x in h],
                          "em_iterations": [x.get("em_iterations") for x in h],
                          "fit_seconds": [x["fit_seconds"] for x in h]}
        if folder is not None:
            accs = [r["test_accuracy"] for r in self.rows]
            write_json(folder / "summary.json", {
                "experiment": self.spec.name, "run": self.s.seed, "finished": True, "batches": T,
                "final_accuracy": accs[-1], "average_accuracy": float(np.mean(accs)),
                "train_seconds": float(sum(r["train_seconds"] for r in self.rows)),
                "eval_seconds": float(sum(r["eval_seconds"] for r in self.rows)),
                "memory_bytes": max(result.memory_bytes, default=0), "stream": self.stream.name,
                "device": str(self.device), "torch": torch.__version__, "glr_bench": result.row()})
        return result


def run_one(spec: RunSpec, settings: BenchSettings, stream: DigitStream, device: torch.device | str = "cpu",
            bar=None, folder: Path | None = None) -> RunResult:
    """Train one run through the stream (a :class:`~latent_replay.streams.digits.DigitStream`: its
    training experiences, and one test set per experience) and return its accuracy matrix and bookkeeping."""
    if spec.method not in METHODS:
        raise ValueError(f"unknown method {spec.method!r} (one of {', '.join(METHODS)})")
    return _Run(spec, replace(settings, split=spec.split), stream, torch.device(device)).run(bar, folder)
