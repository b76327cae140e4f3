"""The Python entry points a notebook uses; the CLI calls exactly these.

Importing this module loads neither torch nor pandas: each function imports what it needs when it
runs, so that the CLI's store commands (`mnistlab ls`, `show`) start fast. The names re-exported
from heavier modules (`History`, `TrainConfig`, ...) are loaded when first asked for (PEP 562).
"""

from __future__ import annotations

import importlib
import json
from contextlib import nullcontext
from pathlib import Path
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from mnistlab.util.atomic import check_target, write_text
from mnistlab.data.datasets import Dataset, load_dataset
from mnistlab.errors import DataError, EnvironmentFailure, MnistlabError
from mnistlab.runs.store import DEFAULT_ROOT, RunStore, open_existing_store
from mnistlab.util.strict import whole_number
# Light; importing it also registers how History and Conclusions show themselves in a notebook.
from mnistlab.report.notebook import Comparison, ReportView

if TYPE_CHECKING:
    from mnistlab.experiments.definition import Experiment, Task
    from mnistlab.experiments.overrides import Overrides
    from mnistlab.runs.events import Listener
    from mnistlab.interop.keras_objects import ImportResult
    from mnistlab.nn.build import KerasModel
    from mnistlab.report.conclusions import Conclusions
    from mnistlab.report.reproduction import ModelReproduction
    from mnistlab.report.writer import ReportPaths
    from mnistlab.runs.sequential import SequentialOutcome
    from mnistlab.runs.tasks import RunOutcome
    from mnistlab.spec.model import ModelSpec
    from mnistlab.trained.folder import TrainedModel
    from mnistlab.trained.inference import Evaluation, ImagesLike, Predictions
    from mnistlab.training.cost import Estimate
    from mnistlab.training.config import TrainConfig
    from mnistlab.training.history import History, Reporter
    from mnistlab.zoo import zoo_models

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


def model_spec(model: str | ModelSpec | dict[str, Any]) -> ModelSpec:
    """A zoo id, a spec file (`file.yaml[:ID]`), a spec dict, or a ModelSpec → validated ModelSpec."""
    from mnistlab.spec.model import ModelSpec
    from mnistlab.spec.parse import parse_model
    from mnistlab.zoo import get_model

    if isinstance(model, ModelSpec):
        # Re-validated: a hand-built spec gets the same checks; a spec read from a file keeps
        # naming it (its errors, and later a bundle's, say which file).
        return parse_model(model.to_dict(), model.source)
    if isinstance(model, dict):
        return parse_model(model)
    return get_model(model)


def train(
    model: str | ModelSpec | dict[str, Any],
    dataset: str | Dataset = "mnist",
    data_dir: str | Path | None = None,
    download: bool = False,
    reporter: Reporter | None = None,
    seeds: Sequence[int] | None = None,
    *,
    save_history: bool = False,
    progress: Any = "auto",
    **options: Any,
) -> Any:
    """Train one model; `options` are TrainConfig fields (epochs, batch_size, seed, device, ...).

    With `seeds` (instead of `seed`): train those seeds as one seed bundle and return one History
    per seed; `out_dir` then holds a `seed-N` model folder per seed.

    `reporter` (an engine.Reporter; mnistlab.report.progress has the CLI's: `make_reporter`,
    `JsonLinesReporter`, `LineReporter`) hears every epoch, and `end_run` once per seed trained.
    `save_history`: with `out_dir`, also write each model folder's history.json (`write_history`),
    after every seed has trained, as `mnistlab train --out` does. `progress` (when no `reporter`):
    "auto" (bars in a notebook, rich on a terminal, nothing in a pipe or under pytest), "rich",
    "tqdm", "lines", "json" or "none" (report.progress.train_reporter)."""
    from mnistlab.report.progress import train_reporter

    spec = model_spec(model)
    if seeds is not None:
        from mnistlab.training.bundle import check_seed_list

        check_seed_list(seeds, "seed" in options)
    reporter = train_reporter(reporter, progress, spec.id, seeds, options.get("seed", 0))
    data = dataset if isinstance(dataset, Dataset) else load_dataset(dataset, data_dir=data_dir, download=download)
    if seeds is not None:
        out_dir = options.get("out_dir")
        histories = _train_bundle(spec, data, list(seeds), reporter, options)
        if save_history and out_dir is not None:
            from mnistlab.training.bundle import seed_dir

            for history in histories:
                write_history(seed_dir(Path(out_dir), history.seed) / "history.json", history)
        return histories
    from mnistlab.trained.folder import save_trained
    from mnistlab.training.config import TrainConfig
    from mnistlab.training.engine import fit
    from mnistlab.training.history import RunEnd

    if options.get("out_dir") is not None:
        options["out_dir"] = Path(options["out_dir"])
    history = fit(spec, data, TrainConfig(**options), reporter=reporter)
    if options.get("out_dir") is not None:
        save_trained(options["out_dir"], history, data.info)  # out_dir becomes a model folder
    if reporter is not None:
        reporter.end_run(RunEnd.of(history))
    if save_history and options.get("out_dir") is not None:
        write_history(options["out_dir"] / "history.json", history)
    return history


