"""MobileNetV1 (128x128 input, 50 classes) with the Caffe layer names of the original release (spec §4.1).

Every convolution is bias-free and followed by Batch Renormalization (:class:`BatchRenorm2d`), a
per-channel affine (:class:`Scale`, Caffe's ``<name>/scale``) and a ReLU, so the output of the module
registered for a Caffe name is the post-ReLU blob of that name. ``pool6`` is a global average pool
returning ``N x 1024`` and ``mid_fc7`` is the classifier (linear 1024 -> num_classes, with bias; Caffe's
1x1 convolution).

Names
-----
* :data:`CAFFE_NAMES` – all layers in forward order: ``conv1``, ``conv2_1/dw``, ``conv2_1/sep``, …,
  ``conv6/sep``, ``pool6``, ``mid_fc7``. Modules are attributes named with ``/`` mapped to ``_``
  (:func:`attr_name`), so state-dict keys read ``conv2_1_dw.conv.weight``, ``conv2_1_dw.brn.A_mu``,
  ``conv2_1_dw.scale.weight`` (gamma), ``conv2_1_dw.scale.bias`` (beta), ``mid_fc7.weight``.
  :meth:`MobileNetV1.layer` returns a module by Caffe name.
* :data:`CONV_LAYERS` – the 27 conv names (each a :class:`ConvBlock` with ``.conv``, ``.brn``, ``.scale``).
* :data:`LATENT_LAYERS` – the 15 latent layers of spec §4.5, in order (``data`` … ``pool6``).

Splitting
---------
``split(model, name)`` / ``model.split(name)`` returns ``(lower, upper)``: two ``nn.Sequential`` that
share the model's modules (no copies) with ``upper(lower(x))`` computing exactly ``model(x)``. The latent
is the post-ReLU output of ``name``; ``data`` gives an empty (identity) lower, ``pool6`` an upper that
is only ``mid_fc7``. :func:`latent_shape`, :func:`stop_layer` (first layer of the upper part, where
Caffe stops back-propagation) and :func:`mac_fraction_below` give the rest of the spec §4.5 table.

Parameter groups (spec §4.4)
----------------------------
:func:`param_names_by_kind` / :meth:`MobileNetV1.param_groups_by_kind` sort the trainable parameters
into :data:`PARAM_KINDS`: ``conv1`` (3x3 full conv weight), ``depthwise`` (13 dw weights),
``pointwise`` (14 ``/sep`` weights), ``scale`` (gamma and beta of all 27 layers), ``fc_weight`` and
``fc_bias``. :func:`caffe_layer_of` maps a parameter/buffer name back to its Caffe layer.

Counting
--------
:func:`mac_counts` (per layer, from the modules' shapes and strides), :func:`conv_fc_parameter_count`
(3,236,338) and :func:`caffe_blob_count` (3,280,168: also BRN's four blobs and Scale's two).
"""
from __future__ import annotations

import functools
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from . import recompute
from .batch_renorm import FIRST_BATCH, STEP_ON, BatchRenorm2d, BRNConfig, Scale

__all__ = [
    "CAFFE_NAMES", "CONV_LAYERS", "SEPARABLE_BLOCKS", "LATENT_LAYERS", "PARAM_KINDS",
    "MobileNetV1", "ConvBlock", "GlobalAvgPool",
    "attr_name", "split", "latent_shape", "stop_layer", "mac_counts", "mac_fraction_below",
    "conv_fc_parameter_count", "caffe_blob_count", "param_names_by_kind", "caffe_layer_of",
]

#: The 13 depthwise-separable blocks: (Caffe prefix, input channels, output channels, dw stride).
SEPARABLE_BLOCKS: tuple[tuple[str, int, int, int], ...] = (
    ("conv2_1", 32, 64, 1), ("conv2_2", 64, 128, 2),
    ("conv3_1", 128, 128, 1), ("conv3_2", 128, 256, 2),
    ("conv4_1", 256, 256, 1), ("conv4_2", 256, 512, 2),
    ("conv5_1", 512, 512, 1), ("conv5_2", 512, 512, 1), ("conv5_3", 512, 512, 1),
    ("conv5_4", 512, 512, 1), ("conv5_5", 512, 512, 1), ("conv5_6", 512, 1024, 2),
    ("conv6", 1024, 1024, 1),
)

