"""``latent-replay download``: get CORe50, the official NICv2 filelists and the ImageNet weights.

Register with ``main.add_command(download)`` in ``cli.py``. The logic is in :mod:`.download`; the
user guide is ``docs/data.md``.
"""
from __future__ import annotations

import re
from pathlib import Path

import click

from .download import ITEMS, DownloadError, download as run_download, verify as run_verify


def _hex(length: int):
    def check(ctx, param, value):
        if value is not None and not re.fullmatch(f"[0-9a-fA-F]{{{length}}}", value):
            raise click.BadParameter(f"{value!r} is not {length} hexadecimal digits")
        return None if value is None else value.lower()
    return check


@click.command("download")
@click.argument("item", required=False, type=click.Choice(list(ITEMS)))
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=Path("data"), show_default=True,
              help="Download root: gets core50_labels.txt, core50_128x128/, batch_filelists/, weights/, downloads/.")
@click.option("--url", "urls", multiple=True, metavar="URL",
              help="Try this URL instead of the built-in list (repeatable: tried in order); single items only.")
@click.option("--md5", default=None, metavar="HEX", callback=_hex(32),
              help="Expected md5 instead of the built-in one (with --url).")
@click.option("--sha1", default=None, metavar="HEX", callback=_hex(40),
              help="Expected sha1 instead of the built-in one (for weights: of the .pth inside the zip).")
@click.option("--verify", "verify_only", is_flag=True,
              help="Download nothing: check what is present under --root (ITEM defaults to all); exit 1 if bad.")
@click.option("--force", is_flag=True, help="Download and replace results that are already present.")
@click.option("--keep-archives", is_flag=True, help="Keep the zip files in ROOT/downloads after unpacking.")
@click.option("--retries", type=click.IntRange(min=1), default=3, show_default=True,
              help="Attempts per URL; each resumes the partial file.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=30.0, show_default=True,
              help="Socket timeout in seconds.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def download(item, root, urls, md5, sha1, verify_only, force, keep_archives, retries, timeout, no_progress):
    """Download ITEM (core50, filelists, weights, caffe or all) into --root, or check it with --verify.

    Every file is verified against its checksum before it is unpacked or converted; downloads resume
    after an interruption; a second call with everything present does nothing. See docs/data.md.
    """
    if md5 and sha1:
        raise click.UsageError("give --md5 or --sha1, not both")
    try:
        if verify_only:
            _verify(item or "all", root)
            return
        if item is None:
            raise click.UsageError(f"say what to download: {', '.join(ITEMS)} (or --verify to check)")
        outcomes = run_download(item, root, urls=urls, md5=md5, sha1=sha1, force=force, keep_archives=keep_archives,
                                retries=retries, timeout=timeout, progress=not no_progress)
    except (DownloadError, ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    for o in outcomes:
        click.echo(f"{o.status:<10} {o.name:<10} {o.message}")
    if all(o.status in ("present", "skipped") for o in outcomes):
        click.echo(f"everything for {item!r} is already present under {root}: nothing to do "
                   f"(`latent-replay download --verify --root {root}` checks it)")
    elif item in ("core50", "all"):
        click.echo(f"dataset root: {root}; filelists: {root / 'batch_filelists'}; "
                   f"weights: {root / 'weights' / 'mobilenet_v1_imagenet_pytorchcv.pt'}")


def _verify(item: str, root: Path) -> None:
    checks = run_verify(root, item)
    for c in checks:
        click.echo(f"{c.status:<8} {c.name:<10} {c.detail}")
    failed = [c for c in checks if c.status in ("bad", "missing")]
    if failed:
        raise click.ClickException(f"verify: {len(failed)} problem{'s' if len(failed) > 1 else ''} under {root} "
                                   f"({', '.join(sorted({c.name for c in failed}))}); "
                                   f"`latent-replay download {item} --root {root}` fetches what is missing")
    click.echo(f"all checks passed under {root}")
