"""Generative latent replay memory (glr-spec §4.5-4.7, §8.1, §9, §11-12, §14).

Synthetic, well-separated non-negative "latents"; every test runs in well under a few seconds.
"""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from latent_replay.replay import generative, gmm
from latent_replay.replay.generative import GenerativeReplay
from latent_replay.replay.gmm import Mixture, gmm_bytes, gmm_parameter_count, latent_bytes, pca_parameter_count
from latent_replay.replay.memory import n_current


def make_batch(classes, n_per=40, shape=(16,), sep=6.0, noise=0.5, seed=0, floor=True):
    """Class c has its own random centre (scaled by ``sep``); rows are centre + noise, clamped at 0."""
    rng = np.random.default_rng(seed)
    d = int(np.prod(shape))
    centres = {c: rng.random(d) * sep for c in classes}
    x = np.concatenate([centres[c] + rng.normal(0.0, noise, (n_per, d)) for c in classes])
    if floor:
        x = np.maximum(x, 0.0)
    y = np.repeat(np.asarray(classes), n_per)
    return torch.as_tensor(x, dtype=torch.float32).view(len(y), *shape), torch.as_tensor(y), centres


def nearest_centre(x: torch.Tensor, centres: dict) -> np.ndarray:
    ids = np.array(sorted(centres))
    c = np.stack([centres[i] for i in ids])
    flat = x.reshape(len(x), -1).double().numpy()
    return ids[np.argmin(((flat[:, None, :] - c[None]) ** 2).sum(-1), axis=1)]


# ---------------------------------------------------------------------------------- accounting
def test_memory_accounting_matches_spec_14():
    assert latent_bytes((2304,)) == 9_216
    assert latent_bytes((256, 3, 3)) == 9_216
    assert 6000 * latent_bytes((2304,)) == 55_296_000          # 55.3 MB
    assert gmm_parameter_count("diag", 10, 2304) == 46_090
    assert gmm_bytes("diag", 10, 2304) == 184_360
    # §8.1: full covariance ~26.6 M parameters (~106 MB); spherical d+2 and tied Kd + K + d(d+1)/2
    assert gmm_parameter_count("full", 10, 2304) == 26_576_650
    assert gmm_parameter_count("spherical", 10, 2304) == 10 * 2306
    assert gmm_parameter_count("tied", 10, 2304) == 10 * 2304 + 10 + 2304 * 2305 // 2
    assert latent_bytes((512, 8, 8), torch.float16) == 65_536
    with pytest.raises(ValueError, match="covariance_type"):
        gmm_parameter_count("banded", 1, 2)


def test_fitted_reference_gmm_has_the_spec_size():
    """A joint diagonal GMM with K = 10 on 2304-dim (256x3x3) latents: K(2d+1) = 46,090 parameters = 184,360 B."""
    x, y, _ = make_batch(list(range(10)), n_per=20, shape=(256, 3, 3), seed=1)
    m = GenerativeReplay(200, mode="joint", nonneg="none")
    m.update(np.random.default_rng(0), 0, x, y)
    assert m.generator_for().mixtures[0].n_parameters * 4 == 184_360
    assert m.memory_breakdown() == {"generator_bytes": 184_360 + 10 * 8, "buffer_bytes": 200 * 9_216,
                                    "label_bytes": 200 * 8}
    assert m.history[0]["label_agreement"] == 1.0


def test_full_reference_buffer_is_55_3_mb():
    """M = 6000 materialised 2304-dim float32 rows: 55,296,000 B (+ 8 B per label)."""
    x = torch.rand(6000, 2304)
    m = GenerativeReplay(6000)
    m.update(np.random.default_rng(0), 0, x, torch.zeros(6000, dtype=torch.long))
    parts = m.memory_breakdown()
    assert parts["buffer_bytes"] == 55_296_000 and parts["label_bytes"] == 48_000
    assert parts["generator_bytes"] == 4 * (gmm_parameter_count("diag", 1, 2304) + 1) + 8
    assert m.nbytes == sum(parts.values())


