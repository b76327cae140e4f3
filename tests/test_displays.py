"""Notebook-first output (issue 20): progress that suits where it runs, a live study display kept
within its time budget, and objects that show themselves as self-contained, escaped HTML."""

from __future__ import annotations

import base64
import io
import json
import math
import os
import subprocess
import sys
import textwrap
import types
import xml.etree.ElementTree as ElementTree
from html.parser import HTMLParser

import numpy as np
import pytest
from tqdm.std import tqdm as text_tqdm

from mnistlab import api
from mnistlab.errors import MnistlabError
from mnistlab.experiments.definition import expand, parse_experiment
from mnistlab.report import progress
from mnistlab.report.conclusions import Conclusions
from mnistlab.report.curves import epoch_curve
from mnistlab.report.notebook import ReportView
from mnistlab.report.study_view import LiveStudyDisplay, StudyOutcome
from mnistlab.runs.events import EpochEnded
from mnistlab.runs.store import RunStore
from mnistlab.training.history import History, Reporter, RunEnd
from mnistlab.util import where

from cli_driver import SRC
from conftest import CHROMIUM, CHROMIUM_ARGS
from test_notebook import importable, require
from test_report import GOOD_HISTORY, MID_HISTORY, add_run

HOSTILE_ID = '"><script>alert(1)</script>'
LIVE_CURVE = 'src="data:image/svg+xml;base64,'  # the live display's curves
SVG = "{http://www.w3.org/2000/svg}"
MLP = {"id": "tiny-mlp", "input": [28, 28, 1],
       "layers": [{"type": "Flatten"}, {"type": "Dense", "units": 16, "activation": "relu"},
                  {"type": "Dense", "units": 10, "activation": "softmax"}],
       "training": {"optimizer": "adam", "batch_size": 64, "epochs": 2}}


def study(name: str = "live", seeds: tuple[int, ...] = (0, 1)) -> dict:
    # "mnist" names the images' shape; the runs train on the tiny dataset api.run is given.
    return {"name": name, "dataset": "mnist", "protocol": "split", "defaults": {"device": "cpu"},
            "seeds": list(seeds), "models": [{"spec": MLP}, {"spec": {**MLP, "id": "tiny-mlp-2"}}]}


class Recording:
    """A display surface that keeps what it was given."""

    def __init__(self, clock: list[float] | None = None, cost: float = 0.0) -> None:
        self.bundles: list[dict[str, str]] = []
        self.updates = 0
        self.clock, self.cost = clock, cost

    def show(self, bundle: dict[str, str]) -> None:
        self.bundles.append(bundle)

    def update(self, bundle: dict[str, str]) -> None:
        if self.clock is not None:
            self.clock[0] += self.cost  # a redraw that takes `cost` seconds
        self.bundles.append(bundle)
        self.updates += 1


# -- where it runs, and progress= ----------------------------------------------------------------------


def shell_named(name: str) -> types.ModuleType:
    module = types.ModuleType("IPython")
    module.get_ipython = lambda: type(name, (), {})()  # type: ignore[attr-defined]
    return module


