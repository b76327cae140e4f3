"""The entry points for trained models (find, load, predict, evaluate, export) and for Keras code and
weights in and out."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnistlab.util.atomic import check_target, write_text
from mnistlab.data.datasets import Dataset, load_dataset
from mnistlab.errors import DataError, EnvironmentFailure, MnistlabError
from mnistlab.runs.manage import find_run
from mnistlab.runs.store import DEFAULT_ROOT, RunStore, open_existing_store
from mnistlab.util.strict import whole_number
from mnistlab.api.studies import model_spec

if TYPE_CHECKING:
    from mnistlab.interop.keras_objects import ImportResult
    from mnistlab.nn.build import KerasModel
    from mnistlab.spec.model import ModelSpec
    from mnistlab.trained.folder import TrainedModel
    from mnistlab.trained.inference import Evaluation, ImagesLike, Predictions

__all__ = ["check_datasets", "evaluate", "export_keras", "export_model", "find_model", "import_keras", "import_keras_weights", "load_keras_weights", "load_model", "predict", "write_specs"]


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
