"""Rich renderables for the CLI: ``mnistlab ls``, ``show RUN``, ``compare A B`` and the other tables.

Each function returns a renderable and prints nothing; the CLI prints it.

What a view needs is imported inside it: ``ls`` and ``show`` read the store through
``report.overview`` (no pandas, scipy or torch), so they start fast; ``ls EXPERIMENT`` and ``compare``
import the report's frame and statistics (pandas, scipy) when they run.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from mnistlab.util import safetext
from mnistlab.errors import DataError
from mnistlab.training.history import COMPLETED, DIVERGED, FAILED, PENDING, RUNNING

if TYPE_CHECKING:
    from mnistlab.data.datasets import Dataset
    from mnistlab.report.pair import Pair, Side
    from mnistlab.report.reproduction import ModelReproduction
    from mnistlab.runs.dry_run import DryRun
    from mnistlab.runs.records import RunRecord
    from mnistlab.runs.store import RunStore
    from mnistlab.spec.model import ModelSpec
    from mnistlab.training.cost import Estimate

__all__ = ["builtin_experiments_table", "compare_table", "datasets_table", "dry_run_view", "estimate_view",
           "experiment_view", "experiments_table", "models_table", "reproduction_view", "run_panel", "run_rows_table",
           "runs_table", "zoo_table"]

# Outcomes first, then work in progress, then trouble: the order counts are listed in.
STATUS_STYLES = {COMPLETED: "green", DIVERGED: "red", RUNNING: "yellow", PENDING: "dim", FAILED: "red"}
MISSING = "—"


def _table(title: str, **options: Any) -> Table:
    """A table in this module's one style: no vertical rules and single spaces between
    columns, so a run list keeps every column whole on an 80-column terminal."""
    return Table(title=safetext.text(title), box=box.SIMPLE_HEAVY, collapse_padding=True, pad_edge=False, **options)


def _cells(*values: RenderableType) -> list[RenderableType]:
    """Table cells: plain strings (ids, names, descriptions) become Text, never markup."""
    return [safetext.text(value) if isinstance(value, str) else value for value in values]

SQL_EXPERIMENT_RUNS = """
    SELECT experiment, status, count(*) AS runs FROM runs GROUP BY experiment, status
