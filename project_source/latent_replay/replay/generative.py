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

    A single-component model is fitted in closed form (sample mean and covariance + ``reg_covar``,
    which is what one EM step of scikit-learn gives); more components use
    :class:`sklearn.mixture.GaussianMixture`. The fitted parameters are kept as plain float64 arrays
    (:class:`Mixture`); sampling is implemented here with an explicit :class:`numpy.random.Generator`
    (scikit-learn's ``sample`` would use its own ``random_state``).

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
K = 10 components has K(2d+1) = 46,090 parameters = 184,360 B (:func:`gmm_parameter_count`,
:func:`latent_bytes`).
"""
from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from .memory import choose_update
from ..utils import seeded_rng

log = logging.getLogger(__name__)

MODES = ("classcond", "joint")
COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
SAMPLINGS = ("buffer", "on_the_fly")
NONNEG = ("none", "clamp", "log1p")
#: Bytes per generator parameter in the accounting (float32), and per stored class id / label.
PARAM_BYTES = 4
ID_BYTES = 8
SLOT_GENERATOR_BYTES = 4
STATE_FORMAT = "latent-replay-generative-memory"


# ------------------------------------------------------------------------------------ accounting
def gmm_parameter_count(covariance_type: str, n_components: int, n_features: int) -> int:
    """Parameters of a Gaussian mixture, counted as in glr-spec §8.1 (K weights, not K-1).

    Per component: diag 2d+1, full d + d(d+1)/2 + 1, spherical d+2; tied: Kd + K + d(d+1)/2 in total.
    """
    k, d = int(n_components), int(n_features)
    if covariance_type == "diag":
        return k * (2 * d + 1)
    if covariance_type == "full":
        return k * (d + d * (d + 1) // 2 + 1)
    if covariance_type == "spherical":
        return k * (d + 2)
    if covariance_type == "tied":
        return k * d + k + d * (d + 1) // 2
    raise ValueError(f"covariance_type must be one of {', '.join(COVARIANCE_TYPES)}, got {covariance_type!r}")


def gmm_bytes(covariance_type: str, n_components: int, n_features: int, bytes_per_param: int = PARAM_BYTES) -> int:
    """Bytes of a Gaussian mixture's parameters (float32 by default): 184,360 for diag, K=10, d=2304."""
    return gmm_parameter_count(covariance_type, n_components, n_features) * bytes_per_param


def pca_parameter_count(n_components: int, n_features: int) -> int:
    """Parameters kept for a PCA map: the p x d components and the d-dim mean."""
    return int(n_components) * int(n_features) + int(n_features)


def latent_bytes(shape, dtype: torch.dtype = torch.float32) -> int:
    """Bytes of one latent of ``shape`` stored as ``dtype``: 9,216 for (2304,) in float32."""
    return int(np.prod(tuple(shape), dtype=np.int64)) * torch.empty(0, dtype=dtype).element_size()


# ------------------------------------------------------------------------------------ one mixture
@dataclass
class Mixture:
    """A fitted Gaussian mixture as plain float64 arrays, sampled with an explicit RNG.

    ``covariances`` follows scikit-learn's layout: diag (K, p), spherical (K,), full (K, p, p),
    tied (p, p).
    """

    covariance_type: str
    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    _chol: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def n_components(self) -> int:
        return int(self.means.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.means.shape[1])

    @property
    def n_parameters(self) -> int:
        return gmm_parameter_count(self.covariance_type, self.n_components, self.n_features)

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_sklearn(cls, gm) -> "Mixture":
        return cls(gm.covariance_type, np.asarray(gm.weights_, np.float64), np.asarray(gm.means_, np.float64),
                   np.asarray(gm.covariances_, np.float64))

    @classmethod
    def gaussian(cls, x: np.ndarray, covariance_type: str, reg_covar: float) -> "Mixture":
        """The single-component maximum-likelihood fit (what scikit-learn's EM returns for K = 1)."""
        mean = x.mean(axis=0)
        diff = x - mean
        p = x.shape[1]
        if covariance_type in ("diag", "spherical"):
            var = (diff * diff).mean(axis=0) + reg_covar
            cov = var[None] if covariance_type == "diag" else np.array([var.mean()])
        else:
            full = diff.T @ diff / len(x)
            full.flat[:: p + 1] += reg_covar
            cov = full[None] if covariance_type == "full" else full
        return cls(covariance_type, np.ones(1), mean[None], cov)

    # ---------------------------------------------------------------- sampling
    def _cholesky(self) -> np.ndarray:
        """Lower Cholesky factors of the covariances (full: (K, p, p); tied: (p, p)); cached."""
        if self._chol is None:
            self._chol = np.linalg.cholesky(self.covariances)
        return self._chol

    def sample_component(self, k: int, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` draws from component ``k``: mean + scale · N(0, I) (standard normals drawn in float32,
        which is twice as fast and ample for float32 latents; the affine map is in float64)."""
        eps = rng.standard_normal((n, self.n_features), dtype=np.float32)
        ct = self.covariance_type
        if ct in ("diag", "spherical"):
            scale = np.sqrt(self.covariances[k])
            return self.means[k] + eps * (scale if ct == "diag" else float(scale))
        chol = self._cholesky()
        return self.means[k] + eps @ (chol[k] if ct == "full" else chol).T

    def component_counts(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """How many of ``n`` draws come from each component: Multinomial(n, weights)."""
        w = self.weights / self.weights.sum()
        return rng.multinomial(n, w)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` draws from the mixture, ordered by component (as the reference)."""
        counts = self.component_counts(n, rng)
        parts = [self.sample_component(k, int(c), rng) for k, c in enumerate(counts) if c > 0]
        return np.concatenate(parts) if parts else np.zeros((0, self.n_features))

    # ---------------------------------------------------------------- scoring
    def weighted_log_prob(self, x: np.ndarray) -> np.ndarray:
        """log(weight_k) + log N(x | mean_k, cov_k) for every row and component: (N, K)."""
        ct, p = self.covariance_type, self.n_features
        const = -0.5 * p * math.log(2 * math.pi)
        if ct in ("diag", "spherical"):
            var = self.covariances if ct == "diag" else self.covariances[:, None] * np.ones((1, p))
            prec = 1.0 / var
            quad = ((x * x) @ prec.T - 2.0 * x @ (self.means * prec).T
                    + np.sum(self.means * self.means * prec, axis=1)[None])
            logdet = np.sum(np.log(var), axis=1)
        else:
            from scipy.linalg import solve_triangular

            chol = self._cholesky()
            quad = np.empty((len(x), self.n_components))
            logdet = np.empty(self.n_components)
            for k in range(self.n_components):
                lk = chol[k] if ct == "full" else chol
                y = solve_triangular(lk, (x - self.means[k]).T, lower=True)
                quad[:, k] = np.sum(y * y, axis=0)
                logdet[k] = 2.0 * np.sum(np.log(np.diag(lk)))
        with np.errstate(divide="ignore"):
            logw = np.log(self.weights)
        return const - 0.5 * (quad + logdet[None]) + logw[None]

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {"covariance_type": self.covariance_type, "weights": _t(self.weights), "means": _t(self.means),
                "covariances": _t(self.covariances)}

    @classmethod
    def from_state(cls, state: dict) -> "Mixture":
        return cls(state["covariance_type"], _np(state["weights"]), _np(state["means"]), _np(state["covariances"]))


def _t(a: np.ndarray | None) -> torch.Tensor | None:
    return None if a is None else torch.from_numpy(np.ascontiguousarray(a).copy())


def _np(t: torch.Tensor | None) -> np.ndarray | None:
    return None if t is None else t.detach().cpu().numpy().copy()


# ------------------------------------------------------------------------------------ one batch
@dataclass
class BatchGenerator:
    """The generator(s) fitted on one batch, in (optionally PCA-reduced) latent space.

    ``classes``: the batch's sorted class ids. ``mixtures``: one per class (classcond) or one whose
    component k belongs to ``classes[k]`` (joint). ``class_priors``: the class frequencies used to draw
    labels (classcond); in joint mode the labels follow the fitted mixture weights, as the reference.
    """

    batch: int
    joint: bool
    classes: np.ndarray
    mixtures: list
    class_priors: np.ndarray | None = None
    pca_mean: np.ndarray | None = None
    pca_components: np.ndarray | None = None

    @property
    def priors(self) -> np.ndarray:
        return self.mixtures[0].weights if self.joint else self.class_priors

    @property
    def n_parameters(self) -> int:
        n = sum(m.n_parameters for m in self.mixtures)
        if not self.joint:
            n += len(self.classes)
        if self.pca_components is not None:
            n += pca_parameter_count(*self.pca_components.shape)
        return n

    @property
    def nbytes(self) -> int:
        """Parameters at float32 size plus the class ids."""
        return self.n_parameters * PARAM_BYTES + len(self.classes) * ID_BYTES

    def class_index(self, label: int) -> int:
        i = int(np.searchsorted(self.classes, label))
        if i >= len(self.classes) or self.classes[i] != label:
            raise KeyError(f"class {label} has no model in the generator of batch {self.batch}")
        return i

    def draw_labels(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` labels drawn as Multinomial(n, priors), sorted by class (the reference's order)."""
        p = self.priors / self.priors.sum()
        return np.repeat(self.classes, rng.multinomial(n, p)).astype(np.int64)

    def sample(self, label: int, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` draws of class ``label``, mapped back to the (transformed) latent space: (n, d)."""
        i = self.class_index(label)
        z = self.mixtures[0].sample_component(i, n, rng) if self.joint else self.mixtures[i].sample(n, rng)
        if self.pca_components is not None:
            z = z @ self.pca_components + self.pca_mean
        return z

    def reduce(self, x: np.ndarray) -> np.ndarray:
        return x if self.pca_components is None else (x - self.pca_mean) @ self.pca_components.T

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Class ids by maximum posterior (joint: the most responsible component's class)."""
        z = self.reduce(x)
        if self.joint:
            scores = self.mixtures[0].weighted_log_prob(z)
        else:
            from scipy.special import logsumexp

            with np.errstate(divide="ignore"):
                logp = np.log(self.class_priors)
            scores = np.stack([logsumexp(m.weighted_log_prob(z), axis=1) for m in self.mixtures], axis=1) + logp
        return self.classes[np.argmax(scores, axis=1)]

    def state_dict(self) -> dict:
        return {"batch": self.batch, "joint": self.joint, "classes": _t(self.classes),
                "mixtures": [m.state_dict() for m in self.mixtures], "class_priors": _t(self.class_priors),
                "pca_mean": _t(self.pca_mean), "pca_components": _t(self.pca_components)}

    @classmethod
    def from_state(cls, s: dict) -> "BatchGenerator":
        return cls(int(s["batch"]), bool(s["joint"]), _np(s["classes"]), [Mixture.from_state(m) for m in s["mixtures"]],
                   _np(s["class_priors"]), _np(s["pca_mean"]), _np(s["pca_components"]))


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

    def _gmm(self, n_components: int, rs: int, **init):
        from sklearn.mixture import GaussianMixture

        return GaussianMixture(n_components=n_components, covariance_type=self.covariance_type,
                               reg_covar=self.reg_covar, max_iter=self.max_iter, tol=self.tol,
                               random_state=rs, **init)

    def _run_em(self, gm, x: np.ndarray, info: dict):
        """Fit ``gm``; non-convergence is logged and recorded in ``info`` instead of warned."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Best performing initialization did not converge")
            try:
                gm.fit(x)
            except ValueError as err:
                if "ill-defined" in str(err):
                    raise ValueError(f"{err} (a {self.covariance_type} covariance on ReLU latents usually "
                                     "needs reg_covar >= 1e-3, glr-spec §9)") from err
                raise
        info["em_iterations"] = max(info.get("em_iterations", 0), int(gm.n_iter_))
        info["converged"] = bool(info.get("converged", True) and gm.converged_)
        if not gm.converged_:
            log.warning("a GMM of batch %s did not converge in %d EM iterations", info["batch"], self.max_iter)
        return Mixture.from_sklearn(gm)

    def _class_precisions(self, x: np.ndarray, y: np.ndarray, classes: np.ndarray, means: np.ndarray) -> np.ndarray:
        """precisions_init for the joint fit from per-class (co)variances + reg_covar."""
        ct, reg = self.covariance_type, self.reg_covar
        diffs = [x[y == c] - means[i] for i, c in enumerate(classes)]
        if ct == "diag":
            return np.stack([1.0 / ((d * d).mean(axis=0) + reg) for d in diffs])
        if ct == "spherical":
            return np.array([1.0 / ((d * d).mean() + reg) for d in diffs])
        eye = np.eye(x.shape[1])
        if ct == "full":
            return np.stack([np.linalg.inv(d.T @ d / len(d) + reg * eye) for d in diffs])
        pooled = sum(d.T @ d for d in diffs) / len(x)
        return np.linalg.inv(pooled + reg * eye)

    def _fit(self, batch_index: int, x: np.ndarray, y: np.ndarray, rng: np.random.Generator,
             info: dict) -> BatchGenerator:
        pca_mean = pca_comp = None
        if self.pca_components is not None:
            from sklearn.decomposition import PCA

            p = min(self.pca_components, x.shape[0], x.shape[1])
            pca = PCA(n_components=p, random_state=int(rng.integers(2 ** 31 - 1))).fit(x)
            pca_mean, pca_comp = pca.mean_.astype(np.float64), pca.components_.astype(np.float64)
            x = (x - pca_mean) @ pca_comp.T
            info["pca_dims"] = p
            info["pca_explained_variance"] = float(np.sum(pca.explained_variance_ratio_))
        classes, counts = np.unique(y, return_counts=True)
        priors = counts / counts.sum()
        if self.mode == "classcond":
            mixtures = []
            for c in classes:
                xc = x[y == c]
                k = min(self.n_components, len(xc))
                rs = int(rng.integers(2 ** 31 - 1))
                if k == 1:
                    mixtures.append(Mixture.gaussian(xc, self.covariance_type, self.reg_covar))
                else:
                    mixtures.append(self._run_em(self._gmm(k, rs), xc, info))
            return BatchGenerator(batch_index, False, classes.astype(np.int64), mixtures, priors, pca_mean, pca_comp)
        means = np.stack([x[y == c].mean(axis=0) for c in classes])
        init = {"weights_init": priors, "means_init": means,
                "precisions_init": self._class_precisions(x, y, classes, means),
                "init_params": "random_from_data"}   # the cheapest; every parameter is initialised from labels
        gm = self._gmm(len(classes), int(rng.integers(2 ** 31 - 1)), **init)
        return BatchGenerator(batch_index, True, classes.astype(np.int64), [self._run_em(gm, x, info)],
                              None, pca_mean, pca_comp)

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
