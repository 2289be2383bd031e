"""The file form of an experiment configuration (schema 2): eight sections, and the one answer to "was
this trained otherwise?".

::

    {"schema_version": 2,
     "stream":    {"name": "core50_nicv2", "scenario": 391, "test_list": "reduced"},
     "model":     {"preprocessing": "auto"},
     "method":    {"name": "ar1", "params": {"f_max": 0.001, "c": 1.0, "xi": 1e-07}},
     "replay":    {"name": "latent", "params": {"layer": "conv5_4/dw", "memory": 1500, "dtype": "float32"}},
     "schedule":  {"epochs_first_batch": 4.0, ..., "seed": 0},
     "fidelity":  {"profile": "fixed", "switches": {}},
     "execution": {"runs": [0, 1, 2, 3, 4], "device": "auto", ...},
     "paths":     {"dataset_root": "/datasets", "weights": null, "out": "results", ...}}

Each key of :class:`~latent_replay.config.ExperimentConfig` belongs to one section (:data:`SECTION_KEYS`);
a method's parameters are its registered params class's, a replay's the keys its registry entry
declares (``keys``), written only where the replay keeps a memory. So a setting that does not apply to
the experiment is not written, and a file that gives one is refused, naming it.

The **identity** of an experiment is every section but ``execution`` and ``paths``, with the fidelity
switches in force that can change it, the preprocessing in force when known, and whether initial weights
were loaded (not where from). Two configs train the same experiment exactly when their identities are
equal; train's refusals, checkpoints, summaries, figures, prepare, sweep and the demo all ask this.

Schema 1 (one flat object, written by earlier versions) is read through :func:`from_schema1`.
"""
from __future__ import annotations

from typing import Any

from ..registry import METHODS, REPLAYS, STREAMS
from .checks import ConfigError
from .settings import DEFAULT_METHOD, DEFAULT_REPLAY, PROFILE_SWITCHES

SCHEMA_VERSION = 2
#: The stream of the main pipeline (the registered streams whose ``engine`` is true: CORe50 NICv2 so far).
STREAM = "core50_nicv2"
#: Keys written as they are, per section (method, replay and fidelity have their own form).
SECTION_KEYS: dict[str, tuple[str, ...]] = {
    "stream": ("scenario", "test_list"),
    "model": ("preprocessing",),
    "schedule": ("epochs_first_batch", "epochs", "minibatch", "test_minibatch", "lr_first_batch", "lr",
                 "classifier_lr_mult", "momentum", "weight_decay", "brn_first_batch", "brn_incremental",
                 "brn_past_weight", "seed"),
    #: How a run executes, not what it computes: which runs and how far, the device, the speed and
    #: memory switches (each keeps the metrics), the checkpoint cadence, and ``cuda_reproducible``,
    #: which like ``device`` changes only floating-point numerics.
    "execution": ("runs", "max_batches", "device", "precompute_lower", "cache_test_latents",
                  "test_latents_in_file", "channels_last", "recompute_bn_relu", "inference_chunk",
                  "release_memory", "cuda_reproducible", "checkpoint_every"),
    #: Where things are: another spelling of the same place must not set results apart.
    "paths": ("dataset_root", "filelists", "weights", "cache_dir", "out", "name"),
}
SECTIONS = ("stream", "model", "method", "replay", "schedule", "fidelity", "execution", "paths")
#: The sections that say what an experiment computes.
IDENTITY_SECTIONS = ("stream", "model", "method", "replay", "schedule", "fidelity")
#: Schema-1 names of keys that moved into a method's params.
SCHEMA1_METHOD_KEYS = {"ar1_f_max": ("ar1", "f_max"), "ar1_c": ("ar1", "c"), "ar1_xi": ("ar1", "xi")}
_FLAT_SECTION = {k: section for section, keys in SECTION_KEYS.items() for k in keys}


# ------------------------------------------------------------------------------- which keys apply
def replay_keys(replay: str) -> tuple[tuple[str, str], ...]:
    """(params name, config attribute) of the settings a replay reads (its registry entry's ``keys``)."""
    return REPLAYS.get(replay).keys


def memory_in_use(method: str, replay: str, replay_when_none: bool) -> bool:
    """Whether a memory is allocated, updated and mixed in (B1 keeps one for replay 'none')."""
    return replay != "none" or (replay_when_none and not METHODS.get(method).obj.cumulative)


