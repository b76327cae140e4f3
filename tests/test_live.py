"""Studies you can watch while they run: the live report (report/live.py), in a browser too, and
live export to TensorBoard and MLflow (interop/live_log.py), read back with their own readers.

Every wait here is for an event the test itself causes (a listener holds training until the page
or the logs show what they should), with a generous limit that only a broken build reaches: no
assertion depends on how fast this machine is.
"""

from __future__ import annotations

import importlib.util
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from cli_driver import run_cli
from conftest import CHROMIUM, artifacts_dir, browser_page
from test_runner import TINY_MLP

from mnistlab import api
from mnistlab.errors import EnvironmentFailure, MnistlabError
from mnistlab.interop.live_log import LiveLog, parse_log_to
from mnistlab.report.live import LiveReport, watch_report
from mnistlab.runs.events import EpochEnded
from mnistlab.runs.store import RunStore
from mnistlab.training.history import COMPLETED, RunEnd

LIMIT = 120.0  # seconds: only a broken build waits this long
MODELS = ("tiny-a", "tiny-b", "tiny-c")
LOOK_EVERY_MS = 500  # how often the browser test looks at the page (each look costs the browser CPU)


def study(data_dir: Path, name: str, models: tuple[str, ...] = MODELS, seeds=(0,), epochs: int = 1) -> dict:
    """Tiny MLPs, one run each: cheap runs whose order the test knows (model by model)."""
    return {"name": name, "dataset": str(data_dir), "protocol": "split", "defaults": {"epochs": epochs, "device": "cpu"},
            "seeds": list(seeds), "models": [{"spec": {**TINY_MLP, "id": model}} for model in models]}


def eventually(check: Callable[[], bool], what: str, limit: float = LIMIT, every: float = 0.05) -> None:
    deadline = time.monotonic() + limit
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(every)


class Background:
    """`call` in a thread; `result()` joins it and re-raises what it raised."""

    def __init__(self, call: Callable[[], Any]) -> None:
        self.value: Any = None
        self.error: BaseException | None = None

        def target() -> None:
            try:
                self.value = call()
            except BaseException as error:  # noqa: BLE001  (handed to the test's thread)
                self.error = error

        self.thread = threading.Thread(target=target, daemon=True)
        self.thread.start()

    def result(self) -> Any:
        self.thread.join(LIMIT)
        assert not self.thread.is_alive(), "the study never ended"
        if self.error is not None:
            raise self.error
        return self.value


# -- the live report ------------------------------------------------------------------------------


def require_browser() -> None:
    """Under CI=true a missing Chromium or playwright fails the test; elsewhere browser_page skips it."""
    if os.environ.get("CI") == "true":
        assert importlib.util.find_spec("playwright") is not None, "CI=true: playwright is not installed"
        assert CHROMIUM.exists(), f"CI=true: {CHROMIUM} is not installed"


def page_state(page: Any) -> tuple[str, list[str], int] | None:
    """(live status text, model rows, refresh tags) of the page now; None while it is reloading."""
    try:
        status = page.locator("#live-status")
        text = status.inner_text(timeout=1000) if status.count() else ""
        models = page.locator("table#comparison tbody tr td:first-child").all_inner_texts()
        return text, models, page.locator('meta[http-equiv="refresh"]').count()
    except Exception:  # noqa: BLE001  (the page reloaded under us: look again)
        return None


