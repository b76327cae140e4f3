"""Until decided: train an experiment in rounds, adding seeds only to the models whose comparison
is still open, and stop when every comparison is decided (analysis/sequential.py has the rule and
its guarantee), at the maximum number of seeds, or when the time budget is spent.

Each round calls the runner (runner.run_experiment) on a sub-experiment: the open models (a factor
grid's open variants through its ``subset``) and the round's seeds, so every run is an ordinary run
with its ordinary identity. The study's settings are kept in the stored experiment config under
``until_decided`` (free-form JSON; the store's schema is untouched), and its story (the reference,
each question's looks and decision) is recomputed from the store's runs alone by ``study_state``:
deterministic, so the report and a rerun read the same decisions without a state file.

Seeds. Round 1 trains the experiment's seeds (at least 2: a t interval needs a spread); later rounds
take the next whole numbers after the largest of them, ``per_round`` at a time (``seed_schedule``).
A question's differences are its common completed seeds in that order.

Budget. Before each round the driver estimates each (model, seed) run: the mean duration of the
model's finished runs in the store, else a short probe (training/cost.py). It starts a run only
when the estimate fits in what is left of the budget; the first one that does not ends the study.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mnistlab.analysis.choice import Candidate, choose_model
from mnistlab.analysis.multiple import ALPHA
from mnistlab.analysis.sequential import DEFAULT_MARGIN, Design, QuestionTrace, trace_question
from mnistlab.errors import MnistlabError
from mnistlab.experiments.definition import Experiment, Task, expand
from mnistlab.runs.store import RunStore
from mnistlab.runs.tasks import RunOutcome
from mnistlab.training.history import COMPLETED, FINISHED_STATUSES

__all__ = [
    "CONFIG_KEY",
    "STOP_BUDGET",
    "STOP_DECIDED",
    "STOP_MAX_SEEDS",
    "STOP_NO_REFERENCE",
    "DEFAULT_MAX_SEEDS",
    "Question",
    "SequentialOutcome",
    "StudyState",
    "UntilDecided",
    "parse_budget",
    "round_text",
    "run_until_decided",
    "seed_schedule",
    "stop_reason",
    "stored_settings",
    "study_state",
]

CONFIG_KEY = "until_decided"  # the stored experiment config's key for the study's settings
DEFAULT_MAX_SEEDS = 10
POINTS = 100.0  # stored accuracies are fractions; questions are asked in points
# A model's first estimate, before any of its runs finished: a probe this long (training/cost.py). Short,
# because it is spent from the budget for every model, and a probe's rate settles within a few seconds.
BUDGET_PROBE_SECONDS = 3.0
STOP_DECIDED, STOP_MAX_SEEDS, STOP_BUDGET, STOP_NO_REFERENCE = "decided", "max-seeds", "budget", "no-reference"


@dataclass(frozen=True)
class UntilDecided:
    """A study's settings: the last look (``max_seeds``), seeds added per round, the equivalence
    margin in points, the time budget in seconds (None: none), and the family's alpha."""

    max_seeds: int = DEFAULT_MAX_SEEDS
    per_round: int = 1
    margin: float = DEFAULT_MARGIN
    budget_seconds: float | None = None
    alpha: float = ALPHA
    # False: never start a run whose estimate does not fit in what is left of the budget. True (asked
    # for): start any run while some budget is left, so the last ones may finish after it.
    overrun: bool = False

    def check(self) -> None:
        if not isinstance(self.max_seeds, int) or self.max_seeds < 2:
            raise MnistlabError(f"--max-seeds {self.max_seeds!r}: give a whole number of seeds, 2 or more")
        if not isinstance(self.per_round, int) or self.per_round < 1:
            raise MnistlabError(f"per_round {self.per_round!r}: give a whole number of seeds per round, 1 or more")
        if not (isinstance(self.margin, (int, float)) and math.isfinite(self.margin) and self.margin >= 0):
            raise MnistlabError(f"--margin {self.margin!r}: give the equivalence margin in points, 0 or more")
        if self.budget_seconds is not None and not self.budget_seconds > 0:
            raise MnistlabError(f"--budget {self.budget_seconds!r}: give a time above 0 (e.g. 30m)")

    def to_json(self, first: int) -> dict[str, Any]:
        return {"first": first, "per_round": self.per_round, "max_seeds": self.max_seeds, "margin": self.margin,
                "alpha": self.alpha, "budget_seconds": self.budget_seconds, "overrun": self.overrun}


