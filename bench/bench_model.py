"""Throughput of MobileNetV1 (Caffe names, Batch Renormalization) on CPU or CUDA; prints one JSON object.

Measured, in images (or latent rows) per second:

* ``full``: the whole network on 3x128x128 inputs;
* ``upper@conv5_4/dw``: the part above the default latent layer, on 512x8x8 latents;
* ``upper@pool6``: the classifier only, on 1024-d latents.

For each: ``forward`` = eval-mode inference (``torch.inference_mode``), ``train`` = training-mode
forward (batch statistics, r/d, running-statistics update) + cross-entropy backward (no optimiser step),
keeping both activations of each layer for the backward pass as the trainer does by default
(``--recompute``: the ``recompute_bn_relu`` memory switch).
Rates use the median time of ``--iters`` timed iterations after ``--warmup`` untimed ones.

How close to the machine that is: ``train_gflop_s`` counts the multiply-adds of the forward, the
weight gradients and the input gradients (each as many as the layer's forward; 2 FLOP each) per
second, without the input gradient of a part's first layer (its input needs none, as a latent or an
image in training), and ``gemm_gflop_s`` is the rate of the
dense matrix product a 512->512 pointwise convolution at 8x8 amounts to, for the same rows
(``batch_size * 64`` x 512 by 512 x 512), the bulk of the upper part's arithmetic. Their ratio
``train_fraction_of_gemm`` bounds what any implementation of the same arithmetic can gain.

Usage::

    GLIBC_TUNABLES=glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=68719476736 \\
        .venv/bin/python bench/bench_model.py [--batch-size 32] [--threads 2] [--iters 5]

On CPU set ``GLIBC_TUNABLES`` as above *before* Python starts: glibc otherwise returns large freed
blocks to the kernel and re-faults them every minibatch, which costs about half of the CPU time
(``docs/performance.md``, "Allocator setting and a second busy process"). The JSON records whether
it was set. The default run takes well under a minute on a 2-core machine. Do not run it next to
another torch process.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "project_source"))
from latent_replay.models import (  # noqa: E402
    CAFFE_NAMES, MobileNetV1, latent_shape, mac_counts, recompute_bn_relu, split, stop_layer,
)

TUNED = "glibc.malloc.mmap_threshold=4294967296"


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time(fn, iters: int, warmup: int, device) -> float:
    """Median seconds per call (robust to the odd iteration slowed down by another process)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_part(module, shape, batch_size, iters, warmup, device, channels_last, recompute=False, num_classes=50):
    x = torch.randn((batch_size,) + tuple(shape), device=device)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, num_classes, (batch_size,), device=device)

    def forward():
        with torch.inference_mode():
            module(x)

    def train():
        module.zero_grad(set_to_none=True)
        with recompute_bn_relu(recompute):
            out = module(x)
        F.cross_entropy(out, y).backward()

    module.eval()
    t_fwd = _time(forward, iters, warmup, device)
    module.train()
    t_train = _time(train, iters, warmup, device)
    return {"forward_img_s": round(batch_size / t_fwd, 1), "train_img_s": round(batch_size / t_train, 1)}


def gemm_gflop_s(batch_size, iters, warmup, device) -> float:
    """GFLOP/s of ``(batch_size*64 x 512) @ (512 x 512)``: a 512->512 pointwise conv at 8x8 as a GEMM."""
    a = torch.randn(batch_size * 64, 512, device=device)
    b = torch.randn(512, 512, device=device)
    t = _time(lambda: torch.mm(a, b), iters, warmup, device)
    return 2 * a.shape[0] * 512 * 512 / t / 1e9


def part_macs(macs: dict, layer: str | None) -> int:
    """Forward multiply-adds per image of the whole network (None) or of the part above ``layer``."""
    return sum(_part(macs, layer))


def train_macs(macs: dict, layer: str | None) -> int:
    """Multiply-adds per image of a training step of the part: forward + weight gradients + input
    gradients of every layer but the first (whose input requires no gradient)."""
    part = [m for m in _part(macs, layer) if m]
    return 3 * sum(part) - part[0]


def _part(macs: dict, layer: str | None) -> list[int]:
    start = 0 if layer is None else CAFFE_NAMES.index(stop_layer(layer))
    return list(macs.values())[start:]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--iters", type=int, default=10, help="timed iterations per measurement")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    ap.add_argument("--recompute", action="store_true",
                    help="recompute each layer's ReLU output in the backward pass (recompute_bn_relu)")
    ap.add_argument("--input-size", type=int, default=128)
    ap.add_argument("--tf32", action="store_true", help="on CUDA: TF32 and cuDNN's autotuner for the network and "
                    "the GEMM reference alike (default: IEEE float32, as the trainer's cuda_reproducible)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":   # the trainer's numerics, for the network and the GEMM reference alike
        from latent_replay.utils import configure_cuda

        configure_cuda(not args.tf32)
    torch.manual_seed(0)
    model = MobileNetV1().to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.eval()   # BRN running estimates start at S = 0; fill them once so eval mode is well conditioned
    for brn in model.brn_layers().values():
        brn.set_running_stats(torch.zeros(brn.num_features), torch.ones(brn.num_features))

    macs = mac_counts(model, args.input_size)
    results = {}
    parts = [("full", model, (3, args.input_size, args.input_size), None)]
    for layer in ("conv5_4/dw", "pool6"):
        parts.append((f"upper@{layer}", split(model, layer)[1], latent_shape(layer, args.input_size), layer))
    gemm = gemm_gflop_s(args.batch_size, args.iters, args.warmup, device)
    for name, module, shape, layer in parts:
        r = bench_part(module, shape, args.batch_size, args.iters, args.warmup, device, args.channels_last,
                       args.recompute)
        r["gmac_per_image"] = round(part_macs(macs, layer) / 1e9, 5)
        r["train_gflop_s"] = round(r["train_img_s"] * 2 * train_macs(macs, layer) / 1e9, 3)
        r["train_fraction_of_gemm"] = round(r["train_gflop_s"] / gemm, 3)
        results[name] = r
    out = {
        "benchmark": "mobilenet_v1",
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "input_size": args.input_size,
        "channels_last": args.channels_last,
        "recompute_bn_relu": args.recompute,
        "cuda_tf32": args.tf32 if device.type == "cuda" else None,
        "iters": args.iters,
        "glibc_tunables_set": TUNED in os.environ.get("GLIBC_TUNABLES", ""),
        "torch": torch.__version__,
        "gmac_per_image": round(sum(macs.values()) / 1e9, 4),
        "gemm_gflop_s": round(gemm, 3),
        "results": results,
    }
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