def test_the_live_page_follows_a_study_without_a_reload(tmp_path, tiny_data_dir):
    require_browser()
    root, out = tmp_path / "runs", tmp_path / "reports"
    page_path = out / "live.html"
    seen = {1: threading.Event(), 2: threading.Event()}  # set by the test once the page shows run N
    finished: list[int] = []

    def hold(event: object) -> None:  # training waits until the browser saw the page after runs 1 and 2
        if isinstance(event, RunEnd):
            finished.append(event.run_id)
            if len(finished) in seen and not seen[len(finished)].wait(LIMIT):
                raise RuntimeError("the page never showed the run")

    live = LiveReport(root, "live", out, refresh_seconds=1, min_interval=0, budget=1)
    with live:
        running = Background(lambda: (api.run(study(tiny_data_dir, "live"), root, listeners=[live, hold]),
                                      live.finish()))
        eventually(page_path.exists, "the first page")
        with browser_page(page_path) as (page, errors):
            def shows(text: str, models: list[str]) -> Callable[[], bool]:
                def check() -> bool:
                    state = page_state(page)
                    page.wait_for_timeout(LOOK_EVERY_MS)  # the page goes on reloading meanwhile
                    return state is not None and text in state[0] and state[1] == models and state[2] == 1
                return check

            eventually(shows("in progress: 1 of 3 runs", ["tiny-a"]), "run 1, in progress")
            seen[1].set()
            # no page.reload(): the page reloads itself
            eventually(shows("in progress: 2 of 3 runs", ["tiny-a", "tiny-b"]), "run 2, without a manual reload")
            seen[2].set()

            def final() -> bool:
                state = page_state(page)
                page.wait_for_timeout(LOOK_EVERY_MS)
                return state is not None and state[0] == "" and sorted(state[1]) == list(MODELS) and state[2] == 0
            eventually(final, "the final report")
            page.screenshot(path=str(artifacts_dir(tmp_path) / "live-report-final.png"), full_page=True)
            assert "in progress" not in page.title()
            assert errors == []
        outcome, paths = running.result()
    assert len(outcome.trained) == 3 and paths is not None and paths.html == page_path
    html = page_path.read_text()
    assert "http-equiv" not in html and "in progress" not in html
    assert "in progress" not in paths.markdown.read_text()


def test_a_report_that_cannot_be_written_is_one_line_and_training_goes_on(tmp_path, tiny_data_dir):
    root = tmp_path / "runs"
    blocker = tmp_path / "a-file"
    blocker.write_text("the report folder would go inside this file")
    lines: list[str] = []
    failed = threading.Event()

    def on_error(line: str) -> None:
        lines.append(line)
        failed.set()

    def after_the_failure(event: object) -> None:  # the next run trains only once the report failed
        if isinstance(event, RunEnd):
            assert failed.wait(LIMIT)

    with LiveReport(root, "blocked", blocker / "reports", min_interval=0, budget=1, on_error=on_error) as live:
        outcome = api.run(study(tiny_data_dir, "blocked"), root, listeners=[live, after_the_failure])
        with pytest.raises(EnvironmentFailure, match="cannot write the report"):
            live.finish()  # the final report's failure is the caller's, as `mnistlab report` reports it
    assert len(outcome.trained) == 3
    with RunStore(root) as store:
        assert [run.status for run in store.runs("blocked")] == [COMPLETED] * 3
    # the same failure after every run: said once, on one line
    assert len(lines) == 1 and "\n" not in lines[0], lines
    assert lines[0].startswith(f"live report {blocker / 'reports'}: not written (") and "training goes on" in lines[0]


def test_an_injected_failing_writer_loses_no_run(tmp_path, tiny_data_dir):
    root = tmp_path / "runs"
    called = threading.Semaphore(0)

    def broken(*args: object) -> None:
        called.release()
        raise RuntimeError("the writer broke")

    def after_the_write(event: object) -> None:  # each run's report is tried before the next run trains
        if isinstance(event, RunEnd):
            assert called.acquire(timeout=LIMIT)

    lines: list[str] = []
    with LiveReport(root, "broken", tmp_path / "out", min_interval=0, budget=1, on_error=lines.append, writer=broken) as live:
        outcome = api.run(study(tiny_data_dir, "broken", models=MODELS[:2]), root, listeners=[live, after_the_write])
        with pytest.raises(RuntimeError, match="the writer broke"):
            live.finish()
    assert len(outcome.trained) == 2
    assert lines == [f"live report {tmp_path / 'out'}: not written (the writer broke); training goes on"]