"""


def _percent(value: Any) -> str:
    return MISSING if value is None or not math.isfinite(value) else f"{value * 100:.2f}%"


def _number(value: Any, digits: int) -> str:
    return MISSING if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _status(status: str) -> Text:
    return Text(status, style=STATUS_STYLES[status])


# -- mnistlab ls ---------------------------------------------------------------------------------


def _status_counts(counts: Mapping[str, int]) -> Text:
    text = Text()
    for status in STATUS_STYLES:
        if counts.get(status):
            if text:
                text.append(", ")
            text.append(f"{counts[status]} {status}", style=STATUS_STYLES[status])
    return text if text else Text("no runs", style="dim")


def experiments_table(store: RunStore) -> Table:
    """Every experiment: dataset, protocol, models, seeds, runs by status, and the model its report
    chooses on validation (the report's rule, analysis.choice) with its mean test accuracy."""
    from mnistlab.report.overview import chosen_models

    _, rows = store.read_rows(SQL_EXPERIMENT_RUNS)
    counts: dict[str, dict[str, int]] = {}
    for experiment, status, runs in rows:
        counts.setdefault(experiment, {})[status] = runs
    chosen = chosen_models(store)
    table = _table(f"Experiments in {store.root}")
    for column, justify in (("experiment", "left"), ("dataset", "left"), ("protocol", "left"),
                            ("models", "right"), ("seeds", "right"), ("runs", "left"),
                            ("chosen on validation: test acc", "right")):
        table.add_column(column, justify=justify)
    for record in store.experiments():
        best_text = MISSING
        if record.name in chosen:
            best = chosen[record.name]
            seeds = f"{best.seeds} seed{'s' if best.seeds > 1 else ''}"
            best_text = f"{_percent(best.test_acc_mean)} ({best.model}, {seeds})"
        table.add_row(*_cells(record.name, str(record.config.get("dataset", MISSING)),
                              str(record.config.get("protocol", MISSING)),
                              str(len(record.config.get("models", []))), str(len(record.config.get("seeds", []))),
                              _status_counts(counts.get(record.name, {})), best_text))
    return table


def runs_table(store: RunStore, experiment: str | None = None) -> Table:
    """One row per run (of one experiment, or all): status, epochs done, val and test accuracy."""
    from mnistlab.report.frame import experiment_config
    from mnistlab.runs.listing import list_runs

    if experiment is not None:
        experiment_config(store, experiment)
    return run_rows_table(list_runs(store, experiment), f"Runs of {experiment}" if experiment else f"Runs in {store.root}",
                          with_experiment=experiment is None)


def run_rows_table(rows: Sequence[Mapping[str, Any]], title: str, with_experiment: bool = True) -> Table:
    """`ls`'s runs (runs.listing rows, filtered or not): status, epochs done, accuracies, tags."""
    table = _table(title)
    columns = [("id", "right")] + ([("experiment", "left")] if with_experiment else [])
    columns += [("model", "left"), ("seed", "right"), ("status", "left"), ("epochs", "right"),
                ("val acc", "right"), ("test acc", "right"), ("s/epoch", "right"), ("device", "left")]
    tagged = any(row["tags"] for row in rows)
    columns += [("tags", "left")] if tagged else []
    for column, justify in columns:
        # Only the free-text columns may wrap, so statuses and numbers stay whole.
        table.add_column(column, justify=justify, no_wrap=column not in ("experiment", "device", "tags"))
    for row in rows:
        cells: list[RenderableType] = [str(row["id"])] + ([row["experiment"]] if with_experiment else [])
        cells += [row["model"], str(row["seed"]), _status(row["status"]), f"{row['epochs']}/{row['epochs_planned']}",
                  _percent(row["val_acc"]), _percent(row["test_acc"]), _number(row["seconds_per_epoch"], 2),
                  row["device"] or MISSING]
        cells += [", ".join(row["tags"])] if tagged else []
        table.add_row(*_cells(*cells))
    return table


def models_table(store: RunStore, experiment: str) -> Table:
    """One row per model of the experiment: finished runs, mean test accuracy with its 95% CI, and
    the diagnosis over all its seeds (the report's comparison table, read the same way)."""
    from mnistlab.analysis.compare import accuracy_interval_text
    from mnistlab.report.frame import comparison_from, load_experiment

    comparison = comparison_from(load_experiment(store, experiment))
    table = _table(f"Models of {experiment}")
    for column, justify in (("model", "left"), ("runs", "right"), ("test acc (mean, 95% CI)", "right"),
                            ("diagnosis over seeds", "left")):
        table.add_column(column, justify=justify, no_wrap=column != "diagnosis over seeds")
    for row in comparison.itertuples(index=False):
        runs = f"{int(row.n)}" + (f" ({int(row.diverged)} diverged)" if row.diverged else "")
        accuracy = (accuracy_interval_text(row.test_acc_mean, row.test_acc_ci95)
                    if math.isfinite(row.test_acc_mean) else MISSING)
        table.add_row(*_cells(row.model, runs, accuracy, row.diagnosis or MISSING))
    return table


def experiment_view(store: RunStore, experiment: str) -> Group:
    """``mnistlab ls EXPERIMENT``: its runs, then its models with their diagnoses over seeds."""
    return Group(runs_table(store, experiment), models_table(store, experiment))


# -- mnistlab show RUN ---------------------------------------------------------------------------------


def _layers_text(layers: Sequence[Mapping[str, Any]]) -> str:
    counts = Counter(str(layer.get("type", "?")) for layer in layers)
    return f"{len(layers)}: " + ", ".join(f"{kind} ×{n}" if n > 1 else kind for kind, n in counts.items())


def _optimizer_text(optimizer: Any) -> str:
    # A spec names the optimizer either plainly ("adam") or with settings ({name: sgd, lr: 0.1}).
    if isinstance(optimizer, Mapping):
        settings = ", ".join(f"{key}={value}" for key, value in optimizer.items() if key != "name")
        return f"{optimizer.get('name', '?')}" + (f" ({settings})" if settings else "")
    return str(optimizer)


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(seconds))