@pytest.mark.parametrize("cov", ["diag", "spherical", "full", "tied"])
def test_parameter_count_of_fitted_mixtures(cov):
    x, y, _ = make_batch([0, 1], n_per=30, shape=(5,), seed=2)
    m = GenerativeReplay(50, mode="joint", covariance_type=cov, reg_covar=1e-3)
    m.update(None, 0, x, y)
    mix = m.generator_for().mixtures[0]
    assert mix.n_parameters == gmm_parameter_count(cov, 2, 5)
    assert m.memory_breakdown()["generator_bytes"] == 4 * gmm_parameter_count(cov, 2, 5) + 2 * 8
    z, labels = m.get(np.arange(len(m)))
    assert z.shape == (50, 5) and set(labels.tolist()) == {0, 1}


# ---------------------------------------------------------------------------------- class-conditional
def test_classcond_labels_are_exact_and_class_means_match():
    classes = [3, 17, 42]
    x, y, centres = make_batch(classes, n_per=80, shape=(4, 2, 2), seed=3)
    m = GenerativeReplay(240, nonneg="none")
    m.update(np.random.default_rng(0), 0, x, y)
    z, labels = m.get(np.arange(len(m)))
    assert z.shape == (240, 4, 2, 2) and z.dtype == torch.float32 and labels.dtype == torch.long
    assert set(labels.tolist()) <= set(classes)
    # every sample comes from its label's model: it sits nearest to its own class centre
    assert np.array_equal(nearest_centre(z, centres), labels.numpy())
    for c in classes:
        real = x[y == c].double().mean(0)
        fake = z[labels == c].double().mean(0)
        n = int((labels == c).sum())
        assert n > 40
        assert torch.allclose(fake, real, atol=4 * 0.5 / np.sqrt(n) + 0.02)
    assert m.label_fidelity(x, y) == 1.0
    assert np.array_equal(m.predict(x), y.numpy())   # a generative classifier, as a diagnostic


def test_classes_with_few_samples_get_fewer_components():
    x, y, _ = make_batch([5, 9], n_per=30, shape=(6,), seed=4)
    x, y = torch.cat([x, x[:2] + 1]), torch.cat([y, torch.tensor([11, 11])])   # class 11: 2 samples
    m = GenerativeReplay(100, n_components=3)
    m.update(None, 0, x, y)
    gen = m.generator_for()
    assert [mix.n_components for mix in gen.mixtures] == [3, 3, 2]
    assert gen.nbytes == 4 * (2 * gmm_parameter_count("diag", 3, 6) + gmm_parameter_count("diag", 2, 6) + 3) + 3 * 8


# ---------------------------------------------------------------------------------- joint (reference)
def test_joint_mode_maps_components_to_noncontiguous_class_ids():
    classes = [42, 3, 17]                                   # unordered and not 0..K-1 (spec §11.3)
    x, y, centres = make_batch(classes, n_per=60, shape=(24,), seed=5)
    m = GenerativeReplay(150, mode="joint", nonneg="none")
    m.update(np.random.default_rng(0), 0, x, y)
    gen = m.generator_for()
    assert gen.classes.tolist() == [3, 17, 42]
    # component k stays attached to class classes[k]: its mean is that class's mean
    for k, c in enumerate(gen.classes):
        assert np.allclose(gen.mixtures[0].means[k], x[y == c].double().mean(0).numpy(), atol=1e-6)
    agreement = m.label_fidelity(x, y)
    print(f"joint-mode component/class agreement: {agreement:.3f}")
    assert agreement == 1.0 and m.history[0]["label_agreement"] == 1.0
    assert m.history[0]["em_iterations"] >= 1
    z, labels = m.get(np.arange(len(m)))
    assert set(labels.tolist()) <= set(classes)
    assert np.array_equal(nearest_centre(z, centres), labels.numpy())
    # labels follow the fitted weights (1/3 each here) and are sorted by component, as the reference
    assert np.all(np.diff(labels.numpy()[:150]) >= 0)


def test_joint_mode_fidelity_detects_a_scrambled_mapping():
    x, y, _ = make_batch([0, 1, 2], n_per=30, shape=(8,), seed=6)
    m = GenerativeReplay(60, mode="joint")
    m.update(None, 0, x, y)
    wrong = torch.as_tensor(np.roll(y.numpy(), 30))
    assert m.label_fidelity(x, wrong) == 0.0


