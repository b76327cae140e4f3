"""Exporting a trained model for other tools: ONNX, a torch.export program (.pt2), safetensors.

Every exported model takes what a Keras user holds: float32 images in [0, 1] shaped
``[N, 28, 28, 1]`` (or ``[N, 784]`` for MLPs) with a dynamic batch dimension, and returns
``[N, 10]`` probabilities. TorchScript is not offered: it is deprecated upstream in favour of
torch.export. ONNX goes through torch.onnx's dynamo exporter, which needs onnx and onnxscript
(the optional extra ``mnistlab[onnx]``).
"""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import warnings
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import save_file

from mnistlab.util.atomic import check_target, write_atomically
from mnistlab.errors import MissingDependency, MnistlabError
from mnistlab.trained.folder import FORMAT, TrainedModel, layer_state

ExportFormat = Literal["onnx", "pt2", "safetensors"]
FORMATS: tuple[str, ...] = ("onnx", "pt2", "safetensors")
INPUT_NAME = "images"  # TrainedModel.forward's argument, and the ONNX input's name
OUTPUT_NAME = "probabilities"
EXAMPLE_BATCH = 2  # torch.export specialises a batch of 1 to a constant; 2 keeps it symbolic
ONNX_MODULES = ("onnx", "onnxscript")


def input_layout(model: TrainedModel) -> str:
    """The input convention in words, stored with every export."""
    shape = ", ".join(str(d) for d in model.input_shape)
    layout = "NHWC" if len(model.input_shape) == 3 else "N x features"
    return f"float32 in [0, 1], shape [N, {shape}] ({layout}), N dynamic"


def metadata(model: TrainedModel) -> dict[str, str]:
    """What an exported file carries about itself (strings: safetensors and ONNX want text)."""
    return {
        "format": FORMAT,
        "model": model.spec.id,
        "input": input_layout(model),
        "output": f"float32 probabilities, shape [N, {len(model.class_names)}]",
        "class_names": json.dumps(list(model.class_names)),
        "dataset": model.info.dataset,
        "seed": str(model.info.seed),
        "spec": json.dumps(model.info.spec),
    }


def _example(model: TrainedModel) -> torch.Tensor:
    device = next(model.parameters()).device
    return torch.rand((EXAMPLE_BATCH, *model.input_shape), generator=torch.Generator().manual_seed(0)).to(device)


def _dynamic_batch() -> dict[str, dict[int, Any]]:
    return {INPUT_NAME: {0: torch.export.Dim("batch")}}


def _exported_program(model: TrainedModel) -> torch.export.ExportedProgram:
    return torch.export.export(model, (_example(model),), dynamic_shapes=_dynamic_batch())


def _write_pt2(model: TrainedModel, path: Path) -> None:
    buffer = io.BytesIO()  # torch.export.save wants a name ending in .pt2, which a temporary file lacks
    torch.export.save(_exported_program(model), buffer, extra_files={"mnistlab.json": json.dumps(metadata(model))})
    write_atomically(path, lambda tmp: tmp.write_bytes(buffer.getvalue()))


def _write_safetensors(model: TrainedModel, path: Path) -> None:
    tensors = layer_state(model.network)
    write_atomically(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata(model)))


def require_onnx() -> None:
    """One line naming the extra when the ONNX exporter's packages are missing."""
    missing = [name for name in ONNX_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingDependency(f"ONNX export needs {' and '.join(missing)} (mnistlab[onnx]): "
                                "pip install 'mnistlab[onnx]'")


def _write_onnx(model: TrainedModel, path: Path) -> None:
    require_onnx()
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)  # it logs a line per optional op library it skips
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model, (_example(model),), dynamo=True, dynamic_shapes=_dynamic_batch(),
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], verbose=False,
            )
    finally:
        exporter_log.setLevel(level)
    program.model.metadata_props.update(metadata(model))
    write_atomically(path, lambda tmp: program.save(str(tmp)))


_WRITERS = {"onnx": _write_onnx, "pt2": _write_pt2, "safetensors": _write_safetensors}


def export_model(model: TrainedModel, path: Path | str, format: ExportFormat | str) -> Path:
    """Write `model` to `path` in `format` (onnx, pt2 or safetensors); the file appears whole or not at all."""
    if format not in _WRITERS:
        raise MnistlabError(f"export: unknown format '{format}'; choose {', '.join(FORMATS)}")
    path = Path(path)
    check_target(path)  # a link, device or FIFO there is refused before the export runs
    if path.is_dir():
        raise MnistlabError(f"{path}: is a folder; give the file to write, e.g. {path / (model.spec.id + '.' + format)}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _WRITERS[format](model, path)
    except OSError as exc:
        raise MnistlabError(f"{path}: cannot write: {exc.strerror or exc}") from None
    return path
