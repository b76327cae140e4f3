"""Files from strangers are data: a table of inputs crafted as an attacker would craft them.

Each case builds its hostile input in a fresh folder and runs one command on it. Every one must end
cleanly: ONE error line naming the cause (or, where the input is harmless, success), the right exit
code, no traceback, nothing written outside the requested output, nothing read from outside the
file, no device or FIFO touched. Cases that aimed at a machine's memory or time run under a 10 s
per-test ceiling (pytest-timeout) rather than timing assertions.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from cli_driver import run_cli
from test_text_safety import hostile_store  # noqa: F401  (a fixture: a store full of hostile strings)

SECRET = b"TOP-SECRET-BYTES-" * 4  # 68 bytes that must never come out of a weights import
MLP = "id: mlp\ninput: [784]\nlayers:\n  - {type: Dense, units: 10, activation: softmax}\n"


@dataclass
class Hostile:
    """Build the input under the folder given and return the command's arguments."""

    build: Callable[[Path], list[str]]
    words: list[str]  # each must be in the one error line
    code: int = 2
    may_write: tuple[str, ...] = ()  # names under the folder the command may create


def hostile(id_: str, build: Callable[[Path], list[str]], words: list[str], **kwargs) -> object:
    return pytest.param(Hostile(build, words, **kwargs), id=id_)


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under root with its kind and size (lstat: links are not followed)."""
    found = {}
    for path in root.rglob("*"):
        info = path.lstat()
        found[str(path.relative_to(root))] = (stat.S_IFMT(info.st_mode), info.st_size if stat.S_ISREG(info.st_mode) else 0)
    return found


# --- HDF5 weights --------------------------------------------------------------------------------

def _keras_h5(path: Path, edit: Callable[..., None] | None = None) -> Path:
    """A Keras 2 weights file for MLP (one Dense layer), then `edit(file, layer_group)`."""
    h5py = pytest.importorskip("h5py")
    with h5py.File(path, "w") as handle:
        handle.attrs["layer_names"] = [b"dense_1"]
        layer = handle.create_group("dense_1")
        layer.attrs["weight_names"] = [b"dense_1/kernel:0", b"dense_1/bias:0"]
        inner = layer.create_group("dense_1")
        inner.create_dataset("kernel:0", data=np.zeros((784, 10), np.float32))
        if edit is None:
            inner.create_dataset("bias:0", data=np.zeros(10, np.float32))
        else:
            edit(handle, inner)
    return path


def _weights_case(edit: Callable[..., None]) -> Callable[[Path], list[str]]:
    def build(folder: Path) -> list[str]:
        (folder / "secret.bin").write_bytes(SECRET)
        (folder / "m.yaml").write_text(MLP)
        _keras_h5(folder / "w.h5", lambda handle, inner: edit(folder, handle, inner))
        return ["import-keras-weights", folder / "m.yaml", folder / "w.h5", "--output", folder / "out"]
    return build


def _external_storage(folder: Path, handle, inner) -> None:
    inner.create_dataset("bias:0", shape=(10,), dtype="f4", external=[(str(folder / "secret.bin"), 0, 40)])


def _external_link(folder: Path, handle, inner) -> None:
    import h5py

    with h5py.File(folder / "other.h5", "w") as other:
        other.create_dataset("bias", data=np.ones(10, np.float32))
    inner["bias:0"] = h5py.ExternalLink(str(folder / "other.h5"), "/bias")


def _soft_link_out(folder: Path, handle, inner) -> None:
    import h5py

    # A full save (model.save) keeps weights under /model_weights: a link out of it is refused.
    del handle.attrs["layer_names"]
    handle.create_dataset("elsewhere", data=np.ones(10, np.float32))
    weights = handle.create_group("model_weights")
    weights.attrs["layer_names"] = [b"dense_1"]
    handle.move("dense_1", "model_weights/dense_1")
    handle["model_weights/dense_1/dense_1"]["bias:0"] = h5py.SoftLink("/elsewhere")


def _virtual(folder: Path, handle, inner) -> None:
    import h5py

    layout = h5py.VirtualLayout(shape=(10,), dtype="f4")
    layout[:] = h5py.VirtualSource(str(folder / "other.h5"), "bias", shape=(10,))
    inner.create_virtual_dataset("bias:0", layout)


def _scaleoffset(folder: Path, handle, inner) -> None:
    inner.create_dataset("bias:0", data=np.zeros(10, np.float32), scaleoffset=2, chunks=(10,))


def _huge_fill(folder: Path, handle, inner) -> None:
    inner.create_dataset("bias:0", shape=(100_000, 100_000), dtype="f4", fillvalue=1.0)  # 40 GB declared


def _missing_group(folder: Path, handle, inner) -> None:
    inner.create_dataset("bias:0", data=np.zeros(10, np.float32))
    handle.attrs["layer_names"] = [b"dense_1", b"no_such_layer"]


def _non_list_names(folder: Path, handle, inner) -> None:
    inner.create_dataset("bias:0", data=np.zeros(10, np.float32))
    handle.attrs["layer_names"] = 5


def _text_dataset(folder: Path, handle, inner) -> None:
    import h5py

    inner.create_dataset("bias:0", data=np.array([b"x"] * 10), dtype=h5py.string_dtype())


HDF5_CASES = [
    hostile("h5-external-storage", _weights_case(_external_storage), ["w.h5", "dense_1/dense_1/bias:0", "external storage"]),
    hostile("h5-external-link", _weights_case(_external_link), ["w.h5", "dense_1/bias:0", "external link"]),
    hostile("h5-soft-link-out", _weights_case(_soft_link_out), ["w.h5", "dense_1/bias:0", "soft link", "/elsewhere"]),
    hostile("h5-virtual-dataset", _weights_case(_virtual), ["w.h5", "dense_1/bias:0", "virtual dataset"]),
    hostile("h5-scaleoffset-filter", _weights_case(_scaleoffset), ["w.h5", "dense_1/bias:0", "filter 6"]),
    hostile("h5-40GB-fill-value", _weights_case(_huge_fill), ["w.h5", "dense_1/bias:0", "100000", "refused before reading"]),
    hostile("h5-layer-names-missing-group", _weights_case(_missing_group), ["w.h5", "no_such_layer", "does not hold"]),
    hostile("h5-layer-names-not-a-list", _weights_case(_non_list_names), ["w.h5", "layer_names", "list of names"]),
    hostile("h5-text-dataset", _weights_case(_text_dataset), ["w.h5", "dense_1/bias:0", "not numbers"]),
]


# --- output paths: only new paths and regular files are replaced ---------------------------------

KERAS_CODE = ("import keras\nfrom keras import layers\nmodel = keras.Sequential()\n"
              "model.add(layers.Dense(10, input_shape=(784,), activation='softmax'))\n")


def _special(folder: Path, kind: str) -> Path:
    """A FIFO, a character device (made here, never a real one), a symlink or a folder at `folder/target`."""
    target = folder / "target"
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "device":
        try:
            os.mknod(target, stat.S_IFCHR | 0o600, os.makedev(1, 3))
        except (PermissionError, OSError):
            pytest.skip("creating a device node is not permitted here")
    elif kind == "symlink":
        (folder / "elsewhere.txt").write_text("keep me")
        target.symlink_to(folder / "elsewhere.txt")
    elif kind == "folder":
        target.mkdir()
    elif kind == "file":
        target.write_text("an existing file")
    return target


def model_folder(folder: Path) -> Path:
    """A small trained-model folder (an MLP, random weights) to run predict, evaluate and export on."""
    from mnistlab.nn.build import build_model
    from mnistlab.data.datasets import DATASETS
    from mnistlab.trained.folder import save_model
    from mnistlab.spec.parse import parse_model

    return save_model(folder / "model", build_model(parse_model({"id": "mlp", "input": [784], "layers": [
        {"type": "Dense", "units": 10, "activation": "softmax"}]})), DATASETS["mnist"], 0, {})


def _empty_store(folder: Path) -> Path:
    from mnistlab.runs.store import RunStore

    RunStore(folder / "store").close()
    return folder / "store"


def _output_case(command: str, kind: str) -> Callable[[Path], list[str]]:
    def build(folder: Path) -> list[str]:
        target = _special(folder, kind)
        if command == "import-keras":
            (folder / "m.py").write_text(KERAS_CODE)
            return ["import-keras", folder / "m.py", "--output", target]
        if command == "export":
            return ["export", model_folder(folder), "--format", "safetensors", "--output", target]
        if command == "reproduction":
            return ["reproduction", "--store", _empty_store(folder), "--out", target]
        (folder / "m.yaml").write_text(MLP)
        _keras_h5(folder / "w.h5")
        return ["import-keras-weights", folder / "m.yaml", folder / "w.h5", "--output", target]
    return build


_KIND_WORDS = {"fifo": "is a FIFO", "device": "is a character device", "symlink": "is a symbolic link",
               "folder": "is a folder", "file": "is a file, not a folder"}
def _train_out(kind: str) -> Callable[[Path], list[str]]:
    def build(folder: Path) -> list[str]:
        from mnistlab.data.synthetic import synthetic_dataset, write_dataset

        target = _special(folder, kind)
        (folder / "m.yaml").write_text(MLP)
        data = write_dataset(synthetic_dataset(n_train=100, n_test=20), folder / "data")
        return ["train", folder / "m.yaml", "--dataset", data, "--device", "cpu", "--epochs", "1", "--quiet", "--out", target]
    return build


OUTPUT_CASES = [
    hostile(f"train-out-{kind}", _train_out(kind), ["target", _KIND_WORDS[kind].replace("a file, not a folder", "a file"),
                                                    "refused"], may_write=("data",))
    for kind in ("fifo", "symlink", "file")
] + [
    hostile(f"{command}-output-{kind}", _output_case(command, kind), ["target", _KIND_WORDS[kind], "refused"])
    for command, kinds in (("import-keras", ("fifo", "device", "symlink", "folder")),
                           ("export", ("fifo", "device", "symlink")),
                           ("reproduction", ("fifo", "device", "symlink", "folder")),
                           ("import-keras-weights", ("fifo", "file", "symlink")))
    for kind in kinds
]


def _read_command(args: list[str]) -> Callable[[Path], list[str]]:
    def build(folder: Path) -> list[str]:
        return [arg.format(new=folder / "new-store", store=_empty_store(folder) if "{store}" in arg else "")
                for arg in args]
    return build


READ_CASES = [
    hostile(f"{args[0]}-never-creates-a-store", _read_command([*args, "--store", "{new}"]), ["new-store", "no run store"])
    for args in (["show", "1"], ["ls"], ["ls", "quick"], ["compare", "1", "2"], ["report", "quick"], ["conclusions", "quick"],
                 ["export-runs", "quick", "{new}-tb", "--to", "tensorboard"],
                 ["export-runs", "quick", "{new}-runs.tar.xz", "--to", "archive"])
] + [
    hostile("export-runs-unknown-experiment-leaves-no-folder",
            lambda folder: ["export-runs", "nope", folder / "tb", "--to", "tensorboard", "--store", _empty_store(folder)],
            ["no runs of experiment 'nope'"], may_write=("store",)),
]


# --- factor grids: counted and bounded before they are built --------------------------------------

def _experiment(body: str) -> Callable[[Path], list[str]]:
    def build(folder: Path) -> list[str]:
        (folder / "exp.yaml").write_text(f"name: e\nmodels:\n  - model: s004-m2\n{body}")
        return ["run", folder / "exp.yaml", "--store", folder / "new-store"]
    return build


def _levels(n: int) -> str:
    return "[" + ", ".join(str(0.01 * i) for i in range(n)) + "]"


FACTOR_CASES = [
    hostile("grid-1e8-variants", _experiment("    vary: {" + ", ".join(f"f{i}: {{edit: dropout, levels: {_levels(10)}}}"
                                                                     for i in range(8)) + "}\n"),
            ["exp.yaml", "100,000,000 variants", "over the limit", "max_variants"]),
    hostile("grid-1e6-variants", _experiment("    vary: {" + ", ".join(f"f{i}: {{edit: dropout, levels: {_levels(10)}}}"
                                                                     for i in range(6)) + "}\n"),
            ["exp.yaml", "1,000,000 variants", "over the limit"]),
    hostile("depth-1e6", _experiment("    vary: {depth: [1, 1000000]}\n"), ["exp.yaml", "vary.depth", "over the limit"]),
    hostile("depth-1e18", _experiment("    vary: {depth: [1, 1.0e+18]}\n"), ["exp.yaml", "vary.depth", "over the limit"]),
    hostile("width-inf", _experiment("    vary: {width: [1, .inf]}\n"), ["exp.yaml", "vary.width", "finite"]),
    hostile("width-1e300", _experiment("    vary: {width: [1, 1.0e+300]}\n"), ["exp.yaml", "over the limit", "max_params"]),
    hostile("kernel-nan", _experiment("    vary: {kernel_size: [3, .nan]}\n"), ["exp.yaml", "vary.kernel_size"]),
]


# --- Keras code: bounded before it is evaluated ---------------------------------------------------

def _keras_file(code: str, suffix: str = ".py") -> Callable[[Path], list[str]]:
    def build(folder: Path) -> list[str]:
        path = folder / f"m{suffix}"
        path.write_text(code)
        return ["import-keras", path]
    return build


def _notebook(cells: object) -> str:
    return json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5})


MODEL_USING = KERAS_CODE.replace("Dense(10,", "Dense(n,")
KERAS_CASES = [
    hostile("keras-5001-digit-literal", _keras_file(f"n = {'9' * 5001}\n{MODEL_USING}"), ["m.py", "not valid Python", "4300"]),
    hostile("keras-5001-digit-hex", _keras_file(f"n = 0x{'f' * 5001}\n{MODEL_USING}"), ["m.py", "more than 64 bits"]),
    hostile("keras-power-tower", _keras_file(f"n = 10**10**10\n{MODEL_USING}"), ["m.py", "10 ** 10 ** 10", "larger than 64 bits"]),
    hostile("keras-power-tower-unused", _keras_file(f"n = 10**10**10\n{KERAS_CODE}"), [], code=0),
    hostile("keras-990-term-sum", _keras_file("n = " + " + ".join(["1"] * 990) + f"\n{MODEL_USING}"),
            ["m.py", "line 1", "nested", "refused"]),
    hostile("keras-50000-term-sum", _keras_file("n = " + "+".join(["1"] * 50_000) + f"\n{MODEL_USING}"),
            ["m.py", "nested too deeply to parse"]),
    hostile("notebook-100000-deep-json", _keras_file("[" * 100_000 + "]" * 100_000, ".ipynb"),
            ["m.ipynb", "nested too deeply"]),
    hostile("notebook-integer-source", _keras_file(_notebook([{"cell_type": "code", "source": [1, 2, 3]}]), ".ipynb"),
            ["m.ipynb", "cell 1", "field 'source'"]),
    hostile("notebook-cells-not-a-list", _keras_file(json.dumps({"cells": 5}), ".ipynb"), ["m.ipynb", "'cells' is not a list"]),
]


# --- readers: a header's claims are checked against the file before anything is allocated ---------

IDX_IMAGES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _idx_claiming(items: int, side: int) -> bytes:
    """An 800-byte IDX images file whose header declares items x side x side pixels."""
    header = (0x803).to_bytes(4, "big") + items.to_bytes(4, "big") + side.to_bytes(4, "big") * 2
    return header + bytes(800 - len(header))


def _predict_on(name: str, content: Callable[[], bytes]) -> Callable[[Path], list[str]]:
    def build(folder: Path) -> list[str]:
        (folder / name).write_bytes(content())
        return ["predict", model_folder(folder), folder / name]
    return build


def _evaluate_on_hostile_folder(folder: Path) -> list[str]:
    data = folder / "data"
    data.mkdir()
    for name in IDX_IMAGES:
        (data / name).write_bytes(_idx_claiming(10_000_000, 64) if "images" in name else
                                  (0x801).to_bytes(4, "big") + (10).to_bytes(4, "big") + bytes(10))
    return ["evaluate", model_folder(folder), "--dataset", data]


def _npy_claiming(shape: tuple[int, ...], dtype: str = "|u1") -> bytes:
    header = repr({"descr": dtype, "fortran_order": False, "shape": shape}).encode()
    header += b" " * (118 - len(header)) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + bytes(64)


def _npy(array: np.ndarray) -> Callable[[], bytes]:
    def content() -> bytes:
        import io

        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=True)
        return buffer.getvalue()
    return content


def _png_claiming(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose IHDR is rewritten to declare width x height (its CRC fixed)."""
    import io
    import zlib

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    return bytes(data)


