"""Seed bundles: K seeds as one batched computation take the same steps as K separate runs."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml

from mnistlab.training import bundle as bundle_module
from mnistlab.api import train
from mnistlab.nn.build import build_model
from mnistlab.training.bundle import bundle_capacity, fit_bundle
from mnistlab.data.synthetic import synthetic_dataset, write_dataset
from mnistlab.training.config import TrainConfig
from mnistlab.training.engine import fit
from mnistlab.errors import CheckpointError, MnistlabError
from mnistlab.experiments.definition import parse_experiment
from mnistlab.runs.runner import run_experiment
from mnistlab.spec.parse import parse_model
from mnistlab.nn.stacked import StackedModel, shared_inputs
from mnistlab.runs.store import RunStore
from mnistlab.zoo import get_model, zoo_models
from cli_driver import run_cli, sigkill_after_checkpoint, spawn_cli

from conftest import TINY_CNN
from test_runner import tiny_experiment, write_experiment

METRICS = ("loss", "acc", "val_loss", "val_acc")

MLP_DROPOUT = {
    "id": "mlp-dropout", "input": [784],
    "layers": [
        {"type": "Dense", "units": 32, "activation": "relu"},
        {"type": "Dropout", "rate": 0.3},
        {"type": "Dense", "units": 16, "activation": "tanh"},
        {"type": "Dropout", "rate": 0.2},
        {"type": "Dense", "units": 10, "activation": "softmax"},
    ],
    "training": {"optimizer": "adam", "batch_size": 16, "epochs": 2},
}
# BatchNormalization after a conv and after a Dense, dropout on maps and features, 'same' padding
# (symmetric and TensorFlow's asymmetric), a strided conv, and Nadam (the optimizer with a schedule).
# No bias before a BatchNormalization: its gradient is exactly zero, so its value would be pure
# rounding noise (amplified by Nadam to ~1e-12) and no relative tolerance could speak for it.
CNN_BN = {
    "id": "cnn-bn", "input": [28, 28, 1],
    "layers": [
        {"type": "Conv2D", "filters": 4, "kernel_size": 3, "padding": "same", "activation": "linear", "use_bias": False},
        {"type": "BatchNormalization"},
        {"type": "Activation", "activation": "relu"},
        {"type": "MaxPooling2D", "pool_size": 2},
        {"type": "Dropout", "rate": 0.3},
        {"type": "Conv2D", "filters": 6, "kernel_size": 2, "strides": 2, "padding": "same", "activation": "relu"},
        {"type": "Flatten"},
        {"type": "Dense", "units": 16, "activation": "linear", "use_bias": False},
        {"type": "BatchNormalization"},
        {"type": "Activation", "activation": "relu"},
        {"type": "Dropout", "rate": 0.2},
        {"type": "Dense", "units": 10, "activation": "softmax"},
    ],
    "training": {"optimizer": "nadam", "batch_size": 16, "epochs": 2},
}
# ReLU → BatchNormalization → Dropout chains, which a single run trains as fused.py's one autograd
# Function (a 3x3 conv's, a pointwise conv's, a Dense layer's): the bundle must fuse them the same way.
FUSED_CHAINS = {
    "id": "fused-chains", "input": [28, 28, 1],
    "layers": [
        {"type": "Conv2D", "filters": 4, "kernel_size": 3, "activation": "relu"},
        {"type": "BatchNormalization"},
        {"type": "Dropout", "rate": 0.3},
        {"type": "MaxPooling2D", "pool_size": 2},
        {"type": "Conv2D", "filters": 6, "kernel_size": 1, "activation": "relu"},
        {"type": "BatchNormalization"},
        {"type": "MaxPooling2D", "pool_size": 2},
        {"type": "Flatten"},
        {"type": "Dense", "units": 16, "activation": "relu"},
        {"type": "BatchNormalization"},
        {"type": "Dropout", "rate": 0.2},
        {"type": "Dense", "units": 10, "activation": "softmax"},
    ],
    "training": {"optimizer": "adam", "batch_size": 16, "epochs": 2},
}
SPECS = {"mlp-dropout": MLP_DROPOUT, "cnn-bn": CNN_BN, "fused-chains": FUSED_CHAINS}
SEEDS = (0, 1, 2)
STEPS_IMAGES = 160  # 10 steps of 16 per epoch, 2 epochs: 20 optimizer steps


def configs(dtype: str = "float32", seeds=SEEDS, **options) -> list[TrainConfig]:
    options = {"device": "cpu", "dtype": dtype, "train_limit": STEPS_IMAGES, **options}
    return [TrainConfig(seed=seed, **options) for seed in seeds]


def compare_parameters(a: torch.nn.Module, b: torch.nn.Module) -> float:
    """The largest norm-wise relative difference over the state tensors of two models."""
    worst = 0.0
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        if x.dtype.is_floating_point:
            worst = max(worst, ((x - y).norm() / x.norm().clamp_min(1e-30)).item())
    return worst


@pytest.mark.parametrize("name", SPECS)
def test_float64_bundle_equals_separate_runs_after_20_steps(tiny_dataset, name):
    spec = parse_model(SPECS[name])
    separate = [fit(spec, tiny_dataset, config) for config in configs("float64")]
    bundled = fit_bundle(spec, tiny_dataset, configs("float64"))
    for alone, together in zip(separate, bundled):
        assert together.seed == alone.seed and together.status == "completed"
        for (key, x), y in zip(alone.model.state_dict().items(), together.model.state_dict().values()):
            torch.testing.assert_close(y, x, rtol=1e-9, atol=1e-15, msg=f"seed {alone.seed} {key}")
        for row_a, row_b in zip(alone.epochs, together.epochs):
            for key in METRICS:
                assert row_b[key] == pytest.approx(row_a[key], rel=1e-9)
        assert together.test_predictions == alone.test_predictions


@pytest.mark.parametrize("name", SPECS)
def test_float32_bundle_matches_separate_runs_within_noise(tiny_dataset, name):
    spec = parse_model(SPECS[name])
    separate = [fit(spec, tiny_dataset, config) for config in configs()]
    bundled = fit_bundle(spec, tiny_dataset, configs())
    for alone, together in zip(separate, bundled):
        # Norm-wise: Adam turns rounding noise in near-zero gradients into full steps.
        assert compare_parameters(alone.model, together.model) < 1e-3
        assert len(together.epochs) == 2
        for row_a, row_b in zip(alone.epochs, together.epochs):
            for key in ("loss", "val_loss"):
                assert row_b[key] == pytest.approx(row_a[key], rel=1e-4, abs=1e-5)
            for key in ("acc", "val_acc"):
                assert abs(row_b[key] - row_a[key]) <= 2 / 40  # at most a couple of images flip
        assert together.images_per_second_note.startswith("bundle of 3 seeds")


def test_bundles_are_deterministic_and_one_seed_is_fit(tiny_dataset):
    spec = parse_model(SPECS["cnn-bn"])
    first = fit_bundle(spec, tiny_dataset, configs(seeds=(3, 4)))
    second = fit_bundle(spec, tiny_dataset, configs(seeds=(3, 4)))
    for a, b in zip(first, second):
        assert [[e[k] for k in METRICS] for e in a.epochs] == [[e[k] for k in METRICS] for e in b.epochs]
        assert a.test_predictions == b.test_predictions
    (single,) = fit_bundle(spec, tiny_dataset, configs(seeds=(3,)))
    alone = fit(spec, tiny_dataset, configs(seeds=(3,))[0])
    assert [[e[k] for k in METRICS] for e in single.epochs] == [[e[k] for k in METRICS] for e in alone.epochs]


def test_a_diverging_seed_leaves_and_the_others_are_untouched(tiny_dataset, monkeypatch):
    spec = parse_model(SPECS["cnn-bn"])
    without = fit_bundle(spec, tiny_dataset, configs("float64", seeds=(0, 2)))

    real_build = bundle_module.build_model

    def build_then_blow_up(resolved, seed):
        model = real_build(resolved, seed=seed)
        if seed == 1:  # seed 1's initial weights overflow (scaled to infinity): its loss turns NaN
            with torch.no_grad():
                for param in model.parameters():
                    param.mul_(math.inf)
        return model

    monkeypatch.setattr(bundle_module, "build_model", build_then_blow_up)
    seen = []
    with_diverging = fit_bundle(spec, tiny_dataset, configs("float64", seeds=(0, 1, 2)),
                                on_epoch=lambda index, epoch, metrics: seen.append((index, epoch)))
    assert with_diverging[1].status == "diverged" and with_diverging[1].diverged_epoch == 1
    assert with_diverging[1].test_acc is None and len(with_diverging[1].epochs) == 1
    assert seen == [(0, 1), (2, 1), (0, 2), (2, 2)]  # the diverged seed's epoch is never handed on
    for alone, together in zip(without, (with_diverging[0], with_diverging[2])):
        assert together.status == "completed"
        assert [[e[k] for k in METRICS] for e in together.epochs] == [[e[k] for k in METRICS] for e in alone.epochs]
        assert together.test_predictions == alone.test_predictions
        for x, y in zip(alone.model.state_dict().values(), together.model.state_dict().values()):
            assert torch.equal(x, y)


def test_early_stopping_per_seed(tiny_dataset):
    spec = parse_model(SPECS["mlp-dropout"])
    options = {"patience": 1, "epochs": 6}
    separate = [fit(spec, tiny_dataset, c) for c in configs("float64", **options)]
    bundled = fit_bundle(spec, tiny_dataset, configs("float64", **options))
    for alone, together in zip(separate, bundled):
        assert (together.best_epoch, together.stopped_early, len(together.epochs)) == (
            alone.best_epoch, alone.stopped_early, len(alone.epochs))
        assert compare_parameters(alone.model, together.model) < 1e-9


def test_resume_from_checkpoints_at_different_epochs(tiny_dataset, tmp_path):
    """A crash between two seeds' checkpoint writes: each resumes at its own epoch, none repeated."""
    spec = parse_model(SPECS["cnn-bn"])
    reference = fit_bundle(spec, tiny_dataset, [
        TrainConfig(seed=s, device="cpu", train_limit=STEPS_IMAGES, epochs=3, out_dir=tmp_path / f"ref{s}")
        for s in (0, 1)])
    # Seed 0 checkpointed after epoch 2, seed 1 after epoch 1.
    for seed, epochs in ((0, 2), (1, 1)):
        fit(spec, tiny_dataset, TrainConfig(seed=seed, device="cpu", train_limit=STEPS_IMAGES, epochs=epochs,
                                            out_dir=tmp_path / f"run{seed}"))
    calls = []
    resumed = fit_bundle(spec, tiny_dataset, [
        TrainConfig(seed=s, device="cpu", train_limit=STEPS_IMAGES, epochs=3, out_dir=tmp_path / f"run{s}",
                    resume=True) for s in (0, 1)], on_epoch=lambda i, e, m: calls.append((i, e)))
    assert sorted(calls) == [(0, 3), (1, 2), (1, 3)]
    for a, b in zip(reference, resumed):
        assert [e["epoch"] for e in b.epochs] == [1, 2, 3]
        for row_a, row_b in zip(a.epochs, b.epochs):
            assert row_b["loss"] == pytest.approx(row_a["loss"], rel=1e-5)
        assert json.loads((tmp_path / f"run{a.seed}" / "checkpoint.json").read_text())["epoch"] == 3


