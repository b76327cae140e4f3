"""Progress suits its destination: one whole line per epoch in a pipe, JSON lines on request."""

from __future__ import annotations

import io
import json
import math
import subprocess

import pytest
import torch
import yaml
from rich.console import Console

from cli_driver import spawn_cli
from conftest import TINY_CNN
from mnistlab.training.history import Reporter, RunEnd
from mnistlab.errors import MnistlabError
from mnistlab.experiments.definition import parse_experiment
from mnistlab.report.progress import LOG_FORMAT_VERSION, JsonLinesReporter, LineReporter, RichReporter, make_reporter
from mnistlab.runs.runner import run_experiment
from mnistlab.util.safetext import REPLACEMENT
from mnistlab.training.history import EPOCH_METRICS
from mnistlab.runs.store import RunStore

ESC = "\x1b"
# Over 100 columns with its label, rich markup, and an ESC (YAML writes it "\e"): all of it is data.
LONG_ID = "x" * 90 + "-[bold]b[/bold]" + ESC + "]0;t"
SHOWN_ID = LONG_ID.replace(ESC, REPLACEMENT)  # what safetext lets a terminal or a log file see
EPOCHS = 3
METRICS = {"seconds": 0.1, "loss": 0.5, "acc": 0.5, "val_loss": 0.5, "val_acc": 0.5}


@pytest.fixture()
def long_spec(tmp_path):
    path = tmp_path / "long.yaml"
    path.write_text(TINY_CNN.replace("id: tiny-cnn", 'id: "' + LONG_ID.replace(ESC, "\\e") + '"'))
    return path