def _facts_grid(rows: Sequence[tuple[str, RenderableType]]) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for label, value in rows:
        grid.add_row(*_cells(label, value))
    return grid


def _spec_rows(run: RunRecord, tags: Sequence[str] = ()) -> list[tuple[str, RenderableType]]:
    model = run.spec.get("model", {})
    training = model.get("training", {})
    final = run.final or {}
    params = final.get("params")
    rows: list[tuple[str, RenderableType]] = [
        ("model", f"{run.model_id} — {model.get('description', '')}"),
        ("experiment", f"{run.experiment} (dataset {run.dataset}, protocol {run.protocol}, seed {run.seed})"),
        ("layers", _layers_text(model.get("layers", []))),
        ("training", f"{_optimizer_text(training.get('optimizer', '?'))}, batch size "
                     f"{training.get('batch_size', '?')}, {run.epochs_planned} epochs planned"),
        ("precision", f"{run.spec.get('precision', MISSING)}; train limit {run.spec.get('train_limit') or 'none'}; "
                      f"validation fraction {run.spec.get('val_fraction', MISSING)}"),
        ("params", f"{int(params):,}" if params is not None else MISSING),
        ("status", _status(run.status)),
        ("device", run.device or MISSING),
        ("trained on", safetext.text(str((run.versions or {}).get("machine") or MISSING))),  # kept by archives
    ]
    if tags:
        rows.append(("tags", ", ".join(tags)))
    if run.error:
        rows.append(("error", safetext.text(run.error, style="red")))
    return rows


def _epochs_table(history: Mapping[str, Sequence[float]]) -> Table:
    table = _table("Epochs", title_justify="left")
    for column in ("epoch", "loss", "acc", "val_loss", "val_acc", "seconds"):
        table.add_column(column, justify="right")
    for index, epoch in enumerate(history["epoch"]):
        table.add_row(str(epoch), _number(history["loss"][index], 4), _percent(history["acc"][index]),
                      _number(history["val_loss"][index], 4), _percent(history["val_acc"][index]),
                      _number(history["seconds"][index], 2))
    return table


def _final_rows(final: Mapping[str, Any]) -> list[tuple[str, RenderableType]]:
    rows: list[tuple[str, RenderableType]] = [
        ("test acc", _percent(final.get("test_acc"))),
        ("test loss", _number(final.get("test_loss"), 4)),
        ("images / s", _number(final.get("images_per_second"), 0)),
    ]
    if final.get("reference_test_acc") is not None:
        differences = final.get("reference_differences")
        protocol = "" if differences == [] else (
            f"; different protocol: {'; '.join(differences)}" if differences else "; protocol not recorded")
        rows.append(("notebook test acc", f"{_percent(final['reference_test_acc'])} "
                                          f"({final.get('reference_notebook') or 'seed notebook'}{protocol})"))
    if final.get("diverged_epoch") is not None:
        rows.append(("diverged at epoch", str(final["diverged_epoch"])))
    if isinstance(final.get("ray"), Mapping):  # trained by the Ray backend
        ray = final["ray"]
        resumed = f", resumed after epoch {ray['resumed_from_epoch']}" if ray.get("resumed_from_epoch") else ""
        rows.append(("trained on", f"Ray worker {ray.get('worker')}, attempt {ray.get('attempt')}{resumed}"))
    return rows


def _diagnosis_text(run: RunRecord, history: Mapping[str, Sequence[float]]) -> Text:
    from mnistlab.analysis.diagnose import diagnose
    from mnistlab.training.history import FINISHED_STATUSES

    if run.status not in FINISHED_STATUSES or not history["epoch"]:
        return Text("no diagnosis until the run finishes", style="dim")
    text = Text()
    for finding in diagnose(history, status=run.status):
        style = "green" if finding.code == "healthy" else "red"
        text.append(f"{finding.label}: ", style=f"bold {style}")
        text.append(f"{finding.rule}\n")
    return text