def test_the_live_report_measures_the_time_its_thread_spends_writing(tmp_path, tiny_data_dir):
    """A writer that sleeps SLEEP a report: the thread's wall time counts each sleep, its CPU time
    does not, and finish's last report is counted apart (the benchmark reports the thread's share)."""
    from mnistlab.report.writer import ReportPaths

    root, sleep = tmp_path / "runs", 0.2
    written = threading.Semaphore(0)
    calls: list[str] = []

    def slow(store: object, experiment: str, out: Path, *args: object) -> ReportPaths:
        calls.append(threading.current_thread().name)
        time.sleep(sleep)
        written.release()
        return ReportPaths(out / "x.html", out / "x.md")

    def after_the_write(event: object) -> None:  # each run's report is written before the next run trains
        if isinstance(event, RunEnd):
            assert written.acquire(timeout=LIMIT)

    with LiveReport(root, "timed", tmp_path / "out", min_interval=0, budget=1, writer=slow) as live:
        api.run(study(tiny_data_dir, "timed", models=MODELS[:2]), root, listeners=[live, after_the_write])
        live.finish()
    in_thread = sum(name == "mnistlab-live-report" for name in calls)
    assert in_thread == 2 and live.writes == len(calls)  # one a finished run; finish's, if any, is the third
    assert live.write_seconds >= in_thread * sleep
    assert live.write_cpu_seconds < live.write_seconds - sleep  # sleeping is wall time, not CPU
    assert live.finish_seconds >= (len(calls) - in_thread) * sleep


def hand_store(root: Path, dataset, finished: bool = False) -> int:
    """A store as another process leaves it mid-study: one completed run and one still pending
    (whose id is returned), or with `finished` both completed."""
    from test_report import GOOD_HISTORY, add_run, model_spec

    labels = dataset.test_labels.numpy().astype(np.uint8)
    with RunStore(root) as store:
        store.save_experiment("watched", {"name": "watched", "dataset": "synthetic"})
        add_run(store, "watched", "m-good", "wide CNN", None, 0, "completed", 3, GOOD_HISTORY, labels)
        pending = store.ensure_run("watched", "m-next", spec={"model": model_spec("m-next", "next"), "precision": "fp32",
                                                             "train_limit": None, "val_fraction": 0.1},
                                   seed=0, dataset="synthetic", protocol="split", epochs_planned=4)
    if finished:
        finish_elsewhere(root, pending.id, labels)
    return pending.id


def finish_elsewhere(root: Path, run_id: int, labels: np.ndarray) -> None:
    """What the other process does: claim the run, train an epoch, record it finished."""
    with RunStore(root) as store:
        assert store.claim_run(run_id, "elsewhere:1")
        store.record_epoch(run_id, 1, {"loss": 1.0, "acc": 0.5, "val_loss": 1.1, "val_acc": 0.5}, owner="elsewhere:1")
        store.finish_run(run_id, "completed", final={"test_acc": 0.5, "test_loss": 1.0}, labels=labels,
                         predicted=labels, device="cpu", versions={"torch": "test"}, owner="elsewhere:1")


def test_watch_follows_a_store_another_process_writes(tmp_path, tiny_dataset):
    root, out = tmp_path / "runs", tmp_path / "reports"
    pending = hand_store(root, tiny_dataset)
    writes: list[tuple[bool, str]] = []
    wrote = threading.Event()

    def on_write(paths, final: bool) -> None:
        writes.append((final, paths.html.read_text()))
        wrote.set()

    watching = Background(lambda: watch_report(root, "watched", out, poll_seconds=0.05, refresh_seconds=2,
                                               on_write=on_write))
    assert wrote.wait(LIMIT)
    final, html = writes[0]
    assert not final and '<meta http-equiv="refresh" content="2">' in html and "in progress: 1 of 2 runs" in html
    finish_elsewhere(root, pending, tiny_dataset.test_labels.numpy().astype(np.uint8))
    paths = watching.result()
    final, html = writes[-1]
    assert final and paths is not None and paths.html.read_text() == html
    assert "http-equiv" not in html and "in progress" not in html and "m-next" in html


def test_report_watch_on_a_finished_study_writes_the_final_report(tmp_path, tiny_dataset):
    root = tmp_path / "runs"
    hand_store(root, tiny_dataset, finished=True)
    result = run_cli("report", "watched", "--store", root, "--watch", "--every", "0.1")
    assert result.exit_code == 0 and result.stdout.startswith("report: "), result
    html = (root / "reports" / "watched.html").read_text()
    assert "http-equiv" not in html and "in progress" not in html and "m-next" in html
    result = run_cli("report", "nope", "--store", root, "--watch")
    assert result.exit_code == 2 and "no experiment 'nope' in this store" in result.stderr


# -- live export ----------------------------------------------------------------------------------


