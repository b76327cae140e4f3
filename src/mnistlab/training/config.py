"""A run's settings (TrainConfig) and the machine it runs on: device, threads, inference batch size."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from mnistlab.errors import CheckpointError, MnistlabError
from mnistlab.training.checkpoint import read_checkpoint_info
from mnistlab.training.history import Protocol
from mnistlab.training.limits import activation_bytes_per_image
from mnistlab.training.precision import Precision
from mnistlab.util.machine import usable_cpus

# What the seed notebooks did: validate on the test set (TrainConfig.validate_on).
NOTEBOOK_PROTOCOL = "test"


# Inference batches: on a CPU sized by the machine's measured cache budget (training/eval_batch.py);
# on a GPU as many images as a quarter of the free memory holds (fewer launches, often the whole
# validation or test set in one batch): see eval_batch_size.


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
    precision: Precision = "fp32"  # precision.py: fp32 (strict), tf32 (CUDA), bf16 autocast, bf32 (oneDNN)
    deterministic: bool = False  # CUDA: deterministic kernels only (precision.run_numerics)
    # Subnormal floats flushed to zero on every CPU thread, as TensorFlow's threads run (denormals.py).
    flush_denormal: bool = False
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
    """Images per inference batch for a model (its resolved spec) on `device`: on a CPU what fits this
    machine's measured cache budget (eval_batch.py); on a GPU as many as GPU_EVAL_MEMORY_SHARE of the
    free memory (`free_bytes`, else asked of the device) holds for `seeds` models' activations, at
    most `images`."""
    if device.type != "cuda":
        from mnistlab.training.eval_batch import cpu_eval_batch  # here: it builds a zoo model to probe

        return cpu_eval_batch(resolved, seeds)
    if free_bytes is None:
        free_bytes, _ = torch.cuda.mem_get_info(device)
    fits = int(free_bytes * GPU_EVAL_MEMORY_SHARE) // (activation_bytes_per_image(resolved) * seeds)
    return max(1, min(images, fits))


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
            return None  # maybe_resume raises it with its own message
        recorded = (info or {}).get("identity", {}).get("threads")
        if isinstance(recorded, int) and not isinstance(recorded, bool) and recorded >= 1:
            return recorded
    return None