def test_a_damaged_checkpoint_names_its_folder(tiny_dataset, tmp_path):
    spec = parse_model(SPECS["mlp-dropout"])
    first = [TrainConfig(seed=s, device="cpu", train_limit=STEPS_IMAGES, epochs=1, out_dir=tmp_path / f"s{s}")
             for s in (0, 1)]
    fit_bundle(spec, tiny_dataset, first)
    (tmp_path / "s1" / "checkpoint.json").write_text("{not json")
    with pytest.raises(CheckpointError) as caught:
        fit_bundle(spec, tiny_dataset, [TrainConfig(seed=s, device="cpu", train_limit=STEPS_IMAGES, epochs=2,
                                                    out_dir=tmp_path / f"s{s}", resume=True) for s in (0, 1)])
    assert caught.value.out_dir == tmp_path / "s1"


def test_checkpoints_of_the_global_rng_scheme_are_not_resumed(tiny_dataset, tmp_path):
    spec = parse_model(SPECS["mlp-dropout"])
    config = TrainConfig(seed=0, device="cpu", train_limit=STEPS_IMAGES, epochs=1, out_dir=tmp_path)
    fit(spec, tiny_dataset, config)
    pointer = tmp_path / "checkpoint.json"
    info = json.loads(pointer.read_text())
    del info["identity"]["rng"], info["identity"]["dtype"]  # as written before per-seed generators
    pointer.write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match="random-number scheme"):
        fit(spec, tiny_dataset, TrainConfig(seed=0, device="cpu", train_limit=STEPS_IMAGES, epochs=2,
                                            out_dir=tmp_path, resume=True))


