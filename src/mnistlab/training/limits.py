"""Checks that run before any model is built: does the spec fit the data, the generators and memory?

A spec can be valid on its own and still be untrainable here: an input shape that the dataset's
images cannot take, a last layer with the wrong number of classes, a seed the generators cannot
hold, or a layer so wide that training dies with "can't allocate memory" after the run is already
stored. Each of these is one line naming the file, model, layer and field, before anything runs.

The size limits are named, and overridable per run:
- ``MAX_PARAMS``: parameters (trainable and not) a model may have.
- ``MAX_ACTIVATION_MIB``: float32 activations of one training batch (every layer's output times the
  batch size), in MiB; the backward pass keeps about this much alive, so it bounds memory.
Override with ``TrainConfig(max_params=..., max_activation_mib=...)``, ``mnistlab train --max-params N
--max-activation-mib N``, or an experiment's ``defaults: {max_params: N, max_activation_mib: N}``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnistlab.util.atomic import check_target
from mnistlab.data.datasets import DATASETS, Dataset, custom_dataset_info, dataset_info, present_files
from mnistlab.data.idx import read_image_header
from mnistlab.errors import MnistlabError, SpecError, did_you_mean
from mnistlab.training.precision import COMPILE_MODES, PRECISIONS
from mnistlab.spec.fields import SEED_BOUND
from mnistlab.spec.layers import format_shape
from mnistlab.spec.model import ModelSpec, Node, layer_label, model_location, resolve

# The largest zoo model (s002-m10) has 38 M parameters; the most activations, 245 MiB a batch
# (s000-m9 at batch size 128). These leave room for models several times larger while refusing
# ones that cannot be allocated on an ordinary machine (200 M float32 parameters are 0.8 GB,
# about 3.2 GB with gradients and Adam's two moments).
MAX_PARAMS = 200_000_000
MAX_ACTIVATION_MIB = 8 * 1024
# Factor grids (factors.py): the zoo's deepest model has 21 layers and the built-in grids at most a
# few dozen variants. These refuse, in milliseconds, levels and grids that would fill memory while
# being built (depth 10**6, or 10**8 variants). Raise MAX_VARIANTS per experiment with
# `defaults: {max_variants: N}`.
MAX_LAYERS = 1_000
MAX_VARIANTS = 1_000
FLOAT_BYTES = 4  # activations are kept in float32 (bf16 autocast still keeps float32 masters)


@dataclass(frozen=True)
class Limits:
    """The size limits one run is held to (None: the module defaults, read at call time)."""

    max_params: int | None = None
    max_activation_mib: int | None = None

    @property
    def params(self) -> int:
        return self.max_params if self.max_params is not None else MAX_PARAMS

    @property
    def activation_mib(self) -> int:
        return self.max_activation_mib if self.max_activation_mib is not None else MAX_ACTIVATION_MIB


@dataclass(frozen=True)
class DataShape:
    """What a model must fit: the dataset's name, its (height, width) grayscale images and classes."""

    name: str
    image: tuple[int, int]
    classes: int

    @property
    def inputs(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The input shapes the images can be fed as: (H, W, 1) or flattened (H*W,)."""
        height, width = self.image
        return (height, width, 1), (height * width,)


def shape_of(dataset: Dataset) -> DataShape:
    """The shape of a loaded dataset."""
    height, width = (int(d) for d in dataset.train_images.shape[1:3])
    return DataShape(dataset.info.name, (height, width), len(dataset.info.class_names))


def dataset_shape(name: str) -> DataShape:
    """A dataset's shape without loading it: the registry, or a custom folder's IDX header only."""
    if name in DATASETS:
        from mnistlab.data.datasets import IMAGE_SIZE

        return DataShape(name, (IMAGE_SIZE, IMAGE_SIZE), len(DATASETS[name].class_names))
    if not Path(name).is_dir():
        dataset_info(name)  # raises the registry's one-line "unknown dataset" error
    folder = Path(name)
    info = custom_dataset_info(folder)
    paths, _ = present_files(info, folder)
    _, rows, cols = read_image_header(paths["train_images"]).dims
    return DataShape(str(folder), (rows, cols), len(info.class_names))


def activation_bytes_per_image(resolved: Any) -> int:
    """Float32 bytes one image occupies in a forward pass: its input and every layer's output
    (a resolved spec, spec.resolve). What bounds batch sizes: training, bundles, evaluation."""
    floats = math.prod(resolved.spec.input) + sum(math.prod(node.output_shape) for node in resolved.nodes)
    return floats * FLOAT_BYTES


def check_model(spec: ModelSpec, data: DataShape, batch_size: int, limits: Limits = Limits()) -> None:
    """The spec fits the data (input shape, classes) and the size limits at this batch size."""
    shape = tuple(spec.input)
    if shape not in data.inputs:
        fits = " or ".join(f"[{', '.join(str(d) for d in s)}]" for s in data.inputs)
        raise SpecError(
            f"{model_location(spec)}: field 'input': {format_shape(shape)} does not fit {data.name}'s "
            f"{data.image[0]}x{data.image[1]} grayscale images; use {fits}"
        )
    resolved = resolve(spec)
    last = resolved.nodes[-1]
    if last.output_shape != (data.classes,):
        raise SpecError(
            f"{model_location(spec, last.index)}: {layer_label(last.index, last.name, last.layer)}: field 'units': "
            f"{data.name} has {data.classes} classes, but the model outputs {format_shape(last.output_shape)}"
        )
    check_params(spec, limits)
    mib = activation_bytes_per_image(resolved) * batch_size / 2**20
    if mib > limits.activation_mib:
        node = _first_past(resolved.nodes, lambda n: math.prod(n.output_shape) * batch_size * FLOAT_BYTES / 2**20,
                           limits.activation_mib - math.prod(shape) * batch_size * FLOAT_BYTES / 2**20)
        raise SpecError(
            f"{model_location(spec, node.index)}: {layer_label(node.index, node.name, node.layer)}: "
            f"field '{_size_field(node)}': "
            f"one batch of {batch_size} needs {mib:,.0f} MiB of activations (this layer outputs "
            f"{format_shape(node.output_shape)} per image), over the limit of {limits.activation_mib:,} MiB; "
            "shrink the layer, lower batch_size or raise max_activation_mib"
        )


def check_params(spec: ModelSpec, limits: Limits = Limits(), copies: int = 1) -> None:
    """The spec's parameters (times ``copies``: the seeds of a bundle) within the limit, counted from
    the spec before anything is allocated; one line naming the layer where the total passes it."""
    resolved = resolve(spec)
    total = resolved.total_params * copies
    if total > limits.params:
        node = _first_past(resolved.nodes, lambda n: n.params * copies, limits.params)
        bundle = f" x {copies} seeds in one bundle" if copies > 1 else ""
        fewer = "train fewer seeds together, " if copies > 1 else ""
        raise SpecError(
            f"{model_location(spec, node.index)}: {layer_label(node.index, node.name, node.layer)}: "
            f"field '{_size_field(node)}': "
            f"the model has {resolved.total_params:,} parameters{bundle} ({node.params:,} in this layer), over the "
            f"limit of {limits.params:,}; {fewer}shrink it or raise max_params"
        )


def check_bundle(spec: ModelSpec, seeds: int, batch_size: int, limits: Limits = Limits()) -> None:
    """A seed bundle as a whole within the limits: K seeds hold K models' parameters and K batches of
    activations at once (each seed alone is checked by check_fit)."""
    check_params(spec, limits, seeds)
    mib = activation_bytes_per_image(resolve(spec)) * batch_size * seeds / 2**20
    if mib > limits.activation_mib:
        raise SpecError(f"{model_location(spec)}: a bundle of {seeds} seeds needs {mib:,.0f} MiB of activations "
                        f"per batch of {batch_size}, over the limit of {limits.activation_mib:,} MiB; "
                        "train fewer seeds together or raise max_activation_mib")


def _first_past(nodes: tuple[Node, ...], size: Any, limit: float) -> Node:
    """The layer at which the running total of `size` first passes `limit`: the one to blame."""
    total = 0.0
    for node in nodes:
        total += size(node)
        if total > limit:
            return node
    return nodes[-1]


def _size_field(node: Node) -> str:
    """The field that sets a layer's size, to name in a limit error."""
    for field in ("filters", "units"):
        if hasattr(node.layer, field):
            return field
    return "type"


def check_seed(seed: Any, where: str) -> None:
    """Seeds are ints (not bools) with 0 <= seed < SEED_BOUND: what torch and numpy generators take."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_BOUND:
        raise MnistlabError(
            f"{where}: seed {seed!r}: must be a whole number from 0 to {SEED_BOUND - 1} (it seeds torch's generators)"
        )


def check_positive(value: Any, field: str, where: str) -> None:
    """An optional count (epochs, batch size, train limit): None, or an int > 0 that is not a bool."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise MnistlabError(f"{where}: field '{field}': must be a whole number above 0, got {value!r}")


def known_dataset(name: str, where: str) -> None:
    """A registered dataset name, or something that names a folder (checked when the run starts)."""
    if name in DATASETS or "/" in name or "\\" in name or Path(name).is_dir():
        return
    known = sorted(DATASETS)
    raise SpecError(
        f"{where}: field 'dataset': unknown dataset '{name}'{did_you_mean(name, known)}; "
        f"known: {', '.join(known)}, or a folder holding the four IDX files"
    )


def check_fit(spec: ModelSpec, dataset: Dataset, config: Any, epochs: Any, batch_size: Any) -> None:
    """Everything `engine.fit` can check before it builds the model (`config` is its TrainConfig,
    whose fields a Python caller may have set to anything): one line on the first problem."""
    where = model_location(spec)
    check_seed(config.seed, where)
    check_positive(epochs, "epochs", where)
    check_positive(batch_size, "batch_size", where)
    check_positive(config.train_limit, "train_limit", where)
    check_positive(config.max_params, "max_params", where)
    check_positive(config.max_activation_mib, "max_activation_mib", where)
    check_positive(getattr(config, "threads", None), "threads", where)
    for field, allowed in (("precision", PRECISIONS), ("validate_on", ("split", "test")),
                           ("dtype", ("float32", "float64"))):
        if getattr(config, field) not in allowed:
            choices = f"{', '.join(allowed[:-1])} or {allowed[-1]}"
            raise MnistlabError(f"{where}: field '{field}': choose {choices}, got {getattr(config, field)!r}")
    if not isinstance(config.compile, bool) and config.compile not in COMPILE_MODES:
        raise MnistlabError(f"{where}: field 'compile': true, false or a mode ({', '.join(COMPILE_MODES)}), "
                            f"got {config.compile!r}")
    for flag in ("deterministic", "flush_denormal"):
        if not isinstance(getattr(config, flag, False), bool):
            raise MnistlabError(f"{where}: field '{flag}': must be true or false, got {getattr(config, flag)!r}")
    fraction = config.val_fraction
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise MnistlabError(f"{where}: field 'val_fraction': must be a number between 0 and 1, got {fraction!r}")
    check_model(spec, shape_of(dataset), batch_size, Limits(config.max_params, config.max_activation_mib))
    if config.out_dir is not None:
        check_target(config.out_dir, folder=True)  # --out becomes a model folder: not a file, link or device


def check_tasks(tasks: list[Any], data: DataShape, source: str, experiment: str) -> None:
    """Every task of an experiment (experiment.Task) against its dataset, seed range and limits."""
    for task in tasks:
        check_seed(task.seed, f"{source}: experiment '{experiment}': model '{task.model_id}'")
        limits = Limits(task.max_params, task.max_activation_mib)
        try:
            check_model(task.spec, data, task.spec.training.batch_size, limits)
        except SpecError as exc:
            if task.spec.source is not None and task.spec.source.split(":")[0] == source.split(":")[0]:
                raise  # an inline spec: its error already names this file
            raise SpecError(f"{source}: experiment '{experiment}': {exc}") from None