def parse_budget(text: str | float | None) -> float | None:
    """`--budget 30m` / `2h` / `90s` / `1h30m` (a bare number: minutes) → seconds; None stays None."""
    if text is None:
        return None
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        spoken = str(text).strip().lower()
        parts = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s)?", spoken)
        if re.fullmatch(r"\d+(?:\.\d+)?", spoken):
            value = float(spoken) * 60
        elif parts and spoken:
            hours, minutes, seconds = (float(part) if part else 0.0 for part in parts.groups())
            value = hours * 3600 + minutes * 60 + seconds
        else:
            raise MnistlabError(f"--budget {text!r}: give a time such as 30m, 2h, 90s or 1h30m")
    if not (math.isfinite(value) and value > 0):
        raise MnistlabError(f"--budget {text!r}: give a time above 0 (e.g. 30m)")
    return value


def seed_schedule(first_seeds: Sequence[int], max_seeds: int) -> list[int]:
    """The order seeds are added in: the experiment's own (at least 2), then the next whole numbers
    after the largest, up to ``max_seeds`` in all."""
    seeds = list(first_seeds)
    following = max(seeds) + 1 if seeds else 0
    while len(seeds) < max(max_seeds, 2):
        seeds.append(following)
        following += 1
    return seeds


# -- the study's state, from the store's runs alone ---------------------------------------------------


@dataclass(frozen=True)
class Question:
    """One question of the family: the reference model against another (``kind`` "model"), or a
    factor's main effect, level ``reference`` against the factor's first level ``other`` (``kind``
    "factor", written ``factor=level``), averaged over the grid's other factors. ``differences``:
    reference minus other per seed, in points, in seed-schedule order; ``needs``: the models that
    must train for it to move on."""

    reference: str
    other: str
    trace: QuestionTrace
    differences: tuple[float, ...]
    needs: tuple[str, ...]
    kind: str = "model"

    @property
    def decision(self) -> str | None:
        return self.trace.decision

    @property
    def seeds(self) -> int:
        return len(self.differences)

    @property
    def label(self) -> str:
        if self.kind == "factor":
            return f"{self.reference} vs {self.other} (main effect)"
        return f"{self.reference} vs {self.other}"


@dataclass(frozen=True)
class StudyState:
    """Where an until-decided study stands: its design, reference and questions."""

    design: Design
    reference: str | None
    questions: tuple[Question, ...]
    models: tuple[str, ...]
    schedule: tuple[int, ...]

    @property
    def open(self) -> tuple[Question, ...]:
        return tuple(question for question in self.questions if question.decision is None)

    @property
    def settled(self) -> bool:
        return self.reference is not None and not self.open


@dataclass(frozen=True)
class _Result:
    test: float
    val_acc: float
    val_loss: float


def _results(store: RunStore, experiment: str) -> dict[str, dict[int, _Result]]:
    """Each model's completed runs by seed: test accuracy (points), last val_acc and val_loss."""
    found: dict[str, dict[int, _Result]] = {}
    for record in store.runs(experiment):
        final = record.final or {}
        test = final.get("test_acc")
        if record.status != COMPLETED or not isinstance(test, (int, float)) or not math.isfinite(test):
            continue
        history = store.history(record.id)
        last = {name: (history.get(name) or [math.nan])[-1] for name in ("val_acc", "val_loss")}
        found.setdefault(record.model_id, {})[record.seed] = _Result(float(test) * POINTS, last["val_acc"],
                                                                      last["val_loss"])
    return found


def _mean(values: Sequence[float]) -> float:
    values = [value for value in values if math.isfinite(value)]
    return sum(values) / len(values) if values else math.nan


