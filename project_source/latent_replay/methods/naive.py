"""Naive fine-tuning and the joint (cumulative) upper bound: plain classifier, no consolidation.

*Naive* trains the layers the incremental phase allows (1x1 convs, Scale, classifier; conv1 and
depthwise convs frozen after batch 0, spec §4.4) at the base learning rate with the configured
classifier multiplier (1 by default). *Joint* is the cumulative upper bound: at every batch the trainer
retrains it like batch 0 (whole network, first-batch learning rate and BRN settings) on every frame
seen so far, shuffled; its cost grows with the number of batches.
"""
from __future__ import annotations

from ..registry import METHODS
from .base import Method


@METHODS.register("naive", title="naive", aliases=("NAIVE",), colour="#7f7f7f", order=0)
class Naive(Method):
    name = "naive"


@METHODS.register("joint", title="joint", aliases=("JOINT",), colour="#222222", order=1)
class Joint(Method):
    name = "joint"
    cumulative = True
