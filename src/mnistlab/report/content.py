"""What a report says, worked out once and shared by the HTML page and the Markdown file."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

import mnistlab
from mnistlab.data.datasets import DATASETS, Dataset
from mnistlab.errors import ArtifactError, MnistlabError
from mnistlab.report import plots
from mnistlab.analysis.diagnose import ModelDiagnosis
from mnistlab.analysis.compare import accuracy_interval_text, p_text
from mnistlab.analysis.effects import METRICS, Effect, FactorStudy
from mnistlab.report.artifacts import load_predictions, load_weights
from mnistlab.report.conclusions import Conclusions, loss_text, write_conclusions
from mnistlab.report.factors import factor_study
from mnistlab.report.frame import ExperimentData, comparison_from, load_experiment, model_diagnoses
from mnistlab.analysis.multiple import ALPHA
from mnistlab.analysis.outperform import outperform
from mnistlab.analysis.ranking import (
    Statistics,
    best_model,
    best_run,
    confusion_matrix,
    misclassified_indices,
    most_confused_pairs,
    statistics,
)
from mnistlab.report.sequential import UntilDecidedSection, until_decided_section
from mnistlab.runs.store import RunStore
from mnistlab.training.history import COMPLETED, DIVERGED

__all__ = [
    "DEFAULT_DETAIL_MODELS", "TEST_ACC_HEADER", "TEXT_COLUMNS", "BestRun", "Cell", "InProgress", "Plot", "Report",
    "build_report", "effect_row", "experiment_conclusions", "protocol_sentence", "slug",
]

# Per-model curve plots cost ~0.1 s each; past this many models only the overlay shows them all.
DEFAULT_DETAIL_MODELS = 12
MISCLASSIFIED_LIMIT = 36
CONFUSED_PAIRS = 10
MISSING = "—"


@dataclass(frozen=True)
class Plot:
    """One rendered figure: ``kind`` is what the page tags it with, ``name`` a file stem."""

    kind: str
    name: str
    title: str
    png: bytes

    @property
    def data_uri(self) -> str:
        return plots.png_data_uri(self.png)


@dataclass(frozen=True)
class InProgress:
    """A report written while its study runs (report/live.py): how far it is, and how often the
    page reloads itself (the final report has none of this)."""

    done: int  # runs no longer pending or running
    total: int
    refresh_seconds: int

    @property
    def text(self) -> str:
        return f"in progress: {self.done} of {self.total} runs"

    @property
    def sentence(self) -> str:
        return (f"This study is {self.text} finished; the page reloads every {self.refresh_seconds} s "
                "and becomes the final report when the last run ends.")


@dataclass(frozen=True)
class Cell:
    """A table cell: the text people read and the value clicking its header sorts by."""

    text: str
    sort: float | str


@dataclass(frozen=True)
class BestRun:
    """The best model's best run and its errors on the test set."""

    model: str
    run_id: int
    seed: int
    test_acc: float
    confusion: Plot | None
    pairs: pd.DataFrame
    misclassified: Plot | None
    notes: tuple[str, ...]


@dataclass(frozen=True)
class Report:
    """Everything one report says, ready to render; ``table`` is the comparison table as
    numbers (for notebooks), ``rows`` the same formatted for reading."""

    experiment: str
    title: str
    description: str
    facts: tuple[tuple[str, str], ...]
    protocol: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    table: pd.DataFrame
    diagnoses: tuple[ModelDiagnosis, ...]
    diagnosis_note: str
    statistics: Statistics | None
    statistics_note: str
    curves: tuple[Plot, ...]
    curves_note: str
    overlay: Plot
    weights: Plot | None
    weights_note: str
    best: BestRun
    conclusions: Conclusions
    effects: FactorStudy | None = None
    effects_plots: tuple[Plot, ...] = ()
    effects_note: str = ""
    until_decided: UntilDecidedSection | None = None  # a study run with --until-decided
    outperform: dict[str, str] | None = None  # per compared model: P(best > it) over paired seeds, as text

    @property
    def effect_rows(self) -> tuple[tuple[str, ...], ...]:
        """The factor effects as text rows: metric, contrast, estimate, CI, p, adjusted p,
        detectable effect, verdict (accuracy in points, loss in its own unit)."""
        return tuple(effect_row(effect) for effect in self.effects.effects) if self.effects else ()

    @property
    def plots(self) -> tuple[Plot, ...]:
        """Every figure of the report, in page order."""
        found = (*self.effects_plots, *self.curves, self.overlay, self.weights, self.best.confusion,
                 self.best.misclassified)
        return tuple(plot for plot in found if plot is not None)