def test_a_notebook_is_recognised_by_its_kernel_shell_or_colab(monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.setitem(sys.modules, "IPython", shell_named("ZMQInteractiveShell"))
    assert where.in_notebook()
    monkeypatch.setitem(sys.modules, "IPython", shell_named("TerminalInteractiveShell"))
    assert not where.in_notebook()
    monkeypatch.delitem(sys.modules, "IPython")
    assert not where.in_notebook()
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    assert where.in_notebook()


def test_auto_progress_is_bars_in_a_notebook_rich_on_a_terminal_and_nothing_under_pytest(monkeypatch):
    assert where.under_pytest() and progress.progress_mode("auto") == "none"
    monkeypatch.setattr(progress, "in_notebook", lambda: True)
    assert progress.progress_mode("auto") == "tqdm"  # a kernel pytest started is still a notebook
    assert isinstance(progress.progress_reporter("auto"), progress.TqdmReporter)
    monkeypatch.setattr(progress, "in_notebook", lambda: False)
    monkeypatch.setattr(progress, "under_pytest", lambda: False)
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # rich: a terminal, whatever stdout is
    assert progress.progress_mode("auto") == "rich"
    assert progress.progress_mode("lines") == "lines"
    with pytest.raises(MnistlabError, match="progress 'bars': choose auto, rich, tqdm, lines, json, none"):
        progress.progress_mode("bars")


def test_train_is_silent_under_pytest_and_says_what_it_is_asked_for(tiny_dataset, capsys):
    api.train(MLP, tiny_dataset, epochs=1, train_limit=128, device="cpu")
    assert capsys.readouterr() == ("", "")
    api.train(MLP, tiny_dataset, epochs=1, train_limit=128, device="cpu", progress="json")
    events = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [event["event"] for event in events] == ["epoch", "run"] and events[0]["model"] == "tiny-mlp"
    with pytest.raises(ValueError, match="reporter or progress"):
        api.train(MLP, tiny_dataset, epochs=1, device="cpu", reporter=Reporter(), progress="lines")


def test_tqdm_bars_show_each_epoch_with_its_metrics(tiny_dataset):
    out = io.StringIO()
    api.train(MLP, tiny_dataset, epochs=2, train_limit=128, device="cpu",
              reporter=progress.TqdmReporter(file=out, bar=text_tqdm))
    shown = out.getvalue()
    assert "Epoch 1/2" in shown and "Epoch 2/2" in shown and "val_acc" in shown
    run_bar = progress.TqdmReporter(label="[1/1] m seed 0 ", per_epoch=False, file=(out := io.StringIO()),
                                    bar=text_tqdm)
    for epoch in (1, 2):
        run_bar.start_epoch(epoch, 2, 3)
        run_bar.end_epoch(epoch, 2, {"loss": 0.5, "acc": 0.9, "val_loss": 0.6, "val_acc": 0.8})
    run_bar.end_run(RunEnd("m", 0, "completed", 2))
    assert "6/6" in out.getvalue() and "[1/1] m seed 0" in out.getvalue()  # one bar over both epochs


def test_a_notebook_without_ipywidgets_gets_text_bars_and_one_line_saying_why(monkeypatch, capsys):
    monkeypatch.setattr(progress, "in_notebook", lambda: True)
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # import fails as if it were not installed
    monkeypatch.setattr(progress, "_noted", set())
    assert progress.tqdm_class() is text_tqdm and progress.tqdm_class() is text_tqdm
    assert capsys.readouterr().err == progress.NO_WIDGETS_NOTE + "\n"


# -- the live display ----------------------------------------------------------------------------------


def test_the_live_display_follows_a_study_and_returns_its_outcome(tmp_path, tiny_dataset):
    surface = Recording()
    display = LiveStudyDisplay(surface, bars=False, min_interval=0.0, budget=0.05)
    outcome = api.run(study(), tmp_path / "runs", dataset=tiny_dataset, progress=display)
    assert isinstance(outcome, StudyOutcome) and len(outcome.trained) == 4 and outcome.best is not None
    # Shown once, then updated in place: at least at the end (how often between is the budget's call).
    assert surface.updates >= 1 and display.redraws == surface.updates == len(surface.bundles) - 1
    pending = surface.bundles[0]["text/plain"]
    assert "0 of 4 runs done" in pending and "4 pending" in pending
    final = surface.bundles[-1]
    assert final["text/plain"].startswith("live: 4 of 4 runs done") and "finished" in final["text/plain"]
    assert final["text/html"].count(LIVE_CURVE) == 4  # loss and accuracy per model
    assert 0 < display.overhead_seconds < display.wall_seconds
    assert outcome.best.model in outcome._repr_html_()
    again = Recording()
    api.run(study(), tmp_path / "runs", dataset=tiny_dataset, progress=LiveStudyDisplay(again, bars=False))
    assert again.bundles[-1]["text/html"].count("completed (earlier)") == 4  # skipped, curves from the store
    assert again.bundles[-1]["text/html"].count(LIVE_CURVE) == 4


def test_the_live_display_keeps_within_its_time_budget():
    """Each redraw costs 1 s of a simulated clock, an epoch ends every 5 s: the display redraws as
    often as its budget allows and no more, and its measured share stays under the 2% allowed."""
    now = [0.0]
    surface = Recording(clock=now, cost=1.0)
    display = LiveStudyDisplay(surface, bars=False, figures=False, clock=lambda: now[0])
    experiment = parse_experiment({**study(seeds=(0,)), "defaults": {"epochs": 100}})
    display.start("budget", expand(experiment), None)
    for epoch in range(1, 101):
        for model in ("tiny-mlp", "tiny-mlp-2"):
            now[0] += 5.0
            display(EpochEnded(epoch, model, 0, epoch, 100, {"loss": 1 / epoch, "val_acc": 0.5}))
    display.close()
    assert display.wall_seconds > 1000
    assert display.overhead_seconds / display.wall_seconds < 0.02
    assert display.redraws >= 5  # and it did keep redrawing, the last one at the end
    assert "finished" in surface.bundles[-1]["text/plain"]


def epoch_event(model: str, seed: int, epoch: int, epochs: int = 4) -> EpochEnded:
    metrics = {"loss": 1 / epoch + seed / 50, "acc": 0.5 + epoch / 10, "val_loss": 1.2 / epoch,
               "val_acc": 0.45 + epoch / 10 + seed / 40}
    return EpochEnded(seed + 1, model, seed, epoch, epochs, metrics)


def live_svgs(page: str) -> list[tuple[str, ElementTree.Element]]:
    """(alt text, parsed SVG) of each live curve on a display's page."""
    return [(attrs.get("alt") or "", ElementTree.fromstring(base64.b64decode(attrs["src"].split(",", 1)[1])))
            for tag, attrs in parsed(page) if tag == "img" and (attrs.get("src") or "").startswith(LIVE_CURVE[5:])]


def test_the_live_curves_are_svg_with_a_line_per_series_and_user_strings_as_text():
    display = LiveStudyDisplay(Recording(), bars=False, min_interval=0.0)
    display.start("hostile", [], None)
    for seed in range(3):
        for epoch in range(1, 5):
            display(epoch_event(HOSTILE_ID, seed, epoch))
    display.close()
    page = display.html()
    self_contained(page, allowed=("data:image/svg+xml;base64,",))
    assert HOSTILE_ID not in page
    curves = live_svgs(page)
    assert [alt for alt, _ in curves] == [f"{HOSTILE_ID}: loss (mean of 3 runs, 95% CI band)",
                                          f"{HOSTILE_ID}: accuracy (mean of 3 runs, 95% CI band)"]
    for alt, svg in curves:
        tags = {element.tag.removeprefix(SVG) for element in svg.iter()}
        assert "script" not in tags and tags <= {"svg", "title", "rect", "text", "line", "path", "polygon",
                                                 "polyline", "g", "circle"}
        assert len(svg.findall(f".//{SVG}polyline")) == 2  # train and validation
        assert len(svg.findall(f".//{SVG}polygon")) == 2  # their bands over the three seeds
        assert len(svg.findall(f".//{SVG}circle")) == 2 * 4  # a marker per epoch
        # The id is the title's text, character for character: escaped, never markup.
        assert svg.find(f"{SVG}title").text == alt
        assert [text.text for text in svg.iter(f"{SVG}text")][0] == alt


def test_the_live_curves_plot_the_reports_per_epoch_means():
    """The validation line's points sit where report/curves.py's per-epoch means put them (the y axis
    is linear): the numbers of the report's PNG, drawn another way."""
    display = LiveStudyDisplay(Recording(), bars=False, min_interval=0.0)
    display.start("means", [], None)
    events = [epoch_event("m", seed, epoch) for seed in range(2) for epoch in range(1, 4)]
    events.append(EpochEnded(9, "m", 2, 2, 4, {"loss": 0.1, "acc": 0.1, "val_loss": 0.1, "val_acc": 0.1}))  # an outlier
    for event in events:
        display(event)
    display.close()
    (_, loss), (_, accuracy) = live_svgs(display.html())
    curve = epoch_curve([event.epoch for event in events], [event.metrics["val_acc"] for event in events])
    heights = [float(point.split(",")[1]) for point in accuracy.findall(f".//{SVG}polyline")[1].get("points").split()]
    assert len(heights) == len(curve.mean) == 3
    shape = (heights[0] - heights[1]) / (heights[2] - heights[1])
    assert shape == pytest.approx((curve.mean[0] - curve.mean[1]) / (curve.mean[2] - curve.mean[1]), rel=0.02)


def test_epoch_curves_leave_out_non_finite_values_and_clip_the_band():
    curve = epoch_curve([1, 1, 1, 2, 2], [0.99, 0.992, 0.994, 0.5, math.nan])
    assert list(curve.epoch) == [1, 2] and list(curve.n) == [3, 1]
    assert curve.mean == pytest.approx([0.992, 0.5])
    assert curve.half_width[0] == pytest.approx(0.002 * 4.302653 / math.sqrt(3), rel=1e-6)  # t(0.975, 2)
    assert math.isnan(curve.half_width[1])  # one run: no band
    epochs, low, high = curve.band((0.0, 0.993))
    assert list(epochs) == [1] and high[0] == 0.993 and low[0] == pytest.approx(0.992 - curve.half_width[0])


def test_the_live_display_draws_its_curves_without_matplotlib_or_pandas():
    """A fresh interpreter drives a display through a study's epochs: no matplotlib (the measured cost,
    benchmarks/RESULTS.md, issue 20) nor pandas is loaded, and the curves are there."""
    probe = textwrap.dedent("""
        import sys
        from mnistlab.report.study_view import LiveStudyDisplay
        from mnistlab.runs.events import EpochEnded
        from mnistlab.training.history import RunEnd

        class Surface:
            def show(self, bundle): self.bundle = bundle
            def update(self, bundle): self.bundle = bundle

        surface = Surface()
        display = LiveStudyDisplay(surface, bars=False, min_interval=0.0, budget=1.0)
        display.start("probe", [], None)
        for seed in range(3):
            for epoch in range(1, 4):
                display(EpochEnded(seed + 1, "m", seed, epoch, 3, {"loss": 1 / epoch, "acc": 0.5, "val_loss": 1.0,
                                                                   "val_acc": 0.5 + seed / 10}))
            display(RunEnd("m", seed, "completed", 3, test_acc=0.9))
        display.close()
        print(surface.bundle["text/html"].count("data:image/svg+xml;base64,"),
              sorted({"matplotlib", "pandas"} & {name.split(".")[0] for name in sys.modules}))
    """)
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(SRC)}, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split(maxsplit=1) == ["2", "[]\n"]


