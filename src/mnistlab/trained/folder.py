"""The model folder: a trained model's full state beside the spec that made it.

A model folder holds two files:

- ``model.safetensors``: every parameter and buffer (BatchNormalization's moving statistics
  included), keyed ``<keras layer name>.<tensor>`` (``conv2d_1.weight``,
  ``batch_normalization_1.running_var``) in PyTorch's layouts (Conv2D weight
  ``[out, in, kh, kw]``, Dense weight ``[out, in]``; a Dense after Flatten reads features in
  ``(C, H, W)`` order). Keras layer names, not ``state_dict`` paths, so the format does not
  depend on how build.py arranges its modules.
- ``model.json``: the format and its version, the spec (``ModelSpec.to_dict()``), the dataset
  and its class names, the seed, the final metrics and the package versions. It is written
  last, by rename, so it is the commit point: a folder with a ``model.json`` is complete.

A completed run's artifacts folder is a model folder, and so is ``mnistlab train --out DIR``.
``load_model_folder`` checks the JSON, rebuilds the spec and checks every tensor's name,
shape, dtype and finiteness before loading, so a damaged folder is one line naming the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from mnistlab.data.datasets import DatasetInfo
from mnistlab.errors import MnistlabError
from mnistlab.nn.build import KerasModel, build_model
from mnistlab.spec.model import ModelSpec
from mnistlab.spec.parse import parse_model
from mnistlab.training.history import COMPLETED, DIVERGED, History
from mnistlab.training.limits import Limits, check_params, check_seed
from mnistlab.util.atomic import check_target, write_atomically
from mnistlab.util.machine import package_versions

if TYPE_CHECKING:  # the store is the runs layer's, above this one: only its type is needed here
    from mnistlab.runs.store import RunStore

MODEL_JSON = "model.json"
MODEL_TENSORS = "model.safetensors"
FORMAT = "mnistlab-model"
FORMAT_VERSION = 1
# A completed run with no files at all: its results came from an archive made without --with-models.
WEIGHTS_ELSEWHERE = ("weights not in this store (its run folder is absent, as for a run imported from an archive "
                     "made without --with-models: import one made with it to use the model)")


class ModelInfo(BaseModel):
    """What ``model.json`` holds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["mnistlab-model"]
    version: int
    spec: dict[str, Any]
    dataset: str
    class_names: tuple[str, ...]
    seed: int
    metrics: dict[str, float | int | str | None] = {}
    versions: dict[str, str] = {}


# --- tensors keyed by Keras layer name ------------------------------------------------------


def _layer_entries(network: KerasModel) -> list[tuple[str, str]]:
    """(file key, state_dict key) for every parameter and buffer, in model order."""
    entries = []
    for index, node in enumerate(network.resolved.nodes):
        for key in network.layers[index].state_dict():
            # Each layer holds at most one module with state (its conv, linear or batch norm),
            # so the tensor's own name is unique within the layer.
            entries.append((f"{node.name}.{key.rsplit('.', 1)[-1]}", f"layers.{index}.{key}"))
    return entries


def layer_state(network: KerasModel) -> dict[str, torch.Tensor]:
    """The model's full state keyed by Keras layer name, on the CPU."""
    state = network.state_dict()
    return {name: state[key].detach().cpu().contiguous() for name, key in _layer_entries(network)}