def _train_bundle(spec: ModelSpec, data: Dataset, seeds: list[int], reporter: Reporter | None,
                  options: dict[str, Any]) -> list[History]:
    from mnistlab.trained.folder import save_trained
    from mnistlab.training.bundle import fit_bundle, seed_dir
    from mnistlab.training.config import TrainConfig
    from mnistlab.training.history import RunEnd

    # Popped even when None (as `train --seeds` without --out passes it): each config gets its own.
    out_dir = options.pop("out_dir", None)
    out = Path(out_dir) if out_dir is not None else None
    configs = [TrainConfig(**options, seed=seed, out_dir=seed_dir(out, seed) if out else None) for seed in seeds]
    histories = fit_bundle(spec, data, configs, reporter=reporter)
    for config, history in zip(configs, histories):
        if config.out_dir is not None:
            save_trained(config.out_dir, history, data.info)  # each seed-N folder becomes a model folder
        if reporter is not None:
            reporter.end_run(RunEnd.of(history))
    return histories


def open_store(root: str | Path = DEFAULT_ROOT, *, create: bool = True, **leases: float | None) -> RunStore:
    """The run store in `root` (created if absent); close it, or use it in a `with` block.

    `leases`: `heartbeat_seconds` and `lease_seconds`, as `mnistlab run` takes them. `create=False`:
    the store must exist already (else a one-line StoreError), as the read commands open it, so that
    a mistyped folder never becomes an empty store."""
    if not create:
        if leases:
            raise ValueError("open_store: leases are for a store opened to train in; create=False opens one to read")
        return open_existing_store(root)
    return RunStore(root, **leases)


def experiment(definition: str | Path | dict[str, Any] | Experiment) -> Experiment:
    """A built-in experiment name, an experiment file, a dict, or an Experiment → validated Experiment."""
    from mnistlab.experiments.definition import Experiment, load_experiment, parse_experiment

    if isinstance(definition, Experiment):
        return parse_experiment(definition.to_dict())
    if isinstance(definition, dict):
        return parse_experiment(definition)
    return load_experiment(definition)[0]


def experiment_name(experiment: str | Path) -> str:
    """The name an experiment is stored under, from that name, a built-in name, or an experiment file."""
    path = Path(experiment)
    if path.suffix in (".yaml", ".yml") and path.exists():
        from mnistlab.experiments.definition import load_experiment

        return load_experiment(path)[0].name
    return str(experiment)


def bundle_size(bundle: int | str) -> int | str:
    """`bundle` as `run` takes it, checked: a whole number of seeds (1 or more) or "auto"; anything
    else is a one-line MnistlabError (the CLI checks `--bundle` before it reads the experiment)."""
    from mnistlab.runs.local import parse_bundle

    return parse_bundle(bundle)