def applies(key: str, values: dict) -> bool:
    """Whether a flat config key (``TOP`` or ``TOP.SUB``, as a sweep grid or ``--set`` gives it) means
    anything for the experiment of ``values`` (flat keys; missing ones take the defaults): a replay's
    settings where that replay reads them and keeps a memory, a method's params where that method
    declares them, the schema-1 ``ar1_*`` constants for AR1*. Every other key applies."""
    top, _, sub = key.partition(".")
    method = METHODS.canonical(values.get("method", DEFAULT_METHOD))
    replay = REPLAYS.canonical(values.get("replay", DEFAULT_REPLAY))
    if top in SCHEMA1_METHOD_KEYS:
        return method == SCHEMA1_METHOD_KEYS[top][0]
    if top == "method_params" and sub:
        params = METHODS.get(method).params if method in METHODS else None
        return params is not None and sub.partition(".")[0] in params.__dataclass_fields__
    replay_attrs = {attr for e in REPLAYS for _, attr in e.keys}
    if top in replay_attrs and replay in REPLAYS and method in METHODS:
        return top in dict(map(reversed, replay_keys(replay))) and memory_in_use(
            method, replay, _switch(values, "replay_when_none"))
    return True


def _switch(values: dict, name: str) -> Any:
    """A fidelity switch in force for flat ``values``: set alone, in ``fidelity``, or the profile's."""
    if f"fidelity.{name}" in values:
        return values[f"fidelity.{name}"]
    given = values.get("fidelity")
    if isinstance(given, dict) and name in given:
        return given[name]
    return PROFILE_SWITCHES.get(values.get("profile", "fixed"), {}).get(name, False)


# ------------------------------------------------------------------------------- flat <-> sections
def to_sections(flat: dict) -> dict:
    """The schema-2 form of a config's flat form (:meth:`ExperimentConfig.to_flat`, validated)."""
    method, replay = flat["method"], flat["replay"]
    used = memory_in_use(method, replay, _switch(flat, "replay_when_none"))
    data: dict[str, Any] = {"schema_version": SCHEMA_VERSION}
    data["stream"] = {"name": STREAM, **{k: flat[k] for k in SECTION_KEYS["stream"]}}
    data["model"] = {k: flat[k] for k in SECTION_KEYS["model"]}
    data["method"] = {"name": method, "params": flat["method_params"]}
    data["replay"] = {"name": replay, "params": {p: flat[a] for p, a in replay_keys(replay)} if used else {}}
    data["schedule"] = {k: flat[k] for k in SECTION_KEYS["schedule"]}
    data["fidelity"] = {"profile": flat["profile"], "switches": flat["fidelity"]}
    for section in ("execution", "paths"):
        data[section] = {k: flat[k] for k in SECTION_KEYS[section]}
    return data


def _section(data: dict, name: str, known) -> dict:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{name}: expected an object, got {type(value).__name__} {value!r}")
    for key in value:
        if key not in known:
            raise ConfigError(f"{name}.{key}: unknown key")
    return value


def from_sections(data: dict) -> dict:
    """The flat form of a schema-2 dict, with its structure checked: unknown sections and keys, and a
    replay param its replay does not read, are refused with their dotted name. Missing sections and
    keys take the defaults. (Whether a replay's params apply at all is checked once the config is
    built: :meth:`ExperimentConfig.from_dict`.)"""
    for key in data:
        if key not in (*SECTIONS, "schema_version"):
            raise ConfigError(f"{key}: unknown section (sections: {', '.join(SECTIONS)})")
    flat: dict[str, Any] = {}
    stream = dict(_section(data, "stream", ("name", *SECTION_KEYS["stream"])))
    name = stream.pop("name", STREAM)
    engine = [e.name for e in STREAMS if e.obj.engine]
    if STREAMS.canonical(name) not in engine:
        why = " (glr-bench trains it, not the main pipeline)" if isinstance(name, str) and name in STREAMS else ""
        raise ConfigError(f"stream.name: {name!r} is not one of {', '.join(engine)}{why}")
    flat.update(stream)
    for section in ("model", "schedule", "execution", "paths"):
        flat.update(_section(data, section, SECTION_KEYS[section]))
    method = _section(data, "method", ("name", "params"))
    if "name" in method:
        flat["method"] = method["name"]
    if "params" in method:
        flat["method_params"] = method["params"]
    replay = _section(data, "replay", ("name", "params"))
    if "name" in replay:
        flat["replay"] = REPLAYS.canonical(replay["name"])
    params = replay.get("params", {})
    if not isinstance(params, dict):
        raise ConfigError(f"replay.params: expected an object, got {type(params).__name__} {params!r}")
    name = flat.get("replay", DEFAULT_REPLAY)
    reads = dict(replay_keys(name)) if isinstance(name, str) and name in REPLAYS else {}
    for key, value in params.items():
        if key not in reads:
            raise ConfigError(f"replay.params.{key}: replay {name!r} takes no such parameter "
                              f"({', '.join(reads) or 'none'})")
        flat[reads[key]] = value
    fidelity = _section(data, "fidelity", ("profile", "switches"))
    if "profile" in fidelity:
        flat["profile"] = fidelity["profile"]
    if "switches" in fidelity:
        flat["fidelity"] = fidelity["switches"]
    return flat