def _nan_tiff() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.full((28, 28), np.nan, np.float32), mode="F").save(buffer, "TIFF")
    return buffer.getvalue()


READER_CASES = [
    hostile("idx-claims-40GB-predict", _predict_on("x-idx3-ubyte", lambda: _idx_claiming(10_000_000, 64)),
            ["x-idx3-ubyte", "truncated"]),
    hostile("idx-claims-40GB-evaluate-dataset-dir", _evaluate_on_hostile_folder, ["train-images-idx3-ubyte", "truncated"]),
    hostile("idx-absurd-dimensions", _predict_on("x-idx3-ubyte", lambda: _idx_claiming(4_000_000_000, 60_000)),
            ["x-idx3-ubyte", "header declares"]),
    hostile("idx-bad-magic", _predict_on("x-idx3-ubyte", lambda: b"\xde\xad\xbe\xef" + bytes(40)), ["x-idx3-ubyte", "magic"]),
    hostile("npy-claims-4GB", _predict_on("x.npy", lambda: _npy_claiming((5_600_000, 28, 28))),
            ["x.npy", "4,390,400,000 bytes", "damaged"]),
    hostile("npy-object-dtype", _predict_on("x.npy", _npy(np.array([{"a": 1}], dtype=object))), ["x.npy", "objects"]),
    hostile("npy-5d", _predict_on("x.npy", _npy(np.zeros((1, 1, 28, 28, 1), np.uint8))), ["x.npy", "shape"]),
    hostile("npy-nan", _predict_on("x.npy", _npy(np.full((28, 28), np.nan, np.float32))), ["x.npy", "NaN"]),
    hostile("png-13000-squared", _predict_on("x.png", lambda: _png_claiming(13_000, 13_000)), ["x.png", "13,000x13,000"]),
    hostile("png-20000-squared-bomb", _predict_on("x.png", lambda: _png_claiming(20_000, 20_000)), ["x.png", "pixels"]),
    hostile("tiff-float-nan", _predict_on("x.tiff", _nan_tiff), ["x.tiff", "NaN"]),
    hostile("not-an-image", _predict_on("x.png", lambda: b"hello"), ["x.png", "not a readable image"]),
]