def run(
    definition: str | Path | dict[str, Any] | Experiment,
    store: RunStore | str | Path = DEFAULT_ROOT,
    data_dir: str | Path | None = None,
    dataset: Dataset | None = None,
    bundle: int | str = 1,
    backend: str = "local",
    address: str | None = None,
    gpus_per_task: float | None = None,
    cpus_per_task: int | None = None,
    artifacts: str | Path | None = None,
    reporter_for: Callable[[Task], Reporter] | None = None,
    *,
    download: bool = False,
    source: str | None = None,
    heartbeat_seconds: float | None = None,
    lease_seconds: float | None = None,
    listeners: Sequence[Listener] = (),
    progress: Any = "auto",
    overrides: Overrides | None = None,
    log_to: Sequence[str] = (),
) -> RunOutcome:
    """Train every (model, seed) of an experiment not already in the store, resuming interrupted ones.

    `bundle`: train up to this many seeds of a model together as one seed bundle ("auto": as many
    as fit in memory; 1: one run at a time). `backend="ray"` trains on a Ray cluster (`address`, or
    a private one on this machine) while this process alone writes the store; `gpus_per_task` /
    `cpus_per_task` are each task's share, `artifacts` a folder every worker reaches for checkpoints
    (default: the store's). `reporter_for(task)` gives each task's reporter (its epochs, and
    `end_run` when it finishes); `mnistlab.report.progress.task_reporters` makes the CLI's.

    `download`: fetch the dataset if it is not found. `source`: the file the definition was read
    from, for error messages to name. `heartbeat_seconds` / `lease_seconds`: the claims' timing
    (`open_store`), for a store this call opens; a RunStore passed in keeps its own. `listeners`:
    callables that hear the study's events as they happen (`mnistlab.runs.events`: EpochEnded,
    RunEnd, RoundEnded). `progress` (without `reporter_for`): as `train`'s, a bar per task; "auto" in a
    notebook adds a live display (a LiveStudyDisplay, which may be passed). Returns a StudyOutcome.
    `overrides` (`Overrides(epochs=20, seeds=range(5), ...)`, experiments/overrides.py): train the
    derived experiment `NAME+epochs=20...`, whose runs are its own. `log_to`: stream each epoch as it
    ends to `tensorboard:DIR` or `mlflow:URI` (a URI or an mlruns folder), as `export-runs` writes them."""
    from mnistlab.experiments.overrides import load_with_overrides
    from mnistlab.interop.live_log import LiveLog, parse_log_to
    from mnistlab.report.study_view import check_progress, study_progress
    from mnistlab.runs.runner import run_experiment
    from mnistlab.runs.tasks import Placement

    study = load_with_overrides(definition, overrides)[0] if overrides else experiment(definition)
    placement = Placement(backend, address, gpus_per_task, cpus_per_task, artifacts)
    placement.check()  # a bad or silent cluster address is refused before a store is opened or created
    check_progress(progress, reporter_for)  # and a bad progress=
    targets = [parse_log_to(value) for value in log_to]  # and a bad --log-to: nothing is written
    options: dict[str, Any] = dict(data_dir=data_dir, download=download, dataset=dataset, bundle=bundle,
                                   placement=placement)
    if source is not None:
        options["source"] = source

    def train_in(opened: RunStore) -> RunOutcome:  # with progress= as asked; the outcome with the best model
        # The live log first: a listener of the caller's that hears an epoch finds it logged already.
        with LiveLog(targets, opened) as log, study_progress(progress, study, opened, source, reporter_for,
                                                             [log, *listeners]) as watch:
            return watch.finish(run_experiment(study, opened, **options, **watch.options()), opened, study.name)
    if isinstance(store, RunStore):
        if heartbeat_seconds is not None or lease_seconds is not None:
            raise ValueError("run: heartbeat_seconds and lease_seconds are for a store run() opens; "
                             "give them to open_store for a RunStore")
        return train_in(store)
    # None: the store's defaults (a heartbeat every DEFAULT_HEARTBEAT_SECONDS, a lease of 6 heartbeats).
    timing = {"heartbeat_seconds": heartbeat_seconds} if heartbeat_seconds else {}
    with RunStore(store, lease_seconds=lease_seconds, **timing) as opened:
        return train_in(opened)


