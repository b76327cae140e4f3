"""The reporting layer on a small hand-made store written exactly as the runner writes one."""

from __future__ import annotations

import io
import json
import math
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from safetensors.numpy import save_file

from mnistlab.data.synthetic import synthetic_dataset
from mnistlab.errors import MnistlabError
from mnistlab.report import (
    accuracy_figure, comparison_table, confusion_figure, confusion_matrix, epochs_frame, load_weights, loss_figure,
    misclassified_figure, most_confused_pairs, runs_frame, val_overlay_figure, weights_figure, write_report,
)
from mnistlab.analysis.ranking import best_model
from mnistlab.cli.views import compare_table, experiments_table, run_panel, runs_table
from mnistlab.report.frame import load_experiment, model_diagnoses
from mnistlab.report.content import protocol_sentence
from mnistlab.runs.store import RunStore

from conftest import artifacts_dir, browser_page

EXPERIMENT = "demo"
EPOCHS = 4
# t quantiles from a printed table: two-sided 95% for 2 and 1 degrees of freedom.
T_95_DOF2 = 4.302652729911275
PLOT_KINDS = {"loss", "accuracy", "val-overlay", "weights", "confusion", "misclassified"}
LAYERS = {"conv2d_1": (4, 1, 3, 3), "conv2d_2": (8, 4, 3, 3), "dense_1": (32, 200), "dense_2": (10, 32)}

# Per model: description, reference test acc, and per seed (status, test-set errors out of 100,
# history). Histories are (loss, acc, val_loss, val_acc) per epoch.
GOOD_HISTORY = ([0.9, 0.5, 0.3, 0.2], [0.7, 0.85, 0.92, 0.975], [0.6, 0.35, 0.30, 0.32], [0.8, 0.9, 0.95, 0.96])
MID_HISTORY = ([1.2, 0.8, 0.6, 0.5], [0.6, 0.75, 0.85, 0.90], [0.8, 0.50, 0.45, 0.44], [0.7, 0.8, 0.88, 0.91])
BAD_HISTORY = ([2.3, 2.0, 1.9, 1.8], [0.3, 0.4, 0.45, 0.5], [2.1, 1.9, 1.8, 1.7], [0.35, 0.42, 0.47, 0.5])
DIVERGED_HISTORY = ([2.3, 5.0, math.nan, math.nan], [0.2, 0.1, math.nan, math.nan],
                    [2.5, 9.0, math.nan, math.nan], [0.2, 0.1, math.nan, math.nan])
SECONDS = [1.0, 1.2, 1.4, 1.6]
NOTEBOOK_DIFFERENCES = ("4 epochs on 200 images vs 12 on 60,000", "validated on a held-out split vs on the test set")
MODELS = {
    "m-good": ("wide CNN", 0.9856, {0: ("completed", 3, GOOD_HISTORY), 1: ("completed", 5, GOOD_HISTORY),
                                    2: ("completed", 4, GOOD_HISTORY)}),
    "m-mid": ("small CNN", None, {0: ("completed", 10, MID_HISTORY), 1: ("completed", 6, MID_HISTORY),
                                  2: ("completed", 8, MID_HISTORY)}),
    "m-bad": ("sigmoid MLP", None, {0: ("diverged", None, DIVERGED_HISTORY), 1: ("completed", 50, BAD_HISTORY)}),
}


def model_spec(model: str, description: str) -> dict:
    return {"id": model, "description": description, "input": [28, 28, 1],
            "layers": [{"type": "Conv2D", "filters": 4, "kernel_size": 3}, {"type": "Flatten"},
                       {"type": "Dense", "units": 10, "activation": "softmax"}],
            "training": {"optimizer": "adam", "batch_size": 32, "epochs": EPOCHS}}