# --- model folders and bundles: the same limits as any spec -----------------------------------------

def _tampered_model_json(edit: Callable[[dict], None], *extra: str) -> Callable[[Path], list[str]]:
    def build(folder: Path) -> list[str]:
        model = model_folder(folder)
        info = json.loads((model / "model.json").read_text())
        edit(info)
        (model / "model.json").write_text(json.dumps(info))
        np.save(folder / "x.npy", np.zeros((28, 28), np.uint8))
        return ["predict", model, folder / "x.npy", *extra]
    return build


def _set(key: str, value: object) -> Callable[[dict], None]:
    def edit(info: dict) -> None:
        info[key] = value
    return edit


def _units(units: int) -> Callable[[dict], None]:
    def edit(info: dict) -> None:
        info["spec"]["layers"] = [{"type": "Dense", "units": units, "activation": "relu"},
                                  {"type": "Dense", "units": 10, "activation": "softmax"}]
    return edit


def _train_seeds(seeds: str, *extra: str) -> Callable[[Path], list[str]]:
    def build(folder: Path) -> list[str]:
        from mnistlab.data.synthetic import synthetic_dataset, write_dataset

        (folder / "m.yaml").write_text(MLP)
        data = write_dataset(synthetic_dataset(n_train=100, n_test=20), folder / "data")
        return ["train", folder / "m.yaml", "--dataset", data, "--seeds", seeds, "--device", "cpu", "--epochs", "1",
                "--quiet", *extra]
    return build


