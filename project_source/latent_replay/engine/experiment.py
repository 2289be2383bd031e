"""One experiment: its runs, the config it records, and the refusals of results trained otherwise."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

from ..config import ConfigError, ExperimentConfig, without
from ..data.core50 import DatasetError, load_frames, open_root
from ..data.filelists import default_filelists_root
from ..data.nicv2 import load_scenario
from ..models import MobileNetV1
from ..models.weights import load_weights
from ..results import CONFIG_FILE, aggregate_runs, read_summary, run_dir, run_dirs, stale_runs
from ..streams.core50 import NICv2Stream
from .checkpoints import CHECKPOINT
from .run import RunTrainer, batches_to_train, resolve_device, resolve_preprocessing

log = logging.getLogger("latent_replay.train")


def _summary_batches(run_folder: Path) -> int:
    """Batches a finished run's summary.json says it trained (0 when unreadable: train it again)."""
    batches = (read_summary(run_folder) or {}).get("batches")
    return batches if isinstance(batches, int) and not isinstance(batches, bool) else 0


#: What ``latent-replay train`` can override on its command line (for that call only).
CLI_OVERRIDES = ("execution.runs", "execution.device", "paths.out")
#: What may change between an interrupted run and its resumption, besides the command line's overrides:
#: how it executes (the whole ``execution`` section) and where the frame cache is.
RESUMABLE = ("execution", "paths.out", "paths.cache_dir")


