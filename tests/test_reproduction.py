"""docs/REPRODUCTION.md's table: which runs count, the verdict rule, and the document itself."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mnistlab import api
from mnistlab.report.reproduction import FLOOR, MIN_SEEDS, RULE, reproduction_table
from mnistlab.runs.store import RunStore
from mnistlab.zoo import get_model

from cli_driver import run_cli

TEST_IMAGES = 10_000


def add_run(store: RunStore, model_id: str, seed: int, acc: float | None, *, differences: list[str] | None = None,
            status: str = "completed", machine: str = "Test CPU, 2 usable of 2 CPUs", experiment: str = "repro") -> None:
    """A finished run as the runner records it, with test predictions that score ``acc`` exactly."""
    spec = get_model(model_id)
    store.save_experiment(experiment, {"name": experiment, "protocol": "test"})
    run = store.ensure_run(experiment, model_id, spec={"model": spec.to_dict()}, seed=seed, dataset="mnist",
                           protocol="test", epochs_planned=spec.training.epochs)
    assert store.claim_run(run.id, "test:1")
    labels = (np.arange(TEST_IMAGES) % 10).astype(np.uint8)
    predicted = labels.copy()
    if acc is not None:
        wrong = round((1 - acc) * TEST_IMAGES)
        predicted[:wrong] = (labels[:wrong] + 1) % 10
    final = {"test_acc": acc, "reference_test_acc": spec.reference["test_acc"],
             "reference_differences": [] if differences is None else differences}
    store.finish_run(run.id, status, final=final, labels=labels if acc is not None else None,
                     predicted=predicted if acc is not None else None, device="cpu",
                     versions={"torch": "test", "machine": machine})


@pytest.fixture
def store(tmp_path):
    with RunStore(tmp_path / "runs") as store:
        yield store


def line_of(store: RunStore, model_id: str):
    return next(line for line in reproduction_table([store]) if line.model_id == model_id)


def test_a_notebook_failure_reproduced_by_the_same_failure(store):
    # s000-m6's notebook failed at 34.08%; mnistlab's seeds failing around 34.85% reproduce it.
    for seed, acc in enumerate([0.3485, 0.3391, 0.3560]):
        add_run(store, "s000-m6", seed, acc)
    line = line_of(store, "s000-m6")
    assert line.seeds == 3 and line.test_images == TEST_IMAGES
    s = float(np.std([0.3485, 0.3391, 0.3560], ddof=1))
    assert line.tolerance == pytest.approx(3 * math.sqrt(s**2 + 0.3408 * (1 - 0.3408) / TEST_IMAGES))
    assert line.verdict == "reproduced"


def test_a_distant_mean_with_small_spread_is_not_reproduced(store):
    # s000-m1's notebook: 98.56%. Three seeds at 97.0 ± 0.05 are 1.5 points off with almost no spread.
    for seed, acc in enumerate([0.9700, 0.9705, 0.9695]):
        add_run(store, "s000-m1", seed, acc)
    line = line_of(store, "s000-m1")
    assert line.verdict == "not reproduced"
    assert abs(line.notebook_acc - line.mean) > line.tolerance


def test_the_floor_applies_when_the_spread_is_tiny(store):
    # Identical seeds 0.25 points from the notebook: binomial noise alone is ~0.36 points at 98.56%,
    # so the rule's own tolerance is above the floor; with p near 1 the floor is what remains.
    for seed in range(3):
        add_run(store, "s000-m1", seed, 0.9831)
    line = line_of(store, "s000-m1")
    assert line.spread == 0
    assert line.tolerance == pytest.approx(max(FLOOR, 3 * math.sqrt(0.9856 * (1 - 0.9856) / TEST_IMAGES)))
    assert line.verdict == "reproduced"


def test_fewer_seeds_than_the_rule_needs_give_no_verdict(store):
    for seed in range(MIN_SEEDS - 1):
        add_run(store, "s004-m1", seed, 0.98)
    line = line_of(store, "s004-m1")
    assert line.verdict == "too few seeds" and math.isnan(line.tolerance)


def test_only_runs_under_the_notebook_protocol_count(store):
    for seed in range(3):
        add_run(store, "s004-m1", seed, 0.90, differences=["validated on a held-out split vs on the test set"])
    add_run(store, "s004-m1", 7, 0.98)
    line = line_of(store, "s004-m1")
    assert line.accuracies == [0.98]


def test_diverged_runs_are_counted_apart(store):
    for seed in range(3):
        add_run(store, "s004-m2", seed, 0.98)
    add_run(store, "s004-m2", 3, None, status="diverged")
    line = line_of(store, "s004-m2")
    assert line.seeds == 3 and line.diverged == 1


def test_a_seed_in_two_stores_counts_once(tmp_path):
    with RunStore(tmp_path / "a") as first, RunStore(tmp_path / "b") as second:
        for store in (first, second):
            add_run(store, "s004-m1", 0, 0.98)
        add_run(second, "s004-m1", 1, 0.97)
        line = next(line for line in reproduction_table([first, second]) if line.model_id == "s004-m1")
    assert sorted(line.accuracies) == [0.97, 0.98]


def test_every_zoo_model_has_a_line(store):
    lines = reproduction_table([store])
    assert len(lines) == 35 and all(line.verdict == "not run" for line in lines)


def test_document_from_the_cli(tmp_path):
    root = tmp_path / "runs"
    with RunStore(root) as store:
        for seed, acc in enumerate([0.3485, 0.3391, 0.3560]):
            add_run(store, "s000-m6", seed, acc, machine="<b>Evil</b> CPU")
    out = tmp_path / "docs" / "REPRODUCTION.md"
    out.parent.mkdir()
    result = run_cli("reproduction", "--store", str(root), "--out", str(out))
    assert result.exit_code == 0, result.stderr
    assert "s000-m6" in result.stdout and "reproduced" in result.stdout
    text = out.read_text()
    row = next(row for row in text.splitlines() if row.startswith("| s000-m6 "))
    assert "34.08" in row and "34.79 ± " in row and "| reproduced |" in row
    assert "&lt;b&gt;Evil&lt;/b&gt; CPU" in row  # user text is text, never markup
    assert "1 of 1 models with a verdict reproduced" in text
    assert RULE.split(":")[0][:40] in text


def test_python_api_matches_and_missing_store_is_one_line(tmp_path):
    root = tmp_path / "runs"
    with RunStore(root) as store:
        add_run(store, "s004-m1", 0, 0.98)
    lines = api.reproduction(root)
    assert next(line for line in lines if line.model_id == "s004-m1").accuracies == [0.98]
    result = run_cli("reproduction", "--store", str(tmp_path / "nowhere"))
    assert result.exit_code == 2
    assert len(result.error_lines) == 1 and "no run store here" in result.stderr


def test_without_estimates_the_cost_column_is_empty_and_says_how_to_fill_it(store):
    from mnistlab.report.reproduction import render_markdown

    text = render_markdown(reproduction_table([store]), ["runs"])
    rows = [row for row in text.splitlines() if row.startswith("| s0")]
    assert len(rows) == 35 and all(row.endswith("| – |") for row in rows)
    assert "--estimate-seconds" in text and "Per-model cost" in text


def test_a_bad_estimate_length_is_one_line_before_anything_is_probed(tmp_path):
    root = tmp_path / "runs"
    RunStore(root).close()
    result = run_cli("reproduction", "--store", str(root), "--out", str(tmp_path / "R.md"), "--estimate-seconds", "0")
    assert result.exit_code == 2
    assert len(result.error_lines) == 1 and "estimate_seconds" in result.stderr and "above 0" in result.stderr
    assert not (tmp_path / "R.md").exists()
