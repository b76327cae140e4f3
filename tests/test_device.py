"""Every engine feature on the device named by MNISTLAB_TEST_DEVICE (default: cpu).

CI runs this file on its CPU; a session with a GPU runs the same tests on CUDA
(`MNISTLAB_TEST_DEVICE=cuda python -m pytest tests/test_device.py`, benchmarks/README.md), so the
GPU path is checked by the very assertions that hold on a CPU: determinism (with deterministic
kernels), resume equal to an uninterrupted run, divergence, the out-of-memory message, bundles,
every precision, evaluation batches sized for the device, and checkpoints that move between devices.
"""

from __future__ import annotations

import math
import os

import pytest
import torch
import yaml
from cli_driver import run_cli
from conftest import TINY_CNN
from test_runner import tiny_experiment

from mnistlab.training import engine
from mnistlab.training.bundle import fit_bundle
from mnistlab.training.config import TrainConfig, eval_batch_size
from mnistlab.training.eval_batch import cpu_eval_batch
from mnistlab.training.engine import evaluate, fit, place_data
from mnistlab.errors import MnistlabError
from mnistlab.experiments.definition import expand, parse_experiment
from mnistlab.trained.folder import load_model_folder, save_trained
from mnistlab.training.precision import FORCE_BF32_VARIABLE, PRECISIONS, run_numerics
from mnistlab.util.machine import has_bf16_hardware
from mnistlab.runs.runner import run_experiment
from mnistlab.runs.tasks import task_config
from mnistlab.spec.parse import parse_model
from mnistlab.spec.model import resolve
from mnistlab.runs.store import RunStore

DEVICE = os.environ.get("MNISTLAB_TEST_DEVICE", "cpu")
ON_CUDA = DEVICE.startswith("cuda")
if ON_CUDA and not torch.cuda.is_available():
    raise RuntimeError(f"MNISTLAB_TEST_DEVICE={DEVICE}, but torch sees no CUDA device")
METRICS = ("loss", "acc", "val_loss", "val_acc", "train_eval_loss", "train_eval_acc")


def spec(**training):
    raw = yaml.safe_load(TINY_CNN)
    raw["training"].update(training)
    return parse_model(raw)


def config(**options) -> TrainConfig:
    return TrainConfig(**{"device": DEVICE, "deterministic": ON_CUDA, **options})


def rows(history) -> list[list[float]]:
    return [[epoch[key] for key in METRICS] for epoch in history.epochs]


def test_the_same_seed_gives_the_same_numbers(tiny_dataset):
    first, second = (fit(spec(), tiny_dataset, config(seed=5)) for _ in range(2))
    assert first.device.startswith(DEVICE.split(":")[0])
    assert rows(first) == rows(second) and first.test_predictions == second.test_predictions


def test_resume_equals_an_uninterrupted_run(tiny_dataset, tmp_path):
    straight = fit(spec(epochs=3), tiny_dataset, config(seed=1))
    fit(spec(epochs=3), tiny_dataset, config(seed=1, epochs=2, out_dir=tmp_path))  # "interrupted" after 2
    resumed = fit(spec(epochs=3), tiny_dataset, config(seed=1, out_dir=tmp_path, resume=True))
    assert rows(resumed) == rows(straight) and resumed.test_predictions == straight.test_predictions


def test_a_diverging_run_is_recorded_not_raised(tiny_dataset):
    history = fit(spec(optimizer={"name": "sgd", "lr": 1e12}, epochs=5), tiny_dataset, config())
    assert history.status == "diverged" and history.test_acc is None
    assert not all(math.isfinite(history.epochs[-1][key]) for key in ("loss", "val_loss"))


def test_running_out_of_device_memory_is_one_line_with_a_batch_size_hint(tiny_dataset, monkeypatch):
    if ON_CUDA:  # a real out-of-memory: cap this process's share of the GPU at a few MiB
        device = torch.device(DEVICE)
        torch.cuda.empty_cache()
        torch.cuda.set_per_process_memory_fraction(8 * 2**20 / torch.cuda.get_device_properties(device).total_memory,
                                                   device)
    else:  # no such thing on a CPU: the engine's handling of the error CUDA raises
        def out_of_memory(*args, **kwargs):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

        monkeypatch.setattr(engine, "train_epoch", out_of_memory)
    try:
        with pytest.raises(MnistlabError) as raised:
            fit(spec(batch_size=400), tiny_dataset, config(batch_size=400))
    finally:
        if ON_CUDA:
            torch.cuda.set_per_process_memory_fraction(1.0, torch.device(DEVICE))
            torch.cuda.empty_cache()
    message = str(raised.value)
    assert "\n" not in message and "tiny-cnn" in message and "--batch-size 200" in message