def run_until_decided(definition: str | Path | dict[str, Any] | Experiment, store: RunStore | str | Path = DEFAULT_ROOT,
                      *, max_seeds: int | None = None, margin: float | None = None, budget: str | float | None = None,
                      per_round: int | None = None, estimate: Callable[[Task], float] | None = None,
                      on_round: Callable[..., None] | None = None, **run_options: Any) -> SequentialOutcome:
    """Train in rounds until every question is decided (mnistlab.runs.sequential): `max_seeds` (10),
    `margin` (points, 0.2), `budget` ("30m" or seconds), `per_round` (default: `bundle` if a number, else
    1); `run_options` are `run`'s, for every round (`overrides` apply once, to the study);
    `estimate(task)`: a run's seconds for the budget (default: a probe); `on_round(record, state)`."""
    from mnistlab.experiments.overrides import load_with_overrides
    from mnistlab.runs import sequential

    overrides = run_options.pop("overrides", None)
    study = load_with_overrides(definition, overrides)[0] if overrides else experiment(definition)
    bundle = run_options.get("bundle", 1)
    chosen = {"max_seeds": max_seeds, "margin": margin, "budget_seconds": sequential.parse_budget(budget),
              "per_round": per_round or (bundle if isinstance(bundle, int) and not isinstance(bundle, bool) else 1)}
    settings = sequential.UntilDecided(**{name: value for name, value in chosen.items() if value is not None})
    settings.check()
    timing = {key: value for key in ("heartbeat_seconds", "lease_seconds")
              if (value := run_options.pop(key, None)) is not None}
    with (nullcontext(store) if isinstance(store, RunStore) else open_store(store, **timing)) as opened:
        return sequential.run_until_decided(study, opened, lambda sub, into: run(sub, into, **run_options), settings,
                                            run_options.get("source") or "<python>", estimate, on_round=on_round)

def report(experiment: str | Path | Experiment, store: RunStore | str | Path = DEFAULT_ROOT,
           out: str | Path | None = None, data_dir: str | Path | None = None, *, dataset: str | None = None,
           settled: Sequence[int] | None = None) -> ReportPaths | None:
    """Write the experiment's report: one self-contained HTML page and a Markdown file, in `out`
    (default: STORE/reports). `experiment`: its stored name, a built-in name, its file, or the Experiment.

    `dataset`: the dataset whose test images the misclassified grid shows (default: the Experiment's
    given one, else the one it was stored with); when it cannot be loaded, the report says the grid
    needs it. `settled`: write only if none of these runs is pending or running any more
    (`RunOutcome.run_ids`, asked after this process's last write, as `mnistlab run` does); None is
    returned otherwise."""
    from mnistlab.experiments.definition import Experiment

    if isinstance(experiment, Experiment):
        name, given, dataset = experiment.name, experiment.name, dataset or experiment.dataset
    else:
        name, given = experiment_name(experiment), str(experiment)  # a file's errors come before the store's
    if not isinstance(store, RunStore):
        with open_existing_store(store) as opened:
            return _report(opened, name, given, Path(out) if out is not None else Path(store) / "reports",
                           data_dir, dataset, settled)
    return _report(store, name, given, Path(out) if out is not None else store.root / "reports",
                   data_dir, dataset, settled)


def _report(store: RunStore, name: str, given: str, out: Path, data_dir: str | Path | None, dataset: str | None,
            settled: Sequence[int] | None) -> ReportPaths | None:
    from mnistlab.report.writer import experiment_config, report_images, write_report

    config = experiment_config(store, name, given)
    if settled is not None:
        from mnistlab.runs.runner import experiment_settled

        if not experiment_settled(store, list(settled)):
            return None
    return write_report(store, name, out, dataset=report_images(dataset or config.get("dataset", "mnist"), data_dir))


def show_report(store: RunStore | str | Path, experiment: str | Path | Experiment, out: str | Path | None = None,
                data_dir: str | Path | None = None) -> ReportView:
    """Write the experiment's report (as `report`); a notebook shows the page on disk (`.path`) in an iframe."""
    return ReportView.from_file(report(experiment, store, out, data_dir).html)  # type: ignore[union-attr]


def comparison(experiment: str | Path, store: RunStore | str | Path = DEFAULT_ROOT) -> Comparison:
    """The comparison table (`.table`, a DataFrame) and its best model; a notebook shows it as the report does."""
    from mnistlab.report.notebook import comparison_of

    if not isinstance(store, RunStore):
        with open_existing_store(store) as opened:
            return comparison(experiment, opened)
    return comparison_of(store, experiment_name(experiment))