def test_non_convergence_is_recorded_not_raised(caplog):
    x, y, _ = make_batch([0, 1], n_per=30, shape=(6,), sep=0.5, noise=1.0, seed=11)
    m = GenerativeReplay(40, mode="joint", max_iter=1, tol=1e-12)
    with caplog.at_level("WARNING", logger="latent_replay.replay.generative"):
        m.update(None, 0, x, y)
    assert m.history[0]["converged"] is False and m.history[0]["em_iterations"] == 1
    assert "did not converge" in caplog.text and len(m) == 40


def test_joint_mode_rejects_several_components_per_class():
    with pytest.raises(ValueError, match="n_components must be 1"):
        GenerativeReplay(10, mode="joint", n_components=2)


# ---------------------------------------------------------------------------------- buffer refresh
@pytest.mark.parametrize("sampling", ["buffer", "on_the_fly"])
def test_refresh_counts_follow_m_over_t_plus_1(sampling):
    M, N = 60, 50
    m = GenerativeReplay(M, sampling=sampling)
    rng = np.random.default_rng(0)
    for t in range(5):
        x, y, _ = make_batch([2 * t, 2 * t + 1], n_per=N // 2, shape=(3,), seed=t)
        m.update(rng, t, x, y)
        counts = np.bincount(m.labels.numpy(), minlength=10)
        per_batch = counts[0::2] + counts[1::2]
        assert per_batch[t] == n_current(M, t, N) == min(M // (t + 1), N)
        assert len(m) == min(M, N * (t + 1))
    assert per_batch.tolist()[-1] == 12 and per_batch.sum() == M


def test_buffer_mode_keeps_old_rows_unchanged():
    m = GenerativeReplay(40)
    x0, y0, _ = make_batch([0, 1], n_per=20, shape=(3,), seed=0)
    m.update(np.random.default_rng(0), 0, x0, y0)
    before = {tuple(r) for r in m.get(np.arange(40))[0].numpy().round(6).tolist()}
    x1, y1, _ = make_batch([5], n_per=20, shape=(3,), seed=1)
    m.update(np.random.default_rng(1), 1, x1, y1)
    z, labels = m.get(np.arange(40))
    old = {tuple(r) for r in z[labels != 5].numpy().round(6).tolist()}
    assert int((labels == 5).sum()) == 20 and old <= before and len(old) == 20
    assert [g.batch for g in m.generators] == [1]             # only the latest generator is kept


# ---------------------------------------------------------------------------------- on the fly
def test_on_the_fly_keeps_only_generators_and_labels_and_draws_fresh_samples():
    x, y, centres = make_batch([1, 4], n_per=100, shape=(8, 4, 4), seed=7)
    buf = GenerativeReplay(200, sampling="buffer", seed=3)
    fly = GenerativeReplay(200, sampling="on_the_fly", seed=3)
    for m in (buf, fly):
        m.update(np.random.default_rng(0), 0, x, y)
    assert torch.equal(buf.labels, fly.labels)                # same update rule, same label draws
    parts = fly.memory_breakdown()
    assert parts["buffer_bytes"] == 0 and fly.buffer is None
    assert fly.nbytes == parts["generator_bytes"] + parts["label_bytes"]
    assert parts["generator_bytes"] == 4 * (2 * gmm_parameter_count("diag", 1, 128) + 2) + 2 * 8
    assert parts["label_bytes"] == 200 * (8 + 4)
    assert buf.memory_breakdown()["buffer_bytes"] == 200 * 128 * 4
    assert fly.nbytes * 10 < buf.nbytes
    slots = np.array([0, 5, 5, 150, 199])
    a, la = fly.get(slots)
    b, lb = fly.get(slots)
    assert a.shape == (5, 8, 4, 4) and torch.equal(la, lb) and torch.equal(la, fly.labels[slots])
    assert not torch.equal(a, b) and not torch.equal(a[1], a[2])   # fresh draws, also for a repeated slot
    assert np.array_equal(nearest_centre(a, centres), la.numpy())
    assert fly.get(np.zeros(0, np.int64))[0].shape == (0, 8, 4, 4)


def test_on_the_fly_drops_generators_without_slots():
    m = GenerativeReplay(10, sampling="on_the_fly")
    rng = np.random.default_rng(0)
    for t in range(3):
        x, y, _ = make_batch([t], n_per=10, shape=(2,), seed=t)
        m.update(rng, t, x, y)
    kept = sorted({g.batch for g in m.generators})
    owners = sorted({m.generators[i].batch for i in np.unique(m._slot_generator)})
    assert kept == owners and kept[-1] == 2
    counts = np.bincount(m.labels.numpy(), minlength=3)
    assert counts[2] == 10 // 3
    assert m.get(np.arange(10))[0].shape == (10, 2)


# ---------------------------------------------------------------------------------- non-negativity
@pytest.mark.parametrize("nonneg", ["clamp", "log1p"])
def test_nonneg_samples_are_never_negative(nonneg):
    x, y, _ = make_batch([0, 1], n_per=50, shape=(32,), sep=0.3, noise=1.0, seed=8)   # many zeros
    raw = GenerativeReplay(100, nonneg="none")
    raw.update(None, 0, x, y)
    assert (raw.get(np.arange(100))[0] < 0).any()           # raw Gaussian samples go below zero
    for sampling in ("buffer", "on_the_fly"):
        m = GenerativeReplay(100, nonneg=nonneg, sampling=sampling)
        m.update(None, 0, x, y)
        z, _ = m.get(np.arange(100))
        assert (z >= 0).all() and torch.isfinite(z).all()
        assert (z == 0).any() and (z > 0).any()


def test_log1p_models_the_log_space():
    x, y, _ = make_batch([0], n_per=200, shape=(4,), sep=1.0, noise=0.05, seed=9)
    m = GenerativeReplay(200, nonneg="log1p")
    m.update(None, 0, x, y)
    mix = m.generator_for().mixtures[0]
    assert np.allclose(mix.means[0], torch.log1p(x.double()).mean(0).numpy(), atol=1e-9)
    z, _ = m.get(np.arange(200))
    assert torch.allclose(z.mean(0), x.mean(0), atol=0.02)


# ---------------------------------------------------------------------------------- PCA
def test_pca_mode_on_a_conv5_4_dw_sized_latent():
    shape = (512, 8, 8)                                      # 32,768 values
    x, y, centres = make_batch([7, 30], n_per=12, shape=shape, seed=10)
    m = GenerativeReplay(24, pca_components=8, nonneg="clamp")
    m.update(np.random.default_rng(0), 0, x, y)
    gen = m.generator_for()
    p = m.history[0]["pca_dims"]
    assert p == 8 and gen.pca_components.shape == (8, 32768)
    assert gen.n_parameters == pca_parameter_count(8, 32768) + 2 * gmm_parameter_count("diag", 1, 8) + 2
    z, labels = m.get(np.arange(24))
    assert z.shape == (24, *shape) and (z >= 0).all()
    assert np.array_equal(nearest_centre(z, centres), labels.numpy())
    # PCA limited by the sample count: N = 6 rows give at most 6 dimensions
    small = GenerativeReplay(6, mode="joint", pca_components=64)
    small.update(None, 0, x[:6], y[:6])
    assert small.history[0]["pca_dims"] == 6 and small.get(np.arange(6))[0].shape == (6, *shape)


# ---------------------------------------------------------------------------------- state and seeds
def _three_batches(m, seed=0):
    rng = np.random.default_rng(seed)
    for t in range(3):
        x, y, _ = make_batch([t, t + 10], n_per=20, shape=(2, 3), seed=t)
        m.update(rng, t, x, y)
    return rng


@pytest.mark.parametrize("kw", [dict(), dict(sampling="on_the_fly"), dict(mode="joint", nonneg="log1p"),
                                dict(n_components=2, covariance_type="full", reg_covar=1e-3, sampling="on_the_fly"),
                                dict(pca_components=3, mode="joint", covariance_type="tied", sampling="on_the_fly")])
def test_state_dict_round_trip_continues_bit_exactly(kw):
    a = GenerativeReplay(30, seed=5, **kw)
    rng = _three_batches(a)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)               # plain tensors, no pickled sklearn objects
    b = GenerativeReplay(30, seed=5, **kw)
    b.load_state_dict(state)
    assert torch.equal(a.labels, b.labels) and a.nbytes == b.nbytes and len(a) == len(b)
    idx = np.arange(0, 30, 2)
    for _ in range(2):
        za, la = a.get(idx)
        zb, lb = b.get(idx)
        assert torch.equal(za, zb) and torch.equal(la, lb)
    x, y, _ = make_batch([50], n_per=20, shape=(2, 3), seed=9)
    rng_b = np.random.default_rng()
    rng_b.bit_generator.state = rng.bit_generator.state
    a.update(rng, 3, x, y)
    b.update(rng_b, 3, x, y)
    assert torch.equal(a.get(np.arange(30))[0], b.get(np.arange(30))[0]) and torch.equal(a.labels, b.labels)


def test_load_state_dict_rejects_another_configuration():
    a = GenerativeReplay(30)
    _three_batches(a)
    with pytest.raises(ValueError, match="does not match"):
        GenerativeReplay(30, mode="joint").load_state_dict(a.state_dict())


def test_same_seed_same_memory_other_seed_other_samples():
    runs = []
    for seed in (0, 0, 1):
        m = GenerativeReplay(30, seed=seed)
        _three_batches(m)
        runs.append(m.get(np.arange(30)))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    assert not torch.equal(runs[0][0], runs[2][0])


def test_sampling_uses_no_global_rng():
    x, y, _ = make_batch([0, 1], n_per=20, shape=(4,), seed=0)
    outs = []
    for global_seed in (1, 2):
        np.random.seed(global_seed)
        torch.manual_seed(global_seed)
        m = GenerativeReplay(40, sampling="on_the_fly", n_components=2)
        m.update(np.random.default_rng(0), 0, x, y)
        outs.append(m.get(np.arange(40))[0])
    assert torch.equal(outs[0], outs[1])


# ---------------------------------------------------------------------------------- interface
def test_empty_memory_and_input_validation():
    m = GenerativeReplay(10)
    assert len(m) == 0 and m.nbytes == 0 and m.labels.dtype == torch.long
    assert m.get(np.zeros(0, np.int64))[0].shape == (0,)
    x, y, _ = make_batch([0], n_per=5, shape=(3,))
    with pytest.raises(ValueError, match="labels"):
        m.update(None, 0, x, y[:3])
    m.update(None, 0, x, y)
    with pytest.raises(ValueError, match="latent shape"):
        m.update(None, 1, x.view(5, 3, 1), y)
    for bad in (dict(mode="vae"), dict(sampling="stream"), dict(nonneg="relu"), dict(covariance_type="banded"),
                dict(pca_components=0), dict(n_components=0)):
        with pytest.raises(ValueError):
            GenerativeReplay(10, **bad)
    with pytest.raises(ValueError, match="capacity"):
        GenerativeReplay(0)


def test_density_model_names_are_still_importable_from_generative():
    """The density models moved to :mod:`latent_replay.replay.gmm`; existing imports from ``generative`` keep working."""
    moved = ["BatchGenerator", "COVARIANCE_TYPES", "GeneratorFitter", "ID_BYTES", "Mixture", "PARAM_BYTES", "gmm_bytes",
             "gmm_parameter_count", "latent_bytes", "pca_parameter_count"]
    assert all(getattr(generative, name) is getattr(gmm, name) for name in moved)
    assert set(moved) <= set(generative.__all__) and all(hasattr(generative, name) for name in generative.__all__)


def test_mixture_sampling_matches_its_parameters():
    rng = np.random.default_rng(0)
    cov = np.array([[2.0, 0.6], [0.6, 0.5]])
    mix = Mixture("full", np.array([0.25, 0.75]), np.array([[0.0, 0.0], [5.0, -3.0]]), np.stack([cov, cov]))
    counts = mix.component_counts(40_000, rng)
    assert abs(counts[1] / 40_000 - 0.75) < 0.01
    z = mix.sample_component(1, 40_000, rng)
    assert np.allclose(z.mean(0), [5.0, -3.0], atol=0.03) and np.allclose(np.cov(z.T), cov, atol=0.05)
    lp = mix.weighted_log_prob(np.array([[5.0, -3.0]]))
    from scipy.stats import multivariate_normal

    assert lp[0, 1] == pytest.approx(np.log(0.75) + multivariate_normal([5.0, -3.0], cov).logpdf([5.0, -3.0]))
