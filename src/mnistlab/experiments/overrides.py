"""Overrides of an experiment file, `mnistlab run study.yaml --epochs 20`: the one home of their rules.

An override edits the experiment's raw document (the mapping read from YAML) and the result is
validated exactly as a file is (``parse_experiment``), so a bad key or value is the same one-line
error a file would give, before any store is opened. The edited study is a *derived experiment*:
its name is the file's followed by the overrides in one canonical order
(``study+epochs=20+seeds=0:5+models=s002-m1+defaults.train_limit=5000+vary.dropout=0,0.5``), so
its runs, which the store identifies by experiment as well as by what they train, never mix with
the file's own runs, and the same overrides given in any order or spelling find the same runs.

Order of application (the name's order, except that ``models`` selects last): ``epochs`` sets
``defaults.epochs`` and removes each entry's own ``epochs``; ``seeds`` replaces ``seeds`` and
``repeats``; ``vary`` adds or replaces a list-form factor on every entry; ``set`` assigns dotted
paths of the document as the file has it (list items by 0-based index, ``models.1.epochs``), so a
``set`` on one entry beats ``epochs``; ``models`` then keeps only the entries with those model ids.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mnistlab.errors import SpecError, did_you_mean
from mnistlab.experiments.definition import Experiment, experiment_path, parse_experiment
from mnistlab.spec.fields import SEED_BOUND
from mnistlab.util.strict import whole_number
from mnistlab.util.yamlio import load_yaml

__all__ = ["Overrides", "derive_experiment", "load_with_overrides", "parse_overrides"]

Scalar = str | int | float | bool | None
# Text that needs no quoting inside a derived name; anything else is written as a JSON string.
_PLAIN = re.compile(r"^[A-Za-z0-9_.:/-]+$")


@dataclass(frozen=True)
class Overrides:
    """What `mnistlab run`'s override options say, as values (``parse_overrides`` reads the options).

    ``epochs``: every model's epochs; ``seeds``: the seeds to run; ``models``: the model ids of the
    entries to keep; ``set``: dotted path → YAML scalar (``{"defaults.train_limit": 5000}``);
    ``vary``: factor → its levels, added to or replacing that factor on every entry. Mappings and
    sequences are normalised (seeds and models sorted) so equal overrides compare and name equal."""

    epochs: int | None = None
    seeds: Sequence[int] | None = None
    models: Sequence[str] | None = None
    set: Mapping[str, Scalar] | Sequence[tuple[str, Scalar]] = field(default=())
    vary: Mapping[str, Sequence[Scalar]] | Sequence[tuple[str, Sequence[Scalar]]] = field(default=())

    def __post_init__(self) -> None:
        if self.epochs is not None and (isinstance(self.epochs, bool) or not isinstance(self.epochs, int)
                                        or self.epochs < 1):
            raise SpecError(f"--epochs {self.epochs!r}: give a whole number of epochs, 1 or more")
        if self.seeds is not None:
            object.__setattr__(self, "seeds", tuple(sorted(_check_seeds(list(self.seeds)))))
        if self.models is not None:
            models = [str(model) for model in ([self.models] if isinstance(self.models, str) else self.models)]
            if not models or len(set(models)) != len(models) or not all(models):
                raise SpecError(f"--models {','.join(models)!r}: give model ids, each once")
            object.__setattr__(self, "models", tuple(sorted(models)))
        pairs = dict(self.set.items() if isinstance(self.set, Mapping) else self.set)
        for path, value in pairs.items():
            _check_path(path)
            if not isinstance(value, (str, int, float, bool)) and value is not None:
                raise SpecError(f"--set {path}: the value must be a YAML scalar (a number, text, true/false or "
                                f"null), not {type(value).__name__}")
        object.__setattr__(self, "set", tuple(sorted(pairs.items(), key=lambda pair: _path_key(pair[0]))))
        factors = dict(self.vary.items() if isinstance(self.vary, Mapping) else self.vary)
        for name, levels in factors.items():
            if not isinstance(name, str) or not name or isinstance(levels, (str, bytes)) or len(levels) < 2:
                raise SpecError(f"--vary {name}: give a factor and two or more levels, e.g. dropout=0,0.5")
        object.__setattr__(self, "vary", tuple(sorted((name, tuple(levels)) for name, levels in factors.items())))

    def __bool__(self) -> bool:
        return bool(self.epochs is not None or self.seeds is not None or self.models is not None
                    or self.set or self.vary)

    def suffix(self) -> str:
        """The overrides as the derived experiment's name states them: ``+epochs=20+seeds=0:5...``."""
        parts = []
        if self.epochs is not None:
            parts.append(f"epochs={self.epochs}")
        if self.seeds is not None:
            parts.append(f"seeds={_seeds_text(self.seeds)}")
        if self.models is not None:
            parts.append(f"models={','.join(self.models)}")
        parts += [f"{path}={_scalar_text(value)}" for path, value in self.set]
        parts += [f"vary.{name}={','.join(_scalar_text(level) for level in levels)}" for name, levels in self.vary]
        return "".join(f"+{part}" for part in parts)

    def apply(self, raw: Any, source: str = "<python>") -> dict[str, Any]:
        """A copy of the experiment document ``raw`` with these overrides applied and the derived name;
        not yet validated (``derive_experiment`` validates it)."""
        if not isinstance(raw, dict):
            raise SpecError(f"{source}: an experiment must be a mapping with 'name' and 'models'")
        doc = copy.deepcopy(raw)  # LineDicts stay LineDicts: errors still name the file's lines
        entries = [entry for entry in doc.get("models") or [] if isinstance(entry, dict)] \
            if isinstance(doc.get("models"), list) else []
        if self.epochs is not None:
            if doc.get("defaults") is None:  # absent, or an empty `defaults:`
                doc["defaults"] = {}
            defaults = doc["defaults"]
            if not isinstance(defaults, dict):
                raise SpecError(f"{source}: --epochs: field 'defaults' is not a mapping")
            defaults["epochs"] = self.epochs
            for entry in entries:
                entry.pop("epochs", None)
        if self.seeds is not None:
            doc.pop("repeats", None)
            doc["seeds"] = list(self.seeds)
        for name, levels in self.vary:
            for entry in entries:
                vary = entry.get("vary")
                entry["vary"] = {**(vary if isinstance(vary, dict) else {}), name: list(levels)}
        for path, value in self.set:
            _assign(doc, path, value, source)
        if self.models is not None:
            doc["models"] = _select(doc, self.models, source)
        doc["name"] = f"{doc.get('name', '?')}{self.suffix()}"
        return doc