def load_layer_state(network: KerasModel, tensors: dict[str, torch.Tensor], source: Path | str) -> None:
    """Load tensors keyed by layer name into `network`, checking names, shapes, dtypes, values."""
    state = network.state_dict()
    entries = _layer_entries(network)
    expected = {name for name, _ in entries}
    missing = [name for name, _ in entries if name not in tensors]
    if missing:
        raise MnistlabError(f"{source}: lacks tensor '{missing[0]}' of model '{network.spec.id}'"
                            f" ({len(missing)} missing); the file does not belong to this spec or is damaged")
    unexpected = sorted(set(tensors) - expected)
    if unexpected:
        raise MnistlabError(f"{source}: holds tensor '{unexpected[0]}' that model '{network.spec.id}' does not have")
    loaded = {}
    for name, key in entries:
        tensor, want = tensors[name], state[key]
        if tuple(tensor.shape) != tuple(want.shape):
            raise MnistlabError(f"{source}: tensor '{name}' has shape {list(tensor.shape)}, "
                                f"model '{network.spec.id}' needs {list(want.shape)}")
        if tensor.dtype != want.dtype:
            raise MnistlabError(f"{source}: tensor '{name}' is {tensor.dtype}, expected {want.dtype}")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise MnistlabError(f"{source}: tensor '{name}' holds NaN or infinite values")
        loaded[key] = tensor
    network.load_state_dict(loaded)


# --- the model users load -------------------------------------------------------------------


class TrainedModel(nn.Module):
    """A trained model ready for inference: images as Keras users hold them in, probabilities out.

    Input: float32 in [0, 1], ``[N, H, W, C]`` (``[N, 28, 28, 1]``) for models whose spec input
    is an image, ``[N, features]`` (``[N, 784]``) for MLPs. Output: ``[N, classes]``
    probabilities. The network's own forward returns logits (build.py leaves the final softmax
    to the loss), so the softmax is applied here.
    """

    def __init__(self, network: KerasModel, info: ModelInfo, source: Path | None = None) -> None:
        super().__init__()
        self.network = network
        self.info = info
        self.source = source
        self.requires_grad_(False)
        self.eval()

    @property
    def spec(self) -> ModelSpec:
        return self.network.spec

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.info.class_names

    def about(self) -> dict[str, Any]:
        """Which model this is, as predict's --json names it: spec id, seed, dataset and the folder it came from."""
        return {"id": self.spec.id, "seed": self.info.seed, "dataset": self.info.dataset, "source": str(self.source)}

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One image's shape in Keras's layout: (H, W, C) or (features,)."""
        return tuple(self.network.input_shape)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2) if len(self.input_shape) == 3 else images
        return self.network(x)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.softmax(self.logits(images), dim=1)

    def describe(self) -> str:
        """One line naming the model: spec id, seed, dataset and where it was loaded from."""
        where = f" from {self.source}" if self.source is not None else ""
        return f"model '{self.spec.id}' (seed {self.info.seed}, trained on {self.info.dataset}){where}"


# --- writing and reading a folder -----------------------------------------------------------


def save_model(folder: Path | str, network: KerasModel, dataset: DatasetInfo, seed: int,
               metrics: dict[str, Any], versions: dict[str, str] | None = None) -> Path:
    """Write `network` as a model folder (tensors first, then the JSON that commits them).

    `versions`: the packages and machine that trained it (util.machine.package_versions on the machine
    that trained, which for a Ray run is a worker, not this process); None: this process's, on a CPU."""
    folder = Path(folder)
    check_target(folder, folder=True)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = layer_state(network)
    info = ModelInfo(
        format=FORMAT, version=FORMAT_VERSION, spec=network.spec.to_dict(), dataset=dataset.name,
        class_names=tuple(dataset.class_names), seed=seed,
        metrics=metrics, versions=versions if versions is not None else package_versions(),
    )
    write_atomically(folder / MODEL_TENSORS, lambda tmp: save_file(tensors, str(tmp), metadata={"format": FORMAT}))
    text = json.dumps(info.model_dump(mode="json"), indent=1)
    write_atomically(folder / MODEL_JSON, lambda tmp: tmp.write_text(text))
    return folder


def save_trained(folder: Path | str, history: History, dataset: DatasetInfo,
                 versions: dict[str, str] | None = None) -> Path | None:
    """Keep a finished training's model; None when it diverged (its weights are not finite).

    `versions`: as save_model's; None: this process's, on the device the history trained on."""
    if history.status != COMPLETED or history.model is None:
        return None
    metrics = {"test_loss": history.test_loss, "test_acc": history.test_acc, "epochs": len(history.epochs),
               "protocol": history.protocol}
    return save_model(folder, history.model, dataset, history.seed, metrics,
                      versions if versions is not None else package_versions(history.device))


