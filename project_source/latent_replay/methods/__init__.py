"""Continual-learning methods, one per file, each registered by name in :data:`~latent_replay.registry.METHODS`
(naive and joint, CWR*, AR1*-free and AR1*, LwF; spec §6). Every module of this package is imported
here, so a new method is one new file."""
import importlib
import pkgutil

from ..registry import METHODS
from .ar1 import AR1Free, AR1Star, Importance
from .base import DECAY_MULTS, Method
from .cwr import CWRHead, CWRStar
from .naive import Joint, Naive

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


def make_method(cfg, model) -> Method:
    """The method object for ``cfg.method``."""
    return METHODS.get(cfg.method).obj(cfg, model)


__all__ = ["AR1Free", "AR1Star", "CWRHead", "CWRStar", "DECAY_MULTS", "Importance", "Joint", "Method", "Naive",
           "make_method"]