CONV_LAYERS: tuple[str, ...] = ("conv1",) + tuple(
    f"{p}/{kind}" for p, *_ in SEPARABLE_BLOCKS for kind in ("dw", "sep"))
CAFFE_NAMES: tuple[str, ...] = CONV_LAYERS + ("pool6", "mid_fc7")
LATENT_LAYERS: tuple[str, ...] = ("data",) + tuple(f"{p}/dw" for p, *_ in SEPARABLE_BLOCKS) + ("pool6",)
PARAM_KINDS: tuple[str, ...] = ("conv1", "depthwise", "pointwise", "scale", "fc_weight", "fc_bias")

_FEATURES = 1024


def attr_name(caffe_name: str) -> str:
    """Module attribute for a Caffe layer name (``conv2_1/dw`` -> ``conv2_1_dw``)."""
    return caffe_name.replace("/", "_")


_CAFFE_BY_ATTR = {attr_name(n): n for n in CAFFE_NAMES}


def caffe_layer_of(key: str) -> str:
    """Caffe layer owning a state-dict key (``conv5_4_sep.scale.weight`` -> ``conv5_4/sep``)."""
    head = key.split(".", 1)[0]
    if head not in _CAFFE_BY_ATTR:
        raise KeyError(f"{key!r} is not a MobileNetV1 parameter or buffer name")
    return _CAFFE_BY_ATTR[head]


def _check_layer(name: str, allowed=CAFFE_NAMES) -> None:
    if name not in allowed:
        raise ValueError(f"unknown layer {name!r}; valid: {', '.join(allowed)}")