def test_a_failing_display_never_stops_the_study(tmp_path, tiny_dataset, capsys):
    class Broken(Recording):
        def update(self, bundle: dict[str, str]) -> None:
            raise OSError("the notebook went away")

    display = LiveStudyDisplay(Broken(), bars=False, min_interval=0.0, budget=1.0)
    outcome = api.run(study(seeds=(0,)), tmp_path / "runs", dataset=tiny_dataset, progress=display)
    assert len(outcome.trained) == 2
    assert capsys.readouterr().err.count("the live display stopped (the notebook went away)") == 1


def test_run_refuses_a_bad_progress_before_it_makes_a_store(tmp_path, tiny_dataset):
    with pytest.raises(ValueError, match="reporter_for or progress"):
        api.run(study(), tmp_path / "runs", dataset=tiny_dataset, progress="lines", reporter_for=lambda task: Reporter())
    with pytest.raises(MnistlabError, match="^progress 'bars': choose auto, rich, tqdm, lines, json, none or a Reporter$"):
        api.run(study(), tmp_path / "runs", dataset=tiny_dataset, progress="bars")
    assert not (tmp_path / "runs").exists()


# -- objects that show themselves ----------------------------------------------------------------------


class Attributes(HTMLParser):
    """Every tag and attribute of a page, as a browser would read them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def parsed(page: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = Attributes()
    parser.feed(page)
    return parser.tags


def self_contained(page: str, allowed: tuple[str, ...] = ("data:image/png;base64,",)) -> None:
    tags = parsed(page)
    assert "script" not in [tag for tag, _ in tags]
    sources = [attrs.get("src") or attrs.get("href") for tag, attrs in tags if tag in ("img", "link", "a")]
    assert all(source is None or source.startswith(allowed) for source in sources)


def test_a_history_shows_its_metrics_and_curves_escaped():
    epochs = [{"epoch": epoch, "loss": loss, "acc": acc, "val_loss": val_loss, "val_acc": val_acc, "seconds": 1.0}
              for epoch, (loss, acc, val_loss, val_acc) in enumerate(zip(*MID_HISTORY), start=1)]
    history = History(HOSTILE_ID, 0, "split", "cpu", epochs=epochs, test_acc=0.9, test_loss=0.3, train_images=200)
    page = history._repr_html_()
    self_contained(page)
    assert HOSTILE_ID not in page and "&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count('src="data:image/png;base64,') == 2
    assert [attrs.get("alt", "") for tag, attrs in parsed(page) if tag == "img"][0].startswith(HOSTILE_ID)
    assert page.count("<tr") == 7 + 1 + 4  # the facts (no images/s, no early stopping), the header, 4 epochs


def test_conclusions_show_as_a_list_of_escaped_sentences():
    page = Conclusions(("a <b>bold</b> claim & more", "second"), "how <i>")._repr_html_()
    self_contained(page)
    assert "<li>a &lt;b&gt;bold&lt;/b&gt; claim &amp; more</li>" in page and page.count("<li>") == 2


@pytest.fixture(scope="module")
def hostile_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile") / "runs"
    labels = np.arange(100, dtype=np.uint8) % 10
    with RunStore(root) as store:
        store.save_experiment("e", {"name": "e", "description": HOSTILE_ID, "dataset": "synthetic",
                                    "protocol": "split", "models": [HOSTILE_ID, "plain"], "seeds": [0, 1]})
        for seed in (0, 1):
            add_run(store, "e", HOSTILE_ID, HOSTILE_ID, None, seed, "completed", 3 + seed, GOOD_HISTORY, labels)
            add_run(store, "e", "plain", "plain", None, seed, "completed", 20 + seed, MID_HISTORY, labels)
    return root


def test_the_comparison_and_the_outcome_show_user_strings_as_text(hostile_store):
    with api.open_store(hostile_store, create=False) as store:
        comparison = api.comparison("e", store)
        outcome = StudyOutcome.of(api.RunOutcome(trained=[1, 2], run_ids=[1, 2, 3, 4]), store, "e")
    assert comparison.best == HOSTILE_ID and list(comparison.table["model"]) == [HOSTILE_ID, "plain"]
    for page in (comparison._repr_html_(), outcome._repr_html_()):
        self_contained(page)
        assert HOSTILE_ID not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    best_rows = [attrs for tag, attrs in parsed(comparison._repr_html_()) if tag == "tr" and attrs.get("class") == "best"]
    assert len(best_rows) == 1


@pytest.fixture(scope="module")
def hostile_view(hostile_store) -> ReportView:
    return api.show_report(hostile_store, "e")  # written once: a report's figures take seconds


def test_show_report_embeds_the_page_on_disk_attribute_escaped(hostile_store, hostile_view):
    view = hostile_view
    assert isinstance(view, ReportView) and view.path == hostile_store / "reports" / "e.html"
    page = view._repr_html_()
    assert HOSTILE_ID not in page and "<script>" not in page  # even the report's own script is attribute text
    (frame,) = [attrs for tag, attrs in parsed(page) if tag == "iframe"]
    assert frame["srcdoc"] == view.path.read_text(encoding="utf-8")  # unescaped by the browser: the file itself
    assert frame["sandbox"] == "allow-scripts"


def test_the_embedded_report_runs_no_injected_script_in_chromium(hostile_view, tmp_path):
    require(importable("playwright"), "playwright is not installed (pip install -e '.[test]')")
    require(CHROMIUM.exists(), f"{CHROMIUM} is not installed")
    from playwright.sync_api import sync_playwright

    holder = tmp_path / "notebook-output.html"
    holder.write_text(f"<!doctype html><meta charset='utf-8'><body>{hostile_view._repr_html_()}",
                      encoding="utf-8")
    dialogs: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
            page.goto(holder.as_uri(), wait_until="load")
            report = page.frame_locator("iframe")
            assert HOSTILE_ID in report.locator("body").inner_text()  # shown as text, not run
            assert report.locator("img.plot[data-kind=loss]").count() == 2
        finally:
            browser.close()
    assert dialogs == []
