"""Writing imported specs as one YAML spec file, the way the zoo writes them, decisions included.

Layers keep only what differs from Keras's defaults, in a readable order; each model lists the
decisions the import made, and each skipped model is a comment with its reasons.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mnistlab.interop.keras_objects import ImportResult

_KEY_ORDER = ("type", "name", "filters", "units", "kernel_size", "pool_size", "rate", "strides", "padding",
              "activation", "kernel_initializer", "use_bias", "momentum", "epsilon", "axis", "inputs")


def _compact_layer(layer: Any) -> dict[str, Any]:
    """A layer as the zoo writes it: only what differs from Keras's defaults, in a readable order."""
    data = layer.model_dump(mode="json", exclude_defaults=True, exclude_none=True)
    init = data.get("kernel_initializer")
    if isinstance(init, dict) and set(init) == {"name"}:
        data["kernel_initializer"] = init["name"]
    for key in ("kernel_size", "pool_size", "strides"):
        value = data.get(key)
        if isinstance(value, list) and len(set(value)) == 1:
            data[key] = value[0]
    data["type"] = layer.type
    return {key: data[key] for key in sorted(data, key=lambda k: _KEY_ORDER.index(k) if k in _KEY_ORDER else 99)}


def specs_yaml(result: ImportResult) -> str:
    """The translated specs as one YAML spec file (`models:`), with each import decision recorded."""
    import yaml

    def flow(value: Any) -> str:
        # Dumped inside a list so that scalars come out without YAML's '...' document end.
        return yaml.safe_dump([value], default_flow_style=True, width=10_000, sort_keys=False).strip()[1:-1]

    lines = [f"# Translated by `mnistlab import-keras` from {Path(result.source).name}.", "models:"]
    for spec in result.specs:
        lines.append(f"  - id: {flow(spec.id)}")
        lines.append(f"    input: {flow(list(spec.input))}")
        lines.append("    layers:")
        lines += [f"      - {flow(_compact_layer(layer))}" for layer in spec.layers]
        training = {"optimizer": spec.training.optimizer.to_yaml_value(), "batch_size": spec.training.batch_size,
                    "epochs": spec.training.epochs}
        lines.append(f"    training: {flow(training)}")
        if spec.decisions:
            lines.append("    decisions:")
            lines += [f"      - {flow(d)}" for d in spec.decisions]
    for item in result.skipped:
        lines.append(f"# skipped: {' '.join(str(item).split())}")
    return "\n".join(lines) + "\n"
