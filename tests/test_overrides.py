"""`mnistlab run --epochs/--seeds/--models/--set/--vary`: each override changes only what it names, a
bad one writes nothing, and the derived experiment's runs live beside the file's without retraining."""

from __future__ import annotations

from typing import Any

import pytest

from cli_driver import run_cli
from mnistlab import api
from mnistlab.errors import SpecError
from mnistlab.experiments.definition import expand, parse_experiment
from mnistlab.experiments.overrides import Overrides, derive_experiment, parse_overrides
from mnistlab.report.writer import report_stem
from mnistlab.runs.store import RunStore
from test_runner import TINY_MLP, tiny_experiment, write_experiment


def _differences(a: Any, b: Any, path: str = "") -> set[str]:
    """The dotted paths where two plain documents differ (into lists of mappings of one length, by index)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return {found for key in set(a) | set(b)
                for found in _differences(a.get(key), b.get(key), f"{path}.{key}" if path else str(key))}
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b) and all(isinstance(x, dict) for x in a + b):
        return {found for index, (x, y) in enumerate(zip(a, b)) for found in _differences(x, y, f"{path}.{index}")}
    return set() if a == b else {path}


def _study(tiny_data_dir) -> dict:
    data = tiny_experiment(tiny_data_dir, name="study", seeds=(0, 1))
    data["models"][1]["epochs"] = 3  # an entry's own epochs, which --epochs replaces
    return data


# (overrides, the document paths they may change besides the name)
CHANGES = [
    (parse_overrides(epochs=2), {"defaults.epochs", "models.1.epochs"}),
    (parse_overrides(seeds="0:5"), {"seeds"}),
    (parse_overrides(seeds="4,7"), {"seeds"}),
    (parse_overrides(models="tiny-cnn"), {"models"}),
    (parse_overrides(set=["defaults.train_limit=300"]), {"defaults.train_limit"}),
    (parse_overrides(set=["models.0.spec.layers.0.units=16", "protocol=test"]),
     {"models.0.spec.layers.0.units", "protocol"}),
    (parse_overrides(vary=["dropout=0,0.5"]), {"models.0.vary", "models.1.vary"}),
]


@pytest.mark.parametrize(("overrides", "paths"), CHANGES, ids=[o.suffix() for o, _ in CHANGES])
def test_each_override_changes_only_what_it_names(tiny_data_dir, overrides, paths):
    raw = _study(tiny_data_dir)
    base, derived = parse_experiment(raw), derive_experiment(raw, overrides)
    assert derived.name == "study" + overrides.suffix()
    before, after = base.to_dict(), derived.to_dict()
    assert _differences({**before, "name": None}, {**after, "name": None}) == paths


def test_overrides_take_effect_on_the_tasks(tiny_data_dir):
    raw = _study(tiny_data_dir)
    tasks = expand(derive_experiment(raw, parse_overrides(epochs=2, seeds="0:3", models="tiny-cnn",
                                                          vary=["dropout=0,0.5"])))
    assert sorted({task.seed for task in tasks}) == [0, 1, 2]
    assert {task.model_id for task in tasks} == {"tiny-cnn.dropout-0", "tiny-cnn.dropout-0.5"}
    assert {task.spec.training.epochs for task in tasks} == {2}
    assert {task.experiment for task in tasks} == {"study+epochs=2+seeds=0:3+models=tiny-cnn+vary.dropout=0,0.5"}
    limited = expand(derive_experiment(raw, parse_overrides(set=["models.1.train_limit=50"])))
    assert {(task.model_id, task.train_limit) for task in limited} == {("tiny-mlp", None), ("tiny-cnn", 50)}


def test_the_name_is_canonical():
    """Equal overrides in any order or spelling name one derived experiment; its report file keeps the name."""
    one = parse_overrides(seeds="0,1,2", models="b,a", set=["x.b=1", "x.a=true"], vary=["width=1,2"], epochs=3)
    two = Overrides(epochs=3, seeds=range(3), models=["a", "b"], set={"x.a": True, "x.b": 1}, vary={"width": [1, 2]})
    assert one == two and one.suffix() == two.suffix() == "+epochs=3+seeds=0:3+models=a,b+x.a=true+x.b=1+vary.width=1,2"
    assert Overrides(set={"description": "5"}).suffix() == '+description="5"'  # text that reads as a number stays text
    assert not Overrides() and Overrides().suffix() == ""
    assert report_stem("study+epochs=20+seeds=0:5") == "study+epochs=20+seeds=0-5"
    assert report_stem("../x y") == "x-y"


BAD = [
    (["--set", "models.7.epochs=3"], ["--set models.7.epochs", "no such model entry"]),
    (["--set", "defaults.epochz=3"], ["field 'defaults.epochz'", "unknown field", "did you mean"]),
    (["--set", "defaults.epochs=0"], ["field 'defaults.epochs'"]),
    (["--set", "defaults.epochs=[1, 2]"], ["--set defaults.epochs", "not a YAML scalar"]),
    (["--set", "name=other"], ["--set name"]),
    (["--set", "defaults.train_limit"], ["--set", "KEY=VALUE"]),
    (["--models", "tiny-cnm"], ["--models tiny-cnm", "did you mean 'tiny-cnn'"]),
    (["--seeds", "5:2"], ["--seeds '5:2'", "START:STOP"]),
    (["--seeds", "0,x"], ["--seeds '0,x'"]),
    (["--seeds", "1,1"], ["--seeds 1,1", "each seed once"]),
    (["--vary", "bogus=1,2"], ["field 'vary.bogus'", "unknown edit"]),
    (["--vary", "dropout=0.5"], ["--vary dropout", "two or more levels"]),
    (["--epochs", "0"], ["mnistlab run", "--epochs"]),
]


@pytest.mark.parametrize(("args", "words"), BAD, ids=[" ".join(args) for args, _ in BAD])
def test_a_bad_override_is_one_line_and_writes_nothing(tmp_path, tiny_data_dir, args, words):
    path = write_experiment(tmp_path, _study(tiny_data_dir))
    result = run_cli("run", path, *args, "--store", tmp_path / "store", "--no-report")
    assert result.exit_code == 2, result
    assert len(result.error_lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in result.error_lines[0]
    assert not (tmp_path / "store").exists()  # not even created


def test_overridden_runs_and_the_files_own_coexist_without_retraining(tmp_path, tiny_data_dir):
    data = {**tiny_experiment(tiny_data_dir, name="study", seeds=(0,)), "models": [{"spec": TINY_MLP}]}
    path = write_experiment(tmp_path, data)
    store_dir = tmp_path / "store"
    derived = "study+epochs=2"
    first = run_cli("run", path, "--store", store_dir, "--no-report")
    assert first.exit_code == 0 and "study: trained 1, already done 0" in first.stdout, first
    over = run_cli("run", path, "--epochs", "2", "--store", store_dir, "--no-report")
    assert over.exit_code == 0, over
    assert over.stdout.splitlines()[0].startswith(f"experiment {derived}: ")  # printed at the start
    assert f"{derived}: trained 1, already done 0" in over.stdout
    again = run_cli("run", path, "--store", store_dir, "--no-report")  # the file alone: its own run, done
    assert "study: trained 0, already done 1" in again.stdout, again
    with RunStore(store_dir) as store:  # the same overrides from Python find theirs done
        outcome = api.run(str(path), store, overrides=api.Overrides(epochs=2))
        assert outcome.trained == [] and len(outcome.skipped_finished) == 1
        assert {record.name for record in store.experiments()} == {"study", derived}
        assert [len(store.history(run.id)["epoch"]) for run in store.runs("study")] == [1]
        assert [len(store.history(run.id)["epoch"]) for run in store.runs(derived)] == [2]
        configs = {record.name: record.config for record in store.experiments()}
        assert configs[derived]["defaults"]["epochs"] == 2 and configs["study"]["defaults"]["epochs"] == 1
    listed = run_cli("ls", "--store", store_dir)
    assert "study+" in listed.stdout  # the table may wrap the name in its cell
    paths = api.report(derived, store_dir)
    assert paths.html.name == f"{derived}.html" and paths.markdown.exists()


def test_overrides_create_a_missing_or_empty_defaults(tiny_data_dir):
    for defaults in (None, "absent"):
        raw = _study(tiny_data_dir)
        raw.pop("defaults") if defaults == "absent" else raw.update(defaults=None)
        derived = derive_experiment(raw, parse_overrides(set=["defaults.train_limit=50"], epochs=2))
        assert (derived.defaults.epochs, derived.defaults.train_limit) == (2, 50)


def test_python_overrides_are_checked_like_the_options(tiny_data_dir):
    with pytest.raises(SpecError, match="--epochs 0"):
        Overrides(epochs=0)
    with pytest.raises(SpecError, match="YAML scalar"):
        Overrides(set={"defaults.epochs": [1]})
    with pytest.raises(SpecError, match="no such model entry 'models.5'"):
        derive_experiment(_study(tiny_data_dir), Overrides(set={"models.5.epochs": 2}))