def parse_overrides(epochs: int | None = None, seeds: str | None = None, models: str | None = None,
                    set: Iterable[str] = (), vary: Iterable[str] = ()) -> Overrides:
    """`run`'s override options as typed (``--seeds 0:5`` or ``0,1,2``, ``--models a,b``,
    ``--set PATH=VALUE`` and ``--vary FACTOR=L1,L2`` repeatable), values read as YAML scalars."""
    pairs: dict[str, Scalar] = {}
    for item in set:
        path, value = _split("--set", item, "defaults.train_limit=5000")
        if path in pairs:
            raise SpecError(f"--set {path}: given twice; give each path once")
        pairs[path] = _yaml_scalar("--set", path, value)
    factors: dict[str, list[Scalar]] = {}
    for item in vary:
        name, levels = _split("--vary", item, "dropout=0,0.5")
        if name in factors:
            raise SpecError(f"--vary {name}: given twice; give each factor once")
        factors[name] = [_yaml_scalar("--vary", name, level) for level in levels.split(",")]
    return Overrides(epochs=epochs, seeds=_seeds_option(seeds) if seeds is not None else None,
                     models=[part.strip() for part in models.split(",")] if models is not None else None,
                     set=pairs, vary=factors)


def derive_experiment(raw: Any, overrides: Overrides, source: str = "<python>") -> Experiment:
    """The derived experiment: ``raw`` (an experiment document) with ``overrides``, validated as a file is."""
    return parse_experiment(overrides.apply(raw, source) if overrides else raw, source)


def load_with_overrides(definition: str | Path | dict[str, Any] | Experiment,
                        overrides: Overrides | None) -> tuple[Experiment, str]:
    """A built-in name, a file, a dict or an Experiment with ``overrides`` applied; with its source."""
    if isinstance(definition, Experiment):
        raw, source = definition.to_dict(), "<python>"
    elif isinstance(definition, dict):
        raw, source = definition, "<python>"
    else:
        path = experiment_path(definition)
        raw, source = load_yaml(path), str(path)
    return derive_experiment(raw, overrides or Overrides(), source), source


# -- the rules ----------------------------------------------------------------------------------


def _check_seeds(seeds: list[Any]) -> list[int]:
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < SEED_BOUND for s in seeds):
        raise SpecError(f"--seeds {seeds!r}: give whole numbers from 0 to {SEED_BOUND - 1}")
    if len(set(seeds)) != len(seeds):
        raise SpecError(f"--seeds {','.join(map(str, seeds))}: each seed once")
    return seeds