def study_state(store: RunStore, experiment: str, models: Sequence[str], settings: Mapping[str, Any]) -> StudyState:
    """Recompute the study from its runs: the reference chosen on validation over round 1's seeds
    (analysis.choice, the report's one rule), then each question's looks in seed-schedule order."""
    first, max_seeds = int(settings["first"]), int(settings["max_seeds"])
    grids = [_grid_contrasts(grid) for grid in settings.get("grids", [])]
    family = len(models) - 1 + sum(len(contrasts) for contrasts, _ in grids)
    design = Design(first=first, per_round=int(settings["per_round"]), max_seeds=max_seeds,
                    family=max(family, 1), margin=float(settings["margin"]), alpha=float(settings["alpha"]))
    schedule = tuple(int(seed) for seed in settings["schedule"])
    results = _results(store, experiment)
    round_one = schedule[:first]
    candidates = []
    for model in models:
        runs = [results.get(model, {}).get(seed) for seed in round_one]
        if all(run is not None for run in runs):  # chosen among the models that finished round 1 whole
            candidates.append(Candidate(model, _mean([run.test for run in runs]), _mean([run.val_acc for run in runs]),
                                        _mean([run.val_loss for run in runs])))
    reference = choose_model(candidates) if len(candidates) == len(models) else None
    questions = []
    if reference is not None:
        for other in models:
            if other == reference:
                continue
            mine, theirs = results.get(reference, {}), results.get(other, {})
            differences = tuple(mine[seed].test - theirs[seed].test for seed in schedule
                                if seed in mine and seed in theirs)
            questions.append(Question(reference, other, trace_question(design, differences), differences,
                                      (reference, other)))
        for contrasts, variants in grids:
            complete = [seed for seed in schedule if all(seed in results.get(model, {}) for model in variants)]
            for label, first_level, plus, minus in contrasts:
                differences = tuple(_mean([results[m][seed].test for m in plus]) - _mean([results[m][seed].test
                                                                                          for m in minus])
                                    for seed in complete)
                questions.append(Question(label, first_level, trace_question(design, differences), differences,
                                          tuple(variants), kind="factor"))
    return StudyState(design, reference, tuple(questions), tuple(models), schedule)


def _grid_contrasts(grid: Mapping[str, Mapping[str, str]]) -> tuple[list[tuple[str, str, list[str], list[str]]],
                                                                    list[str]]:
    """A full factor grid's main-effect contrasts, each level against its factor's first level:
    (``factor=level``, ``factor=first``, the variants at that level, the variants at the first), and
    the grid's variants. In a full grid each level's variants cover every combination of the other
    factors once, so the difference of their means is the main effect averaged with equal weight."""
    variants = list(grid)
    contrasts = []
    factors = list(next(iter(grid.values()))) if grid else []
    for factor in factors:
        levels = list(dict.fromkeys(grid[model][factor] for model in variants))
        at = {level: [model for model in variants if grid[model][factor] == level] for level in levels}
        for level in levels[1:]:
            contrasts.append((f"{factor}={level}", f"{factor}={levels[0]}", at[level], at[levels[0]]))
    return contrasts, variants


def stop_reason(state: StudyState, seeds_used: int) -> str:
    """Why a study stands where it does, from its state and the seeds it used (recomputable)."""
    if state.reference is None:
        return STOP_NO_REFERENCE
    if state.settled:
        return STOP_DECIDED
    return STOP_MAX_SEEDS if seeds_used >= len(state.schedule) else STOP_BUDGET


def stored_settings(store: RunStore, experiment: str) -> dict[str, Any] | None:
    """The until-decided settings stored with the experiment, or None for a fixed-seed study."""
    for record in store.experiments():
        if record.name == experiment:
            value = record.config.get(CONFIG_KEY)
            return value if isinstance(value, dict) else None
    return None


# -- the driver -----------------------------------------------------------------------------------------


@dataclass
class RoundRecord:
    """What one round trained and what was open after it."""

    number: int
    seeds: tuple[int, ...]
    models: tuple[str, ...]
    trained: int
    open_after: tuple[str, ...]


@dataclass
class SequentialOutcome:
    """What `run_until_decided` did: its rounds, why it stopped, the state it left, and every run id."""

    rounds: list[RoundRecord] = field(default_factory=list)
    stopped: str = ""
    state: StudyState | None = None
    run_ids: list[int] = field(default_factory=list)
    trained: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)