def conclusions(experiment: str | Path, store: RunStore | str | Path = DEFAULT_ROOT) -> Conclusions:
    """The report's written conclusions (one sentence per finding, Holm-corrected), without a figure."""
    from mnistlab.report.content import experiment_conclusions

    if not isinstance(store, RunStore):
        with open_existing_store(store) as opened:
            return conclusions(experiment, opened)
    return experiment_conclusions(store, experiment_name(experiment))


def find_run(store: RunStore, reference: str) -> int:
    """The id of the one run `reference` names: a run id, or a prefix of a run's spec hash, model id or
    `experiment/model_id` (as `mnistlab ls EXPERIMENT` lists them); a one-line MnistlabError otherwise."""
    matches = store.find_runs(reference)
    if len(matches) != 1:
        found = "no run" if not matches else f"{len(matches)} runs"
        raise MnistlabError(f"{store.path}: {found} match '{reference}'; `mnistlab ls EXPERIMENT` lists run ids")
    return matches[0].id


def find_model(reference: str | Path, store: str | Path = DEFAULT_ROOT, max_params: int | None = None) -> TrainedModel:
    """The model a reference names, as the CLI's MODEL argument reads it: a model folder (a run's or
    `train --out`'s), else the run `find_run` finds in `store`."""
    from mnistlab.runs.store import DB_NAME

    if Path(reference).is_dir():
        return load_model(Path(reference), max_params=max_params)
    if not (Path(store) / DB_NAME).is_file():
        raise MnistlabError(f"{reference}: not a model folder, and {store} holds no run store to find a run in; "
                            "pass --store DIR or a model folder")
    with RunStore(store) as run_store:
        return load_model(run_store, find_run(run_store, str(reference)), max_params=max_params)


def check_datasets(data_dir: str | Path | None = None, download: bool = False) -> list[tuple[str, Dataset | DataError]]:
    """Every registered dataset, loaded and checked (sizes, magic numbers, sha256), or why it could not be."""
    from mnistlab.data.datasets import DATASETS

    found: list[tuple[str, Dataset | DataError]] = []
    for name in DATASETS:
        try:
            found.append((name, load_dataset(name, data_dir=data_dir, download=download)))
        except DataError as exc:
            found.append((name, exc))
    return found


def load_model(source: str | Path | RunStore, run_id: int | str | None = None, device: str = "cpu",
               max_params: int | None = None) -> TrainedModel:
    """A trained model in inference mode: float32 images in [0, 1] ([N, 28, 28, 1], or [N, 784]
    for MLPs) in, probabilities out. `source` is a model folder (a run's artifacts folder or a
    `train --out` folder), or with `run_id` a run store (folder or RunStore). `max_params`: the
    parameter limit its spec is held to (default limits.MAX_PARAMS), for models trained with a raised one."""
    from mnistlab.trained.folder import load_model_folder, run_model_folder

    if isinstance(run_id, str):
        number = whole_number(run_id)
        if number is None:
            raise MnistlabError(f"run_id {run_id!r}: a run id is a number (`mnistlab ls EXPERIMENT` lists them)")
        run_id = number
    if run_id is None:
        if isinstance(source, RunStore):
            raise MnistlabError(f"{source.root}: give the run_id of the run whose model to load")
        return load_model_folder(source, device, max_params)
    if isinstance(source, RunStore):
        return load_model_folder(run_model_folder(source, run_id), device, max_params)
    with open_existing_store(source) as store:
        return load_model_folder(run_model_folder(store, run_id), device, max_params)


def _trained(model: TrainedModel | str | Path) -> TrainedModel:
    from mnistlab.trained.folder import TrainedModel

    return model if isinstance(model, TrainedModel) else load_model(model)


def predict(model: TrainedModel | str | Path, images: ImagesLike) -> Predictions:
    """Class probabilities for arrays (uint8 0–255 or float 0–1; [28, 28], [N, 28, 28],
    [N, 28, 28, 1], [N, 784]) or files (PNG/JPEG converted as MNIST was made, .npy, IDX)."""
    from mnistlab.trained import inference

    return inference.predict(_trained(model), images)


