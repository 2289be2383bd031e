"""Generative latent replay (GLR, glr-spec §4.5-4.7, §8, §11-12): a replay memory of *generators*.

:class:`GenerativeReplay` is a drop-in replacement for :class:`~latent_replay.replay.ReplayMemory`
in the trainer's replay mode ``generative``: it offers ``capacity``, ``len()``, ``labels``,
``get(index)``, ``nbytes`` and ``state_dict()``/``load_state_dict()``, and instead of ``insert`` it has
``update(rng, batch_index, latents, labels)``, called after each training batch with *all* latents of
the batch. ``update`` fits the batch's density model(s) and then refreshes the (virtual) buffer with
the update rule of the latent memory (:func:`~latent_replay.replay.memory.choose_update`):
``n_cur = min(M // (b+1), N)`` new slots, the other ``M - n_cur`` slots kept (glr-spec §4.7).

Generators (``mode``)
    * ``classcond`` (default): one Gaussian mixture per class of each batch (``n_components``
      components, fewer for classes with fewer samples). A sample's label is the class of the model
      that drew it, so labels are exact by construction (glr-spec §12).
    * ``joint`` (the reference, glr-spec §4.5): one mixture per batch with K = its number of classes,
      fitted by unsupervised EM; component k is initialised on the k-th class id of the batch (sorted)
      and a sample drawn from component k is labelled with that class id (glr-spec §11.3: class ids
      need not be 0..K-1). scikit-learn is given ``means_init`` = class means, ``weights_init`` =
      class frequencies and ``precisions_init`` = per-class precisions (+``reg_covar``); with only
      ``means_init`` the component/class mapping scrambles (glr-spec §9). The agreement between
      the predicted component's class and the true label is recorded per batch in ``history`` and
      available through :meth:`GenerativeReplay.label_fidelity`.

    The density models themselves (fitting, sampling with an explicit RNG, scoring, parameter counts)
    are in :mod:`latent_replay.replay.gmm` (:class:`~latent_replay.replay.gmm.Mixture`,
    :class:`~latent_replay.replay.gmm.BatchGenerator`, :class:`~latent_replay.replay.gmm.GeneratorFitter`);
    this module is the replay policy around them. Its public names are re-exported here.

Sampling (``sampling``)
    * ``buffer`` (the reference): M materialised float32 rows; each batch draws ``n_cur`` fresh rows
      from its own generator only (older generators are never resampled) and keeps the rest. Only
      the latest batch's generator is kept (for :meth:`label_fidelity` and diagnostics), and it is
      counted in ``nbytes``.
    * ``on_the_fly`` (what the paper advertises, glr-spec §8.1, §12): a label-only virtual buffer
      with, per slot, the generator (batch) and the class; every :meth:`get` draws fresh latents for
      the requested slots. All generators that still own a slot are kept; the others are dropped.

Non-negativity (``nonneg``, glr-spec §11.8): post-ReLU latents are >= 0 but Gaussian samples are not.
``none`` keeps raw samples, ``clamp`` clamps them at 0, ``log1p`` fits on ``log1p(z)`` (inputs are
clamped at 0 first), samples, maps back with ``expm1`` and clamps at 0.

PCA (``pca_components``): one :class:`sklearn.decomposition.PCA` per batch (fitted on all of the
batch's latents, after ``log1p``) reduces d to ``min(pca_components, N, d)`` before the generators
are fitted; samples are mapped back with the stored mean and components. Meant for big latents such
as ``conv5_4/dw`` (512x8x8 = 32,768 values). With ``on_the_fly`` every batch keeps its
own PCA basis (p x d values), which can cost more than a buffer of real latents.

Randomness: everything random comes from explicit generators. The slot choice of the update rule
uses the ``rng`` passed to :meth:`update` (the trainer's, as for :class:`ReplayMemory`); the labels
and latents drawn in :meth:`update`, and the seeds of scikit-learn's k-means/PCA, come from
``seeded_rng(seed, "generative-fit", batch_index)``; the fresh samples of on-the-fly :meth:`get` come
from one persistent ``seeded_rng(seed, "generative-draws")`` (:func:`~latent_replay.utils.seeded_rng`) whose state is part of
:meth:`state_dict`. Identical inputs and seeds therefore give identical memories, and a restored
state continues bit-exactly.

Memory accounting (glr-spec §8.1, §14): ``nbytes`` is what is kept between batches:
generator parameters counted at **float32 size (4 bytes each) although they are held in float64**
as scikit-learn returns them (the size a deployment would store, and the unit of the spec's numbers),
plus 8 bytes per stored class id; buffer rows at float32; 8 bytes per label (int64, as
:class:`ReplayMemory`) plus, on the fly, 4 bytes per slot for its generator index. For the reference
case (d = 2304, fp32): one latent is 9,216 B, an M = 6000 buffer 55.3 MB, and a diagonal GMM with
K = 10 components has K(2d+1) = 46,090 parameters = 184,360 B
(:func:`~latent_replay.replay.gmm.gmm_parameter_count`, :func:`~latent_replay.replay.gmm.latent_bytes`).
"""
from __future__ import annotations

