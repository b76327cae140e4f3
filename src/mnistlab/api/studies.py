"""The entry points that train: a model (`train`), a study (`run`, `run_until_decided`), and what
they cost here (`estimate`, `dry_run`); with the helpers that read models, experiments and stores."""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from mnistlab.util.atomic import write_text
from mnistlab.data.datasets import Dataset, load_dataset
from mnistlab.errors import EnvironmentFailure
from mnistlab.runs.store import DEFAULT_ROOT, RunStore, open_existing_store

if TYPE_CHECKING:
    from mnistlab.experiments.definition import Experiment, Task
    from mnistlab.experiments.overrides import Overrides
    from mnistlab.runs.events import Listener
    from mnistlab.runs.dry_run import DryRun
    from mnistlab.runs.sequential import SequentialOutcome
    from mnistlab.runs.tasks import RunOutcome
    from mnistlab.spec.model import ModelSpec
    from mnistlab.training.cost import Estimate
    from mnistlab.training.history import History, Reporter

__all__ = ["bundle_size", "dry_run", "estimate", "experiment", "experiment_name", "model_spec", "open_store", "run", "run_until_decided", "train", "write_history"]


def model_spec(model: str | ModelSpec | dict[str, Any]) -> ModelSpec:
    """A zoo id, a spec file (`file.yaml[:ID]`), a spec dict, or a ModelSpec → validated ModelSpec."""
    from mnistlab.spec.model import ModelSpec
    from mnistlab.spec.parse import parse_model
    from mnistlab.zoo import get_model

    if isinstance(model, ModelSpec):
        # Re-validated: a hand-built spec gets the same checks; a spec read from a file keeps
        # naming it (its errors, and later a bundle's, say which file).
        return parse_model(model.to_dict(), model.source)
    if isinstance(model, dict):
        return parse_model(model)
    return get_model(model)


def train(
    model: str | ModelSpec | dict[str, Any],
    dataset: str | Dataset = "mnist",
    data_dir: str | Path | None = None,
    download: bool = False,
    reporter: Reporter | None = None,
    seeds: Sequence[int] | None = None,
    *,
    save_history: bool = False,
    progress: Any = "auto",
    **options: Any,
) -> Any:
    """Train one model; `options` are TrainConfig fields (epochs, batch_size, seed, device, ...).

    With `seeds` (instead of `seed`): train those seeds as one seed bundle and return one History
    per seed; `out_dir` then holds a `seed-N` model folder per seed.

    `reporter` (an engine.Reporter; mnistlab.report.progress has the CLI's: `make_reporter`,
    `JsonLinesReporter`, `LineReporter`) hears every epoch, and `end_run` once per seed trained.
    `save_history`: with `out_dir`, also write each model folder's history.json (`write_history`),
    after every seed has trained, as `mnistlab train --out` does. `progress` (when no `reporter`):
    "auto" (bars in a notebook, rich on a terminal, nothing in a pipe or under pytest), "rich",
    "tqdm", "lines", "json" or "none" (report.progress.train_reporter)."""
    from mnistlab.report.progress import train_reporter

    spec = model_spec(model)
    if seeds is not None:
        from mnistlab.training.bundle import check_seed_list

        check_seed_list(seeds, "seed" in options)
    reporter = train_reporter(reporter, progress, spec.id, seeds, options.get("seed", 0))
    data = dataset if isinstance(dataset, Dataset) else load_dataset(dataset, data_dir=data_dir, download=download)
    if seeds is not None:
        out_dir = options.get("out_dir")
        histories = _train_bundle(spec, data, list(seeds), reporter, options)
        if save_history and out_dir is not None:
            from mnistlab.training.bundle import seed_dir

            for history in histories:
                write_history(seed_dir(Path(out_dir), history.seed) / "history.json", history)
        return histories
    from mnistlab.trained.folder import save_trained
    from mnistlab.training.config import TrainConfig
    from mnistlab.training.engine import fit
    from mnistlab.training.history import RunEnd

    if options.get("out_dir") is not None:
        options["out_dir"] = Path(options["out_dir"])
    history = fit(spec, data, TrainConfig(**options), reporter=reporter)
    if options.get("out_dir") is not None:
        save_trained(options["out_dir"], history, data.info)  # out_dir becomes a model folder
    if reporter is not None:
        reporter.end_run(RunEnd.of(history))
    if save_history and options.get("out_dir") is not None:
        write_history(options["out_dir"] / "history.json", history)
    return history


