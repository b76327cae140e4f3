"""Checkpoints are data, not instructions: every tampered or damaged checkpoint is refused in one
line naming its folder, nothing outside the folder is ever opened, and inside a store a damaged
checkpoint is set aside and the run starts over."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from mnistlab.training import checkpoint
from mnistlab.training.config import TrainConfig
from mnistlab.training.engine import fit
from mnistlab.errors import CheckpointError
from mnistlab.experiments.definition import parse_experiment
from mnistlab.runs.runner import run_experiment
from mnistlab.spec.parse import parse_model
from mnistlab.runs.store import RunStore

from cli_driver import run_cli
from conftest import TINY_CNN

TENSORS = "epoch-1.safetensors"


def tiny_spec(epochs: int):
    data = yaml.safe_load(TINY_CNN)
    data["training"]["epochs"] = epochs
    return parse_model(data)


@pytest.fixture(scope="module")
def intact(tmp_path_factory, tiny_dataset) -> Path:
    """A folder holding the checkpoint after epoch 1 of a 2-epoch run."""
    folder = tmp_path_factory.mktemp("intact") / "ckpt"
    fit(tiny_spec(2), tiny_dataset, TrainConfig(epochs=1, seed=3, device="cpu", out_dir=folder))
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint.json", TENSORS]
    return folder


# -- tampering helpers -----------------------------------------------------------------------


def edit_json(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def tamper(folder: Path) -> None:
        info = json.loads((folder / "checkpoint.json").read_text())
        change(info)
        (folder / "checkpoint.json").write_text(json.dumps(info))
    return tamper


def write_json_text(text: bytes) -> Callable[[Path], None]:
    return lambda folder: (folder / "checkpoint.json").write_bytes(text)


def edit_tensors(change: Callable[[dict[str, torch.Tensor]], None]) -> Callable[[Path], None]:
    def tamper(folder: Path) -> None:
        tensors = load_file(str(folder / TENSORS))
        change(tensors)
        save_file(tensors, str(folder / TENSORS))
    return tamper


def first_key(tensors: dict, prefix: str = "model.") -> str:
    return sorted(k for k in tensors if k.startswith(prefix) and tensors[k].ndim >= 2)[0]


def rename_key(tensors: dict) -> None:
    key = first_key(tensors)
    tensors[key + "_renamed"] = tensors.pop(key)


def reshape(tensors: dict) -> None:
    key = first_key(tensors)
    tensors[key] = torch.zeros(tuple(s + 1 for s in tensors[key].shape))


def retype(tensors: dict) -> None:
    key = first_key(tensors)
    tensors[key] = tensors[key].double()


def drop_key(tensors: dict) -> None:
    del tensors[first_key(tensors)]


def extra_key(tensors: dict) -> None:
    tensors["evil.payload"] = torch.zeros(3)


def optim_bad_index(tensors: dict) -> None:
    key = first_key(tensors, "optim.")
    _, _, name = key.split(".", 2)
    tensors[f"optim.999.{name}"] = tensors.pop(key)


def optim_superscript_index(tensors: dict) -> None:
    # '²'.isdigit() is true, but int('²') fails: the index must be ASCII digits (strict.whole_number).
    key = first_key(tensors, "optim.")
    _, _, name = key.split(".", 2)
    tensors[f"optim.\u00b2.{name}"] = tensors.pop(key)


def optim_bad_shape(tensors: dict) -> None:
    key = first_key(tensors, "optim.")
    tensors[key] = torch.zeros(7)


def truncate(folder: Path) -> None:
    data = (folder / TENSORS).read_bytes()
    (folder / TENSORS).write_bytes(data[: len(data) // 2])


def set_param_group(key: str, value) -> Callable[[dict], None]:
    def change(info: dict) -> None:
        info["optimizer"]["param_groups"][0][key] = value
    return change


TAMPERINGS: dict[str, tuple[Callable[[Path], None], str]] = {
    "json garbage": (write_json_text(b"{not json"), "not readable JSON"),
    "json not utf-8": (write_json_text(b"\xff\xfe{}"), "not readable JSON"),
    "json empty": (write_json_text(b""), "not readable JSON"),
    "json a list": (write_json_text(b"[1, 2]"), "not an object"),
    "epoch missing": (edit_json(lambda i: i.pop("epoch")), "lacks ['epoch']"),
    "unknown field": (edit_json(lambda i: i.update(run="rm -rf /")), "unknown fields ['run']"),
    "epoch a string": (edit_json(lambda i: i.update(epoch="1")), "epoch '1'"),
    "epoch a bool": (edit_json(lambda i: i.update(epoch=True)), "epoch True"),
    "epoch zero": (edit_json(lambda i: i.update(epoch=0)), "epoch 0"),
    "epoch huge": (edit_json(lambda i: i.update(epoch=10**12)), "epoch 1000000000000"),
    "epoch past the history": (edit_json(lambda i: i.update(epoch=2)), "history has 1 entries"),
    "history not a list": (edit_json(lambda i: i.update(history={"a": 1})), "history has dict"),
    "history text metric": (edit_json(lambda i: i["history"][0].update(loss="low")), "non-numeric ['loss']"),
    "history wrong epoch": (edit_json(lambda i: i["history"][0].update(epoch=5)), "history entry 1"),
    "identity of another seed": (edit_json(lambda i: i["identity"].update(seed=99)), "different run"),
    "identity not an object": (edit_json(lambda i: i.update(identity=[1])), "identity is not an object"),
    "optimizer missing part": (edit_json(lambda i: i["optimizer"].pop("scalars")), "optimizer is not"),
    "param groups gone": (edit_json(lambda i: i["optimizer"].update(param_groups=[])), "0 optimizer parameter groups"),
    "lr a string": (edit_json(set_param_group("lr", "fast")), "bad ['lr']"),
    "lr infinite": (edit_json(set_param_group("lr", float("inf"))), "bad ['lr']"),
    "params renumbered": (edit_json(set_param_group("params", [0])), "does not match"),
    "scalars bad": (edit_json(lambda i: i["optimizer"].update(scalars={"x": 1})), "optimizer scalars"),
    "tensor file missing": (lambda folder: (folder / TENSORS).unlink(), f"{TENSORS} is missing"),
    "tensor file truncated": (truncate, "not a readable tensor file"),
    "tensor file garbage": (lambda folder: (folder / TENSORS).write_bytes(b"\x00" * 40), "not a readable tensor file"),
    "tensor renamed": (edit_tensors(rename_key), "model tensors"),
    "tensor dropped": (edit_tensors(drop_key), "lacks"),
    "tensor reshaped": (edit_tensors(reshape), "the model needs"),
    "tensor float64": (edit_tensors(retype), "F64"),
    "tensor extra": (edit_tensors(extra_key), "unknown tensor 'evil.payload'"),
    "optimizer tensor bad index": (edit_tensors(optim_bad_index), "unknown tensor 'optim.999"),
    "optimizer tensor bad shape": (edit_tensors(optim_bad_shape), "its parameter is"),
    "optimizer tensor superscript index": (edit_tensors(optim_superscript_index), "unknown tensor 'optim.\u00b2"),
    "scalars superscript key": (edit_json(lambda i: i["optimizer"].update(scalars={"\u00b2": {"step": 1.0}})),
                                "optimizer scalars"),
}


@pytest.mark.parametrize("name", sorted(TAMPERINGS))
def test_tampered_checkpoint_is_refused_in_one_line(name, intact, tmp_path, tiny_dataset):
    tamper, words = TAMPERINGS[name]
    folder = shutil.copytree(intact, tmp_path / "ckpt")
    tamper(folder)
    with pytest.raises(CheckpointError) as caught:
        fit(tiny_spec(2), tiny_dataset, TrainConfig(seed=3, device="cpu", out_dir=folder, resume=True))
    message = str(caught.value)
    assert message.startswith(f"{folder}: ") and "\n" not in message
    assert words in message


def test_intact_copy_resumes(intact, tmp_path, tiny_dataset):
    """The control for the table above: the untampered copy loads."""
    folder = shutil.copytree(intact, tmp_path / "ckpt")
    history = fit(tiny_spec(2), tiny_dataset, TrainConfig(seed=3, device="cpu", out_dir=folder, resume=True))
    assert [row["epoch"] for row in history.epochs] == [1, 2]


def test_checkpoint_naming_a_file_outside_its_folder_never_reads_it(intact, tmp_path, tiny_dataset, monkeypatch):
    folder = shutil.copytree(intact, tmp_path / "run" / "ckpt")
    outside = tmp_path / "run" / "outside.safetensors"
    shutil.copy(folder / TENSORS, outside)  # a loadable file, so reading it would "work"
    (folder / TENSORS).unlink()
    edit_json(lambda info: info.update(tensors="../outside.safetensors"))(folder)
    opened: list[Path] = []
    real_safe_open, real_load_file = checkpoint.safe_open, checkpoint.load_file
    monkeypatch.setattr(checkpoint, "safe_open", lambda path, **kw: opened.append(Path(path)) or real_safe_open(path, **kw))
    monkeypatch.setattr(checkpoint, "load_file", lambda path, **kw: opened.append(Path(path)) or real_load_file(path, **kw))
    with pytest.raises(CheckpointError, match=f"{TENSORS} is missing"):
        fit(tiny_spec(2), tiny_dataset, TrainConfig(seed=3, device="cpu", out_dir=folder, resume=True))
    assert opened == []
    # With its own tensor file back, the legacy field is ignored: only files inside are read.
    shutil.copy(outside, folder / TENSORS)
    fit(tiny_spec(2), tiny_dataset, TrainConfig(seed=3, device="cpu", out_dir=folder, resume=True))
    assert opened and all(path.parent == folder for path in opened)


def test_resume_with_fewer_epochs_than_the_checkpoint_is_refused(intact, tmp_path, tiny_dataset):
    folder = shutil.copytree(intact, tmp_path / "ckpt")
    edit_json(lambda info: None)(folder)
    history = fit(tiny_spec(2), tiny_dataset, TrainConfig(seed=3, device="cpu", out_dir=folder, resume=True))
    assert len(history.epochs) == 2  # now a 2-epoch checkpoint
    with pytest.raises(CheckpointError, match="already holds 2 epochs, more than the 1 asked for; pass --epochs 2 or more"):
        fit(tiny_spec(1), tiny_dataset, TrainConfig(seed=3, device="cpu", out_dir=folder, resume=True))


@pytest.mark.parametrize("name", ["json garbage", "tensor reshaped", "tensor file truncated"])
def test_cli_train_resume_on_a_damaged_checkpoint_is_one_line_exit_2(name, intact, tmp_path, tiny_data_dir, tiny_spec_file):
    folder = tmp_path / "out"
    result = run_cli("train", tiny_spec_file, "--dataset", tiny_data_dir, "--epochs", "1", "--device", "cpu",
                     "--seed", "3", "--out", folder, "--quiet")
    assert result.exit_code == 0, result.stderr
    TAMPERINGS[name][0](folder)
    result = run_cli("train", tiny_spec_file, "--dataset", tiny_data_dir, "--epochs", "2", "--device", "cpu",
                     "--seed", "3", "--out", folder, "--resume", "--quiet")
    assert result.exit_code == 2
    assert len(result.error_lines) == 1 and "Traceback" not in result.stderr
    assert str(folder) in result.stderr.replace("\n", "") and "damaged checkpoint" in result.stderr


# -- inside a store --------------------------------------------------------------------------


class StopBeforeEpoch2(Exception):
    pass


def cnn_experiment(data_dir: Path) -> dict:
    return {"name": "ckpt", "dataset": str(data_dir), "protocol": "split",
            "defaults": {"epochs": 3, "device": "cpu"}, "seeds": [0],
            "models": [{"spec": yaml.safe_load(TINY_CNN)}]}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_data_dir):
    with RunStore(tmp_path_factory.mktemp("clean")) as store:
        run_experiment(parse_experiment(cnn_experiment(tiny_data_dir)), store)
        run = store.runs("ckpt")[0]
        return run.final, store.history(run.id), store.predictions(run.id)


@pytest.mark.parametrize("name", ["json garbage", "unknown field", "tensor reshaped", "tensor file truncated",
                                  "identity of another seed"])
def test_damaged_checkpoint_in_a_store_is_set_aside_and_the_run_restarts(name, tmp_path, tiny_data_dir, uninterrupted):
    from mnistlab.training.history import Reporter

    class Interrupt(Reporter):
        def start_epoch(self, epoch, epochs, steps):
            if epoch == 2:
                raise KeyboardInterrupt  # leaves the claim and the epoch-1 checkpoint

    experiment = parse_experiment(cnn_experiment(tiny_data_dir))
    with RunStore(tmp_path / "store") as store:
        with pytest.raises(KeyboardInterrupt):
            run_experiment(experiment, store, reporter_for=lambda task: Interrupt())
        run = store.runs("ckpt")[0]
        work = store.run_dir(run.id) / "checkpoint"
        TAMPERINGS[name][0](work)
        outcome = run_experiment(experiment, store)
        assert outcome.trained == [run.id]
        finished = store.get_run(run.id)
        assert finished.status == "completed"
        assert len(finished.notes) == 1 and "damaged checkpoint moved to checkpoint.damaged-1" in finished.notes[0]
        assert (store.run_dir(run.id) / "checkpoint.damaged-1" / "checkpoint.json").exists()  # kept for inspection
        # Restarted from scratch, it equals the uninterrupted run bit for bit.
        final, history, predictions = uninterrupted
        assert finished.final["test_acc"] == final["test_acc"] and finished.final["test_loss"] == final["test_loss"]
        replayed = store.history(run.id)
        assert replayed["epoch"] == [1, 2, 3] and replayed["loss"] == history["loss"]
        assert (store.predictions(run.id)[1] == predictions[1]).all()
        assert run_experiment(experiment, store).trained == []  # and a rerun has nothing left to do


def test_show_prints_the_notes_of_a_run(tmp_path):
    with RunStore(tmp_path) as store:
        store.save_experiment("exp", {})
        run = store.ensure_run("exp", "mlp", {"a": 1}, 0, "mnist", "split", 1)
        store.add_note(run.id, "set aside [bold]x[/bold]")
    result = run_cli("show", str(run.id), "--store", tmp_path)
    assert result.exit_code == 0, result.stderr
    assert "Notes" in result.stdout and "- set aside [bold]x[/bold]" in result.stdout  # text, not markup
