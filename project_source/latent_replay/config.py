"""The experiment configuration: one dataclass, JSON round trip, schema version, fidelity profiles.

``ExperimentConfig`` is the single contract between the launcher (which writes
``exp_configuration.json``) and the trainer (which only reads it). Every behaviour where the original
Caffe code and the paper disagree (spec §11) is a named switch in :class:`Fidelity`; profile ``fixed``
(default) turns every bug off, profile ``caffe`` reproduces the original. A switch can be set on its own
on top of a profile: ``ExperimentConfig(profile="fixed", fidelity={"eval_at_iteration_1": True})``.

Values left ``None`` (learning rate, classifier multiplier, BRN past weight) are derived from the
method and replay exactly as the original launcher/solvers do (spec §4.4, §5.1, §5.6); the
``resolved_*`` properties give the value in force.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional, Union, get_args, get_origin, get_type_hints

from .data.filelists import atomic_write_text
from .registry import METHODS, REPLAYS
from .utils import has_control_characters

SCHEMA_VERSION = 1
SCENARIOS = (79, 196, 391)
LATENT_DTYPES = ("float32", "float16", "uint8")
PROFILES = ("fixed", "caffe")
DEVICES = ("auto", "cpu", "cuda")
#: Config keys that change how a run executes, not what it computes: the speed and memory switches
#: (each keeps the metrics), the checkpoint cadence, and ``cuda_reproducible``, which like ``device``
#: changes only the floating-point numerics (of a GPU run). A run may resume with other values of
#: these, and figures do not tell experiments apart by them.
EXECUTION_KEYS = ("precompute_lower", "cache_test_latents", "test_latents_in_file", "channels_last",
                  "recompute_bn_relu", "inference_chunk", "release_memory", "checkpoint_every",
                  "cuda_reproducible")

#: Config keys that may change between an interrupted run and its resumption (they do not change what a
#: run computes, or only how far it goes).
RESUMABLE_CHANGES = ("runs", "device", "out", "cache_dir", "max_batches", *EXECUTION_KEYS)
#: Keys that say where things are, not what is trained: another spelling of the same place (a relative
#: path, a container path, the generated name written out) must not set an experiment's results apart.
LOCATION_KEYS = ("dataset_root", "filelists", "weights", "name")


def training_changes(old: dict, new: dict) -> list[str]:
    """The keys, sorted, in which two configs (``to_dict()`` forms) train differently: any key but
    :data:`RESUMABLE_CHANGES` and :data:`LOCATION_KEYS` whose values differ (one missing counts), where
    ``preprocessing: auto`` matches any value (it resolves to one from the weights: compare the resolved
    values where they are known), and ``weights`` counts only between none (random initial weights) and
    a file."""
    ignored = set(RESUMABLE_CHANGES) | set(LOCATION_KEYS)
    changed = [k for k in old.keys() | new.keys() if k not in ignored and old.get(k) != new.get(k)
               and not (k == "preprocessing" and "auto" in (old.get(k), new.get(k)))]
    if (old.get("weights") is None) != (new.get("weights") is None):
        changed.append("weights")
    return sorted(changed)


#: Frames per no-gradient forward when ``inference_chunk`` is None, on the CPU and on a GPU.
INFERENCE_CHUNK_CPU, INFERENCE_CHUNK_GPU = 16, 256
LATENT_LAYERS = (
    "data", "conv2_1/dw", "conv2_2/dw", "conv3_1/dw", "conv3_2/dw", "conv4_1/dw", "conv4_2/dw", "conv5_1/dw",
    "conv5_2/dw", "conv5_3/dw", "conv5_4/dw", "conv5_5/dw", "conv5_6/dw", "conv6/dw", "pool6",
)


class ConfigError(ValueError):
    """An invalid configuration; the message names the key (and the file when loaded from one)."""


@dataclass
class Fidelity:
    """One switch per behaviour of the original code that the paper contradicts (spec §11).

    Defaults are the fixed behaviour; :data:`PROFILE_SWITCHES` gives the ``caffe`` values.
    """

    #: B1: with replay "none" the original still allocates, updates and mixes a 1500-pattern memory
    #: into every minibatch (and sees only 252 of 300 new frames per NICv2-391 batch).
    replay_when_none: bool = False
    #: B2: the AR1S solver is never loaded, so AR1* runs as AR1*-free (importance is not applied).
    ar1_as_ar1free: bool = False
    #: B5: one RNG re-seeded to 0 before every shuffle and memory choice (identical permutations for
    #: equal sizes); fixed: one generator per run seeded from (seed, run).
    reseed_rng_each_shuffle: bool = False
    #: B6a: new data and memory are padded to a multiple of their minibatch share, so that every
    #: minibatch holds exactly k_new + k_mem rows: by prepending their first items (the original), or
    #: (off) with distinct items drawn at random. "Off" once cut the lists into short last minibatches
    #: instead; results recorded so count as trained otherwise (:data:`FULL_MINIBATCHES_SINCE`).
    pad_training_like_caffe: bool = False
    #: B6b: evaluate on the test list padded to a multiple of the test minibatch (2249 -> 2300).
    padded_test_set: bool = False
    #: B7: an extra evaluation after global iteration 1 (logs one line longer than the batches).
    eval_at_iteration_1: bool = False
    #: Caffe's Accuracy layer counts a prediction as correct only when the true class's score is
    #: strictly above every other class's: a tie is a miss (at iteration 1, with all logits equal, the
    #: original logs 0 % training accuracy); off: the first highest score wins (argmax).
    count_ties_as_miss: bool = False
    #: B8: classifier bias reset to 1 and frozen; with CWR* the present classes' consolidated biases are
    #: loaded (0 for a class never consolidated), so the batch-0 classes keep bias 1 and classes first
    #: seen later bias 0 (a +1 logit for the batch-0 classes, as in the original code); fixed: no bias.
    classifier_bias: bool = False
    #: B9: CWR*'s mean-shift subtracts one scalar, the mean of every weight of the present classes
    #: ("scalar", the original and the PyTorch port, in both profiles) or each feature's mean over
    #: those classes ("per_feature").
    cwr_mean_shift: str = "scalar"
    #: B9: CWR*'s class counts n_c include the memory's labels, so a stored pattern counts again every
    #: batch it is replayed in (the original and the port, in both profiles); off: only new patterns
    #: count, and a class present only through the memory keeps its consolidated weights.
    cwr_count_memory: bool = True
    #: B10: AR1* importance from the applied updates, Omega = sum(dtheta^2) / (Delta theta^2 + xi)
    #: ("updates", the original, in both profiles: c, xi and F_max are calibrated for it) or the SI path
    #: integral of -grad * dtheta ("gradients", the port's form; about 1/lr larger, so with the same
    #: constants nearly every weight that moved reaches F_max and is frozen).
    importance_from: str = "updates"
    #: B11: latents stored for the memory: computed in eval mode with the batch's final weights
    #: ("eval_final") or the training-mode activations of epoch 0 ("train_epoch0", the original; for
    #: batch 0 an extra training-mode pass of the whole network, which updates every BRN layer's moments).
    #: Precisely: the activations the upper part saw in epoch 0; with ``lower_drift`` off the lower part
    #: runs in eval mode from batch 1 on, so those are eval-mode activations of that moment's weights.
    stored_latents: str = "eval_final"
    #: B12: below the latent layer, 1x1 conv weights still decay and BRN moments keep moving
    #: (training-mode statistics), so stored latents slowly age; fixed: completely frozen, eval mode.
    #: Only below a latent (or generative) replay layer: CWR*'s backbone without latent replay always
    #: runs its BRN layers in training mode (learning rate 0), as the original.
    lower_drift: bool = False
    #: B13: SGD momentum created at batch 1 and kept across all later batches (also the classifier's,
    #: although CWR* resets its weights); fixed: momentum reset at every batch start.
    momentum_persists: bool = False
    #: B14: first-batch BRN starts from zero statistics with the 48-step warm-up at lambda 0.99
    #: ("zero", what the original most likely did) or from the imported BN statistics ("pretrained",
    #: falling back to zero when the weights carry none).
    first_batch_brn_start: str = "pretrained"


#: The first switch recorded (in every summary and checkpoint) by the version whose fixed profile pads
#: minibatches to full size: a record without it was trained with the former fixed rule (a short last
#: minibatch of new and of memory rows), which no switch selects any more.
FULL_MINIBATCHES_SINCE = "count_ties_as_miss"

PROFILE_SWITCHES: dict[str, dict[str, Any]] = {
    "fixed": {},
    "caffe": {
        "replay_when_none": True, "ar1_as_ar1free": True, "reseed_rng_each_shuffle": True,
        "pad_training_like_caffe": True, "padded_test_set": True, "eval_at_iteration_1": True,
        "count_ties_as_miss": True,
        "classifier_bias": True, "cwr_mean_shift": "scalar", "cwr_count_memory": True,
        "importance_from": "updates", "stored_latents": "train_epoch0", "lower_drift": True,
        "momentum_persists": True, "first_batch_brn_start": "zero",
    },
}
_CHOICES = {
    "cwr_mean_shift": ("scalar", "per_feature"),
    "importance_from": ("gradients", "updates"),
    "stored_latents": ("eval_final", "train_epoch0"),
    "first_batch_brn_start": ("pretrained", "zero"),
}


def profile_fidelity(profile: str, **overrides) -> Fidelity:
    """The switches of a profile, with individual overrides."""
    if profile not in PROFILE_SWITCHES:
        raise ConfigError(f"profile: {profile!r} is not one of {', '.join(PROFILES)}")
    return Fidelity(**{**PROFILE_SWITCHES[profile], **overrides})


@dataclass
class BRNSettings:
    """Batch Renormalization settings of one phase (spec §4.3)."""

    t0: int
    t_r: int
    t_d: int
    r_max: float
    d_max: float
    #: lambda; ``None`` in the incremental phase = 1 - 1/past_weight.
    moving_fraction: Optional[float] = None


@dataclass
class GLRSettings:
    """Generative latent replay (``replay = "generative"``, glr-spec §11-13).

    ``glr_profile`` presets them: ``fixed`` (default: one model per class of each batch, so labels
    are exact; samples clamped at 0) or ``reference`` (the GLR code: one diagonal GMM per batch with
    one component per class, labels = component index, raw samples).
    """

    #: "classcond" (one mixture per class of each batch) or "joint" (one mixture per batch).
    mode: str = "classcond"
    n_components: int = 1
    covariance_type: str = "diag"
    reg_covar: float = 1e-6
    max_iter: int = 100
    tol: float = 1e-3
    #: PCA to this many dimensions before fitting (null = none); useful for conv-layer latents.
    pca_components: Optional[int] = None
    #: "buffer" (materialised samples, refreshed with M/(b+1) rows per batch) or "on_the_fly"
    #: (only the models are kept; fresh samples for every minibatch).
    sampling: str = "buffer"
    #: Post-ReLU latents are >= 0: "clamp" samples at 0, model "log1p", or "none".
    nonneg: str = "clamp"


GLR_PROFILES: dict[str, dict[str, Any]] = {
    "fixed": {},
    "reference": {"mode": "joint", "sampling": "buffer", "nonneg": "none"},
}
_GLR_CHOICES = {
    "mode": ("classcond", "joint"),
    "covariance_type": ("diag", "full", "tied", "spherical"),
    "sampling": ("buffer", "on_the_fly"),
    "nonneg": ("clamp", "log1p", "none"),
}


@dataclass
class ExperimentConfig:
    """Everything one experiment needs. Unknown keys, wrong types and impossible combinations are rejected."""

    method: str = "ar1free"
    #: The method's own parameters (its registered params class, e.g. LwF's ``lam`` and ``temperature``),
    #: every one written out; {} for a method without any.
    method_params: dict = field(default_factory=dict)
    scenario: int = 391
    replay: str = "latent"
    latent_layer: str = "conv5_4/dw"
    replay_memory: int = 1500
    latent_dtype: str = "float32"
    runs: list = field(default_factory=lambda: [0, 1, 2, 3, 4])
    #: Stop each run after this many batches (None = all); for demos and smoke tests.
    max_batches: Optional[int] = None
    epochs_first_batch: float = 4.0
    epochs: float = 4.0
    minibatch: int = 128
    test_minibatch: int = 100
    lr_first_batch: float = 0.001
    #: Incremental base learning rate; None = 0.001 without replay, 0.0003 with replay (spec §5.1).
    lr: Optional[float] = None
    #: Classifier learning-rate multiplier in incremental batches; None = 1 (CWR*, naive, joint), 10 (AR1*).
    classifier_lr_mult: Optional[float] = None
    momentum: float = 0.9
    weight_decay: float = 0.0005
    #: AR1*: F_max (``ewc_clip_to``), pre-multiplier c (``ewc_w``) and xi.
    ar1_f_max: float = 0.001
    ar1_c: float = 1.0
    ar1_xi: float = 1e-7
    brn_first_batch: BRNSettings = field(default_factory=lambda: BRNSettings(48, 96, 96, 3.0, 5.0, 0.99))
    brn_incremental: BRNSettings = field(default_factory=lambda: BRNSettings(0, 1, 1, 1.25, 0.5, None))
    #: W of the past-weight rescale at batch 1; None = 10000 (no/native replay) or 20000 (latent).
    brn_past_weight: Optional[float] = None
    #: Input preprocessing: "caffe" (BGR mean subtraction, the original's), "imagenet" (RGB / 255, ImageNet
    #: mean/std: what pytorchcv's weights were trained with, spec B15) or "auto": what the loaded weights
    #: expect (their checkpoint records it), "caffe" without weights.
    preprocessing: str = "auto"
    weights: Optional[str] = None
    dataset_root: str = "/datasets"
    #: NICv2 filelists folder; None = <dataset_root>/batch_filelists if present, else the official lists
    #: shipped with the suite (:func:`~latent_replay.data.filelists.default_filelists_root`).
    filelists: Optional[str] = None
    test_list: str = "reduced"
    device: str = "auto"
    #: Decoded-frame cache folder; None = $LATENT_REPLAY_CACHE, else $XDG_CACHE_HOME/latent-replay, else ~/.cache/latent-replay.
    cache_dir: Optional[str] = None
    #: Speed switches; each gives the same metrics as the plain path and can be turned off.
    #: Run the frozen lower part once per new frame per batch (not once per epoch) when it is
    #: deterministic (eval-mode, no drift).
    precompute_lower: bool = True
    #: Evaluate the upper part only, on test-set latents cached while the lower part is frozen.
    cache_test_latents: bool = True
    #: On the CPU, keep those cached test latents in an unnamed temporary file (in the frame cache's
    #: folder, else the run folder; in memory, with a warning, where neither can take it) and read them
    #: back chunk by chunk at each evaluation, instead of in the trainer's heap: 295 MB less resident at
    #: conv5_4/dw (2,249 test frames at 128x128); the file's pages stay in the kernel's page cache, which
    #: can drop them under memory pressure (not on tmpfs, where they are shared memory). Set
    #: ``cache_dir`` to local disk for this, not to a shared file system. On a GPU they stay on the device.
    test_latents_in_file: bool = True
    #: channels-last memory layout (1.3-1.7x faster convolutions on CPU).
    channels_last: bool = True
    #: Memory switch (off by default): keep one activation per conv layer for the backward pass instead
    #: of two; each layer's ReLU output is recomputed from its normalisation input (kept anyway) when
    #: the backward pass needs it (``latent_replay.models.recompute``). Same gradients (bitwise on the
    #: CPU). Measured at 128x128, minibatch 128, 2 CPU cores: batch 0's saved activations 1,645 -> 841 MB
    #: and its peak RSS 3.17 -> 2.75 GB, for 11-17 % more batch-0 time; no change in the incremental
    #: batches (the upper part's activations are small). For tight memory (small GPUs, many sweep tasks
    #: per node).
    recompute_bn_relu: bool = False
    #: Frames per forward pass of the no-gradient passes (frozen lower part, memory latents, evaluation):
    #: bounds their activation memory; eval-mode normalisation makes results independent of it.
    #: None = :data:`INFERENCE_CHUNK_CPU` on the CPU (as fast as 64 on a 2-core CPU, 4.4 vs 4.8 s for
    #: 2,249 test frames at 128x128, with a quarter of the transient), :data:`INFERENCE_CHUNK_GPU` on a
    #: GPU (a forward per 16 frames would leave it idle between kernel launches).
    inference_chunk: Optional[int] = None
    #: Return freed heap memory to the kernel (glibc malloc_trim) after batch 0 and after building the
    #: test-latent cache, so incremental batches do not keep batch 0's activation memory resident.
    release_memory: bool = True
    #: On a CUDA device: IEEE float32 convolutions and matrix products (no TF32, which PyTorch allows in
    #: cuDNN convolutions by default and which reads 10 bits of mantissa) and deterministic cuDNN
    #: algorithms, so a run repeats and resumes to the same metrics and stays close to the CPU's. Off:
    #: TF32 and cuDNN's autotuner, faster on Ampere and later GPUs, metrics differ in more than the last
    #: bits. No effect on the CPU.
    cuda_reproducible: bool = True
    #: Write the run checkpoint after every N-th batch (and after the last). 1 = after every batch; a
    #: checkpoint of latent replay at conv5_4/dw is ~230 MB, ~0.5 s to write here, which on a GPU is
    #: more than a whole incremental batch. An interrupted run resumes from the last checkpoint.
    checkpoint_every: int = 1
    seed: int = 0
    out: str = "results"
    #: Experiment folder name under ``out``; None = derived from method, scenario, replay, layer, memory.
    name: Optional[str] = None
    profile: str = "fixed"
    #: The switches in force; None (or a dict of overrides) = the profile's switches.
    fidelity: Optional[Fidelity] = None
    #: Generative latent replay: preset (fixed | reference) and its settings (None or overrides).
    glr_profile: str = "fixed"
    glr: Optional[GLRSettings] = None
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self):
        if self.fidelity is None:
            self.fidelity = {}
        if self.glr is None:
            self.glr = {}
        if isinstance(self.glr, dict):
            _choice("glr_profile", self.glr_profile, tuple(GLR_PROFILES))
            self.glr = _build(GLRSettings, {**GLR_PROFILES[self.glr_profile], **self.glr}, "glr")
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "fidelity" and isinstance(value, dict):
                if self.profile not in PROFILE_SWITCHES:
                    _choice("profile", self.profile, PROFILES)
                setattr(self, f.name, _build(Fidelity, {**PROFILE_SWITCHES[self.profile], **value}, "fidelity"))
            elif f.name.startswith("brn_") and isinstance(value, dict):
                setattr(self, f.name, _build(BRNSettings, value, f.name))
        self.method = METHODS.canonical(self.method)
        self.replay = REPLAYS.canonical(self.replay)
        if self.method in METHODS.names():
            self.method_params = _method_params(self.method, self.method_params)
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        _check_types(self, "")
        _check_finite(dataclasses.asdict(self), "")
        _choice("method", self.method, METHODS.names())
        _choice("scenario", self.scenario, SCENARIOS)
        _choice("replay", self.replay, REPLAYS.names())
        _choice("latent_layer", self.latent_layer, LATENT_LAYERS)
        _choice("latent_dtype", self.latent_dtype, LATENT_DTYPES)
        _choice("preprocessing", self.preprocessing, ("auto", "caffe", "imagenet"))
        _choice("test_list", self.test_list, ("reduced", "full"))
        _choice("device", self.device, DEVICES)
        _choice("profile", self.profile, PROFILES)
        for key, choices in _CHOICES.items():
            _choice(f"fidelity.{key}", getattr(self.fidelity, key), choices)
        for key, choices in _GLR_CHOICES.items():
            _choice(f"glr.{key}", getattr(self.glr, key), choices)
        if self.glr.n_components < 1:
            raise ConfigError(f"glr.n_components: must be >= 1, got {self.glr.n_components}")
        if self.glr.mode == "joint" and self.glr.n_components != 1:
            raise ConfigError(f"glr.n_components: mode 'joint' fits one component per class of the batch, so it "
                              f"must be 1, got {self.glr.n_components}")
        if self.glr.pca_components is not None and self.glr.pca_components < 1:
            raise ConfigError(f"glr.pca_components: must be >= 1 or null, got {self.glr.pca_components}")
        if self.replay_memory <= 0:
            raise ConfigError(f"replay_memory: must be > 0, got {self.replay_memory}")
        if self.seed < 0:
            raise ConfigError(f"seed: must be >= 0, got {self.seed}")
        if self.name is not None and (self.name in ("", ".", "..") or "/" in self.name or "\\" in self.name
                                      or has_control_characters(self.name)):
            raise ConfigError(f"name: {self.name!r} is not a plain folder name (one line, no / or \\)")
        if not self.runs or any(type(r) is not int or r < 0 for r in self.runs):
            raise ConfigError(f"runs: must be a non-empty list of run numbers >= 0, got {self.runs}")
        if len(set(self.runs)) != len(self.runs):
            raise ConfigError(f"runs: a run is listed twice in {self.runs}")
        for key in ("epochs_first_batch", "epochs", "lr_first_batch", "minibatch", "test_minibatch", "lr",
                    "ar1_f_max", "ar1_xi"):
            if getattr(self, key) is not None and getattr(self, key) <= 0:
                raise ConfigError(f"{key}: must be > 0, got {getattr(self, key)}")
        for key in ("weight_decay", "classifier_lr_mult", "ar1_c"):
            if getattr(self, key) is not None and getattr(self, key) < 0:
                raise ConfigError(f"{key}: must be >= 0, got {getattr(self, key)}")
        if self.brn_past_weight is not None and self.brn_past_weight < 1:
            raise ConfigError(f"brn_past_weight: must be >= 1 (the incremental moving fraction is 1 - 1/weight), "
                              f"got {self.brn_past_weight}")
        for key in ("brn_first_batch", "brn_incremental"):
            brn = getattr(self, key)
            if min(brn.t0, brn.t_r, brn.t_d) < 0:
                raise ConfigError(f"{key}: t0, t_r and t_d must be >= 0, got {brn.t0}, {brn.t_r}, {brn.t_d}")
            if brn.r_max < 1 or brn.d_max < 0:
                raise ConfigError(f"{key}: need r_max >= 1 and d_max >= 0, got {brn.r_max} and {brn.d_max}")
            if brn.moving_fraction is not None and not 0 <= brn.moving_fraction <= 1:
                raise ConfigError(f"{key}.moving_fraction: must be in [0, 1] or null, got {brn.moving_fraction}")
        if self.checkpoint_every < 1:
            raise ConfigError(f"checkpoint_every: must be >= 1, got {self.checkpoint_every}")
        if self.inference_chunk is not None and self.inference_chunk < 1:
            raise ConfigError(f"inference_chunk: must be >= 1 or null, got {self.inference_chunk}")
        if self.max_batches is not None and self.max_batches < 1:
            raise ConfigError(f"max_batches: must be >= 1 or null, got {self.max_batches}")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"momentum: must be in [0, 1), got {self.momentum}")
        method = METHODS.get(self.method)
        if method.obj.classifier_only and self.uses_latent and self.latent_layer != "pool6":
            raise ConfigError(f"latent_layer: {method.title} trains only the classifier, so latent replay must use "
                              f"pool6, got {self.latent_layer!r}")
        if self.latent_dtype != "float32" and self.replay != "latent":
            why = " (its memory holds density models, fitted in float32)" if self.replay == "generative" else ""
            raise ConfigError(f"latent_dtype: {self.latent_dtype!r} applies to latent replay only "
                              f"(replay is {self.replay!r}{why}); leave it float32")
        if method.obj.cumulative and self.replay != "none":
            raise ConfigError(f"replay: the {method.title} baseline sees all past data, replay must be 'none', "
                              f"got {self.replay!r}")
        if self.schema_version != SCHEMA_VERSION:
            raise ConfigError(f"schema_version: {self.schema_version} is not supported (this suite reads {SCHEMA_VERSION})")

    # ------------------------------------------------------------------ derived values
    @property
    def uses_replay(self) -> bool:
        return self.replay != "none"

    @property
    def uses_latent(self) -> bool:
        return self.replay in ("latent", "generative")

    @property
    def uses_cwr_head(self) -> bool:
        return METHODS.get(self.method).obj.uses_cwr_head

    @property
    def memory_in_use(self) -> bool:
        """Whether a memory is allocated, updated and mixed in (B1 keeps it for replay 'none')."""
        return self.uses_replay or (self.fidelity.replay_when_none and not METHODS.get(self.method).obj.cumulative)

    @property
    def resolved_lr(self) -> float:
        if self.lr is not None:
            return self.lr
        return 0.0003 if self.uses_replay else 0.001

    @property
    def resolved_classifier_lr_mult(self) -> float:
        if self.classifier_lr_mult is not None:
            return self.classifier_lr_mult
        return METHODS.get(self.method).obj.classifier_lr_mult

    @property
    def resolved_past_weight(self) -> float:
        if self.brn_past_weight is not None:
            return self.brn_past_weight
        return 20000.0 if self.uses_latent else 10000.0

    @property
    def resolved_latent_layer(self) -> str:
        """The latent split in force: the configured layer for latent/generative replay, else ``data``."""
        return self.latent_layer if self.uses_latent else "data"

    @property
    def experiment_name(self) -> str:
        if self.name:
            return self.name
        parts = [self.method, f"nicv2_{self.scenario}", self.replay]
        if self.uses_latent:
            parts.append(self.latent_layer.replace("/", ""))
        if self.uses_replay:
            parts.append(f"m{self.replay_memory}")
            if self.uses_latent and self.latent_dtype != "float32":
                parts.append(self.latent_dtype)
        if self.replay == "generative":
            parts.append(f"glr-{self.glr.mode}-{self.glr.sampling}")
            if self.glr_profile != "fixed":
                parts.append(self.glr_profile)
        if self.profile != "fixed":
            parts.append(self.profile)
        return "_".join(parts)

    # ------------------------------------------------------------------ JSON
    def fidelity_overrides(self) -> dict:
        """The switches that differ from the profile's."""
        base = dataclasses.asdict(profile_fidelity(self.profile))
        return {k: v for k, v in dataclasses.asdict(self.fidelity).items() if base[k] != v}

    def glr_overrides(self) -> dict:
        """The GLR settings that differ from the GLR profile's."""
        base = dataclasses.asdict(GLRSettings(**GLR_PROFILES[self.glr_profile]))
        return {k: v for k, v in dataclasses.asdict(self.glr).items() if base[k] != v}

    def to_dict(self) -> dict:
        """JSON-ready dict; ``fidelity`` and ``glr`` hold only the overrides of their profiles."""
        data = dataclasses.asdict(self)
        data["fidelity"] = self.fidelity_overrides()
        data["glr"] = self.glr_overrides()
        return data

    def describe_fidelity(self) -> dict:
        """Every switch in force (for logs and result summaries)."""
        return dataclasses.asdict(self.fidelity)

    def key_in_effect(self, key: str) -> bool:
        """Whether a config key can change what this experiment computes: AR1*'s constants only for
        ``ar1``, the latent layer and dtype only with latent (or generative) replay, the memory size
        only where a memory is used, the GLR settings only with generative replay."""
        if key.startswith("ar1_"):
            return self.method == "ar1"
        if key == "latent_layer":
            return self.uses_latent
        if key == "latent_dtype":
            return self.replay == "latent"
        if key == "replay_memory":
            return self.memory_in_use
        if key in ("glr", "glr_profile"):
            return self.replay == "generative"
        return True

    def switches_in_effect(self) -> set[str]:
        """The fidelity switches that can change what this experiment computes. Only these are compared
        between recorded results and a config: an AR1* switch does not make a naive run another one."""
        names = {f.name for f in fields(Fidelity)}
        if self.replay != "none" or self.method == "joint":
            names.discard("replay_when_none")
        if self.method != "ar1":
            names -= {"ar1_as_ar1free", "importance_from"}
        if not self.uses_cwr_head:
            names -= {"cwr_mean_shift", "cwr_count_memory"}
        if not self.uses_latent:
            names -= {"stored_latents", "lower_drift"}
        return names

    def known_preprocessing(self) -> str | None:
        """The preprocessing in force when known without loading the weights: the configured one, or
        ``caffe`` for ``auto`` without weights (random initial weights); None for ``auto`` with weights."""
        if self.preprocessing != "auto":
            return self.preprocessing
        return "caffe" if self.weights is None else None

    def trained_otherwise(self, config: dict, fidelity: dict | None = None, preprocessing: str | None = None,
                          preprocessing_now: str | None = None) -> list[str]:
        """What results recorded with ``config`` (a ``to_dict()`` form, e.g. a run's summary.json or
        checkpoint), the fidelity switches then in force (``fidelity``) and the preprocessing then
        used (``preprocessing``), each when recorded, trained differently from this config, whose
        preprocessing is ``preprocessing_now`` (default: :meth:`known_preprocessing`): the keys of
        :func:`training_changes`, ``fidelity.<switch>``, ``preprocessing``; empty when the same.

        ``config`` is read with today's defaults for keys it lacks (added since it was written), and so
        are switches ``fidelity`` lacks; a key since removed makes it differ. Keys that mean nothing for
        this experiment are not compared (:meth:`key_in_effect`). The switches in force that can change
        it (:meth:`switches_in_effect`) are compared one by one: a default changed since shows (those
        results trained otherwise than this config now means), and a switch set explicitly to what was
        then the default matches."""
        try:
            recorded = ExperimentConfig.from_dict(config, "recorded configuration")
        except (ConfigError, TypeError, ValueError):   # a key since removed, a value no longer valid or
            recorded = None                            # damaged: compare as written
        else:
            config = recorded.to_dict()
        changed = [k for k in training_changes(config, self.to_dict()) if self.key_in_effect(k)]
        if isinstance(fidelity, dict):     # the switches in force say more than the profile's overrides
            if recorded is not None:       # a switch added since: what the recorded config means today
                written_before_full_minibatches = FULL_MINIBATCHES_SINCE not in fidelity
            fidelity = {**recorded.describe_fidelity(), **fidelity}
            if written_before_full_minibatches:   # what that version did, whatever today's defaults say
                fidelity[FULL_MINIBATCHES_SINCE] = False
                if not fidelity.get("pad_training_like_caffe"):
                    fidelity["pad_training_like_caffe"] = "short last minibatches"   # the former fixed rule
            now = self.describe_fidelity()
            changed = [k for k in changed if k != "fidelity"]
            changed += [f"fidelity.{k}" for k in self.switches_in_effect() if fidelity.get(k) != now.get(k)]
        now = preprocessing_now or self.known_preprocessing()
        if preprocessing and now and preprocessing != now and "preprocessing" not in changed:
            changed.append("preprocessing")
        return sorted(changed)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    def save(self, path: str | os.PathLike) -> Path:
        atomic_write_text(path, self.to_json())
        return Path(path)

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> "ExperimentConfig":
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a JSON object, got {type(data).__name__}")
        try:
            return _build(cls, data, "")
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ExperimentConfig":
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: configuration file not found") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start})") from None
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the configuration ({exc.strerror or exc})") from None
        return cls.from_dict(data, str(path))

    def replace(self, **changes) -> "ExperimentConfig":
        """A validated copy with some keys changed (``fidelity`` may be a dict of switch overrides)."""
        data = self.to_dict()
        if "profile" in changes and "fidelity" not in changes:
            data["fidelity"] = {}
        if "glr_profile" in changes and "glr" not in changes:
            data["glr"] = {}
        if isinstance(changes.get("glr"), dict) and "glr_profile" not in changes:
            changes["glr"] = {**data["glr"], **changes["glr"]}
        if isinstance(changes.get("fidelity"), dict) and "profile" not in changes:
            changes["fidelity"] = {**data["fidelity"], **changes["fidelity"]}
        data.update(changes)
        return ExperimentConfig.from_dict(data)


