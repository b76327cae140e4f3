"""A table of hand-written malformed inputs: each is refused with ONE line whose words are asserted.

Kinds: `spec` (a model file, m.yaml), `experiment` (an experiment file, exp.yaml) and `cli` (the
command itself). YAML-level guards (encoding, duplicate keys, alias bombs) are checked on both
kinds of file, since every YAML read goes through mnistlab.util.yamlio.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from cli_driver import run_cli
from mnistlab.errors import MnistlabError
from mnistlab.experiments.definition import load_experiment
from mnistlab.spec.parse import load_spec_file

FLATTEN = "{type: Flatten}"
SOFTMAX = "{type: Dense, units: 10, activation: softmax}"


def spec(*layers: str, input_shape: str = "[28, 28, 1]", training: str = "", head: str = "id: bad\n") -> str:
    """A model file; with the default head, layer i (1-based) is on line 3 + i."""
    body = "".join(f"  - {layer}\n" for layer in layers)
    return f"{head}input: {input_shape}\nlayers:\n{body}{training}"


def experiment(body: str, models: str = "models: [{model: s000-m1}]\n") -> str:
    return f"name: e\n{models}{body}"


def bomb(depth: int = 9) -> str:
    """A 'billion laughs' document: 9 levels of 9 aliases expand to 9**9 (387 M) strings."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, depth):
        lines.append(f"l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


INLINE_BOMB = (
    "name: e\nmodels:\n  - spec:\n      id: boom\n      layers: [{type: Flatten}, {type: Dense, units: 10, activation: softmax}]\n"
    "      reference:\n"
    + "".join(f"        {line}\n" for line in bomb().splitlines())
)

WIDE_ACTIVATIONS = ("{type: Conv2D, filters: 30000, kernel_size: 1, padding: same}", "{type: MaxPooling2D, pool_size: 28}",
                    FLATTEN, SOFTMAX)


@dataclass
class Case:
    kind: str  # spec | experiment | cli
    content: str | bytes | None  # the file's content (None: no file, or a folder for 'folder')
    words: list[str]  # every one must appear in the error line
    args: tuple[str, ...] = ()  # cli: the arguments; '{file}' is the written file
    folder: bool = False


def case(id_: str, *args, **kwargs):
    return pytest.param(Case(*args, **kwargs), id=id_)


CASES = [
    # --- YAML: encoding, duplicate keys, alias bombs, structure
    case("spec-latin1", "spec", b"id: caf\xe9\nlayers: []\n", ["m.yaml", "not UTF-8", "0xe9", "offset 7"]),
    case("spec-utf16", "spec", "id: x\n".encode("utf-16"), ["m.yaml", "not UTF-8", "0xff"]),
    case("spec-binary", "spec", bytes(range(256)), ["m.yaml", "not UTF-8"]),
    case("experiment-latin1", "experiment", b"name: e\ndescription: \xe9t\xe9\n", ["exp.yaml", "not UTF-8"]),
    case("dup-units-flow", "spec", spec(FLATTEN, "{type: Dense, units: 10, units: 12, activation: softmax}"),
         ["m.yaml:5", "duplicate key 'units'", "first at line 5"]),
    case("dup-id", "spec", spec(FLATTEN, SOFTMAX, head="id: a\nid: b\n"), ["m.yaml:2", "duplicate key 'id'", "first at line 1"]),
    case("dup-units-block", "spec", "id: x\nlayers:\n  - type: Flatten\n  - type: Dense\n    units: 10\n    activation: softmax\n    units: 3\n",
         ["m.yaml:7", "duplicate key 'units'", "first at line 5"]),
    case("dup-training", "spec", spec(FLATTEN, SOFTMAX, training="training: {epochs: 2}\ntraining: {epochs: 3}\n"),
         ["m.yaml:7", "duplicate key 'training'", "first at line 6"]),
    case("dup-experiment-name", "experiment", "name: a\nname: b\nmodels: [{model: s000-m1}]\n",
         ["exp.yaml:2", "duplicate key 'name'", "first at line 1"]),
    case("dup-inline-spec-key", "experiment",
         "name: e\nmodels:\n  - spec: {id: x, id: y, layers: [{type: Flatten}, {type: Dense, units: 10, activation: softmax}]}\n",
         ["exp.yaml:3", "duplicate key 'id'"]),
    case("bomb-spec-file", "spec", bomb(), ["m.yaml", "refused", "expands to more than"]),
    case("bomb-inline-experiment", "experiment", INLINE_BOMB, ["exp.yaml", "refused", "billion laughs"]),
    case("recursive-alias", "spec", "id: &a [*a]\n", ["m.yaml:1", "refused", "recursive alias"]),
    case("deep-nesting", "spec", "id: " + "[" * 20000 + "]" * 20000 + "\n", ["m.yaml", "nested too deeply"]),
    case("syntax-error", "spec", "id: [x\nlayers: []\n", ["m.yaml", "invalid YAML"]),
    case("tab-indent", "spec", "id: x\nlayers:\n\t- type: Flatten\n", ["m.yaml:3", "invalid YAML"]),
    case("unhashable-key", "spec", "? [1, 2]\n: x\n", ["m.yaml", "invalid YAML", "unhashable"]),
    case("empty-spec", "spec", "", ["m.yaml", "must be a mapping with 'id' and 'layers'"]),
    case("spec-is-a-list", "spec", "- 1\n- 2\n", ["m.yaml", "must be a mapping"]),
    case("spec-is-folder", "spec", None, ["m.yaml", "is a folder"], folder=True),
    case("spec-missing", "spec", None, ["m.yaml", "no such file"]),
    case("experiment-is-a-string", "experiment", "just words\n", ["exp.yaml", "must be a mapping with 'name' and 'models'"]),
    # --- strict types in specs: no bool for int or float, no strings for numbers, finite floats
    case("units-true", "spec", spec(FLATTEN, "{type: Dense, units: true, activation: softmax}"),
         ["m.yaml:5", "layer 2 (dense_1, Dense)", "field 'units'", "must be a whole number, not true"]),
    case("units-string", "spec", spec(FLATTEN, "{type: Dense, units: '10', activation: softmax}"),
         ["m.yaml:5", "field 'units'", "valid integer"]),
    case("units-float", "spec", spec(FLATTEN, "{type: Dense, units: 10.0, activation: softmax}"),
         ["m.yaml:5", "field 'units'", "valid integer"]),
    case("filters-false", "spec", spec("{type: Conv2D, filters: false, kernel_size: 3}", FLATTEN, SOFTMAX),
         ["m.yaml:4", "layer 1 (conv2d_1, Conv2D)", "field 'filters'", "not false"]),
    case("kernel-size-bool", "spec", spec("{type: Conv2D, filters: 4, kernel_size: [3, true]}", FLATTEN, SOFTMAX),
         ["m.yaml:4", "field 'kernel_size.1'", "not true"]),
    case("strides-bool", "spec", spec("{type: Conv2D, filters: 4, kernel_size: 3, strides: true}", FLATTEN, SOFTMAX),
         ["m.yaml:4", "field 'strides'", "valid tuple"]),
    case("pool-size-string", "spec", spec("{type: MaxPooling2D, pool_size: '2'}", FLATTEN, SOFTMAX),
         ["m.yaml:4", "field 'pool_size'"]),
    case("rate-true", "spec", spec(FLATTEN, "{type: Dropout, rate: true}", SOFTMAX),
         ["m.yaml:5", "layer 2 (dropout_1, Dropout)", "field 'rate'", "must be a number, not true"]),
    case("rate-nan", "spec", spec(FLATTEN, "{type: Dropout, rate: .nan}", SOFTMAX), ["m.yaml:5", "field 'rate'", "finite"]),
    case("momentum-string", "spec", spec(FLATTEN, "{type: BatchNormalization, momentum: '0.9'}", SOFTMAX),
         ["m.yaml:5", "field 'momentum'", "valid number"]),
    case("epsilon-inf", "spec", spec(FLATTEN, "{type: BatchNormalization, epsilon: .inf}", SOFTMAX),
         ["m.yaml:5", "field 'epsilon'", "finite"]),
    case("use-bias-int", "spec", spec(FLATTEN, "{type: Dense, units: 10, activation: softmax, use_bias: 1}"),
         ["m.yaml:5", "field 'use_bias'", "valid boolean"]),
    case("initializer-stddev-bool", "spec",
         spec(FLATTEN, "{type: Dense, units: 10, activation: softmax, kernel_initializer: {name: random_normal, stddev: true}}"),
         ["m.yaml:5", "field 'kernel_initializer.stddev'", "not true"]),
    case("concatenate-axis-bool", "spec",
         spec("{name: a, type: Flatten}", "{name: b, type: Flatten, inputs: [input]}",
              "{type: Concatenate, axis: true, inputs: [a, b]}", SOFTMAX),
         ["m.yaml:6", "field 'axis'", "not true"]),
    case("input-bool", "spec", spec(FLATTEN, SOFTMAX, input_shape="[28, 28, true]"), ["m.yaml:1", "field 'input.2'", "not true"]),
    case("batch-size-true", "spec", spec(FLATTEN, SOFTMAX, training="training: {batch_size: true}\n"),
         ["m.yaml:1", "field 'training.batch_size'", "not true"]),
    case("epochs-fraction", "spec", spec(FLATTEN, SOFTMAX, training="training: {epochs: 2.5}\n"),
         ["m.yaml:1", "field 'training.epochs'", "valid integer"]),
    case("optimizer-lr-true", "spec", spec(FLATTEN, SOFTMAX, training="training: {optimizer: {name: adam, lr: true}}\n"),
         ["m.yaml:1", "field 'training.optimizer.lr'", "must be a number, got true"]),
    case("optimizer-lr-word", "spec", spec(FLATTEN, SOFTMAX, training="training: {optimizer: {name: adam, lr: fast}}\n"),
         ["m.yaml:1", "field 'training.optimizer.lr'", "valid number"]),
    case("optimizer-amsgrad-number", "spec",
         spec(FLATTEN, SOFTMAX, training="training: {optimizer: {name: adam, amsgrad: 1}}\n"),
         ["m.yaml:1", "field 'training.optimizer.amsgrad'", "must be true or false"]),
    case("layer-not-mapping", "spec", spec(FLATTEN, "5", SOFTMAX), ["m.yaml:1", "layer 2", "field 'type'", "must be a mapping"]),
    # --- specs against the dataset and the trainability limits (experiments on mnist check at load)
    case("input-100-on-mnist", "experiment",
         "name: e\nmodels:\n  - spec: {id: flat, input: [100], layers: [{type: Dense, units: 10, activation: softmax}]}\n",
         ["exp.yaml", "model 'flat'", "field 'input'", "(100,) does not fit mnist's 28x28", "[784]"]),
    case("input-32x32-on-mnist", "experiment",
         "name: e\nmodels:\n  - spec: {id: big, input: [32, 32, 1], layers: [{type: Flatten}, {type: Dense, units: 10, activation: softmax}]}\n",
         ["exp.yaml", "model 'big'", "field 'input'", "(32, 32, 1) does not fit", "[28, 28, 1]"]),
    case("input-rgb-on-mnist", "experiment",
         "name: e\nmodels:\n  - spec: {id: rgb, input: [28, 28, 3], layers: [{type: Flatten}, {type: Dense, units: 10, activation: softmax}]}\n",
         ["exp.yaml", "model 'rgb'", "field 'input'", "(28, 28, 3) does not fit"]),
    case("units-billion", "experiment",
         "name: e\nmodels:\n  - spec: {id: wide, layers: [{type: Flatten}, {type: Dense, units: 1000000000}, "
         "{type: Dense, units: 10, activation: softmax}]}\n",
         ["exp.yaml", "model 'wide'", "layer 2 (dense_1, Dense)", "field 'units'", "over the limit of 200,000,000", "max_params"]),
    case("filters-billion", "experiment",
         "name: e\nmodels:\n  - spec: {id: deep, layers: [{type: Conv2D, filters: 1000000000, kernel_size: 3}, {type: Flatten}, "
         "{type: Dense, units: 10, activation: softmax}]}\n",
         ["exp.yaml:3", "model 'deep'", "layer 1 (conv2d_1, Conv2D)", "field 'filters'", "over the limit", "max_params"]),
    case("activations-too-big", "experiment",
         "name: e\nmodels:\n  - spec: {id: fat, layers: [" + ", ".join(WIDE_ACTIVATIONS) + "]}\n",
         ["exp.yaml", "model 'fat'", "layer 1 (conv2d_1, Conv2D)", "field 'filters'", "MiB of activations",
          "max_activation_mib"]),
    case("max-params-override", "experiment", experiment("defaults: {max_params: 1000}\n"),
         ["exp.yaml", "experiment 'e'", "model 's000-m1'", "over the limit of 1,000"]),
    case("max-activation-override", "experiment", experiment("defaults: {max_activation_mib: 1}\n"),
         ["exp.yaml", "experiment 'e'", "model 's000-m1'", "over the limit of 1 MiB"]),
    # --- experiments: seeds, counts, dataset, device, names
    case("seed-1e23", "experiment", experiment("seeds: [1e23]\n"),
         ["exp.yaml", "experiment 'e'", "field 'seeds.0'", "whole numbers from 0 to 9223372036854775807"]),
    case("seed-negative", "experiment", experiment("seeds: [0, -1]\n"), ["exp.yaml", "field 'seeds.1'", "whole numbers", "-1"]),
    case("seed-2-63", "experiment", experiment("seeds: [9223372036854775808]\n"), ["exp.yaml", "field 'seeds.0'", "whole numbers"]),
    case("seed-true", "experiment", experiment("seeds: [true]\n"), ["exp.yaml", "field 'seeds.0'", "True"]),
    case("seed-string", "experiment", experiment("seeds: ['3']\n"), ["exp.yaml", "field 'seeds.0'", "'3'"]),
    case("seeds-not-list", "experiment", experiment("seeds: 3\n"), ["exp.yaml", "field 'seeds'"]),
    case("repeats-true", "experiment", experiment("repeats: true\n"), ["exp.yaml", "field 'repeats'", "not true"]),
    case("repeats-zero", "experiment", experiment("repeats: 0\n"), ["exp.yaml", "field 'repeats'", "greater than 0"]),
    case("unknown-dataset", "experiment", experiment("dataset: mnits\n"),
         ["exp.yaml", "field 'dataset'", "unknown dataset 'mnits'", "did you mean 'mnist'?"]),
    case("device-gpu", "experiment", experiment("defaults: {device: gpu}\n"),
         ["exp.yaml", "field 'defaults.device'", "choose auto, cpu, cuda or cuda:N", "'gpu'"]),
    case("defaults-epochs-true", "experiment", experiment("defaults: {epochs: true}\n"),
         ["exp.yaml", "field 'defaults.epochs'", "not true"]),
    case("defaults-batch-string", "experiment", experiment("defaults: {batch_size: '64'}\n"),
         ["exp.yaml", "field 'defaults.batch_size'", "valid integer"]),
    case("defaults-max-params-bool", "experiment", experiment("defaults: {max_params: true}\n"),
         ["exp.yaml", "field 'defaults.max_params'", "not true"]),
    case("entry-epochs-fraction", "experiment", experiment("", models="models: [{model: s000-m1, epochs: 1.5}]\n"),
         ["exp.yaml", "field 'models.0.epochs'", "valid integer"]),
    case("name-with-space", "experiment", "name: my exp\nmodels: [{model: s000-m1}]\n", ["exp.yaml", "field 'name'", "pattern"]),
    case("unknown-field-seed", "experiment", experiment("seed: 3\n"),
         ["exp.yaml", "field 'seed'", "unknown field", "did you mean 'seeds'?"]),
    case("unknown-zoo-model", "experiment", experiment("", models="models: [{model: s009-m1}]\n"),
         ["exp.yaml", "experiment 'e'", "models[1]", "s009-m1"]),
    case("inline-units-true", "experiment",
         "name: e\nmodels:\n  - spec: {id: t, layers: [{type: Flatten}, {type: Dense, units: true, activation: softmax}]}\n",
         ["exp.yaml", "model 't'", "field 'units'", "not true"]),
    # --- the command line
    case("cli-seed-huge", "cli", None, ["--seed", "less than or equal to 9223372036854775807"],
         args=("train", "s000-m1", "--seed", "100000000000000000000")),
    case("cli-seed-negative", "cli", None, ["--seed", "greater than or equal to 0"], args=("train", "s000-m1", "--seed", "-1")),
    case("cli-epochs-zero", "cli", None, ["--epochs", "greater than or equal to 1"], args=("train", "s000-m1", "--epochs", "0")),
    case("cli-max-params-zero", "cli", None, ["--max-params", "greater than or equal to 1"], args=("train", "s000-m1", "--max-params", "0")),
    case("cli-summary-units-true", "cli", spec(FLATTEN, "{type: Dense, units: true, activation: softmax}"),
         ["m.yaml:5", "field 'units'", "not true"], args=("summary", "{file}")),
    case("cli-summary-duplicate-key", "cli", spec(FLATTEN, "{type: Dense, units: 10, units: 10, activation: softmax}"),
         ["m.yaml:5", "duplicate key 'units'"], args=("summary", "{file}")),
    case("cli-summary-latin1", "cli", b"id: \xff\n", ["m.yaml", "not UTF-8"], args=("summary", "{file}")),
    case("cli-run-seed-1e23", "cli", experiment("seeds: [1e23]\n"), ["exp.yaml", "field 'seeds.0'"],
         args=("run", "{exp}", "--store", "{store}")),
    case("cli-run-bomb", "cli", INLINE_BOMB, ["exp.yaml", "refused"], args=("run", "{exp}", "--store", "{store}")),
    case("cli-run-unknown-dataset", "cli", experiment("dataset: emnist\n"), ["exp.yaml", "unknown dataset 'emnist'"],
         args=("run", "{exp}", "--store", "{store}")),
]


def _error(c: Case, tmp_path: Path) -> str:
    name = "exp.yaml" if c.kind == "experiment" or "{exp}" in c.args else "m.yaml"
    path = tmp_path / name
    if c.folder:
        path.mkdir()
    elif isinstance(c.content, bytes):
        path.write_bytes(c.content)
    elif c.content is not None:
        path.write_text(c.content, encoding="utf-8")
    if c.kind == "cli":
        store = tmp_path / "store"
        args = [a.format(file=path, exp=path, store=store) for a in c.args]
        result = run_cli(*args)
        assert result.exit_code == 2, result
        assert "Traceback" not in result.stderr + result.stdout
        assert len(result.error_lines) == 1, result.stderr
        assert not store.exists(), "a refused experiment must not create or touch the store"
        return result.error_lines[0]
    with pytest.raises(MnistlabError) as info:
        if c.kind == "spec":
            load_spec_file(path)
        else:
            load_experiment(path)
    return str(info.value)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("c", CASES)
def test_malformed_input_is_one_line_naming_its_cause(c: Case, tmp_path: Path) -> None:
    message = _error(c, tmp_path)
    assert "\n" not in message
    missing = [word for word in c.words if word not in message]
    assert not missing, f"{missing} not in: {message}"


def test_the_table_is_large() -> None:
    assert len(CASES) >= 60


@pytest.mark.timeout(10)
def test_billion_laughs_in_an_inline_experiment_spec_fails_fast(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(INLINE_BOMB)
    result = run_cli("run", path, "--store", tmp_path / "store")
    assert result.exit_code == 2 and len(result.error_lines) == 1, result
    assert "exp.yaml" in result.stderr and "billion laughs" in result.stderr
    assert not (tmp_path / "store").exists()
