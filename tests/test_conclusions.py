"""Written conclusions and factor effects in the report, on a synthetic 2 × 2 study with 3 seeds
whose effects are known: batch norm removes about 4 of 100 test errors, depth does nothing."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from mnistlab.data.synthetic import synthetic_dataset
from mnistlab.report import experiment_conclusions, factor_study, runs_frame, write_report
from mnistlab.report.conclusions import TEST_PROTOCOL_CAVEAT
from mnistlab.runs.store import RunStore

from test_report import GOOD_HISTORY, MID_HISTORY, Page, add_run
from cli_driver import run_cli

SEEDS = (0, 1, 2)
# Test-set errors out of 100 per (depth, norm) and seed.
ERRORS = {
    ("2", "plain"): (10, 11, 9), ("3", "plain"): (11, 10, 10),
    ("2", "bn"): (6, 7, 6), ("3", "bn"): (6, 6, 7),
}


@pytest.fixture(scope="module")
def labels():
    return synthetic_dataset(n_train=200, n_test=100, seed=0).test_labels.numpy().astype(np.uint8)


def make_store(path, labels, protocol: str) -> RunStore:
    store = RunStore(path)
    store.save_experiment("study", {"name": "study", "protocol": protocol, "dataset": "synthetic",
                                    "models": [{"model": "mlp", "vary": {"depth": [2, 3], "norm": ["plain", "bn"]}}],
                                    "seeds": list(SEEDS)})
    for (depth, norm), errors in ERRORS.items():
        model = f"mlp.depth-{depth}.norm-{norm}"
        for seed, count in zip(SEEDS, errors):
            add_run(store, "study", model, "an MLP variant", None, seed, "completed", count,
                    GOOD_HISTORY if norm == "bn" else MID_HISTORY, labels,
                    factors={"depth": depth, "norm": norm}, protocol=protocol)
    return store


@pytest.fixture(scope="module")
def store(tmp_path_factory, labels):
    store = make_store(tmp_path_factory.mktemp("study") / "runs", labels, "split")
    yield store
    store.close()


def hand_interval(effect: str) -> tuple[float, float, float]:
    """The main effect and its 95% CI by hand: cell means + seed block (balanced), MSE on 6 dof."""
    acc = {(d, n, s): 1 - e / 100 for (d, n), errs in ERRORS.items() for s, e in zip(SEEDS, errs)}
    grand = np.mean(list(acc.values()))
    cell = {(d, n): np.mean([acc[d, n, s] for s in SEEDS]) for d, n in ERRORS}
    seed = {s: np.mean([acc[d, n, s] for d, n in ERRORS]) for s in SEEDS}
    residual = sum((acc[d, n, s] - cell[d, n] - seed[s] + grand) ** 2 for d, n, s in acc)
    mse = residual / (12 - 4 - 2)
    se = math.sqrt(mse * (1 / 6 + 1 / 6))  # a difference of two means of 6 runs each
    if effect == "norm":
        estimate = np.mean([cell[d, "bn"] - cell[d, "plain"] for d in ("2", "3")])
    else:
        estimate = np.mean([cell["3", n] - cell["2", n] for n in ("plain", "bn")])
    half = stats.t.ppf(0.975, 6) * se
    return estimate, estimate - half, estimate + half


def test_factor_effects_match_the_hand_computation(store):
    study = factor_study(runs_frame(store, "study"))
    assert study.factors == {"depth": ("2", "3"), "norm": ("plain", "bn")}
    (bn,) = [e for e in study.main_effects("test_acc") if e.factor == "norm"]
    (deeper,) = [e for e in study.main_effects("test_acc") if e.factor == "depth"]
    assert (bn.estimate, bn.low, bn.high) == pytest.approx(hand_interval("norm"))
    assert (deeper.estimate, deeper.low, deeper.high) == pytest.approx(hand_interval("depth"))
    assert bn.estimate == pytest.approx(23 / 600)  # (61 - 38) / 6 errors per 100 images
    assert bn.significant and not deeper.significant
    assert len(study.interactions("test_acc")) == 1  # 2 × 2 with 3 seeds leaves 6 residual dof


def test_conclusions_text_for_a_synthetic_study(store):
    conclusions = experiment_conclusions(store, "study")
    study = factor_study(runs_frame(store, "study"))
    (bn,) = [e for e in study.main_effects("test_acc") if e.factor == "norm"]
    (deeper,) = [e for e in study.main_effects("test_acc") if e.factor == "depth"]
    text = conclusions.text()
    assert (f"Changing norm from plain to bn raises test accuracy by 3.83 points (95% CI {bn.low * 100:.2f} to "
            f"{bn.high * 100:.2f}, p = {bn.p_value:.4f}, Holm-adjusted p = {bn.p_adjusted:.4f}), "
            "averaged over depth (2, 3) and 3 seeds.") in text
    assert (f"Changing depth from 2 to 3 changes test accuracy by -0.17 points (95% CI {deeper.low * 100:.2f} to "
            f"{deeper.high * 100:.2f}, p = {deeper.p_value:.4f}, Holm-adjusted p = {deeper.p_adjusted:.4f}), "
            "averaged over norm (plain, bn) and 3 seeds: not distinguishable from noise; the study could "
            f"have detected about {deeper.detectable * 100:.2f} points (80% power, two-sided α = 0.05).") in text
    # The chosen model: highest validation accuracy (a bn variant), its test figure reported once.
    assert conclusions.sentences[0].startswith("The model chosen on validation alone (mean final validation "
                                               "accuracy 95.50%) is mlp.depth-2.norm-bn; its test accuracy, "
                                               "reported once, is 93.67%")
    assert "Of 3 comparisons of mlp.depth-2.norm-bn with the other models" in text
    assert "treat them as equal" not in text and "caveat" not in text


def test_every_sentence_carries_the_caveat_under_protocol_test(tmp_path, labels):
    with make_store(tmp_path / "runs", labels, "test") as store:
        conclusions = experiment_conclusions(store, "study")
    assert len(conclusions.sentences) > 5
    assert all(TEST_PROTOCOL_CAVEAT in sentence or "peeks" in sentence for sentence in conclusions.sentences)
    assert "this choice peeks" in conclusions.sentences[0]


def test_report_has_conclusions_effects_table_and_plot(tmp_path, store):
    paths = write_report(store, "study", tmp_path / "out")
    page = Page(paths.html.read_text())
    assert "Changing norm from plain to bn raises test accuracy by 3.83 points" in page.text("conclusions")
    assert page.find("img", inside="effects", data_kind="effects")
    rows = page.find("tr", inside="effects-table")
    assert len(rows) == 1 + 2 * (2 + 1)  # header; per metric two main effects and one interaction
    assert "Holm-adjusted" in page.text("effects")
    markdown = paths.markdown.read_text()
    assert "## Conclusions" in markdown and "## Factor effects" in markdown
    assert "(tmp" not in markdown and "study-files/effects-test_acc.png" in markdown


def test_cli_prints_the_conclusions(store):
    code, out, err = run_cli("conclusions", "study", "--store", str(store.root))
    assert code == 0, err
    assert "Changing norm from plain to bn raises test accuracy by 3.83 points" in " ".join(out.split())
    code, _, err = run_cli("conclusions", "nope", "--store", str(store.root))
    assert code == 2 and "no experiment 'nope'" in err


def _comparison(b: int, c: int, acc_a: list[float], acc_b: list[float]):
    """A comparison of model a with model b over len(acc_a) seeds, McNemar counts b (a right, b wrong) and c."""
    from mnistlab.analysis.compare import paired_difference
    from mnistlab.analysis.ranking import ModelComparison
    from mnistlab.analysis.multiple import StratifiedMcNemar

    seeds = tuple(range(len(acc_a)))
    p_value = float(stats.binomtest(min(b, c), b + c, 0.5).pvalue)
    mcnemar = StratifiedMcNemar(b, c, 10_000 * len(seeds), seeds, (), p_value)
    difference = paired_difference(np.array(acc_a), np.array(acc_b))
    return ModelComparison("m-a", "m-b", seeds, seeds, seeds, mcnemar, difference, p_value, 0.001, "")


def test_a_mcnemar_difference_that_seeds_do_not_support_is_not_called_real():
    from mnistlab.report.conclusions import comparison_sentence

    # Image-level McNemar is decisive (p < 1e-6), but the seeds disagree on the sign: the interval over
    # seeds includes 0, so the sentence must not say m-a is more accurate.
    mixed = _comparison(150, 60, [0.990, 0.975, 0.991], [0.980, 0.982, 0.981])
    assert mixed.significant and mixed.difference.includes_zero
    sentence = comparison_sentence(mixed)
    assert "more accurate" not in sentence and "includes 0" in sentence and "not established" in sentence
    # The same counts with seeds that agree: now it is a finding.
    agreeing = _comparison(150, 60, [0.990, 0.989, 0.991], [0.980, 0.981, 0.979])
    assert not agreeing.difference.includes_zero
    assert "m-a is more accurate than m-b by 1.00 points" in comparison_sentence(agreeing)


def test_significance_sentence_agrees_with_the_seed_interval():
    from mnistlab.analysis.compare import McNemarResult, paired_difference, significance_sentence

    result = McNemarResult(150, 60, 60, 1e-9)
    spans = paired_difference(np.array([0.990, 0.975, 0.991]), np.array([0.980, 0.982, 0.981]))
    assert "not established beyond these seeds" in significance_sentence("m-a", "m-b", result, spans)
    clear = paired_difference(np.array([0.990, 0.989, 0.991]), np.array([0.980, 0.981, 0.979]))
    assert significance_sentence("m-a", "m-b", result, clear).endswith("significant at 5%.")