import logging
import time

import numpy as np
import torch

from .gmm import (COVARIANCE_TYPES, ID_BYTES, PARAM_BYTES, BatchGenerator, GeneratorFitter, Mixture, gmm_bytes,
                  gmm_parameter_count, latent_bytes, pca_parameter_count)
from .memory import choose_update
from ..utils import seeded_rng

log = logging.getLogger(__name__)

MODES = ("classcond", "joint")
SAMPLINGS = ("buffer", "on_the_fly")
NONNEG = ("none", "clamp", "log1p")
#: Bytes per on-the-fly slot for its generator index (int32); parameters and ids: see :mod:`.gmm`.
SLOT_GENERATOR_BYTES = 4
STATE_FORMAT = "latent-replay-generative-memory"

#: The density models' names stay importable from here (:mod:`latent_replay.replay.gmm` is their home).
__all__ = ["COVARIANCE_TYPES", "ID_BYTES", "MODES", "NONNEG", "PARAM_BYTES", "SAMPLINGS", "SLOT_GENERATOR_BYTES",
           "STATE_FORMAT", "BatchGenerator", "GenerativeReplay", "GeneratorFitter", "Mixture", "gmm_bytes",
           "gmm_parameter_count", "latent_bytes", "pca_parameter_count"]


# ------------------------------------------------------------------------------------ the memory
class GenerativeReplay:
    """Replay memory of Gaussian-mixture generators over latents; see the module docstring.

    Args:
        capacity: M, the number of (virtual) buffer slots.
        mode: ``classcond`` (one mixture per class of each batch) or ``joint`` (the reference: one
            mixture per batch, K = number of classes, labels = component's class).
        n_components: components per class (classcond); must be 1 in joint mode (K is the class count).
        covariance_type, reg_covar, max_iter, tol: as :class:`sklearn.mixture.GaussianMixture`.
        pca_components: reduce each batch to this many PCA dimensions before fitting (None = no PCA).
        sampling: ``buffer`` (materialised rows) or ``on_the_fly`` (labels only, fresh draws per get).
        nonneg: ``none``, ``clamp`` or ``log1p``.
        device: where the buffer, the labels and the returned latents live.
        seed: seeds the generators' RNGs (see the module docstring).
    """

    def __init__(self, capacity: int, *, mode: str = "classcond", n_components: int = 1,
                 covariance_type: str = "diag", reg_covar: float = 1e-6, max_iter: int = 100, tol: float = 1e-3,
                 pca_components: int | None = None, sampling: str = "buffer", nonneg: str = "clamp",
                 device: torch.device | str = "cpu", seed: int = 0):
        if capacity <= 0:
            raise ValueError(f"memory capacity must be > 0, got {capacity}")
        for name, value, choices in (("mode", mode, MODES), ("covariance_type", covariance_type, COVARIANCE_TYPES),
                                     ("sampling", sampling, SAMPLINGS), ("nonneg", nonneg, NONNEG)):
            if value not in choices:
                raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
        if n_components < 1:
            raise ValueError(f"n_components must be >= 1, got {n_components}")
        if mode == "joint" and n_components != 1:
            raise ValueError("mode 'joint' uses one component per class of the batch; n_components must be 1")
        if pca_components is not None and pca_components < 1:
            raise ValueError(f"pca_components must be >= 1 or None, got {pca_components}")
        self.capacity = int(capacity)
        self.mode, self.n_components, self.covariance_type = mode, int(n_components), covariance_type
        self.reg_covar, self.max_iter, self.tol = float(reg_covar), int(max_iter), float(tol)
        self.pca_components = None if pca_components is None else int(pca_components)
        self.sampling, self.nonneg, self.seed = sampling, nonneg, int(seed)
        self.device = torch.device(device)
        self.latent_shape: tuple[int, ...] | None = None
        self.generators: list[BatchGenerator] = []
        self.buffer: torch.Tensor | None = None                  # buffer mode: (len, *latent_shape) float32
        self._labels = torch.zeros(0, dtype=torch.long, device=self.device)
        self._slot_generator = np.zeros(0, dtype=np.int32)      # on the fly: index into self.generators
        self._draw_rng = seeded_rng(self.seed, "generative-draws")
        #: One dict per fitted batch: classes, sizes, fit time, EM iterations, label agreement.
        self.history: list[dict] = []

    # ---------------------------------------------------------------- config
    def config(self) -> dict:
        return {"capacity": self.capacity, "mode": self.mode, "n_components": self.n_components,
                "covariance_type": self.covariance_type, "reg_covar": self.reg_covar, "max_iter": self.max_iter,
                "tol": self.tol, "pca_components": self.pca_components, "sampling": self.sampling,
                "nonneg": self.nonneg, "seed": self.seed}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"GenerativeReplay({args}, len={len(self)})"

    @classmethod
    def from_config(cls, cfg, device: torch.device | str = "cpu", seed: int = 0) -> "GenerativeReplay":
        """The memory of an experiment's ``replay_memory`` and ``glr`` settings (ExperimentConfig)."""
        g = cfg.glr
        return cls(cfg.replay_memory, mode=g.mode, n_components=g.n_components, covariance_type=g.covariance_type,
                   reg_covar=g.reg_covar, max_iter=g.max_iter, tol=g.tol, pca_components=g.pca_components,
                   sampling=g.sampling, nonneg=g.nonneg, device=device, seed=seed)

    # ---------------------------------------------------------------- interface of ReplayMemory
    #: Its rows are latents (:class:`~latent_replay.replay.base.Replay`).
    stores = "latents"

    def after_experience(self, rng, data) -> None:
        """Fit this experience's generators on the latents of all its candidates (:meth:`update`)."""
        every = np.arange(data.size)
        self.update(rng, data.index, data.latents(every), data.labels(every))

    def __len__(self) -> int:
        return int(self._labels.numel())

    @property
    def labels(self) -> torch.Tensor:
        """Labels of the (virtual) buffer slots, int64 on ``device``."""
        return self._labels

    def get(self, index) -> tuple[torch.Tensor, torch.Tensor]:
        """(float32 latents of shape (len(index), *latent_shape), labels) at ``index``.

        On the fly, every call draws fresh latents from each slot's generator and class.
        """
        idx = torch.as_tensor(np.asarray(index) if not torch.is_tensor(index) else index, dtype=torch.long)
        labels = self._labels[idx.to(self.device)]
        if self.sampling == "buffer":
            if self.buffer is None:
                return self._empty(len(idx)), labels
            return self.buffer[idx.to(self.buffer.device)], labels
        idx_np = idx.cpu().numpy()
        if self.latent_shape is None or len(idx_np) == 0:
            return self._empty(len(idx_np)), labels
        gens, labs = self._slot_generator[idx_np], labels.cpu().numpy()
        out = np.empty((len(idx_np), int(np.prod(self.latent_shape))), dtype=np.float32)
        keys = np.stack([gens.astype(np.int64), labs], axis=1)
        uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        for u, (g, c) in enumerate(uniq):   # sorted (generator, class) groups: a deterministic draw order
            rows = np.flatnonzero(inverse == u)
            out[rows] = self._finish(self.generators[int(g)].sample(int(c), len(rows), self._draw_rng))
        return torch.from_numpy(out).view(len(idx_np), *self.latent_shape).to(self.device), labels

    def _empty(self, n: int) -> torch.Tensor:
        shape = self.latent_shape if self.latent_shape is not None else ()
        if n:
            raise IndexError("the generative memory is empty")
        return torch.zeros((0, *shape), dtype=torch.float32, device=self.device)

    # ---------------------------------------------------------------- transforms
    def _prepare(self, latents: torch.Tensor) -> np.ndarray:
        """Flattened float64 rows in the space the generators model (log1p applied)."""
        x = latents.detach().to("cpu", torch.float64).reshape(len(latents), -1).numpy()
        if self.nonneg == "log1p":
            x = np.log1p(np.maximum(x, 0.0))
        return x

    def _finish(self, z: np.ndarray) -> np.ndarray:
        """Generator draws back to latent values (expm1, clamp), as float32 rows."""
        if self.nonneg == "log1p":
            z = np.expm1(z)
        if self.nonneg in ("clamp", "log1p"):
            z = np.maximum(z, 0.0)
        return z.astype(np.float32)

    # ---------------------------------------------------------------- fitting
    def _batch_rng(self, batch_index: int) -> np.random.Generator:
        return seeded_rng(self.seed, "generative-fit", batch_index)

    def _fit(self, batch_index: int, x: np.ndarray, y: np.ndarray, rng: np.random.Generator,
             info: dict) -> BatchGenerator:
        """The generator of batch ``batch_index`` (:class:`~latent_replay.replay.gmm.GeneratorFitter`
        with this memory's settings; non-convergence is logged on this module's logger)."""
        fitter = GeneratorFitter(self.mode == "joint", self.n_components, self.covariance_type, self.reg_covar,
                                 self.max_iter, self.tol, self.pca_components, logger=log)
        return fitter.fit(batch_index, x, y, rng, info)

    # ---------------------------------------------------------------- the update
    def update(self, rng, batch_index: int, latents: torch.Tensor, labels: torch.Tensor) -> None:
        """Fit the generator(s) of batch ``batch_index`` on all its latents, then refresh the buffer.

        ``rng`` (a numpy ``Generator``/``RandomState``, or None for the batch's own generator) picks
        the slots as :func:`choose_update`: ``min(M // (b+1), N)`` new slots first, then the kept
        ones. The new slots' labels and (buffer mode) latents are drawn from the new generator only.
        """
        if len(latents) == 0:
            raise ValueError("update needs at least one latent")
        if len(latents) != len(labels):
            raise ValueError(f"{len(latents)} latents but {len(labels)} labels")
        shape = tuple(int(s) for s in latents.shape[1:])
        if self.latent_shape is not None and shape != self.latent_shape:
            raise ValueError(f"latent shape {shape} differs from the memory's {self.latent_shape}")
        self.latent_shape = shape
        x = self._prepare(latents)
        y = torch.as_tensor(labels).detach().cpu().numpy().astype(np.int64).reshape(-1)
        brng = self._batch_rng(batch_index)
        info = {"batch": int(batch_index), "n": int(len(y)), "classes": [int(c) for c in np.unique(y)],
                "dims": int(x.shape[1])}
        t0 = time.perf_counter()
        gen = self._fit(batch_index, x, y, brng, info)
        info["fit_seconds"] = time.perf_counter() - t0
        info["label_agreement"] = float(np.mean(gen.predict(x) == y)) if gen.joint else 1.0
        info["generator_bytes"] = gen.nbytes
        self.history.append(info)

        new, keep = choose_update(brng if rng is None else rng, self.capacity, batch_index, len(y), len(self))
        new_labels = gen.draw_labels(len(new), brng)
        keep_t = torch.as_tensor(keep, dtype=torch.long)
        if self.sampling == "buffer":
            rows = np.empty((len(new_labels), x.shape[1]), dtype=np.float32)
            for c in np.unique(new_labels):   # labels are sorted by class: one draw per class
                sel = np.flatnonzero(new_labels == c)
                rows[sel] = self._finish(gen.sample(int(c), len(sel), brng))
            fresh = torch.from_numpy(rows).view(len(rows), *shape).to(self.device)
            self.buffer = fresh if self.buffer is None else torch.cat([fresh, self.buffer[keep_t.to(self.device)]])
            self.generators = [gen]
        else:
            self.generators.append(gen)
            slots = np.concatenate([np.full(len(new), len(self.generators) - 1, np.int32), self._slot_generator[keep]])
            self._slot_generator = slots
            self._prune()
        self._labels = torch.cat([torch.from_numpy(new_labels).to(self.device), self._labels[keep_t.to(self.device)]])

    def _prune(self) -> None:
        """On the fly: drop the generators that no slot refers to any more."""
        used = np.unique(self._slot_generator)
        if len(used) == len(self.generators):
            return
        remap = np.full(len(self.generators), -1, np.int32)
        remap[used] = np.arange(len(used), dtype=np.int32)
        self.generators = [self.generators[i] for i in used]
        self._slot_generator = remap[self._slot_generator]

    # ---------------------------------------------------------------- diagnostics
    def generator_for(self, batch_index: int | None = None) -> BatchGenerator:
        """The kept generator of ``batch_index`` (None: the latest)."""
        if not self.generators:
            raise LookupError("no generator has been fitted (or kept) yet")
        if batch_index is None:
            return max(self.generators, key=lambda g: g.batch)
        for g in self.generators:
            if g.batch == batch_index:
                return g
        raise LookupError(f"the generator of batch {batch_index} is not kept")

    def predict(self, latents: torch.Tensor, batch_index: int | None = None) -> np.ndarray:
        """Class ids that a batch's generator assigns to real latents (maximum posterior)."""
        return self.generator_for(batch_index).predict(self._prepare(latents))

    def label_fidelity(self, latents: torch.Tensor, labels: torch.Tensor, batch_index: int | None = None) -> float:
        """Joint mode: share of real latents whose most responsible component's class is their label
        (glr-spec §12 diagnostics; with only ``means_init`` this falls to ~0.2, §9). Class-conditional
        generators label their samples exactly, so this is 1.0 by construction."""
        if self.mode == "classcond":
            return 1.0
        y = torch.as_tensor(labels).detach().cpu().numpy().reshape(-1)
        return float(np.mean(self.predict(latents, batch_index) == y))

    # ---------------------------------------------------------------- accounting
    def memory_breakdown(self) -> dict:
        """Bytes kept between batches: generators (float32-size parameters + class ids), buffer rows
        (float32) and labels (int64, plus an int32 generator index per slot on the fly)."""
        per_slot = ID_BYTES + (SLOT_GENERATOR_BYTES if self.sampling == "on_the_fly" else 0)
        return {
            "generator_bytes": int(sum(g.nbytes for g in self.generators)),
            "buffer_bytes": 0 if self.buffer is None else int(self.buffer.numel() * self.buffer.element_size()),
            "label_bytes": len(self) * per_slot,
        }

    @property
    def nbytes(self) -> int:
        return int(sum(self.memory_breakdown().values()))

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict:
        """Plain tensors and Python values only (no pickled scikit-learn objects)."""
        return {
            "format": STATE_FORMAT, "config": self.config(),
            "latent_shape": None if self.latent_shape is None else list(self.latent_shape),
            "generators": [g.state_dict() for g in self.generators],
            "buffer": None if self.buffer is None else self.buffer.cpu(),
            "labels": self._labels.cpu(),
            "slot_generator": torch.from_numpy(self._slot_generator.copy()),
            "draw_rng": self._draw_rng.bit_generator.state,
            "history": [dict(h) for h in self.history],
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("format") != STATE_FORMAT:
            raise ValueError("not a generative replay memory state")
        if state["config"] != self.config():
            diff = {k: (v, self.config().get(k)) for k, v in state["config"].items() if self.config().get(k) != v}
            raise ValueError(f"checkpointed generative memory does not match the configuration: {diff}")
        self.latent_shape = None if state["latent_shape"] is None else tuple(state["latent_shape"])
        self.generators = [BatchGenerator.from_state(g) for g in state["generators"]]
        self.buffer = None if state["buffer"] is None else state["buffer"].to(self.device)
        self._labels = state["labels"].to(self.device, torch.long)
        self._slot_generator = state["slot_generator"].cpu().numpy().astype(np.int32)
        self._draw_rng = np.random.default_rng()
        self._draw_rng.bit_generator.state = state["draw_rng"]
        self.history = [dict(h) for h in state["history"]]