def _model_diagnosis_text(store: RunStore, run: RunRecord) -> Text | None:
    """The diagnosis of the run's model over all its finished seeds in the experiment (as the report
    gives it), when the model has more than this one finished run; None otherwise."""
    from mnistlab.report.overview import model_diagnosis

    model = model_diagnosis(store, run.experiment, run.model_id)
    if model is None or len(model.seeds) < 2:
        return None
    return safetext.text(f"{run.model_id} over its seeds in {run.experiment}: {model.text}", style="bold")


NOT_RECORDED = "not recorded"


def _source_text(source: Mapping[str, Any]) -> str:
    if source.get("commit") is None:
        return f"{source.get('file')} ({source.get('reason') or 'no commit'})"
    state = "dirty" if source.get("dirty") else "clean"
    untracked = ", the file itself untracked" if source.get("tracked") is False else ""
    return f"{source.get('file')}: commit {str(source['commit'])[:12]} ({state}{untracked}) in {source.get('repository')}"


def _provenance_rows(provenance: Mapping[str, Any] | None) -> list[tuple[str, RenderableType]]:
    """What produced a run, as `show` lists it; one "not recorded" line for runs trained before it was."""
    if provenance is None:
        return [("provenance", Text(f"{NOT_RECORDED} (trained before mnistlab recorded it)", style="dim"))]
    env = provenance.get("environment") or {}
    from mnistlab.util.provenance import NUMERIC_FLAG_PREFIXES

    flags = [flag for flag in env.get("cpu_flags") or [] if flag.startswith(NUMERIC_FLAG_PREFIXES)]
    packages = provenance.get("distributions") or {}
    sources = provenance.get("sources") or []
    rows: list[tuple[str, RenderableType]] = [
        ("command", str((provenance.get("command") or {}).get("command", NOT_RECORDED))),
        *[("source", _source_text(source)) for source in sources],
        ("libraries", f"torch {env.get('torch') or NOT_RECORDED}, CUDA {env.get('cuda') or 'none'}, "
                      f"cuDNN {env.get('cudnn') or 'none'}, oneDNN {env.get('onednn') or 'none'}, "
                      f"kernels {env.get('cpu_capability') or NOT_RECORDED}"),
        ("cpu", f"{env.get('cpu') or NOT_RECORDED} on {provenance.get('host') or NOT_RECORDED}; "
                f"flags {' '.join(flags) or 'none listed'} ({len(env.get('cpu_flags') or [])} in all)"),
        ("packages", f"{len(packages)} distributions, sha256 {str(provenance.get('distributions_sha256'))[:16]}"),
        ("threads", str(provenance.get("openmp_wait") or NOT_RECORDED)),
    ]
    if not sources:
        rows.insert(1, ("source", "no experiment or spec file (defined in Python)"))
    return rows


def run_panel(store: RunStore, run_id: int) -> Panel:
    """One run: spec summary, status, tags, per-epoch table, final metrics, diagnosis, provenance and notes."""
    run = store.get_run(run_id)
    history = store.history(run_id)
    parts: list[RenderableType] = [_facts_grid(_spec_rows(run, store.tags(run_id)))]
    if history["epoch"]:
        parts.append(_epochs_table(history))
    if run.final:
        parts += [Text("Final", style="bold"), _facts_grid(_final_rows(run.final))]
    parts += [Text("Diagnosis", style="bold"), _diagnosis_text(run, history)]
    across = _model_diagnosis_text(store, run)
    if across is not None:
        parts.append(across)
    parts += [Text("Provenance", style="bold"), _facts_grid(_provenance_rows(store.provenance(run_id)))]
    user_notes = store.user_notes(run_id)
    if run.notes or user_notes:  # Text, so a note is never read as markup
        parts += [Text("Notes", style="bold"),
                  *(safetext.text(f"- {note}") for note in run.notes),  # the system's: e.g. a checkpoint set aside
                  *(safetext.text(f"- (user, {_when(note.created_at)}) {note.text}") for note in user_notes)]
    return Panel(Group(*parts), title=safetext.text(f"run {run.id}: {run.model_id}, seed {run.seed}"),
                 title_align="left")


