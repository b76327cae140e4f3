"""Keras weights in: a Keras 2 HDF5 weights file (`save_weights('x.h5')` or `save('x.h5')`) loaded
into the PyTorch model of a spec, so a model trained in Keras can be used here.

Layouts differ: a Conv2D kernel is (H, W, in, out) in Keras and (out, in, H, W) in PyTorch; a
Dense kernel is (in, out) against (out, in); BatchNormalization's gamma, beta, moving_mean and
moving_variance are weight, bias, running_mean and running_var. And Keras flattens images in
(H, W, C) order where the PyTorch model flattens (C, H, W): the features after a Flatten are
permuted, so the first Dense after it (and a BatchNormalization between them) gets its rows
reordered. Keras layers are matched to the spec's by name when the spec names every weighted layer
and the file has those names (functional models, exported code), else by their order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from mnistlab.nn.build import KerasModel, build_model
from mnistlab.errors import MnistlabError
from mnistlab.spec.layers import BatchNormalization, Concatenate, Conv2D, Dense, Flatten
from mnistlab.spec.model import ModelSpec, Node, resolve

_WEIGHTED = (Conv2D, Dense, BatchNormalization)
# Keras array name → the PyTorch tensor it becomes.
_TORCH_NAMES = {"kernel": "weight", "bias": "bias", "gamma": "weight", "beta": "bias",
                "moving_mean": "running_mean", "moving_variance": "running_var"}


def _h5py() -> Any:
    try:
        import h5py
    except ImportError:
        raise MnistlabError("reading Keras weights needs mnistlab[keras]: pip install 'mnistlab[keras]'") from None
    return h5py


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


# HDF5 filters that only decode the file's own bytes (gzip, shuffle, fletcher32, lzf); any other
# (szip, n-bit, scale-offset, plugins) runs code or transforms values this reader does not vouch for.
_SAFE_FILTERS = {1: "gzip", 2: "shuffle", 3: "fletcher32", 32000: "lzf"}
_MAX_RANK = 4  # a Conv2D kernel, the highest-rank array a spec has


def _names(value: Any, where: str) -> list[str]:
    """An attribute that must be a list of names (`layer_names`, `weight_names`)."""
    array = np.asarray(value)
    if array.ndim != 1 or not all(isinstance(v, (bytes, str, np.bytes_, np.str_)) for v in array):
        raise MnistlabError(f"{where}: must be a list of names, not {value!r:.60}")
    return [_text(v) for v in array]


def _member(group: Any, name: str, root: str, where: str, h5py: Any) -> Any:
    """``group[name]`` followed one path component at a time, refusing links that leave the file
    (external links) or the group being read (soft links elsewhere): a file is read as data."""
    node = group
    for part in (p for p in name.split("/") if p):
        link = node.get(part, getlink=True)
        if link is None:
            raise MnistlabError(f"{where}: names '{name}', which the file does not hold")
        if isinstance(link, h5py.ExternalLink):
            raise MnistlabError(f"{where}: '{name}' is an external link to {link.filename!r}; refused "
                                "(weights are read from this file only)")
        if isinstance(link, h5py.SoftLink) and not (link.path + "/").startswith(root.rstrip("/") + "/"):
            raise MnistlabError(f"{where}: '{name}' is a soft link to {link.path!r}, outside {root!r}; refused")
        node = node[part]
    return node


def _checked_dataset(node: Any, where: str, largest: int | None, h5py: Any) -> Any:
    """A dataset whose storage is plain data in this file, of a size the spec can hold: checked from
    its header before a byte of it is read."""
    if not isinstance(node, h5py.Dataset):
        raise MnistlabError(f"{where}: is not a dataset")
    if node.external:
        raise MnistlabError(f"{where}: has external storage ({node.external[0][0]!r}); refused "
                            "(weights are read from this file only)")
    if node.is_virtual:
        raise MnistlabError(f"{where}: is a virtual dataset (it maps other files); refused")
    plist = node.id.get_create_plist()
    for index in range(plist.get_nfilters()):
        code = plist.get_filter(index)[0]
        if code not in _SAFE_FILTERS:
            raise MnistlabError(f"{where}: uses HDF5 filter {code}; only {', '.join(_SAFE_FILTERS.values())} are read")
    if node.dtype.kind not in "fiu":
        raise MnistlabError(f"{where}: holds {node.dtype}, not numbers")
    if node.ndim > _MAX_RANK or (largest is not None and node.size > largest):
        raise MnistlabError(f"{where}: declares shape {list(node.shape)} ({node.size:,} values), larger than any "
                            "tensor of the model; refused before reading")
    return node


def read_keras_h5(path: str | Path, largest: int | None = None) -> list[tuple[str, dict[str, np.ndarray]]]:
    """(layer name, {array name: array}) for each Keras layer that has weights, in the file's order.

    ``largest``: the most values any array may declare (the spec's largest tensor); every dataset's
    header is checked against it, and its storage and links, before it is read."""
    h5py = _h5py()
    path = Path(path)
    if not path.is_file():
        raise MnistlabError(f"{path}: no such file")
    try:
        with h5py.File(path, "r") as handle:
            group = handle["model_weights"] if "model_weights" in handle else handle
            if "layer_names" not in group.attrs:
                raise MnistlabError(f"{path}: not a Keras 2 HDF5 weights file (no 'layer_names'); "
                                    "save it with tf_keras / Keras 2 as model.save_weights('weights.h5')")
            layers = []
            for layer_name in _names(group.attrs["layer_names"], f"{path}: attribute 'layer_names'"):
                layer = _member(group, layer_name, group.name, f"{path}: 'layer_names'", h5py)
                arrays: dict[str, np.ndarray] = {}
                weight_names = _names(layer.attrs.get("weight_names", []), f"{path}: layer '{layer_name}': 'weight_names'")
                for weight_name in weight_names:
                    where = f"{path}: dataset '{layer_name}/{weight_name}'"
                    node = _checked_dataset(_member(layer, weight_name, group.name, where, h5py), where, largest, h5py)
                    short = weight_name.split("/")[-1].split(":")[0]
                    arrays[short] = np.asarray(node, dtype=np.float32)
                if arrays:
                    layers.append((layer_name, arrays))
            return layers
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise MnistlabError(f"{path}: not a readable HDF5 file ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None


def _feature_orders(spec: ModelSpec) -> dict[str, np.ndarray | None]:
    """For each node: None, or the permutation taking its flat Keras (H, W, C) features to PyTorch's
    (C, H, W) order (torch_features = keras_features[order]), carried from a Flatten to the Dense."""
    orders: dict[str, np.ndarray | None] = {"input": None}
    for node in resolve(spec).nodes:
        incoming = [orders[name] for name in node.inputs]
        if isinstance(node.layer, Flatten):
            height, width, channels = node.input_shapes[0] if len(node.input_shapes[0]) == 3 else (1, 1, 1)
            c, h, w = np.meshgrid(np.arange(channels), np.arange(height), np.arange(width), indexing="ij")
            order = ((h * width + w) * channels + c).reshape(-1)
            orders[node.name] = order if len(node.input_shapes[0]) == 3 else None
        elif isinstance(node.layer, (Dense, Conv2D)):
            orders[node.name] = None
        elif isinstance(node.layer, Concatenate) and any(o is not None for o in incoming):
            raise MnistlabError(f"model '{spec.id}': layer {node.name}: concatenating flattened image features "
                                "is not supported when loading Keras weights")
        else:
            orders[node.name] = incoming[0] if incoming else None
    return orders


def _convert(node: Node, arrays: dict[str, np.ndarray], order: np.ndarray | None) -> dict[str, np.ndarray]:
    """Keras arrays of one layer → PyTorch tensors by PyTorch name."""
    out: dict[str, np.ndarray] = {}
    for name, array in arrays.items():
        if name not in _TORCH_NAMES:
            raise ValueError(f"holds an array '{name}' mnistlab has no place for")
        if name == "kernel" and isinstance(node.layer, Conv2D):
            array = array.transpose(3, 2, 0, 1)  # (H, W, in, out) → (out, in, H, W)
        elif name == "kernel":
            array = (array[order] if order is not None else array).T  # (in, out) → (out, in)
        elif order is not None and isinstance(node.layer, BatchNormalization):
            array = array[order]
        out[_TORCH_NAMES[name]] = np.ascontiguousarray(array)
    return out


def load_keras_weights(spec: ModelSpec, path: str | Path) -> KerasModel:
    """The spec's PyTorch model (inference mode) holding the weights of a Keras HDF5 file."""
    path = Path(path)
    network = build_model(spec)
    largest = max((tensor.numel() for tensor in network.state_dict().values()), default=0)
    keras_layers = read_keras_h5(path, largest)
    resolved = network.resolved
    weighted = [(index, node) for index, node in enumerate(resolved.nodes) if isinstance(node.layer, _WEIGHTED)]
    by_name = dict(keras_layers)
    # By name only where the spec names its layers: automatic names differ between Keras versions
    # (Keras 2.2 starts at conv2d_1, tf.keras at conv2d) and would pair the wrong layers.
    if all(node.layer.name is not None and node.name in by_name for _, node in weighted):
        pairs = [(index, node, node.name, by_name[node.name]) for index, node in weighted]
    elif len(keras_layers) == len(weighted):
        pairs = [(index, node, name, arrays) for (index, node), (name, arrays) in zip(weighted, keras_layers)]
    else:
        raise MnistlabError(f"{path}: holds {len(keras_layers)} layers with weights; model '{spec.id}' has "
                            f"{len(weighted)} (Conv2D, Dense, BatchNormalization) and their names differ")
    orders = _feature_orders(spec)
    state = network.state_dict()
    for index, node, keras_name, arrays in pairs:
        where = f"{path}: Keras layer '{keras_name}' for layer {node.name} ({node.layer.type})"  # type: ignore[attr-defined]
        try:
            tensors = _convert(node, arrays, orders[node.inputs[0]])
        except (ValueError, IndexError) as exc:
            raise MnistlabError(f"{where}: {exc}") from None
        module_keys = [key for key in state if key.startswith(f"layers.{index}.")]
        expected = {key.rsplit(".", 1)[-1]: key for key in module_keys if not key.endswith("num_batches_tracked")}
        if set(tensors) != set(expected):
            raise MnistlabError(f"{where}: has {sorted(arrays)}, the model needs {sorted(expected)} "
                                "(BatchNormalization with center or scale off is not supported)")
        for name, array in tensors.items():
            target = state[expected[name]]
            if tuple(array.shape) != tuple(target.shape):
                raise MnistlabError(f"{where}: '{name}' has shape {list(array.shape)} in PyTorch layout, "
                                    f"the model needs {list(target.shape)}")
            if not np.isfinite(array).all():
                raise MnistlabError(f"{where}: '{name}' holds NaN or infinite values")
            state[expected[name]] = torch.from_numpy(array).to(target.dtype)
    network.load_state_dict(state)
    return network.eval()


# --- the model folder ----------------------------------------------------------------------------

def write_model_folder(folder: str | Path, network: KerasModel, source: Path) -> Path:
    """Write `network` as a model folder (predict, evaluate and export read it); the format's one
    home is trained.folder."""
    from mnistlab.data.datasets import DATASETS
    from mnistlab.trained.folder import save_model

    return save_model(folder, network, DATASETS["mnist"], 0, {"source": f"Keras weights {source.name}"})


__all__ = ["load_keras_weights", "read_keras_h5", "write_model_folder"]