def _safetensors_claiming(folder: Path) -> list[str]:
    """The model folder's weights replaced by a header that declares 4 GB of tensors over 100 bytes."""
    model = model_folder(folder)
    header = json.dumps({"dense_1.weight": {"dtype": "F32", "shape": [10, 100_000_000], "data_offsets": [0, 4_000_000_000]},
                         "dense_1.bias": {"dtype": "F32", "shape": [10], "data_offsets": [4_000_000_000, 4_000_000_040]}})
    (model / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header.encode() + bytes(100))
    np.save(folder / "x.npy", np.zeros((28, 28), np.uint8))
    return ["predict", model, folder / "x.npy"]


MODEL_CASES = [
    hostile("safetensors-claims-4GB", _safetensors_claiming, ["model.safetensors", "damaged"]),
    hostile("model-json-seed-2-80", _tampered_model_json(_set("seed", 2**80)), ["model.json", "seed", "whole number"]),
    hostile("model-json-1e12-units", _tampered_model_json(_units(10**12)), ["model.json", "dense_1", "over the limit", "max_params"]),
    hostile("model-folder-over-max-params", _tampered_model_json(lambda info: None, "--max-params", "100"),
            ["model.json", "7,850 parameters", "over the limit of 100"]),
    hostile("bundle-1000-seeds-over-the-limit", _train_seeds(",".join(map(str, range(1000))), "--max-params", "1000000"),
            ["m.yaml", "x 1000 seeds in one bundle", "over the limit of 1,000,000"], may_write=("data",)),
]


