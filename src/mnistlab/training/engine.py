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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Literal

import torch
import torch.nn.functional as F

from mnistlab.nn.build import KerasModel, build_model, fuses, prepare_input
from mnistlab.training.checkpoint import load_checkpoint, read_checkpoint_info, save_checkpoint
from mnistlab.data.datasets import Dataset, stratified_split
from mnistlab.training.early_stopping import EarlyStopping
from mnistlab.nn.fused import FUSED_SCHEME
from mnistlab.errors import CheckpointError, MnistlabError
from mnistlab.training.limits import activation_bytes_per_image, check_fit
from mnistlab.util.machine import usable_cpus
from mnistlab.training.optim import make_optimizer
from mnistlab.training.precision import Precision, autocast, compiled, run_numerics
from mnistlab.nn.rng import RNG_SCHEME, dropout_generator, epoch_seed, set_dropout_generator, shuffle_order
from mnistlab.spec.model import ModelSpec, resolve
from mnistlab.runs.store import EPOCH_METRICS, FAILED

Protocol = Literal["split", "test"]
# Inference batches on a CPU: cache-sized; batch 2000 measured 2.3x slower than 256 on s000-m1
# (benchmarks/). On a GPU as many images as a quarter of the free memory holds (fewer launches,
# often the whole validation or test set in one batch): see eval_batch_size.
CPU_EVAL_BATCH = 256
GPU_EVAL_MEMORY_SHARE = 0.25
# Training metrics in inference mode (dropout off, BatchNormalization on its moving averages) are
# measured each epoch on this many training images, the same ones for every model and seed: Keras's
# running-mean `acc` has dropout on and so reads low by design, and diagnoses need the real fit.
# 6,000 images put one binomial standard error at 98% under 0.2 points for about 10% of an epoch's cost.
TRAIN_EVAL_IMAGES = 6000


@dataclass
class TrainConfig:
    """Everything about one training run that is not the model itself."""

    epochs: int | None = None  # None: the spec's training.epochs
    batch_size: int | None = None  # None: the spec's training.batch_size
    seed: int = 0
    device: str = "auto"
    precision: Precision = "fp32"  # precision.py: fp32 (strict), tf32 (CUDA) or bf16 autocast
    deterministic: bool = False  # CUDA: deterministic kernels only (precision.run_numerics)
    validate_on: Protocol = "split"
    val_fraction: float = 0.1
    split_seed: int = 0  # the validation split is the same for every model and seed, so they compare
    train_limit: int | None = None
    out_dir: Path | None = None  # checkpoints go here; None: no checkpoints
    resume: bool = False
    compile: bool | str = False  # True, or a precision.COMPILE_MODES name: torch.compile the model
    max_params: int | None = None  # None: limits.MAX_PARAMS
    max_activation_mib: int | None = None  # None: limits.MAX_ACTIVATION_MIB
    # Early stopping on val_loss after this many epochs without a new minimum; the best epoch's
    # weights are restored at the end either way (see early_stopping.py). None: off.
    patience: int | None = None
    # Intra-op CPU threads, fixed for the whole run: the count changes the order of reductions and
    # so the exact numbers. None: usable_cpus(), or on resume the count the checkpoint recorded.
    threads: int | None = None
    # float64 exists for exactness checks on a CPU (bundle vs separate runs); training is float32.
    dtype: Literal["float32", "float64"] = "float32"


@dataclass
class History:
    """What a run produced: per-epoch metrics, final test metrics, and test predictions."""

    model_id: str
    seed: int
    protocol: Protocol
    device: str
    epochs: list[dict[str, float]] = field(default_factory=list)
    status: Literal["completed", "diverged"] = "completed"
    diverged_epoch: int | None = None
    test_loss: float | None = None
    test_acc: float | None = None
    images_per_second: float | None = None
    images_per_second_note: str = ""
    train_images: int = 0  # images trained on per epoch (after the split and --train-limit)
    test_predictions: list[int] | None = None
    test_labels: list[int] | None = None
    best_epoch: int | None = None  # with early stopping: the epoch whose weights were restored
    stopped_early: bool = False
    threads: int | None = None  # intra-op CPU threads the run trained with
    model: KerasModel | None = field(default=None, repr=False, compare=False)  # the trained model; not serialised

    def series(self, key: str) -> list[float]:
        """One metric over epochs (loss, acc, val_loss, val_acc, seconds, train_eval_loss, train_eval_acc)."""
        return [e.get(key, math.nan) for e in self.epochs]  # checkpoints before train_eval_* lack them

    def to_json(self, predictions: bool = False) -> dict[str, Any]:
        data = asdict(replace(self, model=None))
        data.pop("model")
        if not predictions:
            data.pop("test_predictions")
            data.pop("test_labels")
        for key in EPOCH_METRICS:
            data[key] = self.series(key)
        return data


