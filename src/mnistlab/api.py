"""The Python entry points a notebook uses; the CLI calls exactly these."""

from __future__ import annotations

import json
from pathlib import Path
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from mnistlab.trained import export
from mnistlab.trained import inference
from mnistlab.util.atomic import check_target, write_text
from mnistlab.data.datasets import Dataset, load_dataset
from mnistlab.training.history import History, Reporter, RunEnd
from mnistlab.training.config import TrainConfig
from mnistlab.training.engine import fit
from mnistlab.errors import EnvironmentFailure, MnistlabError
from mnistlab.experiments.definition import Experiment, Task, load_experiment, parse_experiment
from mnistlab.trained.inference import Evaluation, ImagesLike, Predictions
from mnistlab.trained.folder import TrainedModel, load_model_folder, run_model_folder, save_trained
from mnistlab.runs.tasks import Placement, RunOutcome
from mnistlab.runs.runner import run_experiment
from mnistlab.runs.store import RunStore, open_existing_store
from mnistlab.util.strict import whole_number
from mnistlab.spec.model import ModelSpec
from mnistlab.spec.parse import parse_model
from mnistlab.zoo import get_model, zoo_models

if TYPE_CHECKING:
    from mnistlab.nn.build import KerasModel
    from mnistlab.training.cost import Estimate
    from mnistlab.report.reproduction import ModelReproduction
    from mnistlab.interop.keras_objects import ImportResult


def model_spec(model: str | ModelSpec | dict[str, Any]) -> ModelSpec:
    """A zoo id, a spec file (`file.yaml[:ID]`), a spec dict, or a ModelSpec → validated ModelSpec."""
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
    **options: Any,
) -> Any:
    """Train one model; `options` are TrainConfig fields (epochs, batch_size, seed, device, ...).

    With `seeds` (instead of `seed`): train those seeds as one seed bundle and return one History
    per seed; `out_dir` then holds a `seed-N` model folder per seed.

    `reporter` (an engine.Reporter; mnistlab.report.progress has the CLI's: `make_reporter`,
    `JsonLinesReporter`, `LineReporter`) hears every epoch, and `end_run` once per seed trained."""
    spec = model_spec(model)
    if seeds is not None:
        from mnistlab.training.bundle import check_seed_list

        check_seed_list(seeds, "seed" in options)
    data = dataset if isinstance(dataset, Dataset) else load_dataset(dataset, data_dir=data_dir, download=download)
    if seeds is not None:
        return _train_bundle(spec, data, list(seeds), reporter, options)
    if options.get("out_dir") is not None:
        options["out_dir"] = Path(options["out_dir"])
    history = fit(spec, data, TrainConfig(**options), reporter=reporter)
    if options.get("out_dir") is not None:
        save_trained(options["out_dir"], history, data.info)  # out_dir becomes a model folder
    if reporter is not None:
        reporter.end_run(RunEnd.of(history))
    return history


def _train_bundle(spec: ModelSpec, data: Dataset, seeds: list[int], reporter: Reporter | None,
                  options: dict[str, Any]) -> list[History]:
    from mnistlab.training.bundle import fit_bundle, seed_dir

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


def open_store(root: str | Path = "mnistlab-runs", **leases: float | None) -> RunStore:
    """The run store in `root` (created if absent); close it, or use it in a `with` block.

    `leases`: `heartbeat_seconds` and `lease_seconds`, as `mnistlab run` takes them."""
    return RunStore(root, **leases)


def experiment(definition: str | Path | dict[str, Any] | Experiment) -> Experiment:
    """A built-in experiment name, an experiment file, a dict, or an Experiment → validated Experiment."""
    if isinstance(definition, Experiment):
        return parse_experiment(definition.to_dict())
    if isinstance(definition, dict):
        return parse_experiment(definition)
    return load_experiment(definition)[0]


