"""Paper figures and tables from any set of result folders (``latent-replay figures``).

Every experiment under the given folders is found from its saved ``exp_configuration.json`` (folder
names are never parsed), its finished runs are read (``run<R>/summary.json`` + ``run<R>/metrics.csv``)
and the experiments are grouped by what their configurations say. Runs that are partial (a
``metrics.csv`` without ``summary.json``), unreadable, missing, or trained with another configuration
than the experiment's (its ``summary.json`` records one) are reported and left out.

Figures (each written as ``<out>/<stem>.<format>`` for every requested format; a figure with nothing
to show is skipped with a log line, never written empty). Name (key of :data:`FIGURES`) -> stem:

* ``accuracy_vs_batches`` -> ``fig1_accuracy_vs_batches``: test accuracy vs encountered batches, mean
  over runs with a ±std band, one line per experiment, one panel per scenario; the published curves
  (``reference``; by default on the command line, :data:`REFERENCE_RESULTS`) dashed. Written whenever a
  run finished.
* ``final_accuracy_vs_layer`` -> ``fig2_final_accuracy_vs_layer``: final accuracy (mean ± std) vs replay
  layer in network order, one line per method/replay/memory size/dtype (memory size = marker shape,
  dtype = marker fill, native replay = a star at ``data``), no-replay runs as dotted horizontal lines.
  Written when a scenario has replay at two or more layers.
* ``cost_vs_layer`` -> ``fig3_cost_vs_layer``: measured training seconds per incremental batch vs layer
  (top) over the fraction of forward MACs below the layer (bottom, from the model). Same condition.
* ``memory_vs_layer`` -> ``fig4_memory_vs_layer``: measured replay memory bytes (log) vs layer, one line
  per storage dtype (and memory size), the same number of raw images as a reference line. Written when
  there are two or more (layer, dtype) combinations.
* ``final_accuracy_vs_memory`` -> ``fig5_final_accuracy_vs_memory``: final accuracy vs memory size for
  the configurations run with two or more sizes.
* ``summary`` -> ``summary.csv`` (:func:`summary_table`) and ``summary.md``, written whenever a run
  finished; the markdown lists what was left out and, with ``reference``, the published final values.

Each method has one colour in every figure (:data:`METHOD_COLOURS`; variants of a method are shades of
it, lighter for lower layers); legends use the paper's words (CWR*, AR1*, AR1*-free,
"latent replay @ conv5_4/dw") and name only what differs between experiments; what they all share goes
in the legend title.

Conventions
-----------
* Accuracies are shown and tabulated in percent; spreads are the **population** std over finished
  runs (ddof = 0, as :func:`results.aggregate_runs` and the published NICv2 numbers).
* x axis of figure 1, "encountered batches": the evaluation after batch ``b`` (0-based) is drawn at
  ``b + 1``; the optional evaluation after global iteration 1 (``kind == "iteration_1"``, profile
  ``caffe``) is drawn at 0. The published multi-run curves have ``num_batches + 1`` points whose first
  point is that iteration-1 evaluation, so point ``k`` is drawn at ``k`` and both line up (a curve of
  another length is aligned on its last point).
* Training time per batch (figure 3) is the mean ``train_seconds`` over the incremental batches
  (``b >= 1``; batch 0, which trains the whole network on a larger batch, is left out unless it is the
  only one), then mean ± std over runs.
* Memory footprint (figure 4) is the measured ``memory_bytes`` of the finished runs (patterns, labels and
  quantisation parameters); the reference line is the same number of raw 3x128x128 uint8 images.

Modules: :mod:`.experiments` (grouping; the runs are read by :mod:`latent_replay.results`), :mod:`.style`
(colours, legend words), :mod:`.series` (the data of each figure), :mod:`.tables` (summary), :mod:`.reference`
(published curves), :mod:`.plots` (drawing), :mod:`.build` (:func:`build_figures`), :mod:`.cli`.
"""
from ..results import Run, save_figure
from .build import Report, build_figures, make_figures
from .cli import figures_command
from .experiments import Experiment, load_experiments
from .reference import (REFERENCE_COLOURS, REFERENCE_RESULTS, REFERENCE_TITLES, load_reference, read_reference_tsv,
                        reference_x)
from .series import (RAW_IMAGE_BYTES, Line, Series, accuracy_curve, accuracy_panels, layer_series, memory_footprint,
                     memory_series)
from .style import (COLUMN_WIDTH, DTYPE_FILL, FIGURES, LINE_MARKERS, MEMORY_MARKERS, METHOD_COLOURS, PAGE_WIDTH,
                    PANEL_HEIGHT, RC, STORAGE_STYLE)
from .tables import SUMMARY_COLUMNS, summary_markdown, summary_table

__all__ = [
    "FIGURES", "Experiment", "Run", "Report", "load_experiments", "summary_table", "accuracy_curve",
    "accuracy_panels", "layer_series", "memory_series", "memory_footprint", "read_reference_tsv",
    "load_reference", "reference_x", "REFERENCE_RESULTS", "make_figures", "build_figures", "figures_command",
    "save_figure", "summary_markdown", "SUMMARY_COLUMNS", "Line", "Series", "METHOD_COLOURS", "STORAGE_STYLE",
    "REFERENCE_TITLES", "REFERENCE_COLOURS", "DTYPE_FILL", "MEMORY_MARKERS", "LINE_MARKERS", "RC", "COLUMN_WIDTH",
    "PAGE_WIDTH", "PANEL_HEIGHT", "RAW_IMAGE_BYTES",
]
