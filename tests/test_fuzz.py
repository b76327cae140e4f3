"""Property-based tests (Hypothesis, derandomized, bounded): generated specs, experiments and IDX
headers either load, or fail with ONE line that names the file and the field. Any other exception
is a test failure: the code must not catch broad exceptions to make these pass."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mnistlab.data.idx import IMAGES_MAGIC, LABELS_MAGIC, parse_idx, read_idx
from mnistlab.errors import DataError, SpecError
from mnistlab.experiments.definition import load_experiment
from mnistlab.training.limits import check_model, dataset_shape
from mnistlab.spec.layers import LAYER_CLASSES
from mnistlab.spec.parse import load_spec_file
from mnistlab.util.yamlio import parse_yaml

# Bounded so that all fuzz tests together take well under a minute on a 2-core CPU.
FUZZ = settings(derandomize=True, max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# --- values: plausible ones and the implausible ones users (and attackers) write -----------------

SCALARS = st.one_of(
    st.integers(min_value=-3, max_value=40),
    st.sampled_from([0, 1, 2, 3, 10, 28, 784, 10**9, 2**63, -(2**70), 1e23]),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.sampled_from(["relu", "softmax", "same", "valid", "adam", "glorot_uniform", "", "[/]", "x" * 40, "10", "1e3"]),
    st.text(max_size=8),
)
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=4), st.dictionaries(st.sampled_from(["name", "lr", "stddev", "x"]),
                                                                         SCALARS, max_size=3))
LAYER_FIELDS = ["type", "name", "inputs", "filters", "kernel_size", "strides", "padding", "activation", "units", "rate",
                "pool_size", "momentum", "epsilon", "axis", "use_bias", "kernel_initializer", "bogus"]
LAYER_TYPES = st.sampled_from([*LAYER_CLASSES, "Conv3D", "dense", "", "Convolution2D"])


@st.composite
def layers(draw):
    layer = {"type": draw(LAYER_TYPES)}
    for field in draw(st.lists(st.sampled_from(LAYER_FIELDS[1:]), max_size=4, unique=True)):
        layer[field] = draw(VALUES)
    if draw(st.booleans()):
        del layer["type"]
    return layer if draw(st.integers(0, 20)) else draw(SCALARS)


PLAUSIBLE_TAIL = [{"type": "Flatten"}, {"type": "Dense", "units": 10, "activation": "softmax"}]


@st.composite
def specs(draw):
    spec = {"id": draw(st.one_of(st.just("m"), SCALARS))}
    body = draw(st.lists(layers(), max_size=4))
    spec["layers"] = body + (PLAUSIBLE_TAIL if draw(st.booleans()) else [])
    if draw(st.booleans()):
        spec["input"] = draw(st.one_of(st.just([28, 28, 1]), st.just([784]), st.lists(SCALARS, max_size=4), SCALARS))
    if draw(st.booleans()):
        spec["training"] = draw(st.dictionaries(st.sampled_from(["optimizer", "batch_size", "epochs", "lr"]), VALUES, max_size=3))
    for extra in draw(st.lists(st.sampled_from(["description", "reference", "decisions", "idd"]), max_size=2, unique=True)):
        spec[extra] = draw(VALUES)
    return spec


def _dump(data) -> str:
    return yaml.safe_dump(data, allow_unicode=True)


def _assert_one_line(message: str, file: str) -> None:
    assert "\n" not in message, message
    assert file in message, message


@FUZZ
@given(spec=specs())
def test_generated_specs_load_or_fail_in_one_line(tmp_path_factory, spec):
    path = tmp_path_factory.mktemp("fuzz") / "spec.yaml"
    path.write_text(_dump(spec), encoding="utf-8")
    try:
        models = load_spec_file(path)
    except SpecError as exc:
        _assert_one_line(str(exc), "spec.yaml")
        assert "field '" in str(exc) or "must be a mapping" in str(exc), str(exc)
        return
    for model in models:  # a valid spec: checking it against MNIST must also end cleanly
        try:
            check_model(model, dataset_shape("mnist"), model.training.batch_size)
        except SpecError as exc:
            _assert_one_line(str(exc), "spec.yaml")
            assert "field '" in str(exc), str(exc)


EXPERIMENT_FIELDS = st.fixed_dictionaries(
    {"name": st.one_of(st.just("fz"), SCALARS)},
    optional={
        "dataset": st.one_of(st.sampled_from(["mnist", "fashion-mnist", "mnits", "./nowhere"]), SCALARS),
        "protocol": st.one_of(st.sampled_from(["split", "test"]), SCALARS),
        "seeds": st.one_of(st.lists(SCALARS, max_size=3), SCALARS),
        "repeats": SCALARS,
        "defaults": st.dictionaries(st.sampled_from(["epochs", "batch_size", "device", "precision", "train_limit",
                                                     "max_params", "max_activation_mib", "oops"]), VALUES, max_size=3),
        "models": st.lists(st.one_of(
            st.fixed_dictionaries({"model": st.sampled_from(["s000-m1", "s004-m1", "nope"])},
                                  optional={"epochs": SCALARS, "batch_size": SCALARS, "optimizer": VALUES}),
            st.fixed_dictionaries({"spec": specs()}),
            SCALARS,
        ), max_size=2),
        "bogus": VALUES,
    },
)


@FUZZ
@given(raw=EXPERIMENT_FIELDS)
@example(raw={"name": "\n"})  # found by a wider run: a line break in a quoted name
def test_generated_experiments_load_or_fail_in_one_line(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("fuzz") / "exp.yaml"
    path.write_text(_dump(raw), encoding="utf-8")
    try:
        load_experiment(path)
    except (SpecError, DataError) as exc:
        _assert_one_line(str(exc), "exp.yaml")
        assert "field '" in str(exc) or "must be a mapping" in str(exc), str(exc)


@FUZZ
@given(data=st.binary(max_size=64))
def test_arbitrary_bytes_as_yaml_load_or_fail_in_one_line(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "raw.yaml"
    path.write_bytes(data)
    try:
        load_spec_file(path)
    except SpecError as exc:
        _assert_one_line(str(exc), "raw.yaml")


@st.composite
def idx_files(draw):
    magic = draw(st.one_of(st.sampled_from([IMAGES_MAGIC, LABELS_MAGIC]), st.integers(0, 2**32 - 1)))
    ndim = {IMAGES_MAGIC: 3, LABELS_MAGIC: 1}.get(magic, draw(st.integers(0, 4)))
    dims = draw(st.lists(st.one_of(st.integers(0, 6), st.sampled_from([28, 2**31, 2**32 - 1])), min_size=ndim, max_size=ndim))
    header = struct.pack(f">I{ndim}I", magic, *dims)
    cut = draw(st.integers(0, len(header)))
    header = header[:cut] if draw(st.integers(0, 4)) == 0 else header
    expected = int(np.prod(dims, dtype=object)) if dims else 0
    size = draw(st.one_of(st.just(min(expected, 300)), st.integers(0, 300)))
    return header + bytes(size)


@FUZZ
@given(data=idx_files())
@example(data=struct.pack(">IIII", IMAGES_MAGIC, 2**32 - 1, 2**32 - 1, 0))  # found by a wider run: dims overflow
def test_generated_idx_headers_parse_or_fail_in_one_line(data):
    try:
        array = parse_idx(data, "fuzz-idx3-ubyte")
    except DataError as exc:
        _assert_one_line(str(exc), "fuzz-idx3-ubyte")
        return
    assert array.dtype == np.uint8 and array.ndim in (1, 3)


@FUZZ
@given(data=idx_files(), compress=st.booleans())
def test_generated_idx_files_read_or_fail_in_one_line(tmp_path_factory, data, compress):
    folder = tmp_path_factory.mktemp("idx")
    path = folder / ("t10k-images-idx3-ubyte.gz" if compress else "t10k-images-idx3-ubyte")
    path.write_bytes(gzip.compress(data) if compress else data)
    try:
        read_idx(path)
    except DataError as exc:
        _assert_one_line(str(exc), str(path))


@FUZZ
@given(text=st.text(alphabet=st.sampled_from("ab: -[]{}&*!,\n'\"#|>?%@`"), max_size=40))
def test_generated_yaml_text_parses_or_fails_in_one_line(text):
    try:
        parse_yaml(text, "gen.yaml")
    except SpecError as exc:
        _assert_one_line(str(exc), "gen.yaml")
