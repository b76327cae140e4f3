"""The Python entry points a notebook uses; the CLI calls exactly these (studies.py: training and its
cost; results.py: reports, conclusions, reproduction, run exports and imports; models.py: trained
models and Keras code in and out).

Importing this module loads neither torch nor pandas: each function imports what it needs when it
runs, so that the CLI's store commands (`mnistlab ls`, `show`) start fast. The names re-exported
from heavier modules (`History`, `TrainConfig`, ...) are loaded when first asked for (PEP 562).
"""

from __future__ import annotations

import importlib
from typing import Any

from mnistlab.data.datasets import load_dataset
from mnistlab.runs.manage import find_run
from mnistlab.runs.store import DEFAULT_ROOT, RunStore
# The entry points, by what they do (each module's docstring says which); importing them stays light.
from mnistlab.api.studies import (bundle_size, dry_run, estimate, experiment, experiment_name, model_spec, open_store,
                                  run, run_until_decided, train, write_history)
from mnistlab.api.results import (comparison, conclusions, export_archive, export_runs, import_archive, report,
                                  reproduction, show_report)
from mnistlab.api.models import (check_datasets, evaluate, export_keras, export_model, find_model, import_keras,
                                 import_keras_weights, load_keras_weights, load_model, predict, write_specs)

# Names this module used to import at the top, each from its one home: still `api.History` and
# `from mnistlab.api import TrainConfig`, but loaded (with torch, or pydantic's models) only when asked for.
_LAZY = {
    "zoo_models": "mnistlab.zoo",
    "get_model": "mnistlab.zoo",
    "ModelSpec": "mnistlab.spec.model",
    "parse_model": "mnistlab.spec.parse",
    "Experiment": "mnistlab.experiments.definition",
    "load_experiment": "mnistlab.experiments.definition",
    "parse_experiment": "mnistlab.experiments.definition",
    "History": "mnistlab.training.history",
    "Reporter": "mnistlab.training.history",
    "RunEnd": "mnistlab.training.history",
    "TrainConfig": "mnistlab.training.config",
    "fit": "mnistlab.training.engine",
    "Evaluation": "mnistlab.trained.inference",
    "ImagesLike": "mnistlab.trained.inference",
    "Predictions": "mnistlab.trained.inference",
    "TrainedModel": "mnistlab.trained.folder",
    "load_model_folder": "mnistlab.trained.folder",
    "run_model_folder": "mnistlab.trained.folder",
    "save_trained": "mnistlab.trained.folder",
    "Placement": "mnistlab.runs.tasks",
    "RunOutcome": "mnistlab.runs.tasks",
    "run_experiment": "mnistlab.runs.runner",
    "Task": "mnistlab.experiments.definition",
    "Overrides": "mnistlab.experiments.overrides",
    "parse_overrides": "mnistlab.experiments.overrides",
    "builtin_experiments": "mnistlab.experiments.definition",
    "summary_text": "mnistlab.spec.summary",
    "EpochEnded": "mnistlab.runs.events",
    # Run management (runs/manage.py) and gc (report/garbage.py: it knows the report's file names too).
    "tag": "mnistlab.runs.manage",
    "untag": "mnistlab.runs.manage",
    "note": "mnistlab.runs.manage",
    "remove_runs": "mnistlab.runs.manage",
    "gc": "mnistlab.report.garbage",
    "list_runs": "mnistlab.runs.listing",
    "RoundEnded": "mnistlab.runs.events",
    "LiveStudyDisplay": "mnistlab.report.study_view", "StudyOutcome": "mnistlab.report.study_view",
    "LiveReport": "mnistlab.report.live",  # the report rewritten as a study runs (a listener for run)
    "watch_report": "mnistlab.report.live",  # the same for a store another process is writing
}
_LAZY_MODULES = {"export": "mnistlab.trained.export", "inference": "mnistlab.trained.inference"}


def __getattr__(name: str) -> Any:
    if name in _LAZY_MODULES:
        return importlib.import_module(_LAZY_MODULES[name])
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mnistlab.api' has no attribute {name!r}")


__all__ = [
    "DEFAULT_ROOT", "EpochEnded", "Experiment", "History", "LiveStudyDisplay", "ModelSpec", "Overrides", "Placement",
    "RoundEnded", "RunEnd", "RunOutcome", "RunStore", "StudyOutcome", "TrainConfig", "TrainedModel", "builtin_experiments",
    "get_model", "summary_text", "bundle_size", "check_datasets", "comparison", "conclusions", "dry_run", "estimate",
    "evaluate", "experiment", "experiment_name", "export_archive", "export_keras", "export_model", "export_runs",
    "find_model", "find_run", "gc", "import_archive", "list_runs", "note", "remove_runs", "tag", "untag",
    "import_keras", "import_keras_weights", "LiveReport", "load_dataset", "load_keras_weights", "load_model", "model_spec",
    "open_store", "parse_overrides", "predict", "report", "reproduction", "run", "run_until_decided", "show_report", "train", "watch_report",
    "write_history",
    "write_specs", "zoo_models",
]