def save_weights(store: RunStore, run_id: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    tensors = {name: rng.normal(0, 0.1, shape).astype(np.float32) for name, shape in LAYERS.items()}
    folder = store.run_dir(run_id)
    save_file(tensors, folder / "weights.safetensors")
    (folder / "weights.json").write_text(json.dumps({"layers": list(LAYERS)}))


def add_run(store: RunStore, experiment: str, model: str, description: str, reference: float | None,
            seed: int, status: str, errors: int | None, history: tuple, labels: np.ndarray,
            factors: dict[str, str] | None = None, protocol: str = "split") -> int:
    """One run as the runner records it: ensure, claim, epochs, finish, weights. ``factors``: a
    factor-grid variant's levels, stored in the final metrics as the runner stores them."""
    spec = {"model": model_spec(model, description), "train_limit": None, "precision": "fp32", "val_fraction": 0.1}
    run = store.ensure_run(experiment, model, spec=spec, seed=seed, dataset="synthetic", protocol=protocol,
                           epochs_planned=EPOCHS)
    assert store.claim_run(run.id, "test:1")
    shift = 0.01 * seed  # seeds differ a little, so curves show a CI band; seed 0 is as written
    for epoch, (loss, acc, val_loss, val_acc) in enumerate(zip(*history), start=1):
        store.record_epoch(run.id, epoch, {"loss": loss + shift, "acc": acc - shift / 2, "val_loss": val_loss + shift,
                                           "val_acc": val_acc - shift / 2, "seconds": SECONDS[epoch - 1]})
    predicted = None
    if errors is not None:
        # The first `errors` test images are predicted as the next class; the rest correctly.
        predicted = labels.copy()
        predicted[:errors] = (labels[:errors] + 1) % 10
    final = {"test_loss": None if errors is None else errors / 50, "test_acc": None if errors is None else 1 - errors / 100,
             "diverged_epoch": 3 if status == "diverged" else None, "images_per_second": 5000.0, "params": 1234,
             "description": description, "reference_test_acc": reference,
             "reference_notebook": "000_test.txt" if reference else None,
             "reference_differences": list(NOTEBOOK_DIFFERENCES) if reference else [], "factors": factors}
    store.finish_run(run.id, status, final=final, labels=labels if errors is not None else None,
                     predicted=predicted, device="cpu", versions={"torch": "test"})
    if status == "completed":
        save_weights(store, run.id, seed)
    return run.id


@pytest.fixture(scope="module")
def dataset():
    return synthetic_dataset(n_train=200, n_test=100, seed=0)


@pytest.fixture(scope="module")
def store(tmp_path_factory, dataset) -> RunStore:
    """Read-only for the tests: a report never writes to the store."""
    labels = dataset.test_labels.numpy().astype(np.uint8)
    store = RunStore(tmp_path_factory.mktemp("store") / "runs")
    store.save_experiment(EXPERIMENT, {"name": EXPERIMENT, "description": "three models, repeated seeds",
                                       "dataset": "synthetic", "protocol": "split",
                                       "defaults": {"epochs": EPOCHS, "batch_size": 32},
                                       "models": list(MODELS), "seeds": [0, 1, 2]})
    for model, (description, reference, seeds) in MODELS.items():
        for seed, (status, errors, history) in seeds.items():
            add_run(store, EXPERIMENT, model, description, reference, seed, status, errors, history, labels)
    # A run not yet trained: listed, but left out of every comparison.
    store.ensure_run(EXPERIMENT, "m-mid", spec={"model": model_spec("m-mid", "small CNN"), "train_limit": None,
                                                 "precision": "fp32", "val_fraction": 0.1},
                     seed=3, dataset="synthetic", protocol="split", epochs_planned=EPOCHS)
    yield store
    store.close()


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory, store, dataset) -> Path:
    folder = tmp_path_factory.mktemp("report")
    write_report(store, EXPERIMENT, folder, dataset)
    return folder


# -- tables --------------------------------------------------------------------------------------


