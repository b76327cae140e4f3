"""Atomic training checkpoints: tensors as safetensors, everything else as JSON, never pickle.

A checkpoint is two files: `epoch-N.safetensors` (model and optimizer tensors) and
`checkpoint.json` (epoch, history, optimizer scalars, run identity). The JSON is written last,
by rename, so a crash at any point leaves the previous checkpoint whole: the JSON is the commit
point.

A checkpoint is data, not instructions: the tensor file's name is derived from the validated
epoch (never read from the JSON, so no JSON can make us open a file outside the folder), every
JSON field is checked for type and range, and the tensor file's header is checked against the
model and optimizer being resumed (keys, shapes, dtypes) before a single tensor is loaded. Any
mismatch is a one-line CheckpointError naming the folder and what is wrong.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from mnistlab.util.atomic import write_atomically, write_text
from mnistlab.errors import CheckpointError, CheckpointWriteError
from mnistlab.util.strict import whole_number

__all__ = ["POINTER", "load_checkpoint", "read_checkpoint_info", "save_checkpoint", "tensor_file",
           "write_atomically"]

POINTER = "checkpoint.json"
REQUIRED_FIELDS = ("epoch", "optimizer", "identity", "history")
# Written by earlier versions (the JSON named its tensor file); accepted and ignored.
IGNORED_FIELDS = ("tensors",)
MAX_EPOCH = 1_000_000  # far above any real run; keeps a tampered epoch from meaning anything

_DTYPE_NAMES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL",
}


def tensor_file(epoch: int) -> str:
    """The tensor file of the checkpoint after ``epoch``: derived, never read from the JSON."""
    return f"epoch-{int(epoch)}.safetensors"


def _damaged(directory: Path, what: str) -> CheckpointError:
    return CheckpointError(f"{directory}: damaged checkpoint ({what}); remove that folder to start "
                           "the run over, or choose another --out")


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
    """Write the state after `epoch` (1-based) completed, then drop the previous tensor file.

    CheckpointWriteError (exit status 1) when the disk is full or the folder unwritable; the
    previous checkpoint is then still the committed one and no temporary file is left.
    """
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    optim_tensors, optim_meta = _split_optimizer_state(optimizer.state_dict())
    tensors.update(optim_tensors)
    name = tensor_file(epoch)
    pointer = {"epoch": epoch, "optimizer": optim_meta, **info}
    try:
        directory.mkdir(parents=True, exist_ok=True)
        write_atomically(directory / name, lambda tmp: save_file(tensors, str(tmp)))
        write_text(directory / POINTER, json.dumps(pointer, indent=1))
    except OSError as error:
        raise CheckpointWriteError(
            f"{directory}: cannot write the checkpoint of epoch {epoch}: {error.strerror or error}; "
            "the previous checkpoint is intact: free space or fix permissions, then resume"
        ) from error
    for old in directory.glob("epoch-*.safetensors"):
        if old.name != name:
            old.unlink(missing_ok=True)


# --------------------------------------------------------------------------- reading


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    """A JSON value's kind, with bool apart from numbers and int apart from float only by value."""
    if isinstance(value, bool):
        return "bool"
    if _is_number(value):
        return "number"
    return type(value).__name__