# -- mnistlab compare A B ------------------------------------------------------------------------------


def _accuracy_cell(side: Side) -> str:
    from mnistlab.analysis.compare import accuracy_interval_text

    return accuracy_interval_text(*side.interval()) if side.test_acc else MISSING


def _sides_table(title: str, sides: Sequence[Side]) -> Table:
    table = _table(title, title_justify="left")
    for column, justify in (("", "left"), ("runs", "right"), ("seeds", "left"), ("test acc (mean ± 95% CI)", "right")):
        table.add_column(column, justify=justify)
    for side in sides:
        table.add_row(*_cells(side.name, str(len(side.run_ids)), ", ".join(str(seed) for seed in side.seeds),
                              _accuracy_cell(side)))
    return table


def _verdict(pair: Pair) -> Group:
    from mnistlab.analysis.multiple import ALPHA

    style = "bold green" if pair.p_value < ALPHA else "bold"
    names = [side.name for side in pair.sides]
    detail = (f"McNemar exact test on {pair.seed_note}: {pair.only_a} test predictions only {names[0]} got right, "
              f"{pair.only_b} only {names[1]}.")
    return Group(safetext.text(detail, style="dim"), safetext.text(pair.sentence, style=style))


def _environment_note(store: RunStore, a: int, b: int) -> Text:
    """Whether the two runs were produced in the same environment (libraries, CPU, packages)."""
    from mnistlab.util.provenance import environment_differences

    provenances = {run_id: store.provenance(run_id) for run_id in (a, b)}
    missing = [str(run_id) for run_id, provenance in provenances.items() if provenance is None]
    if missing:
        return Text(f"Environment: {NOT_RECORDED} for run {' and '.join(missing)}; cannot tell whether they differ.",
                    style="dim")
    differences = environment_differences(provenances[a], provenances[b])
    if not differences:
        return Text("Environment: the same libraries, CPU and installed packages.", style="dim")
    return safetext.text(f"Environments differ: {'; '.join(differences)}. Bit-for-bit differences may come from "
                         "that, not only from the models.", style="yellow")


def compare_table(store: RunStore, a: str | int, b: str | int, experiment: str | None = None) -> Group:
    """A against B (``report.pair.compare_pair``): two run ids, or two model ids of one experiment
    (``experiment`` is needed only when a model has runs in several). McNemar's exact test on
    seed-matched test predictions, and the test-accuracy difference with its 95% CI over shared seeds."""
    from mnistlab.report.pair import compare_pair

    pair = compare_pair(store, a, b, experiment)
    parts: list[RenderableType] = [_sides_table(pair.title, pair.sides)]
    if pair.kind == "runs":
        parts.append(_environment_note(store, pair.sides[0].run_ids[0], pair.sides[1].run_ids[0]))
    if pair.difference_note is not None:
        parts.append(safetext.text(pair.difference_note, style="dim"))
    return Group(*parts, _verdict(pair))


# -- the other commands' tables ------------------------------------------------------------------------


def zoo_table() -> Table:
    """``mnistlab zoo``: the built-in seed models with their parameter counts and the notebook's test accuracy."""
    from mnistlab.zoo import zoo_catalogue

    table = Table(title="mnistlab zoo (models from the seed notebooks)")
    for column in ("id", "params", "optimizer", "epochs", "seed test acc", "description"):
        table.add_column(column, justify="right" if column in ("params", "epochs", "seed test acc") else "left")
    for model in zoo_catalogue():
        acc = model["notebook_test_acc"]
        table.add_row(model["id"], f"{model['params']:,}", model["optimizer"], str(model["epochs"]),
                      f"{acc * 100:.2f}%" if acc is not None else "—", model["description"])
    return table


def datasets_table(found: Sequence[tuple[str, Dataset | DataError]]) -> Table:
    """``mnistlab data``: each dataset's state, from ``api.check_datasets`` (a Dataset, or the DataError)."""
    from mnistlab.data.datasets import dataset_status

    table = Table(title="datasets")
    for column in ("name", "status", "train", "test", "folder"):
        table.add_column(column, overflow="fold")
    for name, dataset in found:
        status = dataset_status(name, dataset)
        if not status["ok"]:
            table.add_row(name, Text("missing or bad", style="red"), "", "", status["error"])
            continue
        table.add_row(name, Text("ok", style="green"), f"{status['train']:,}", f"{status['test']:,}",
                      str(status["folder"]))
    return table