def _train_bundle(spec: ModelSpec, data: Dataset, seeds: list[int], reporter: Reporter | None,
                  options: dict[str, Any]) -> list[History]:
    from mnistlab.trained.folder import save_trained
    from mnistlab.training.bundle import fit_bundle, seed_dir
    from mnistlab.training.config import TrainConfig
    from mnistlab.training.history import RunEnd

    # Popped even when None (as `train --seeds` without --out passes it): each config gets its own.
    out_dir = options.pop("out_dir", None)
    out = Path(out_dir) if out_dir is not None else None
    configs = [TrainConfig(**options, seed=seed, out_dir=seed_dir(out, seed) if out else None) for seed in seeds]
    histories = fit_bundle(spec, data, configs, reporter=reporter)
    for config, history in zip(configs, histories):
        if config.out_dir is not None:
            save_trained(config.out_dir, history, data.info)  # each seed-N folder becomes a model folder
        if reporter is not None:
            reporter.end_run(RunEnd.of(history))
    return histories


def open_store(root: str | Path = DEFAULT_ROOT, *, create: bool = True, **leases: float | None) -> RunStore:
    """The run store in `root` (created if absent); close it, or use it in a `with` block.

    `leases`: `heartbeat_seconds` and `lease_seconds`, as `mnistlab run` takes them. `create=False`:
    the store must exist already (else a one-line StoreError), as the read commands open it, so that
    a mistyped folder never becomes an empty store."""
    if not create:
        if leases:
            raise ValueError("open_store: leases are for a store opened to train in; create=False opens one to read")
        return open_existing_store(root)
    return RunStore(root, **leases)


def experiment(definition: str | Path | dict[str, Any] | Experiment) -> Experiment:
    """A built-in experiment name, an experiment file, a dict, or an Experiment → validated Experiment."""
    from mnistlab.experiments.definition import Experiment, load_experiment, parse_experiment

    if isinstance(definition, Experiment):
        return parse_experiment(definition.to_dict())
    if isinstance(definition, dict):
        return parse_experiment(definition)
    return load_experiment(definition)[0]


def experiment_name(experiment: str | Path) -> str:
    """The name an experiment is stored under, from that name, a built-in name, or an experiment file."""
    path = Path(experiment)
    if path.suffix in (".yaml", ".yml") and path.exists():
        from mnistlab.experiments.definition import load_experiment

        return load_experiment(path)[0].name
    return str(experiment)


def bundle_size(bundle: int | str) -> int | str:
    """`bundle` as `run` takes it, checked: a whole number of seeds (1 or more) or "auto"; anything
    else is a one-line MnistlabError (the CLI checks `--bundle` before it reads the experiment)."""
    from mnistlab.runs.local import parse_bundle

    return parse_bundle(bundle)