def from_schema1(data: dict) -> dict:
    """The flat form of a schema-1 config (written before sections): the same keys, but AR1*'s constants
    were flat keys (``ar1_f_max``, ``ar1_c``, ``ar1_xi``), now AR1*'s params (where the method is
    another, they meant nothing and are dropped)."""
    flat = {k: v for k, v in data.items() if k not in SCHEMA1_METHOD_KEYS and k != "schema_version"}
    method = METHODS.canonical(data.get("method", DEFAULT_METHOD))
    moved = {SCHEMA1_METHOD_KEYS[k][1]: v for k, v in data.items()
             if k in SCHEMA1_METHOD_KEYS and SCHEMA1_METHOD_KEYS[k][0] == method}
    if moved:
        given = flat.get("method_params", {})
        flat["method_params"] = {**moved, **given} if isinstance(given, dict) else given
    return flat


def section_path(flat_key: str, replay: str | None = None) -> str:
    """The schema-2 name of a flat key (``lr`` -> ``schedule.lr``, ``replay_memory`` ->
    ``replay.params.memory``, ``fidelity.X`` -> ``fidelity.switches.X``), for error messages."""
    top, dot, sub = flat_key.partition(".")
    if top in _FLAT_SECTION:
        return f"{_FLAT_SECTION[top]}.{flat_key}"
    if top == "method_params":
        return f"method.params{dot}{sub}"
    if top == "fidelity" and sub:
        return f"fidelity.switches.{sub}"
    if top == "profile":
        return "fidelity.profile"
    if top in ("method", "replay"):
        return f"{top}.name"
    params = {a: p for e in REPLAYS for p, a in e.keys} if replay is None else \
        {a: p for p, a in replay_keys(replay)} if replay in REPLAYS else {}
    if top in params:
        return f"replay.params.{params[top]}{dot}{sub}"
    return flat_key


def flat_key(path: str) -> str:
    """The flat key of a schema-2 name (the inverse of :func:`section_path`; flat keys are returned as
    they are), for ``--set`` and sweep grids that name settings by section."""
    parts = path.split(".")
    if parts[0] in SECTION_KEYS and len(parts) > 1 and parts[1] in SECTION_KEYS[parts[0]]:
        return ".".join(parts[1:])
    if parts[:2] == ["method", "params"] and len(parts) > 2:
        return ".".join(["method_params", *parts[2:]])
    if parts[:2] == ["fidelity", "switches"] and len(parts) > 2:
        return ".".join(["fidelity", *parts[2:]])
    if parts == ["fidelity", "profile"]:
        return "profile"
    if parts[:2] == ["replay", "params"] and len(parts) > 2:
        attrs = {p: a for e in REPLAYS for p, a in e.keys}
        if parts[2] in attrs:
            return ".".join([attrs[parts[2]], *parts[3:]])
    if parts in (["method", "name"], ["replay", "name"]):
        return parts[0]
    return path


def without(data: dict, keys) -> dict:
    """A config's file form as one dict of dotted keys (:func:`flatten`) without some of them: each of
    ``keys`` is a section (``execution``) or a dotted key (``paths.out``)."""
    return {k: v for k, v in flatten(data).items() if k not in keys and k.partition(".")[0] not in keys}


def flatten(data: dict, prefix: str = "") -> dict:
    """Nested dicts as one dict of dotted keys (``{"a": {"b": 1}}`` -> ``{"a.b": 1}``)."""
    out = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
