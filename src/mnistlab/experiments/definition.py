"""Experiment files: which models, which data, which protocol, how many seeds.

An experiment expands into independent tasks, one per (model, seed), each carrying everything
needed to train it, so any backend (this process, or a cluster) can run it.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SkipValidation, ValidationError, field_validator, model_validator

from mnistlab.errors import SpecError, did_you_mean
from mnistlab.training.precision import Precision
from mnistlab.experiments.factors import FactorError, level_text, parse_factors, variants
from mnistlab.spec.fields import SEED_BOUND, PositiveInt, Seed
from mnistlab.spec.model import ModelSpec
from mnistlab.spec.parse import parse_model
from mnistlab.util.yamlio import line_of, load_yaml
from mnistlab.zoo import get_model


NAME_PATTERN = r"^[A-Za-z0-9_.-]+(\+[^\x00-\x1f\x7f]+)?$"


class Defaults(BaseModel):
    """Settings applied to every model unless a model entry overrides them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: PositiveInt | None = None  # None: each model's own (the notebook's)
    batch_size: PositiveInt | None = None
    device: Annotated[str, Field(pattern=r"^(auto|cpu|cuda(:[0-9]+)?)$")] = "auto"
    precision: Precision = "fp32"  # fp32 (strict), tf32 (CUDA) or bf16 autocast: see precision.py
    deterministic: bool = False  # CUDA: deterministic kernels only (slower; precision.py)
    flush_denormal: bool = False  # subnormals flushed to zero on every CPU thread, as TensorFlow's (denormals.py)
    train_limit: PositiveInt | None = None
    # Trainability limits (None: mnistlab.training.limits' defaults); see limits.py.
    max_params: PositiveInt | None = None
    max_activation_mib: PositiveInt | None = None
    max_variants: PositiveInt | None = None  # factor-grid size (None: limits.MAX_VARIANTS)
    # Early stopping on val_loss (epochs without a new minimum); the best epoch's weights are
    # restored at the end whether or not it fired. None: train every epoch.
    patience: PositiveInt | None = None
    # Intra-op CPU threads of every run (None: the usable cores); recorded per run, see training/config.py.
    threads: PositiveInt | None = None


class ModelEntry(BaseModel):
    """A zoo id or spec file (`model`), or an inline spec (`spec`), with optional overrides."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str | None = None
    # Kept as read (not copied by validation), so an inline spec's errors can name its line;
    # parse_model validates it, and refuses anything that is not a mapping.
    spec: SkipValidation[dict[str, Any]] | None = None
    epochs: PositiveInt | None = None
    batch_size: PositiveInt | None = None
    optimizer: str | dict[str, Any] | None = None
    train_limit: PositiveInt | None = None  # e.g. a small training set that shows overfitting
    # A factor grid over this model (see mnistlab.experiments.factors): factor name → levels.
    vary: dict[str, Any] | None = None
    subset: list[dict[str, Any]] | None = None

    @field_validator("vary", mode="before")
    @classmethod
    def _level_names(cls, value: Any) -> Any:
        # YAML reads `on:`/`off:` level names as booleans: name them as variant ids do, so the
        # stored config reads back to the same variants.
        if not isinstance(value, dict):
            return value
        return {factor: {level_text(level): edits for level, edits in levels.items()}
                if isinstance(levels, dict) and "edit" not in levels else levels
                for factor, levels in value.items()}

    @model_validator(mode="after")
    def _one_source(self) -> "ModelEntry":
        if (self.model is None) == (self.spec is None):
            raise ValueError("give exactly one of 'model' (a zoo id or spec file) or 'spec' (an inline model)")
        if self.subset is not None and self.vary is None:
            raise ValueError("'subset' lists combinations of 'vary' levels; give 'vary' too")
        return self


class Experiment(BaseModel):
    """A study: models × seeds on one dataset under one validation protocol."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Letters, digits, '.', '_', '-'; a derived experiment (overrides.py) adds `+key=value` parts.
    name: Annotated[str, Field(min_length=1, pattern=NAME_PATTERN)]
    description: str = ""
    dataset: str = "mnist"
    protocol: Literal["split", "test"] = "split"
    # The validation split (protocol "split"): None or "fixed", one split for every run (split seed 0);
    # "per-seed", each seed draws its own, seeded by the run's seed, so models stay paired seed by seed
    # and the split's variance is sampled too (Bouthillier et al., MLSys 2021). Part of the run's identity.
    split: Literal["fixed", "per-seed"] | None = None
    defaults: Defaults = Defaults()
    models: Annotated[list[ModelEntry], Field(min_length=1)]
    repeats: PositiveInt | None = None
    seeds: list[Seed] | None = None

    @model_validator(mode="after")
    def _seeds(self) -> "Experiment":
        if self.repeats is not None and self.seeds is not None and len(self.seeds) != self.repeats:
            raise ValueError("'repeats' and 'seeds' disagree; give one of them")
        if self.seeds is not None and len(set(self.seeds)) != len(self.seeds):
            raise ValueError("'seeds' has duplicates")
        if self.split == "per-seed" and self.protocol != "split":
            raise ValueError("'split: per-seed' draws a validation split per seed; it needs 'protocol: split'")
        return self

    @property
    def seed_list(self) -> list[int]:
        if self.seeds is not None:
            return list(self.seeds)
        return list(range(self.repeats or 1))

    def to_dict(self) -> dict[str, Any]:
        data = self.model_dump(mode="json", exclude_none=True)
        data["seeds"] = self.seed_list
        return data


