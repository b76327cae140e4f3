"""Issue 25: flush-to-zero on every thread, the bf32 precision, and CPU paths chosen by a cached probe.

No timing is asserted: the probe's choice is tested with injected timings.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import mnistlab.training.denormals as denormals
import mnistlab.util.machine as machine
from mnistlab.errors import CheckpointError, MnistlabError
from mnistlab.nn import cpu_paths
from mnistlab.nn.build import ConvAsGemm, build_model
from mnistlab.nn.cpu_paths import (CACHE_FILE_NAME, GEMM_MARGIN, LAYOUT_KEY_SUFFIX, LAYOUT_MARGIN, Bf16Layout, CpuPaths,
                                   apply_layout, apply_paths, choose, choose_layout, machine_key)
from mnistlab.spec.parse import parse_model
from mnistlab.training.config import TrainConfig
from mnistlab.training.limits import check_fit
from mnistlab.training.precision import FORCE_BF32_VARIABLE, PRECISIONS, check_precision, run_numerics
from mnistlab.training.resume import checkpoint_identity

SUBNORMAL = 1e-39  # below float32's smallest normal, 1.18e-38
CPU = torch.device("cpu")


@pytest.fixture
def two_threads():
    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(saved)


def flushed_share() -> float:
    """The share of a parallel element-wise op's outputs flushed: x * 1 of a subnormal is x unless FTZ/DAZ."""
    x = torch.full((1 << 20,), SUBNORMAL)  # 4 MiB: torch splits it over every thread
    return ((x * 1.0) == 0).float().mean().item()


def test_subnormals_are_flushed_on_every_thread_and_kept_again_after(two_threads):
    flushed_share()  # the pool exists before the mode is set: the case torch.set_flush_denormal misses
    assert flushed_share() == 0.0
    with run_numerics(CPU, "fp32", flush_denormal=True):
        assert flushed_share() == 1.0  # not 0.5: the worker thread flushes too
    assert flushed_share() == 0.0


def test_flush_denormal_off_changes_nothing(two_threads):
    with run_numerics(CPU, "fp32"):
        assert flushed_share() == 0.0


def test_flushing_refused_in_one_line_where_the_threads_cannot_be_reached(two_threads, monkeypatch):
    monkeypatch.setattr(denormals, "_openmp_runtime", lambda: None)
    with pytest.raises(MnistlabError, match=r"^field 'flush_denormal': torch's OpenMP threads cannot be reached") as info:
        denormals.set_flush_denormal(True)
    assert "\n" not in str(info.value)
    assert flushed_share() == 0.0  # the main thread was set back too


def flat_spec() -> dict:
    return {"id": "flat", "input": [784],
            "layers": [{"type": "Dense", "units": 8, "activation": "relu"},
                       {"type": "Dense", "units": 10, "activation": "softmax"}],
            "training": {"optimizer": "adam", "batch_size": 16, "epochs": 1}}


def test_flush_denormal_is_off_by_default_and_in_the_identity_only_when_on():
    spec = parse_model(flat_spec())
    assert TrainConfig().flush_denormal is False
    assert "flush_denormal" not in checkpoint_identity(spec, TrainConfig(), 16, "mnist", 1)
    assert checkpoint_identity(spec, TrainConfig(flush_denormal=True), 16, "mnist", 1)["flush_denormal"] is True


def test_a_flush_denormal_that_is_not_a_bool_is_refused(tiny_dataset):
    with pytest.raises(MnistlabError, match="field 'flush_denormal': must be true or false"):
        check_fit(parse_model(flat_spec()), tiny_dataset, TrainConfig(flush_denormal="yes"), 1, 16)  # type: ignore[arg-type]


# --- bf32: oneDNN's implicit bf16, named and validated like tf32 -----------------------------


def test_bf32_is_a_precision_and_fp32_stays_the_default():
    assert "bf32" in PRECISIONS and "tf32" in PRECISIONS
    assert TrainConfig().precision == "fp32"


def test_bf32_is_refused_in_one_line_without_bf16_hardware(monkeypatch):
    monkeypatch.setattr(machine, "has_bf16_hardware", lambda flags=None: False)
    monkeypatch.delenv(FORCE_BF32_VARIABLE, raising=False)
    with pytest.raises(MnistlabError, match=r"^model 'm': field 'precision': bf32 needs a CPU with bf16 hardware"):
        check_precision("bf32", CPU, "model 'm'")
    monkeypatch.setenv(FORCE_BF32_VARIABLE, "1")
    check_precision("bf32", CPU, "model 'm'")  # forced: accepted


