"""The embedded default (``make demo``): a real experiment on a synthetic CORe50, on any machine.

1. write a synthetic CORe50 (11 sessions x 20 objects x 16 frames, 64x64) and NICv2 filelists for it;
2. train AR1*-free with latent replay at ``conv5_4/dw`` and naive fine-tuning on its NICv2-391
   stream (one video per batch, 151 batches), run 0;
3. print the accuracy table and write figure 1 and the summary table.

The network starts from random weights (no ImageNet weights here), so the demo's learning rates,
batch-0 epochs and BRN settings are those of :data:`DEMO_TRAINING`, not the paper's (which assume
an ImageNet-pretrained network and would barely move a random one); everything else follows the
paper's protocol. The configs are written next to the results, so every number can be traced.
"""
from __future__ import annotations

import logging
from pathlib import Path

from .config import ConfigError, ExperimentConfig
from .data.core50 import open_root
from .data.filelists import SCENARIOS
from .data.nicv2 import inventory_from_root, load_scenario, write_nicv2
from .data.synthetic import write_synthetic_core50
from .results import CONFIG_FILE, run_dirs, set_aside, set_aside_lines, set_aside_stale

log = logging.getLogger(__name__)

#: The synthetic dataset of the demo.
DEMO_DATASET = dict(sessions=11, categories=10, objects_per_category=2, frames=16, size=64)
#: Training settings for a randomly initialised network (see the module docstring).
DEMO_TRAINING = dict(
    scenario=391, runs=[0], test_list="full", device="auto",
    lr_first_batch=0.02, epochs_first_batch=50, lr=0.005, brn_past_weight=100.0,
    brn_first_batch={"t0": 20, "t_r": 60, "t_d": 60, "r_max": 3.0, "d_max": 5.0, "moving_fraction": 0.9},
)
#: The experiments: AR1*-free + latent replay at conv5_4/dw, and naive for contrast.
DEMO_EXPERIMENTS = (
    dict(method="ar1free", replay="latent", latent_layer="conv5_4/dw", replay_memory=300),
    dict(method="naive", replay="none"),
)


def prepare_data(out: Path, seed: int = 0) -> tuple[Path, Path]:
    """Synthetic CORe50 and its NICv2 filelists (runs 0-4) under ``out``; returns (root, filelists)."""
    root = out / "core50"
    info = write_synthetic_core50(root, seed=seed, **DEMO_DATASET)
    log.info("synthetic CORe50 ready: %d images in %s", info.n_images, root)
    ds = open_root(root)
    lists = out / "batch_filelists"
    write_nicv2(lists, inventory_from_root(ds.images_dir), SCENARIOS, range(5), seed=seed, overwrite=True)
    return root, lists


def demo_configs(out: Path, root: Path, lists: Path) -> list[ExperimentConfig]:
    return [ExperimentConfig(dataset_root=str(root), filelists=str(lists), cache_dir=str(out / "cache"),
                             out=str(out / "results"), **DEMO_TRAINING, **exp) for exp in DEMO_EXPERIMENTS]


def set_aside_former_results(cfg: ExperimentConfig, echo=print) -> list[Path]:
    """The demo owns its folder: runs an earlier demo trained otherwise (a later version of the suite
    changed its settings or a default) are set aside as ``run<R>.former``, saying so, instead of being
    refused by the trainer; returns the new folders."""
    exp_dir = Path(cfg.out) / cfg.experiment_name
    moved = set_aside_stale(exp_dir, cfg)
    try:
        saved = ExperimentConfig.load(exp_dir / CONFIG_FILE)
    except ConfigError:
        saved = None
    changed = cfg.trained_otherwise(saved.to_dict()) if saved is not None else []
    if changed:   # unfinished runs of the former settings too: their checkpoints would be refused
        moved += [(d, set_aside(d), changed) for _, d in run_dirs(exp_dir)]
    for line in set_aside_lines(moved):
        echo(line)
    return [target for _, target, _ in moved]


def _classes(labels, width: int) -> str:
    """Comma-separated labels, cut with '...(N)' when longer than ``width``."""
    text = ",".join(map(str, labels))
    if len(text) <= width:
        return text
    tail = f"...({len(labels)})"
    return text[: width - len(tail)].rsplit(",", 1)[0] + tail


def format_summary(sc, max_rows: int = 12) -> str:
    """A short text table of a scenario: frames and classes per batch (the demo's first output, and
    ``latent-replay filelists summary``)."""
    rows = sc.summary()
    lines = [f"{sc.name} run {sc.run}: {len(rows)} batches, {sc.train_frames} train frames, "
             f"{len(sc.test)} test frames, {len(set().union(*(r.classes for r in rows)))} classes",
             "  batch  frames  classes            new classes"]
    shown = rows if len(rows) <= max_rows else rows[: max_rows - 2] + rows[-2:]
    for i, r in enumerate(shown):
        if len(rows) > max_rows and i == max_rows - 2:
            lines.append(f"  ... {len(rows) - max_rows} more batches ...")
        lines.append(f"  {r.index:5d}  {r.frames:6d}  {_classes(r.classes, 17):17s}  {_classes(r.new_classes, 40) or '-'}")
    last_new = max((r.index for r in rows if r.new_classes), default=0)
    lines.append(f"  last batch introducing a new class: {last_new}")
    return "\n".join(lines)


def run_demo(out: Path, seed: int = 0, echo=print) -> dict:
    """Everything ``make demo`` does; returns {experiment name: summary of run 0}."""
    from .figures import make_figures
    from .train import StaleCheckpoint, Trainer

    root, lists = prepare_data(out, seed)
    echo(format_summary(load_scenario(lists, 391, 0, reduced_test=False, images_dir=root / "core50_128x128")))
    results = {}
    for cfg in demo_configs(out, root, lists):
        echo(f"training {cfg.experiment_name} ...")
        set_aside_former_results(cfg, echo)
        trainer = Trainer(cfg)
        try:
            trainer.run_all()
        except StaleCheckpoint as exc:   # an older demo's unfinished run under a default changed since
            echo(set_aside_lines([(exc.path.parent, set_aside(exc.path.parent), exc.changed)])[0])
            trainer.run_all()
        summary_file = trainer.experiment_dir / "run0" / "summary.json"
        import json

        results[cfg.experiment_name] = json.loads(summary_file.read_text())
    echo("")
    echo(f"{'experiment':45s} {'final acc':>9s} {'avg acc':>8s} {'train s':>8s} {'memory':>10s}")
    for name, s in results.items():
        echo(f"{name:45s} {100 * s['final_accuracy']:8.1f}% {100 * s['average_accuracy']:7.1f}% "
             f"{s['train_seconds']:8.1f} {s['memory_bytes'] / 1e6:8.1f}MB")
    written = make_figures([out / "results"], out / "figures", formats=("png",))
    for name, files in written.items():
        for f in files:
            echo(f"wrote {f}")
    return results
