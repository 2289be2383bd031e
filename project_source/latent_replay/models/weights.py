"""ImageNet weight import (pytorchcv ``mobilenet_w1``), our own checkpoints, and one entry point.

pytorchcv ``mobilenet_w1`` -> :class:`MobileNetV1` (:func:`pytorchcv_key_map`)
-------------------------------------------------------------------------------
pytorchcv (the source of the official PyTorch port and of Avalanche) names the 13 separable blocks by
stage/unit; spec §9.1 numbers the same blocks 1..13 in Caffe order. Mapping, in forward order::

    features.init_block              -> conv1
    features.stage1.unit1            -> conv2_1
    features.stage2.unit1 / unit2    -> conv2_2 / conv3_1
    features.stage3.unit1 / unit2    -> conv3_2 / conv4_1
    features.stage4.unit1            -> conv4_2
    features.stage4.unit2 … unit6    -> conv5_1 … conv5_5
    features.stage5.unit1 / unit2    -> conv5_6 / conv6

and inside each unit ``dw_conv`` -> ``<block>/dw``, ``pw_conv`` -> ``<block>/sep``. Per conv block:
``conv.weight`` -> ``.conv.weight``; ``bn.weight``/``bn.bias`` -> ``.scale.weight``/``.scale.bias``
(gamma/beta, Caffe's Scale layer); ``bn.running_mean``/``bn.running_var`` -> BRN ``A_mu``/``A_var``
multiplied by the normaliser ``S = stats_weight`` (so ``A/S`` are exactly the ImageNet statistics), the
step counter ``t`` is reset to 0. ``bn.num_batches_tracked`` (no Caffe counterpart) and the 1000-class
``output`` layer are reported as skipped (our ``mid_fc7`` has ``num_classes`` outputs; with
``map_head=True`` and a 1000-class model it is mapped too).

Default ``stats_weight = 100 = 1/(1 - 0.99)``: with the batch-0 moving fraction 0.99 the normaliser
then stays at 100, so every training forward moves the estimates 1 % toward the batch statistics —
the update rate 0.01 of the PyTorch port, which also starts from the ImageNet statistics (spec §9.2,
B14). ``stats_weight=1`` would instead let the first minibatch weigh as much as all of ImageNet.

pytorchcv's weights expect ImageNet preprocessing (RGB, /255, mean/std; spec B15); the Caffe model
expects BGR minus the means 104/117/123 (see ``models/README.md``).

Checkpoints
-----------
:func:`save_checkpoint` writes ``{"format", "version", "state_dict", "metadata"}`` with ``torch.save``
atomically (temporary file + ``os.replace``); the metadata records the weight source, the
preprocessing mode, the classifier size and the BRN settings of every layer. :func:`load_checkpoint`
reads it back (``weights_only``) into a given or a new model.

:func:`load_weights` picks the right importer from a file (our checkpoint, a pytorchcv state dict, a
``.caffemodel``) and logs a warning when no file is given: training then starts from random
initialisation.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from .batch_renorm import BRNConfig
from .caffemodel import ImportReport, _assign, import_caffemodel
from .mobilenet_v1 import SEPARABLE_BLOCKS, MobileNetV1, attr_name

log = logging.getLogger(__name__)

__all__ = [
    "PREPROCESSING_MODES", "CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "ImportReport", "pytorchcv_key_map",
    "import_pytorchcv", "save_checkpoint", "load_checkpoint", "read_checkpoint", "load_weights",
    "PYTORCHCV_FILE", "PYTORCHCV_SHA1",
]

#: Preprocessing modes (same strings as ``latent_replay.data.core50``): Caffe BGR means / ImageNet mean-std.
PREPROCESSING_MODES = ("caffe", "imagenet")
CHECKPOINT_FORMAT = "latent_replay.mobilenet_v1"
CHECKPOINT_VERSION = 1
#: pytorchcv 0.0.74 model store entry for ``mobilenet_w1`` (release v0.0.155 of osmr/imgclsmob).
PYTORCHCV_FILE = "mobilenet_w1-0895-7e1d739f.pth"
PYTORCHCV_SHA1 = "7e1d739f0fd4b95c16eef077c5dc0a5bb1da8ad5"

# pytorchcv units in forward order; zipped with SEPARABLE_BLOCKS (Caffe order).
_PYTORCHCV_UNITS = ((1, 1), (2, 1), (2, 2), (3, 1), (3, 2), (4, 1), (4, 2), (4, 3), (4, 4), (4, 5), (4, 6),
                    (5, 1), (5, 2))
_PCV_SKIP = {"num_batches_tracked": "PyTorch BatchNorm batch counter (no Caffe counterpart)"}


def _reason(e: BaseException) -> str:
    """A one-line, escape-free summary of a loading error."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", ln).strip() for ln in str(e).splitlines()]
    lines = [ln for ln in lines if ln]
    pick = next((ln for ln in lines if ln.startswith("WeightsUnpickler error:")), lines[0] if lines else "")
    return f"{type(e).__name__}: {pick}"[:240]


