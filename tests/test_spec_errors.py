"""Malformed specs through the real CLI: exit status 2 and ONE line naming file:line, model, layer,
field and the problem - never a traceback.

Every spec is written to a YAML file laid out so that line numbers are known: the model mapping
starts on line 1 and layer i is on line 3 + i.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mnistlab.errors import SpecError
from mnistlab.spec.parse import load_spec_file, parse_model
from cli_driver import run_cli

IMAGE = "[28, 28, 1]"
FLAT = "[784]"
SOFTMAX = "{type: Dense, units: 10, activation: softmax}"
FLATTEN = "{type: Flatten}"


def spec_yaml(layers: list[str], input_shape: str = IMAGE, extra: str = "", model_id: str = "bad-model") -> str:
    """A one-model spec file; layer i (1-based) is on line 3 + i, the model on line 1."""
    body = "".join(f"  - {layer}\n" for layer in layers)
    return f"id: {model_id}\ninput: {input_shape}\nlayers:\n{body}{extra}"


def layer_line(index: int) -> int:
    return 3 + index


@dataclass
class Case:
    text: str | None  # None: the file is not created
    fragments: list[str]  # all must appear in the error line
    line: int | None = None  # expected 'file:LINE'; None: just the file
    model: bool = True  # the model id appears
    layer: str | None = None  # 'layer N (name' / 'layer N (' fragment, when a layer is involved
    extra_checks: list[str] = field(default_factory=list)


def case(id_: str, *args, marks=(), **kwargs):
    return pytest.param(Case(*args, **kwargs), id=id_, marks=marks)


CASES = [
    # --- unknown layer types: type names are case-sensitive, suggestions are case-insensitive
    case("unknown-type-case", spec_yaml(["{type: Conv2d, filters: 4, kernel_size: 3}", FLATTEN, SOFTMAX]),
         ["field 'type'", "unknown layer 'Conv2d'", "did you mean 'Conv2D'?"], line=layer_line(1), layer="layer 1 ("),
    case("unknown-type-dense2", spec_yaml([FLATTEN, "{name: hidden, type: Dense2, units: 32}", SOFTMAX]),
         ["field 'type'", "unknown layer 'Dense2'", "did you mean 'Dense'?"], line=layer_line(2), layer="layer 2 (hidden"),
    case("unknown-type-maxpool", spec_yaml(["{type: MaxPool, pool_size: 2}", FLATTEN, SOFTMAX]),
         ["field 'type'", "unknown layer 'MaxPool'", "did you mean 'MaxPooling2D'?"], line=layer_line(1), layer="layer 1 ("),
    case("unknown-type-conv3d", spec_yaml(["{type: Conv3D, filters: 4, kernel_size: 3}", FLATTEN, SOFTMAX]),
         ["field 'type'", "unknown layer 'Conv3D'", "did you mean 'Conv2D'?"], line=layer_line(1), layer="layer 1 ("),
    case("missing-type", spec_yaml([FLATTEN, "{units: 10, activation: softmax}"]),
         ["field 'type'", "is required"], line=layer_line(2), layer="layer 2 ("),
    # --- unknown arguments
    case("unknown-arg-stride", spec_yaml(["{name: c1, type: Conv2D, filters: 4, kernel_size: 3, stride: 2}", FLATTEN, SOFTMAX]),
         ["field 'stride'", "unknown argument 'stride'", "did you mean 'strides'?"], line=layer_line(1), layer="layer 1 (c1, Conv2D)"),
    case("unknown-arg-activaton", spec_yaml([FLATTEN, "{name: out, type: Dense, units: 10, activaton: softmax}"]),
         ["field 'activaton'", "unknown argument 'activaton'", "did you mean 'activation'?"], line=layer_line(2),
         layer="layer 2 (out, Dense)"),
    case("unknown-arg-filter", spec_yaml(["{name: c1, type: Conv2D, filter: 4, kernel_size: 3}", FLATTEN, SOFTMAX]),
         ["field 'filter'", "unknown argument 'filter'", "did you mean 'filters'?"], line=layer_line(1),
         layer="layer 1 (c1, Conv2D)"),
    case("unknown-arg-kernal-size", spec_yaml(["{name: c1, type: Conv2D, filters: 4, kernal_size: 3}", FLATTEN, SOFTMAX]),
         ["field 'kernal_size'", "unknown argument 'kernal_size'", "did you mean 'kernel_size'?"], line=layer_line(1),
         layer="layer 1 (c1, Conv2D)"),
    # --- bad argument values
    case("kernel-larger-than-input", spec_yaml(["{type: Conv2D, filters: 4, kernel_size: 29}", FLATTEN, SOFTMAX]),
         ["field 'kernel_size'", "kernel 29x29 is larger than its 28x28 input", "'valid'"], line=layer_line(1),
         layer="layer 1 (conv2d_1, Conv2D)"),
    case("pool-larger-than-input",
         spec_yaml(["{type: Conv2D, filters: 4, kernel_size: 3, strides: 3}", "{type: MaxPooling2D, pool_size: 10}", FLATTEN, SOFTMAX]),
         ["field 'pool_size'", "pool 10x10 is larger than its 9x9 input"], line=layer_line(2),
         layer="layer 2 (max_pooling2d_1, MaxPooling2D)"),
    case("zero-filters", spec_yaml(["{name: c1, type: Conv2D, filters: 0, kernel_size: 3}", FLATTEN, SOFTMAX]),
         ["field 'filters'", "greater than 0"], line=layer_line(1), layer="layer 1 (c1, Conv2D)"),
    case("negative-units", spec_yaml([FLATTEN, "{name: hidden, type: Dense, units: -5}", SOFTMAX]),
         ["field 'units'", "greater than 0"], line=layer_line(2), layer="layer 2 (hidden, Dense)"),
    case("kernel-size-zero", spec_yaml(["{name: c1, type: Conv2D, filters: 4, kernel_size: 0}", FLATTEN, SOFTMAX]),
         ["field 'kernel_size", "greater than 0"], line=layer_line(1), layer="layer 1 (c1, Conv2D)"),
    case("strides-zero", spec_yaml(["{name: p1, type: MaxPooling2D, strides: [2, 0]}", FLATTEN, SOFTMAX]),
         ["field 'strides", "greater than 0"], line=layer_line(1), layer="layer 1 (p1, MaxPooling2D)"),
    case("dropout-rate-1.5", spec_yaml([FLATTEN, "{name: drop, type: Dropout, rate: 1.5}", SOFTMAX]),
         ["field 'rate'", "less than 1"], line=layer_line(2), layer="layer 2 (drop, Dropout)"),
    case("unknown-padding", spec_yaml(["{name: c1, type: Conv2D, filters: 4, kernel_size: 3, padding: full}", FLATTEN, SOFTMAX]),
         ["field 'padding'", "'valid' or 'same'"], line=layer_line(1), layer="layer 1 (c1, Conv2D)"),
    case("unknown-activation", spec_yaml([FLATTEN, "{name: out, type: Dense, units: 10, activation: softmaxx}"]),
         ["field 'activation'", "'softmax'"], line=layer_line(2), layer="layer 2 (out, Dense)"),
    case("unknown-initializer",
         spec_yaml([FLATTEN, "{name: out, type: Dense, units: 10, activation: softmax, kernel_initializer: glorot_unifrom}"]),
         ["field 'kernel_initializer", "unknown initializer 'glorot_unifrom'", "did you mean 'glorot_uniform'?"],
         line=layer_line(2), layer="layer 2 (out, Dense)"),
    case("unknown-initializer-argument",
         spec_yaml([FLATTEN, "{name: out, type: Dense, units: 10, activation: softmax, kernel_initializer: {name: random_normal, std: 0.1}}"]),
         ["field 'kernel_initializer.std'", "unknown argument 'std'"], line=layer_line(2), layer="layer 2 (out, Dense)"),
    # --- model structure
    case("softmax-not-last", spec_yaml([FLATTEN, "{type: Dense, units: 32, activation: softmax}", SOFTMAX]),
         ["field 'activation'", "softmax must be the last layer"], line=layer_line(2), layer="layer 2 (dense_1, Dense)"),
    case("last-not-softmax", spec_yaml([FLATTEN, "{type: Dense, units: 10, activation: relu}"]),
         ["field 'activation'", "last layer must end in softmax"], line=layer_line(2), layer="layer 2 (dense_1, Dense)"),
    case("output-not-10", spec_yaml([FLATTEN, "{type: Dense, units: 12, activation: softmax}"]),
         ["field 'units'", "must be 10 classes", "12"], line=layer_line(2), layer="layer 2 (dense_1, Dense)"),
    case("dense-on-image", spec_yaml(["{type: Conv2D, filters: 4, kernel_size: 3}", SOFTMAX]),
         ["field 'inputs'", "un-flattened (26, 26, 4)", "Flatten"], line=layer_line(2), layer="layer 2 (dense_1, Dense)"),
    case("conv-on-flat-input", spec_yaml(["{type: Conv2D, filters: 4, kernel_size: 3}", FLATTEN, SOFTMAX], input_shape=FLAT),
         ["field 'inputs'", "needs an image input", "(784,)"], line=layer_line(1), layer="layer 1 (conv2d_1, Conv2D)"),
    case("pool-on-flat-input", spec_yaml(["{type: MaxPooling2D}", SOFTMAX], input_shape=FLAT),
         ["field 'inputs'", "needs an image input"], line=layer_line(1), layer="layer 1 (max_pooling2d_1, MaxPooling2D)"),
    case("branch-input-missing",
         spec_yaml([
             "{name: tower_1, type: Conv2D, filters: 4, kernel_size: 1, inputs: [input]}",
             "{name: tower_2, type: Conv2D, filters: 4, kernel_size: 1, inputs: [tower_3]}",
             "{name: merged, type: Concatenate, inputs: [tower_1, tower_2]}", FLATTEN, SOFTMAX]),
         ["field 'inputs'", "no layer named 'tower_3'", "did you mean 'tower_1'?"], line=layer_line(2),
         layer="layer 2 (tower_2, Conv2D)"),
    case("concatenate-mismatch",
         spec_yaml([
             "{name: a, type: Conv2D, filters: 4, kernel_size: 3, inputs: [input]}",
             "{name: b, type: Conv2D, filters: 4, kernel_size: 5, inputs: [input]}",
             "{name: merged, type: Concatenate, inputs: [a, b]}", FLATTEN, SOFTMAX]),
         ["field 'inputs'", "(26, 26, 4), (24, 24, 4) differ outside axis -1"], line=layer_line(3),
         layer="layer 3 (merged, Concatenate)"),
    case("concatenate-one-input",
         spec_yaml(["{name: a, type: Conv2D, filters: 4, kernel_size: 3}", "{name: merged, type: Concatenate, inputs: [a]}", FLATTEN, SOFTMAX]),
         ["field 'inputs'", "two or more inputs"], line=layer_line(2), layer="layer 2 (merged, Concatenate)"),
    case("branch-never-used",
         spec_yaml([
             "{name: a, type: Conv2D, filters: 4, kernel_size: 3, inputs: [input]}",
             "{name: b, type: Conv2D, filters: 4, kernel_size: 3, inputs: [input]}", FLATTEN, SOFTMAX]),
         ["field 'inputs'", "never used"], line=layer_line(1), layer="layer 1 (a, Conv2D)"),
    case("duplicate-layer-name",
         spec_yaml(["{name: c, type: Conv2D, filters: 4, kernel_size: 3}", "{name: c, type: Conv2D, filters: 4, kernel_size: 3}", FLATTEN, SOFTMAX]),
         ["field 'name'", "'c' is already used"], line=layer_line(2), layer="layer 2 (c, Conv2D)"),
    case("duplicate-default-name",
         spec_yaml(["{name: conv2d_2, type: Conv2D, filters: 4, kernel_size: 3}", "{type: Conv2D, filters: 4, kernel_size: 3}", FLATTEN, SOFTMAX]),
         ["field 'name'", "'conv2d_2' is already used"], line=layer_line(2), layer="layer 2 (conv2d_2, Conv2D)"),
    # --- model and training fields
    case("unknown-optimizer", spec_yaml([FLATTEN, SOFTMAX], extra="training: {optimizer: adamm}\n"),
         ["field 'training.optimizer'", "unknown optimizer 'adamm'", "did you mean 'adam'?"], line=1),
    case("unknown-optimizer-argument", spec_yaml([FLATTEN, SOFTMAX], extra="training: {optimizer: {name: adam, betta_1: 0.9}}\n"),
         ["field 'training.optimizer.betta_1'", "adam has no argument 'betta_1'", "did you mean 'beta_1'?"], line=1),
    case("optimizer-without-name", spec_yaml([FLATTEN, SOFTMAX], extra="training: {optimizer: {lr: 0.1}}\n"),
         ["field 'training.optimizer'", "needs a 'name'"], line=1),
    case("batch-size-zero", spec_yaml([FLATTEN, SOFTMAX], extra="training: {batch_size: 0}\n"),
         ["field 'training.batch_size'", "greater than 0"], line=1),
    case("unknown-model-field", spec_yaml([FLATTEN, SOFTMAX], extra="optimiser: adam\n"),
         ["field 'optimiser'", "unknown field"], line=1),
    case("unknown-model-field-typo", "id: bad-model\ninput: [784]\nlyers:\n  - " + SOFTMAX + "\n",
         ["field 'lyers'", "unknown field", "did you mean 'layers'?"], line=1),
    case("bad-input-rank", spec_yaml([FLATTEN, SOFTMAX], input_shape="[28, 28]"),
         ["field 'input'", "[28, 28, 1] or [784]"], line=1),
    case("no-layers", "id: bad-model\ninput: [784]\nlayers: []\n",
         ["field 'layers'", "non-empty list"], line=1),
    case("duplicate-model-id",
         "models:\n  - id: twin\n    input: [784]\n    layers: [" + SOFTMAX + "]\n"
         "  - id: twin\n    input: [784]\n    layers: [" + SOFTMAX + "]\n",
         ["model 'twin'", "field 'id'", "duplicate model id"], line=5, model=False),
    # --- the file itself
    case("invalid-yaml", "id: bad-model\ninput: [784]\nlayers:\n  - {type: Dense, units: 10, activation: softmax\n  - {type: Flatten}\n",
         ["invalid YAML"], line=5, model=False),
    case("invalid-yaml-indentation", "id: bad-model\ninput: [784]\nlayers:\n  - type: Dense\n     units: 10\n",
         ["invalid YAML", "mapping values are not allowed"], line=5, model=False),
    case("missing-file", None, ["no such file"], model=False),
]



def write(tmp_path: Path, text: str | None, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    return path


@pytest.mark.parametrize("c", CASES)
def test_malformed_spec_is_one_line_exit_2(c: Case, tmp_path, monkeypatch, capsys):
    path = write(tmp_path, c.text)
    code, out, err = run_cli("summary", str(path))
    assert code == 2, (out, err)
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    message = lines[0]
    assert message.startswith("error: ")
    assert (f"{path}:{c.line}:" if c.line is not None else f"{path}:") in message
    if c.model:
        assert "model 'bad-model'" in message
    if c.layer:
        assert c.layer in message
    for fragment in c.fragments:
        assert fragment in message


def test_table_is_large_enough():
    assert len(CASES) >= 18


# --- line numbers --------------------------------------------------------------------------------

MULTI = """\
# two models; the second's third layer is wrong
models:
  - id: fine
    input: [784]
    layers:
      - {type: Dense, units: 10, activation: softmax}

  - id: broken
    input: [28, 28, 1]
    layers:
      - type: Conv2D
        filters: 8
        kernel_size: 3
      - type: Flatten
      - type: Dense
        units: 10
        activation: softmax
        kernal_initializer: he_normal