def test_runs_frame_has_one_row_per_run_with_final_metrics(store):
    runs = runs_frame(store, EXPERIMENT)
    assert len(runs) == 9
    good0 = runs[(runs["model"] == "m-good") & (runs["seed"] == 0)].iloc[0]
    assert good0["status"] == "completed"
    assert good0["epochs"] == EPOCHS
    assert good0["test_acc"] == pytest.approx(0.97)
    assert good0["train_loss"] == pytest.approx(0.2) and good0["train_acc"] == pytest.approx(0.975)
    assert good0["val_loss"] == pytest.approx(0.32) and good0["val_acc"] == pytest.approx(0.96)
    assert good0["best_epoch"] == 3  # val_loss 0.60, 0.35, 0.30, 0.32: lowest at epoch 3
    assert good0["seconds_per_epoch"] == pytest.approx(1.3)  # (1.0 + 1.2 + 1.4 + 1.6) / 4
    assert good0["reference_test_acc"] == pytest.approx(0.9856)
    assert good0["protocol"] == "split" and good0["params"] == 1234
    diverged = runs[(runs["model"] == "m-bad") & (runs["seed"] == 0)].iloc[0]
    assert diverged["status"] == "diverged" and math.isnan(diverged["test_acc"])
    assert diverged["best_epoch"] == 1  # val_loss 2.5 then 9.0 then NaN
    pending = runs[runs["status"] == "pending"].iloc[0]
    assert pending["epochs"] == 0 and pending["description"] == "small CNN"


def test_comparison_table_means_ci_and_order(store):
    table = comparison_table(store, EXPERIMENT)
    assert table["model"].tolist() == ["m-good", "m-mid", "m-bad"]
    good, mid, bad = (table.iloc[i] for i in range(3))
    assert good["test_acc_mean"] == pytest.approx(0.96)  # (0.97 + 0.95 + 0.96) / 3
    # sample sd of (0.97, 0.95, 0.96) is 0.01; half-width t(0.975, 2) * 0.01 / sqrt(3)
    assert good["test_acc_ci95"] == pytest.approx(T_95_DOF2 * 0.01 / math.sqrt(3))
    assert mid["test_acc_mean"] == pytest.approx(0.92)  # (0.90 + 0.94 + 0.92) / 3
    assert mid["test_acc_ci95"] == pytest.approx(T_95_DOF2 * 0.02 / math.sqrt(3))
    assert good["n"] == 3 and mid["n"] == 3  # the pending m-mid run is not counted
    assert good["best_epoch"] == 3 and mid["best_epoch"] == 4
    assert good["seconds_per_epoch"] == pytest.approx(1.3)
    assert good["reference_test_acc"] == pytest.approx(0.9856) and math.isnan(mid["reference_test_acc"])
    assert bad["n"] == 2 and bad["diverged"] == 1
    assert bad["test_acc_mean"] == pytest.approx(0.5) and math.isnan(bad["test_acc_ci95"])
    # Diagnoses cover every seed; a tie goes to the lowest seed's verdict (m-bad: seed 0 diverged, seed 1 did not),
    # and the rule texts quote that seed's run.
    assert bad["diagnosis_codes"] == "diverged" and bad["diagnosis_seed"] == 0 and bad["diagnosis_agreeing"] == 1
    assert bad["diagnosis"].startswith("diverged (1 of 2 seeds; seed 1: ")
    # m-good's seed 2 is shifted down 0.005 in train acc per 0.01 of seed: 0.965 at the end, under the 0.97 rule.
    assert good["diagnosis"] == "healthy (2 of 3 seeds; seed 2: underfitting)" and good["diagnosis_codes"] == "healthy"


def test_unknown_experiment_is_a_clear_error(store):
    with pytest.raises(MnistlabError, match="no experiment 'nope'.*known: demo"):
        runs_frame(store, "nope")


# -- figures --------------------------------------------------------------------------------------