def test_bf32_is_refused_on_a_gpu_as_tf32_is_on_a_cpu(monkeypatch):
    monkeypatch.setattr(machine, "has_bf16_hardware", lambda flags=None: True)
    with pytest.raises(MnistlabError, match=r"field 'precision': bf32 is oneDNN's, for a CPU, not cuda"):
        check_precision("bf32", torch.device("cuda"))
    with pytest.raises(MnistlabError, match=r"field 'precision': tf32 needs a CUDA GPU"):
        check_precision("tf32", CPU)


def test_bf16_hardware_is_read_from_the_cpu_flags():
    assert machine.has_bf16_hardware(frozenset({"avx2", "amx_bf16"}))
    assert machine.has_bf16_hardware(frozenset({"avx512f", "avx512_bf16"}))
    assert not machine.has_bf16_hardware(frozenset({"avx2", "fma", "avx512f"}))


def test_bf32_sets_onednn_fpmath_for_the_run_and_restores_it(monkeypatch):
    monkeypatch.setattr(machine, "has_bf16_hardware", lambda flags=None: True)
    before = (torch.backends.mkldnn.matmul.fp32_precision, torch.backends.mkldnn.conv.fp32_precision)
    with run_numerics(CPU, "bf32"):
        assert torch.backends.mkldnn.matmul.fp32_precision == "bf16"
        assert torch.backends.mkldnn.conv.fp32_precision == "bf16"
    with run_numerics(CPU, "fp32"):  # strict fp32 leaves oneDNN as found
        assert (torch.backends.mkldnn.matmul.fp32_precision, torch.backends.mkldnn.conv.fp32_precision) == before
    assert (torch.backends.mkldnn.matmul.fp32_precision, torch.backends.mkldnn.conv.fp32_precision) == before


# --- CPU paths: a probe cached per machine ---------------------------------------------------


def never_probe() -> dict[str, float]:
    raise AssertionError("probed although the cache holds this machine's choice")


def test_the_gemm_form_is_chosen_only_where_it_wins_by_the_margin():
    assert choose({"conv": 3.0, "gemm": 1.0}).conv_as_gemm
    assert not choose({"conv": 1.0, "gemm": 3.0}).conv_as_gemm
    assert not choose({"conv": 1.0, "gemm": 1.0 / (GEMM_MARGIN * 0.99)}).conv_as_gemm  # within the margin: conv


def test_the_choice_is_probed_once_then_read_from_the_cache(tmp_path):
    calls = []

    def probe() -> dict[str, float]:
        calls.append(1)
        return {"conv": 1.0, "gemm": 5.0}

    first = cpu_paths.cpu_paths(probe, tmp_path)
    assert first.conv_as_gemm is False and calls == [1]
    cached = json.loads((tmp_path / CACHE_FILE_NAME).read_text())
    assert cached[machine_key()]["conv_as_gemm"] is False
    assert cpu_paths.cpu_paths(never_probe, tmp_path).conv_as_gemm is False


def test_another_machines_or_a_damaged_cache_is_probed_over(tmp_path):
    path = tmp_path / CACHE_FILE_NAME
    path.write_text(json.dumps({"another CPU | torch 0.1 | probe 1": {"conv_as_gemm": False}}))
    assert cpu_paths.cpu_paths(lambda: {"conv": 5.0, "gemm": 1.0}, tmp_path).conv_as_gemm is True
    assert set(json.loads(path.read_text())) == {"another CPU | torch 0.1 | probe 1", machine_key()}
    path.write_text("{not json")
    assert cpu_paths.cpu_paths(lambda: {"conv": 1.0, "gemm": 5.0}, tmp_path).conv_as_gemm is False


def test_the_cache_key_names_the_cpu_and_torch():
    assert machine.cpu_name() in machine_key() and torch.__version__ in machine_key()