def tensorboard_scalars(folder: Path) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """Per run folder, each scalar's (step, value) series, read with TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found = {}
    for run_dir in sorted(path for path in folder.iterdir() if path.is_dir() and not path.name.startswith(".")):
        events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0})
        events.Reload()
        found[run_dir.name] = {tag: [(event.step, event.value) for event in events.Scalars(tag)]
                               for tag in events.Tags()["scalars"]}
        try:  # the HParams plugin's records (written when a run ends), by tag
            found[run_dir.name]["hparams"] = events.PluginTagToContent("hparams")
        except KeyError:
            found[run_dir.name]["hparams"] = {}
    return found


def mlflow_runs(folder: Path, experiment: str) -> dict[str, dict[str, Any]]:
    """Per run name: mnistlab's tags, params, status and every metric's (step, value) history,
    read with MLflow's own client on the file store (run ids and wall-clock times left out)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=folder.resolve().as_uri())
    found = client.get_experiment_by_name(experiment)
    runs = {}
    for run in client.search_runs([found.experiment_id]) if found else []:
        metrics = {name: sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, name))
                   for name in run.data.metrics}
        tags = {key: value for key, value in run.data.tags.items() if key.startswith("mnistlab.")}
        runs[run.info.run_name] = {"tags": tags, "params": run.data.params, "metrics": metrics,
                                   "status": run.info.status}
    return runs


def test_live_logs_equal_export_runs_during_the_study_and_at_the_end(tmp_path, tiny_data_dir, monkeypatch):
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    root, tb, mlruns = tmp_path / "runs", tmp_path / "tb", tmp_path / "mlruns"
    during: list[tuple] = []

    def after_the_first_epoch(event: object) -> None:
        # The live logger hears each event first (api.run puts it first): the epoch is logged now.
        if isinstance(event, EpochEnded) and event.epoch == 1 and not during:
            api.export_runs("live", "tensorboard", tmp_path / "tb-export-during", store=root)
            api.export_runs("live", "mlflow", tmp_path / "ml-export-during", store=root)
            during.append((tensorboard_scalars(tb), tensorboard_scalars(tmp_path / "tb-export-during"),
                           mlflow_runs(mlruns, "live"), mlflow_runs(tmp_path / "ml-export-during", "live")))

    outcome = api.run(study(tiny_data_dir, "live", models=MODELS[:1], seeds=(0, 1), epochs=2), root,
                      log_to=[f"tensorboard:{tb}", f"mlflow:{mlruns}"], listeners=[after_the_first_epoch])
    assert len(outcome.trained) == 2
    live_tb, export_tb, live_ml, export_ml = during[0]
    # during: the running run's first epoch, in both tools, as export-runs writes it (export-runs also
    # ends the run it writes, with hparams and final figures, which a run still training has not got yet)
    def epochs_of(run: dict) -> dict:
        return {tag: series for tag, series in run.items() if tag != "hparams" and not tag.startswith("final/")}

    assert list(live_tb) == ["tiny-a-seed0"] and [step for step, _ in live_tb["tiny-a-seed0"]["val_loss"]] == [1]
    assert epochs_of(live_tb["tiny-a-seed0"]) == epochs_of(export_tb["tiny-a-seed0"])
    assert epochs_of(live_ml["tiny-a-seed0"]["metrics"]) == epochs_of(export_ml["tiny-a-seed0"]["metrics"])
    assert live_ml["tiny-a-seed0"]["params"] == export_ml["tiny-a-seed0"]["params"]
    assert live_ml["tiny-a-seed0"]["status"] == "RUNNING"
    # at the end: everything equal (hparams, params, tags, status), up to run ids and times
    api.export_runs("live", "tensorboard", tmp_path / "tb-export", store=root)
    api.export_runs("live", "mlflow", tmp_path / "ml-export", store=root)
    live_tb, export_tb = tensorboard_scalars(tb), tensorboard_scalars(tmp_path / "tb-export")
    assert sorted(live_tb) == ["tiny-a-seed0", "tiny-a-seed1"] and live_tb == export_tb
    assert [step for step, _ in live_tb["tiny-a-seed1"]["loss"]] == [1, 2]
    assert "_hparams_/session_start_info" in live_tb["tiny-a-seed1"]["hparams"]
    live_ml, export_ml = mlflow_runs(mlruns, "live"), mlflow_runs(tmp_path / "ml-export", "live")
    assert sorted(live_ml) == ["tiny-a-seed0", "tiny-a-seed1"] and live_ml == export_ml
    assert live_ml["tiny-a-seed1"]["status"] == "FINISHED" and "final/test_acc" in live_ml["tiny-a-seed1"]["metrics"]