def _seeds_option(text: str) -> list[int]:
    """``0:5`` (half-open, as Python's range: 0 to 4) or ``0,1,2``."""
    if ":" in text:
        start, _, stop = text.partition(":")
        low, high = whole_number(start.strip(), upper=None), whole_number(stop.strip(), upper=None)
        if low is None or high is None or high <= low:
            raise SpecError(f"--seeds {text!r}: a range is START:STOP with STOP above START (0:5 is seeds 0 to 4)")
        if high > SEED_BOUND:
            raise SpecError(f"--seeds {text!r}: give whole numbers from 0 to {SEED_BOUND - 1}")
        return list(range(low, high))
    numbers = [whole_number(part.strip(), upper=None) for part in text.split(",")]
    if any(number is None for number in numbers):
        raise SpecError(f"--seeds {text!r}: give a range START:STOP (0:5) or whole numbers separated by commas (0,1,2)")
    return [number for number in numbers if number is not None]


def _seeds_text(seeds: Sequence[int]) -> str:
    """A run of consecutive seeds as START:STOP, else the list: one spelling per set of seeds."""
    if len(seeds) > 1 and list(seeds) == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}:{seeds[-1] + 1}"
    return ",".join(map(str, seeds))


def _scalar_text(value: Scalar) -> str:
    if isinstance(value, str):
        return value if _PLAIN.match(value) and _yaml_scalar("", "", value) == value else json.dumps(value)
    return json.dumps(value)  # true, false, null, 5000, 0.5


def _split(option: str, item: str, example: str) -> tuple[str, str]:
    key, sign, value = item.partition("=")
    if not sign or not key.strip() or not value.strip():
        raise SpecError(f"{option} {item!r}: give KEY=VALUE, e.g. {option} {example}")
    return key.strip(), value.strip()


def _yaml_scalar(option: str, key: str, text: str) -> Scalar:
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text  # not YAML (a stray quote): the text itself
    if not isinstance(value, (str, int, float, bool)) and value is not None:
        raise SpecError(f"{option} {key}: {text!r} is not a YAML scalar (a number, text, true/false or null)")
    return value


def _check_path(path: Any) -> None:
    if not isinstance(path, str) or not path or any(not part.strip() for part in path.split(".")):
        raise SpecError(f"--set {path!r}: give a dotted path such as defaults.train_limit or models.1.epochs")
    if path.split(".")[0] == "name":
        raise SpecError(f"--set {path}: the name of a derived experiment states its overrides; it cannot be set")


def _path_key(path: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key: segment by segment, list indexes by number (models.2 before models.10)."""
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in path.split("."))


def _assign(doc: dict[str, Any], path: str, value: Scalar, source: str) -> None:
    """Set ``path`` in ``doc``; missing mappings on the way are created (validation then names an
    unknown field), list items must exist."""
    parts = path.split(".")
    node: Any = doc
    for depth, part in enumerate(parts):
        here = ".".join(parts[:depth + 1])
        last = depth == len(parts) - 1
        if isinstance(node, list):
            index = whole_number(part, upper=None)
            if index is None or index >= len(node):
                what = "model entry" if parts[:depth] == ["models"] else "item"
                count = f"{len(node)}, numbered from 0" if node else "none"
                raise SpecError(f"{source}: --set {path}: no such {what} '{here}' (there are {count})")
            if last:
                node[index] = value
            node = node[index]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                if node.get(part) is None:  # absent, or an empty `defaults:` (YAML's null)
                    node[part] = {}
                node = node[part]
        else:
            raise SpecError(f"{source}: --set {path}: '{'.'.join(parts[:depth])}' is a single value, not a "
                            "mapping or list")


def _entry_id(entry: Any) -> str | None:
    """The model id of one `models:` entry, or None when it does not name one (validation says why)."""
    if not isinstance(entry, dict):
        return None
    if isinstance(entry.get("spec"), dict):
        found = entry["spec"].get("id")
        return str(found) if found is not None else None
    if isinstance(entry.get("model"), str):
        from mnistlab.zoo import get_model

        try:
            return get_model(entry["model"]).id  # a spec file's model: its id, as tasks name it
        except SpecError:
            return entry["model"]
    return None


def _select(doc: dict[str, Any], wanted: Sequence[str], source: str) -> list[Any]:
    entries = doc.get("models") if isinstance(doc.get("models"), list) else []
    ids = [_entry_id(entry) for entry in entries]
    known = [entry_id for entry_id in ids if entry_id is not None]
    for model in wanted:
        if model not in known:
            raise SpecError(f"{source}: --models {model}: no model entry with this id{did_you_mean(model, known)}; "
                            f"the experiment's are {', '.join(known) or 'none'}")
    return [entry for entry, entry_id in zip(entries, ids) if entry_id in wanted]