def round_text(record: RoundRecord, state: StudyState) -> str:
    """One line about a round: what it trained, and what is decided and open after it."""
    seeds = ", ".join(str(seed) for seed in record.seeds)
    decided = [f"{q.label} {q.decision} ({q.seeds} seeds)" for q in state.questions if q.decision is not None]
    parts = [f"round {record.number}: seed(s) {seeds} for {len(record.models)} model(s), {record.trained} trained"]
    if state.reference is not None:
        parts.append(f"reference {state.reference}")
    if decided:
        parts.append("decided: " + "; ".join(decided))
    parts.append(f"open: {', '.join(record.open_after) if record.open_after else 'none'}")
    return "; ".join(parts)


TrainRound = Callable[[Experiment, RunStore], RunOutcome]
Estimator = Callable[[Task], float]


def _entry_models(experiment: Experiment, source: str) -> list[tuple[int, str, dict[str, str]]]:
    """(entry index, model id, factor levels) of every model the experiment lists, in order."""
    found = []
    data = experiment.to_dict()
    for index in range(len(experiment.models)):
        one = Experiment.model_validate({**data, "models": [data["models"][index]], "seeds": [0], "repeats": None})
        for task in expand(one, source):
            found.append((index, task.model_id, dict(task.factors)))
    return found


def _full_grids(experiment: Experiment, entries: list[tuple[int, str, dict[str, str]]]) -> list[dict[str, dict]]:
    """Each full factor grid's variants and their levels; a grid cut by ``subset`` is left out, since
    its levels no longer cover every combination and a main effect would need a model to average."""
    return [{model: levels for at, model, levels in entries if at == index}
            for index, entry in enumerate(experiment.models) if entry.vary is not None and entry.subset is None]


def _sub_experiment(experiment: Experiment, entries: list[tuple[int, str, dict[str, str]]], models: set[str],
                    seeds: Sequence[int]) -> Experiment:
    """The experiment cut to ``models`` (a grid to its open variants through ``subset``) and ``seeds``."""
    data = experiment.to_dict()
    kept = []
    for index, entry in enumerate(data["models"]):
        chosen = [levels for at, model, levels in entries if at == index and model in models]
        if not chosen:
            continue
        if entry.get("vary") is not None:
            entry = {**entry, "subset": chosen}
        kept.append(entry)
    data.update(models=kept, seeds=list(seeds))
    data.pop("repeats", None)
    return Experiment.model_validate(data)


def measured_seconds(store: RunStore, experiment: str) -> dict[str, float]:
    """Each model's mean duration of its finished runs in the store (seconds)."""
    spans: dict[str, list[float]] = {}
    for record in store.runs(experiment):
        if record.status in FINISHED_STATUSES and record.started_at and record.ended_at:
            spans.setdefault(record.model_id, []).append(record.ended_at - record.started_at)
    return {model: sum(values) / len(values) for model, values in spans.items()}


def probe_estimator(dataset: str) -> Estimator:
    """Seconds one task takes here, from a short probe per model (training/cost.py), cached."""
    from mnistlab.training.cost import epoch_images, estimate_training, probe_throughput

    cache: dict[str, float] = {}

    def estimate(task: Task) -> float:
        if task.model_id not in cache:
            try:
                train, val, test = epoch_images(dataset, task.protocol, task.val_fraction, task.train_limit)
            except MnistlabError as exc:
                raise MnistlabError(f"--budget: cannot estimate model '{task.model_id}' before its first run: {exc}") from None
            throughput = probe_throughput(task.spec, precision=task.precision, threads=task.threads,
                                          device=task.device, seconds=BUDGET_PROBE_SECONDS)
            cache[task.model_id] = estimate_training(throughput, epochs=task.spec.training.epochs, train_images=train,
                                                     val_images=val, test_images=test).seconds
        return cache[task.model_id]

    return estimate


def _fitting(tasks: list[Task], store: RunStore, experiment: str, estimate: Estimator | None,
             left: float | None, overrun: bool = False) -> tuple[list[Task], bool]:
    """The tasks still to train whose estimates fit in ``left`` seconds, in order, stopping at the
    first that does not; and whether all of them fit. ``overrun``: every task that starts while some of
    ``left`` remains counts as fitting (the budget may be overrun by the last ones' length)."""
    if left is None or estimate is None:
        return tasks, True
    measured = measured_seconds(store, experiment)
    kept, spent = [], 0.0
    for task in tasks:
        cost = measured.get(task.model_id)
        cost = estimate(task) if cost is None else cost
        if spent + cost > left and not (overrun and spent < left):
            return kept, False
        kept.append(task)
        spent += cost
    return kept, True