def run(
    definition: str | Path | dict[str, Any] | Experiment,
    store: RunStore | str | Path = "mnistlab-runs",
    data_dir: str | Path | None = None,
    dataset: Dataset | None = None,
    bundle: int | str = 1,
    backend: str = "local",
    address: str | None = None,
    gpus_per_task: float | None = None,
    cpus_per_task: int | None = None,
    artifacts: str | Path | None = None,
    reporter_for: Callable[[Task], Reporter] | None = None,
) -> RunOutcome:
    """Train every (model, seed) of an experiment not already in the store, resuming interrupted ones.

    `bundle`: train up to this many seeds of a model together as one seed bundle ("auto": as many
    as fit in memory; 1: one run at a time). `backend="ray"` trains on a Ray cluster (`address`, or
    a private one on this machine) while this process alone writes the store; `gpus_per_task` /
    `cpus_per_task` are each task's share, `artifacts` a folder every worker reaches for checkpoints
    (default: the store's). `reporter_for(task)` gives each task's reporter (its epochs, and
    `end_run` when it finishes); `mnistlab.report.progress.task_reporters` makes the CLI's."""
    study = experiment(definition)
    placement = Placement(backend, address, gpus_per_task, cpus_per_task, artifacts)
    placement.check()  # a bad or silent cluster address is refused before a store is opened or created
    options = dict(data_dir=data_dir, dataset=dataset, bundle=bundle, placement=placement, reporter_for=reporter_for)
    if isinstance(store, RunStore):
        return run_experiment(study, store, **options)
    with RunStore(store) as opened:
        return run_experiment(study, opened, **options)


def load_model(source: str | Path | RunStore, run_id: int | str | None = None, device: str = "cpu",
               max_params: int | None = None) -> TrainedModel:
    """A trained model in inference mode: float32 images in [0, 1] ([N, 28, 28, 1], or [N, 784]
    for MLPs) in, probabilities out. `source` is a model folder (a run's artifacts folder or a
    `train --out` folder), or with `run_id` a run store (folder or RunStore). `max_params`: the
    parameter limit its spec is held to (default limits.MAX_PARAMS), for models trained with a raised one."""
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
    return model if isinstance(model, TrainedModel) else load_model(model)


def predict(model: TrainedModel | str | Path, images: ImagesLike) -> Predictions:
    """Class probabilities for arrays (uint8 0–255 or float 0–1; [28, 28], [N, 28, 28],
    [N, 28, 28, 1], [N, 784]) or files (PNG/JPEG converted as MNIST was made, .npy, IDX)."""
    return inference.predict(_trained(model), images)


def evaluate(
    model: TrainedModel | str | Path,
    dataset: str | Dataset | None = None,
    data_dir: str | Path | None = None,
    download: bool = False,
) -> Evaluation:
    """Test-set accuracy, loss and confusion matrix on `dataset` (default: the one the model was
    trained on); nothing is written anywhere."""
    trained = _trained(model)
    if not isinstance(dataset, Dataset):
        dataset = load_dataset(dataset or trained.info.dataset, data_dir=data_dir, download=download)
    return inference.evaluate(trained, dataset)


def export_model(model: TrainedModel | str | Path, path: str | Path, format: str = "onnx") -> Path:
    """Write the model as `format` (onnx, pt2 or safetensors) to `path`; it takes float32 images in
    [0, 1] shaped [N, 28, 28, 1] (or [N, 784] for MLPs), N dynamic, and returns probabilities."""
    return export.export_model(_trained(model), path, format)


def import_keras(path: str | Path) -> "ImportResult":
    """Keras model code (.py or .ipynb) → specs, read with `ast` and never executed.

    `result.specs` are validated specs; `result.skipped` lists each model that could not be
    translated, with the line of every problem (such models are skipped, never guessed).
    """
    from mnistlab.interop.keras_code_in import import_keras_code

    return import_keras_code(path)


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
                store: RunStore | str | Path = "mnistlab-runs") -> list[Any]:
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
    "History", "TrainConfig", "estimate", "evaluate", "experiment", "export_keras", "export_model", "export_runs", "import_keras",
    "import_keras_weights", "load_dataset", "load_keras_weights", "load_model", "model_spec", "open_store", "predict",
    "reproduction", "run", "train", "zoo_models",
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