def run(
    definition: str | Path | dict[str, Any] | Experiment,
    store: RunStore | str | Path = DEFAULT_ROOT,
    data_dir: str | Path | None = None,
    dataset: Dataset | None = None,
    bundle: int | str = 1,
    backend: str = "local",
    address: str | None = None,
    gpus_per_task: float | None = None,
    cpus_per_task: int | None = None,
    artifacts: str | Path | None = None,
    reporter_for: Callable[[Task], Reporter] | None = None,
    *,
    download: bool = False,
    source: str | None = None,
    heartbeat_seconds: float | None = None,
    lease_seconds: float | None = None,
    listeners: Sequence[Listener] = (),
    progress: Any = "auto",
    overrides: Overrides | None = None,
    log_to: Sequence[str] = (),
) -> RunOutcome:
    """Train every (model, seed) of an experiment not already in the store, resuming interrupted ones.

    `bundle`: train up to this many seeds of a model together as one seed bundle ("auto": the size a short
    probe here finds fastest, 1 unless a bundle is faster; 1: one run at a time). `backend="ray"` trains on a Ray cluster (`address`, or
    a private one on this machine) while this process alone writes the store; `gpus_per_task` /
    `cpus_per_task` are each task's share, `artifacts` a folder every worker reaches for checkpoints
    (default: the store's). `reporter_for(task)` gives each task's reporter (its epochs, and
    `end_run` when it finishes); `mnistlab.report.progress.task_reporters` makes the CLI's.

    `download`: fetch the dataset if it is not found. `source`: the file the definition was read
    from, for error messages to name. `heartbeat_seconds` / `lease_seconds`: the claims' timing
    (`open_store`), for a store this call opens; a RunStore passed in keeps its own. `listeners`:
    callables that hear the study's events as they happen (`mnistlab.runs.events`: EpochEnded,
    RunEnd, RoundEnded). `progress` (without `reporter_for`): as `train`'s, a bar per task; "auto" in a
    notebook adds a live display (a LiveStudyDisplay, which may be passed). Returns a StudyOutcome.
    `overrides` (`Overrides(epochs=20, seeds=range(5), ...)`, experiments/overrides.py): train the
    derived experiment `NAME+epochs=20...`, whose runs are its own. `log_to`: stream each epoch as it
    ends to `tensorboard:DIR` or `mlflow:URI` (a URI or an mlruns folder), as `export-runs` writes them."""
    from mnistlab.experiments.overrides import load_with_overrides
    from mnistlab.interop.live_log import LiveLog, parse_log_to
    from mnistlab.report.study_view import check_progress, study_progress
    from mnistlab.runs.runner import run_experiment
    from mnistlab.runs.tasks import Placement

    study = load_with_overrides(definition, overrides)[0] if overrides else experiment(definition)
    placement = Placement(backend, address, gpus_per_task, cpus_per_task, artifacts)
    placement.check()  # a bad or silent cluster address is refused before a store is opened or created
    check_progress(progress, reporter_for)  # and a bad progress=
    targets = [parse_log_to(value) for value in log_to]  # and a bad --log-to: nothing is written
    options: dict[str, Any] = dict(data_dir=data_dir, download=download, dataset=dataset, bundle=bundle,
                                   placement=placement)
    if source is not None:
        options["source"] = source

    def train_in(opened: RunStore) -> RunOutcome:  # with progress= as asked; the outcome with the best model
        # The live log first: a listener of the caller's that hears an epoch finds it logged already.
        with LiveLog(targets, opened) as log, study_progress(progress, study, opened, source, reporter_for,
                                                             [log, *listeners]) as watch:
            return watch.finish(run_experiment(study, opened, **options, **watch.options()), opened, study.name)
    if isinstance(store, RunStore):
        if heartbeat_seconds is not None or lease_seconds is not None:
            raise ValueError("run: heartbeat_seconds and lease_seconds are for a store run() opens; "
                             "give them to open_store for a RunStore")
        return train_in(store)
    # None: the store's defaults (a heartbeat every DEFAULT_HEARTBEAT_SECONDS, a lease of 6 heartbeats).
    timing = {"heartbeat_seconds": heartbeat_seconds} if heartbeat_seconds else {}
    with RunStore(store, lease_seconds=lease_seconds, **timing) as opened:
        return train_in(opened)