def test_configs_must_differ_only_in_seed(tiny_dataset):
    spec = parse_model(SPECS["mlp-dropout"])
    with pytest.raises(MnistlabError, match="differ only in"):
        fit_bundle(spec, tiny_dataset, [TrainConfig(seed=0, epochs=1), TrainConfig(seed=1, epochs=2)])
    with pytest.raises(MnistlabError, match="seeds must differ"):
        fit_bundle(spec, tiny_dataset, [TrainConfig(seed=0), TrainConfig(seed=0)])


def test_bf16_bundle_trains(tiny_dataset):
    spec = parse_model(SPECS["cnn-bn"])
    histories = fit_bundle(spec, tiny_dataset, configs(seeds=(0, 1), precision="bf16", epochs=3))
    for history in histories:
        assert history.status == "completed"
        assert history.epochs[-1]["loss"] < history.epochs[0]["loss"]


@pytest.mark.parametrize("model_id", zoo_models())
def test_every_zoo_model_builds_as_a_bundle(model_id):
    """Eval-mode logits of the stacked network equal each seed's own network's."""
    spec = get_model(model_id)
    models = [build_model(spec, seed=seed) for seed in (0, 1)]
    stacked = StackedModel(models).eval()
    images = torch.rand(2, *((spec.input[2], spec.input[0], spec.input[1]) if len(spec.input) == 3 else spec.input),
                        generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        together = stacked(shared_inputs(images, 2, spec.input))
        for index, model in enumerate(models):
            alone = model.eval()(images)
            torch.testing.assert_close(together[index], alone, rtol=1e-4, atol=1e-5)


def test_capacity_respects_the_activation_limit(tiny_dataset):
    spec = parse_model(SPECS["cnn-bn"])
    assert bundle_capacity(spec, tiny_dataset, TrainConfig(device="cpu")) > 8
    # About 12,400 floats of activations per image: 48.5 MiB per seed at batch 1024, 194 MiB at 4096.
    assert bundle_capacity(spec, tiny_dataset, TrainConfig(device="cpu", batch_size=1024, max_activation_mib=100)) == 2
    assert bundle_capacity(spec, tiny_dataset, TrainConfig(device="cpu", batch_size=4096, max_activation_mib=100)) == 1


# --- the CLI and the runner --------------------------------------------------------------------


def test_train_seeds_prints_one_summary_per_seed_and_writes_seed_folders(tiny_data_dir, tmp_path):
    spec_file = tmp_path / "tiny.yaml"
    spec_file.write_text(TINY_CNN)
    result = run_cli("train", spec_file, "--dataset", tiny_data_dir, "--seeds", "0,1", "--epochs", "1",
                     "--device", "cpu", "--threads", "1", "--out", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    assert [line.split(":")[0] for line in result.stdout.splitlines() if line.startswith("seed ")] == ["seed 0", "seed 1"]
    for seed in (0, 1):
        history = json.loads((tmp_path / "out" / f"seed-{seed}" / "history.json").read_text())
        assert history["seed"] == seed and (tmp_path / "out" / f"seed-{seed}" / "model.safetensors").exists()
        assert history["threads"] == 1  # --threads reaches a bundle
    histories = train(parse_model(yaml.safe_load(TINY_CNN)), tiny_data_dir, seeds=[0, 1], epochs=1, device="cpu",
                      threads=1)
    assert [h.seed for h in histories] == [0, 1]
    assert histories[0].test_predictions == json.loads(
        (tmp_path / "out" / "seed-0" / "history.json").read_text())["test_predictions"]


def test_train_seeds_without_out_trains_prints_and_writes_nothing(tiny_data_dir, tmp_path, monkeypatch):
    # Failed before with "TypeError: ... multiple values for keyword argument 'out_dir'".
    spec_file = tmp_path / "tiny.yaml"
    spec_file.write_text(TINY_CNN)
    monkeypatch.chdir(tmp_path)
    result = run_cli("train", spec_file, "--dataset", tiny_data_dir, "--seeds", "0,1", "--epochs", "1",
                     "--device", "cpu", "--threads", "1")
    assert result.exit_code == 0, result.stderr
    assert [line.split(":")[0] for line in result.stdout.splitlines() if line.startswith("seed ")] == ["seed 0", "seed 1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.yaml"]  # like `train` without --out: no model folder


def test_resume_after_sigkill_of_a_bundle_equals_an_uninterrupted_bundle(tmp_path):
    data_dir = write_dataset(synthetic_dataset(n_train=2000, n_test=200, seed=1), tmp_path / "data")
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(TINY_CNN.replace("epochs: 2", "epochs: 3").replace("filters: 4", "filters: 6"))
    common = ["train", str(spec_file), "--dataset", str(data_dir), "--seeds", "0,1", "--quiet", "--device", "cpu"]
    reference_dir, killed_dir = tmp_path / "reference", tmp_path / "killed"
    assert spawn_cli(*common, "--out", str(reference_dir)).wait(timeout=300) == 0

    pointer = killed_dir / "seed-1" / "checkpoint.json"
    sigkill_after_checkpoint(spawn_cli(*common, "--out", str(killed_dir)), pointer, epoch=1)
    assert json.loads(pointer.read_text())["epoch"] < 3, "killed too late to test a resume"

    assert spawn_cli(*common, "--out", str(killed_dir), "--resume").wait(timeout=300) == 0
    for seed in (0, 1):
        reference = json.loads((reference_dir / f"seed-{seed}" / "history.json").read_text())
        resumed = json.loads((killed_dir / f"seed-{seed}" / "history.json").read_text())
        for key in (*METRICS, "test_loss", "test_acc", "test_predictions"):
            assert resumed[key] == reference[key], (seed, key)


def _store_contents(store: RunStore, experiment: str) -> dict:
    contents = {}
    for run in store.runs(experiment):
        labels, predicted = store.predictions(run.id)
        contents[(run.model_id, run.seed)] = (run.status, store.history(run.id), run.final, predicted.tolist())
    return contents


def test_run_with_bundles_stores_what_single_runs_store(tiny_data_dir, tmp_path):
    path = write_experiment(tmp_path, tiny_experiment(tiny_data_dir, name="tiny-experiment", epochs=2, seeds=(0, 1, 2)))
    contents = []
    for bundle in (1, 2):
        result = run_cli("run", path, "--store", tmp_path / f"store{bundle}", "--bundle", str(bundle))
        assert result.exit_code == 0, result.stderr
        assert "trained 6" in result.stdout
        assert list((tmp_path / f"store{bundle}" / "reports").rglob("*.html"))  # the report was written
        with RunStore(tmp_path / f"store{bundle}") as store:
            contents.append(_store_contents(store, "tiny-experiment"))
    single, bundled = contents
    assert single.keys() == bundled.keys()
    for key in single:
        status_a, history_a, final_a, predicted_a = single[key]
        status_b, history_b, final_b, predicted_b = bundled[key]
        assert status_a == status_b == "completed"
        for metric in ("loss", "val_loss", "train_eval_loss"):
            assert history_b[metric] == pytest.approx(history_a[metric], rel=1e-4), (key, metric)
        assert final_b["test_loss"] == pytest.approx(final_a["test_loss"], rel=1e-4)
        assert sum(a != b for a, b in zip(predicted_a, predicted_b)) <= 2


def test_run_bundle_sets_aside_only_the_damaged_seed(tiny_data_dir, tmp_path):
    from mnistlab.training.history import Reporter

    class Interrupt(Reporter):
        def start_epoch(self, epoch, epochs, steps):
            if epoch == 2:
                raise KeyboardInterrupt  # leaves the claims and both seeds' epoch-1 checkpoints

    experiment = parse_experiment({**tiny_experiment(tiny_data_dir, name="dmg", epochs=2, seeds=(0, 1)),
                                   "models": [{"spec": yaml.safe_load(TINY_CNN)}]})
    with RunStore(tmp_path / "store") as store:
        with pytest.raises(KeyboardInterrupt):
            run_experiment(experiment, store, bundle=2, reporter_for=lambda task: Interrupt())
        good, damaged = sorted(store.runs("dmg"), key=lambda run: run.seed)
        assert len(store.history(good.id)["loss"]) == 1
        (store.run_dir(damaged.id) / "checkpoint" / "checkpoint.json").write_text("{not json")
        outcome = run_experiment(experiment, store, bundle=2)
        assert sorted(outcome.trained) == sorted([good.id, damaged.id])
        good, damaged = store.get_run(good.id), store.get_run(damaged.id)
        assert good.status == damaged.status == "completed"
        assert not good.notes
        assert len(damaged.notes) == 1 and "damaged checkpoint moved to checkpoint.damaged-1" in damaged.notes[0]
        assert (store.run_dir(damaged.id) / "checkpoint.damaged-1" / "checkpoint.json").exists()
        assert len(store.history(good.id)["loss"]) == len(store.history(damaged.id)["loss"]) == 2


def test_bad_bundle_values_are_one_line_errors(tmp_path):
    for value in ("0", "x", "-1"):
        result = run_cli("run", "quick", "--bundle", value, "--store", tmp_path / "s")
        assert result.exit_code == 2 and len(result.error_lines) == 1 and "--bundle" in result.stderr
    with pytest.raises(MnistlabError, match="--bundle"):
        from mnistlab.api import run

        run("quick", tmp_path / "s", bundle=0)


def test_images_per_second_counts_every_seed(tiny_dataset):
    spec = parse_model(SPECS["mlp-dropout"])
    histories = fit_bundle(spec, tiny_dataset, configs(seeds=(0, 1)))
    assert all(h.images_per_second and math.isfinite(h.images_per_second) for h in histories)
    assert histories[0].images_per_second == histories[1].images_per_second


def test_the_fused_chains_are_fused_in_the_bundle_too(tiny_dataset, monkeypatch):
    """The float64 equality above holds for FUSED_CHAINS through fused.bn_dropout, not the plain parts."""
    from mnistlab.nn import fused
    from mnistlab.nn import stacked
    from mnistlab.nn.fused import FusedBatchNorm

    assert sum(isinstance(m, FusedBatchNorm) for m in build_model(parse_model(FUSED_CHAINS), seed=0).modules()) == 3
    calls = []
    monkeypatch.setattr(stacked, "bn_dropout", lambda *args, **kwargs: calls.append(args[0].shape) or
                        fused.bn_dropout(*args, **kwargs))
    fit_bundle(parse_model(FUSED_CHAINS), tiny_dataset, configs("float64", train_limit=32))
    assert (16, 3 * 4, 26, 26) in calls and (16, 3 * 16) in calls  # K*C channels, (B, K*F) features
