"""The built-in zoo: every seed notebook's models, shipped as YAML package data.

Models are looked up by id (`s002-m10`); `get_model` also accepts a spec file path, optionally
with `:MODEL_ID` when the file holds several models.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from mnistlab.errors import SpecError, did_you_mean
from mnistlab.spec.model import ModelSpec, resolve
from mnistlab.spec.parse import load_spec_file


@lru_cache(maxsize=1)
def zoo_models() -> dict[str, ModelSpec]:
    """All zoo models by id, in notebook order."""
    models: dict[str, ModelSpec] = {}
    folder = resources.files(__package__)
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            with resources.as_file(entry) as path:
                for spec in load_spec_file(path):
                    models[spec.id] = spec
    return models


def get_model(name: str) -> ModelSpec:
    """A zoo model by id, or a model from a spec file (`file.yaml` or `file.yaml:MODEL_ID`)."""
    models = zoo_models()
    if name in models:
        return models[name]
    path_part, _, model_id = name.partition(":") if not Path(name).exists() else (name, "", "")
    path = Path(path_part)
    if path.suffix in (".yaml", ".yml") or path.exists():
        specs = load_spec_file(path)
        if model_id:
            for spec in specs:
                if spec.id == model_id:
                    return spec
            ids = [s.id for s in specs]
            raise SpecError(f"{path}: no model '{model_id}'{did_you_mean(model_id, ids)}; it defines {', '.join(ids)}")
        if len(specs) > 1:
            raise SpecError(f"{path}: holds {len(specs)} models; name one as {path}:MODEL_ID ({', '.join(s.id for s in specs)})")
        return specs[0]
    raise SpecError(f"unknown model '{name}'{did_you_mean(name, list(models))}; `mnistlab zoo` lists the built-in models")


def zoo_catalogue() -> list[dict[str, Any]]:
    """Each zoo model as `mnistlab zoo` lists it (its table and its --json): id, parameters, training
    settings, the notebook and the test accuracy it reported (None where it gave none), description."""
    return [{"id": spec.id, "params": resolve(spec).total_params, "optimizer": spec.training.optimizer.name,
             "epochs": spec.training.epochs, "batch_size": spec.training.batch_size,
             "notebook": (spec.reference or {}).get("notebook"),
             "notebook_test_acc": (spec.reference or {}).get("test_acc"), "description": spec.description}
            for spec in zoo_models().values()]