# --- devices and threads --------------------------------------------------------------------


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise MnistlabError("--device cuda: no CUDA device is available here; use --device cpu or auto")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise MnistlabError(f"--device {name}: choose auto, cpu or cuda")
    return torch.device(name)


def configure_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads: `threads`, or one per usable core (more oversubscribes and
    slows small convs down). Returns the count set."""
    count = threads if threads is not None else usable_cpus()
    torch.set_num_threads(count)
    return count


def eval_batch_size(resolved: Any, device: torch.device, images: int, seeds: int = 1,
                    free_bytes: int | None = None) -> int:
    """Images per inference batch for a model (its resolved spec) on `device`: CPU_EVAL_BATCH on a
    CPU; on a GPU as many as GPU_EVAL_MEMORY_SHARE of the free memory (`free_bytes`, else asked of
    the device) holds for `seeds` models' activations, at most `images`."""
    if device.type != "cuda":
        return CPU_EVAL_BATCH
    if free_bytes is None:
        free_bytes, _ = torch.cuda.mem_get_info(device)
    fits = int(free_bytes * GPU_EVAL_MEMORY_SHARE) // (activation_bytes_per_image(resolved) * seeds)
    return max(1, min(images, fits))


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


def _epoch_seed(seed: int, epoch: int) -> int:
    return epoch_seed(seed, epoch)


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
class RunEnd:
    """A finished run as a reporter hears of it; `status` is the store's (completed, diverged, failed).

    `epochs`: epochs trained (None when a failure left it unknown); `run_id`: the store's run, if any."""

    model: str
    seed: int
    status: str
    epochs: int | None = None
    test_acc: float | None = None
    test_loss: float | None = None
    run_id: int | None = None
    error: str | None = None

    @classmethod
    def of(cls, history: History, run_id: int | None = None) -> RunEnd:
        return cls(history.model_id, history.seed, history.status, len(history.epochs), history.test_acc,
                   history.test_loss, run_id)

    @classmethod
    def failed(cls, model: str, seed: int, error: str, run_id: int | None = None) -> RunEnd:
        return cls(model, seed, FAILED, run_id=run_id, error=error)


class Reporter:
    """Receives progress; the base reports nothing (tests and --quiet use it). progress.py holds the
    CLI's reporters (terminal bar, plain lines, JSON lines) and the factory that picks one.

    The engine calls start_epoch / step / end_epoch; a seed bundle also calls end_seed_epoch for
    each of its seeds just before end_epoch gets their mean. end_run is called by whoever finishes
    a run (api.train, the runners), never by the engine."""

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None: ...

    def step(self, step: int, steps: int, loss_sum: torch.Tensor, correct: torch.Tensor, seen: int) -> None: ...

    def end_seed_epoch(self, seed: int, epoch: int, epochs: int, metrics: dict[str, float]) -> None: ...

    def end_epoch(self, epoch: int, epochs: int, metrics: dict[str, float]) -> None: ...

    def end_run(self, run: RunEnd) -> None: ...

    def wants_steps(self) -> bool:
        return False


