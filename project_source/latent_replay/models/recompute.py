"""Keep one activation per conv layer for the backward pass instead of two (``recompute_bn_relu``).

In a ``conv -> BRN -> Scale -> ReLU`` block autograd keeps two tensors of the layer's output size for
the backward pass: the normalisation's input ``z`` (the convolution's output) and the ReLU's output
``y``, which the ReLU needs and the next convolution needs as its input. ``y`` is a cheap function of
``z``: ``y = relu(F.batch_norm(z, None, None, w, b, True, 0, eps))`` with the fused weight and bias
the layer used, or with the batch statistics it computed itself where it did (channels-last on the CPU;
:meth:`BatchRenorm2d.train_forward`). Inside :func:`recompute_bn_relu`, every saved
reference to a block's ``y`` is replaced by a small token holding ``z`` (kept anyway) and ``w``, ``b``;
the backward pass recomputes ``y`` from them once (both users of ``y`` share it) and drops it as soon
as both have used it. The recomputation runs the same kernel on the same input, so the gradients are
the same as without it (bitwise on the CPU); the price is one normalisation forward per layer in the
backward pass. Measured on MobileNetV1 at 128x128, minibatch 128, on 2 CPU cores: the saved
activations of a whole-network iteration go from 1,645 to 841 MB, the trainer's batch-0 peak RSS from
3.17 to 2.75 GB, and a whole-network training iteration takes 11-17 % longer (the recomputation runs
the normalisation's statistics pass again); the part above ``conv5_4/dw`` is as fast either way. So the
trainer's switch ``recompute_bn_relu`` is off by default.

Only what is saved while the context is active is affected, so no-gradient passes and evaluation are
unchanged; the running statistics are not touched by the recomputation (no running buffers are
passed), and neither are the BRN step counters (their hooks sit on the forward graph).

Limits: the context belongs to the thread that opened it (as PyTorch's saved-tensor hooks do); a
backward pass that builds a graph (``create_graph=True``) is refused, since the recomputed outputs
carry no graph; and it is meant for eager mode (saved-tensor hooks and ``torch.compile`` do not mix).
"""
from __future__ import annotations

import contextlib
import threading
import weakref

import torch
import torch.nn.functional as F

__all__ = ["active", "recompute_bn_relu", "register_block_output"]

_local = threading.local()      # .registry: the active _Registry of this thread, if any


class _Recomputed:
    """A saved reference to a block output ``y``, recomputed from the block's normalisation input."""

    __slots__ = ("z", "w", "b", "mean", "var", "eps", "uses", "value")

    def __init__(self, z: torch.Tensor, w: torch.Tensor, b: torch.Tensor, mean: torch.Tensor | None,
                 var: torch.Tensor | None, eps: float):
        self.z, self.w, self.b, self.mean, self.var, self.eps = z, w, b, mean, var, eps
        self.uses = 0          # saved references not yet unpacked
        self.value = None

    def unpack(self) -> torch.Tensor:
        if torch.is_grad_enabled():    # the engine enables grad mode only for create_graph=True
            raise RuntimeError("recompute_bn_relu: a backward pass with create_graph=True needs the block outputs' "
                               "graph; run that forward without recompute_bn_relu")
        if self.value is None:
            with torch.no_grad():
                # the statistics the forward used where it was given them (channels-last on the CPU)
                y = F.batch_norm(self.z, self.mean, self.var, self.w, self.b, self.mean is None, 0.0, self.eps)
                self.value = F.relu(y, inplace=True)
        value = self.value
        self.uses -= 1
        if self.uses <= 0:     # every user has it: free it (a second backward would recompute it)
            self.value = None
        return value


class _Registry:
    """Block outputs of the current forward, by storage address (alive ones only: weak references)."""

    def __init__(self):
        self.outputs: dict[int, tuple] = {}
        self.packed = 0        # saved references replaced by tokens (for tests and benchmarks)

    def pack(self, t: torch.Tensor):
        entry = self.outputs.get(t.untyped_storage().data_ptr())
        if entry is not None:
            ref, token = entry
            y = ref()
            # the address alone could be a later tensor's once y is freed; y alive means it is y's
            if (y is not None and y.shape == t.shape and y.stride() == t.stride()
                    and y.storage_offset() == t.storage_offset() and y.dtype == t.dtype):
                token.uses += 1
                self.packed += 1
                return token
        return t

    @staticmethod
    def unpack(saved):
        return saved.unpack() if isinstance(saved, _Recomputed) else saved


def register_block_output(y: torch.Tensor, z: torch.Tensor, affine, eps: float) -> None:
    """Inside :func:`recompute_bn_relu`: ``y`` (before the in-place ReLU) is recomputable from ``z``."""
    registry = getattr(_local, "registry", None)
    if registry is None or affine is None or not y.requires_grad:
        return
    registry.outputs[y.untyped_storage().data_ptr()] = (weakref.ref(y), _Recomputed(z, *affine, eps))


@contextlib.contextmanager
def recompute_bn_relu(enabled: bool = True):
    """Forward passes inside save each conv block's ReLU output as a recomputable token (see above).

    Yields the registry (``.packed`` counts the references replaced) or None when disabled. Not
    re-entrant: a nested call is an error rather than a silent second set of hooks.
    """
    if not enabled:
        yield None
        return
    if active():
        raise RuntimeError("recompute_bn_relu is already active")
    registry = _Registry()
    _local.registry = registry
    try:
        with torch.autograd.graph.saved_tensors_hooks(registry.pack, registry.unpack):
            yield registry
    finally:
        _local.registry = None
        registry.outputs.clear()


def active() -> bool:
    """Whether a :func:`recompute_bn_relu` context is active in this thread."""
    return getattr(_local, "registry", None) is not None
