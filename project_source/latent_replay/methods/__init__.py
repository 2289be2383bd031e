"""Continual-learning methods, one per file: naive, joint, CWR*, AR1*-free, AR1* (spec §6)."""
from .ar1 import AR1Free, AR1Star, Importance
from .base import DECAY_MULTS, Method
from .cwr import CWRHead, CWRStar
from .naive import Joint, Naive

METHOD_CLASSES = {"naive": Naive, "joint": Joint, "cwr": CWRStar, "ar1free": AR1Free, "ar1": AR1Star}


def make_method(cfg, model) -> Method:
    """The method object for ``cfg.method``."""
    return METHOD_CLASSES[cfg.method](cfg, model)


__all__ = ["AR1Free", "AR1Star", "CWRHead", "CWRStar", "DECAY_MULTS", "Importance", "Joint", "Method", "Naive",
           "METHOD_CLASSES", "make_method"]