def test_curve_figures_have_train_and_validation_lines_and_ci_band(store):
    epochs = epochs_frame(store, EXPERIMENT)
    good = epochs[epochs["model"] == "m-good"]
    for figure in (loss_figure(good, "m-good"), accuracy_figure(good, "m-good")):
        (ax,) = figure.axes
        assert len(ax.get_lines()) == 2
        assert len(ax.collections) == 2  # one CI band per line: three seeds
        assert ax.get_xlim()[0] < 1 and ax.get_xlim()[1] > EPOCHS - 0.01
        assert all(float(tick).is_integer() for tick in ax.get_xticks())
    single = epochs[epochs["run_id"] == good["run_id"].iloc[0]]
    assert len(loss_figure(single, "m-good").axes[0].collections) == 0  # one run: no band


def test_val_overlay_draws_every_model(store):
    epochs = epochs_frame(store, EXPERIMENT)
    figure = val_overlay_figure(epochs, ["m-good", "m-mid", "m-bad"], highlight=2)
    (ax,) = figure.axes
    assert len(ax.get_lines()) == 3
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert labels == ["other models (1)", "m-good", "m-mid"]


def test_weights_figure_has_one_violin_per_layer(store):
    run_id = int(runs_frame(store, EXPERIMENT).query("model == 'm-good' and seed == 0")["run_id"].iloc[0])
    weights = load_weights(store, run_id)
    assert list(weights) == list(LAYERS)  # model order from weights.json, not file order
    figure = weights_figure(weights)
    (ax,) = figure.axes
    bodies = [c for c in ax.collections if type(c).__name__ in ("PolyCollection", "FillBetweenPolyCollection")]
    assert len(bodies) == len(LAYERS)
    assert [tick.get_text().split("\n")[0] for tick in ax.get_xticklabels()] == list(LAYERS)


def test_confusion_matrix_pairs_and_figure(dataset):
    labels = np.array([0, 0, 1, 1, 1, 2, 2, 2], dtype=np.uint8)
    predicted = np.array([0, 1, 1, 2, 2, 2, 2, 0], dtype=np.uint8)
    matrix = confusion_matrix(labels, predicted, 3)
    assert matrix.tolist() == [[1, 1, 0], [0, 1, 2], [1, 0, 2]]
    pairs = most_confused_pairs(matrix, ["0", "1", "2"])
    assert pairs[["true", "predicted", "count"]].values.tolist() == [["1", "2", 2], ["0", "1", 1], ["2", "0", 1]]
    assert pairs["share_of_true"].iloc[0] == pytest.approx(2 / 3)
    figure = confusion_figure(confusion_matrix(labels, predicted, 10), [str(i) for i in range(10)])
    (ax,) = figure.axes
    assert len(ax.texts) == 100  # every cell carries its count


def test_misclassified_figure_has_one_axes_per_image(dataset):
    images = dataset.test_images[:7].numpy()
    figure = misclassified_figure(images, [1] * 7, [2] * 7, [str(i) for i in range(10)])
    assert len(figure.axes) == 7
    assert figure.axes[0].get_title() == "1→2"


# -- the report files -----------------------------------------------------------------------------