def test_an_epoch_logged_again_starts_that_run_s_log_over_from_the_store(tmp_path):
    """A Ray retry trains epochs again after its checkpoint: the live log follows the store, not the events."""
    pytest.importorskip("tensorboard")
    root = tmp_path / "runs"
    with RunStore(root) as store:
        store.save_experiment("again", {"name": "again", "dataset": "mnist"})
        run = store.ensure_run("again", "m", {"model": {"id": "m"}}, 0, "mnist", "split", 3)
        assert store.claim_run(run.id, "test:1")
        with LiveLog([parse_log_to(f"tensorboard:{tmp_path / 'tb'}")], store) as live:
            for epoch, loss in ((1, 1.0), (2, 0.9), (3, 0.8)):
                store.record_epoch(run.id, epoch, {"loss": loss})
                live(EpochEnded(run.id, "m", 0, epoch, 3, {"loss": loss}))
            store.truncate_epochs(run.id, 1)  # the retry resumed after epoch 1
            for epoch, loss in ((2, 0.5), (3, 0.4)):
                store.record_epoch(run.id, epoch, {"loss": loss})
                live(EpochEnded(run.id, "m", 0, epoch, 3, {"loss": loss}))
            store.finish_run(run.id, "completed", {"test_acc": 0.9}, None, None, "cpu", {"torch": "x"})
            live(RunEnd("m", 0, COMPLETED, 3, 0.9, run_id=run.id))
    scalars = tensorboard_scalars(tmp_path / "tb")["m-seed0"]
    assert [(step, round(value, 5)) for step, value in scalars["loss"]] == [(1, 1.0), (2, 0.5), (3, 0.4)]


def test_a_bad_log_to_is_one_line_exit_2_and_writes_nothing(tmp_path, tiny_data_dir):
    from test_runner import write_experiment

    path = write_experiment(tmp_path, study(tiny_data_dir, "nothing", models=MODELS[:1]))
    for value, words in (("wandb:runs", "give tensorboard:DIR, or mlflow:URI"), ("tensorboard", "give tensorboard:DIR"),
                         (f"tensorboard:{path}", "not a folder"), ("mlflow:", "give tensorboard:DIR")):
        result = run_cli("run", path, "--store", tmp_path / "runs", "--log-to", value)
        assert result.exit_code == 2 and len(result.error_lines) == 1, result
        assert result.error_lines[0].startswith("error: ") and words in result.error_lines[0], result.error_lines
    assert not (tmp_path / "runs").exists()
    with pytest.raises(MnistlabError, match="--log-to 'x:y'"):
        api.run(study(tiny_data_dir, "nothing"), tmp_path / "runs", log_to=["x:y"])
    assert not (tmp_path / "runs").exists()


def test_a_missing_extra_is_one_line(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def without(name, *args, **kwargs):
        if name.split(".")[0] in ("tensorboard", "mlflow"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without)
    for kind in ("tensorboard", "mlflow"):
        with pytest.raises(MnistlabError, match=rf"^--log-to {kind} needs mnistlab\[{kind}\]: pip install"):
            parse_log_to(f"{kind}:somewhere")


class FakeRay:
    """Ray's surface the coordinator and its workers use, in this process and synchronously: a task
    runs when submitted, its events wait in the sink until the coordinator drains them. It shows the
    coordinator's listener wiring without a cluster (tests/test_ray_backend.py runs the real one)."""

    class exceptions:  # noqa: N801  (ray.exceptions)
        class RayError(Exception):
            pass

        class RayTaskError(RayError):
            pass

    class _Call:
        def __init__(self, target: Any) -> None:
            self.target = target

        def options(self, **_: Any) -> FakeRay._Call:
            return self

        def remote(self, *args: Any) -> Any:
            made = self.target(*args)
            return _Actor(made) if isinstance(self.target, type) else _Done(made)

    def remote(self, target: Any) -> FakeRay._Call:
        return FakeRay._Call(target)

    def put(self, value: Any) -> Any:
        return value

    def get(self, ref: Any) -> Any:
        return ref.value if isinstance(ref, _Done) else ref

    def wait(self, refs: list, num_returns: int = 1, timeout: float | None = None) -> tuple[list, list]:
        return refs[:num_returns], refs[num_returns:]

    def is_initialized(self) -> bool:
        return True

    def cluster_resources(self) -> dict[str, float]:
        return {"CPU": 1.0}


class _Done:
    def __init__(self, value: Any) -> None:
        self.value = value


class _Actor:
    def __init__(self, instance: Any) -> None:
        self.instance = instance

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.instance, name)
        return type("Method", (), {"remote": staticmethod(lambda *args: method(*args))})()


