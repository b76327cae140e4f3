"""Training cost of a model on this machine: forward FLOPs from the spec, images/s from a short measured probe, and the time a run will take.

- `forward_flops(spec)`: counted from the spec's static shapes, no forward pass. What is counted:
  two FLOPs per multiply-add of every Conv2D (k_h·k_w·C_in·C_out·H_out·W_out multiply-adds) and
  Dense (in·out) layer; bias, activations, pooling, batch norm, dropout, concatenation, the loss
  and the optimizer are not (they are a few per cent of the multiply-adds in every zoo model).
- `probe_throughput(spec, ...)`: real training steps of the engine (`engine.train_epoch`: the model
  `fit` builds, its Keras optimizer, loss, batch size, precision and thread count) and its
  inference-mode evaluation (`engine.evaluate`) on random images of the spec's input shape, for a
  few seconds; the first step of each is a warm-up (allocation, oneDNN primitive creation) and is
  not timed, unless it alone outlasts the budget. Measured, never assumed: the figure is this machine's, under whatever load it has.
- `estimate_training(throughput, ...)`: what a run of that model takes, from those two rates.

The archives' `--dry-run` and until-decided's `--budget` reuse these; `mnistlab estimate` prints them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch

from mnistlab.nn.build import build_model
from mnistlab.data.datasets import DATASETS, Dataset, DatasetInfo
from mnistlab.training.config import TRAIN_EVAL_IMAGES, TrainConfig, configure_threads, eval_batch_size, resolve_device
from mnistlab.nn.rng import dropout_generator
from mnistlab.nn.stacked import StackedModel
from mnistlab.training.bundle import train_bundle_epoch
from mnistlab.training.engine import DeviceData, evaluate, machine_paths, place_data, torch_dtype, train_epoch
from mnistlab.errors import MnistlabError
from mnistlab.training.limits import check_fit, check_positive
from mnistlab.util.machine import describe
from mnistlab.training.optim import make_optimizer
from mnistlab.training.precision import run_numerics
from mnistlab.training.config import NOTEBOOK_PROTOCOL
from mnistlab.spec.layers import Conv2D, Dense
from mnistlab.spec.model import ModelSpec, resolve

# What forward_flops counts, in words, for every output that quotes the figure.
FLOPS_COUNTED = ("2 FLOPs per multiply-add of Conv2D and Dense layers; bias, activations, pooling, batch norm, "
                 "dropout, the loss and the optimizer not counted")
# A training step costs about three forward passes: the backward pass computes gradients for the
# inputs and for the weights, each about as costly as the forward (the first layer's input gradient
# is not needed, so this overcounts slightly).
TRAIN_STEP_FORWARDS = 3

DEFAULT_PROBE_SECONDS = 10.0
MAX_PROBE_SECONDS = 30.0  # a probe of every zoo model in both precisions then stays well under an hour
# Of a probe's seconds, this share times evaluation (its rate matters less: an epoch evaluates 16,000
# images under the notebooks' protocol against 60,000 trained on, at about three times the speed).
EVAL_SHARE = 0.2
# Random images the probe trains on: this many batches are placed on the device and cycled, so
# memory stays small however many steps a fast model takes.
PROBE_BATCHES = 16
# What an estimate includes, in words.
ESTIMATE_INCLUDES = ("every epoch's training steps, its evaluation of the validation images and of the training-"
                     f"metrics subsample (up to {TRAIN_EVAL_IMAGES:,} images), and the final test evaluation; not "
                     "loading data, building the model, the first epoch's warm-up, checkpoints or the store")


def forward_flops(spec: ModelSpec) -> int:
    """FLOPs of one image's forward pass: 2 per multiply-add of its Conv2D and Dense layers (FLOPS_COUNTED)."""
    macs = 0
    for node in resolve(spec).nodes:
        layer = node.layer
        if isinstance(layer, Conv2D):
            out_h, out_w, filters = node.output_shape
            kernel_h, kernel_w = layer.kernel_size
            macs += kernel_h * kernel_w * node.input_shapes[0][-1] * filters * out_h * out_w
        elif isinstance(layer, Dense):
            macs += node.input_shapes[0][0] * layer.units
    return 2 * macs


