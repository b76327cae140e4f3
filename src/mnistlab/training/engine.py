"""The training loop: Keras 2.2's `fit` semantics, with the data resident on the device.

Why it is fast: the whole dataset sits on the device as uint8 and each batch is gathered and
normalised there (no DataLoader, no worker processes, no host copies); loss and accuracy are
accumulated in device tensors and read once per epoch, so a GPU never waits on the host inside
an epoch. Why it is faithful: Keras initialisers and optimizers (see build.py, optim.py),
Keras's running-mean train metrics with dropout active, and validation in inference mode.
Why it is repeatable: every epoch's shuffle and dropout masks come from the run's own generators
seeded from (seed, epoch) (rng.py, never the global RNG), so a run resumed from a checkpoint
continues exactly as an uninterrupted run would, and a seed bundle (bundle.py) draws the same numbers.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F

from mnistlab.data.datasets import Dataset, stratified_split
from mnistlab.errors import MnistlabError
from mnistlab.nn.build import ConvAsGemm, KerasModel, build_model, prepare_input
from mnistlab.nn.cpu_paths import apply_layout, apply_paths, bf16_layout, cpu_paths, has_convolutions
from mnistlab.nn.rng import dropout_generator, set_dropout_generator, shuffle_order
from mnistlab.spec.model import ModelSpec
from mnistlab.training.checkpoint import save_checkpoint
from mnistlab.training.config import (TRAIN_EVAL_IMAGES, TrainConfig, configure_threads, eval_batch_size,
                                      resolve_device, run_threads)
from mnistlab.training.early_stopping import EarlyStopping
from mnistlab.training.history import COMPLETED, DIVERGED, History, Reporter
from mnistlab.training.limits import check_fit
from mnistlab.training.optim import make_optimizer
from mnistlab.training.precision import autocast, check_compile, compiled, run_numerics
from mnistlab.training.resume import checkpoint_identity, maybe_resume


# --- the data a run sees --------------------------------------------------------------------


@dataclass
class DeviceData:
    """uint8 images and int64 labels on the device, split by protocol."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    train_eval_x: torch.Tensor
    train_eval_y: torch.Tensor


def place_data(dataset: Dataset, config: TrainConfig, device: torch.device) -> DeviceData:
    """Hold out the validation set (or use the test set, as the seeds did) and move to device."""
    if config.validate_on == "split":
        train_idx, val_idx = stratified_split(dataset.train_labels, config.val_fraction, config.split_seed)
        train_idx = train_idx.sort().values  # "the first N" of --train-limit means file order
        val_x, val_y = dataset.train_images[val_idx], dataset.train_labels[val_idx]
    else:
        train_idx = torch.arange(len(dataset.train_labels))
        val_x, val_y = dataset.test_images, dataset.test_labels
    if config.train_limit is not None:
        train_idx = train_idx[: config.train_limit]
    # A fixed subsample of the images actually trained on (seeded like the split, so shared by all runs).
    pick = torch.randperm(len(train_idx), generator=torch.Generator().manual_seed(config.split_seed))
    train_eval_idx = train_idx[pick[:TRAIN_EVAL_IMAGES].sort().values]
    return DeviceData(
        train_eval_x=dataset.train_images[train_eval_idx].to(device),
        train_eval_y=dataset.train_labels[train_eval_idx].to(device),
        train_x=dataset.train_images[train_idx].to(device),
        train_y=dataset.train_labels[train_idx].to(device),
        val_x=val_x.to(device),
        val_y=val_y.to(device),
        test_x=dataset.test_images.to(device),
        test_y=dataset.test_labels.to(device),
    )


# --- one epoch ------------------------------------------------------------------------------


def torch_dtype(config: TrainConfig) -> torch.dtype:
    """The parameter and input dtype of a run (float32, or float64 for exactness checks)."""
    return torch.float64 if config.dtype == "float64" else torch.float32


def model_dtype(model: torch.nn.Module) -> torch.dtype:
    return next(iter(model.parameters()), torch.empty(())).dtype


def loss_input(logits: torch.Tensor) -> torch.Tensor:
    """Logits as the loss takes them: bf16/fp16 (autocast) up to float32, float64 kept."""
    return logits.float() if logits.dtype in (torch.bfloat16, torch.float16) else logits