def _cli(*args) -> tuple[int, str, str]:
    """`mnistlab ARGS` as a child process whose stdout and stderr are pipes, never a terminal."""
    process = spawn_cli(*args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = process.communicate(timeout=300)
    return process.returncode, out, err


def _events(stderr: str) -> list[dict]:
    events = [json.loads(line) for line in stderr.splitlines() if line.strip()]  # every line is JSON
    assert all(event["format"] == LOG_FORMAT_VERSION for event in events)
    return events


def _experiment(tmp_path, data_dir, spec_path) -> dict:
    data = {"name": "pipes", "dataset": str(data_dir), "protocol": "split",
            "defaults": {"epochs": EPOCHS, "device": "cpu"}, "seeds": [0, 1], "models": [{"model": str(spec_path)}]}
    (tmp_path / "pipes.yaml").write_text(yaml.safe_dump(data))
    return data


# --- the CLI in a pipe ----------------------------------------------------------------------------


def test_train_in_a_pipe_prints_each_epoch_on_one_line(tiny_data_dir, long_spec):
    # Rich's console wraps at 80 columns off a terminal; an epoch line is longer than that.
    code, out, err = _cli("train", long_spec, "--dataset", tiny_data_dir, "--device", "cpu", "--epochs", EPOCHS)
    assert code == 0, err
    lines = out.splitlines()
    epoch_lines = [line for line in lines if line.startswith("Epoch ")]
    assert len(epoch_lines) == EPOCHS and all(" - val_acc: " in line for line in epoch_lines)
    assert len(lines) == EPOCHS + 1 and lines[-1].startswith("Test loss: ")  # no fragment of a cut line


def test_run_in_a_pipe_prints_each_labelled_epoch_on_one_line(tiny_data_dir, long_spec, tmp_path):
    _experiment(tmp_path, tiny_data_dir, long_spec)
    code, out, err = _cli("run", tmp_path / "pipes.yaml", "--store", tmp_path / "store", "--no-report")
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 2 * EPOCHS + 1, out  # one per epoch per run, and the totals: nothing cut in two
    for number, seed in ((1, 0), (2, 1)):
        mine = [line for line in lines if line.startswith(f"[{number}/2] {SHOWN_ID} seed {seed} Epoch ")]
        assert len(mine) == EPOCHS and len(mine[0]) > 100, lines  # markup shown as text, ESC replaced
    assert ESC not in out and lines[-1].startswith("pipes: trained 2")


# --- --log-format json ----------------------------------------------------------------------------


def test_train_json_events_go_to_stderr_and_stdout_keeps_the_summary(tiny_data_dir, long_spec):
    # --quiet silences text progress, not the JSON events a caller asked for.
    code, out, err = _cli("train", long_spec, "--dataset", tiny_data_dir, "--device", "cpu", "--epochs", EPOCHS,
                          "--json", "--log-format", "json", "--quiet")
    assert code == 0, err
    [summary] = out.splitlines()  # exactly what train --json prints
    history = json.loads(summary)
    assert history["model_id"] == LONG_ID and len(history["loss"]) == EPOCHS
    events = _events(err)
    assert [e["event"] for e in events] == ["epoch"] * EPOCHS + ["run"]
    assert [e["epoch"] for e in events[:-1]] == list(range(1, EPOCHS + 1))
    assert all(e["model"] == LONG_ID and e["seed"] == 0 and e["epochs"] == EPOCHS for e in events)
    assert events[0]["loss"] == pytest.approx(history["loss"][0])
    run = events[-1]
    assert (run["status"], run["epochs"], run["run_id"]) == ("completed", EPOCHS, None)
    assert run["test_acc"] == pytest.approx(history["test_acc"])
    assert "\\u001b" in err.splitlines()[0] and ESC not in err  # JSON escapes the user's ESC


def test_train_seeds_json_gives_each_seed_its_epochs_and_run(tiny_data_dir, long_spec):
    code, out, err = _cli("train", long_spec, "--dataset", tiny_data_dir, "--device", "cpu", "--epochs", EPOCHS,
                          "--seeds", "0,1", "--log-format", "json")
    assert code == 0, err
    events = _events(err)
    for seed in (0, 1):
        mine = [e for e in events if e["seed"] == seed]
        assert [e["event"] for e in mine] == ["epoch"] * EPOCHS + ["run"]
    assert [line.split(":")[0] for line in out.splitlines()] == ["seed 0", "seed 1"]  # the text summaries stay


@pytest.mark.parametrize("bundle", ["1", "2"])
def test_run_json_gives_one_event_per_epoch_and_per_finished_run(tiny_data_dir, long_spec, tmp_path, bundle):
    _experiment(tmp_path, tiny_data_dir, long_spec)
    code, out, err = _cli("run", tmp_path / "pipes.yaml", "--store", tmp_path / "store", "--no-report",
                          "--bundle", bundle, "--log-format", "json")
    assert code == 0, err
    assert out.splitlines()[-1].startswith("pipes: trained 2") and "{" not in out
    events = _events(err)
    with RunStore(tmp_path / "store") as store:
        stored = {run.seed: run.id for run in store.runs("pipes")}
    for seed in (0, 1):
        mine = [e for e in events if e["seed"] == seed]
        assert [e["event"] for e in mine] == ["epoch"] * EPOCHS + ["run"] and mine[0]["model"] == LONG_ID
        assert (mine[-1]["status"], mine[-1]["run_id"]) == ("completed", stored[seed])


# --- the reporters from Python --------------------------------------------------------------------


def test_make_reporter_picks_by_destination_and_format():
    assert isinstance(make_reporter(Console(file=io.StringIO(), force_terminal=True)), RichReporter)
    assert isinstance(make_reporter(Console(file=io.StringIO())), LineReporter)
    assert type(make_reporter(Console(file=io.StringIO()), quiet=True)) is Reporter
    assert isinstance(make_reporter(log_format="json", quiet=True), JsonLinesReporter)
    with pytest.raises(MnistlabError, match="xml"):
        make_reporter(log_format="xml")


def test_line_reporter_writes_one_clean_line_per_epoch():
    out = io.StringIO()
    reporter = LineReporter(out, label=f"{LONG_ID}\nseed 0 ")
    for epoch in (1, 2):
        reporter.start_epoch(epoch, 2, 10)
        reporter.end_epoch(epoch, 2, METRICS)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and all(line.startswith(f"{SHOWN_ID} seed 0 Epoch ") for line in lines)


def test_json_lines_are_valid_json_with_non_finite_numbers_as_null():
    out = io.StringIO()
    reporter = JsonLinesReporter(out, model=LONG_ID, seed=3)
    reporter.start_epoch(1, 2, 10)
    reporter.end_epoch(1, 2, {**METRICS, "loss": math.nan, "val_loss": math.inf})
    reporter.end_run(RunEnd(LONG_ID, 3, "diverged", epochs=1, test_loss=math.nan))
    epoch, run = (json.loads(line, parse_constant=pytest.fail) for line in out.getvalue().splitlines())
    assert epoch["loss"] is None and epoch["val_loss"] is None and epoch["acc"] == 0.5
    assert set(EPOCH_METRICS) <= set(epoch) and (epoch["model"], epoch["seed"]) == (LONG_ID, 3)
    assert run == {"format": LOG_FORMAT_VERSION, "event": "run", "model": LONG_ID, "seed": 3, "run_id": None,
                   "status": "diverged", "epochs": 1, "test_acc": None, "test_loss": None, "error": None}


def test_a_bundle_reports_each_seed_and_not_the_mean():
    out = io.StringIO()
    reporter = JsonLinesReporter(out, model="m", seed=0)
    reporter.start_epoch(1, 1, 10)
    reporter.end_seed_epoch(0, 1, 1, METRICS)
    reporter.end_seed_epoch(5, 1, 1, {**METRICS, "acc": 0.7})
    reporter.end_epoch(1, 1, {**METRICS, "acc": 0.6})
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(e["seed"], e["acc"]) for e in events] == [(0, 0.5), (5, 0.7)]


class _Crashing(JsonLinesReporter):
    def step(self, step: int, steps: int, loss_sum: torch.Tensor, correct: torch.Tensor, seen: int) -> None:
        raise RuntimeError("boom")

    def wants_steps(self) -> bool:
        return True


@pytest.mark.parametrize("bundle", [1, 2])
def test_a_failed_run_reaches_its_reporter(tiny_data_dir, long_spec, tmp_path, bundle):
    out = io.StringIO()
    experiment = parse_experiment({**_experiment(tmp_path, tiny_data_dir, long_spec), "seeds": [0, 1][:bundle]})
    with RunStore(tmp_path / "store") as store, pytest.raises(RuntimeError, match="boom"):
        run_experiment(experiment, store, reporter_for=lambda task: _Crashing(out, task.model_id, task.seed),
                       bundle=bundle)
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(e["event"], e["status"], e["seed"]) for e in events] == [("run", "failed", seed) for seed in range(bundle)]
    assert events[0]["error"] == "RuntimeError: boom" and events[0]["run_id"] == 1
