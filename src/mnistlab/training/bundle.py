"""Seed bundles: K seeds of one model trained as one batched computation.

Small models leave a processor mostly idle, their time going to per-step overhead paid once per
seed; a bundle pays it once for K seeds. Each seed keeps everything a separate run has: its
initial weights (`build_model(spec, seed)`), its shuffle order and dropout masks (rng.py: drawn
from its own generators in the same order as `engine.fit`), its BatchNormalization statistics and
its optimizer state (stacked.py: per-seed slices of stacked tensors; the Keras optimizers are
element-wise, and their per-group counters advance together because every seed in a bundle is at
the same step), its divergence and early stopping (a seed leaves the bundle; the rest go on), its
checkpoint (the single-run format, in its own `out_dir`) and its History.

So a bundle takes the same steps as K separate runs: equal to rounding (float64 on a CPU: 1e-9
relative after 20 steps; float32: within float32 noise, which Adam can amplify in near-zero
gradients), see tests/test_bundle.py.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from mnistlab.nn.build import KerasModel, build_model, prepare_input
from mnistlab.training.checkpoint import save_checkpoint
from mnistlab.data.datasets import Dataset
from mnistlab.training.early_stopping import EarlyStopping
from mnistlab.training.engine import DeviceData, evaluate, fit, loss_input, machine_paths, place_data, torch_dtype
from mnistlab.training.history import COMPLETED, DIVERGED, History, Reporter
from mnistlab.training.config import TrainConfig, configure_threads, run_threads, eval_batch_size, resolve_device
from mnistlab.training.resume import checkpoint_identity, maybe_resume
from mnistlab.errors import CheckpointError, MnistlabError
from mnistlab.training.limits import FLOAT_BYTES, Limits, activation_bytes_per_image, check_bundle, check_fit
from mnistlab.training.optim import make_optimizer
from mnistlab.training.precision import autocast, compiled, run_numerics
from mnistlab.nn.rng import dropout_generator, shuffle_order
from mnistlab.spec.fields import SEED_BOUND
from mnistlab.spec.model import ModelSpec, resolve
from mnistlab.nn.stacked import StackedModel, shared_inputs, stack_inputs
from mnistlab.util.strict import whole_number

__all__ = ["AUTO_MIN_GAIN", "AUTO_PROBE_SECONDS", "BundleChoice", "bundle_capacity", "check_seed_list", "choose_bundle",
           "fit_bundle", "seed_dir", "train_bundle_epoch"]

# --bundle auto: bundle sizes probed (besides the most that fit), and the gain over one seed at a time a
# bundle must show on the probe to be chosen. On a CPU a bundle's wider GEMMs rarely pay (2-core AMD EPYC
# Zen 3, s000-m7: 0.57-0.64x one seed at a time, benchmarks/RESULTS.md); the margin keeps the probe's noise
# on a loaded machine from choosing a bundle that is no faster.
AUTO_CANDIDATES = (2, 4, 8, 16, 32, 64)
AUTO_MIN_GAIN = 1.10
# Each size is probed AUTO_ROUNDS times, the sizes interleaved, and judged by its median: on a loaded
# machine one probe of a few steps swings by tens of per cent (s000-m7, 8 seeds, load 7: single probes of
# 0.94x to 1.55x one seed at a time, in no order of K), and load that comes and goes hits every size alike.
AUTO_ROUNDS = 3
AUTO_PROBE_SECONDS = 1.0  # per probe; a size whose one step takes longer is measured by that step

# Fields in which the configs of one bundle may differ (everything else is shared training).
PER_SEED_FIELDS = ("seed", "out_dir", "resume")


@dataclass
class _Seed:
    index: int  # position in `configs`
    config: TrainConfig
    model: KerasModel
    optimizer: torch.optim.Optimizer
    history: History
    identity: dict[str, Any]
    stopper: EarlyStopping | None
    first_epoch: int
    train_seconds: float = 0.0
    timed_images: int = 0
    bundle_size: int = 1  # seeds trained together when this one started


def seed_dir(out: Path, seed: int) -> Path:
    """Where seed `seed` of a bundle trained with `--out DIR` writes its model folder."""
    return out / f"seed-{seed}"


def check_seed_list(seeds: Any, seed_given: bool = False) -> list[int]:
    """`--seeds 0,1,2`: distinct whole numbers in the seed range, and not together with `--seed`."""
    if seed_given:
        raise MnistlabError("--seed and --seeds: give one seed or a list of seeds, not both")
    if isinstance(seeds, str):
        numbers = [whole_number(part, upper=None) for part in seeds.split(",")]
        if any(number is None for number in numbers):
            raise MnistlabError(f"--seeds {seeds!r}: give whole numbers separated by commas, e.g. 0,1,2,3")
        seeds = numbers
    seeds = list(seeds)
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < SEED_BOUND for s in seeds):
        raise MnistlabError(f"--seeds {seeds!r}: give whole numbers from 0 to {SEED_BOUND - 1}")
    if len(set(seeds)) != len(seeds):
        raise MnistlabError(f"--seeds {','.join(map(str, seeds))}: each seed once")
    return seeds


def _check_configs(spec: ModelSpec, configs: Sequence[TrainConfig]) -> None:
    if not configs:
        raise MnistlabError(f"model '{spec.id}': a bundle needs at least one seed")
    shared = replace(configs[0], **{name: getattr(TrainConfig(), name) for name in PER_SEED_FIELDS})
    for config in configs[1:]:
        if replace(config, **{name: getattr(TrainConfig(), name) for name in PER_SEED_FIELDS}) != shared:
            raise MnistlabError(f"model '{spec.id}': the configs of a bundle may differ only in "
                                f"{', '.join(PER_SEED_FIELDS)}")
    seeds = [config.seed for config in configs]
    if len(set(seeds)) != len(seeds):
        raise MnistlabError(f"model '{spec.id}': a bundle's seeds must differ, got {seeds}")
    dirs = [config.out_dir for config in configs if config.out_dir is not None]
    if len(set(dirs)) != len(dirs):
        raise MnistlabError(f"model '{spec.id}': each seed of a bundle needs its own out_dir")


def fit_bundle(
    spec: ModelSpec,
    dataset: Dataset,
    configs: Sequence[TrainConfig],
    reporter: Reporter | None = None,
    on_epoch: Callable[[int, int, dict[str, float]], None] | None = None,
) -> list[History]:
    """Train one seed per config as one bundle; one History per config, as `engine.fit` returns it.

    `on_epoch(index, epoch, metrics)` runs per seed per epoch before that seed's checkpoint.
    A damaged or foreign checkpoint raises CheckpointError with `out_dir` naming its folder.
    """
    _check_configs(spec, configs)
    if len(configs) == 1:
        single = (lambda epoch, metrics: on_epoch(0, epoch, metrics)) if on_epoch is not None else None
        try:
            return [fit(spec, dataset, configs[0], reporter, single)]
        except CheckpointError as error:
            error.out_dir = configs[0].out_dir  # type: ignore[attr-defined]
            raise
    reporter = reporter or Reporter()
    base = configs[0]
    epochs = base.epochs or spec.training.epochs
    batch_size = base.batch_size or spec.training.batch_size
    for config in configs:
        check_fit(spec, dataset, config, epochs, batch_size)
    check_bundle(spec, len(configs), batch_size, Limits(base.max_params, base.max_activation_mib))
    device = resolve_device(base.device)
    with run_numerics(device, base.precision, base.deterministic, where=f"model '{spec.id}'",
                      flush_denormal=base.flush_denormal):
        return _fit_stacked(spec, dataset, configs, base, device, epochs, batch_size, reporter, on_epoch)


def _fit_stacked(spec: ModelSpec, dataset: Dataset, configs: Sequence[TrainConfig], base: TrainConfig,
                 device: torch.device, epochs: int, batch_size: int, reporter: Reporter,
                 on_epoch: Callable[[int, int, dict[str, float]], None] | None) -> list[History]:
    configure_threads(run_threads(base))  # fixed for the run; on resume the checkpoint's (engine.run_threads)
    data = place_data(dataset, base, device)
    resolved = resolve(spec)
    seeds = [_prepare_seed(index, spec, resolved, config, dataset, data, device, batch_size, epochs)
             for index, config in enumerate(configs)]
    # Seeds whose checkpoints stopped at different epochs (a crash between two checkpoint writes)
    # train as sub-bundles, one per resume epoch, so no seed repeats or skips an epoch.
    for first_epoch in sorted({seed.first_epoch for seed in seeds}):
        group = [seed for seed in seeds if seed.first_epoch == first_epoch]
        if first_epoch <= epochs:
            _train_group(spec, group, data, first_epoch, epochs, batch_size, base, device, reporter, on_epoch)
    return [_finish(seed, data, epochs, base.precision) for seed in seeds]


def _prepare_seed(index: int, spec: ModelSpec, resolved: Any, config: TrainConfig, dataset: Dataset,
                  data: DeviceData, device: torch.device, batch_size: int, epochs: int) -> _Seed:
    # Built as a single run builds it (fused chains included, as the checkpoint identity says): the
    # stacked layout runs fused.py's bn_dropout over K*C channels where the single model fuses.
    model = build_model(resolved, seed=config.seed).to(device, torch_dtype(config))
    # As a single run chooses them, but in NCHW: the stacked model is built from these in NCHW.
    paths = machine_paths(model, config, device, layout=False)
    optimizer = make_optimizer(spec.training.optimizer.name, model.parameters(), **spec.training.optimizer.args)
    history = History(model_id=spec.id, seed=config.seed, protocol=config.validate_on, device=str(device),
                      train_images=len(data.train_y), threads=torch.get_num_threads(), notes=paths.notes)
    identity = checkpoint_identity(spec, config, batch_size, dataset.info.name, torch.get_num_threads(),
                                   paths.plain_convs)
    try:
        first_epoch = maybe_resume(config, identity, model, optimizer, device, history, epochs)
        stopper = EarlyStopping(config.patience, config.out_dir) if config.patience is not None else None
        if stopper is not None:
            stopper.resume(history.epochs, model)
    except CheckpointError as error:
        error.out_dir = config.out_dir  # type: ignore[attr-defined]  # the runner sets just this folder aside
        raise
    return _Seed(index, config, model, optimizer, history, identity, stopper, first_epoch)


# --- stacking and unstacking ---------------------------------------------------------------

_GROUP_COUNTERS = ("iterations", "m_schedule")  # per-group optimizer numbers (optim.py)


def _stack(spec: ModelSpec, seeds: list[_Seed], device: torch.device) -> tuple[StackedModel, torch.optim.Optimizer]:
    stacked = StackedModel([seed.model for seed in seeds]).to(device)
    optimizer = make_optimizer(spec.training.optimizer.name, stacked.parameters(), **spec.training.optimizer.args)
    per_seed = [list(seed.model.parameters()) for seed in seeds]
    for number, param in enumerate(stacked.parameters()):
        states = [seed.optimizer.state.get(params[number], {}) for seed, params in zip(seeds, per_seed)]
        if states[0]:
            optimizer.state[param] = {key: torch.stack([state[key] for state in states]) for key in states[0]}
    counters = [{k: seed.optimizer.param_groups[0][k] for k in _GROUP_COUNTERS if k in seed.optimizer.param_groups[0]}
                for seed in seeds]
    if any(c != counters[0] for c in counters):  # pragma: no cover - seeds are grouped by epoch
        raise MnistlabError(f"model '{spec.id}': the seeds of a bundle are at different optimizer steps")
    optimizer.param_groups[0].update(counters[0])
    return stacked, optimizer


def _unstack(stacked: StackedModel, optimizer: torch.optim.Optimizer, seeds: list[_Seed]) -> None:
    """Write each seed's slice back into its own model and optimizer (for checkpoints and the end)."""
    counters = {k: optimizer.param_groups[0][k] for k in _GROUP_COUNTERS if k in optimizer.param_groups[0]}
    for index, seed in enumerate(seeds):
        stacked.unstack(index, seed.model)
        for param, own in zip(stacked.parameters(), seed.model.parameters()):
            state = optimizer.state.get(param)
            if state:
                seed.optimizer.state[own] = {key: value[index].clone() for key, value in state.items()}
        seed.optimizer.param_groups[0].update(counters)


