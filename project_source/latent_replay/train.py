"""The trainer's public names (the engine lives in :mod:`latent_replay.engine`).

``Trainer`` runs an experiment's runs (:mod:`~latent_replay.engine.experiment`), ``RunTrainer`` one
run (:mod:`~latent_replay.engine.run`), ``plan_batch`` and ``Minibatch`` say what each iteration
trains on (:mod:`~latent_replay.engine.minibatches`).
"""
from .engine.evaluation import TEST_CACHE_LIMIT_BYTES
from .engine.experiment import CLI_OVERRIDES, Trainer, batches_to_train
from .engine.minibatches import Minibatch, Schedule, hits, pad_indices, pad_random, plan_batch
from .engine.checkpoints import CHECKPOINT, StaleCheckpoint
from .engine.run import RunTrainer, prepare_device, resolve_device, resolve_preprocessing

__all__ = ["CHECKPOINT", "CLI_OVERRIDES", "Minibatch", "RunTrainer", "Schedule", "StaleCheckpoint",
           "TEST_CACHE_LIMIT_BYTES", "Trainer", "batches_to_train", "hits", "pad_indices", "pad_random", "plan_batch",
           "prepare_device", "resolve_device", "resolve_preprocessing"]
