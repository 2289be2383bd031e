"""``latent-replay weights …``: convert ImageNet weights into our checkpoints and inspect weight files.

Register with ``main.add_command(weights)`` in ``cli.py``.

* ``weights convert SRC --format pytorchcv|caffe --out FILE`` – import pytorchcv ``mobilenet_w1``
  weights (``mobilenet_w1-0895-7e1d739f.pth``) or a Caffe ``.caffemodel`` into a :class:`MobileNetV1`
  and save it as our checkpoint, recording the source and the preprocessing it implies
  (pytorchcv -> ``imagenet``, Caffe -> ``caffe``);
* ``weights info FILE`` – metadata and parameter count of our checkpoint, or the layers and blob
  shapes of a ``.caffemodel``.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import click

from .mobilenet_v1 import MobileNetV1, caffe_blob_count, conv_fc_parameter_count


def _sha1(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@click.group()
def weights():
    """Convert and inspect MobileNetV1 weight files."""


@weights.command()
@click.argument("src", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["pytorchcv", "caffe"]), required=True,
              help="pytorchcv mobilenet_w1 state dict, or a Caffe .caffemodel")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="checkpoint to write")
@click.option("--num-classes", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--stats-weight", type=click.FloatRange(min=0, min_open=True, max=1e30), default=100.0,
              show_default=True,
              help="BRN normaliser S given to the ImageNet statistics (pytorchcv, and the <name>/bn layers of a "
                   ".caffemodel)")
@click.option("--no-bn-stats", is_flag=True, help="caffe: do not load <name>/bn statistics into BRN (Caffe B14)")
@click.option("--force", is_flag=True, help="Replace an existing --out file.")
@click.option("--allow-missing", is_flag=True,
              help="Write the checkpoint even when the source lacks tensors of the network below the classifier.")
def convert(src: Path, fmt: str, out: Path, num_classes: int, stats_weight: float, no_bn_stats: bool, force: bool,
            allow_missing: bool):
    """Import SRC into MobileNetV1 and save it as a checkpoint."""
    from .weights import import_pytorchcv, save_checkpoint

    if stats_weight != stats_weight:   # NaN passes click's range check
        raise click.BadParameter("nan is not a number > 0", param_hint="'--stats-weight'")
    if out.exists() and out.resolve() == src.resolve():
        raise click.BadParameter(f"{out} is the source file itself", param_hint="'--out'")
    if out.exists() and not force:
        raise click.BadParameter(f"{out} already exists (use --force to replace it)", param_hint="'--out'")

    model = MobileNetV1(num_classes=num_classes)
    try:
        if fmt == "pytorchcv":
            report = import_pytorchcv(model, src, stats_weight=stats_weight)
            preprocessing = "imagenet"
        else:
            from .caffemodel import import_caffemodel

            report = import_caffemodel(model, src, bn_stats=not no_bn_stats, stats_weight=stats_weight)
            preprocessing = "caffe"
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    backbone_missing = [k for k in report.missing if not k.startswith("mid_fc7.")]
    if backbone_missing and not allow_missing:
        raise click.ClickException(f"{src}: {len(backbone_missing)} tensors of the network are not in it (first: "
                                   f"{backbone_missing[0]}); is it a MobileNetV1? --allow-missing writes it anyway")
    bad = [k for k, v in model.state_dict().items() if v.is_floating_point() and not bool(v.isfinite().all())]
    if bad:
        raise click.ClickException(f"{src}: {len(bad)} tensors hold NaN or infinite values (first: {bad[0]})")
    save_checkpoint(out, model, source=f"{fmt}:{src.name}", preprocessing=preprocessing,
                    extra={"source_sha1": _sha1(src), "import": report.to_dict()})
    # the import report itself is logged (a warning when something was skipped or is missing)
    click.echo(f"wrote {out}: {len(report.mapped)} tensors mapped, {len(report.missing)} left as initialised "
               f"({', '.join(report.missing) or 'none'}); preprocessing {preprocessing}")


@weights.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def info(file: Path):
    """Describe a checkpoint of ours or a .caffemodel."""
    if not file.is_file():
        raise click.ClickException(f"{file}: no such file")
    try:
        if file.suffix == ".caffemodel":
            from .caffemodel import read_caffemodel

            layers = read_caffemodel(file)
            click.echo(f"{file}: {len(layers)} layers, sha1 {_sha1(file)}")
            for ly in layers:
                shapes = ", ".join("x".join(map(str, b.shape)) for b in ly.blobs)
                click.echo(f"  {ly.name:<20} {ly.type:<14} {shapes}")
            return
        from .weights import load_checkpoint

        model, meta = load_checkpoint(file)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"{file}: MobileNetV1 checkpoint, sha1 {_sha1(file)}")
    for key in ("source", "preprocessing", "num_classes", "created", "torch", "latent_replay"):
        click.echo(f"  {key}: {meta.get(key)}")
    click.echo(f"  brn_config: {meta.get('brn_config')}")
    click.echo(f"  conv+fc parameters: {conv_fc_parameter_count(model):,}; "
               f"all Caffe blobs: {caffe_blob_count(model):,}")
    extra = {k: v for k, v in meta.get("extra", {}).items() if k != "import"}
    if extra:
        click.echo(f"  extra: {extra}")