def evaluate(
    model: TrainedModel | str | Path,
    dataset: str | Dataset | None = None,
    data_dir: str | Path | None = None,
    download: bool = False,
) -> Evaluation:
    """Test-set accuracy, loss and confusion matrix on `dataset` (default: the one the model was
    trained on); nothing is written anywhere."""
    from mnistlab.trained import inference

    trained = _trained(model)
    if not isinstance(dataset, Dataset):
        dataset = load_dataset(dataset or trained.info.dataset, data_dir=data_dir, download=download)
    return inference.evaluate(trained, dataset)


def export_model(model: TrainedModel | str | Path, path: str | Path, format: str = "onnx") -> Path:
    """Write the model as `format` (onnx, pt2 or safetensors) to `path`; it takes float32 images in
    [0, 1] shaped [N, 28, 28, 1] (or [N, 784] for MLPs), N dynamic, and returns probabilities."""
    from mnistlab.trained import export

    return export.export_model(_trained(model), path, format)


def import_keras(path: str | Path) -> "ImportResult":
    """Keras model code (.py or .ipynb) → specs, read with `ast` and never executed.

    `result.specs` are validated specs; `result.skipped` lists each model that could not be
    translated, with the line of every problem (such models are skipped, never guessed).
    """
    from mnistlab.interop.keras_code_in import import_keras_code

    return import_keras_code(path)


def write_specs(result: ImportResult, output: str | Path | None = None) -> str:
    """`import_keras`'s specs as one YAML spec file, each import decision recorded; with `output`, also
    written there, whole or not at all (EnvironmentFailure if it cannot be)."""
    from mnistlab.interop.spec_yaml import specs_yaml

    text = specs_yaml(result)
    if output is not None:
        try:
            write_text(Path(output), text)
        except OSError as error:
            raise EnvironmentFailure(f"{output}: cannot write the specs: {error.strerror or error}") from None
    return text


def export_keras(model: str | ModelSpec | dict[str, Any]) -> str:
    """Runnable Keras 3 / tf.keras code for a zoo id, spec file or spec, Keras 2.2's defaults written out."""
    from mnistlab.interop.keras_code_out import export_keras_code

    return export_keras_code(model_spec(model))


def load_keras_weights(model: str | ModelSpec | dict[str, Any], weights: str | Path) -> "KerasModel":
    """The model's PyTorch network (inference mode, logits out) holding a Keras 2 HDF5 weights file."""
    from mnistlab.interop.keras_weights import load_keras_weights as load

    return load(model_spec(model), weights)


def import_keras_weights(model: str | ModelSpec | dict[str, Any], weights: str | Path, output: str | Path) -> Path:
    """Load Keras weights into the model and write them as a model folder (predict / evaluate / export read it)."""
    from mnistlab.interop.keras_weights import write_model_folder

    check_target(output, folder=True)  # before the work: a file, link or device there is refused
    return write_model_folder(output, load_keras_weights(model, weights), Path(weights))


def export_runs(experiment: str, to: str, destination: str | Path,
                store: RunStore | str | Path = DEFAULT_ROOT) -> list[Any]:
    """An experiment's runs to TensorBoard (`to="tensorboard"`, a folder) or MLflow (`to="mlflow"`,
    a tracking URI or a local mlruns folder): one run per (model, seed), metrics per epoch, hparams."""
    from mnistlab.interop.tracking import TARGETS, to_mlflow, to_tensorboard

    if to not in TARGETS:
        raise MnistlabError(f"export-runs: unknown target '{to}'; choose {' or '.join(TARGETS)}")
    if not isinstance(store, RunStore):
        with open_existing_store(store) as opened:
            return export_runs(experiment, to, destination, opened)
    if to == "tensorboard":
        return to_tensorboard(store, experiment, destination)
    return to_mlflow(store, experiment, str(destination))