class ConvBlock(nn.Module):
    """One Caffe conv layer with its in-place companions: conv (no bias) -> BRN -> Scale -> ReLU."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int, groups: int = 1,
                 brn_config: BRNConfig = FIRST_BATCH, step_on: str = "backward"):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, stride, padding=kernel_size // 2, groups=groups,
                              bias=False)
        self.brn = BatchRenorm2d(out_ch, brn_config, step_on)
        self.scale = Scale(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.conv(x)
        if not (self.brn.training and recompute.active()):
            return F.relu(self.brn(z, self.scale.weight, self.scale.bias), inplace=True)
        y, affine = self.brn.train_forward(z, self.scale.weight, self.scale.bias)
        recompute.register_block_output(y, z, affine, self.brn.eps)
        return F.relu(y, inplace=True)


class GlobalAvgPool(nn.Module):
    """``pool6``: global average pooling, ``N x C x H x W`` -> ``N x C``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class MobileNetV1(nn.Module):
    """MobileNetV1 with Caffe layer names and Batch Renormalization (see the module docstring).

    Args:
        num_classes: outputs of ``mid_fc7`` (50 CORe50 objects).
        brn_config: initial Batch Renormalization settings of all 27 BRN layers (batch-0 preset).
        step_on: when BRN step counters advance, ``'backward'`` (Caffe) or ``'forward'``.
        fc_bias: whether ``mid_fc7`` has a bias (Caffe: yes; counted in the 3,236,338 parameters).

    Initialisation (training from scratch): Kaiming-normal convs (fan-out for conv1 and pointwise,
    fan-in for depthwise, as pytorchcv), gamma 1, beta 0, BRN accumulators and counters 0 (Caffe),
    classifier N(0, 0.01) with zero bias.
    """

    def __init__(self, num_classes: int = 50, brn_config: BRNConfig = FIRST_BATCH, step_on: str = "backward",
                 fc_bias: bool = True):
        super().__init__()
        self.num_classes = num_classes
        self.brn_config = brn_config
        kw = dict(brn_config=brn_config, step_on=step_on)
        self.conv1 = ConvBlock(3, 32, 3, 2, **kw)
        for prefix, cin, cout, stride in SEPARABLE_BLOCKS:
            self.add_module(f"{prefix}_dw", ConvBlock(cin, cin, 3, stride, groups=cin, **kw))
            self.add_module(f"{prefix}_sep", ConvBlock(cin, cout, 1, 1, **kw))
        self.pool6 = GlobalAvgPool()
        self.mid_fc7 = nn.Linear(_FEATURES, num_classes, bias=fc_bias)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        for name in CONV_LAYERS:
            block = self.layer(name)
            mode = "fan_in" if name.endswith("/dw") else "fan_out"
            nn.init.kaiming_normal_(block.conv.weight, mode=mode, nonlinearity="relu")
            block.scale.weight.fill_(1.0)
            block.scale.bias.zero_()
            for buf in (block.brn.A_mu, block.brn.A_var, block.brn.S, block.brn.t):
                buf.zero_()
        nn.init.normal_(self.mid_fc7.weight, std=0.01)
        if self.mid_fc7.bias is not None:
            self.mid_fc7.bias.zero_()

    # -- access ----------------------------------------------------------------------------------
    def layer(self, name: str) -> nn.Module:
        """Module of a Caffe layer name (``'conv5_4/dw'`` -> its :class:`ConvBlock`)."""
        _check_layer(name)
        return getattr(self, attr_name(name))

    def layers(self) -> "OrderedDict[str, nn.Module]":
        """All layers in forward order, keyed by Caffe name."""
        return OrderedDict((n, self.layer(n)) for n in CAFFE_NAMES)

    def brn_layers(self) -> "OrderedDict[str, BatchRenorm2d]":
        """The 27 BRN modules keyed by their conv's Caffe name."""
        return OrderedDict((n, self.layer(n).brn) for n in CONV_LAYERS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name in CAFFE_NAMES:
            x = getattr(self, attr_name(name))(x)
        return x

    def split(self, latent_layer: str) -> tuple[nn.Sequential, nn.Sequential]:
        """See :func:`split`."""
        return split(self, latent_layer)

    # -- Batch Renormalization -------------------------------------------------------------------
    def set_brn_config(self, config: BRNConfig, layers=None) -> None:
        """Set the BRN settings of all (or the named) conv layers, e.g. the incremental preset at batch 1."""
        for name, brn in self.brn_layers().items():
            if layers is None or name in layers:
                brn.set_config(config)
        if layers is None:
            self.brn_config = config

    def rescale_brn_past_weight(self, weight: float, layers=None) -> None:
        """Caffe ``set_brn_past_weight`` on all (or the named) BRN layers: ``A *= W/S``, ``S = W``."""
        for name, brn in self.brn_layers().items():
            if layers is None or name in layers:
                brn.rescale_past_weight(weight)

    def set_brn_step_on(self, step_on: str) -> None:
        """When the BRN step counters advance: ``'backward'`` (Caffe) or ``'forward'``."""
        if step_on not in STEP_ON:
            raise ValueError(f"step_on must be one of {STEP_ON}, got {step_on!r}")
        for brn in self.brn_layers().values():
            brn.step_on = step_on

    # -- parameter groups ------------------------------------------------------------------------
    def param_groups_by_kind(self) -> "OrderedDict[str, list[nn.Parameter]]":
        """Trainable parameters per kind of :data:`PARAM_KINDS` (see :func:`param_names_by_kind`)."""
        params = dict(self.named_parameters())
        return OrderedDict((k, [params[n] for n in names]) for k, names in param_names_by_kind(self).items())


def param_names_by_kind(model: MobileNetV1) -> "OrderedDict[str, list[str]]":
    """Parameter names per kind, in forward order (spec §4.4 learning-rate / decay groups).

    ``conv1``/``depthwise``/``pointwise`` and ``fc_weight`` take weight decay in Caffe; ``scale``
    (gamma, beta) and ``fc_bias`` do not. There are 13 pointwise (``/sep``) weights; the "14 pointwise
    1x1 convs" of spec §4.4 also count ``mid_fc7``, a 1x1 convolution in Caffe.
    """
    out: "OrderedDict[str, list[str]]" = OrderedDict((k, []) for k in PARAM_KINDS)
    for name, _ in model.named_parameters():
        layer = caffe_layer_of(name)
        if layer == "mid_fc7":
            out["fc_weight" if name.endswith("weight") else "fc_bias"].append(name)
        elif ".scale." in name:
            out["scale"].append(name)
        elif layer == "conv1":
            out["conv1"].append(name)
        else:
            out["depthwise" if layer.endswith("/dw") else "pointwise"].append(name)
    return out


def split(model: MobileNetV1, latent_layer: str) -> tuple[nn.Sequential, nn.Sequential]:
    """``(lower, upper)`` sharing ``model``'s modules, with ``upper(lower(x))`` == ``model(x)``.

    ``lower`` ends with ``latent_layer`` (its post-ReLU output is the latent); ``upper`` starts at
    :func:`stop_layer`. ``data``: ``lower`` is empty (identity); ``pool6``: ``upper`` is ``mid_fc7``.
    """
    _check_layer(latent_layer, LATENT_LAYERS)
    cut = 0 if latent_layer == "data" else CAFFE_NAMES.index(latent_layer) + 1
    mods = [(attr_name(n), model.layer(n)) for n in CAFFE_NAMES]
    return nn.Sequential(OrderedDict(mods[:cut])), nn.Sequential(OrderedDict(mods[cut:]))


def stop_layer(latent_layer: str) -> str:
    """First layer consuming the latent (where Caffe stops back-propagation), spec §4.5."""
    _check_layer(latent_layer, LATENT_LAYERS)
    return "conv1" if latent_layer == "data" else CAFFE_NAMES[CAFFE_NAMES.index(latent_layer) + 1]


def _conv_out(size: int, conv: nn.Conv2d) -> int:
    k, s, p, d = conv.kernel_size[0], conv.stride[0], conv.padding[0], conv.dilation[0]
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


@functools.lru_cache(maxsize=None)
def _default_tables(input_size: int) -> tuple[dict, dict]:
    """(latent shapes, MACs per layer) of a default model, computed once per input size."""
    model = MobileNetV1()
    shapes = {"data": (3, input_size, input_size), "pool6": (_FEATURES,)}
    size = input_size
    for name in CONV_LAYERS:
        conv = model.layer(name).conv
        size = _conv_out(size, conv)
        if name in LATENT_LAYERS:
            shapes[name] = (conv.out_channels, size, size)
    return shapes, dict(mac_counts(model, input_size))


def latent_shape(latent_layer: str, input_size: int = 128) -> tuple[int, ...]:
    """Shape of one latent pattern (no batch axis): ``data`` -> (3, s, s), ``conv5_4/dw`` -> (512, 8, 8)
    at s = 128, ``pool6`` -> (1024,)."""
    _check_layer(latent_layer, LATENT_LAYERS)
    return _default_tables(input_size)[0][latent_layer]


def mac_counts(model: MobileNetV1 | None = None, input_size: int = 128) -> "OrderedDict[str, int]":
    """Multiply-accumulates per image for every layer of :data:`CAFFE_NAMES`, from the modules' shapes.

    Convolutions: ``H_out*W_out*C_out*(C_in/groups)*k*k``; ``mid_fc7``: ``in*out``; ``pool6``: 0 (no
    multiplications; BRN/Scale/ReLU are not counted either). Total at 128x128: 185,427,968 (~185.4 M).
    """
    if model is None:
        return OrderedDict(_default_tables(input_size)[1])
    out: "OrderedDict[str, int]" = OrderedDict()
    size = input_size
    for name in CAFFE_NAMES:
        mod = model.layer(name)
        if isinstance(mod, ConvBlock):
            conv = mod.conv
            size = _conv_out(size, conv)
            kh, kw = conv.kernel_size
            out[name] = size * size * conv.out_channels * (conv.in_channels // conv.groups) * kh * kw
        elif isinstance(mod, nn.Linear):
            out[name] = mod.in_features * mod.out_features
        else:
            out[name] = 0
    return out


def mac_fraction_below(latent_layer: str, model: MobileNetV1 | None = None, input_size: int = 128) -> float:
    """Fraction of the forward MACs spent in layers up to and including ``latent_layer`` (spec §4.5)."""
    _check_layer(latent_layer, LATENT_LAYERS)
    macs = mac_counts(model, input_size)
    if latent_layer == "data":
        return 0.0
    below = 0
    for name, m in macs.items():
        below += m
        if name == latent_layer:
            break
    return below / sum(macs.values())


def conv_fc_parameter_count(model: MobileNetV1) -> int:
    """Convolution and classifier parameters (weights + fc bias): 3,236,338 for 50 classes."""
    n = sum(model.layer(name).conv.weight.numel() for name in CONV_LAYERS)
    return n + sum(p.numel() for p in model.mid_fc7.parameters())


def caffe_blob_count(model: MobileNetV1) -> int:
    """Length of Caffe's flat vector of all blobs: conv+fc, BRN (A_mu, A_var, S, t), Scale (gamma, beta).

    3,280,168 for 50 classes (the width of the original ``ewc`` blob, spec §4.1).
    """
    n = conv_fc_parameter_count(model)
    for name in CONV_LAYERS:
        block = model.layer(name)
        n += sum(b.numel() for b in (block.brn.A_mu, block.brn.A_var, block.brn.S, block.brn.t))
        n += block.scale.weight.numel() + block.scale.bias.numel()
    return n