def builtin_experiments_table() -> Table:
    """``mnistlab experiments``: the built-in experiments, with factor variants counted among the models."""
    from mnistlab.experiments.definition import builtin_catalogue

    table = Table(title="built-in experiments (mnistlab run NAME)")
    for column in ("name", "models", "seeds", "protocol", "description"):
        table.add_column(column)
    for experiment in builtin_catalogue():
        table.add_row(experiment["name"], str(experiment["models"]), str(len(experiment["seeds"])),
                      experiment["protocol"], experiment["description"])
    return table


def reproduction_view(lines: Sequence[ModelReproduction]) -> tuple[Table, Text]:
    """``mnistlab reproduction``: notebook vs mnistlab per seed model (``api.reproduction``'s lines), and the rule."""
    from mnistlab.analysis.compare import accuracy_interval_text
    from mnistlab.report.reproduction import RULE

    table = Table("model", "notebook %", "mnistlab %", "seeds", "verdict")
    for line in lines:
        notebook = f"{100 * line.notebook_acc:.2f}" if line.notebook_acc is not None else "-"
        measured = accuracy_interval_text(line.mean, line.half_width, unit="") if line.seeds else "-"
        table.add_row(Text(line.model_id), notebook, measured, str(line.seeds), line.verdict)
    return table, Text(RULE, style="dim")


def estimate_view(spec: ModelSpec, cost: Estimate, flops: int) -> tuple[Table, Text]:
    """``mnistlab estimate``: the estimated training time of one seed, and how the probe measured it."""
    from mnistlab.training.cost import ESTIMATE_INCLUDES, FLOPS_COUNTED

    speed = cost.throughput
    table = Table("model", "forward MFLOP/image", f"train img/s ({speed.precision})", "eval img/s", "epochs",
                  "images/epoch", "est. hours/seed", title="estimated training time (one seed)")
    table.add_row(Text(spec.id), f"{flops / 1e6:,.1f}", f"{speed.train_images_per_second:,.0f}",
                  f"{speed.eval_images_per_second:,.0f}", str(cost.epochs), f"{cost.train_images:,}",
                  f"{cost.hours:,.2f}")
    warm = "; one step outlasted the probe, so its warm-up is in the figure" if speed.warmup_timed else ""
    return table, Text(f"on {speed.machine}, {speed.threads} threads, batch {speed.batch_size}: {speed.train_steps} "
                       f"training steps and {speed.eval_images:,} evaluated images timed in a {speed.seconds:.0f} s "
                       f"probe{warm}. Counts {ESTIMATE_INCLUDES}. FLOPs: {FLOPS_COUNTED}.", style="dim")


def dry_run_view(plan: DryRun) -> Table:
    """`mnistlab run --dry-run`: each model with seeds still to train, and the estimated time here."""
    from mnistlab.training.cost import ESTIMATE_INCLUDES

    table = Table("model", "seeds to train", "epochs", "train img/s", "est. minutes/seed", "est. hours",
                  title=f"{plan.experiment}: {plan.runs} run(s) to train, {plan.done} already done; "
                        f"estimated {plan.hours:,.2f} hours here")
    for model in plan.planned:
        table.add_row(Text(model.model_id), ", ".join(str(seed) for seed in model.seeds), str(model.estimate.epochs),
                      f"{model.estimate.throughput.train_images_per_second:,.0f}",
                      f"{model.estimate.seconds / 60:,.1f}", f"{model.seconds / 3600:,.2f}")
    machines = sorted({model.estimate.throughput.machine for model in plan.planned})
    table.caption = Text(f"on {'; '.join(machines) or 'this machine'}, one seed at a time, from a short probe of each "
                         f"model's real training steps; counts {ESTIMATE_INCLUDES}. Nothing was trained or written.",
                         style="dim")
    return table