@dataclass(frozen=True)
class Task:
    """One (model, seed) training job: self-contained, so it can run anywhere."""

    experiment: str
    spec: ModelSpec
    seed: int
    dataset: str
    protocol: str
    device: str
    precision: str
    train_limit: int | None
    val_fraction: float = 0.1
    max_params: int | None = None  # None: limits.MAX_PARAMS
    max_activation_mib: int | None = None  # None: limits.MAX_ACTIVATION_MIB
    factors: tuple[tuple[str, str], ...] = ()  # (factor, level) pairs of a factor-grid variant
    patience: int | None = None
    threads: int | None = None  # None: the usable cores (a resumed run: its checkpoint's count)
    deterministic: bool = False
    flush_denormal: bool = False
    split_seed: int | None = None  # None: the fixed split (seed 0); else this run's own split (split: per-seed)

    @property
    def model_id(self) -> str:
        return self.spec.id

    def run_config(self) -> dict[str, Any]:
        """What identifies the trained thing in the store (hashed there)."""
        config = {
            "model": self.spec.to_dict(),
            "train_limit": self.train_limit,
            "precision": self.precision,
            "val_fraction": self.val_fraction,
        }
        if self.patience is not None:  # only when set: runs stored before early stopping keep their hash
            config["patience"] = self.patience
        if self.deterministic:  # likewise: other kernels, other numbers
            config["deterministic"] = True
        if self.flush_denormal:  # likewise: subnormals become zeros, other numbers
            config["flush_denormal"] = True
        if self.split_seed is not None:  # likewise: another validation split, another trained thing
            config["split_seed"] = self.split_seed
        return config


def _entry_spec(entry: ModelEntry, where: str) -> ModelSpec:
    if entry.model is not None:
        return get_model(entry.model)
    return parse_model(entry.spec, where)


def expand(experiment: Experiment, source: str = "<python>") -> list[Task]:
    """Every (model, seed) task, model-major so a model's repeats finish together."""
    tasks = []
    ids: set[str] = set()
    for index, entry in enumerate(experiment.models, start=1):
        if entry.spec is not None and not isinstance(entry.spec, dict):
            raise SpecError(f"{source}: experiment '{experiment.name}': models[{index}]: field 'spec': "
                            "must be a mapping with 'id' and 'layers'")
        try:
            spec = _entry_spec(entry, source)
        except SpecError as exc:
            if entry.model is None:
                raise  # an inline spec's error already names the file, model and layer
            raise SpecError(f"{source}: experiment '{experiment.name}': models[{index}]: {exc}") from None
        changes = {
            "epochs": entry.epochs or experiment.defaults.epochs,
            "batch_size": entry.batch_size or experiment.defaults.batch_size,
            "optimizer": entry.optimizer,
        }
        changes = {k: v for k, v in changes.items() if v is not None}
        try:
            spec = spec.with_training(**changes) if changes else spec
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"])
            raise SpecError(
                f"{source}: experiment '{experiment.name}': models[{index}] ({spec.id}): field '{field}': {err['msg']}"
            ) from None
        except ValueError as exc:
            raise SpecError(f"{source}: experiment '{experiment.name}': models[{index}] ({spec.id}): {exc}") from None
        where = f"{source}: experiment '{experiment.name}': models[{index}]"
        for variant_spec, levels in _entry_variants(entry, spec, where, experiment.defaults.max_variants):
            if variant_spec.id in ids:
                raise SpecError(f"{source}: experiment '{experiment.name}': models[{index}]: model '{variant_spec.id}' is listed twice")
            ids.add(variant_spec.id)
            for seed in experiment.seed_list:
                tasks.append(
                    Task(
                        experiment=experiment.name, spec=variant_spec, seed=seed, dataset=experiment.dataset,
                        protocol=experiment.protocol, device=experiment.defaults.device,
                        precision=experiment.defaults.precision,
                        train_limit=entry.train_limit or experiment.defaults.train_limit,
                        factors=levels, patience=experiment.defaults.patience,
                        max_params=experiment.defaults.max_params,
                        max_activation_mib=experiment.defaults.max_activation_mib,
                        threads=experiment.defaults.threads,
                        deterministic=experiment.defaults.deterministic,
                        flush_denormal=experiment.defaults.flush_denormal,
                        split_seed=seed if experiment.split == "per-seed" and experiment.protocol == "split" else None,
                    )
                )
    return tasks


