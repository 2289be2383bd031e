"""Network, Batch Renormalization and weight import/export (spec §4, §9.1, §12.1).

* :mod:`.mobilenet_v1` – :class:`MobileNetV1` with Caffe layer names, :func:`split`, latent tables, counts;
* :mod:`.batch_renorm` – :class:`BatchRenorm2d` with Caffe semantics, :class:`BRNConfig` presets;
* :mod:`.recompute` – :func:`recompute_bn_relu`: one saved activation per conv layer instead of two;
* :mod:`.weights` – pytorchcv ``mobilenet_w1`` import, own checkpoints, :func:`load_weights`;
* :mod:`.caffemodel` – a small protobuf reader/writer for ``.caffemodel`` files and their import.
"""
from .batch_renorm import FIRST_BATCH, INCREMENTAL_LATENT, INCREMENTAL_NATIVE, BatchRenorm2d, BRNConfig, Scale
from .mobilenet_v1 import (
    CAFFE_NAMES, CONV_LAYERS, LATENT_LAYERS, PARAM_KINDS, MobileNetV1, attr_name, caffe_blob_count, caffe_layer_of,
    conv_fc_parameter_count, latent_shape, mac_counts, mac_fraction_below, param_names_by_kind, split, stop_layer,
)
from .recompute import recompute_bn_relu
from .weights import ImportReport, import_pytorchcv, load_checkpoint, load_weights, save_checkpoint

__all__ = [
    "FIRST_BATCH", "INCREMENTAL_LATENT", "INCREMENTAL_NATIVE", "BatchRenorm2d", "BRNConfig", "Scale",
    "CAFFE_NAMES", "CONV_LAYERS", "LATENT_LAYERS", "PARAM_KINDS", "MobileNetV1", "attr_name", "caffe_blob_count",
    "caffe_layer_of", "conv_fc_parameter_count", "latent_shape", "mac_counts", "mac_fraction_below",
    "param_names_by_kind", "split", "stop_layer", "recompute_bn_relu",
    "ImportReport", "import_pytorchcv", "load_checkpoint", "load_weights", "save_checkpoint",
]