def test_a_bundle_matches_its_separate_runs(tiny_dataset):
    configs = [config(seed=seed, train_limit=160) for seed in (0, 1)]
    separate = [fit(spec(), tiny_dataset, c) for c in configs]
    bundled = fit_bundle(spec(), tiny_dataset, configs)
    for alone, together in zip(separate, bundled):
        for (name, x), y in zip(alone.model.state_dict().items(), together.model.state_dict().values()):
            if x.dtype.is_floating_point:  # norm-wise: Adam amplifies rounding noise near zero gradients
                assert ((x - y).norm() / x.norm().clamp_min(1e-30)).item() < 1e-3, name
        assert together.epochs[-1]["loss"] == pytest.approx(alone.epochs[-1]["loss"], rel=1e-3)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_every_precision_trains_or_is_refused_in_one_line(tiny_dataset, precision):
    if precision == "tf32" and not ON_CUDA:
        with pytest.raises(MnistlabError, match=r"^model 'tiny-cnn': field 'precision': tf32 needs a CUDA GPU"):
            fit(spec(), tiny_dataset, config(precision=precision))
        return
    if precision == "bf32" and (ON_CUDA or not has_bf16_hardware()) and not os.environ.get(FORCE_BF32_VARIABLE):
        with pytest.raises(MnistlabError, match=r"^model 'tiny-cnn': field 'precision': bf32 (needs|is oneDNN's)"):
            fit(spec(), tiny_dataset, config(precision=precision))
        return
    history = fit(spec(epochs=1), tiny_dataset, config(precision=precision))
    assert history.status == "completed" and math.isfinite(history.epochs[0]["loss"])


def test_run_numerics_sets_the_run_and_restores_what_it_found():
    device = torch.device(DEVICE)
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cuda.matmul.allow_tf32,
              torch.backends.cudnn.allow_tf32)
    with run_numerics(device, "tf32" if ON_CUDA else "fp32", deterministic=True):
        assert torch.are_deterministic_algorithms_enabled()
        if ON_CUDA:
            assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
            assert os.environ["CUBLAS_WORKSPACE_CONFIG"]
    if ON_CUDA:
        with run_numerics(device, "fp32"):  # strict float32: cuDNN's TF32 default turned off
            assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    after = (torch.are_deterministic_algorithms_enabled(), torch.backends.cuda.matmul.allow_tf32,
             torch.backends.cudnn.allow_tf32)
    assert after == before


def test_evaluation_gives_the_same_answer_whatever_its_batch_size(tiny_dataset, monkeypatch):
    history = fit(spec(epochs=1), tiny_dataset, config())
    data = place_data(tiny_dataset, config(), torch.device(DEVICE))
    whole = evaluate(history.model, data.test_x, data.test_y, "fp32")
    monkeypatch.setattr(engine, "eval_batch_size", lambda *args, **kwargs: 7)
    in_sevens = evaluate(history.model, data.test_x, data.test_y, "fp32")
    assert torch.equal(whole[2], in_sevens[2]) and whole[1].item() == in_sevens[1].item()
    assert whole[0].item() == pytest.approx(in_sevens[0].item(), rel=1e-5)


def test_evaluation_batches_are_sized_for_the_device():
    resolved = resolve(spec())
    per_image = 4 * (28 * 28 + sum(math.prod(node.output_shape) for node in resolved.nodes))
    assert eval_batch_size(resolved, torch.device("cpu"), 10_000) == cpu_eval_batch(resolved)  # eval_batch.py's rule
    cuda = torch.device("cuda")  # sizing is arithmetic: no GPU needed to check it
    assert eval_batch_size(resolved, cuda, 10_000, free_bytes=4 * 1000 * per_image) == 1000
    assert eval_batch_size(resolved, cuda, 10_000, free_bytes=4 * 1000 * per_image, seeds=4) == 250
    assert eval_batch_size(resolved, cuda, 6_000, free_bytes=2**40) == 6_000  # the whole set at once
    assert eval_batch_size(resolved, cuda, 10_000, free_bytes=0) == 1


