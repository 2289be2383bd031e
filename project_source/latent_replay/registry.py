"""Registries: the one list of names of each kind (methods, replays, streams), in the style of timm's model registry.

Each entry carries what the rest of the suite needs to know of a name: the class (or builder) that
implements it, the original launcher's aliases (``CWR``, ``AR1S``, ``AR1F``; ``no``, ``pure``), a title
for figures and run scripts, a colour, and the class of its own parameters (a dataclass whose fields
are the entry's settings, validated where a config is built). The config, the launcher, the sweep, the
figures and the CLI read the registries and list no names of their own.

An implementation registers itself where it is defined::

    @METHODS.register("lwf", title="LwF", aliases=("LWF",), colour="#2ca02c", params=LwFParams)
    class LwF(Method): ...

A registry fills itself on first use by importing its package (``latent_replay.methods``, which imports
every module in it), so a new method is one new file.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional


@dataclass(frozen=True)
class Interval:
    """A range a numeric parameter must lie in (as scikit-learn's ``_parameter_constraints``): ``low`` and
    ``high`` (None: unbounded), ``closed`` one of "both", "left", "right", "neither"."""

    low: Optional[float]
    high: Optional[float]
    closed: str = "both"

    def __contains__(self, value) -> bool:
        lo_ok = self.low is None or (value >= self.low if self.closed in ("both", "left") else value > self.low)
        hi_ok = self.high is None or (value <= self.high if self.closed in ("both", "right") else value < self.high)
        return lo_ok and hi_ok

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>=' if self.closed in ('both', 'left') else '>'} {self.low}"
        if self.low is None:
            return f"{'<=' if self.closed in ('both', 'right') else '<'} {self.high}"
        left, right = "[" if self.closed in ("both", "left") else "(", "]" if self.closed in ("both", "right") else ")"
        return f"in {left}{self.low}, {self.high}{right}"


@dataclass(frozen=True)
class Entry:
    """One registered name."""

    name: str
    obj: Any
    title: str
    aliases: tuple[str, ...] = ()
    colour: Optional[str] = None
    #: A dataclass of the entry's own parameters (``method_params`` of a config), or None.
    params: Optional[type] = None
    #: The experiment settings the entry reads, as (name in its config section's ``params``, attribute
    #: of :class:`~latent_replay.config.ExperimentConfig`): a replay's layer, memory size and storage.
    keys: tuple[tuple[str, str], ...] = ()
    #: Sort key: the order of the names in error messages, tables and figure legends.
    order: float = 0.0


class Registry:
    """Names of one kind, filled by :meth:`register` when ``package`` is first imported."""

    def __init__(self, kind: str, package: str):
        self.kind, self.package = kind, package
        self._entries: dict[str, Entry] = {}
        self._loaded = False

    def register(self, name: str, *, title: str, aliases: tuple[str, ...] = (), colour: Optional[str] = None,
                 params: Optional[type] = None, keys: tuple[tuple[str, str], ...] = (),
                 order: Optional[float] = None) -> Callable[[Any], Any]:
        """Decorator: register the class (or function) under ``name``."""
        def add(obj):
            clash = [n for n in dict.fromkeys((name, *aliases)) if n in self._lookup()]
            if clash:
                raise ValueError(f"{self.kind} {clash[0]!r} is registered already")
            rank = len(self._entries) if order is None else order
            self._entries[name] = Entry(name, obj, title, tuple(aliases), colour, params, tuple(keys), rank)
            return obj
        return add

    def _load(self) -> None:
        if not self._loaded:   # a failed import is retried (and raises again) at the next use
            importlib.import_module(self.package)
            self._loaded = True

    def _lookup(self) -> dict[str, str]:
        return {**{e.name: e.name for e in self._entries.values()},
                **{a: e.name for e in self._entries.values() for a in e.aliases}}

    def entries(self) -> list[Entry]:
        """Every entry, in order."""
        self._load()
        return sorted(self._entries.values(), key=lambda e: e.order)

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries())

    def names(self) -> tuple[str, ...]:
        return tuple(e.name for e in self.entries())

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._lookup()

    def canonical(self, name: str) -> str:
        """The registered name of ``name`` or of its alias; other values are returned as they are."""
        self._load()
        return self._lookup().get(name, name) if isinstance(name, str) else name

    def get(self, name: str) -> Entry:
        """The entry of ``name`` or of its alias (KeyError naming the valid names otherwise)."""
        self._load()
        found = self._lookup().get(name)
        if found is None:
            raise KeyError(f"{self.kind} {name!r} is not one of {', '.join(self.names())}")
        return self._entries[found]

    def aliases(self) -> dict[str, str]:
        """Alias -> name, over every entry (in order)."""
        return {a: e.name for e in self.entries() for a in e.aliases}


#: Continual-learning methods (``latent_replay/methods/``).
METHODS = Registry("method", "latent_replay.methods")
#: Replay memories (``latent_replay/replay/``).
REPLAYS = Registry("replay", "latent_replay.replay")
#: Streams: what is trained and tested on (``latent_replay/streams/``).
STREAMS = Registry("stream", "latent_replay.streams")
