"""Factor grids in experiment files: each edit, variant ids, subsets, errors, the built-in studies."""

from __future__ import annotations

import re

import pytest

from mnistlab.errors import SpecError
from mnistlab.experiments.definition import builtin_experiments, expand, load_experiment, parse_experiment
from mnistlab.experiments.factors import apply_edits, level_text, parse_factors, variant_id, variants
from mnistlab.report import factor_study, runs_frame, write_report
from mnistlab.runs.runner import run_experiment
from mnistlab.runs.store import RunStore
from mnistlab.zoo import get_model

SAFE_ID = re.compile(r"^[A-Za-z0-9._-]+$")


def types(spec) -> list[str]:
    return [layer.type for layer in spec.layers]


def edited(base: str, **edits):
    """The base model with these edits applied, as one level of a factor would apply them."""
    return apply_edits(get_model(base), edits, f"{base}.edited", "")


def grid(base: str, vary: dict, subset=None):
    return variants(get_model(base), parse_factors(vary), subset)


def test_full_factorial_ids_levels_and_structure():
    found = grid("s004-m2", {"depth": [2, 3, 5], "norm": {"plain": {"batchnorm": False, "dropout": 0},
                                                          "bn": {"batchnorm": True},
                                                          "bn-dropout": {"batchnorm": True, "dropout": 0.5}}})
    assert len(found) == 9
    ids = [v.spec.id for v in found]
    assert ids[0] == "s004-m2.depth-2.norm-plain" and ids[-1] == "s004-m2.depth-5.norm-bn-dropout"
    assert all(SAFE_ID.match(i) for i in ids) and len(set(ids)) == 9
    by_id = {v.spec.id: v for v in found}
    assert by_id["s004-m2.depth-3.norm-bn"].levels == {"depth": "3", "norm": "bn"}
    assert types(by_id["s004-m2.depth-2.norm-plain"].spec) == ["Dense"] * 3
    assert types(by_id["s004-m2.depth-3.norm-bn-dropout"].spec) == ["Dense", "BatchNormalization", "Dropout"] * 3 + ["Dense"]
    deep = by_id["s004-m2.depth-5.norm-plain"].spec
    assert [layer.units for layer in deep.layers] == [512, 256, 128, 128, 128, 10]  # the last block repeated
    # Everything else held fixed: the initializers of the kept layers, the optimizer, the batch size.
    assert deep.layers[0].kernel_initializer.stddev == 0.062 and deep.layers[4].kernel_initializer.stddev == 0.125
    assert deep.training == get_model("s004-m2").training


def test_dropout_changes_inserts_and_removes():
    changed = edited("s004-m7", dropout=0.2)
    assert [layer.rate for layer in changed.layers if layer.type == "Dropout"] == [0.2, 0.2]
    removed = edited("s004-m7", dropout=0)
    assert "Dropout" not in types(removed)
    inserted = edited("s004-m1", dropout=0.3)
    assert types(inserted) == ["Dense", "Dropout", "Dense", "Dropout", "Dense"]


def test_batchnorm_on_after_each_hidden_kernel_and_off_removes_it():
    on = edited("s000-m1", batchnorm=True)
    assert types(on) == ["Conv2D", "BatchNormalization", "Conv2D", "BatchNormalization", "Flatten", "Dense"]
    off = edited("s000-m8", batchnorm="off")
    assert "BatchNormalization" not in types(off)


def test_kernel_width_activation_initializer_pooling_and_training_edits():
    spec = edited("s000-m8", kernel_size=1, width=0.5, activation="tanh", initializer="he_normal", pooling=2,
                  optimizer={"name": "sgd", "lr": 0.1}, batch_size=64, epochs=2)
    convs = [layer for layer in spec.layers if layer.type == "Conv2D"]
    assert [c.kernel_size for c in convs] == [(1, 1), (1, 1)] and [c.filters for c in convs] == [32, 64]
    dense = [layer for layer in spec.layers if layer.type == "Dense"]
    assert [d.units for d in dense] == [30, 20, 10]  # hidden units halved, the output kept
    assert {layer.activation for layer in convs + dense[:-1]} == {"tanh"} and dense[-1].activation == "softmax"
    assert {layer.kernel_initializer.name for layer in convs + dense[:-1]} == {"he_normal"}
    assert dense[-1].kernel_initializer.name == "glorot_uniform"
    assert {layer.pool_size for layer in spec.layers if layer.type == "MaxPooling2D"} == {(2, 2)}
    assert spec.training.optimizer.name == "sgd" and spec.training.optimizer.args == {"lr": 0.1}
    assert (spec.training.batch_size, spec.training.epochs) == (64, 2)
    assert "MaxPooling2D" not in types(edited("s000-m8", pooling="none"))
    inserted = edited("s000-m1", pooling=2)
    assert types(inserted) == ["Conv2D", "MaxPooling2D", "Conv2D", "MaxPooling2D", "Flatten", "Dense"]


def test_depth_drops_and_repeats_conv_blocks():
    shallow = edited("s000-m8", depth=1)
    assert types(shallow) == ["Conv2D", "BatchNormalization", "Dropout", "MaxPooling2D", "Flatten",
                              "Dense", "Dense", "Dense"]


def test_level_names_are_readable_and_shell_safe():
    assert [level_text(v) for v in (True, False, 0.2, 1.0, [3, 3], "he_normal", {"name": "sgd", "lr": 0.1})] == \
        ["on", "off", "0.2", "1", "3x3", "he_normal", "sgd-lr0.1"]
    assert level_text("a b[c]") == "a-b-c"
    assert variant_id("s004-m2", {"bn": "on", "dropout": "0.2"}) == "s004-m2.bn-on.dropout-0.2"


