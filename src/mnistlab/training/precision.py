"""How a run's arithmetic is done on its device: the precision of its matmuls and convolutions,
whether CUDA must pick deterministic kernels, and whether the step is compiled. One home for them,
so `engine.fit` and `bundle.fit_bundle` set exactly the same and restore what they found afterwards.

- ``fp32`` (the default): strict float32, as Keras 2.2 computed. PyTorch lets cuDNN convolutions use
  TF32 on Ampere and later GPUs by default (10-bit mantissa inputs); fp32 turns that off for the run,
  so a GPU run rounds like a CPU run and like the notebooks.
- ``tf32``: float32 storage, TF32 tensor-core matmuls and convolutions (CUDA only, Ampere or later).
- ``bf16``: bfloat16 autocast for the forward pass, float32 master weights and loss.
- ``bf32``: float32 storage, with oneDNN's implicit bf16 for fp32 matmuls and convolutions
  (`torch.backends.mkldnn.matmul/conv.fp32_precision = "bf16"`, oneDNN's fpmath mode): the CPU
  analogue of tf32, for CPUs with bf16 arithmetic in hardware (AVX-512 BF16 or AMX). Elsewhere
  oneDNN would fall back to fp32 or emulate, so it is refused unless MNISTLAB_FORCE_BF32=1.

``flush_denormal`` flushes subnormal floats to zero on every CPU thread of the run, as TensorFlow's
threads (so Keras 2.2's) do: see denormals.py. Off by default, because the seeds' recorded numbers
were trained without it.

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

Precision = Literal["fp32", "tf32", "bf16", "bf32"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
COMPILE_MODES: tuple[str, ...] = ("default", "reduce-overhead", "max-autotune")
# cuBLAS is deterministic only with a fixed workspace (NVIDIA's cuBLAS docs, "Results reproducibility").
CUBLAS_DETERMINISTIC_WORKSPACE = ":4096:8"
# Set to 1 to use bf32 on a CPU without bf16 hardware (to test the path; it pays nothing there).
FORCE_BF32_VARIABLE = "MNISTLAB_FORCE_BF32"


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


def check_compile(setting: bool | str, device: torch.device, where: str = "") -> None:
    """One line when torch.compile is asked for on a CPU. It is for GPUs here: on a CPU it measured
    0.7x eager speed (Zen 4, benchmarks/RESULTS.md), and on an Intel Xeon with AMX (torch 2.13.0+cpu)
    the kernels inductor generated for a training step corrupted the heap in a plain PyTorch loop
    and trained mnistlab's models to NaN (same seed, eager: finite), so no result of it can be trusted."""
    if setting is not False and device.type == "cpu":
        prefix = f"{where}: " if where else ""
        raise MnistlabError(f"{prefix}field 'compile': torch.compile is for a CUDA GPU, not a CPU (slower there, and "
                            "its kernels trained to NaN on an Intel Xeon with AMX); leave it off on a CPU")


def check_precision(precision: str, device: torch.device, where: str = "") -> None:
    """One line when the device cannot do the precision asked for (`where`: whose run, e.g. the model).
    Whether it is one of PRECISIONS at all is limits.check_fit's to say, before anything runs."""
    prefix = f"{where}: " if where else ""
    if precision == "tf32" and device.type != "cuda":
        raise MnistlabError(f"{prefix}field 'precision': tf32 needs a CUDA GPU (Ampere or later), not "
                            f"{device.type}; use fp32 or bf16 there")
    if precision == "bf32":
        from mnistlab.util.machine import cpu_name, has_bf16_hardware

        if device.type != "cpu":
            raise MnistlabError(f"{prefix}field 'precision': bf32 is oneDNN's, for a CPU, not {device.type}; "
                                "use tf32 or bf16 there")
        if not has_bf16_hardware() and os.environ.get(FORCE_BF32_VARIABLE) != "1":
            raise MnistlabError(f"{prefix}field 'precision': bf32 needs a CPU with bf16 hardware (AVX-512 BF16 "
                                f"or AMX), not {cpu_name()}; use fp32, or set {FORCE_BF32_VARIABLE}=1 to force it")


@contextmanager
def run_numerics(device: torch.device, precision: str, deterministic: bool = False,
                 where: str = "", flush_denormal: bool = False) -> Iterator[None]:
    """Set the run's matmul/convolution precision, kernel determinism and subnormal mode; restore after.

    Every training path (fit, seed bundles, the cost probe) runs inside this, so on a CPU it also keeps
    freed memory for reuse while it trains (util/memory.py: no arithmetic changes, page faults go)."""
    import torch

    from mnistlab.training.denormals import flush_denormals
    from mnistlab.util.memory import keep_freed_memory

    check_precision(precision, device, where)
    if device.type != "cuda":
        with _deterministic_algorithms(deterministic), _onednn_fpmath(precision == "bf32"), \
                flush_denormals(flush_denormal), keep_freed_memory():
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
        with _deterministic_algorithms(deterministic), flush_denormals(flush_denormal):
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


@contextmanager
def _onednn_fpmath(bf16: bool) -> Iterator[None]:
    """oneDNN's fpmath mode for fp32 matmuls and convolutions: implicit bf16 inside, or as found."""
    if not bf16:
        yield
        return
    import torch

    backends = (torch.backends.mkldnn.matmul, torch.backends.mkldnn.conv)
    saved = [backend.fp32_precision for backend in backends]
    for backend in backends:
        backend.fp32_precision = "bf16"
    try:
        yield
    finally:
        for backend, value in zip(backends, saved):
            backend.fp32_precision = value