def test_a_model_trained_here_loads_and_predicts_on_a_cpu(tiny_dataset, tmp_path):
    history = fit(spec(epochs=1), tiny_dataset, config())
    save_trained(tmp_path / "model", history, tiny_dataset.info)
    model = load_model_folder(tmp_path / "model", device="cpu")
    probabilities = model(tiny_dataset.test_images[:20].float().div(255).unsqueeze(-1))
    assert probabilities.argmax(1).tolist() == history.test_predictions[:20]


def test_deterministic_is_part_of_the_checkpoint_identity(tiny_dataset, tmp_path):
    fit(spec(epochs=1), tiny_dataset, config(deterministic=True, out_dir=tmp_path))
    with pytest.raises(MnistlabError, match="different run"):
        fit(spec(epochs=2), tiny_dataset, config(deterministic=False, out_dir=tmp_path, resume=True))


def test_compile_on_a_cpu_is_refused_in_one_line(tiny_dataset):
    # Its kernels trained to NaN (and corrupted the heap of a plain PyTorch loop) on an Intel Xeon with AMX.
    with pytest.raises(MnistlabError, match=r"^model 'tiny-cnn': field 'compile': torch.compile is for a CUDA GPU, "
                                            r"not a CPU") as refused:
        fit(spec(epochs=1), tiny_dataset, TrainConfig(device="cpu", compile="reduce-overhead"))
    assert "\n" not in str(refused.value)


@pytest.mark.skipif(not ON_CUDA, reason="torch.compile is refused on a CPU (the test above)")
def test_a_compiled_step_trains_like_the_eager_one(tiny_dataset):
    """torch.compile in "reduce-overhead" mode (CUDA graphs on a GPU): same losses within rounding."""
    eager = fit(spec(epochs=1), tiny_dataset, config(seed=2))
    graphs = fit(spec(epochs=1), tiny_dataset, config(seed=2, compile="reduce-overhead"))
    assert graphs.epochs[0]["loss"] == pytest.approx(eager.epochs[0]["loss"], rel=1e-4)
    assert graphs.epochs[0]["val_loss"] == pytest.approx(eager.epochs[0]["val_loss"], rel=1e-4)


def test_a_compile_mode_torch_does_not_know_is_one_line(tiny_dataset):
    with pytest.raises(MnistlabError, match=r"^<python>: model 'tiny-cnn': field 'compile': true, false or a mode"):
        fit(spec(), tiny_dataset, config(compile="fastest"))


def test_the_cli_takes_the_device_options(tiny_spec_file, tiny_data_dir, tmp_path):
    compile_options = ["--compile-mode", "reduce-overhead"] if ON_CUDA else []
    trained = run_cli("train", tiny_spec_file, "--dataset", tiny_data_dir, "--device", DEVICE, "--epochs", "1",
                      "--precision", "bf16", "--deterministic", *compile_options, "--quiet",
                      "--out", tmp_path / "run")
    assert trained.exit_code == 0, trained.stderr
    if not ON_CUDA:
        refused = run_cli("train", tiny_spec_file, "--dataset", tiny_data_dir, "--device", "cpu", "--compile",
                          "--out", tmp_path / "compiled")
        assert refused.exit_code == 2 and "Traceback" not in refused.stderr
        assert refused.stderr.strip().count("\n") == 0 and "torch.compile is for a CUDA GPU" in refused.stderr
        assert not (tmp_path / "compiled").exists()
        refused = run_cli("train", tiny_spec_file, "--dataset", tiny_data_dir, "--device", "cpu", "--precision", "tf32")
        assert refused.exit_code == 2 and "Traceback" not in refused.stderr
        assert refused.stderr.strip().count("\n") == 0 and "tf32 needs a CUDA GPU" in refused.stderr


def test_an_experiment_carries_precision_and_determinism_to_every_run(tiny_data_dir, tmp_path):
    study = tiny_experiment(tiny_data_dir, name="numerics", seeds=(0,))
    study["defaults"].update(device=DEVICE, precision="bf16", deterministic=True)
    tasks = expand(parse_experiment(study))
    assert all(task.precision == "bf16" and task.deterministic for task in tasks)
    assert tasks[0].run_config()["deterministic"] is True  # another run than a non-deterministic one
    assert task_config(tasks[0], None).deterministic is True
    plain = expand(parse_experiment(tiny_experiment(tiny_data_dir, name="plain", seeds=(0,))))
    assert "deterministic" not in plain[0].run_config()  # runs stored before the option keep their hash
    with RunStore(tmp_path / "store") as store:
        outcome = run_experiment(parse_experiment(study), store)
        assert len(outcome.trained) == 2 and not outcome.failed
        assert all(run.status == "completed" for run in store.runs("numerics"))