# --- numbers the strict way, and a tampered store ----------------------------------------------------

def _store_with_run(folder: Path) -> Path:
    from mnistlab.runs.store import RunStore

    root = folder / "store"
    spec = {"id": "mlp", "input": [784], "layers": [{"type": "Dense", "units": 10, "activation": "softmax"}]}
    with RunStore(root) as store:
        store.save_experiment("e", {"name": "e", "dataset": "mnist", "protocol": "split", "models": ["mlp"], "seeds": [0]})
        store.ensure_run("e", "mlp", {"model": spec}, 0, "mnist", "split", 1)
    return root


def _tampered_store(sql: str, *args: str) -> Callable[[Path], list[str]]:
    def build(folder: Path) -> list[str]:
        import sqlite3

        root = _store_with_run(folder)
        with sqlite3.connect(root / "store.sqlite") as conn:
            conn.execute(sql)
        conn.close()
        return [*args, "--store", root]
    return build


def _cli(*args: str) -> Callable[[Path], list[str]]:
    return lambda folder: [arg.format(store=_store_with_run(folder)) if "{store}" in arg else arg for arg in args]


NUMBER_CASES = [
    hostile("run-id-superscript", _cli("show", "\u00b2", "--store", "{store}"), ["no run match", "'\u00b2'"]),
    hostile("run-id-past-sqlite", _cli("show", "99999999999999999999", "--store", "{store}"), ["no run match"]),
    hostile("predict-run-id-past-sqlite", _cli("predict", "99999999999999999999", "x.png", "--store", "{store}"), ["no run match"]),
    hostile("compare-superscript", _cli("compare", "\u00b2", "1", "--store", "{store}"), ["not one of each"]),
    hostile("bundle-superscript", _cli("run", "quick", "--bundle", "\u00b2", "--store", "{store}"), ["--bundle"]),
    hostile("seeds-superscript", _train_seeds("0,\u00b2"), ["--seeds", "whole numbers"]),
    hostile("schema-version-superscript", _tampered_store("UPDATE meta SET value = '\u00b2' WHERE key = 'schema_version'", "ls"),
            ["store.sqlite", "schema version"]),
    hostile("store-garbage-spec-json", _tampered_store("UPDATE runs SET spec_json = 'garbage{'", "show", "1"),
            ["store.sqlite", "run 1", "field 'spec_json'", "damaged"]),
    hostile("store-garbage-final-json-ls", _tampered_store("UPDATE runs SET final_json = '[1'", "ls", "e"),
            ["store.sqlite", "run 1", "field 'final_json'", "damaged"]),
    hostile("store-garbage-final-json-show", _tampered_store("UPDATE runs SET final_json = '{'", "show", "1"),
            ["store.sqlite", "run 1", "field 'final_json'", "damaged"]),
    hostile("store-list-final-json", _tampered_store("UPDATE runs SET final_json = '[1]'", "show", "1"),
            ["store.sqlite", "run 1", "field 'final_json'", "damaged"]),
    hostile("store-garbage-spec-json-compare", _tampered_store("UPDATE runs SET spec_json = 'x'", "compare", "1", "1"),
            ["store.sqlite", "run 1", "field 'spec_json'", "damaged"]),
    hostile("store-list-spec-json", _tampered_store("UPDATE runs SET spec_json = '[1, 2]'", "show", "1"),
            ["store.sqlite", "run 1", "field 'spec_json'"]),
]


