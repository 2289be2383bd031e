"""Read, write and import Caffe ``.caffemodel`` files without Caffe or protobuf.

A ``.caffemodel`` is a serialized ``caffe.NetParameter``. Only the few fields that carry weights are
decoded, straight from the protobuf wire format (varint keys, length-delimited sub-messages, packed
floats read with ``numpy.frombuffer``); every other field is skipped by its wire type:

=====================  ==========================================================================
message                fields used (number: name)
=====================  ==========================================================================
NetParameter           1: name, 100: layer (LayerParameter), 2: layers (legacy V1LayerParameter)
LayerParameter         1: name, 2: type (string), 7: blobs (BlobProto)
V1LayerParameter       4: name, 5: type (enum), 6: blobs (BlobProto)
BlobProto              7: shape (BlobShape), 5: data (packed float), 8: double_data (packed double),
                       1-4: legacy num/channels/height/width
BlobShape              1: dim (packed int64)
=====================  ==========================================================================

:func:`import_caffemodel` maps blobs onto :class:`MobileNetV1` by Caffe layer name:

* ``<conv>`` (``conv1``, ``conv2_1/dw``, …): blob 0 -> conv weight (a bias blob is reported, our convs
  are bias-free);
* ``<conv>/brn`` (``BatchReNorm``, 4 blobs): accumulated mean, accumulated variance, normaliser S,
  step counter t -> the BRN buffers;
* ``<conv>/bn`` (``BatchNorm``, 3 blobs: mean and variance accumulators and their scale factor, the
  same convention as BRN) -> ``A_mu``, ``A_var``, ``S`` with ``t = 0``, unless ``bn_stats=False``
  (which reproduces Caffe's name-based copy that leaves ``/brn`` empty, spec B14); a ``/brn`` layer of
  the same conv takes precedence;
* ``<conv>/scale`` (``Scale``): gamma, beta;
* ``mid_fc7``: weight (``50x1024`` or ``50x1024x1x1``) and bias.

Anything else (e.g. the ImageNet ``fc7``) is reported as skipped; model tensors the file does not
provide are reported as missing; a shape mismatch raises ValueError naming the blob.
:func:`export_caffemodel` writes our model in the same layout (BatchReNorm blobs), e.g. for round trips.
"""
from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .mobilenet_v1 import CONV_LAYERS, MobileNetV1, attr_name

log = logging.getLogger(__name__)

__all__ = ["CaffeLayer", "read_caffemodel", "write_caffemodel", "import_caffemodel", "export_caffemodel",
           "model_to_caffe_layers"]

# ------------------------------------------------------------------------------------------------
# the import report and tensor copy shared with the pytorchcv import (weights.py): here, so that
# weights.py, whose load_weights picks this importer, depends on this module and not the reverse
# ------------------------------------------------------------------------------------------------
#: The report logs under the name it always had (``latent_replay.models.weights``).
_report_log = logging.getLogger("latent_replay.models.weights")


@dataclass
class ImportReport:
    """What a weight import did: ``mapped`` (source entry, our key), ``skipped`` source entries with the
    reason, and ``missing`` keys of our model that the source did not provide (left as they were)."""

    source: str
    format: str
    mapped: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.missing

    def summary(self) -> str:
        lines = [f"{self.format} import from {self.source}: {len(self.mapped)} tensors mapped, "
                 f"{len(self.skipped)} source entries skipped, {len(self.missing)} model tensors missing"]
        by_reason: dict[str, list[str]] = {}
        for src, why in self.skipped:
            by_reason.setdefault(why, []).append(src)
        for why, srcs in by_reason.items():
            what = srcs[0] if len(srcs) == 1 else f"{len(srcs)} entries ({srcs[0]}, …)"
            lines.append(f"  skipped {what}: {why}")
        lines += [f"  missing {key} (left as initialised)" for key in self.missing]
        return "\n".join(lines)

    def log(self) -> None:
        if self.skipped or self.missing:
            _report_log.warning("%s", self.summary())
        else:
            _report_log.info("%s", self.summary())

    def to_dict(self) -> dict:
        return {"source": self.source, "format": self.format, "mapped": [list(m) for m in self.mapped],
                "skipped": [list(s) for s in self.skipped], "missing": list(self.missing)}


def _squeezed(shape) -> tuple[int, ...]:
    return tuple(int(s) for s in shape if s != 1)


