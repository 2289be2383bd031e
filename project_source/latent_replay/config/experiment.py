"""The experiment configuration: one typed object, its file form, its identity.

``ExperimentConfig`` is the single contract between the launcher (which writes
``exp_configuration.json``) and the trainer (which only reads it). In code it is one flat, typed object
(``cfg.replay_memory``, ``cfg.lr``); in files it is written in sections, each setting only where it
applies (:mod:`~latent_replay.config.sections`), and :meth:`ExperimentConfig.identity` is the one answer
to "was this trained otherwise?". Every behaviour where the original
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
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Optional

from ..data.filelists import SCENARIOS, atomic_write_text
from ..registry import METHODS, REPLAYS
from ..utils import has_control_characters
from . import sections
from .checks import ConfigError, build, check_finite, check_params, check_types, choice
from .settings import (DEFAULT_METHOD, DEFAULT_REPLAY, DEVICES, FIDELITY_CHOICES, FULL_MINIBATCHES_SINCE,
                       GLR_CHOICES, GLR_PROFILES, LATENT_DTYPES, LATENT_LAYERS, PROFILE_SWITCHES, PROFILES, BRNSettings, Fidelity,
                       GLRSettings, profile_fidelity)

@dataclass
class ExperimentConfig:
    """Everything one experiment needs. Unknown keys, wrong types and impossible combinations are rejected."""

    method: str = DEFAULT_METHOD
    #: The method's own parameters (its registered params class: AR1*'s ``f_max``, ``c`` and ``xi``,
    #: LwF's ``lam`` and ``temperature``), every one written out; {} for a method without any.
    method_params: dict = field(default_factory=dict)
    scenario: int = 391
    replay: str = DEFAULT_REPLAY
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

    def __post_init__(self):
        if self.fidelity is None:
            self.fidelity = {}
        if self.glr is None:
            self.glr = {}
        if isinstance(self.glr, dict):
            choice("glr_profile", self.glr_profile, tuple(GLR_PROFILES))
            self.glr = build(GLRSettings, {**GLR_PROFILES[self.glr_profile], **self.glr}, "glr")
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "fidelity" and isinstance(value, dict):
                if self.profile not in PROFILE_SWITCHES:
                    choice("profile", self.profile, PROFILES)
                setattr(self, f.name, build(Fidelity, {**PROFILE_SWITCHES[self.profile], **value}, "fidelity"))
            elif f.name.startswith("brn_") and isinstance(value, dict):
                setattr(self, f.name, build(BRNSettings, value, f.name))
        self.method = METHODS.canonical(self.method)
        self.replay = REPLAYS.canonical(self.replay)
        if self.method in METHODS.names():
            self.method_params = check_params(METHODS.get(self.method).params, self.method_params, "method_params",
                                              f"method {self.method!r}")
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        check_types(self, "")
        check_finite(dataclasses.asdict(self), "")
        choice("method", self.method, METHODS.names())
        choice("scenario", self.scenario, SCENARIOS)
        choice("replay", self.replay, REPLAYS.names())
        choice("latent_layer", self.latent_layer, LATENT_LAYERS)
        choice("latent_dtype", self.latent_dtype, LATENT_DTYPES)
        choice("preprocessing", self.preprocessing, ("auto", "caffe", "imagenet"))
        choice("test_list", self.test_list, ("reduced", "full"))
        choice("device", self.device, DEVICES)
        choice("profile", self.profile, PROFILES)
        for key, choices in FIDELITY_CHOICES.items():
            choice(f"fidelity.{key}", getattr(self.fidelity, key), choices)
        for key, choices in GLR_CHOICES.items():
            choice(f"glr.{key}", getattr(self.glr, key), choices)
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
        for key in ("epochs_first_batch", "epochs", "lr_first_batch", "minibatch", "test_minibatch", "lr"):
            if getattr(self, key) is not None and getattr(self, key) <= 0:
                raise ConfigError(f"{key}: must be > 0, got {getattr(self, key)}")
        for key in ("weight_decay", "classifier_lr_mult"):
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
        return sections.memory_in_use(self.method, self.replay, self.fidelity.replay_when_none)

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
        params = METHODS.get(self.method).params
        defaults = dataclasses.asdict(params()) if params is not None else {}
        parts += [f"{k}{v}" for k, v in self.method_params.items() if defaults.get(k) != v]
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

    def to_flat(self) -> dict:
        """The flat form: every attribute, ``fidelity`` and ``glr`` holding only the overrides of their
        profiles (what ``--set``, sweep grids and :meth:`replace` work on)."""
        data = dataclasses.asdict(self)
        data["fidelity"] = self.fidelity_overrides()
        data["glr"] = self.glr_overrides()
        return data

    def to_dict(self) -> dict:
        """The file form (schema 2): sections, each setting only where it applies."""
        return sections.to_sections(self.to_flat())

    def describe_fidelity(self) -> dict:
        """Every switch in force (for logs and result summaries)."""
        return dataclasses.asdict(self.fidelity)

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

    def identity(self, switches: dict | None = None, preprocessing: str | None = None,
                 in_effect: set[str] | None = None) -> dict:
        """What this experiment computes: every section but ``execution`` and ``paths``, with the
        fidelity switches in force (``switches``, default this config's) restricted to those that can
        change it (``in_effect``, default :meth:`switches_in_effect`), the preprocessing in force
        (``preprocessing``, default :meth:`known_preprocessing`; None where unknown) and whether initial
        weights are loaded (``model.pretrained``). Two configs train the same experiment exactly when
        their identities are equal (:meth:`trained_otherwise`)."""
        data = self.to_dict()
        ident = {k: data[k] for k in sections.IDENTITY_SECTIONS}
        ident["model"] = {"preprocessing": preprocessing or self.known_preprocessing(),
                          "pretrained": self.weights is not None}
        switches = self.describe_fidelity() if switches is None else switches
        in_effect = self.switches_in_effect() if in_effect is None else in_effect
        ident["fidelity"] = {k: switches.get(k) for k in sorted(in_effect)}
        return ident

    def trained_otherwise(self, config: dict, fidelity: dict | None = None, preprocessing: str | None = None,
                          preprocessing_now: str | None = None) -> list[str]:
        """What results recorded with ``config`` (a ``to_dict()`` form of schema 2 or 1, e.g. a run's
        summary.json or checkpoint), the fidelity switches then in force (``fidelity``) and the
        preprocessing then used (``preprocessing``), each when recorded, trained differently from this
        config, whose preprocessing is ``preprocessing_now`` (default: :meth:`known_preprocessing`): the
        dotted names where the two :meth:`identity` differ (``replay.params.memory``,
        ``fidelity.<switch>``, ``model.preprocessing``); empty when the same.

        ``config`` is read with today's defaults for keys it lacks (added since it was written), and so
        are switches ``fidelity`` lacks; a key since removed, or a value no longer valid, makes it
        differ (named). The switches that can change this experiment are compared one by one: a
        default changed since shows, and a switch set explicitly to what was then the default matches.
        The preprocessing is compared only where both are known."""
        try:
            recorded = ExperimentConfig.from_dict(config, "recorded configuration")
        except (ConfigError, TypeError, ValueError) as exc:   # a key since removed, a value no longer valid
            key = str(exc).removeprefix("recorded configuration: ").partition(":")[0]
            return [key or "configuration"]
        switches = recorded.describe_fidelity()
        if isinstance(fidelity, dict):     # the switches in force say more than the profile's overrides
            switches = {**switches, **fidelity}
            if FULL_MINIBATCHES_SINCE not in fidelity:   # what that version did, whatever today's defaults say
                switches[FULL_MINIBATCHES_SINCE] = False
                if not switches.get("pad_training_like_caffe"):
                    switches["pad_training_like_caffe"] = "short last minibatches"   # the former fixed rule
        theirs = sections.flatten(recorded.identity(switches, preprocessing or recorded.known_preprocessing(),
                                                    self.switches_in_effect()))
        mine = sections.flatten(self.identity(preprocessing=preprocessing_now))
        changed = [k for k in theirs.keys() | mine.keys() if theirs.get(k) != mine.get(k)]
        if None in (theirs.get("model.preprocessing"), mine.get("model.preprocessing")):
            changed = [k for k in changed if k != "model.preprocessing"]
        return sorted(changed)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    def save(self, path: str | os.PathLike) -> Path:
        atomic_write_text(path, self.to_json())
        return Path(path)

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> "ExperimentConfig":
        """A config from its file form (schema 2), its schema-1 form (written by earlier versions) or its
        flat form; errors name the source and the key as the data spells it."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a JSON object, got {type(data).__name__}")
        version = data.get("schema_version", 2 if _sectioned(data) else 1)
        try:
            if version == 1:
                return build(cls, sections.from_schema1(data), "")
            if version != sections.SCHEMA_VERSION:
                raise ConfigError(f"schema_version: {version!r} is not supported (this suite reads 1 and 2)")
            flat = sections.from_sections({k: v for k, v in data.items() if k != "schema_version"})
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
        try:
            cfg = build(cls, flat, "")
        except ConfigError as exc:
            key, sep, rest = str(exc).partition(":")
            path = sections.section_path(key, flat.get("replay")) if sep and " " not in key else key
            raise ConfigError(f"{source}: {path}{sep}{rest}") from None
        given = (data.get("replay") or {}).get("params") or {}
        if given and not cfg.memory_in_use:
            raise ConfigError(f"{source}: replay.params.{next(iter(given))}: does not apply (replay 'none' keeps "
                              "no memory, unless fidelity.switches.replay_when_none)")
        return cfg

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
        data = self.to_flat()
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
    """``data[key] = value`` for a flat config dict, where ``key`` may be ``TOP.SUB`` (``fidelity.X``,
    ``glr.X``, ``brn_first_batch.X``; or its schema-2 name, ``schedule.lr``, ``replay.params.memory``):
    the sub-key is merged into ``data[TOP]``. ``fidelity`` and
    ``glr`` hold overrides of their profile, so they start empty; a settings object with no
    profile (``brn_first_batch``, ``brn_incremental``) starts from its defaults, so that one of its
    keys can be set alone."""
    top, _, sub = sections.flat_key(key).partition(".")
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


def _sectioned(data: dict) -> bool:
    """Whether a dict without ``schema_version`` is in sections (schema 2) rather than flat."""
    fidelity = data.get("fidelity")
    return any(k in data for k in ("stream", "model", "schedule", "execution", "paths")) or \
        isinstance(data.get("method"), dict) or isinstance(data.get("replay"), dict) or \
        isinstance(fidelity, dict) and bool({"profile", "switches"} & fidelity.keys())