__all__ = [
    "DEFAULT_ROOT", "EpochEnded", "Experiment", "History", "LiveStudyDisplay", "ModelSpec", "Overrides", "Placement",
    "RoundEnded", "RunEnd", "RunOutcome", "RunStore", "StudyOutcome", "TrainConfig", "TrainedModel", "builtin_experiments",
    "get_model", "summary_text", "bundle_size", "check_datasets", "comparison", "conclusions", "estimate", "evaluate",
    "experiment", "experiment_name", "export_keras", "export_model", "export_runs", "find_model", "find_run",
    "import_keras", "import_keras_weights", "LiveReport", "load_dataset", "load_keras_weights", "load_model",
    "model_spec", "open_store", "parse_overrides", "predict", "report", "reproduction", "run", "run_until_decided",
    "show_report", "train", "watch_report", "write_history", "write_specs", "zoo_models",
]


def estimate(
    model: str | ModelSpec | dict[str, Any],
    epochs: int | None = None,
    train_images: int | None = None,
    precision: str = "fp32",
    *,
    dataset: str = "mnist",
    validate_on: str = "test",
    probe_seconds: float | None = None,
    batch_size: int | None = None,
    threads: int | None = None,
    device: str = "auto",
) -> "Estimate":
    """How long one seed of `model` takes to train here, from a short measured probe (cost.py).

    Defaults: the spec's epochs and the notebooks' protocol (`validate_on="test"`: all 60,000
    training images, the 10,000 test images validated on each epoch); `train_images` overrides the
    images trained on per epoch. `probe_seconds` (default cost.DEFAULT_PROBE_SECONDS, at most
    cost.MAX_PROBE_SECONDS) is how long the probe measures. The estimate's `hours`, `seconds` and
    `throughput` (images/s, the machine) say the rest; `cost.ESTIMATE_INCLUDES` what is counted."""
    from mnistlab.training.cost import DEFAULT_PROBE_SECONDS, epoch_images, estimate_training, probe_throughput
    from mnistlab.training.limits import check_positive

    spec = model_spec(model)
    where = f"model '{spec.id}'"
    check_positive(epochs, "epochs", where)  # before the probe spends its seconds
    check_positive(train_images, "train_images", where)
    train, val, test = epoch_images(dataset, validate_on)
    throughput = probe_throughput(spec, precision=precision, batch_size=batch_size, threads=threads, device=device,
                                  seconds=probe_seconds if probe_seconds is not None else DEFAULT_PROBE_SECONDS)
    return estimate_training(throughput, epochs=epochs if epochs is not None else spec.training.epochs,
                             train_images=train_images if train_images is not None else train,
                             val_images=val, test_images=test)


def reproduction(stores: list[str | Path] | str | Path,
                 out: str | Path | None = None,
                 estimate_seconds: float | None = None) -> list["ModelReproduction"]:
    """Each seed model's notebook figure against mnistlab's runs under the notebook's protocol in ``stores``;
    with ``out``, also write the Markdown document (docs/REPRODUCTION.md is made this way). With
    ``estimate_seconds``, every model not run yet is probed that long here (fp32) and the document
    gives its estimated hours per seed under its notebook's protocol."""
    from mnistlab.training.cost import check_probe_seconds
    from mnistlab.report.reproduction import render_markdown, reproduction_table

    roots = [stores] if isinstance(stores, (str, Path)) else list(stores)
    if out is not None:
        check_target(out)
    if not roots:
        raise MnistlabError("reproduction: give at least one run store")
    if estimate_seconds is not None:
        check_probe_seconds(estimate_seconds, "reproduction: estimate_seconds")
    opened = [open_existing_store(root) for root in roots]
    try:
        lines = reproduction_table(opened)
    finally:
        for store in opened:
            store.close()
    if out is not None:
        estimates = {line.model_id: estimate(line.model_id, probe_seconds=estimate_seconds, device="cpu")
                     for line in lines if line.verdict == "not run"} if estimate_seconds is not None else None
        text = render_markdown(lines, [str(root) for root in roots], estimates)
        try:
            write_text(Path(out), text)
        except OSError as error:
            raise EnvironmentFailure(f"{out}: cannot write the reproduction table: {error.strerror or error}") from None
    return lines


def write_history(path: str | Path, history: History) -> Path:
    """Publish a run's history (with its test predictions) as JSON, whole or not at all."""
    path = Path(path)
    try:
        return write_text(path, json.dumps(history.to_json(predictions=True)))
    except OSError as error:
        raise EnvironmentFailure(f"{path}: cannot write the history: {error.strerror or error}") from None