def test_subset_picks_listed_combinations_only():
    found = grid("s004-m2", {"dropout": [0, 0.2], "bn": {"edit": "batchnorm", "levels": ["off", "on"]}},
                 subset=[{"dropout": 0, "bn": "off"}, {"dropout": 0.2, "bn": "on"}])
    assert [v.spec.id for v in found] == ["s004-m2.dropout-0.bn-off", "s004-m2.dropout-0.2.bn-on"]


def experiment(models: list) -> dict:
    return {"name": "grid", "seeds": [0, 1], "defaults": {"epochs": 1}, "models": models}


def test_experiment_expands_variants_with_their_levels():
    study = parse_experiment(experiment([{"model": "s004-m1", "vary": {"batchnorm": ["off", "on"]}},
                                         {"model": "s004-m2"}]))
    tasks = expand(study)
    assert [(t.model_id, t.seed) for t in tasks][:3] == [("s004-m1.batchnorm-off", 0), ("s004-m1.batchnorm-off", 1),
                                                         ("s004-m1.batchnorm-on", 0)]
    assert tasks[0].factors == (("batchnorm", "off"),) and tasks[-1].factors == ()
    assert all(t.spec.training.epochs == 1 for t in tasks)  # experiment defaults still apply


@pytest.mark.parametrize(("entry", "fragment"), [
    ({"model": "s004-m2", "vary": {"dropuot": [0, 0.5]}}, "field 'vary.dropuot': unknown edit 'dropuot' (did you mean 'dropout'?)"),
    ({"model": "s004-m2", "vary": {"dropout": [0.5]}}, "field 'vary.dropout': a factor needs two or more levels"),
    ({"model": "s004-m2", "vary": {"dropout": [0, 1.5]}}, "field 'vary.dropout': level 1.5 must be in [0.0, 1.0)"),
    ({"model": "s004-m2", "vary": {"kernel_size": [1, 3]}}, "field 'vary.kernel_size': the model has no Conv2D layer"),
    ({"model": "s002-m10", "vary": {"dropout": [0, 0.5]}}, "is a graph"),
    ({"model": "s004-m2", "subset": [{"dropout": 0}]}, "'subset' lists combinations of 'vary' levels"),
    ({"model": "s004-m2", "vary": {"dropout": [0, 0.5]}, "subset": [{"dropout": 0.3}]},
     "field 'subset[1]': no such combination of levels"),
    ({"model": "s000-m8", "vary": {"kernel_size": [3, 5]}},
     "pool 4x4 is larger than its 2x2 input"),
])
def test_bad_factor_grids_are_one_line_errors(entry, fragment):
    with pytest.raises(SpecError) as error:
        parse_experiment(experiment([entry]), "grid.yaml")
    message = str(error.value)
    assert fragment in message and "\n" not in message
    assert message.startswith("grid.yaml")


def test_builtin_factor_studies_hold_everything_but_their_factors_fixed():
    assert {"factors-004", "factors-000"} <= set(builtin_experiments())
    study, source = load_experiment("factors-004")
    tasks = expand(study, source)
    assert len(tasks) == 27 and len(study.seed_list) == 3
    assert {dict(t.factors)["norm"] for t in tasks} == {"plain", "bn", "bn-dropout"}
    first_layers = {t.spec.layers[0].kernel_initializer.stddev for t in tasks}
    assert first_layers == {0.062}  # the initializer is not confounded with BN any more
    study, source = load_experiment("factors-000")
    tasks = expand(study, source)
    assert len(tasks) == 18 and {dict(t.factors)["kernel_size"] for t in tasks} == {"1", "3"}


def test_factor_experiment_runs_end_to_end_into_a_report_with_effects(tmp_path, tiny_data_dir):
    base = {"id": "mlp", "input": [28, 28, 1],
            "layers": [{"type": "Flatten"}, {"type": "Dense", "units": 8, "activation": "relu"},
                       {"type": "Dense", "units": 10, "activation": "softmax"}],
            "training": {"optimizer": "adam", "batch_size": 32, "epochs": 1}}
    study = parse_experiment({"name": "grid", "dataset": str(tiny_data_dir), "seeds": [0, 1],
                              "defaults": {"patience": 2},
                              "models": [{"spec": base, "vary": {"dropout": [0, 0.5], "width": [1, 2]}}]})
    with RunStore(tmp_path / "store") as store:
        outcome = run_experiment(study, store)
        assert len(outcome.trained) == 8 and not outcome.failed
        runs = runs_frame(store, "grid")
        assert sorted(runs["model"].unique()) == ["mlp.dropout-0.5.width-1", "mlp.dropout-0.5.width-2",
                                                  "mlp.dropout-0.width-1", "mlp.dropout-0.width-2"]
        record = store.get_run(int(runs["run_id"].iloc[0]))
        assert record.final["factors"] == {"dropout": "0", "width": "1"}
        assert record.final["best_epoch"] == 1 and record.final["stopped_early"] is False
        study_effects = factor_study(runs)
        assert study_effects.factors == {"dropout": ("0", "0.5"), "width": ("1", "2")}
        paths = write_report(store, "grid", tmp_path / "reports")
    assert "Changing dropout from 0 to 0.5" in paths.markdown.read_text()