# --- outside services answer fast, in one line -------------------------------------------------------

def _free_port() -> int:
    """A local port nobody listens on (bound, then released)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _mlflow_nobody(folder: Path) -> list[str]:
    pytest.importorskip("mlflow")
    args = _tampered_store("UPDATE runs SET status = 'failed'", "export-runs", "e", f"http://127.0.0.1:{_free_port()}",
                           "--to", "mlflow")(folder)
    return args


def _ray(address: str) -> Callable[[Path], list[str]]:
    def build(folder: Path) -> list[str]:
        import importlib.util

        if importlib.util.find_spec("ray") is None:  # found, not imported: mnistlab imports it its own way
            pytest.skip("ray is not installed")
        return ["run", "quick", "--backend", "ray", "--address", address.format(port=_free_port()),
                "--store", folder / "store", "--quiet"]
    return build


SERVICE_CASES = [
    hostile("mlflow-nobody-listening", _mlflow_nobody, ["mlflow at http://127.0.0.1:", "no tracking server answers"], code=1),
    hostile("ray-address-colon-1", _ray(":1"), ["--address ':1'", "host:port"]),
    hostile("ray-address-port-past-65535", _ray("127.0.0.1:70000"), ["--address", "host:port"]),
    # Probed before the store is created: nothing is left behind.
    hostile("ray-nobody-listening", _ray("127.0.0.1:{port}"), ["--address 127.0.0.1:", "no Ray cluster answers"], code=1),
]


# --- what held before and must keep holding ---------------------------------------------------------

def _picture(mode: str, fmt: str, suffix: str) -> Callable[[Path], list[str]]:
    """A digit-like picture in an unusual mode (16-bit, RGBA, palette, CMYK): classified, exit 0."""
    def build(folder: Path) -> list[str]:
        from PIL import Image

        grey = np.zeros((40, 40), np.uint8)
        grey[8:32, 18:22] = 255
        image = Image.fromarray(grey).convert(mode) if mode != "I;16" else Image.fromarray(grey.astype(np.uint16) * 257)
        image.save(folder / f"digit{suffix}", fmt)
        return ["predict", model_folder(folder), folder / f"digit{suffix}"]
    return build


def _garbage_store(folder: Path) -> list[str]:
    root = _store_with_run(folder)
    data = (root / "store.sqlite").read_bytes()
    (root / "store.sqlite").write_bytes(data[: len(data) // 3])
    for extra in root.glob("store.sqlite-*"):
        extra.unlink()
    return ["ls", "--store", root]


def _garbage_safetensors(folder: Path) -> list[str]:
    model = model_folder(folder)
    (model / "model.safetensors").write_bytes(b"\xff" * 64)
    np.save(folder / "x.npy", np.zeros((28, 28), np.uint8))
    return ["predict", model, folder / "x.npy"]


HELD_CASES = [
    hostile("png-16-bit", _picture("I;16", "PNG", ".png"), [], code=0),
    hostile("png-rgba", _picture("RGBA", "PNG", ".png"), [], code=0),
    hostile("gif-palette", _picture("P", "GIF", ".gif"), [], code=0),
    hostile("jpeg-cmyk", _picture("CMYK", "JPEG", ".jpg"), [], code=0),
    hostile("python-not-utf8", lambda folder: [(folder / "m.py").write_bytes(b"x = '\xe9'\n"), "import-keras", folder / "m.py"][1:],
            ["m.py", "cannot read"]),
    hostile("notebook-not-json", _keras_file("{not json", ".ipynb"), ["m.ipynb", "not a Jupyter notebook"]),
    hostile("store-truncated", _garbage_store, ["store.sqlite"], may_write=("store",)),
    hostile("safetensors-garbage", _garbage_safetensors, ["model.safetensors", "damaged"]),
    hostile("gpus-per-task-negative", lambda folder: ["run", "quick", "--backend", "ray", "--gpus-per-task", "-1"],
            ["--gpus-per-task"]),
]


CASES = [*HDF5_CASES, *OUTPUT_CASES, *READ_CASES, *FACTOR_CASES, *KERAS_CASES, *READER_CASES, *MODEL_CASES,
         *NUMBER_CASES, *SERVICE_CASES, *HELD_CASES]


@pytest.mark.timeout(10)
@pytest.mark.parametrize("case", CASES)
def test_hostile_input_ends_cleanly(case: Hostile, tmp_path: Path) -> None:
    args = case.build(tmp_path)
    before = _tree(tmp_path)
    may_write = set(case.may_write) | ({"store"} if (tmp_path / "store").exists() else set())
    result = run_cli(*args)
    assert result.exit_code == case.code, result
    assert "Traceback" not in result.stdout + result.stderr
    if case.code:
        # One error line; import-keras lists each model it skipped (with its reason) above it.
        errors = [line for line in result.error_lines if not line.startswith("skipped: ")]
        assert len(errors) == 1 and errors[0].startswith("error: "), result.stderr
        shown = " ".join(result.error_lines)
        missing = [word for word in case.words if word not in shown]
        assert not missing, f"{missing} not in: {shown}"
    after = _tree(tmp_path)
    changed = {name for name in set(before) | set(after) if before.get(name) != after.get(name)}
    assert {name.split(os.sep)[0] for name in changed} <= may_write, f"wrote or changed {sorted(changed)}"
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.name != "secret.bin":
            assert SECRET[:16] not in path.read_bytes(), f"{path} carries bytes read from outside its file"


def test_the_table_covers_every_reported_kind() -> None:
    assert len(CASES) >= 9


# --- terminal text: everything read from a file reaches the terminal through safetext -------------

ESC_TEXT = "\x1b]0;owned\x07\x1b[2J\x9b31m\r\u202e"  # OSC retitle, clear screen, C1 CSI, CR, bidi override


def _hostile_model_folder(folder: Path) -> Path:
    model = model_folder(folder)
    info = json.loads((model / "model.json").read_text())
    info["spec"]["id"] = f"mlp{ESC_TEXT}"
    info["dataset"] = f"mnist{ESC_TEXT}"
    info["class_names"] = [f"{digit}{ESC_TEXT}" for digit in range(10)]
    (model / "model.json").write_text(json.dumps(info))
    return model


@pytest.fixture()
def hostile_inputs(tmp_path: Path, tiny_data_dir: Path, hostile_store: Path) -> dict[str, Path]:
    model = _hostile_model_folder(tmp_path)
    images = tmp_path / f"digits{ESC_TEXT[:5]}.npy"
    np.save(images, np.zeros((2, 28, 28), np.uint8))
    return {"model": model, "images": images, "data": tiny_data_dir, "store": hostile_store, "out": tmp_path / "m.st"}


WALK = [
    ("predict", "{model}", "{images}"), ("predict", "{model}", "{images}", "--json"),
    ("evaluate", "{model}", "--dataset", "{data}"), ("evaluate", "{model}", "--dataset", "{data}", "--json"),
    ("export", "{model}", "--format", "safetensors", "--output", "{out}"),
    ("ls", "--store", "{store}"), ("ls", "e", "--store", "{store}"), ("show", "1", "--store", "{store}"),
    ("show", "3", "--store", "{store}"), ("compare", "1", "2", "--store", "{store}"),
    ("conclusions", "e", "--store", "{store}"), ("export-runs", "e", "{model}/tb", "--to", "tensorboard", "--store", "{store}"),
    ("export-runs", "e", "{model}/runs.tar.xz", "--to", "archive", "--store", "{store}"),
    ("predict", "1", "{images}", "--store", "{store}"),  # an error line quoting the store's strings
]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("args", WALK, ids=[" ".join(a[:2]) + (" json" if "--json" in a else "") for a in WALK])
def test_file_strings_reach_the_terminal_only_through_safetext(args, hostile_inputs) -> None:
    result = run_cli(*(arg.format(**hostile_inputs) for arg in args))
    assert "Traceback" not in result.stdout + result.stderr
    shown = result.stdout + result.stderr
    for char in ("\x1b", "\x07", "\x9b", "\r", "\u202e"):
        assert char not in shown, f"{char!r} reached the terminal: {shown[:300]!r}"


@pytest.mark.timeout(20)
def test_api_run_probes_a_silent_ray_address_before_creating_the_store(tmp_path):
    import importlib.util

    from mnistlab import api
    from mnistlab.errors import EnvironmentFailure

    if importlib.util.find_spec("ray") is None:
        pytest.skip("ray is not installed")
    store = tmp_path / "store"
    with pytest.raises(EnvironmentFailure, match="no Ray cluster answers there"):
        api.run("quick", store, backend="ray", address=f"127.0.0.1:{_free_port()}")
    assert not store.exists()