def is_model_folder(path: Path | str) -> bool:
    return (Path(path) / MODEL_JSON).is_file()


def read_model_info(folder: Path | str) -> ModelInfo:
    """The checked contents of a folder's model.json."""
    path = Path(folder) / MODEL_JSON
    if not path.is_file():
        raise MnistlabError(f"{folder}: not a model folder (no {MODEL_JSON}); "
                            "give a run id or a folder written by a run or by `mnistlab train --out`")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise MnistlabError(f"{path}: cannot be read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise MnistlabError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg}); the file is damaged") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise MnistlabError(f"{path}: not an mnistlab model file (no \"format\": \"{FORMAT}\")")
    version = raw.get("version")
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise MnistlabError(f"{path}: model format version {version} is newer than this mnistlab reads "
                            f"({FORMAT_VERSION}); upgrade mnistlab")
    try:
        info = ModelInfo.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"]) or "?"
        raise MnistlabError(f"{path}: field '{field}': {error['msg']}") from None
    if info.version != FORMAT_VERSION:
        raise MnistlabError(f"{path}: model format version {info.version} is not recognised")
    return info


def load_model_folder(folder: Path | str, device: str | torch.device = "cpu", max_params: int | None = None) -> TrainedModel:
    """Rebuild and load a model folder as a TrainedModel in inference mode.

    The folder's spec is held to the same limits as any spec (``max_params``, default
    limits.MAX_PARAMS, for folders trained with raised limits) before its model is built."""
    folder = Path(folder)
    info = read_model_info(folder)
    where = str(folder / MODEL_JSON)
    check_seed(info.seed, where)
    spec = parse_model(info.spec, folder / MODEL_JSON)  # spec errors name the file
    check_params(spec, Limits(max_params))
    network = build_model(spec, seed=info.seed)
    outputs = network.resolved.nodes[-1].output_shape[0]
    if len(info.class_names) != outputs:
        raise MnistlabError(f"{folder / MODEL_JSON}: field 'class_names': {len(info.class_names)} names "
                            f"for a model with {outputs} outputs")
    tensor_path = folder / MODEL_TENSORS
    if not tensor_path.is_file():
        raise MnistlabError(f"{tensor_path}: missing; the model folder is incomplete")
    try:
        # safetensors checks every tensor's declared offsets against the file's real size before it
        # maps anything, so a header claiming gigabytes over a small file is refused, not allocated.
        tensors = load_file(str(tensor_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise MnistlabError(f"{tensor_path}: cannot be read ({str(exc).splitlines()[0]}); the file is damaged") from None
    load_layer_state(network, tensors, tensor_path)
    return TrainedModel(network.to(device), info, source=folder)


def run_model_folder(store: RunStore, run_id: int) -> Path:
    """The model folder of a stored run, or one line saying why it has none."""
    record = store.get_run(run_id)
    label = f"run {run_id} ({record.model_id}, seed {record.seed})"
    if record.status == DIVERGED:
        raise MnistlabError(f"{store.path}: {label} diverged; no model was kept")
    if record.status != COMPLETED:
        raise MnistlabError(f"{store.path}: {label} is {record.status}; it has no trained model yet")
    folder = store.run_dir(run_id, create=False)
    if not folder.is_dir() or not any(folder.iterdir()):  # imported from an archive without --with-models
        raise MnistlabError(f"{store.path}: {label}: {WEIGHTS_ELSEWHERE}")
    if not is_model_folder(folder):
        raise MnistlabError(f"{folder}: {label} has no {MODEL_JSON}; it was trained before mnistlab kept "
                            "whole models (only its kernels are stored); train it again to use it")
    return folder