@dataclass(frozen=True)
class Throughput:
    """A model's measured training and evaluation speed on one machine, as a probe found it."""

    model_id: str
    precision: str
    machine: str  # machine.describe: the CPU and its usable cores, or the GPU
    threads: int
    batch_size: int
    train_images_per_second: float  # training steps only, warm-up excluded
    train_steps: int  # steps timed
    eval_images_per_second: float  # inference mode, the engine's evaluation batches
    eval_images: int  # images timed
    # True when a single step (or evaluation call) outlasted the probe's budget and the warm-up is
    # the measurement: one-time costs then read as slightly lower speed.
    warmup_timed: bool
    seconds: float  # wall time of the probe's steps, warm-ups included (building the model not)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Estimate:
    """How long one run (one seed) takes at a measured throughput; `ESTIMATE_INCLUDES` says what is counted."""

    model_id: str
    epochs: int
    train_images: int  # trained on per epoch
    val_images: int  # evaluated per epoch
    train_eval_images: int  # the training-metrics subsample, evaluated per epoch
    test_images: int  # evaluated once, after the last epoch
    throughput: Throughput

    @property
    def train_seconds(self) -> float:
        return self.epochs * self.train_images / self.throughput.train_images_per_second

    @property
    def eval_seconds(self) -> float:
        evaluated = self.epochs * (self.val_images + self.train_eval_images) + self.test_images
        return evaluated / self.throughput.eval_images_per_second

    @property
    def seconds(self) -> float:
        return self.train_seconds + self.eval_seconds

    @property
    def hours(self) -> float:
        return self.seconds / 3600

    def to_json(self) -> dict[str, Any]:
        return {"model_id": self.model_id, "epochs": self.epochs, "train_images": self.train_images,
                "val_images": self.val_images, "train_eval_images": self.train_eval_images,
                "test_images": self.test_images, "train_seconds": self.train_seconds,
                "eval_seconds": self.eval_seconds, "seconds": self.seconds, "hours": self.hours,
                "includes": ESTIMATE_INCLUDES, "throughput": self.throughput.to_json()}


def estimate_training(throughput: Throughput, *, epochs: int, train_images: int, val_images: int,
                      test_images: int) -> Estimate:
    """One run's time at `throughput`: epochs × (train_images / training rate + (val_images + the
    training-metrics subsample) / evaluation rate) + test_images / evaluation rate, as `engine.fit` spends it."""
    where = f"model '{throughput.model_id}'"
    for field, value in (("epochs", epochs), ("train_images", train_images), ("val_images", val_images),
                         ("test_images", test_images)):
        check_positive(value, field, where)
    return Estimate(throughput.model_id, epochs, train_images, val_images, min(TRAIN_EVAL_IMAGES, train_images),
                    test_images, throughput)


def epoch_images(dataset: str = "mnist", validate_on: str = NOTEBOOK_PROTOCOL, val_fraction: float = 0.1,
                 train_limit: int | None = None) -> tuple[int, int, int]:
    """(trained on per epoch, validated on per epoch, tested on) for a registered dataset under a
    protocol, without loading it: `engine.place_data`'s split (round(val_fraction·n) held out)."""
    if dataset not in DATASETS:
        known = ", ".join(DATASETS)
        raise MnistlabError(f"dataset '{dataset}': image counts are known for {known}; give train_images "
                            "and val_images for other data")
    if validate_on not in ("split", "test"):
        raise MnistlabError(f"field 'validate_on': choose split or test, got {validate_on!r}")
    counts = DATASETS[dataset].counts
    train, test = counts["train_images"], counts["test_images"]
    if validate_on == "split":
        val = round(val_fraction * train)
        train -= val
    else:
        val = test
    if train_limit is not None:
        train = min(train, train_limit)
    return train, val, test


