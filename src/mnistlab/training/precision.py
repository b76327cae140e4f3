"""How a run's arithmetic is done on its device: the precision of its matmuls and convolutions,
whether CUDA must pick deterministic kernels, and whether the step is compiled. One home for them,
so `engine.fit` and `bundle.fit_bundle` set exactly the same and restore what they found afterwards.

- ``fp32`` (the default): strict float32, as Keras 2.2 computed. PyTorch lets cuDNN convolutions use
  TF32 on Ampere and later GPUs by default (10-bit mantissa inputs); fp32 turns that off for the run,
  so a GPU run rounds like a CPU run and like the notebooks.
- ``tf32``: float32 storage, TF32 tensor-core matmuls and convolutions (CUDA only, Ampere or later).
- ``bf16``: bfloat16 autocast for the forward pass, float32 master weights and loss.

``deterministic`` asks CUDA for deterministic kernels (`torch.use_deterministic_algorithms`, cuDNN
autotuning off, cuBLAS's fixed workspace); a kernel CUDA has no deterministic version of then raises.
On a CPU, training is deterministic already at a fixed thread count (engine.configure_threads).

``compile``: False, True (torch.compile's default mode) or a mode name; "reduce-overhead" captures
the step in CUDA graphs, which removes per-kernel launch cost, the time of small models on a GPU.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, Any, Literal, get_args

from mnistlab.errors import MnistlabError

# torch is imported by the functions that touch it, not here: PRECISIONS and COMPILE_MODES are the
# CLI's option choices and experiment files' field values, read where torch is not loaded yet
# (`mnistlab ls` starts without it); every function here gets a device or module from torch anyway.
if TYPE_CHECKING:
    import torch

Precision = Literal["fp32", "tf32", "bf16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
COMPILE_MODES: tuple[str, ...] = ("default", "reduce-overhead", "max-autotune")
# cuBLAS is deterministic only with a fixed workspace (NVIDIA's cuBLAS docs, "Results reproducibility").
CUBLAS_DETERMINISTIC_WORKSPACE = ":4096:8"


def autocast(device: torch.device, precision: str) -> Any:
    """The forward pass's autocast context: bf16 autocast, or nothing."""
    import torch

    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


def compiled(module: torch.nn.Module, setting: bool | str) -> Any:
    """`module` itself, or torch.compile'd in the mode `setting` names (True: the default mode)."""
    if setting is False:
        return module
    import torch

    return torch.compile(module, mode="default" if setting is True else setting)


def check_precision(precision: str, device: torch.device, where: str = "") -> None:
    """One line when the device cannot do the precision asked for (`where`: whose run, e.g. the model).
    Whether it is one of PRECISIONS at all is limits.check_fit's to say, before anything runs."""
    prefix = f"{where}: " if where else ""
    if precision == "tf32" and device.type != "cuda":
        raise MnistlabError(f"{prefix}field 'precision': tf32 needs a CUDA GPU (Ampere or later), not "
                            f"{device.type}; use fp32 or bf16 there")


@contextmanager
def run_numerics(device: torch.device, precision: str, deterministic: bool = False,
                 where: str = "") -> Iterator[None]:
    """Set the run's matmul/convolution precision and kernel determinism; restore both after."""
    import torch

    check_precision(precision, device, where)
    if device.type != "cuda":
        with _deterministic_algorithms(deterministic):
            yield
        return
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    if deterministic:
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        # Read when cuBLAS makes its first handle in this process: set it before any matmul.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_DETERMINISTIC_WORKSPACE)
    try:
        with _deterministic_algorithms(deterministic):
            yield
    finally:
        (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
         torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic) = saved


@contextmanager
def _deterministic_algorithms(on: bool) -> Iterator[None]:
    if not on:
        yield
        return
    import torch

    saved = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved)