# -- words ----------------------------------------------------------------------------------------


def protocol_sentence(protocol: str, val_fraction: float | None) -> str:
    """How validation and test data were used, in plain words."""
    if protocol == "split":
        share = f"{val_fraction:.0%}" if val_fraction is not None and math.isfinite(val_fraction) else "part"
        return f"validation: a stratified {share} of the training set; test set used once at the end"
    if protocol == "test":
        return "validation on the test set (the seed notebooks' practice)"
    raise MnistlabError(f"unknown protocol {protocol!r} (expected 'split' or 'test')")


def _protocols(data: ExperimentData) -> str:
    runs = data.finished
    sentences = []
    for protocol, group in runs.groupby("protocol", sort=True):
        fractions = group["val_fraction"].dropna()
        sentences.append(protocol_sentence(str(protocol), float(fractions.iloc[0]) if len(fractions) else None))
    return "; and ".join(sentences)


def _percent(value: float) -> str:
    return MISSING if not math.isfinite(value) else f"{value * 100:.2f}%"


def _number(value: float, digits: int) -> str:
    return MISSING if not math.isfinite(value) else f"{value:.{digits}f}"


def _sort_value(value: float) -> float | str:
    # Missing values sort as empty text, which the page's script puts last either way.
    return value if math.isfinite(value) else ""


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "model"


def effect_row(effect: Effect) -> tuple[str, ...]:
    """One factor effect as table text: accuracy in points, loss in its own unit."""
    if effect.metric == "test_acc":
        def value(number: float, sign: str = "") -> str:
            return MISSING if not math.isfinite(number) else f"{number * 100:{sign}.2f} pts"
    else:
        def value(number: float, sign: str = "") -> str:
            if not math.isfinite(number):
                return MISSING
            return ("+" if sign and number >= 0 else "") + loss_text(number)

    interval = MISSING if not math.isfinite(effect.low) else f"{value(effect.low)} to {value(effect.high)}"
    verdict = "significant" if effect.significant else "not distinguishable from noise"
    return (METRICS.get(effect.metric, effect.metric), effect.label, value(effect.estimate, "+"), interval,
            _p_cell(effect.p_value), _p_cell(effect.p_adjusted), value(effect.detectable), verdict)


def _p_cell(p_value: float) -> str:
    return MISSING if not math.isfinite(p_value) else p_text(p_value).removeprefix("p = ").removeprefix("p ")


# -- the table -------------------------------------------------------------------------------------