@torch.no_grad()
def _assign(state: Mapping[str, torch.Tensor], key: str, value, what: str) -> None:
    """Copy ``value`` into ``state[key]``; shapes must agree up to singleton axes (one-line error)."""
    target = state[key]
    value = torch.as_tensor(value)
    if _squeezed(value.shape) != _squeezed(target.shape):
        raise ValueError(f"{what} has shape {tuple(value.shape)} but {key} expects {tuple(target.shape)}")
    target.copy_(value.reshape(target.shape).to(target.dtype))


# V1LayerParameter.LayerType values that can carry blobs or show up in MobileNet-era files.
_V1_TYPES = {1: "Accuracy", 3: "Concat", 4: "Convolution", 5: "Data", 6: "Dropout", 14: "InnerProduct",
             17: "Pooling", 18: "ReLU", 20: "Softmax", 21: "SoftmaxWithLoss"}
_V1_CODES = {v: k for k, v in _V1_TYPES.items()}


@dataclass
class CaffeLayer:
    """One layer of a NetParameter: name, type string, blobs as float32 arrays with their Caffe shape."""

    name: str
    type: str = ""
    blobs: list[np.ndarray] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------
# wire format: reading
# ------------------------------------------------------------------------------------------------
class _WireError(ValueError):
    pass


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise _WireError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise _WireError("varint longer than 10 bytes")


def _fields(buf: bytes, pos: int, end: int):
    """Yield ``(field number, wire type, value)``; value is an int (varint), or ``(start, end)`` of the
    payload for length-delimited (2), 64-bit (1) and 32-bit (5) fields."""
    while pos < end:
        key, pos = _varint(buf, pos, end)
        num, wt = key >> 3, key & 7
        if num == 0:
            raise _WireError("field number 0")
        if wt == 0:
            value, pos = _varint(buf, pos, end)
            yield num, wt, value
            continue
        if wt == 2:
            n, pos = _varint(buf, pos, end)
        elif wt == 1:
            n = 8
        elif wt == 5:
            n = 4
        else:
            raise _WireError(f"unsupported wire type {wt} (field {num})")
        if pos + n > end:
            raise _WireError(f"field {num} runs past the end of its message")
        yield num, wt, (pos, pos + n)
        pos += n


def _packed_varints(buf, span) -> list[int]:
    out, pos = [], span[0]
    while pos < span[1]:
        v, pos = _varint(buf, pos, span[1])
        out.append(v - (1 << 64) if v >= 1 << 63 else v)
    return out


