"""What every method shares: which parameter kinds learn in which phase, and the hooks the trainer calls.

The trainer owns the loop (spec §5.4); a method only answers a few questions and reacts to a few
events, in the style of Avalanche's strategy plugins:

* :meth:`Method.lr_mults` – learning-rate multiplier (of the phase's base rate) per parameter kind
  (``conv1``, ``depthwise``, ``pointwise``, ``scale``, ``fc_weight``, ``fc_bias``); 0 = frozen;
* :meth:`Method.before_batch` – after the batch's data is known (CWR*: reset/load the classifier);
* :meth:`Method.loss` – the loss of an iteration from the logits and the minibatch (the learning part
  and its input, so a method can run another model on the same rows: e.g. distillation);
* :meth:`Method.after_backward`, :meth:`Method.adjust_gradients`, :meth:`Method.after_step` – around
  each optimiser step (AR1*): raw gradients, then gradients with weight decay, then the new weights;
* :meth:`Method.after_training` – at the batch's last iteration (CWR*: consolidate; AR1*: importance);
* :meth:`Method.state_dict` / :meth:`Method.load_state_dict` – for checkpoints.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config import ExperimentConfig
from ..models import MobileNetV1

#: Weight decay multiplier per kind (Caffe ``decay_mult``): conv and fc weights 1, Scale and fc bias 0.
DECAY_MULTS = {"conv1": 1.0, "depthwise": 1.0, "pointwise": 1.0, "scale": 0.0, "fc_weight": 1.0, "fc_bias": 0.0}


class Method:
    """Base: a plain classifier, the shared layers of spec §4.4 learning in incremental batches."""

    name = "base"
    #: Whether the method keeps CWR*'s consolidated classifier.
    uses_cwr_head = False
    #: Whether only the classifier learns in incremental batches (CWR*).
    classifier_only = False
    #: Whether every batch retrains like batch 0 on everything seen so far (joint).
    cumulative = False
    #: The classifier's learning-rate multiplier in incremental batches unless the config sets one.
    classifier_lr_mult = 1.0

    def __init__(self, cfg: ExperimentConfig, model: MobileNetV1):
        self.cfg = cfg
        self.model = model

    def lr_mults(self, batch_index: int) -> dict[str, float]:
        """Learning-rate multipliers per parameter kind (spec §4.4, §5.6). The fc bias never learns."""
        if batch_index == 0:
            return {"conv1": 1.0, "depthwise": 1.0, "pointwise": 1.0, "scale": 1.0, "fc_weight": 1.0, "fc_bias": 0.0}
        shared = 0.0 if self.classifier_only else 1.0
        return {"conv1": 0.0, "depthwise": 0.0, "pointwise": shared, "scale": shared,
                "fc_weight": self.cfg.resolved_classifier_lr_mult, "fc_bias": 0.0}

    def set_moving(self, names: set[str]) -> None:
        """The parameters the optimiser may change from now on (trainable or decay-only)."""

    def before_batch(self, batch_index: int, labels: torch.Tensor, new_labels: torch.Tensor | None = None) -> None:
        """``labels``: every label trained on in this batch (new patterns and memory); ``new_labels``:
        those of the new patterns only (unpadded)."""

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, minibatch) -> torch.Tensor:
        """The loss to minimise for one iteration (default: cross-entropy). ``minibatch`` is the
        trainer's :class:`~latent_replay.train.Minibatch`: ``part`` (the learning part of the network)
        and its ``inputs``, ``new_rows`` of them new patterns, the rest replayed."""
        return F.cross_entropy(logits, labels)

    def after_backward(self) -> None:
        """The loss gradients are in ``.grad`` (weight decay not yet added)."""

    def adjust_gradients(self) -> None:
        """Weight decay has been added to the gradients; the optimiser steps next."""

    def after_step(self) -> None:
        """Right after the optimiser step."""

    def after_training(self, batch_index: int) -> None:
        """After the batch's last iteration, before evaluation."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def present_counts(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Pattern count per class (float64, on the labels' device)."""
    return torch.bincount(labels.long(), minlength=num_classes).double()
