"""Density models of generative latent replay (glr-spec §4.5, §8.1, §9, §14): Gaussian mixtures over
latents, how they are fitted, sampled and scored, and what they weigh. No replay policy here (which
slots are refreshed, when generators are fitted or dropped, the non-negativity map, the memory's
state): that is :class:`~latent_replay.replay.generative.GenerativeReplay`.

:class:`Mixture`
    One fitted Gaussian mixture as plain float64 arrays (scikit-learn's layout), sampled with an
    explicit :class:`numpy.random.Generator` (scikit-learn's ``sample`` would use its own
    ``random_state``) and scored (:meth:`Mixture.weighted_log_prob`).
:class:`BatchGenerator`
    The generator(s) fitted on one batch: one mixture per class (class-conditional) or one mixture
    whose component k belongs to the batch's k-th class id (joint), optionally in a PCA-reduced space;
    it draws labels and the latents of a class, predicts classes, and stores itself as plain tensors.
:class:`GeneratorFitter`
    Fits a :class:`BatchGenerator` on one batch's latents. A single-component model is fitted in
    closed form (sample mean and covariance + ``reg_covar``, which is what one EM step of scikit-learn
    gives); more components use :class:`sklearn.mixture.GaussianMixture`. The joint mixture is
    initialised from the labels (``means_init`` = class means, ``weights_init`` = class frequencies,
    ``precisions_init`` = per-class precisions + ``reg_covar``; with only ``means_init`` the
    component/class mapping scrambles, glr-spec §9). PCA (one :class:`sklearn.decomposition.PCA` per
    batch) reduces d to ``min(pca_components, N, d)`` before the mixtures are fitted.

Accounting (glr-spec §8.1, §14): parameters are counted at **float32 size** (:data:`PARAM_BYTES`)
although they are held in float64, plus :data:`ID_BYTES` per stored class id. For the reference case
(d = 2304, fp32): one latent is 9,216 B (:func:`latent_bytes`) and a diagonal GMM with K = 10
components has K(2d+1) = 46,090 parameters = 184,360 B (:func:`gmm_parameter_count`, :func:`gmm_bytes`).
"""
from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

log = logging.getLogger(__name__)

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
#: Bytes per generator parameter in the accounting (float32), and per stored class id or label (int64).
PARAM_BYTES = 4
ID_BYTES = 8


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


# ------------------------------------------------------------------------------------ fitting
@dataclass(frozen=True)
class GeneratorFitter:
    """How one batch's :class:`BatchGenerator` is fitted (see the module docstring).

    ``joint``: one mixture with a component per class (else one mixture of up to ``n_components``
    components per class). ``covariance_type``, ``reg_covar``, ``max_iter``, ``tol``: as
    :class:`sklearn.mixture.GaussianMixture`. ``pca_components``: PCA dimensions (None = no PCA).
    ``logger``: where a mixture that did not converge is reported.
    """

    joint: bool
    n_components: int
    covariance_type: str
    reg_covar: float
    max_iter: int
    tol: float
    pca_components: int | None = None
    logger: logging.Logger = field(default=log, compare=False, repr=False)

    def fit(self, batch_index: int, x: np.ndarray, y: np.ndarray, rng: np.random.Generator,
            info: dict) -> BatchGenerator:
        """The generator of batch ``batch_index`` fitted on the rows ``x`` (float64) with labels ``y``.

        ``rng`` seeds scikit-learn's PCA and k-means (one draw per fit, in a fixed order); ``info``
        receives the PCA size and the EM iterations and convergence.
        """
        pca_mean = pca_comp = None
        if self.pca_components is not None:
            x, pca_mean, pca_comp = self._reduce(x, rng, info)
        classes, counts = np.unique(y, return_counts=True)
        priors = counts / counts.sum()
        if not self.joint:
            mixtures = [self._fit_class(x[y == c], rng, info) for c in classes]
            return BatchGenerator(batch_index, False, classes.astype(np.int64), mixtures, priors, pca_mean, pca_comp)
        means = np.stack([x[y == c].mean(axis=0) for c in classes])
        init = {"weights_init": priors, "means_init": means,
                "precisions_init": self._class_precisions(x, y, classes, means),
                "init_params": "random_from_data"}   # the cheapest; every parameter is initialised from labels
        gm = self._gmm(len(classes), int(rng.integers(2 ** 31 - 1)), **init)
        return BatchGenerator(batch_index, True, classes.astype(np.int64), [self._run_em(gm, x, info)],
                              None, pca_mean, pca_comp)

    def _reduce(self, x: np.ndarray, rng: np.random.Generator, info: dict):
        """PCA of the batch: (reduced rows, mean, components)."""
        from sklearn.decomposition import PCA

        p = min(self.pca_components, x.shape[0], x.shape[1])
        pca = PCA(n_components=p, random_state=int(rng.integers(2 ** 31 - 1))).fit(x)
        pca_mean, pca_comp = pca.mean_.astype(np.float64), pca.components_.astype(np.float64)
        info["pca_dims"] = p
        info["pca_explained_variance"] = float(np.sum(pca.explained_variance_ratio_))
        return (x - pca_mean) @ pca_comp.T, pca_mean, pca_comp

    def _fit_class(self, xc: np.ndarray, rng: np.random.Generator, info: dict) -> Mixture:
        """One class's mixture: ``min(n_components, len(xc))`` components, one in closed form."""
        k = min(self.n_components, len(xc))
        rs = int(rng.integers(2 ** 31 - 1))
        if k == 1:
            return Mixture.gaussian(xc, self.covariance_type, self.reg_covar)
        return self._run_em(self._gmm(k, rs), xc, info)

    def _gmm(self, n_components: int, rs: int, **init):
        from sklearn.mixture import GaussianMixture

        return GaussianMixture(n_components=n_components, covariance_type=self.covariance_type,
                               reg_covar=self.reg_covar, max_iter=self.max_iter, tol=self.tol,
                               random_state=rs, **init)

    def _run_em(self, gm, x: np.ndarray, info: dict) -> Mixture:
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
            self.logger.warning("a GMM of batch %s did not converge in %d EM iterations", info["batch"],
                                self.max_iter)
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
