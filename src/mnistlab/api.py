"""The Python entry points a notebook uses; the CLI calls exactly these."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mnistlab import export, inference
from mnistlab.data import Dataset, load_dataset
from mnistlab.engine import History, Reporter, TrainConfig, fit
from mnistlab.errors import MnistlabError
from mnistlab.experiment import Experiment, load_experiment, parse_experiment
from mnistlab.inference import Evaluation, ImagesLike, Predictions
from mnistlab.models_io import TrainedModel, load_model_folder, open_existing_store, run_model_folder, save_trained
from mnistlab.runner import RunOutcome, run_experiment
from mnistlab.store import RunStore
from mnistlab.spec import ModelSpec, parse_model
from mnistlab.zoo import get_model, zoo_models


def model_spec(model: str | ModelSpec | dict[str, Any]) -> ModelSpec:
    """A zoo id, a spec file (`file.yaml[:ID]`), a spec dict, or a ModelSpec → validated ModelSpec."""
    if isinstance(model, ModelSpec):
        return parse_model(model.to_dict())  # re-validated: a hand-built spec gets the same checks
    if isinstance(model, dict):
        return parse_model(model)
    return get_model(model)


def train(
    model: str | ModelSpec | dict[str, Any],
    dataset: str | Dataset = "mnist",
    data_dir: str | Path | None = None,
    download: bool = False,
    reporter: Reporter | None = None,
    **options: Any,
) -> History:
    """Train one model; `options` are TrainConfig fields (epochs, batch_size, seed, device, ...)."""
    spec = model_spec(model)
    data = dataset if isinstance(dataset, Dataset) else load_dataset(dataset, data_dir=data_dir, download=download)
    if options.get("out_dir") is not None:
        options["out_dir"] = Path(options["out_dir"])
    history = fit(spec, data, TrainConfig(**options), reporter=reporter)
    if options.get("out_dir") is not None:
        save_trained(options["out_dir"], history, data.info)  # out_dir becomes a model folder
    return history


def open_store(root: str | Path = "mnistlab-runs") -> RunStore:
    """The run store in `root` (created if absent); close it, or use it in a `with` block."""
    return RunStore(root)


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
) -> RunOutcome:
    """Train every (model, seed) of an experiment not already in the store, resuming interrupted ones."""
    study = experiment(definition)
    if isinstance(store, RunStore):
        return run_experiment(study, store, data_dir=data_dir, dataset=dataset)
    with RunStore(store) as opened:
        return run_experiment(study, opened, data_dir=data_dir, dataset=dataset)


def load_model(source: str | Path | RunStore, run_id: int | str | None = None, device: str = "cpu") -> TrainedModel:
    """A trained model in inference mode: float32 images in [0, 1] ([N, 28, 28, 1], or [N, 784]
    for MLPs) in, probabilities out. `source` is a model folder (a run's artifacts folder or a
    `train --out` folder), or with `run_id` a run store (folder or RunStore)."""
    if isinstance(run_id, str):
        if not run_id.strip().isdigit():
            raise MnistlabError(f"run_id {run_id!r}: a run id is a number (`mnistlab ls EXPERIMENT` lists them)")
        run_id = int(run_id)
    if run_id is None:
        if isinstance(source, RunStore):
            raise MnistlabError(f"{source.root}: give the run_id of the run whose model to load")
        return load_model_folder(source, device)
    if isinstance(source, RunStore):
        return load_model_folder(run_model_folder(source, run_id), device)
    with open_existing_store(source) as store:
        return load_model_folder(run_model_folder(store, run_id), device)


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


__all__ = [
    "History", "TrainConfig", "evaluate", "experiment", "export_model", "load_dataset", "load_model", "model_spec",
    "open_store", "predict", "run", "train", "zoo_models",
]