def _unfinished(store: RunStore, experiment: str, tasks: list[Task]) -> list[Task]:
    done = {(record.model_id, record.seed) for record in store.runs(experiment) if record.status in FINISHED_STATUSES}
    return [task for task in tasks if (task.model_id, task.seed) not in done]


def run_until_decided(experiment: Experiment, store: RunStore, train_round: TrainRound,
                      settings: UntilDecided = UntilDecided(), source: str = "<python>",
                      estimate: Estimator | None = None, clock: Callable[[], float] = time.monotonic,
                      on_round: Callable[[RoundRecord, StudyState], None] | None = None) -> SequentialOutcome:
    """Train ``experiment`` in rounds until every question is decided (see the module docstring).

    ``train_round(sub_experiment, store)`` trains one round (the API passes the runner with its
    options); ``estimate(task)`` gives a run's seconds for the budget (default: a probe per model);
    ``on_round`` hears each round's record and the state after it."""
    settings.check()
    entries = _entry_models(experiment, source)
    models = [model for _, model, _ in entries]
    if len(models) < 2:
        raise MnistlabError(f"{source}: experiment '{experiment.name}': --until-decided compares models; "
                            "it lists only one")
    schedule = seed_schedule(experiment.seed_list, settings.max_seeds)
    first = max(2, len(experiment.seed_list))
    if first > settings.max_seeds:
        raise MnistlabError(f"--max-seeds {settings.max_seeds}: below the experiment's {first} seeds")
    stored = {**settings.to_json(first), "schedule": schedule, "models": models,
              "grids": _full_grids(experiment, entries)}
    if estimate is None and settings.budget_seconds is not None:
        estimate = probe_estimator(experiment.dataset)
    started = clock()
    outcome = SequentialOutcome()
    wanted, seeds = set(models), schedule[:first]
    while True:
        todo = _unfinished(store, experiment.name, expand(_sub_experiment(experiment, entries, wanted, seeds), source))
        left = None if settings.budget_seconds is None else settings.budget_seconds - (clock() - started)
        fitting, whole = _fitting(todo, store, experiment.name, estimate, left, settings.overrun)
        trained = 0
        # Exactly the runs that fit: models that need the same seeds train together, as one sub-experiment
        # (a sub-experiment trains every model with every seed it names, so mixing seed sets would add runs).
        groups: dict[tuple[int, ...], set[str]] = {}
        for model_id in dict.fromkeys(task.model_id for task in fitting):
            wanted_seeds = {task.seed for task in fitting if task.model_id == model_id}
            groups.setdefault(tuple(sorted(wanted_seeds, key=schedule.index)), set()).add(model_id)
        for seeds_now, chosen in groups.items():
            result = train_round(_sub_experiment(experiment, entries, chosen, list(seeds_now)), store)
            outcome.trained += result.trained
            outcome.failed += result.failed
            trained += len(result.trained)
        # The runner stored the sub-experiment's config: put the whole study's back, with its settings.
        position = schedule.index(seeds[-1]) + 1
        used = schedule[:position]
        store.save_experiment(experiment.name, {**experiment.to_dict(), "seeds": used, CONFIG_KEY: stored})
        state = study_state(store, experiment.name, models, stored)
        record = RoundRecord(len(outcome.rounds) + 1, tuple(seeds), tuple(sorted(wanted)), trained,
                             tuple(question.label for question in state.open))
        outcome.rounds.append(record)
        if on_round is not None:
            on_round(record, state)
        outcome.state = state
        if not whole:
            outcome.stopped = STOP_BUDGET
            break
        if state.reference is None:
            outcome.stopped = STOP_NO_REFERENCE  # a model failed round 1: no reference, no question to ask
            break
        if state.settled:
            outcome.stopped = STOP_DECIDED
            break
        if position >= len(schedule):
            outcome.stopped = STOP_MAX_SEEDS
            break
        wanted = {state.reference, *(model for question in state.open for model in question.needs)}
        seeds = schedule[position:position + settings.per_round]
    outcome.run_ids = [record.id for record in store.runs(experiment.name)]
    return outcome
