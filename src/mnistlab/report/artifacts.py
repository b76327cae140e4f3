"""What a report reads besides the tables: test-set predictions and trained weights."""

from __future__ import annotations

import json
from collections.abc import Iterable

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file

from mnistlab.analysis.ranking import Predictions
from mnistlab.errors import ArtifactError, MnistlabError
from mnistlab.report.frame import query_frame
from mnistlab.runs.store import RunStore

__all__ = ["WEIGHTS_FILE", "WEIGHTS_ORDER_FILE", "load_predictions", "load_weights"]

WEIGHTS_FILE = "weights.safetensors"
WEIGHTS_ORDER_FILE = "weights.json"

# json_each turns one JSON list parameter into rows, so any number of runs is one query and
# SQLite's limit on bound variables never applies.
SQL_PREDICTIONS = """
    SELECT run_id, n, labels, predicted FROM predictions
    WHERE run_id IN (SELECT value FROM json_each(?))
"""

def load_predictions(store: RunStore, run_ids: Iterable[int],
                     damaged: dict[int, str] | None = None) -> dict[int, Predictions]:
    """``{run_id: (labels, predicted)}`` (uint8 arrays) for those of ``run_ids`` that stored
    predictions, read in one query.

    Damaged predictions raise ArtifactError, or with ``damaged`` are left out and described
    there (``{run_id: what is wrong}``), so a report can say so and go on."""
    ids = sorted({int(run_id) for run_id in run_ids})
    frame = query_frame(store, SQL_PREDICTIONS, (json.dumps(ids),))
    result = {}
    for row in frame.itertuples(index=False):
        labels = np.frombuffer(row.labels, dtype=np.uint8)
        predicted = np.frombuffer(row.predicted, dtype=np.uint8)
        if len(labels) != row.n or len(predicted) != row.n:
            problem = (f"{store.path}: the test predictions of run {row.run_id} are damaged "
                       f"({len(labels)} labels and {len(predicted)} predictions where {row.n} were stored)")
            if damaged is None:
                raise ArtifactError(problem)
            damaged[int(row.run_id)] = problem
            continue
        result[int(row.run_id)] = (labels, predicted)
    return result


def load_weights(store: RunStore, run_id: int) -> dict[str, np.ndarray]:
    """The run's saved kernels, ``{layer name: float32 array}`` in model order.

    safetensors does not keep the order tensors were saved in, so the order comes from the
    ``weights.json`` written beside it: ``{"layers": ["conv2d_1", ...]}``. Runs that kept their
    whole model (a model folder, see trained/folder.py) give the kernels of that model instead.
    """
    folder = store.run_dir(run_id, create=False)
    from mnistlab.trained.folder import WEIGHTS_ELSEWHERE, is_model_folder, load_model_folder  # torch only when needed

    if not folder.is_dir() or not any(folder.iterdir()):  # not damage: an archive brought the run without them
        raise MnistlabError(f"run {run_id}: {WEIGHTS_ELSEWHERE}")

    if is_model_folder(folder):
        try:
            network = load_model_folder(folder).network
        except MnistlabError as error:  # the folder's own one-line reason, kept as the damage
            raise ArtifactError(f"damaged model folder: {error}") from None
        return {name: kernel.detach().float().numpy() for name, kernel in network.weighted_layers()}
    tensors_path, order_path = folder / WEIGHTS_FILE, folder / WEIGHTS_ORDER_FILE
    for path in (tensors_path, order_path):
        if not path.is_file():
            raise MnistlabError(f"run {run_id} has no {path.name} in {folder}")
    try:
        tensors = load_file(tensors_path)
    except (OSError, SafetensorError) as error:
        raise ArtifactError(f"{tensors_path}: damaged weights file ({error})") from None
    try:
        order = json.loads(order_path.read_bytes().decode("utf-8"))["layers"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as error:
        raise ArtifactError(f"{order_path}: damaged layer list ({type(error).__name__}: {error})") from None
    if not isinstance(order, list) or not all(isinstance(name, str) for name in order):
        raise ArtifactError(f"{order_path}: damaged layer list (not a list of layer names)")
    if sorted(order) != sorted(tensors):
        raise ArtifactError(f"{order_path}: lists layers {order} but {tensors_path.name} "
                            f"holds {sorted(tensors)}")
    return {name: tensors[name] for name in order}
