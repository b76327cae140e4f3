"""The README's main command on real MNIST: what a newcomer sees first must be worth seeing."""

from __future__ import annotations

import pytest

from mnistlab import api
from mnistlab.report import comparison_table, write_report
from mnistlab.data import load_dataset

from conftest import artifacts_dir, browser_page, needs_mnist

pytestmark = [needs_mnist, pytest.mark.integration, pytest.mark.slow]

# What each quick model is there to show (README), as the diagnoses must call it.
EXPECTED_DIAGNOSES = {
    "s002-m1": "healthy",
    "s004-m1": "healthy",
    "s004-m2": "overfitting",
    "s001-m3": "stuck_at_chance",
}
MIN_EPOCHS = 4


@pytest.fixture(scope="module")
def quick_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("quick")
    with api.open_store(root / "runs") as store:
        outcome = api.run("quick", store)
        assert not outcome.failed and not outcome.skipped_claimed
        report = write_report(store, "quick", root / "reports", dataset=load_dataset("mnist"))
        yield store, report


def test_every_quick_run_stored_at_least_four_epochs(quick_store):
    store, _ = quick_store
    runs = store.runs("quick")
    assert {run.model_id for run in runs} == set(EXPECTED_DIAGNOSES) and len(runs) == 2 * len(EXPECTED_DIAGNOSES)
    for run in runs:
        assert run.status == "completed"
        history = store.history(run.id)
        assert len(history["epoch"]) >= MIN_EPOCHS, run.model_id
        assert all(0 <= acc <= 1 for acc in history["train_eval_acc"])


def test_quick_diagnoses_say_what_each_model_is_there_to_show(quick_store):
    store, _ = quick_store
    table = comparison_table(store, "quick").set_index("model")
    assert table["diagnosis"].to_dict() == EXPECTED_DIAGNOSES
    # No figure is compared with a notebook run under another protocol.
    assert all(table["reference_differences"].str.contains(" on 60,000", regex=False))


def test_quick_page_shows_every_curve(quick_store, tmp_path):
    _, report = quick_store
    with browser_page(report.html) as (page, errors):
        curves = page.eval_on_selector_all(
            "img.plot[data-kind=loss], img.plot[data-kind=accuracy]",
            "images => images.map(i => i.complete && i.naturalWidth)",
        )
        assert len(curves) == 2 * len(EXPECTED_DIAGNOSES) and all(width > 0 for width in curves)
        assert "different protocol" in page.locator("table#comparison").inner_text()
        page.screenshot(path=str(artifacts_dir(tmp_path) / "quick-report.png"), full_page=True)
        assert errors == []