TEST_ACC_HEADER = "Test acc ± 95% CI"
# Columns of words rather than numbers: aligned left.
TEXT_COLUMNS = ("Model", "Description", "Diagnosis", "Δ notebook")
# Each column: its header and how to make its cell from a comparison-table row.
COLUMNS: tuple[tuple[str, Callable[[Any], Cell]], ...] = (
    ("Model", lambda r: Cell(r.model, r.model)),
    ("Description", lambda r: Cell(r.description, r.description)),
    ("Params", lambda r: Cell(MISSING if not math.isfinite(r.params) else f"{int(r.params):,}",
                              _sort_value(r.params))),
    ("Epochs", lambda r: Cell(str(int(r.epochs)), int(r.epochs))),
    ("Train loss", lambda r: Cell(_number(r.train_loss, 4), _sort_value(r.train_loss))),
    ("Val loss", lambda r: Cell(_number(r.val_loss, 4), _sort_value(r.val_loss))),
    ("Train acc", lambda r: Cell(_percent(r.train_acc), _sort_value(r.train_acc))),
    ("Val acc", lambda r: Cell(_percent(r.val_acc), _sort_value(r.val_acc))),
    (TEST_ACC_HEADER, lambda r: Cell(_mean_ci_text(r.test_acc_mean, r.test_acc_ci95),
                                     _sort_value(r.test_acc_mean))),
    ("Runs", lambda r: Cell(f"{int(r.n)}" + (f" ({int(r.diverged)} diverged)" if r.diverged else "")
                            + (f"; trained on {r.trained_on}" if r.trained_on else ""), int(r.n))),
    ("Best epoch", lambda r: Cell(_number(r.best_epoch, 0 if float(r.best_epoch).is_integer() else 1),
                                  _sort_value(r.best_epoch))),
    ("s/epoch", lambda r: Cell(_number(r.seconds_per_epoch, 2), _sort_value(r.seconds_per_epoch))),
    ("Diagnosis", lambda r: Cell(r.diagnosis, r.diagnosis)),
    ("Notebook acc", lambda r: Cell(_percent(r.reference_test_acc), _sort_value(r.reference_test_acc))),
    ("Δ notebook", lambda r: _reference_delta(r)),
)


def _reference_delta(row: Any) -> Cell:
    """The difference from the notebook's figure, only where the runs followed the notebook's protocol."""
    if not math.isfinite(row.reference_test_acc):
        return Cell(MISSING, "")
    if row.reference_differences is None:
        return Cell("protocol not recorded", "")
    if row.reference_differences:
        return Cell(f"different protocol: {row.reference_differences}", "")
    delta = row.test_acc_mean - row.reference_test_acc
    return Cell(_points(delta), _sort_value(delta))


def _mean_ci_text(mean: float, half_width: float) -> str:
    if not math.isfinite(mean):
        return MISSING
    if not math.isfinite(half_width):
        return f"{mean * 100:.2f}% (1 run, no CI)"
    return accuracy_interval_text(mean, half_width)


def _points(value: float) -> str:
    return MISSING if not math.isfinite(value) else f"{value * 100:+.2f} pts"


def table_rows(table: pd.DataFrame) -> tuple[tuple[Cell, ...], ...]:
    return tuple(tuple(cell(row) for _, cell in COLUMNS) for row in table.itertuples(index=False))


# -- facts -----------------------------------------------------------------------------------------


