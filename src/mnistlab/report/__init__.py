"""Reports of an experiment: tables, figures, one self-contained HTML page, Markdown, terminal views.

The data path: ``frame`` reads the store in bulk; ``stats`` and ``analysis`` judge the runs;
``plots`` draws figures; ``content`` assembles what a report says once; ``html`` and
``markdown`` render it; ``writer`` writes the files; ``terminal`` serves the CLI.
"""

from __future__ import annotations

from mnistlab.analysis import ModelDiagnosis
from mnistlab.report.artifacts import load_predictions, load_weights
from mnistlab.report.conclusions import Conclusions
from mnistlab.report.content import Report, build_report, experiment_conclusions
from mnistlab.report.factors import factor_study
from mnistlab.report.frame import (
    ExperimentData,
    comparison_table,
    epochs_frame,
    load_experiment,
    model_diagnoses,
    runs_frame,
)
from mnistlab.report.plots import (
    accuracy_figure,
    confusion_figure,
    effects_figure,
    figure_png,
    loss_figure,
    misclassified_figure,
    val_overlay_figure,
    weights_figure,
)
from mnistlab.report.stats import confusion_matrix, misclassified_indices, most_confused_pairs
from mnistlab.report.terminal import compare_table, experiments_table, run_panel, runs_table
from mnistlab.report.writer import ReportPaths, write_report

__all__ = [
    "ExperimentData",
    "ModelDiagnosis",
    "Report",
    "ReportPaths",
    "accuracy_figure",
    "build_report",
    "compare_table",
    "comparison_table",
    "Conclusions",
    "confusion_figure",
    "confusion_matrix",
    "effects_figure",
    "experiment_conclusions",
    "factor_study",
    "epochs_frame",
    "experiments_table",
    "figure_png",
    "load_experiment",
    "load_predictions",
    "load_weights",
    "loss_figure",
    "misclassified_figure",
    "misclassified_indices",
    "model_diagnoses",
    "most_confused_pairs",
    "run_panel",
    "runs_frame",
    "runs_table",
    "val_overlay_figure",
    "weights_figure",
    "write_report",
]