def _parse_blob(buf: bytes, start: int, end: int) -> np.ndarray:
    shape: list[int] | None = None
    legacy = {1: 0, 2: 0, 3: 0, 4: 0}
    chunks: list[np.ndarray] = []
    for num, wt, val in _fields(buf, start, end):
        if num == 7 and wt == 2:
            shape = []
            for n2, w2, v2 in _fields(buf, *val):
                if n2 == 1:
                    shape += _packed_varints(buf, v2) if w2 == 2 else [v2]
        elif num in legacy and wt == 0:
            legacy[num] = val
        elif num == 5 and wt in (2, 5):
            chunks.append(np.frombuffer(buf, dtype="<f4", count=(val[1] - val[0]) // 4, offset=val[0]))
        elif num == 8 and wt in (2, 1):
            chunks.append(np.frombuffer(buf, dtype="<f8", count=(val[1] - val[0]) // 8, offset=val[0]))
    data = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    if shape is None:
        shape = [legacy[i] for i in (1, 2, 3, 4)] if any(legacy.values()) else [data.size]
    if int(np.prod(shape)) != data.size:
        raise _WireError(f"blob shape {tuple(shape)} does not match its {data.size} values")
    return data.reshape(shape)


def _parse_layer(buf: bytes, start: int, end: int, v1: bool) -> CaffeLayer:
    name_f, type_f, blobs_f = (4, 5, 6) if v1 else (1, 2, 7)
    layer = CaffeLayer(name="")
    for num, wt, val in _fields(buf, start, end):
        if num == name_f and wt == 2:
            layer.name = buf[val[0]:val[1]].decode("utf-8")
        elif num == type_f and wt == 2 and not v1:
            layer.type = buf[val[0]:val[1]].decode("utf-8")
        elif num == type_f and wt == 0 and v1:
            layer.type = _V1_TYPES.get(val, f"V1:{val}")
        elif num == blobs_f and wt == 2:
            layer.blobs.append(_parse_blob(buf, *val))
    return layer


def read_caffemodel(source) -> list[CaffeLayer]:
    """Layers (with blobs) of a ``.caffemodel`` file (path or bytes), in file order.

    Both the current ``layer`` (100) and the legacy ``layers`` (2) lists are read. Raises ValueError
    with a one-line message when the bytes are not a NetParameter.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        buf, name = bytes(source), "<bytes>"
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such caffemodel file")
        buf, name = path.read_bytes(), str(path)
    layers: list[CaffeLayer] = []
    try:
        for num, wt, val in _fields(buf, 0, len(buf)):
            if num in (100, 2) and wt == 2:
                layers.append(_parse_layer(buf, *val, v1=(num == 2)))
    except (_WireError, UnicodeDecodeError) as e:
        raise ValueError(f"{name}: not a Caffe NetParameter file ({e})") from None
    if not layers:
        raise ValueError(f"{name}: not a Caffe NetParameter file (no layers found)")
    return layers


# ------------------------------------------------------------------------------------------------
# wire format: writing
# ------------------------------------------------------------------------------------------------
def _enc_varint(v: int) -> bytes:
    if v < 0:
        v += 1 << 64
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _enc_len(num: int, payload: bytes) -> bytes:
    return _enc_varint(num << 3 | 2) + _enc_varint(len(payload)) + payload


def _enc_blob(arr: np.ndarray, legacy_shape: bool) -> bytes:
    arr = np.asarray(arr, dtype="<f4")
    out = b""
    if legacy_shape:
        dims = (1,) * (4 - arr.ndim) + tuple(arr.shape) if arr.ndim <= 4 else None
        if dims is None:
            raise ValueError(f"legacy blob shapes have at most 4 axes, got {arr.shape}")
        for num, d in zip((1, 2, 3, 4), dims):
            out += _enc_varint(num << 3) + _enc_varint(int(d))
    else:
        out += _enc_len(7, _enc_len(1, b"".join(_enc_varint(int(d)) for d in arr.shape)))
    return out + _enc_len(5, arr.tobytes())


def write_caffemodel(path, layers: list[CaffeLayer], *, net_name: str = "MobileNetV1", v1: bool = False,
                     legacy_shape: bool = False) -> Path:
    """Write ``layers`` as a NetParameter (``layer`` list, or legacy V1 ``layers`` with ``v1=True``);
    ``legacy_shape`` writes num/channels/height/width instead of BlobShape. Atomic (tmp + replace)."""
    body = _enc_len(1, net_name.encode())
    for layer in layers:
        if v1:
            msg = _enc_len(4, layer.name.encode())
            if layer.type in _V1_CODES:
                msg += _enc_varint(5 << 3) + _enc_varint(_V1_CODES[layer.type])
            msg += b"".join(_enc_len(6, _enc_blob(b, legacy_shape)) for b in layer.blobs)
            body += _enc_len(2, msg)
        else:
            msg = _enc_len(1, layer.name.encode()) + _enc_len(2, layer.type.encode())
            msg += b"".join(_enc_len(7, _enc_blob(b, legacy_shape)) for b in layer.blobs)
            body += _enc_len(100, msg)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(body)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# ------------------------------------------------------------------------------------------------
# mapping onto MobileNetV1
# ------------------------------------------------------------------------------------------------
def model_to_caffe_layers(model: MobileNetV1) -> list[CaffeLayer]:
    """Our model as Caffe layers: conv, ``/brn`` (BatchReNorm, 4 blobs), ``/scale``, ``mid_fc7`` (1x1 conv)."""
    def np_(t: torch.Tensor) -> np.ndarray:
        return t.detach().cpu().to(torch.float32).numpy()

    layers = []
    for name in CONV_LAYERS:
        block = model.layer(name)
        brn = block.brn
        layers.append(CaffeLayer(name, "Convolution", [np_(block.conv.weight)]))
        layers.append(CaffeLayer(f"{name}/brn", "BatchReNorm",
                                 [np_(brn.A_mu), np_(brn.A_var), np_(brn.S).reshape(1), np_(brn.t).reshape(1)]))
        layers.append(CaffeLayer(f"{name}/scale", "Scale", [np_(block.scale.weight), np_(block.scale.bias)]))
    fc = model.mid_fc7
    blobs = [np_(fc.weight).reshape(fc.out_features, fc.in_features, 1, 1)]
    if fc.bias is not None:
        blobs.append(np_(fc.bias))
    layers.append(CaffeLayer("mid_fc7", "Convolution", blobs))
    return layers


def export_caffemodel(model: MobileNetV1, path, **kw) -> Path:
    """Write ``model`` as a ``.caffemodel`` (see :func:`model_to_caffe_layers`)."""
    return write_caffemodel(path, model_to_caffe_layers(model), **kw)


def _targets(layer: CaffeLayer, model: MobileNetV1, bn_stats: bool, brn_names: set[str]):
    """Our keys for each blob of ``layer`` (None = skip with reason), or a reason string for the layer."""
    name = layer.name
    if name in CONV_LAYERS:
        a = attr_name(name)
        return [f"{a}.conv.weight"] + [None] * (len(layer.blobs) - 1), "conv bias (our convs are bias-free)"
    if name == "mid_fc7":
        keys = ["mid_fc7.weight", "mid_fc7.bias" if model.mid_fc7.bias is not None else None]
        return keys[:len(layer.blobs)] + [None] * (len(layer.blobs) - 2), "extra blob / no bias in mid_fc7"
    base, _, suffix = name.rpartition("/")
    if base in CONV_LAYERS:
        a = attr_name(base)
        if suffix == "brn":
            keys = [f"{a}.brn.A_mu", f"{a}.brn.A_var", f"{a}.brn.S", f"{a}.brn.t"]
            return keys[:len(layer.blobs)] + [None] * (len(layer.blobs) - 4), "extra BatchReNorm blob"
        if suffix == "bn":
            if not bn_stats:
                return "BatchNorm statistics not loaded (bn_stats=False, like Caffe's name-based copy)"
            if base in brn_names:
                return f"superseded by {base}/brn"
            keys = [f"{a}.brn.A_mu", f"{a}.brn.A_var", f"{a}.brn.S"]
            return keys[:len(layer.blobs)] + [None] * (len(layer.blobs) - 3), "extra BatchNorm blob"
        if suffix == "scale":
            keys = [f"{a}.scale.weight", f"{a}.scale.bias"]
            return keys[:len(layer.blobs)] + [None] * (len(layer.blobs) - 2), "extra Scale blob"
    return "no layer of that name in MobileNetV1"


def import_caffemodel(model: MobileNetV1, source, *, bn_stats: bool = True,
                      stats_weight: float | None = 100.0) -> ImportReport:
    """Copy the blobs of a ``.caffemodel`` (path, bytes or a list of :class:`CaffeLayer`) into ``model``.

    Statistics from Caffe ``BatchNorm`` layers (``<name>/bn``: mean x S, variance x S, S) keep their
    mean and variance, with the normaliser set to ``stats_weight`` as the pytorchcv import does (None
    keeps the file's own S, e.g. ~1000 after a long Caffe training, under which batch 0's 96 BRN
    updates at lambda 0.99 would still leave the running estimate 86 % ImageNet's). ``<name>/brn``
    blobs (this suite's own export) are copied as they are.

    Returns an :class:`ImportReport` (also logged: a warning when something was skipped or is missing);
    raises ValueError naming the blob on a shape mismatch.
    """
    if isinstance(source, list):
        layers, name = source, "<layers>"
    else:
        layers = read_caffemodel(source)
        name = "<bytes>" if isinstance(source, (bytes, bytearray, memoryview)) else str(source)
    state = model.state_dict(keep_vars=True)
    report = ImportReport(source=name, format="caffe")
    assigned: set[str] = set()
    brn_names = {ly.name.rpartition("/")[0] for ly in layers if ly.name.endswith("/brn") and ly.blobs}
    for layer in layers:
        if not layer.blobs:
            continue
        targets = _targets(layer, model, bn_stats, brn_names)
        if isinstance(targets, str):
            report.skipped.append((f"{layer.name} ({layer.type or '?'}, {len(layer.blobs)} blobs)", targets))
            continue
        keys, extra_reason = targets
        stats_from_bn = layer.name.endswith("/bn")
        for i, (blob, key) in enumerate(zip(layer.blobs, keys)):
            what = f"{name}: blob {layer.name!r}[{i}]"
            if key is None:
                report.skipped.append((f"{layer.name}[{i}]", extra_reason))
                continue
            _assign(state, key, torch.from_numpy(np.ascontiguousarray(blob)), what)
            report.mapped.append((f"{layer.name}[{i}]", key))
            assigned.add(key)
        if stats_from_bn:
            prefix = keys[0].rsplit(".", 1)[0]
            t_key = prefix + ".t"
            with torch.no_grad():
                state[t_key].zero_()
                if stats_weight is not None:
                    model.get_submodule(prefix).rescale_past_weight(stats_weight)
            report.mapped.append(("(step counter reset)", t_key))
            assigned.add(t_key)
    report.missing = [k for k in state if k not in assigned]
    report.log()
    return report