def test_a_cache_folder_that_cannot_be_written_still_gives_the_choice(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert cpu_paths.cpu_paths(lambda: {"conv": 1.0, "gemm": 5.0}, blocker / "sub").conv_as_gemm is False


@pytest.mark.parametrize("out_hw, size", [((1, 1), 3), ((2, 2), 4)])
def test_both_forms_compute_the_same_convolution(out_hw, size):
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 5, 3).double()
    module = ConvAsGemm(conv, out_hw)
    x = torch.randn(4, 6, size, size, dtype=torch.float64)
    gemm = module(x)
    assert apply_paths(nn.Sequential(module), CpuPaths(conv_as_gemm=False))
    assert module.gemm is False
    torch.testing.assert_close(module(x), gemm, rtol=1e-12, atol=1e-12)
    assert not apply_paths(nn.Sequential(nn.Linear(2, 2)), CpuPaths(conv_as_gemm=False))


def test_the_plain_conv_choice_is_in_the_identity_only_when_made():
    spec = parse_model(flat_spec())
    assert "small_convs" not in checkpoint_identity(spec, TrainConfig(), 16, "mnist", 1)
    assert checkpoint_identity(spec, TrainConfig(), 16, "mnist", 1, plain_convs=True)["small_convs"] == "conv"


# --- from the command line -------------------------------------------------------------------


def test_cli_refuses_bf32_without_bf16_hardware_in_one_line(tiny_spec_file, tiny_data_dir, monkeypatch):
    from cli_driver import run_cli

    if machine.has_bf16_hardware():
        pytest.skip("this CPU has bf16 hardware: bf32 is accepted here")
    monkeypatch.delenv(FORCE_BF32_VARIABLE, raising=False)
    code, out, err = run_cli("train", tiny_spec_file, "--dataset", tiny_data_dir, "--device", "cpu",
                             "--precision", "bf32", "--epochs", "1")
    assert code == 2 and err.strip().count("\n") == 0 and "bf32 needs a CPU with bf16 hardware" in err
    assert "Traceback" not in err


def test_cli_flush_denormal_trains_and_says_so_in_the_history(tiny_spec_file, tiny_data_dir, tmp_path):
    from cli_driver import run_cli

    code, out, err = run_cli("train", tiny_spec_file, "--dataset", tiny_data_dir, "--device", "cpu", "--epochs", "1",
                             "--train-limit", "64", "--flush-denormal", "--threads", "2", "--json",
                             "--out", tmp_path / "run")
    assert code == 0, err
    history = json.loads(out.strip().splitlines()[-1])
    assert any("subnormal" in note for note in history["notes"])
    assert json.loads((tmp_path / "run" / "checkpoint.json").read_text())["identity"]["flush_denormal"] is True


def test_an_experiment_sets_flush_denormal_for_its_runs_and_keeps_other_hashes(tiny_data_dir):
    from test_runner import tiny_experiment

    from mnistlab.experiments.definition import expand, parse_experiment
    from mnistlab.runs.tasks import task_config

    plain = tiny_experiment(tiny_data_dir, seeds=(0,))
    flushed = {**plain, "defaults": {**plain["defaults"], "flush_denormal": True}}
    before, after = expand(parse_experiment(plain))[0], expand(parse_experiment(flushed))[0]
    assert "flush_denormal" not in before.run_config()  # runs stored before the field keep their hash
    assert after.run_config()["flush_denormal"] is True
    assert task_config(after, None).flush_denormal and not task_config(before, None).flush_denormal


def test_a_stored_run_keeps_its_notes(tiny_data_dir, tmp_path):
    from test_runner import TINY_MLP

    from mnistlab.experiments.definition import parse_experiment
    from mnistlab.runs.runner import run_experiment
    from mnistlab.runs.store import RunStore

    experiment = parse_experiment({"name": "flushed", "dataset": str(tiny_data_dir), "protocol": "split",
                                   "defaults": {"epochs": 1, "device": "cpu", "flush_denormal": True,
                                                "train_limit": 64},
                                   "seeds": [0], "models": [{"spec": TINY_MLP}]})
    with RunStore(tmp_path / "store") as store:
        outcome = run_experiment(experiment, store)
        assert not outcome.failed
        (record,) = store.runs("flushed")
        assert any("subnormal" in note for note in record.notes)


# --- bf16 convolutions: the layout chosen per machine ----------------------------------------


def conv_spec() -> dict:
    return {"id": "convs", "input": [28, 28, 1],
            "layers": [{"type": "Conv2D", "filters": 4, "kernel_size": 3, "activation": "relu"},
                       {"type": "MaxPooling2D", "pool_size": 2},
                       {"type": "Flatten"},
                       {"type": "Dense", "units": 10, "activation": "softmax"}],
            "training": {"optimizer": "adam", "batch_size": 16, "epochs": 1}}


