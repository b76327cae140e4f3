"""Atomic training checkpoints: tensors as safetensors, everything else as JSON, never pickle.

A checkpoint is two files: `epoch-N.safetensors` (model and optimizer tensors) and
`checkpoint.json` (epoch, history, optimizer scalars, run identity). The JSON is written last,
by rename, and names its tensor file, so a crash at any point leaves the previous checkpoint
whole: the JSON is the commit point.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

POINTER = "checkpoint.json"


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, write: Any) -> None:
    """Call `write(tmp_path)`, fsync it, and rename it over `path`."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _split_optimizer_state(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Optimizer state_dict → (tensors keyed 'optim.<param>.<name>', JSON-able rest)."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"scalars": scalars, "param_groups": state["param_groups"]}


def _join_optimizer_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    for index, entry in meta["scalars"].items():
        state.setdefault(int(index), {}).update(entry)
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    directory: Path, epoch: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer, info: dict[str, Any]
) -> None:
    """Write the state after `epoch` (1-based) completed, then drop the previous tensor file."""
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    optim_tensors, optim_meta = _split_optimizer_state(optimizer.state_dict())
    tensors.update(optim_tensors)
    tensor_file = f"epoch-{epoch}.safetensors"
    write_atomically(directory / tensor_file, lambda tmp: save_file(tensors, str(tmp)))
    pointer = {"epoch": epoch, "tensors": tensor_file, "optimizer": optim_meta, **info}
    write_atomically(directory / POINTER, lambda tmp: tmp.write_text(json.dumps(pointer, indent=1)))
    for old in directory.glob("epoch-*.safetensors"):
        if old.name != tensor_file:
            old.unlink(missing_ok=True)


def read_checkpoint_info(directory: Path) -> dict[str, Any] | None:
    """The committed checkpoint's JSON, or None when there is none."""
    pointer = directory / POINTER
    if not pointer.exists():
        return None
    return json.loads(pointer.read_text())


def load_checkpoint(
    directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, device: torch.device
) -> dict[str, Any] | None:
    """Restore model and optimizer from the committed checkpoint; return its JSON (or None)."""
    info = read_checkpoint_info(directory)
    if info is None:
        return None
    tensors = load_file(str(directory / info["tensors"]), device=str(device))
    model.load_state_dict({k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")})
    optimizer.load_state_dict(_join_optimizer_state(tensors, info["optimizer"]))
    return info