"""


def test_parse_error_in_block_yaml_names_the_layers_line(tmp_path):
    path = write(tmp_path, MULTI)
    with pytest.raises(SpecError) as info:
        load_spec_file(path)
    message = str(info.value)
    assert message.startswith(f"{path}:15: model 'broken': layer 3 (")
    assert "field 'kernal_initializer'" in message
    assert "did you mean 'kernel_initializer'?" in message


def test_shape_error_in_block_yaml_names_the_layers_line(tmp_path):
    path = write(tmp_path, MULTI.replace("        kernal_initializer: he_normal\n", "").replace("- type: Flatten", "- type: Dropout\n        rate: 0.5"))
    with pytest.raises(SpecError) as info:
        load_spec_file(path)
    assert str(info.value).startswith(f"{path}:16: model 'broken': layer 3 (dense_1, Dense): field 'inputs': Dense on an un-flattened")


def test_model_error_names_the_models_line(tmp_path):
    path = write(tmp_path, MULTI.replace("    input: [28, 28, 1]", "    input: [28, 28, 1]\n    epochs: 3"))
    with pytest.raises(SpecError) as info:
        load_spec_file(path)
    assert str(info.value).startswith(f"{path}:8: model 'broken': field 'epochs': unknown field")


def test_cli_names_file_and_model_in_a_multi_model_file(tmp_path, monkeypatch, capsys):
    path = write(tmp_path, MULTI)
    code, _, err = run_cli("summary", f"{path}:broken")
    assert code == 2
    assert err.strip().startswith(f"error: {path}:15: model 'broken'")


def test_python_dicts_say_python(tmp_path):
    with pytest.raises(SpecError, match=r"^<python>: model 'p': layer 1 \(conv2d_1, Conv2D\): field 'inputs'"):
        parse_model({"id": "p", "input": [784], "layers": [{"type": "Conv2D", "filters": 1, "kernel_size": 1}]})


# --- accepted spellings (the other side of case sensitivity) ----------------------------------


def test_keras_spellings_are_accepted(tmp_path, monkeypatch, capsys):
    text = spec_yaml(
        [
            "{type: Convolution2D, filters: 4, kernel_size: 3, padding: SAME, activation: ReLU, kernel_initializer: HeNormal}",
            "{type: MaxPool2D}",
            "{type: BatchNorm}",
            FLATTEN,
            "{type: Dense, units: 10, activation: Softmax, kernel_initializer: {name: RandomNormal, stddev: 0.1}}",
        ],
        extra="training: {optimizer: {name: Adam, learning_rate: 0.01}}\n",
    )
    code, out, err = run_cli("summary", str(write(tmp_path, text)))
    assert code == 0, err
    assert "max_pooling2d_1 (MaxPooling2D)" in out
    assert "batch_normalization_1 (BatchNormalization)" in out


# --- regressions of issues found while writing these tests ---------------------------------------------------


def test_parse_errors_name_unnamed_layers_by_their_default_name(tmp_path, monkeypatch, capsys):
    path = write(tmp_path, spec_yaml(["{type: Conv2D, filters: 4, kernel_size: 3}", FLATTEN, "{type: Dense, units: -1}", SOFTMAX]))
    code, _, err = run_cli("summary", str(path))
    assert code == 2
    assert "layer 3 (dense_1, Dense): field 'units'" in err


def test_error_line_keeps_brackets_in_the_path(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "[run1]"
    folder.mkdir()
    path = write(folder, spec_yaml([SOFTMAX]))
    code, _, err = run_cli("summary", str(path))
    assert code == 2
    assert str(path) in err


def test_error_with_closing_tag_text_is_still_one_line(tmp_path, monkeypatch, capsys):
    path = write(tmp_path, spec_yaml([FLATTEN, "{type: '[/Dense]', units: 10, activation: softmax}"]))
    code, _, err = run_cli("summary", str(path))
    assert code == 2
    assert "unknown layer '[/Dense]'" in err


@pytest.mark.parametrize(
    ("initializer", "wanted", "unwanted"),
    [("{name: random_normal, stdev: 0.1}", "did you mean 'stddev'?", None),
     ("{name: random_normal, unit: 0.1}", None, "did you mean 'units'?")],
    ids=["stdev", "unit"],
)
def test_initializer_argument_suggestions(initializer, wanted, unwanted, tmp_path, monkeypatch, capsys):
    path = write(tmp_path, spec_yaml([FLATTEN, f"{{type: Dense, units: 10, activation: softmax, kernel_initializer: {initializer}}}"]))
    code, _, err = run_cli("summary", str(path))
    assert code == 2
    assert "unknown argument" in err
    if wanted:
        assert wanted in err
    if unwanted:
        assert unwanted not in err


def test_training_field_typo_suggests(tmp_path, monkeypatch, capsys):
    path = write(tmp_path, spec_yaml([FLATTEN, SOFTMAX], extra="training: {epoch: 3}\n"))
    code, _, err = run_cli("summary", str(path))
    assert code == 2
    assert "field 'training.epoch'" in err
    assert "did you mean 'epochs'?" in err