def set_key(data: dict, key: str, value) -> None:
    """``data[key] = value`` for a config dict, where ``key`` may be ``TOP.SUB`` (``fidelity.X``,
    ``glr.X``, ``brn_first_batch.X``): the sub-key is merged into ``data[TOP]``. ``fidelity`` and
    ``glr`` hold overrides of their profile, so they start empty; a settings object with no
    profile (``brn_first_batch``, ``brn_incremental``) starts from its defaults, so that one of its
    keys can be set alone."""
    top, _, sub = key.partition(".")
    if not sub:
        data[top] = value
        return
    nested = data.get(top)
    if not isinstance(nested, dict):
        spec = {f.name: f for f in fields(ExperimentConfig)}.get(top)
        default = spec.default_factory() if spec is not None and spec.default_factory is not dataclasses.MISSING \
            else None
        nested = dataclasses.asdict(default) if dataclasses.is_dataclass(default) else {}
    data[top] = {**nested, sub: value}


def _method_params(method: str, given) -> dict:
    """A method's parameters, validated against its registered params class (unknown keys, types and
    its ``_parameter_constraints``, each error naming ``method_params.<key>``) and completed with its
    defaults; {} for a method without parameters."""
    if not isinstance(given, dict):
        raise ConfigError(f"method_params: expected an object, got {type(given).__name__} {given!r}")
    params = METHODS.get(method).params
    if params is None:
        if given:
            raise ConfigError(f"method_params: method {method!r} takes no parameters, got {', '.join(map(str, given))}")
        return {}
    obj = _build(params, given, "method_params")
    _check_types(obj, "method_params.")
    for name, interval in getattr(params, "_parameter_constraints", {}).items():
        if getattr(obj, name) not in interval:
            raise ConfigError(f"method_params.{name}: must be {interval}, got {getattr(obj, name)}")
    return dataclasses.asdict(obj)