def read_checkpoint_info(directory: Path) -> dict[str, Any] | None:
    """The committed checkpoint's JSON with every field checked, or None when there is none.

    CheckpointError when the JSON is unreadable or any field has the wrong type or range.
    """
    pointer = directory / POINTER
    if not pointer.exists():
        return None
    try:
        info = json.loads(pointer.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise _damaged(directory, f"{POINTER} is not readable JSON: {error}") from None
    if not isinstance(info, dict):
        raise _damaged(directory, f"{POINTER} holds a {_kind(info)}, not an object")
    missing = [key for key in REQUIRED_FIELDS if key not in info]
    unknown = sorted(set(info) - set(REQUIRED_FIELDS) - set(IGNORED_FIELDS))
    if missing or unknown:
        raise _damaged(directory, f"{POINTER} lacks {missing} / has unknown fields {unknown}")
    epoch = info["epoch"]
    if not isinstance(epoch, int) or isinstance(epoch, bool) or not 1 <= epoch <= MAX_EPOCH:
        raise _damaged(directory, f"epoch {epoch!r} is not a whole number in 1..{MAX_EPOCH}")
    if not isinstance(info["identity"], dict):
        raise _damaged(directory, "identity is not an object")
    _check_history(directory, info["history"], epoch)
    _check_optimizer_meta(directory, info["optimizer"])
    return info


def _check_history(directory: Path, history: Any, epoch: int) -> None:
    if not isinstance(history, list) or len(history) != epoch:
        length = len(history) if isinstance(history, list) else _kind(history)
        raise _damaged(directory, f"history has {length} entries, not one per epoch ({epoch})")
    for number, entry in enumerate(history, start=1):
        if not isinstance(entry, dict) or entry.get("epoch") != number or isinstance(entry.get("epoch"), bool):
            raise _damaged(directory, f"history entry {number} is not epoch {number}'s metrics")
        bad = sorted(key for key, value in entry.items() if not _is_number(value))
        if bad:
            raise _damaged(directory, f"history entry {number} has non-numeric {bad}")


def _check_optimizer_meta(directory: Path, meta: Any) -> None:
    if not isinstance(meta, dict) or set(meta) != {"scalars", "param_groups"}:
        raise _damaged(directory, "optimizer is not {scalars, param_groups}")
    scalars, groups = meta["scalars"], meta["param_groups"]
    if not isinstance(scalars, dict) or not all(
        whole_number(key) is not None and isinstance(entry, dict) and all(_is_number(v) for v in entry.values())
        for key, entry in scalars.items()
    ):
        raise _damaged(directory, "optimizer scalars are not numbers per parameter index")
    if not isinstance(groups, list) or not all(isinstance(group, dict) for group in groups):
        raise _damaged(directory, "optimizer param_groups is not a list of objects")


def _check_against(directory: Path, info: dict[str, Any], model: torch.nn.Module,
                   optimizer: torch.optim.Optimizer) -> Path:
    """Check the optimizer JSON and the tensor file's header against what is being resumed;
    return the tensor file."""
    fresh_groups = optimizer.state_dict()["param_groups"]
    groups = info["optimizer"]["param_groups"]
    if len(groups) != len(fresh_groups):
        raise _damaged(directory, f"{len(groups)} optimizer parameter groups, the model has {len(fresh_groups)}")
    for number, (group, fresh) in enumerate(zip(groups, fresh_groups)):
        if set(group) != set(fresh) or group["params"] != fresh["params"]:
            raise _damaged(directory, f"optimizer parameter group {number} does not match the model's")
        wrong = sorted(key for key in fresh if _kind(group[key]) != _kind(fresh[key]))
        wrong += sorted(key for key in fresh if _kind(group[key]) == "number" and not math.isfinite(group[key]))
        if wrong:
            raise _damaged(directory, f"optimizer parameter group {number} has bad {wrong}")
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if any(int(index) >= len(params) for index in info["optimizer"]["scalars"]):
        raise _damaged(directory, "optimizer scalars name a parameter the model does not have")
    expected = {f"model.{k}": (tuple(v.shape), _DTYPE_NAMES.get(v.dtype)) for k, v in model.state_dict().items()}
    path = directory / tensor_file(info["epoch"])
    if not path.is_file():
        raise _damaged(directory, f"{path.name} is missing")
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = {key: (tuple(handle.get_slice(key).get_shape()), handle.get_slice(key).get_dtype())
                      for key in handle.keys()}
    except (OSError, SafetensorError) as error:
        raise _damaged(directory, f"{path.name} is not a readable tensor file: {error}") from None
    model_keys = {key for key in header if key.startswith("model.")}
    if model_keys != set(expected):
        missing, extra = sorted(set(expected) - model_keys), sorted(model_keys - set(expected))
        raise _damaged(directory, f"{path.name} lacks {missing[:3]} / has unknown {extra[:3]} model tensors")
    for key in sorted(model_keys):
        if header[key] != expected[key]:
            raise _damaged(directory, f"{path.name}: {key} is {header[key]}, the model needs {expected[key]}")
    for key in sorted(set(header) - model_keys):
        parts = key.split(".", 2)
        index = whole_number(parts[1]) if len(parts) == 3 and parts[0] == "optim" else None
        if index is None or index >= len(params):
            raise _damaged(directory, f"{path.name}: unknown tensor {key!r}")
        param = params[index]
        if header[key] != (tuple(param.shape), _DTYPE_NAMES.get(param.dtype)):
            raise _damaged(directory, f"{path.name}: {key} is {header[key]}, its parameter is "
                           f"{(tuple(param.shape), _DTYPE_NAMES.get(param.dtype))}")
    return path


def load_checkpoint(
    directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, device: torch.device,
    info: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """Restore model and optimizer from the committed checkpoint; return its JSON (or None).

    ``info``: the already-read JSON (read_checkpoint_info). Everything is checked before
    anything is loaded; CheckpointError when the checkpoint does not fit the model.
    """
    info = info if info is not None else read_checkpoint_info(directory)
    if info is None:
        return None
    path = _check_against(directory, info, model, optimizer)
    try:
        tensors = load_file(str(path), device=str(device))
        model.load_state_dict({k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")})
        optimizer.load_state_dict(_join_optimizer_state(tensors, info["optimizer"]))
    except (OSError, SafetensorError, RuntimeError, ValueError, KeyError) as error:
        # The header checked out but the data does not (changed between the check and the load).
        raise _damaged(directory, f"{path.name} cannot be loaded: {str(error).splitlines()[0]}") from None
    return info