class Page(HTMLParser):
    """Every element of a page with its attributes and the ids of its ancestors."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str], tuple[str, ...]]] = []
        self.stack: list[tuple[str, str]] = []
        self.text_by_id: dict[str, list[str]] = {}
        self.feed(text)

    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def handle_starttag(self, tag, attrs):
        attributes = {key: value or "" for key, value in attrs}
        self.elements.append((tag, attributes, tuple(i for _, i in self.stack if i)))
        if tag not in self.VOID:
            self.stack.append((tag, attributes.get("id", "")))

    def handle_endtag(self, tag):
        while self.stack and self.stack.pop()[0] != tag:
            pass

    def handle_data(self, data):
        for _, element_id in self.stack:
            if element_id:
                self.text_by_id.setdefault(element_id, []).append(data)

    def find(self, tag, inside: str | None = None, **attributes):
        return [attrs for name, attrs, ancestors in self.elements
                if name == tag and (inside is None or inside in ancestors)
                and all(attrs.get(key.rstrip("_").replace("_", "-")) == value for key, value in attributes.items())]

    def text(self, element_id: str) -> str:
        return " ".join(" ".join(self.text_by_id.get(element_id, [])).split())


def test_write_report_writes_html_and_markdown(tmp_path, store, dataset):
    paths = write_report(store, EXPERIMENT, tmp_path / "out", dataset)
    assert paths.html == tmp_path / "out" / "demo.html" and paths.html.is_file()
    assert paths.markdown == tmp_path / "out" / "demo.md" and paths.markdown.is_file()
    leftovers = [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]
    assert leftovers == []  # no temp files or folders left behind


def test_html_has_table_plots_statistics_and_protocol(report_dir):
    page = Page((report_dir / "demo.html").read_text())
    (table,) = page.find("table", id="comparison")
    rows = page.find("tr", inside="comparison")
    assert len(rows) == 1 + 3  # header and one row per model
    plots = page.find("img", class_="plot")
    assert {plot["data-kind"] for plot in plots} == PLOT_KINDS
    assert len([p for p in plots if p["data-kind"] in ("loss", "accuracy")]) == 2 * 3
    assert page.find("img", inside="misclassified", data_kind="misclassified")
    statistics = page.text("statistics")
    assert "m-good beats m-mid by 4.00 points" in statistics  # mean of 0.07, 0.01, 0.04
    # Every seed: 7 + 1 + 4 discordant images, all one way: p = 2 / 2**12; Holm over 2 tests keeps it.
    assert "McNemar p = 0.0005, Holm-adjusted p = 0.0005: significant at 5%" in statistics
    assert "all 3 common seeds (0, 1, 2), stratified by seed: 12 test predictions only m-good got right" in statistics
    assert "m-good beats m-bad by 45.00 points (no CI: too few runs)" in statistics
    assert "validation: a stratified 10% of the training set; test set used once at the end" in page.text("protocol")
    diagnoses = page.text("diagnoses")
    assert "Training diverged" in diagnoses and "the run's status is 'diverged'" in diagnoses


def test_html_is_self_contained(report_dir):
    text = (report_dir / "demo.html").read_text()
    page = Page(text)
    references = [attrs.get(key, "") for _, attrs, _ in page.elements for key in ("src", "href")]
    assert not [ref for ref in references if re.match(r"\s*(https?:)?//", ref)]
    assert all(img["src"].startswith("data:image/png;base64,") for img in page.find("img"))
    assert not page.find("link") and all("src" not in attrs for attrs in page.find("script"))


def test_markdown_has_table_and_relative_figures(report_dir):
    text = (report_dir / "demo.md").read_text()
    table_rows = [line for line in text.splitlines() if line.startswith("| m-")]
    assert [row.split("|")[1].strip() for row in table_rows] == ["m-good", "m-mid", "m-bad"]
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(images) == 2 * 3 + 4  # curves, overlay, weights, confusion, misclassified
    for image in images:
        assert image.startswith("demo-files/") and (report_dir / image).is_file()
    assert "validation: a stratified 10% of the training set" in text


def test_report_without_dataset_explains_missing_grid(tmp_path, store):
    paths = write_report(store, EXPERIMENT, tmp_path / "out")
    page = Page(paths.html.read_text())
    assert not page.find("img", data_kind="misclassified")
    assert "made without the dataset" in page.text("misclassified")


def test_rewriting_replaces_figures(tmp_path, store, dataset):
    out = tmp_path / "out"
    write_report(store, EXPERIMENT, out, dataset)
    (out / "demo-files" / "stale.png").write_bytes(b"old")
    write_report(store, EXPERIMENT, out, dataset, detail_models=1)
    names = sorted(p.name for p in (out / "demo-files").iterdir())
    assert "stale.png" not in names and "loss-m-mid.png" not in names and "loss-m-good.png" in names
    assert "top 1 of 3 models" in (out / "demo.html").read_text()


def test_missing_weights_are_explained(tmp_path, store, dataset):
    copy = tmp_path / "runs"
    shutil.copytree(store.root, copy)
    for weights in copy.glob("artifacts/*/weights.safetensors"):
        weights.unlink()
    with RunStore(copy) as copied:
        paths = write_report(copied, EXPERIMENT, tmp_path / "out", dataset)
    page = Page(paths.html.read_text())
    assert not page.find("img", data_kind="weights")
    assert "No weight plot: run 1 has no weights.safetensors" in page.text("weights")


def test_protocol_sentences():
    assert protocol_sentence("split", 0.2) == ("validation: a stratified 20% of the training set; "
                                               "test set used once at the end")
    assert protocol_sentence("test", None) == "validation on the test set (the seed notebooks' practice)"


def test_no_completed_runs_is_a_clear_error(tmp_path, dataset):
    labels = dataset.test_labels.numpy().astype(np.uint8)
    with RunStore(tmp_path / "runs") as store:
        store.save_experiment("empty", {"name": "empty", "protocol": "split", "models": ["m"], "seeds": [0]})
        add_run(store, "empty", "m", "d", None, 0, "diverged", None, DIVERGED_HISTORY, labels)
        with pytest.raises(MnistlabError, match="'empty' has no completed runs"):
            write_report(store, "empty", tmp_path / "out")
    assert not (tmp_path / "out").exists()


# -- terminal -------------------------------------------------------------------------------------


def rendered(renderable) -> str:
    console = Console(record=True, width=220, color_system=None, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def test_experiments_and_runs_tables(store):
    text = rendered(experiments_table(store))
    assert "demo" in text and "7 completed, 1 diverged, 1 pending" in text and "96.00% (m-good, 3 seeds)" in text
    runs = rendered(runs_table(store, EXPERIMENT))
    assert len([line for line in runs.splitlines() if re.search(r"\bm-(good|mid|bad)\b", line)]) == 9
    assert "4/4" in runs and "0/4" in runs


def test_experiments_table_chooses_on_validation_not_test(tmp_path, dataset):
    labels = dataset.test_labels.numpy().astype(np.uint8)
    with RunStore(tmp_path / "runs") as store:
        store.save_experiment("peek", {"name": "peek", "dataset": "synthetic", "protocol": "split",
                                       "models": ["m-val", "m-test"], "seeds": [0]})
        # m-val: better on validation, worse on test; m-test the reverse. The table must not pick m-test.
        add_run(store, "peek", "m-val", "val winner", None, 0, "completed", 20, GOOD_HISTORY, labels)
        add_run(store, "peek", "m-test", "test winner", None, 0, "completed", 2, BAD_HISTORY, labels)
        text = rendered(experiments_table(store))
    assert "80.00% (m-val, 1 seed)" in text and "m-test" not in text


def test_the_terminal_chooses_the_model_the_report_chooses(tmp_path, dataset):
    """Mean val_acc ties; the report's rule (analysis.choice) breaks it on the lower mean val_loss. `ls` once
    chose with its own SQL, without that tie-break; now it applies the same rule to the same means."""
    labels = dataset.test_labels.numpy().astype(np.uint8)
    low_loss = (GOOD_HISTORY[0], GOOD_HISTORY[1], [0.6, 0.35, 0.30, 0.25], GOOD_HISTORY[3])  # same val_acc
    with RunStore(tmp_path / "runs") as store:
        store.save_experiment("tie", {"name": "tie", "dataset": "synthetic", "protocol": "split",
                                      "models": ["m-first", "m-low-loss"], "seeds": [0]})
        add_run(store, "tie", "m-first", "higher test acc", None, 0, "completed", 2, GOOD_HISTORY, labels)
        add_run(store, "tie", "m-low-loss", "lower val_loss", None, 0, "completed", 10, low_loss, labels)
        table = comparison_table(store, "tie")
        assert table["val_acc"].nunique() == 1 and best_model(table) == "m-low-loss"
        text = rendered(experiments_table(store))
    assert "90.00% (m-low-loss, 1 seed)" in text and "m-first" not in text


def test_the_terminal_reads_the_store_as_the_report_does(store):
    """report.overview (no pandas, for `ls` and `show`) against report.frame: the same chosen model, mean
    test accuracy and seeds, and the same diagnosis over seeds for every model."""
    from mnistlab.report.overview import chosen_models, model_diagnosis

    table = comparison_table(store, EXPERIMENT)
    chosen = chosen_models(store)[EXPERIMENT]
    row = table.set_index("model").loc[chosen.model]
    assert chosen.model == best_model(table) and chosen.test_acc_mean == row["test_acc_mean"]
    assert chosen.seeds == row["n"] - row["diverged"]
    diagnoses = model_diagnoses(load_experiment(store, EXPERIMENT))
    for model in MODELS:
        assert model_diagnosis(store, EXPERIMENT, model) == diagnoses.get(model)
    assert model_diagnosis(store, EXPERIMENT, "no-such-model") is None


def test_run_panel_shows_spec_epochs_final_and_diagnosis(store):
    run_id = int(runs_frame(store, EXPERIMENT).query("model == 'm-bad' and seed == 0")["run_id"].iloc[0])
    text = rendered(run_panel(store, run_id))
    assert "m-bad, seed 0" in text and "sigmoid MLP" in text and "adam, batch size 32" in text
    assert "diverged at epoch" in text and "Training diverged" in text
    assert len(re.findall(r"^\W*[1-4] ", text, flags=re.MULTILINE)) >= EPOCHS


def test_compare_models_and_runs(store):
    text = rendered(compare_table(store, "m-good", "m-mid"))
    assert "m-good beats m-mid by 4.00 points" in text and "significant at 5%" in text
    runs = runs_frame(store, EXPERIMENT).set_index(["model", "seed"])["run_id"]
    text = rendered(compare_table(store, str(runs["m-good", 1]), str(runs["m-mid", 1])))
    # seed 1: m-good wrong on 5 images, m-mid on 6, nested: 1 discordant image
    assert "by 1.00 points" in text and "p = 1.0000: not significant" in text
    with pytest.raises(MnistlabError, match="two run ids or two model ids"):
        compare_table(store, "m-good", "1")


# -- in a browser ---------------------------------------------------------------------------------

def test_report_in_a_browser(report_dir, tmp_path):
    with browser_page(report_dir / "demo.html") as (page, errors):
        assert page.locator("table#comparison tbody tr").count() == 3
        widths = page.eval_on_selector_all("img.plot", "images => images.map(i => i.complete && i.naturalWidth)")
        assert len(widths) == 2 * 3 + 4 and all(width > 0 for width in widths)
        assert page.locator("#misclassified img.plot[data-kind=misclassified]").count() == 1
        page.screenshot(path=str(artifacts_dir(tmp_path) / "report.png"), full_page=True)
        models = "table#comparison tbody tr td:first-child"
        assert page.locator(models).all_inner_texts() == ["m-good", "m-mid", "m-bad"]
        page.locator("table#comparison th", has_text="Model").click()
        assert page.locator(models).all_inner_texts() == ["m-bad", "m-good", "m-mid"]
        page.locator("table#comparison th", has_text="Model").click()
        assert page.locator(models).all_inner_texts() == ["m-mid", "m-good", "m-bad"]
        page.locator("table#comparison th", has_text="Params").click()  # numbers, all equal
        assert page.locator(models).count() == 3
        assert errors == []


def test_notebook_figure_is_not_compared_across_protocols(store):
    from mnistlab.report.content import COLUMNS, table_rows

    table = comparison_table(store, EXPERIMENT)
    headers = [header for header, _ in COLUMNS]
    rows = {row[0].text: row for row in table_rows(table)}
    delta = rows["m-good"][headers.index("Δ notebook")].text
    assert delta == "different protocol: " + "; ".join(NOTEBOOK_DIFFERENCES)
    assert "pts" not in delta
    assert rows["m-good"][headers.index("Notebook acc")].text.startswith("98.56")
