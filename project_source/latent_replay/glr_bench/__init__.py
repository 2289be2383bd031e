"""The GLR benchmark (``latent-replay glr-bench``, glr-spec §5-7, §11, §14): permuted and rotated digit
streams with naive fine-tuning, native replay, latent replay and generative latent replay.

Protocol (see ``docs/glr.md`` for the decisions and the measured tables)
    * Data and streams: :mod:`latent_replay.data.digits` (bundled 8x8 digits by default, MNIST from
      its four IDX files on request); 5 domain-incremental experiences, all 10 classes in each.
    * Network: an MLP ``D -> 256 -> 128 -> 10`` (ReLU), split after ``split`` hidden layers
      (:class:`SplitMLP`); the lower part is trained on experience 0 only and frozen afterwards by
      the latent methods, as the reference's latent replay. Every method of a seed starts from the same
      initial weights and sees the same order, so all of them share the model after experience 0.
    * Training: a fresh SGD (momentum 0.9, weight decay 5e-4, as the reference) per experience, a fixed
      number of epochs (no early stopping), one mean cross-entropy over the concatenation of current
      and replayed rows (the reference's loss). With a non-empty memory the minibatch is split as
      the reference's AR1 formula, ``b_c = N // ((N + M) // B)`` current + ``b_r = B - b_c`` replayed
      rows (at least one replayed row; :func:`batch_split`); replayed rows are drawn uniformly per step.
    * Memories, all with ``M`` slots and the latent memory's update rule (after experience ``t``:
      ``min(M // (t+1), N)`` new slots, the rest kept; :func:`~latent_replay.replay.choose_update`):
      ``replay`` keeps raw uint8 images (:class:`~latent_replay.replay.ReplayMemory`), ``latent`` float32
      latents at the split, ``glr`` the samples of Gaussian-mixture generators fitted on the
      experience's latents (:class:`~latent_replay.replay.generative.GenerativeReplay`, buffer
      sampling as the reference), ``glr-otf`` the generators only (fresh samples every step). Latents
      are taken after training the experience, in eval mode (glr-spec §11.1 "fixed"); the memory is
      not updated after the last experience (nothing would use it, Algorithm 1 "if i < n").
    * Evaluation: after every experience, accuracy on every experience's test set -> the T x T accuracy
      matrix; :mod:`latent_replay.metrics` gives final average accuracy, average forgetting, BWT.

Randomness: every run is repeated for ``seeds`` consecutive seeds. Per seed, the stream's
permutations, the initial weights, minibatch order and replay draws (one ``torch.Generator`` seeded with
the seed), the memory slot choices (``seeded_rng(seed, "glr-bench-memory-slots")``, a named stream of
:func:`~latent_replay.utils.seeded_rng`, independent of the permutations' ``default_rng([seed, k])``)
and GLR's generators (their own named streams, see :mod:`latent_replay.replay.generative`) are all
explicit. torch and BLAS run with
``threads`` threads (:func:`limit_threads`; default 1). Same arguments -> same numbers on the same device.

Output, per stream and sweep (``sweep`` is ``comparison``, ``freeze`` or ``buffer``; every file is
written atomically with :mod:`latent_replay.results`)::

    <out>/<data>_<stream>_<sweep>/config.json             settings, seeds, data, stream transforms, versions
    <out>/<data>_<stream>_<sweep>/summary.csv             one row per run and seed
    <out>/<data>_<stream>_<sweep>/summary_mean.csv        per run: mean and std over seeds (the printed table)
    <out>/<data>_<stream>_<sweep>/accuracy_matrix.csv     run, seed, train_exp, eval_exp, accuracy (tidy)
    <out>/<data>_<stream>_<sweep>/runs/<run>_seed<S>.json matrix, metrics, bytes, timings, GLR diagnostics
    <out>/<data>_<stream>_<sweep>/<run>/run<S>/           an ordinary run folder: metrics.csv, summary.json
    <out>/<data>_<stream>_<sweep>/average_accuracy.png    accuracy over the seen experiences, per run

Modules: :mod:`.settings` (settings, run specs and results, the run plans), :mod:`.model` (the split
MLP), :mod:`.loop` (one run), :mod:`.plots` (the average-accuracy figure), :mod:`.results` (result
files and tables), :mod:`.benchmark` (every run and seed, then the files) and :mod:`.command` (the
``glr-bench`` command). Their names are re-exported here; the logger of all of them is
``latent_replay.glr_bench``.
"""
from __future__ import annotations

from .benchmark import limit_threads, load_data, run_benchmark, warm_up
from .command import glr_bench_command
from .loop import EVAL_BATCH, _Run, batch_split, run_one  # noqa: F401  (_Run: tests)
from .model import SplitMLP
from .plots import METHOD_COLOURS, plot_average_accuracy, seen_accuracy
from .results import (METRICS, aggregate, bench_figures, find_bench_folders, format_table, load_results,
                      matrices_frame, results_frame, write_results)
from .settings import (BUFFER_FRACTIONS, DEFAULT_METHODS, LATENT_METHODS, METHODS, SWEEPS, TOOL_NAME, BenchSettings,
                       RunResult, RunSpec, check_methods, plan_runs)

__all__ = ["BUFFER_FRACTIONS", "DEFAULT_METHODS", "EVAL_BATCH", "LATENT_METHODS", "METHODS", "METHOD_COLOURS",
           "METRICS", "SWEEPS", "TOOL_NAME", "BenchSettings", "RunResult", "RunSpec", "SplitMLP", "aggregate",
           "batch_split", "bench_figures", "check_methods", "find_bench_folders", "format_table",
           "glr_bench_command", "limit_threads", "load_data", "load_results", "matrices_frame", "plan_runs",
           "plot_average_accuracy", "results_frame", "run_benchmark", "run_one", "seen_accuracy", "warm_up",
           "write_results"]