def run_until_decided(definition: str | Path | dict[str, Any] | Experiment, store: RunStore | str | Path = DEFAULT_ROOT,
                      *, max_seeds: int | None = None, margin: float | None = None, budget: str | float | None = None,
                      overrun: bool | None = None, per_round: int | None = None, estimate: Callable[[Task], float] | None = None,
                      on_round: Callable[..., None] | None = None, **run_options: Any) -> SequentialOutcome:
    """Train in rounds until every question is decided (mnistlab.runs.sequential): `max_seeds` (10),
    `margin` (points, 0.2), `budget` ("30m" or seconds; `overrun=True`: start a run while any of it is left,
    even one whose estimate does not fit), `per_round` (default: `bundle` if a number, else
    1); `run_options` are `run`'s, for every round (`overrides` apply once, to the study);
    `estimate(task)`: a run's seconds for the budget (default: a probe); `on_round(record, state)`."""
    from mnistlab.experiments.overrides import load_with_overrides
    from mnistlab.runs import sequential

    overrides = run_options.pop("overrides", None)
    study = load_with_overrides(definition, overrides)[0] if overrides else experiment(definition)
    bundle = run_options.get("bundle", 1)
    chosen = {"max_seeds": max_seeds, "margin": margin, "budget_seconds": sequential.parse_budget(budget), "overrun": overrun,
              "per_round": per_round or (bundle if isinstance(bundle, int) and not isinstance(bundle, bool) else 1)}
    settings = sequential.UntilDecided(**{name: value for name, value in chosen.items() if value is not None})
    settings.check()
    timing = {key: value for key in ("heartbeat_seconds", "lease_seconds")
              if (value := run_options.pop(key, None)) is not None}
    with (nullcontext(store) if isinstance(store, RunStore) else open_store(store, **timing)) as opened:
        return sequential.run_until_decided(study, opened, lambda sub, into: run(sub, into, **run_options), settings,
                                            run_options.get("source") or "<python>", estimate, on_round=on_round)


def estimate(
    model: str | ModelSpec | dict[str, Any],
    epochs: int | None = None,
    train_images: int | None = None,
    precision: str = "fp32",
    *,
    dataset: str = "mnist",
    validate_on: str = "test",
    probe_seconds: float | None = None,
    batch_size: int | None = None,
    threads: int | None = None,
    device: str = "auto",
) -> "Estimate":
    """How long one seed of `model` takes to train here, from a short measured probe (cost.py).

    Defaults: the spec's epochs and the notebooks' protocol (`validate_on="test"`: all 60,000
    training images, the 10,000 test images validated on each epoch); `train_images` overrides the
    images trained on per epoch. `probe_seconds` (default cost.DEFAULT_PROBE_SECONDS, at most
    cost.MAX_PROBE_SECONDS) is how long the probe measures. The estimate's `hours`, `seconds` and
    `throughput` (images/s, the machine) say the rest; `cost.ESTIMATE_INCLUDES` what is counted."""
    from mnistlab.training.cost import DEFAULT_PROBE_SECONDS, epoch_images, estimate_training, probe_throughput
    from mnistlab.training.limits import check_positive

    spec = model_spec(model)
    where = f"model '{spec.id}'"
    check_positive(epochs, "epochs", where)  # before the probe spends its seconds
    check_positive(train_images, "train_images", where)
    train, val, test = epoch_images(dataset, validate_on)
    throughput = probe_throughput(spec, precision=precision, batch_size=batch_size, threads=threads, device=device,
                                  seconds=probe_seconds if probe_seconds is not None else DEFAULT_PROBE_SECONDS)
    return estimate_training(throughput, epochs=epochs if epochs is not None else spec.training.epochs,
                             train_images=train_images if train_images is not None else train,
                             val_images=val, test_images=test)


def dry_run(definition: str | Path | dict[str, Any] | Experiment, store: RunStore | str | Path = DEFAULT_ROOT, *,
            probe_seconds: float | None = None) -> DryRun:
    """What `run(definition, store)` would train (models × seeds not finished in `store`) and how long it would
    take here, each model's step time measured by a short probe (`estimate`'s, `probe_seconds` long); nothing
    is trained or written, and a store that does not exist is not created."""
    from mnistlab.experiments.definition import load_experiment
    from mnistlab.runs.dry_run import dry_run as plan

    study, source = load_experiment(definition) if isinstance(definition, (str, Path)) else (experiment(definition), "<python>")
    return plan(study, store, source, probe_seconds=probe_seconds)


def write_history(path: str | Path, history: History) -> Path:
    """Publish a run's history (with its test predictions) as JSON, whole or not at all."""
    path = Path(path)
    try:
        return write_text(path, json.dumps(history.to_json(predictions=True)))
    except OSError as error:
        raise EnvironmentFailure(f"{path}: cannot write the history: {error.strerror or error}") from None
