"""Validation helpers of the configuration: its error type, dataclass building with unknown-key errors,
type checks and the parameters of registered methods and replays (checked against their declared
``_parameter_constraints``), every error naming the key."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import fields
from typing import Union, get_args, get_origin, get_type_hints


class ConfigError(ValueError):
    """An invalid configuration; the message names the key (and the file when loaded from one)."""


def check_params(params: type | None, given, key: str, owner: str) -> dict:
    """The parameters of a registered method (or replay), validated against its params class: unknown
    keys, types and its ``_parameter_constraints``, each error naming ``<key>.<name>``; completed with
    its defaults. {} for an entry without parameters (``owner`` names it in the error)."""
    if not isinstance(given, dict):
        raise ConfigError(f"{key}: expected an object, got {type(given).__name__} {given!r}")
    if params is None:
        if given:
            raise ConfigError(f"{key}: {owner} takes no parameters, got {', '.join(map(str, given))}")
        return {}
    obj = build(params, given, key)
    check_types(obj, f"{key}.")
    for name, interval in getattr(params, "_parameter_constraints", {}).items():
        if getattr(obj, name) not in interval:
            raise ConfigError(f"{key}.{name}: must be {interval}, got {getattr(obj, name)}")
    return dataclasses.asdict(obj)


def check_finite(data: dict, prefix: str) -> None:
    """JSON admits NaN and Infinity; no number of a config may be either."""
    for key, value in data.items():
        if isinstance(value, dict):
            check_finite(value, f"{prefix}{key}.")
        elif isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{prefix}{key}: must be a finite number, got {value}")


def choice(key: str, value, choices) -> None:
    if value not in choices:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(str, choices))}")


def build(cls, data: dict, prefix: str):
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


def check_types(obj, prefix: str) -> None:
    hints = get_type_hints(type(obj))
    for f in fields(obj):
        value, hint = getattr(obj, f.name), hints[f.name]
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            check_types(value, key + ".")
            continue
        if not _type_ok(value, hint):
            raise ConfigError(f"{key}: expected {_type_name(hint)}, got {type(value).__name__} {value!r}")
        if hint is float or (get_origin(hint) is Union and float in get_args(hint)):
            if isinstance(value, int) and not isinstance(value, bool):
                setattr(obj, f.name, float(value))