def test_channels_last_is_chosen_for_bf16_only_where_it_wins_by_the_margin():
    assert choose_layout({"nchw": 3.0, "channels_last": 1.0}).channels_last
    assert not choose_layout({"nchw": 1.0, "channels_last": 3.0}).channels_last
    assert not choose_layout({"nchw": 1.0, "channels_last": 1.0 / (LAYOUT_MARGIN * 0.99)}).channels_last


def test_the_layout_is_probed_once_cached_beside_the_small_conv_choice(tmp_path):
    calls = []

    def probe() -> dict[str, float]:
        calls.append(1)
        return {"nchw": 2.0, "channels_last": 1.0}

    assert cpu_paths.bf16_layout(probe, tmp_path).channels_last is True and calls == [1]
    assert cpu_paths.bf16_layout(never_probe, tmp_path).channels_last is True
    cpu_paths.cpu_paths(lambda: {"conv": 1.0, "gemm": 5.0}, tmp_path)
    cached = json.loads((tmp_path / CACHE_FILE_NAME).read_text())
    assert cached[machine_key() + LAYOUT_KEY_SUFFIX]["channels_last"] is True
    assert cached[machine_key()]["conv_as_gemm"] is False  # the two choices live side by side
    assert cpu_paths.bf16_layout(never_probe, tmp_path).channels_last is True


def test_the_layout_probe_times_both_layouts():
    timings = cpu_paths.probe_layout()
    assert set(timings) == {"nchw", "channels_last"} and all(t > 0 for t in timings.values())


def test_channels_last_weights_compute_the_same_model_and_only_models_with_convolutions_change():
    spec = parse_model(conv_spec())
    model = build_model(spec, seed=0).double()
    x = torch.rand(4, 1, 28, 28, dtype=torch.float64)
    expected = model(x)
    assert apply_layout(model, Bf16Layout(channels_last=True))
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(model(x), expected, rtol=1e-12, atol=1e-12)
    assert not apply_layout(nn.Sequential(nn.Linear(2, 2)), Bf16Layout(channels_last=True))
    assert not apply_layout(build_model(spec, seed=0), Bf16Layout(channels_last=False))


def test_the_layout_is_in_the_identity_only_when_chosen():
    spec = parse_model(flat_spec())
    assert "bf16_layout" not in checkpoint_identity(spec, TrainConfig(), 16, "mnist", 1)
    assert checkpoint_identity(spec, TrainConfig(), 16, "mnist", 1, channels_last=True)["bf16_layout"] == "channels_last"


def test_a_bf16_run_with_channels_last_chosen_trains_saves_and_resumes(tmp_path, monkeypatch, tiny_dataset):
    from mnistlab.training import engine
    from mnistlab.training.engine import fit

    monkeypatch.setattr(engine, "bf16_layout", lambda: Bf16Layout(channels_last=True))
    spec = parse_model(conv_spec())
    config = TrainConfig(epochs=2, batch_size=32, device="cpu", precision="bf16", out_dir=tmp_path / "run", seed=0)
    history = fit(spec, tiny_dataset, config)
    assert any("bf16 convolutions: channels_last" in note for note in history.notes)
    again = fit(spec, tiny_dataset, TrainConfig(epochs=3, batch_size=32, device="cpu", precision="bf16",
                                                out_dir=tmp_path / "run", seed=0, resume=True))
    assert [e["epoch"] for e in again.epochs] == [1, 2, 3]  # resumed from epoch 2's checkpoint
    assert again.epochs[:2] == history.epochs  # the first two epochs are the checkpoint's, not retrained
    # where the probe chose NCHW the same checkpoint is another run's: its identity differs
    monkeypatch.setattr(engine, "bf16_layout", lambda: Bf16Layout(channels_last=False))
    with pytest.raises(CheckpointError, match="different run"):
        fit(spec, tiny_dataset, TrainConfig(epochs=4, batch_size=32, device="cpu", precision="bf16",
                                            out_dir=tmp_path / "run", seed=0, resume=True))
    fp32 = fit(spec, tiny_dataset, TrainConfig(epochs=1, batch_size=32, device="cpu", out_dir=tmp_path / "fp32"))
    assert not any("bf16 convolutions" in note for note in fp32.notes)  # fp32 never takes the bf16 layout