def _check_finite(data: dict, prefix: str) -> None:
    """JSON admits NaN and Infinity; no number of a config may be either."""
    for key, value in data.items():
        if isinstance(value, dict):
            _check_finite(value, f"{prefix}{key}.")
        elif isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{prefix}{key}: must be a finite number, got {value}")


def _choice(key: str, value, choices) -> None:
    if value not in choices:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(str, choices))}")


def _build(cls, data: dict, prefix: str):
    """Instantiate a config dataclass from a dict, rejecting unknown keys with their dotted name."""
    known = {f.name for f in fields(cls)}
    for key in data:
        if key not in known:
            raise ConfigError(f"{prefix}{'.' if prefix else ''}{key}: unknown key")
    missing = [f.name for f in fields(cls) if f.name not in data
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{prefix}: missing key {missing[0]}")
    return cls(**data)


def _type_ok(value, hint) -> bool:
    origin = get_origin(hint)
    if origin is Union:
        return any(_type_ok(value, h) for h in get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is list:
        return isinstance(value, list)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def _type_name(hint) -> str:
    if get_origin(hint) is Union:
        return " or ".join(_type_name(h) for h in get_args(hint))
    return "null" if hint is type(None) else getattr(hint, "__name__", str(hint))


def _check_types(obj, prefix: str) -> None:
    hints = get_type_hints(type(obj))
    for f in fields(obj):
        value, hint = getattr(obj, f.name), hints[f.name]
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            _check_types(value, key + ".")
            continue
        if not _type_ok(value, hint):
            raise ConfigError(f"{key}: expected {_type_name(hint)}, got {type(value).__name__} {value!r}")
        if hint is float or (get_origin(hint) is Union and float in get_args(hint)):
            if isinstance(value, int) and not isinstance(value, bool):
                setattr(obj, f.name, float(value))