# ------------------------------------------------------------------------------------------------
# pytorchcv
# ------------------------------------------------------------------------------------------------
def _pcv_conv_blocks() -> list[tuple[str, str]]:
    """(pytorchcv conv-block prefix, Caffe conv name) for the 27 conv blocks in forward order."""
    out = [("features.init_block", "conv1")]
    for (stage, unit), (prefix, *_) in zip(_PYTORCHCV_UNITS, SEPARABLE_BLOCKS):
        out.append((f"features.stage{stage}.unit{unit}.dw_conv", f"{prefix}/dw"))
        out.append((f"features.stage{stage}.unit{unit}.pw_conv", f"{prefix}/sep"))
    return out


def pytorchcv_key_map() -> dict[str, str]:
    """pytorchcv ``mobilenet_w1`` state-dict key -> our key (BN statistics go to ``A_mu``/``A_var``)."""
    m = {}
    for src, caffe in _pcv_conv_blocks():
        dst = attr_name(caffe)
        m[f"{src}.conv.weight"] = f"{dst}.conv.weight"
        m[f"{src}.bn.weight"] = f"{dst}.scale.weight"
        m[f"{src}.bn.bias"] = f"{dst}.scale.bias"
        m[f"{src}.bn.running_mean"] = f"{dst}.brn.A_mu"
        m[f"{src}.bn.running_var"] = f"{dst}.brn.A_var"
    return m


def _as_state_dict(source) -> tuple[dict, str]:
    if isinstance(source, nn.Module):
        return dict(source.state_dict()), type(source).__name__
    if isinstance(source, Mapping):
        sd, name = source, "<state dict>"
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such weight file")
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unpickling failure means "not a state dict"
            raise ValueError(f"{path}: not a PyTorch state-dict file ({_reason(e)})") from e
        name = str(path)
    for wrapper in ("state_dict", "model", "net"):
        if isinstance(sd, Mapping) and wrapper in sd and isinstance(sd[wrapper], Mapping):
            sd = sd[wrapper]
    if not isinstance(sd, Mapping):
        raise ValueError(f"{name}: expected a state dict, found {type(sd).__name__}")
    return {(k[7:] if k.startswith("module.") else k): v for k, v in sd.items()}, name


def import_pytorchcv(model: MobileNetV1, source, *, stats_weight: float = 100.0,
                     map_head: bool = False) -> ImportReport:
    """Load pytorchcv ``mobilenet_w1`` weights (file path, state dict or the pytorchcv model itself).

    See the module docstring for the mapping; raises ValueError when nothing maps (not a
    ``mobilenet_w1`` checkpoint) or when a shape differs (naming the key).
    """
    if stats_weight <= 0:
        raise ValueError(f"stats_weight must be > 0, got {stats_weight}")
    sd, name = _as_state_dict(source)
    keymap = pytorchcv_key_map()
    state = model.state_dict(keep_vars=True)
    report = ImportReport(source=name, format="pytorchcv")
    assigned: set[str] = set()
    stats_layers: set[str] = set()
    for key, value in sd.items():
        if key in keymap:
            dst = keymap[key]
            if dst.endswith((".A_mu", ".A_var")):
                value = torch.as_tensor(value).to(torch.float32) * stats_weight
                stats_layers.add(dst.rsplit(".", 1)[0])
            _assign(state, dst, value, f"{name}: {key}")
            report.mapped.append((key, dst))
            assigned.add(dst)
        elif key.endswith(".num_batches_tracked"):
            report.skipped.append((key, _PCV_SKIP["num_batches_tracked"]))
        elif key in ("output.weight", "output.bias"):
            dst = "mid_fc7." + key.split(".")[1]
            if map_head and dst in state and tuple(state[dst].shape) == tuple(torch.as_tensor(value).shape):
                _assign(state, dst, value, f"{name}: {key}")
                report.mapped.append((key, dst))
                assigned.add(dst)
            else:
                report.skipped.append((key, f"ImageNet classifier {tuple(torch.as_tensor(value).shape)}; "
                                            f"mid_fc7 has {model.num_classes} outputs"))
        else:
            report.skipped.append((key, "not a mobilenet_w1 key"))
    if not report.mapped:
        raise ValueError(f"{name}: no pytorchcv mobilenet_w1 key found (e.g. features.init_block.conv.weight)")
    with torch.no_grad():
        for prefix in stats_layers:   # e.g. "conv1.brn"
            state[f"{prefix}.S"].fill_(stats_weight)
            state[f"{prefix}.t"].zero_()
            report.mapped.append(("(normaliser)", f"{prefix}.S"))
            report.mapped.append(("(step counter reset)", f"{prefix}.t"))
            assigned.update({f"{prefix}.S", f"{prefix}.t"})
    report.missing = [k for k in state if k not in assigned]
    report.log()
    return report


# ------------------------------------------------------------------------------------------------
# our checkpoints
# ------------------------------------------------------------------------------------------------
def _check_preprocessing(preprocessing: str) -> None:
    if preprocessing not in PREPROCESSING_MODES:
        raise ValueError(f"preprocessing must be one of {', '.join(PREPROCESSING_MODES)}, got {preprocessing!r}")


