"""Resuming a run: the identity a checkpoint must match, and loading it to continue where it stopped.

A checkpoint resumes only the run that wrote it: same model, seed, data, settings, thread count,
random-number scheme and kernels (fused or not), since any of these changes the numbers. The epoch
count is not part of it, so a finished run can be extended.
"""

from __future__ import annotations

from typing import Any

import torch

from mnistlab.errors import CheckpointError, MnistlabError
from mnistlab.nn.build import KerasModel, fuses
from mnistlab.nn.fused import FUSED_SCHEME
from mnistlab.nn.rng import RNG_SCHEME
from mnistlab.spec.model import ModelSpec, resolve
from mnistlab.training.checkpoint import load_checkpoint, read_checkpoint_info
from mnistlab.training.config import TrainConfig
from mnistlab.training.history import History


def checkpoint_identity(spec: ModelSpec, config: TrainConfig, batch_size: int, dataset: str,
                         threads: int | None = None, plain_convs: bool = False,
                         channels_last: bool = False) -> dict[str, Any]:
    """What must match for a checkpoint to be resumed (else it belongs to another run).

    `plain_convs`: the machine's probe chose oneDNN's conv over the unfold + GEMM form for the
    model's small convolutions (cpu_paths.py), which sums in another order. `channels_last`: its bf16
    convolutions run in channels_last (cpu_paths.py), likewise.

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
    if config.flush_denormal:  # subnormals become zeros: other numbers (only when asked, likewise)
        identity["flush_denormal"] = True
    if plain_convs:  # only then: every earlier checkpoint ran the GEMM form
        identity["small_convs"] = "conv"
    if channels_last:  # only then: every earlier bf16 checkpoint ran NCHW
        identity["bf16_layout"] = "channels_last"
    if fuses(resolve(spec)):  # fused.py's kernels round differently: a plain run's checkpoint is another run
        identity["fused"] = FUSED_SCHEME
    return identity


def maybe_resume(
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