def _entry_variants(entry: ModelEntry, spec: ModelSpec, where: str,
                    max_variants: int | None) -> list[tuple[ModelSpec, tuple[tuple[str, str], ...]]]:
    """The entry's model, or every variant of its factor grid with its (factor, level) pairs."""
    if entry.vary is None:
        return [(spec, ())]
    try:
        found = variants(spec, parse_factors(entry.vary), entry.subset, max_variants)
    except FactorError as exc:
        raise SpecError(f"{where} ({spec.id}): field '{exc.field}': {exc.message}") from None
    return [(variant.spec, tuple(variant.levels.items())) for variant in found]


def parse_experiment(raw: Any, source: str | Path = "<python>") -> Experiment:
    """Validate an experiment mapping; errors name the file, line and field."""
    line = line_of(raw)
    where = f"{source}:{line}" if line else str(source)
    if not isinstance(raw, dict):
        raise SpecError(f"{where}: an experiment must be a mapping with 'name' and 'models'")
    name = raw.get("name", "?")
    for key in raw:
        if key not in Experiment.model_fields:
            raise SpecError(
                f"{where}: experiment '{name}': field '{key}': unknown field{did_you_mean(str(key), list(Experiment.model_fields))}"
            )
    try:
        experiment = Experiment.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "?"
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            known = {"defaults": Defaults, "models": ModelEntry}.get(str(err["loc"][0]))
            message = "unknown field" + (did_you_mean(str(err["loc"][-1]), list(known.model_fields)) if known else "")
        elif err["loc"][:1] == ("seeds",) and len(err["loc"]) == 2:
            message = f"seeds must be whole numbers from 0 to {SEED_BOUND - 1} (they seed torch's generators), got {err['input']!r}"
        elif err["loc"][-1:] == ("device",):
            message = f"choose auto, cpu, cuda or cuda:N, got {err['input']!r}"
        elif isinstance(err.get("input"), bool) and err["type"] in ("int_type", "float_type"):
            message = f"must be a whole number, not {str(err['input']).lower()}"
        raise SpecError(f"{where}: experiment '{name}': field '{field}': {message}") from None
    tasks = expand(experiment, str(source))  # resolve every model now: errors before any training
    from mnistlab.data.datasets import DATASETS  # imports torch: late
    from mnistlab.training.limits import check_tasks, dataset_shape, known_dataset

    known_dataset(experiment.dataset, where)
    if experiment.dataset in DATASETS:  # a folder is checked when the run starts (it may live elsewhere)
        check_tasks(tasks, dataset_shape(experiment.dataset), str(source), experiment.name)
    return experiment


def builtin_experiments() -> dict[str, Path]:
    """Built-in experiment names → their files (shipped as package data)."""
    folder = resources.files("mnistlab") / "experiments"
    return {entry.name.removesuffix(".yaml"): Path(str(entry)) for entry in folder.iterdir() if entry.name.endswith(".yaml")}


def builtin_catalogue() -> list[dict[str, Any]]:
    """Each built-in experiment as `mnistlab experiments` lists it: models (factor variants counted),
    seeds, dataset, protocol, description and file."""
    rows = []
    for name in sorted(builtin_experiments()):
        experiment, source = load_experiment(name)
        rows.append({"name": name, "models": len({task.model_id for task in expand(experiment, source)}),
                     "seeds": experiment.seed_list, "dataset": experiment.dataset, "protocol": experiment.protocol,
                     "description": experiment.description, "file": source})
    return rows


def experiment_path(name_or_path: str | Path) -> Path:
    """The file of a built-in experiment name, or the experiment file given; a one-line SpecError otherwise."""
    builtins = builtin_experiments()
    if str(name_or_path) in builtins:
        return builtins[str(name_or_path)]
    path = Path(name_or_path)
    if not path.exists():
        names = sorted(builtins)
        raise SpecError(
            f"unknown experiment '{name_or_path}'{did_you_mean(str(name_or_path), names)}: "
            f"not a file, nor a built-in ({', '.join(names)})"
        )
    return path


def load_experiment(name_or_path: str | Path) -> tuple[Experiment, str]:
    """A built-in experiment by name, or an experiment file; returns it with its source path."""
    path = experiment_path(name_or_path)
    return parse_experiment(load_yaml(path), path), str(path)