def check_probe_seconds(seconds: Any, where: str) -> None:
    """A probe's length: a number of seconds above 0 and at most MAX_PROBE_SECONDS, else one line."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds <= MAX_PROBE_SECONDS:
        raise MnistlabError(f"{where}: probe seconds must be above 0 and at most {MAX_PROBE_SECONDS:g}, "
                            f"got {seconds!r}")


def probe_throughput(spec: ModelSpec, *, precision: str = "fp32", seconds: float = DEFAULT_PROBE_SECONDS,
                     batch_size: int | None = None, threads: int | None = None, device: str = "auto",
                     seed: int = 0) -> Throughput:
    """Measure `spec`'s training and evaluation images/s here for about `seconds` (at most
    MAX_PROBE_SECONDS), warm-ups included. At least one step is timed: a model whose single step
    outlasts the budget takes about one step per precision and phase (the warm-up is then the
    measurement, said in `warmup_timed`). The engine's thread count is restored after."""
    check_probe_seconds(seconds, f"model '{spec.id}'")
    batch_size = batch_size if batch_size is not None else spec.training.batch_size
    config = TrainConfig(batch_size=batch_size, seed=seed, device=device, precision=precision,  # type: ignore[arg-type]
                         validate_on="test", threads=threads)
    # The engine's own checks (precision, threads, batch size, size limits) on one image, before the
    # probe's images are made at a batch size they may refuse.
    check_fit(spec, _random_images(spec, 1, 1, seed), config, 1, batch_size)
    dataset = _random_images(spec, PROBE_BATCHES * batch_size, max(PROBE_BATCHES * batch_size, 2048), seed)
    target = resolve_device(device)
    previous_threads = torch.get_num_threads()
    try:
        with run_numerics(target, precision, where=f"model '{spec.id}'"):
            used_threads = configure_threads(threads)
            data = place_data(dataset, config, target)
            model = build_model(spec, seed=seed).to(target, torch_dtype(config))
            machine_paths(model, config, target)  # the kernel paths a run here takes (cpu_paths.py)
            optimizer = make_optimizer(spec.training.optimizer.name, model.parameters(),
                                       **spec.training.optimizer.args)
            started = time.perf_counter()  # a process's first optimizer imports torch._dynamo: not the probe's

            def train(batches: int, call: int) -> int:
                chunk = _first(data, batches * batch_size)
                loss_sum, _ = train_epoch(model, optimizer, chunk, batch_size, seed, call, precision)
                loss_sum.item()  # wait for the device
                return batches * batch_size

            eval_batch = eval_batch_size(model.resolved, target, len(data.val_y))

            def evaluation(batches: int, call: int) -> int:
                images = min(batches * eval_batch, len(data.val_y))
                loss_sum, _, _ = evaluate(model, data.val_x[:images], data.val_y[:images], precision)
                loss_sum.item()
                return images

            trained, train_rate, train_warm = _timed(train, seconds * (1 - EVAL_SHARE), PROBE_BATCHES)
            evaluated, eval_rate, eval_warm = _timed(evaluation, seconds * EVAL_SHARE,
                                                     max(1, len(data.val_y) // eval_batch))
    except torch.cuda.OutOfMemoryError:
        raise MnistlabError(f"model '{spec.id}': the GPU ran out of memory at batch size {batch_size}; "
                            f"try --batch-size {max(1, batch_size // 2)}") from None
    finally:
        torch.set_num_threads(previous_threads)
    return Throughput(spec.id, precision, describe(str(target)), used_threads, batch_size, train_rate,
                      trained // batch_size, eval_rate, evaluated, train_warm or eval_warm,
                      time.perf_counter() - started)


def probe_bundle(spec: ModelSpec, k: int, *, precision: str = "fp32", seconds: float = DEFAULT_PROBE_SECONDS,
                 batch_size: int | None = None, threads: int | None = None, device: str = "auto", seed: int = 0) -> float:
    """Training images/s, all seeds together, of `k` seeds of `spec` trained as one bundle here (k = 1: the
    engine's single-run step, as one seed at a time trains), measured for about `seconds` on random
    images after a warm-up; `--bundle auto` compares these (bundle.choose_bundle)."""
    check_probe_seconds(seconds, f"model '{spec.id}'")
    batch_size = batch_size if batch_size is not None else spec.training.batch_size
    config = TrainConfig(batch_size=batch_size, seed=seed, device=device, precision=precision,  # type: ignore[arg-type]
                         validate_on="test", threads=threads)
    check_fit(spec, _random_images(spec, 1, 1, seed), config, 1, batch_size)
    dataset = _random_images(spec, PROBE_BATCHES * batch_size, batch_size, seed)
    target = resolve_device(device)
    previous_threads = torch.get_num_threads()
    try:
        with run_numerics(target, precision, where=f"model '{spec.id}'"):
            configure_threads(threads)
            data = place_data(dataset, config, target)
            models = [build_model(spec, seed=seed + index).to(target, torch_dtype(config)) for index in range(k)]
            model: Any = models[0] if k == 1 else StackedModel(models).to(target)
            optimizer = make_optimizer(spec.training.optimizer.name, model.parameters(), **spec.training.optimizer.args)
            if k > 1:
                model.generators = [dropout_generator(seed + index, 1, target) for index in range(k)]

            def train(batches: int, call: int) -> int:
                images = batches * batch_size
                if k == 1:
                    loss_sum, _ = train_epoch(model, optimizer, _first(data, images), batch_size, seed, call, precision)
                else:
                    orders = torch.arange(images, device=target).repeat(k, 1)
                    loss_sum, _ = train_bundle_epoch(model, optimizer, data, orders, batch_size, precision,
                                                     torch_dtype(config), None)
                loss_sum.sum().item()  # wait for the device
                return k * images

            _, rate, _ = _timed(train, seconds, PROBE_BATCHES)
    except torch.cuda.OutOfMemoryError:
        raise MnistlabError(f"model '{spec.id}': the GPU ran out of memory probing a bundle of {k} seeds") from None
    finally:
        torch.set_num_threads(previous_threads)
    return rate


def _timed(work: Callable[[int, int], int], budget: float, most: int) -> tuple[int, float, bool]:
    """Call `work(batches, call)` once as the warm-up, then timed with growing numbers of batches (at
    most `most` a call) while the budget, warm-up included, has room for another call. When the
    warm-up alone outlasts the budget it is the measurement (its one-time costs are then a small part
    of it), so a probe never takes much more than its budget or one call. Returns (images timed,
    images/s, whether the warm-up is in the figure)."""
    started = time.perf_counter()
    warmup = work(1, 1)
    spent = time.perf_counter() - started
    if spent >= budget:
        return warmup, warmup / spent, True
    images, spent, batches, timed_batches, call = 0, 0.0, 1, 0, 1
    while True:
        call += 1
        begun = time.perf_counter()
        images += work(batches, call)
        spent += time.perf_counter() - begun
        timed_batches += batches
        per_batch = spent / timed_batches
        left = budget - (time.perf_counter() - started)
        if left < per_batch:
            return images, images / spent, False
        batches = max(1, min(2 * batches, most, math.floor(left / per_batch)))


def _first(data: DeviceData, images: int) -> DeviceData:
    """The first `images` of the probe's training images (views, no copy), as an epoch's data."""
    return DeviceData(data.train_x[:images], data.train_y[:images], data.val_x, data.val_y, data.test_x,
                      data.test_y, data.train_eval_x, data.train_eval_y)


def _random_images(spec: ModelSpec, train: int, test: int, seed: int) -> Dataset:
    """`train` and `test` random uint8 images shaped for the spec's input ((H, W), or (1, n) for a flat
    one; 2,048 test images are several of the CPU's evaluation batches) with labels for its classes:
    speed does not depend on what the pixels show."""
    shape = tuple(spec.input)
    image = (shape[0], shape[1]) if len(shape) == 3 else (1, math.prod(shape))
    classes = resolve(spec).output_shape[0]
    generator = torch.Generator().manual_seed(seed)

    def images(count: int) -> torch.Tensor:
        return torch.randint(0, 256, (count, *image), generator=generator, dtype=torch.uint8)

    def labels(count: int) -> torch.Tensor:
        return torch.randint(0, classes, (count,), generator=generator, dtype=torch.int64)

    info = DatasetInfo(name="probe", files={}, sha256={}, class_names=tuple(str(c) for c in range(classes)),
                       mirrors=())
    return Dataset(images(train), labels(train), images(test), labels(test), info=info, source_dir=None)