# --- training ------------------------------------------------------------------------------


def train_bundle_epoch(stacked: StackedModel, optimizer: torch.optim.Optimizer, data: DeviceData, orders: torch.Tensor,
                 batch_size: int, precision: str, dtype: torch.dtype,
                 on_step: Callable[..., None] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """One epoch of every seed; (K,) device tensors of summed loss and correct counts."""
    device = data.train_x.device
    stacked.train()
    k, n = orders.shape
    loss_sum = torch.zeros(k, device=device, dtype=dtype)
    correct = torch.zeros(k, device=device, dtype=torch.int64)
    steps = math.ceil(n / batch_size)
    seen = 0
    for step in range(steps):
        index = orders[:, step * batch_size : (step + 1) * batch_size]  # (K, B): each seed's own order
        batch = index.shape[1]
        x = prepare_input(data.train_x[index.reshape(-1)], stacked.input_shape, dtype)
        x = stack_inputs(x.reshape(k, batch, *x.shape[1:]), stacked.input_shape)
        y = data.train_y[index]
        with autocast(device, precision):
            logits = stacked(x)
        losses = F.cross_entropy(loss_input(logits).reshape(k * batch, -1), y.reshape(-1), reduction="none")
        losses = losses.reshape(k, batch).mean(1)  # each seed's batch mean, as fit's loss
        optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()  # seed k's gradient is that of its own loss alone
        optimizer.step()
        loss_sum += losses.detach() * batch
        correct += (logits.detach().argmax(2) == y).sum(1)
        seen += batch
        if on_step is not None:
            on_step(step + 1, steps, loss_sum.mean(), correct.double().mean(), seen)
    return loss_sum, correct


@torch.inference_mode()
def _evaluate(stacked: StackedModel, x: torch.Tensor, y: torch.Tensor, precision: str,
              dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Every seed on the same images: (K,) loss sums and correct counts."""
    stacked.eval()
    loss_sum = torch.zeros(stacked.k, device=x.device, dtype=dtype)
    correct = torch.zeros(stacked.k, device=x.device, dtype=torch.int64)
    size = eval_batch_size(stacked.template[0].resolved, x.device, len(y), seeds=stacked.k)
    for start in range(0, len(y), size):
        xb = shared_inputs(prepare_input(x[start : start + size], stacked.input_shape, dtype), stacked.k,
                           stacked.input_shape)
        yb = y[start : start + size]
        with autocast(x.device, precision):
            logits = loss_input(stacked(xb))
        batch = len(yb)
        loss_sum += F.cross_entropy(logits.reshape(stacked.k * batch, -1), yb.repeat(stacked.k),
                                    reduction="none").reshape(stacked.k, batch).sum(1)
        correct += (logits.argmax(2) == yb).sum(1)
    return loss_sum, correct


def _train_group(spec: ModelSpec, seeds: list[_Seed], data: DeviceData, first_epoch: int, epochs: int,
                 batch_size: int, base: TrainConfig, device: torch.device, reporter: Reporter,
                 on_epoch: Callable[[int, int, dict[str, float]], None] | None) -> None:
    active = list(seeds)
    for seed in active:
        seed.bundle_size = len(active)
    stacked, optimizer = _stack(spec, active, device)
    step_model: Any = compiled(stacked, base.compile)
    dtype = torch_dtype(base)
    n = len(data.train_y)
    steps = math.ceil(n / batch_size)
    for epoch in range(first_epoch, epochs + 1):
        reporter.start_epoch(epoch, epochs, steps)
        started = time.perf_counter()
        stacked.generators = [dropout_generator(seed.config.seed, epoch, device) for seed in active]
        orders = torch.stack([shuffle_order(n, seed.config.seed, epoch) for seed in active]).to(device)
        try:
            loss_sum, correct = train_bundle_epoch(step_model, optimizer, data, orders, batch_size, base.precision, dtype,
                                             reporter.step if reporter.wants_steps() else None)
            loss_sum.sum().item()  # wait for the device: the training time must not include validation
            trained = time.perf_counter()
            val_loss, val_correct = _evaluate(stacked, data.val_x, data.val_y, base.precision, dtype)
            fit_loss, fit_correct = _evaluate(stacked, data.train_eval_x, data.train_eval_y, base.precision, dtype)
        except torch.cuda.OutOfMemoryError:
            raise MnistlabError(
                f"model '{spec.id}': the GPU ran out of memory training {len(active)} seeds at batch size "
                f"{batch_size}; try a smaller --bundle"
            ) from None
        seconds = time.perf_counter() - started
        _unstack(stacked, optimizer, active)
        columns = {  # the one host sync of the epoch
            "loss": (loss_sum / n).tolist(), "acc": (correct.double() / n).tolist(),
            "val_loss": (val_loss / len(data.val_y)).tolist(), "val_acc": (val_correct.double() / len(data.val_y)).tolist(),
            "train_eval_loss": (fit_loss / len(data.train_eval_y)).tolist(),
            "train_eval_acc": (fit_correct.double() / len(data.train_eval_y)).tolist(),
        }
        rows = [{"epoch": epoch, **{key: values[i] for key, values in columns.items()}, "seconds": seconds}
                for i in range(len(active))]
        for seed, metrics in zip(active, rows):
            reporter.end_seed_epoch(seed.config.seed, epoch, epochs, metrics)
        reporter.end_epoch(epoch, epochs, {key: sum(r[key] for r in rows) / len(rows) for key in rows[0]})
        leaving = []
        for seed, metrics in zip(active, rows):
            seed.history.epochs.append(metrics)
            if epoch > 1 or epochs == 1:  # the first epoch pays for warm-up (allocation, compile)
                seed.train_seconds += trained - started
                seed.timed_images += n * len(active)
            if not all(math.isfinite(metrics[k]) for k in ("loss", "val_loss")):
                seed.history.status, seed.history.diverged_epoch = DIVERGED, epoch
                leaving.append(seed)
                continue
            stop = seed.stopper is not None and seed.stopper.update(epoch, metrics["val_loss"], seed.model)
            if on_epoch is not None:  # before the checkpoint, as in fit
                on_epoch(seed.index, epoch, metrics)
            if seed.config.out_dir is not None:
                save_checkpoint(seed.config.out_dir, epoch, seed.model, seed.optimizer,
                                {"identity": seed.identity, "history": seed.history.epochs})
            if stop:
                leaving.append(seed)
        if leaving:
            active = [seed for seed in active if seed not in leaving]
            if not active:
                return
            stacked, optimizer = _stack(spec, active, device)
            step_model = compiled(stacked, base.compile)


def _finish(seed: _Seed, data: DeviceData, epochs: int, precision: str) -> History:
    """As the end of `fit`: throughput, best weights restored, one test evaluation."""
    history = seed.history
    if seed.timed_images:
        history.images_per_second = seed.timed_images / seed.train_seconds
        history.images_per_second_note = (
            f"bundle of {seed.bundle_size} seeds, {seed.bundle_size} x images / s; training steps only (no validation), "
            + ("epochs 2+ (the first epoch's warm-up excluded)" if epochs > 1 else "one epoch")
        )
    if seed.stopper is not None and history.status == COMPLETED:
        seed.stopper.restore(seed.model)
        history.best_epoch, history.stopped_early = seed.stopper.best_epoch, seed.stopper.stopped
    if history.status == COMPLETED:
        test_loss, test_correct, predicted = evaluate(seed.model, data.test_x, data.test_y, precision)
        history.test_loss = test_loss.item() / len(data.test_y)
        history.test_acc = test_correct.item() / len(data.test_y)
        history.test_predictions = predicted.cpu().tolist()
        history.test_labels = data.test_y.cpu().tolist()
    history.model = seed.model
    return history


@dataclass(frozen=True)
class BundleChoice:
    """What --bundle auto chose for one model, and the probe it chose from (for the run's notes)."""

    k: int
    rates: dict[int, float]  # bundle size → median training images/s over the rounds, all its seeds together
    capacity: int  # the most seeds memory allows (bundle_capacity)
    rounds: int = AUTO_ROUNDS

    def note(self) -> str:
        if not self.rates:
            return f"bundle auto: K = {self.k} (one seed pending, or memory allows one; nothing probed)"
        rates = ", ".join(f"K={k}: {rate:,.0f}" for k, rate in sorted(self.rates.items()))
        return (f"bundle auto: probe of training images/s (all seeds together, median of {self.rounds} interleaved "
                f"probes) {rates}; chose K = {self.k} (a bundle must be {AUTO_MIN_GAIN:g}x one seed at a time; "
                f"memory allows {self.capacity})")


def choose_bundle(seeds: int, capacity: int, probe: Callable[[int], float], rounds: int = AUTO_ROUNDS) -> BundleChoice:
    """K for `--bundle auto`: the bundle size whose probed training rate (`probe(k)`: images/s of k seeds
    trained together; median of `rounds` probes, sizes interleaved) is highest, but only a bundle at least
    AUTO_MIN_GAIN times one seed at a time's rate; else 1, so auto never trains slower than one seed at a
    time by more than the probe's noise."""
    limit = max(1, min(seeds, capacity))
    if limit == 1:
        return BundleChoice(1, {}, capacity, rounds)
    sizes = [1, *sorted({k for k in AUTO_CANDIDATES if k < limit} | {limit})]
    measured: dict[int, list[float]] = {k: [] for k in sizes}
    for _ in range(rounds):
        for k in sizes:
            measured[k].append(probe(k))
    rates = {k: float(statistics.median(values)) for k, values in measured.items()}
    best = max(rates, key=lambda k: rates[k])
    return BundleChoice(best if rates[best] >= AUTO_MIN_GAIN * rates[1] else 1, rates, capacity, rounds)


def bundle_capacity(spec: ModelSpec, dataset: Dataset, config: TrainConfig) -> int:
    """How many seeds of `spec` one bundle may hold: activations within the activation limit
    (`max_activation_mib`), and on a GPU within half its free memory (parameters, gradients and
    optimizer state counted four times, activations three times for the backward pass)."""
    resolved = resolve(spec)
    batch_size = config.batch_size or spec.training.batch_size
    activations = activation_bytes_per_image(resolved) * batch_size
    limit = Limits(config.max_params, config.max_activation_mib).activation_mib * 2**20
    capacity = max(1, int(limit // max(activations, 1)))
    device = resolve_device(config.device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        per_seed = 3 * activations + 4 * resolved.total_params * FLOAT_BYTES
        capacity = min(capacity, max(1, int(free // 2 // per_seed)))
    return capacity
