"""Keras-style model summaries, as text and as JSON-ready data."""

from __future__ import annotations

from typing import Any

from mnistlab.spec.model import INPUT_NAME, ModelSpec, Resolved, resolve


def summary_data(spec: ModelSpec | Resolved) -> dict[str, Any]:
    """The summary as plain data; graph models start with an InputLayer row, as Keras prints."""
    resolved = spec if isinstance(spec, Resolved) else resolve(spec)
    layers: list[dict[str, Any]] = []
    if resolved.is_graph:
        layers.append(
            {"name": INPUT_NAME, "type": "InputLayer", "output_shape": [None, *resolved.spec.input], "params": 0, "inputs": []}
        )
    for node in resolved.nodes:
        row: dict[str, Any] = {
            "name": node.name,
            "type": node.layer.type,  # type: ignore[attr-defined]
            "output_shape": [None, *node.output_shape],
            "params": node.params,
        }
        if resolved.is_graph:
            row["inputs"] = list(node.inputs)
        layers.append(row)
    return {
        "model": resolved.spec.id,
        "layers": layers,
        "total_params": resolved.total_params,
        "trainable_params": resolved.trainable_params,
        "non_trainable_params": resolved.non_trainable_params,
    }


# Keras 2.2's summary columns: layer (type), output shape, params, connected to (graphs only).
KERAS_WIDTHS = (33, 26, 12, 30)


def _shape_text(shape: list[Any]) -> str:
    parts = ["None" if s is None else str(s) for s in shape]
    return "(" + ", ".join(parts) + (",)" if len(parts) == 1 else ")")


def summary_text(spec: ModelSpec | Resolved) -> str:
    """The summary laid out like Keras 2.2's `model.summary()`."""
    data = summary_data(spec)
    graph = any("inputs" in row for row in data["layers"])
    headers = ["Layer (type)", "Output Shape", "Param #"] + (["Connected to"] if graph else [])
    rows = []
    for row in data["layers"]:
        cells = [f"{row['name']} ({row['type']})", _shape_text(row["output_shape"]), f"{row['params']:,}"]
        if graph:
            cells.append(", ".join(row.get("inputs", [])))
        rows.append(cells)
    # Keras's column widths, widened where a cell would run into the next column.
    widths = [max(default, *(len(cells[i]) + 1 for cells in rows)) for i, default in enumerate(KERAS_WIDTHS[: len(headers)])]
    width = sum(widths)

    def line(cells: list[str]) -> str:
        return "".join(cell.ljust(w) for cell, w in zip(cells, widths)).rstrip()

    out = [f'Model: "{data["model"]}"', "_" * width, line(headers), "=" * width]
    for i, cells in enumerate(rows):
        out.append(line(cells))
        out.append("=" * width if i == len(rows) - 1 else "_" * width)
    out += [
        f"Total params: {data['total_params']:,}",
        f"Trainable params: {data['trainable_params']:,}",
        f"Non-trainable params: {data['non_trainable_params']:,}",
        "_" * width,
    ]
    return "\n".join(out)