def train_epoch(
    model: KerasModel,
    optimizer: torch.optim.Optimizer,
    data: DeviceData,
    batch_size: int,
    seed: int,
    epoch: int,
    precision: str,
    on_step: Callable[[int, int, torch.Tensor, torch.Tensor, int], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One pass over the training data; returns device tensors (summed loss, correct count)."""
    device = data.train_x.device
    model.train()
    set_dropout_generator(model, dropout_generator(seed, epoch, device))
    order = shuffle_order(len(data.train_y), seed, epoch).to(device)
    dtype = model_dtype(model)
    loss_sum = torch.zeros((), device=device, dtype=dtype)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    steps = math.ceil(len(order) / batch_size)
    seen = 0
    for step in range(steps):
        index = order[step * batch_size : (step + 1) * batch_size]
        x = prepare_input(data.train_x[index], model.input_shape, dtype)
        y = data.train_y[index]
        with autocast(device, precision):
            logits = model(x)
        loss = F.cross_entropy(loss_input(logits), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        # Keras's BaseLogger weights each batch's metric by its size.
        loss_sum += loss.detach() * len(y)
        correct += (logits.detach().argmax(1) == y).sum()
        seen += len(y)
        if on_step is not None:
            on_step(step + 1, steps, loss_sum, correct, seen)
    return loss_sum, correct


@torch.inference_mode()
def evaluate(model: KerasModel, x: torch.Tensor, y: torch.Tensor, precision: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inference-mode loss sum, correct count, and predicted labels, all still on the device."""
    model.eval()
    loss_sum = torch.zeros((), device=x.device, dtype=model_dtype(model))
    predictions = []
    size = eval_batch_size(model.resolved, x.device, len(y))
    for start in range(0, len(y), size):
        xb = prepare_input(x[start : start + size], model.input_shape, model_dtype(model))
        with autocast(x.device, precision):
            logits = loss_input(model(xb))
        loss_sum += F.cross_entropy(logits, y[start : start + size], reduction="sum")
        predictions.append(logits.argmax(1))
    predicted = torch.cat(predictions)
    return loss_sum, (predicted == y).sum(), predicted


# --- the run --------------------------------------------------------------------------------


@dataclass(frozen=True)
class MachinePaths:
    """The CPU kernel paths a run took on this machine (cpu_paths.py) and its notes on its arithmetic.

    `plain_convs`: its small convolutions run as plain convs, not the GEMM every earlier run used;
    `channels_last`: its bf16 convolutions run in channels_last. Both sum in another order, so both
    are in the checkpoint identity."""

    plain_convs: bool
    channels_last: bool
    notes: list[str]


def machine_paths(model: KerasModel, config: TrainConfig, device: torch.device, layout: bool = True) -> MachinePaths:
    """Set the CPU kernel paths this machine's probes chose (cpu_paths.py) on `model`; `layout` False
    keeps NCHW (a seed bundle, whose stacked model is built in NCHW from these)."""
    notes = []
    if config.precision == "bf32":
        notes.append("precision bf32: fp32 storage, oneDNN's implicit bf16 in matmuls and convolutions")
    if config.flush_denormal:
        notes.append("subnormal floats flushed to zero on every CPU thread, as TensorFlow's threads do")
    plain = channels_last = False
    if device.type == "cpu" and any(isinstance(m, ConvAsGemm) for m in model.modules()):
        paths = cpu_paths()
        apply_paths(model, paths)
        plain = not paths.conv_as_gemm
        notes.append(paths.note())
    if layout and device.type == "cpu" and config.precision == "bf16" and has_convolutions(model):
        chosen = bf16_layout()
        channels_last = apply_layout(model, chosen)
        notes.append(chosen.note())
    return MachinePaths(plain, channels_last, notes)


def fit(
    spec: ModelSpec,
    dataset: Dataset,
    config: TrainConfig | None = None,
    reporter: Reporter | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> History:
    """Train `spec` on `dataset` as Keras 2.2's `fit` would, then evaluate once on the test set."""
    config = config or TrainConfig()
    epochs = config.epochs or spec.training.epochs
    batch_size = config.batch_size or spec.training.batch_size
    # Before anything is built or allocated: the spec must fit the data and the size limits.
    check_fit(spec, dataset, config, epochs, batch_size)
    device = resolve_device(config.device)
    check_compile(config.compile, device, where=f"model '{spec.id}'")
    with run_numerics(device, config.precision, config.deterministic, where=f"model '{spec.id}'",
                      flush_denormal=config.flush_denormal):
        return _fit(spec, dataset, config, reporter or Reporter(), on_epoch, device, epochs, batch_size)


def _fit(
    spec: ModelSpec,
    dataset: Dataset,
    config: TrainConfig,
    reporter: Reporter,
    on_epoch: Callable[[int, dict[str, float]], None] | None,
    device: torch.device,
    epochs: int,
    batch_size: int,
) -> History:
    threads = configure_threads(run_threads(config))
    data = place_data(dataset, config, device)
    model = build_model(spec, seed=config.seed).to(device, torch_dtype(config))
    paths = machine_paths(model, config, device)
    optimizer = make_optimizer(spec.training.optimizer.name, model.parameters(), **spec.training.optimizer.args)
    step_model: Any = compiled(model, config.compile)
    history = History(model_id=spec.id, seed=config.seed, protocol=config.validate_on, device=str(device),
                      train_images=len(data.train_y), threads=threads, notes=paths.notes)
    identity = checkpoint_identity(spec, config, batch_size, dataset.info.name, threads, paths.plain_convs,
                                   paths.channels_last)
    first_epoch = maybe_resume(config, identity, model, optimizer, device, history, epochs)
    stopper = EarlyStopping(config.patience, config.out_dir) if config.patience is not None else None
    if stopper is not None:
        stopper.resume(history.epochs, model)

    train_seconds = 0.0
    timed_images = 0
    for epoch in range(first_epoch, epochs + 1):
        steps = math.ceil(len(data.train_y) / batch_size)
        reporter.start_epoch(epoch, epochs, steps)
        started = time.perf_counter()
        try:
            loss_sum, correct = train_epoch(
                step_model, optimizer, data, batch_size, config.seed, epoch, config.precision,
                reporter.step if reporter.wants_steps() else None,
            )
            loss_sum.item()  # wait for the device: the training time must not include validation
            trained = time.perf_counter()
            val_loss, val_correct, _ = evaluate(model, data.val_x, data.val_y, config.precision)
            fit_loss, fit_correct, _ = evaluate(model, data.train_eval_x, data.train_eval_y, config.precision)
        except torch.cuda.OutOfMemoryError:
            raise MnistlabError(
                f"model '{spec.id}': the GPU ran out of memory at batch size {batch_size}; "
                f"try --batch-size {max(1, batch_size // 2)}"
            ) from None
        n = len(data.train_y)
        metrics = {  # the one host sync of the epoch
            "epoch": epoch,
            "loss": loss_sum.item() / n,
            "acc": correct.item() / n,
            "val_loss": val_loss.item() / len(data.val_y),
            "val_acc": val_correct.item() / len(data.val_y),
            "train_eval_loss": fit_loss.item() / len(data.train_eval_y),
            "train_eval_acc": fit_correct.item() / len(data.train_eval_y),
        }
        metrics["seconds"] = time.perf_counter() - started
        history.epochs.append(metrics)
        if epoch > 1 or epochs == 1:  # the first epoch pays for warm-up (allocation, compile)
            train_seconds += trained - started
            timed_images += n
        reporter.end_epoch(epoch, epochs, metrics)
        if not all(math.isfinite(metrics[k]) for k in ("loss", "val_loss")):
            history.status, history.diverged_epoch = DIVERGED, epoch
            break
        # Before the checkpoint: a resume from it must find this epoch's best weights on disk.
        stop = stopper is not None and stopper.update(epoch, metrics["val_loss"], model)
        # on_epoch before the checkpoint too: a store refuses the epoch of a process that lost its claim
        # (LeaseLost), which then never writes into the checkpoint folder its successor is using. A crash
        # between the two replays this epoch from the previous checkpoint.
        if on_epoch is not None:
            on_epoch(epoch, metrics)
        if config.out_dir is not None:
            save_checkpoint(config.out_dir, epoch, model, optimizer, {"identity": identity, "history": history.epochs})
        if stop:
            break

    if timed_images:
        history.images_per_second = timed_images / train_seconds
        history.images_per_second_note = (
            "training steps only (no validation), epochs 2+ (the first epoch's warm-up excluded)"
            if epochs > 1 else "training steps only (no validation), one epoch"
        )
    if stopper is not None and history.status == COMPLETED:
        stopper.restore(model)
        history.best_epoch, history.stopped_early = stopper.best_epoch, stopper.stopped
    if history.status == COMPLETED:
        test_loss, test_correct, predicted = evaluate(model, data.test_x, data.test_y, config.precision)
        history.test_loss = test_loss.item() / len(data.test_y)
        history.test_acc = test_correct.item() / len(data.test_y)
        history.test_predictions = predicted.cpu().tolist()
        history.test_labels = data.test_y.cpu().tolist()
    history.model = model
    return history