def test_the_ray_coordinator_streams_to_the_live_logs_as_the_local_runner_does(tmp_path, tiny_data_dir, monkeypatch):
    """Without starting Ray: the coordinator's events (drained from its workers) reach the live logger."""
    pytest.importorskip("tensorboard")
    from mnistlab.runs.ray import coordinator, env

    fake = FakeRay()
    monkeypatch.setattr(coordinator, "import_ray", lambda loopback: fake)
    monkeypatch.setattr(env, "import_ray", lambda loopback: fake)
    heard: list[object] = []
    root, tb = tmp_path / "runs", tmp_path / "tb"
    outcome = api.run(study(tiny_data_dir, "onray", models=MODELS[:1], seeds=(0, 1), epochs=2), root, backend="ray",
                      log_to=[f"tensorboard:{tb}"], listeners=[heard.append])
    assert len(outcome.trained) == 2
    assert [type(event).__name__ for event in heard].count("EpochEnded") == 4
    assert [type(event).__name__ for event in heard].count("RunEnd") == 2
    with RunStore(root) as store:
        assert all(run.final["ray"]["attempt"] == 1 for run in store.runs("onray"))  # the coordinator's path
    api.export_runs("onray", "tensorboard", tmp_path / "tb-export", store=root)
    live = tensorboard_scalars(tb)
    assert sorted(live) == ["tiny-a-seed0", "tiny-a-seed1"] and live == tensorboard_scalars(tmp_path / "tb-export")


def _written_while_runs_finish(root: Path, out: Path, budget: float, seconds: float, cost: float) -> tuple[LiveReport, float]:
    """A LiveReport over `seconds` of runs finishing every 50 ms, each report costing `cost` s (a sleeping writer)."""
    from mnistlab.report.writer import ReportPaths

    def slow(store: object, experiment: str, out: Path, *args: object) -> ReportPaths:
        time.sleep(cost)
        return ReportPaths(out / "x.html", out / "x.md")

    with RunStore(root) as store:
        store.save_experiment("budgeted", {"name": "budgeted", "dataset": "mnist"})
        started = time.monotonic()
        with LiveReport(root, "budgeted", out, min_interval=0, budget=budget, writer=slow) as live:
            seed = 0
            while time.monotonic() - started < seconds:
                run = store.ensure_run("budgeted", "m", {"model": {"id": "m"}}, seed, "mnist", "split", 1)
                live(RunEnd("m", seed, COMPLETED, 1, run_id=run.id))  # a new run each time: the report changed
                seed += 1
                time.sleep(0.05)
            elapsed = time.monotonic() - started
    return live, elapsed


def test_the_live_report_keeps_its_writing_within_its_budget(tmp_path, monkeypatch):
    import mnistlab.report.live as live_module

    cost = 0.3
    monkeypatch.setattr(live_module, "FIRST_WRITE_GUESS", cost)  # the first write's cost, known here
    throttled, elapsed = _written_while_runs_finish(tmp_path / "a", tmp_path / "out-a", 0.25, 4.0, cost)
    # Within the budget of the wall time, give or take the one write in flight when the study ended.
    assert throttled.writes >= 1 and throttled.write_seconds <= 0.25 * elapsed + cost
    free, elapsed = _written_while_runs_finish(tmp_path / "b", tmp_path / "out-b", 1, 4.0, cost)
    assert free.write_seconds >= 0.6 * elapsed  # without a budget it writes nearly all the time
    with pytest.raises(ValueError, match="budget"):
        LiveReport(tmp_path / "c", "x", budget=0)