def _facts(data: ExperimentData) -> tuple[tuple[str, str], ...]:
    runs, config = data.runs, data.config
    counts = runs["status"].value_counts()
    unfinished = int(len(runs) - counts.get(COMPLETED, 0) - counts.get(DIVERGED, 0))
    seeds = sorted(int(seed) for seed in runs["seed"].unique())
    return (
        ("Dataset", ", ".join(sorted(runs["dataset"].unique())) or str(config.get("dataset", MISSING))),
        ("Models", f"{runs['model'].nunique()}"),
        ("Seeds", ", ".join(str(seed) for seed in seeds) or MISSING),
        ("Runs", f"{counts.get(COMPLETED, 0)} completed, {counts.get(DIVERGED, 0)} diverged, "
                 f"{unfinished} not finished (left out)"),
        ("Validation split", "none: validation is the test set" if config.get("protocol") == "test"
         else "per seed (each seed draws its own, seeded by the run's seed)" if config.get("split") == "per-seed"
         else "fixed (the same for every model and seed)"),
        ("Precision", ", ".join(sorted(runs["precision"].dropna().unique())) or MISSING),
        ("Devices", ", ".join(sorted(runs["device"].dropna().unique())) or MISSING),
        ("Generated", f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by mnistlab {mnistlab.__version__}"),
    )


# -- figures ---------------------------------------------------------------------------------------


def _plot(kind: str, name: str, figure: Figure) -> Plot:
    title = figure.get_suptitle() if kind in ("misclassified", "effects") else figure.axes[0].get_title()
    return Plot(kind, slug(name), title, plots.figure_png(figure))


def _curve_epochs(data: ExperimentData) -> pd.DataFrame:
    """The epochs curves are drawn from: each model's completed runs, or its diverged runs when
    none completed. A diverged run's NaN epochs would make a mean curve jump where it drops out."""
    finished = data.finished
    completed_models = set(data.completed["model"])
    chosen = finished[(finished["status"] == COMPLETED) | ~finished["model"].isin(completed_models)]
    return data.epochs[data.epochs["run_id"].isin(chosen["run_id"])]


def _curves(epochs: pd.DataFrame, ranking: list[str],
            detail_models: int) -> tuple[tuple[Plot, ...], str]:
    chosen = ranking[:detail_models]
    by_model = dict(tuple(epochs[epochs["model"].isin(chosen)].groupby("model")))
    curves = []
    for model in chosen:
        if model in by_model:
            curves.append(_plot("loss", f"loss-{model}", plots.loss_figure(by_model[model], model)))
            curves.append(_plot("accuracy", f"accuracy-{model}", plots.accuracy_figure(by_model[model], model)))
    notes = ["Curves are the mean over a model's completed runs with a 95% CI band (clipped to the "
             "metric's range); diverged runs are left out unless a model has nothing else."]
    if len(ranking) > len(chosen):
        notes.append(f"Loss and accuracy curves are drawn for the top {len(chosen)} of {len(ranking)} models "
                     f"by mean test accuracy; the overlay shows every model's validation accuracy.")
    return tuple(curves), " ".join(notes)


def _weights(store: RunStore, model: str, run: pd.Series, damaged: dict[int, str]) -> tuple[Plot | None, str]:
    try:
        weights = load_weights(store, int(run["run_id"]))
    except ArtifactError as error:
        damaged[int(run["run_id"])] = str(error)
        return None, f"No weight plot: run {int(run['run_id'])} is damaged: {error}."
    except MnistlabError as error:
        return None, f"No weight plot: {error}."
    title = f"{model}, run {int(run['run_id'])} (seed {int(run['seed'])}): weights per layer"
    note = ("One violin per weighted layer (Conv2D and Dense kernels), labelled with its weight count; "
            f"each violin's density is estimated from at most {plots.KDE_SAMPLE:,} evenly spaced weights.")
    return _plot("weights", "weights", plots.weights_figure(weights, title)), note


def _class_names(data: ExperimentData, dataset: Dataset | None, labels: np.ndarray) -> tuple[str, ...]:
    if dataset is not None:
        return dataset.info.class_names
    names = data.runs["dataset"].unique()
    if len(names) == 1 and names[0] in DATASETS:
        return DATASETS[names[0]].class_names
    return tuple(str(index) for index in range(max(10, int(labels.max()) + 1)))


def _misclassified(labels: np.ndarray, predicted: np.ndarray, dataset: Dataset | None,
                   class_names: tuple[str, ...], title: str) -> tuple[Plot | None, str]:
    if dataset is None:
        return None, ("No grid of misclassified images: the report was made without the dataset, "
                      "so the test images are not available (pass the dataset to write_report).")
    test_labels = dataset.test_labels.numpy()
    if len(test_labels) != len(labels) or not np.array_equal(test_labels, labels):
        return None, ("No grid of misclassified images: the dataset given does not match the test "
                      "labels stored with the run.")
    wrong = misclassified_indices(labels, predicted, MISCLASSIFIED_LIMIT)
    if not len(wrong):
        return None, "No grid of misclassified images: the run classified every test image correctly."
    images = dataset.test_images[wrong].numpy()
    figure = plots.misclassified_figure(images, labels[wrong], predicted[wrong], class_names, title)
    return _plot("misclassified", "misclassified", figure), (
        f"The first {len(wrong)} misclassified test images (in test-set order), titled true→predicted.")


def _best_run(store: RunStore, data: ExperimentData, model: str, run: pd.Series,
              dataset: Dataset | None, damaged: dict[int, str]) -> BestRun:
    run_id = int(run["run_id"])
    base = dict(model=model, run_id=run_id, seed=int(run["seed"]), test_acc=float(run["test_acc"]))
    stored = load_predictions(store, [run_id], damaged).get(run_id)
    if stored is None and run_id in damaged:
        return BestRun(**base, confusion=None, pairs=pd.DataFrame(), misclassified=None,
                       notes=(f"Run {run_id} is damaged, so there is no confusion matrix: {damaged[run_id]}.",))
    if stored is None:
        return BestRun(**base, confusion=None, pairs=pd.DataFrame(), misclassified=None,
                       notes=(f"Run {run_id} stored no test predictions, so there is no confusion matrix.",))
    labels, predicted = stored
    class_names = _class_names(data, dataset, labels)
    matrix = confusion_matrix(labels, predicted, len(class_names))
    prefix = f"{model}, run {run_id} (seed {int(run['seed'])})"
    confusion = _plot("confusion", "confusion", plots.confusion_figure(matrix, class_names, f"{prefix}: confusion matrix"))
    grid, grid_note = _misclassified(labels, predicted, dataset, class_names, f"{prefix}: misclassified test images")
    notes = [grid_note]
    if plots.short_class_names(class_names) != list(class_names):
        notes.append("Plots show class indices: " + ", ".join(f"{i} = {name}" for i, name in enumerate(class_names)) + ".")
    return BestRun(**base, confusion=confusion, pairs=most_confused_pairs(matrix, class_names, CONFUSED_PAIRS),
                   misclassified=grid, notes=tuple(notes))


# -- assembly --------------------------------------------------------------------------------------


def _statistics(store: RunStore, data: ExperimentData, ranking: list[str], best: str,
                damaged: dict[int, str]) -> tuple[Statistics | None, str]:
    if len(ranking) < 2:
        return None, "Only one model has finished runs, so there is nothing to compare."
    result = statistics(data.runs, ranking, best, lambda ids: load_predictions(store, ids, damaged))
    note = (f"{best} (chosen on validation: highest mean final validation accuracy) against each other "
            "model. McNemar's exact test uses the two models' test predictions on every seed they share, "
            "stratified by seed (the discordant images of all seeds pooled: under the null each is a fair "
            "coin in every seed); the difference in test accuracy is the mean over the shared seeds, paired "
            "by seed, with its 95% t interval. The p-values of all these comparisons form one family and are "
            f"Holm-adjusted; a difference is called significant only when its adjusted p < {ALPHA:g}. Both "
            "p-values are shown. A difference that is not significant is not evidence of equality: each such "
            "line says what difference the test could have detected (80% power, two-sided 5%).")
    return result, note


def _outperform(data: ExperimentData, stats: Statistics | None) -> dict[str, str]:
    """P(best > other) over each comparison's paired seeds, beside its mean difference."""
    if stats is None:
        return {}
    accuracy = dict(zip(data.runs["run_id"].astype(int), data.runs["test_acc"].astype(float)))
    return {c.b: outperform(c.a, c.b, [accuracy[r] for r in c.runs_a], [accuracy[r] for r in c.runs_b]).text()
            for c in stats.comparisons}


def _effects(study: FactorStudy | None) -> tuple[tuple[Plot, ...], str]:
    if study is None:
        return (), ""
    plotted = [metric for metric in METRICS if any(m.metric == metric for m in study.level_means)]
    figures = tuple(_plot("effects", f"effects-{metric}", plots.effects_figure(study, metric)) for metric in plotted)
    formulas = "; ".join(f"{METRICS[metric]}: {formula}" for metric, formula in study.formulas.items())
    note = (f"Each factor's effect comes from one ordinary least-squares model per metric over {study.n_runs} "
            "completed runs, with the factor levels and the seed (a blocking factor) as terms, and pairwise "
            "interactions when every pair of levels was run and degrees of freedom are left "
            f"(statsmodels; {formulas}; f0, f1, ... are the factors in order). An effect is the difference "
            "of fitted means from the factor's first (reference) level, averaged with equal weight over the "
            "other factors' levels and the seeds. Main effects and interactions are each one family per "
            f"metric, Holm-adjusted; significant means adjusted p < {ALPHA:g}. The plot's bars are each "
            "level mean's own 95% CI; an effect's interval (in the table) is narrower when seeds move all "
            "levels together, so judge effects by the table, not by overlapping bars. "
            + " ".join(study.notes))
    return figures, note.strip()


def experiment_conclusions(store: RunStore, experiment: str) -> Conclusions:
    """The written conclusions of an experiment's report, without rendering any figure."""
    data = load_experiment(store, experiment)
    table = comparison_from(data)
    best = best_model(table)
    if best is None:
        raise MnistlabError(f"experiment {experiment!r} has no completed runs to draw conclusions from "
                            f"({len(data.runs)} runs in {store.path}); run it first")
    stats, _ = _statistics(store, data, table["model"].tolist(), best, damaged={})
    protocols = sorted(str(protocol) for protocol in data.finished["protocol"].dropna().unique())
    return write_conclusions(best, data.runs, stats, factor_study(data.runs), protocols)


def build_report(store: RunStore, experiment: str, dataset: Dataset | None = None,
                 detail_models: int = DEFAULT_DETAIL_MODELS) -> Report:
    """Read the experiment, compute tables and statistics and render every figure."""
    data = load_experiment(store, experiment)
    diagnoses = model_diagnoses(data)
    table = comparison_from(data, diagnoses)
    ranking = table["model"].tolist()
    best = best_model(table)
    if best is None:
        raise MnistlabError(f"experiment {experiment!r} has no completed runs to report on "
                            f"({len(data.runs)} runs in {store.path}); run it first")
    run = best_run(data.runs, best)
    # Damaged runs (unreadable weights or predictions) are left out where their files are needed
    # and listed among the facts; the rest of the report is written.
    damaged: dict[int, str] = {}
    stats, stats_note = _statistics(store, data, ranking, best, damaged)
    curve_epochs = _curve_epochs(data)
    curves, curves_note = _curves(curve_epochs, ranking, detail_models)
    weights, weights_note = _weights(store, best, run, damaged)
    best_section = _best_run(store, data, best, run, dataset, damaged)
    study = factor_study(data.runs)
    effects_plots, effects_note = _effects(study)
    protocols = sorted(str(protocol) for protocol in data.finished["protocol"].dropna().unique())
    conclusions = write_conclusions(best, data.runs, stats, study, protocols)
    overlay = _plot("val-overlay", "val-overlay", plots.val_overlay_figure(curve_epochs, ranking))
    return Report(
        until_decided=until_decided_section(store, experiment),
        outperform=_outperform(data, stats),
        experiment=experiment,
        title=f"mnistlab report: {experiment}",
        description=str(data.config.get("description", "")),
        facts=_facts(data) + tuple((f"Damaged run {run_id}", problem) for run_id, problem in sorted(damaged.items())),
        protocol=_protocols(data),
        columns=tuple(header for header, _ in COLUMNS),
        rows=table_rows(table),
        table=table,
        diagnoses=tuple(diagnoses[model] for model in ranking if model in diagnoses),
        diagnosis_note=("Each model's diagnosis covers all its seeds: the verdict most seeds share, with how "
                        "many share it and what the others showed. The rule texts quote the numbers of one real "
                        "run: the lowest seed with that verdict."),
        statistics=stats,
        statistics_note=stats_note,
        curves=curves,
        curves_note=curves_note,
        overlay=overlay,
        weights=weights,
        weights_note=weights_note,
        best=best_section,
        conclusions=conclusions,
        effects=study,
        effects_plots=effects_plots,
        effects_note=effects_note,
    )
