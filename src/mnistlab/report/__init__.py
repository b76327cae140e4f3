"""Reports of an experiment: tables, figures, one self-contained HTML page, Markdown, the live progress.

The data path: ``frame`` reads the store in bulk through the store's readers; ``mnistlab.analysis``
judges the runs; ``plots`` draws figures; ``content`` assembles what a report says once; ``html`` and
``markdown`` render it; ``writer`` writes the files. ``progress`` shows a study while it trains
(``log_formats`` names its formats). ``overview`` reads what ``mnistlab ls`` and ``show`` print of a
store without pandas, the same way ``frame`` does.

The names below are importable from ``mnistlab.report`` itself, but each is loaded only when it is
first asked for (PEP 562), so importing this package pulls in neither matplotlib nor scipy.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> the module that is its one home
_HOMES = {
    "accuracy_figure": "mnistlab.report.plots",
    "build_report": "mnistlab.report.content",
    "comparison_table": "mnistlab.report.frame",
    "Conclusions": "mnistlab.report.conclusions",
    "confusion_figure": "mnistlab.report.plots",
    "confusion_matrix": "mnistlab.analysis.ranking",
    "effects_figure": "mnistlab.report.plots",
    "epochs_frame": "mnistlab.report.frame",
    "experiment_conclusions": "mnistlab.report.content",
    "ExperimentData": "mnistlab.report.frame",
    "factor_study": "mnistlab.report.factors",
    "figure_png": "mnistlab.report.plots",
    "load_experiment": "mnistlab.report.frame",
    "load_predictions": "mnistlab.report.artifacts",
    "load_weights": "mnistlab.report.artifacts",
    "loss_figure": "mnistlab.report.plots",
    "misclassified_figure": "mnistlab.report.plots",
    "misclassified_indices": "mnistlab.analysis.ranking",
    "model_diagnoses": "mnistlab.report.frame",
    "ModelDiagnosis": "mnistlab.analysis.diagnose",
    "most_confused_pairs": "mnistlab.analysis.ranking",
    "Report": "mnistlab.report.content",
    "ReportPaths": "mnistlab.report.writer",
    "runs_frame": "mnistlab.report.frame",
    "val_overlay_figure": "mnistlab.report.plots",
    "weights_figure": "mnistlab.report.plots",
    "write_report": "mnistlab.report.writer",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'mnistlab.report' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)


def __dir__() -> list[str]:
    return __all__