def save_checkpoint(path, model: MobileNetV1, *, source: str, preprocessing: str, extra: dict | None = None) -> Path:
    """Write the model's state dict and metadata atomically to ``path``; returns the path.

    ``source``: where the weights come from (e.g. ``pytorchcv:mobilenet_w1``, a file, ``batch 0 of …``);
    ``preprocessing``: ``caffe`` or ``imagenet``; ``extra``: JSON-serialisable additions.
    """
    _check_preprocessing(preprocessing)
    extra = dict(extra or {})
    try:
        json.dumps(extra)
    except TypeError as e:
        raise TypeError(f"save_checkpoint: extra metadata must be JSON-serialisable ({e})") from None
    from .. import __version__

    brns = model.brn_layers()
    metadata = {
        "source": str(source),
        "preprocessing": preprocessing,
        "num_classes": model.num_classes,
        "fc_bias": model.mid_fc7.bias is not None,
        "brn_config": model.brn_config.to_dict(),
        "brn_configs": {name: brn.config.to_dict() for name, brn in brns.items()},
        "step_on": next(iter(brns.values())).step_on,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "torch": str(torch.__version__),
        "latent_replay": __version__,
        "extra": extra,
    }
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
               "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
               "metadata": metadata}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    log.info("saved checkpoint %s (source %s, preprocessing %s)", path, source, preprocessing)
    return path


def read_checkpoint(path) -> dict:
    """Load and validate a checkpoint payload (``format``/``version``/``state_dict``/``metadata``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - report any unreadable file the same way
        raise ValueError(f"{path}: not a latent-replay MobileNetV1 checkpoint ({_reason(e)})") from e
    if not isinstance(payload, Mapping) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a latent-replay MobileNetV1 checkpoint (no format {CHECKPOINT_FORMAT!r})")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path}: checkpoint version {payload.get('version')} is not supported "
                         f"(expected {CHECKPOINT_VERSION})")
    return payload


def load_checkpoint(path, model: MobileNetV1 | None = None) -> tuple[MobileNetV1, dict]:
    """Load a checkpoint of :func:`save_checkpoint` into ``model`` (or a new model built from the
    metadata); the saved BRN settings are restored too. Returns ``(model, metadata)``."""
    payload = read_checkpoint(path)
    meta = payload["metadata"]
    if model is None:
        model = MobileNetV1(num_classes=meta["num_classes"], brn_config=BRNConfig.from_dict(meta["brn_config"]),
                            step_on=meta.get("step_on", "backward"), fc_bias=meta.get("fc_bias", True))
    state = dict(payload["state_dict"])
    # the classifier bias exists only under fidelity.classifier_bias (B8), and CWR* resets it at every
    # batch anyway: a checkpoint with or without one fits either model (a missing bias keeps its init)
    bias_key = "mid_fc7.bias"
    if model.mid_fc7.bias is None and bias_key in state:
        del state[bias_key]
        log.info("%s: its classifier bias is not used (the model has none, fidelity.classifier_bias off)", path)
    elif model.mid_fc7.bias is not None and bias_key not in state:
        state[bias_key] = model.mid_fc7.bias.detach().clone()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        detail = " ".join(str(e).split())
        raise ValueError(f"{path}: checkpoint does not fit this model ({detail[:300]})") from None
    model.brn_config = BRNConfig.from_dict(meta["brn_config"])
    for name, brn in model.brn_layers().items():
        cfg = meta.get("brn_configs", {}).get(name)
        brn.set_config(BRNConfig.from_dict(cfg) if cfg else model.brn_config)
    log.info("loaded checkpoint %s (source %s, preprocessing %s)", path, meta["source"], meta["preprocessing"])
    return model, meta


# ------------------------------------------------------------------------------------------------
# one entry point
# ------------------------------------------------------------------------------------------------
def load_weights(model: MobileNetV1, path=None, *, stats_weight: float = 100.0) -> dict:
    """Initialise ``model`` from ``path`` (our checkpoint, pytorchcv state dict or ``.caffemodel``).

    Returns ``{"source", "preprocessing", "report"}`` (``report`` is an :class:`ImportReport` for
    imports, None for our checkpoints). With ``path=None`` nothing is loaded, a warning says that
    the network starts from random initialisation, and ``source`` is ``"random"``.
    """
    if path is None:
        log.warning("no pretrained weights given: MobileNetV1 starts from random initialisation")
        return {"source": "random", "preprocessing": None, "report": None}
    path = Path(path)
    if path.suffix == ".caffemodel":
        report = import_caffemodel(model, path, stats_weight=stats_weight)
        return {"source": str(path), "preprocessing": "caffe", "report": report}
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weight file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"{path}: neither a checkpoint nor a state dict nor a .caffemodel ({_reason(e)})") from e
    if isinstance(obj, Mapping) and obj.get("format") == CHECKPOINT_FORMAT:
        _, meta = load_checkpoint(path, model)
        return {"source": meta["source"], "preprocessing": meta["preprocessing"], "report": None}
    report = import_pytorchcv(model, path, stats_weight=stats_weight)
    return {"source": str(path), "preprocessing": "imagenet", "report": report}