# ------------------------------------------------------------------------------------- experiment
class Trainer:
    """Runs the requested runs of one experiment config; validates all inputs before training."""

    def __init__(self, cfg: ExperimentConfig, *, progress: bool = True):
        self.cfg = cfg
        self.progress = progress
        self.device = resolve_device(cfg.device)
        try:
            self.root = open_root(cfg.dataset_root)
        except DatasetError as exc:   # name the config key: the default (/datasets) may not be what was meant
            raise DatasetError(f"dataset_root: {exc}") from None
        if cfg.weights is not None and not Path(cfg.weights).is_file():
            raise ConfigError(f"weights: {cfg.weights}: no such file")
        filelists = cfg.filelists if cfg.filelists is not None else default_filelists_root(cfg.dataset_root)
        self.scenarios = {r: load_scenario(filelists, cfg.scenario, r, reduced_test=cfg.test_list == "reduced",
                                           images_dir=self.root.images_dir) for r in cfg.runs}
        self._check_weights()
        paths = {p for sc in self.scenarios.values() for fl in (*sc.batches, sc.test) for p in fl.paths}
        self.frames = load_frames(self.root.images_dir, paths, cache_dir=cfg.cache_dir, progress=progress)
        self.experiment_dir = Path(cfg.out) / cfg.experiment_name

    def stream(self, run: int) -> NICv2Stream:
        """Run ``run``'s stream: its scenario over the experiment's frame store."""
        return NICv2Stream(self.scenarios[run], self.frames)

    def _check_weights(self) -> None:
        """Check the weights file and resolve the preprocessing the runs will use (``self.preprocessing``)."""
        self.preprocessing = resolve_preprocessing(self.cfg.preprocessing, {})
        if self.cfg.weights is None:
            return
        probe = MobileNetV1(fc_bias=self.cfg.fidelity.classifier_bias)
        info = load_weights(probe, self.cfg.weights)
        self.preprocessing = resolve_preprocessing(self.cfg.preprocessing, info)
        if self.cfg.preprocessing == "auto":
            log.info("preprocessing: %s, as the weights %s expect", self.preprocessing, self.cfg.weights)
        elif info["preprocessing"] and info["preprocessing"] != self.cfg.preprocessing:
            log.warning("weights %s expect %s preprocessing but the config uses %s (spec B15)",
                        self.cfg.weights, info["preprocessing"], self.cfg.preprocessing)

    def _record_config(self, force: bool = False) -> None:
        """Write the experiment's config, keeping what the command line only overrode for this call.

        Where the folder already holds the same experiment's config (e.g. the one ``prepare`` wrote,
        which ``run_experiment.sh`` points at), ``--runs``, ``--device`` and ``--out`` must not narrow
        or change it for later calls: it is kept, with any new runs appended to its ``runs``. Where
        it differs in an execution key too (changed in the config file), this config is written, with
        the saved runs kept and the new ones appended. Nothing is written when a refusal (other
        results, stale runs) stops the call."""
        path = self.experiment_dir / CONFIG_FILE
        cfg, saved = self.cfg, None
        if path.is_file():
            try:
                saved = ExperimentConfig.load(path)
            except ConfigError:
                saved = None
        old, new = (saved.to_dict() if saved is not None else None), cfg.to_dict()
        same = saved is not None and without(old, RESUMABLE) == without(new, RESUMABLE)
        if saved is not None and not same:
            self._refuse_other_results(path, old, force)
        if not force:
            self._refuse_stale_runs()
        if same:
            runs = list(saved.runs) + [r for r in cfg.runs if r not in saved.runs]
            if without(old, CLI_OVERRIDES) == without(new, CLI_OVERRIDES):
                if runs != list(saved.runs):
                    saved.replace(runs=runs).save(path)
                return
            cfg = cfg.replace(runs=runs)      # execution keys changed: record them, keep the runs
        cfg.save(path)

    def _refuse_other_results(self, path: Path, saved: dict, force: bool) -> None:
        """The folder's config (``saved``, its dict) may train otherwise than this one: its results must not
        end up labelled with this config. Refused while a run folder holds results, unless ``force`` (which
        trains this call's runs again; other runs' results are then left, with a warning)."""
        changed = self.cfg.trained_otherwise(saved)
        if not changed:   # the same training, written differently (another path spelling, name, auto)
            return
        with_results = [d.name for _, d in run_dirs(self.experiment_dir)
                        if any((d / f).exists() for f in (CHECKPOINT, "metrics.csv", "summary.json"))]
        if not with_results:
            return
        if not force:
            raise ConfigError(f"{path}: the experiment's results ({', '.join(with_results)}) were trained with "
                              f"another configuration (changed: {', '.join(changed)}); give this one another "
                              "name or out, or use --force to train it again")
        others = [n for n in with_results if n not in {f"run{r}" for r in self.cfg.runs}]
        if others:
            log.warning("%s: %s keep results of the former configuration (changed: %s); summary.csv and "
                        "figures leave them out", self.experiment_dir, ", ".join(others), ", ".join(changed))

    def _refuse_stale_runs(self) -> None:
        """A run to train that finished with another configuration than this one (the experiment's config
        file edited since, or a default changed by a later version of the suite) is not done: refused,
        naming it, so its results neither get this configuration's label nor count as finished."""
        stale = stale_runs(self.experiment_dir, self.cfg, self.cfg.runs, self.preprocessing)
        if not stale:
            return
        d, changed = stale[0]
        more = f" (and {', '.join(x.name for x, _ in stale[1:])})" if len(stale) > 1 else ""
        if changed == ["model.preprocessing"]:   # 'auto' now resolves otherwise: only the weights tell, so say it here
            used = (read_summary(d) or {}).get("preprocessing")
            raise ConfigError(f"{d}{more}: finished with {used} preprocessing, but this configuration's "
                              f"({self.cfg.preprocessing}, weights {self.cfg.weights}) is {self.preprocessing}; "
                              f"set preprocessing to {used} to keep it, or use --force to train it again")
        raise ConfigError(f"{d}{more}: finished with another configuration than this one (changed: "
                          f"{', '.join(changed)}); use --force to train it again, or prepare the experiment "
                          "again with --force, which sets such runs aside")

    def run_all(self, *, force: bool = False, stop_after: int | None = None) -> list[dict]:
        self.experiment_dir.mkdir(parents=True, exist_ok=True)
        self._record_config(force)
        if force:   # the runs it lists are trained again: an interrupted call must not leave it behind
            (self.experiment_dir / "summary.csv").unlink(missing_ok=True)
        summaries = []
        for r in self.cfg.runs:
            d = run_dir(self.cfg.out, self.cfg.experiment_name, r)
            if force and d.exists():
                shutil.rmtree(d)
            if (d / "summary.json").is_file():
                done, wanted = _summary_batches(d), batches_to_train(self.cfg, self.stream(r))
                if done >= wanted:
                    log.info("run %d already finished in %s (use --force to train it again)", r, d)
                    continue
                # it stopped at an earlier max_batches: go on from its checkpoint (unfinished until then)
                log.info("run %d stopped after %d batch(es); continuing to %d", r, done, wanted)
                (d / "summary.json").unlink()
            d.mkdir(parents=True, exist_ok=True)
            rt = RunTrainer(self.cfg, r, self.stream(r), self.device, d, self.progress, stop_after)
            summary = rt.train()
            del rt   # the next run's trainer must not meet this one's model, memory and test frames on the device
            summaries.append(summary)
            log.info("run %d finished: final accuracy %.4f, average %.4f, %.1fs training", r,
                     summary["final_accuracy"], summary["average_accuracy"], summary["train_seconds"])
        aggregate_runs(self.experiment_dir)
        return summaries
