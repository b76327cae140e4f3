"""Using a trained model: class probabilities for images, and a fresh test-set evaluation."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mnistlab.data.datasets import IMAGE_SIZE, Dataset
from mnistlab.training.config import eval_batch_size
from mnistlab.training.engine import evaluate as evaluate_logits
from mnistlab.errors import MnistlabError
from mnistlab.data.images import Inputs, as_images, read_inputs
from mnistlab.trained.folder import TrainedModel

ImagesLike = Inputs | np.ndarray | torch.Tensor | str | Path | Sequence[str | Path]


@dataclass
class Predictions:
    """Class probabilities for N images, with each image's name and preprocessing note."""

    probabilities: np.ndarray  # float32 [N, classes]
    class_names: tuple[str, ...]
    names: list[str]
    notes: list[str | None]

    @property
    def classes(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)

    def top(self, index: int, k: int = 3) -> list[tuple[int, str, float]]:
        """The k likeliest (class, name, probability) for image `index`, likeliest first."""
        row = self.probabilities[index]
        order = np.argsort(-row, kind="stable")[:k]
        return [(int(c), self.class_names[c], float(row[c])) for c in order]

    def to_json(self, k: int = 3) -> list[dict[str, Any]]:
        out = []
        for index, name in enumerate(self.names):
            best = self.top(index, k)
            out.append({
                "input": name, "note": self.notes[index], "class": best[0][0], "class_name": best[0][1],
                "top": [{"class": c, "class_name": n, "probability": p} for c, n, p in best],
            })
        return out


def _inputs(images: ImagesLike) -> Inputs:
    if isinstance(images, Inputs):
        return images
    if isinstance(images, (str, Path)):
        return read_inputs(images)
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    if isinstance(images, np.ndarray):
        array = as_images(images, "images")
        return Inputs(array, [f"[{i}]" for i in range(len(array))])
    paths = list(images)
    if not paths:
        raise MnistlabError("predict: no inputs given")
    return Inputs.join([read_inputs(p) for p in paths])


def model_layout(model: TrainedModel, images: np.ndarray) -> torch.Tensor:
    """float32 [N, 28, 28] → the model's input layout ([N, 28, 28, 1] or [N, 784])."""
    if math.prod(model.input_shape) != IMAGE_SIZE * IMAGE_SIZE:
        raise MnistlabError(f"{model.describe()}: takes input {list(model.input_shape)}, "
                            f"not {IMAGE_SIZE}×{IMAGE_SIZE} images")
    return torch.from_numpy(np.ascontiguousarray(images)).reshape(len(images), *model.input_shape)


@torch.inference_mode()
def predict(model: TrainedModel, images: ImagesLike) -> Predictions:
    """Probabilities for images: arrays (uint8 0–255 or float 0–1; [28, 28], [N, 28, 28],
    [N, 28, 28, 1] or [N, 784]), or files (PNG/JPEG, .npy, IDX), one path or a list."""
    inputs = _inputs(images)
    device = next(model.parameters()).device
    x = model_layout(model, inputs.images)
    size = eval_batch_size(model.network.resolved, device, len(x))
    parts = [model(x[start : start + size].to(device)).float().cpu() for start in range(0, len(x), size)]
    probabilities = torch.cat(parts).numpy()
    return Predictions(probabilities, model.class_names, inputs.names, inputs.notes)


@dataclass
class Evaluation:
    """A model's test-set figures on one dataset, computed afresh (the store is not touched)."""

    model: str
    trained_on: str
    dataset: str
    images: int
    accuracy: float
    loss: float
    class_names: tuple[str, ...]
    confusion: np.ndarray  # [true class, predicted class] counts

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model, "trained_on": self.trained_on, "dataset": self.dataset, "images": self.images,
            "accuracy": self.accuracy, "loss": self.loss, "class_names": list(self.class_names),
            "confusion_matrix": self.confusion.tolist(),
        }


def evaluate(model: TrainedModel, dataset: Dataset) -> Evaluation:
    """Accuracy, mean cross-entropy and the confusion matrix on the dataset's test set, computed
    exactly as training's final test evaluation is (engine.evaluate)."""
    classes = len(model.class_names)
    if len(dataset.info.class_names) != classes:
        raise MnistlabError(f"dataset {dataset.info.name} has {len(dataset.info.class_names)} classes; "
                            f"{model.describe()} predicts {classes}")
    device = next(model.parameters()).device
    labels = dataset.test_labels.to(device)
    loss_sum, correct, predicted = evaluate_logits(model.network, dataset.test_images.to(device), labels, "fp32")
    confusion = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(confusion, (labels.cpu().numpy(), predicted.cpu().numpy()), 1)
    n = len(labels)
    return Evaluation(
        model=model.spec.id, trained_on=model.info.dataset, dataset=dataset.info.name, images=n,
        accuracy=correct.item() / n, loss=loss_sum.item() / n, class_names=tuple(dataset.info.class_names),
        confusion=confusion,
    )