def _checkpoint_identity(spec: ModelSpec, config: TrainConfig, batch_size: int, dataset: str,
                         threads: int | None = None) -> dict[str, Any]:
    """What must match for a checkpoint to be resumed (else it belongs to another run).

    The epoch count is left out on purpose: resuming with more epochs extends a run.
    """
    model = spec.to_dict()
    model["training"].pop("epochs")
    identity = {
        "model": model,
        "seed": config.seed,
        "batch_size": batch_size,
        "validate_on": config.validate_on,
        "val_fraction": config.val_fraction,
        "split_seed": config.split_seed,
        "train_limit": config.train_limit,
        "precision": config.precision,
        "dataset": dataset,
        "threads": threads if threads is not None else torch.get_num_threads(),  # set by configure_threads
        "rng": RNG_SCHEME,  # how shuffles and dropout masks are drawn: another scheme continues differently
        "dtype": config.dtype,
    }
    if config.deterministic:  # other kernels round differently (only when asked: older checkpoints lack it)
        identity["deterministic"] = True
    if fuses(resolve(spec)):  # fused.py's kernels round differently: a plain run's checkpoint is another run
        identity["fused"] = FUSED_SCHEME
    return identity


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
    with run_numerics(device, config.precision, config.deterministic, where=f"model '{spec.id}'"):
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
    optimizer = make_optimizer(spec.training.optimizer.name, model.parameters(), **spec.training.optimizer.args)
    step_model: Any = compiled(model, config.compile)
    history = History(model_id=spec.id, seed=config.seed, protocol=config.validate_on, device=str(device),
                      train_images=len(data.train_y), threads=threads)
    identity = _checkpoint_identity(spec, config, batch_size, dataset.info.name, threads)
    first_epoch = _maybe_resume(config, identity, model, optimizer, device, history, epochs)
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
            history.status, history.diverged_epoch = "diverged", epoch
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
    if stopper is not None and history.status == "completed":
        stopper.restore(model)
        history.best_epoch, history.stopped_early = stopper.best_epoch, stopper.stopped
    if history.status == "completed":
        test_loss, test_correct, predicted = evaluate(model, data.test_x, data.test_y, config.precision)
        history.test_loss = test_loss.item() / len(data.test_y)
        history.test_acc = test_correct.item() / len(data.test_y)
        history.test_predictions = predicted.cpu().tolist()
        history.test_labels = data.test_y.cpu().tolist()
    history.model = model
    return history


def _maybe_resume(
    config: TrainConfig,
    identity: dict[str, Any],
    model: KerasModel,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    history: History,
    epochs: int,
) -> int:
    """Load the last checkpoint when resuming; return the first epoch still to train.

    CheckpointError when the checkpoint is damaged, of another run, or past ``epochs``.
    """
    if config.out_dir is None:
        return 1
    info = read_checkpoint_info(config.out_dir)
    if info is None:
        return 1
    if not config.resume:
        raise MnistlabError(
            f"{config.out_dir}: holds a checkpoint of an earlier run; pass --resume to continue it or choose another --out"
        )
    if info["identity"].get("rng") != RNG_SCHEME:
        raise CheckpointError(
            f"{config.out_dir}: its checkpoint was written under another random-number scheme "
            f"({info['identity'].get('rng', 'global RNG')!r}, this version draws {RNG_SCHEME!r}), so it cannot be "
            "continued as the run it began; start the run over or choose another --out"
        )
    recorded = dict(info["identity"])
    if "threads" not in recorded:  # written before the count was recorded: it cannot be checked
        recorded["threads"] = identity["threads"]
    if recorded != identity:
        raise CheckpointError(
            f"{config.out_dir}: its checkpoint is of a different run (model, seed, data or settings differ); "
            "choose another --out"
        )
    if info["epoch"] > epochs:
        raise CheckpointError(
            f"{config.out_dir}: the checkpoint already holds {info['epoch']} epochs, more than the {epochs} asked "
            f"for; pass --epochs {info['epoch']} or more to resume it, or choose another --out"
        )
    load_checkpoint(config.out_dir, model, optimizer, device, info)
    history.epochs = list(info["history"])
    return int(info["epoch"]) + 1


def run_threads(config: TrainConfig) -> int | None:
    """The thread count a run uses: the config's; when resuming, the checkpoint's; else None (default).

    One line MnistlabError for a count that is not a whole number from 1 up."""
    if config.threads is not None:
        if isinstance(config.threads, bool) or not isinstance(config.threads, int) or config.threads < 1:
            raise MnistlabError(f"field 'threads': must be a whole number above 0, got {config.threads!r}")
        return config.threads
    if config.resume and config.out_dir is not None:
        try:
            info = read_checkpoint_info(config.out_dir)
        except CheckpointError:
            return None  # _maybe_resume raises it with its own message
        recorded = (info or {}).get("identity", {}).get("threads")
        if isinstance(recorded, int) and not isinstance(recorded, bool) and recorded >= 1:
            return recorded
    return None


def is_finished(out_dir: Path, epochs: int) -> bool:
    """True when `out_dir` holds a checkpoint of the last epoch."""
    info = read_checkpoint_info(out_dir)
    return info is not None and int(info["epoch"]) >= epochs
