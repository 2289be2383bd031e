"""Streams: what a continual learner is trained and tested on, behind one interface
(:class:`~latent_replay.streams.base.Stream`: batches, a test set, the number of classes, the input
shape, and the inputs of any rows), each implementation registered by name in
:data:`~latent_replay.registry.STREAMS`: CORe50 NICv2 (:mod:`.core50`, the main pipeline's) and the
permuted and rotated digit streams (:mod:`.digits`, glr-bench's). Every module of this package is
imported here, so a new stream is one new file."""
import importlib
import pkgutil

from .base import Experience, Stream

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["Experience", "Stream"]
