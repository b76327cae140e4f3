"""Tests for the diagnosis rules and the statistics in mnistlab.analysis.diagnose.

Histories are synthetic but shaped like the seeds' runs: a Keras mnist_cnn-style healthy
run, an MLP without dropout that overfits, the SGD + sigmoid model that stays at chance,
a batch-norm model whose validation accuracy swings, and so on.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mnistlab.analysis.diagnose import Diagnosis, diagnose, diagnose_seeds
from mnistlab.analysis.compare import (
    McNemarResult, PairedDifference, accuracy_interval, accuracy_interval_text, binomial_se, mcnemar_exact,
    paired_difference, significance_sentence, summarise_runs,
)
from mnistlab.analysis.intervals import mean_ci, t_quantile

T_975_2 = 4.302653  # Student's t, 97.5th percentile, 2 degrees of freedom (tables)


def history(loss, acc, val_loss, val_acc) -> dict[str, list[float]]:
    return {"loss": loss, "acc": acc, "val_loss": val_loss, "val_acc": val_acc}


def codes(findings: list[Diagnosis]) -> list[str]:
    return [finding.code for finding in findings]


HEALTHY = history(
    loss=[0.26, 0.09, 0.065, 0.055, 0.047, 0.042, 0.038, 0.035, 0.032, 0.030, 0.028, 0.027],
    acc=[0.92, 0.973, 0.980, 0.984, 0.986, 0.988, 0.989, 0.990, 0.9905, 0.991, 0.9915, 0.992],
    val_loss=[0.058, 0.042, 0.036, 0.033, 0.031, 0.030, 0.029, 0.030, 0.028, 0.029, 0.028, 0.0285],
    val_acc=[0.981, 0.986, 0.988, 0.989, 0.990, 0.9905, 0.991, 0.990, 0.9915, 0.991, 0.9918,
             0.9921],
)

OVERFIT = history(
    loss=[0.20, 0.08, 0.055, 0.042, 0.030, 0.022, 0.016, 0.012, 0.009, 0.0067],
    acc=[0.94, 0.976, 0.983, 0.987, 0.991, 0.993, 0.995, 0.996, 0.997, 0.998],
    val_loss=[0.060, 0.045, 0.038, 0.0351, 0.037, 0.040, 0.044, 0.048, 0.052, 0.0557],
    val_acc=[0.981, 0.985, 0.987, 0.988, 0.988, 0.987, 0.987, 0.986, 0.986, 0.986],
)

UNDERFIT = history(
    loss=[0.90, 0.55, 0.42, 0.36, 0.32, 0.29, 0.27, 0.26, 0.25, 0.24],
    acc=[0.75, 0.84, 0.875, 0.89, 0.90, 0.91, 0.915, 0.92, 0.925, 0.93],
    val_loss=[0.50, 0.38, 0.33, 0.30, 0.28, 0.26, 0.25, 0.24, 0.23, 0.22],
    val_acc=[0.87, 0.895, 0.905, 0.912, 0.918, 0.922, 0.926, 0.93, 0.932, 0.935],
)

# 001's sigmoid + SGD(lr=0.01) model: loss flat at ln(10), accuracy wandering between the
# class frequencies, including one 2.4-point fall that must not read as instability.
CHANCE = history(
    loss=[2.3060, 2.3021, 2.3016, 2.3014, 2.3013, 2.3012],
    acc=[0.1050, 0.1118, 0.1124, 0.1124, 0.1123, 0.1124],
    val_loss=[2.3018, 2.3013, 2.3011, 2.3012, 2.3010, 2.3011],
    val_acc=[0.1135, 0.1135, 0.0892, 0.1028, 0.1135, 0.1135],
)

DIVERGED = history(
    loss=[0.50, 3.2, math.nan, math.nan],
    acc=[0.85, 0.30, 0.098, 0.098],
    val_loss=[0.30, math.inf, math.nan, math.nan],
    val_acc=[0.90, 0.098, 0.098, 0.098],
)

# A batch-norm model: val_acc swings 0.99 -> 0.95 -> 0.99 with a val_loss spike.
UNSTABLE = history(
    loss=[0.15, 0.05, 0.035, 0.028, 0.022, 0.019, 0.017],
    acc=[0.955, 0.985, 0.989, 0.991, 0.993, 0.994, 0.995],
    val_loss=[0.045, 0.033, 0.030, 0.160, 0.032, 0.029, 0.028],
    val_acc=[0.985, 0.989, 0.990, 0.950, 0.990, 0.991, 0.9915],
)


# --- diagnose: one code per synthetic history --------------------------------------------


@pytest.mark.parametrize(
    ("hist", "expected"),
    [
        (HEALTHY, "healthy"),
        (OVERFIT, "overfitting"),
        (UNDERFIT, "underfitting"),
        (CHANCE, "stuck_at_chance"),
        (DIVERGED, "diverged"),
        (UNSTABLE, "unstable_validation"),
    ],
)
def test_each_history_fires_exactly_its_code(hist, expected):
    assert codes(diagnose(hist)) == [expected]


def test_overfitting_rule_quotes_the_numbers():
    (finding,) = diagnose(OVERFIT)
    assert finding.label == "Overfitting"
    assert finding.rule == (
        "val_loss rose from its minimum 0.0351 (epoch 4) to 0.0557 (+59%) "
        "while train loss (Keras running mean, dropout on) went 0.0420 → 0.0067: the gap between them widened "
        "from -0.0069 to 0.0490"
    )


def test_overfitting_needs_train_loss_to_keep_falling():
    # Both losses rising together is a training problem, not memorisation.
    rising = [0.20, 0.08, 0.055, 0.042, 0.043, 0.045, 0.05, 0.05, 0.05, 0.06]
    flat_train = dict(OVERFIT, loss=rising)
    assert "overfitting" not in codes(diagnose(flat_train))


def test_small_val_loss_rise_is_not_overfitting():
    creeping = [0.06, 0.045, 0.038, 0.0351, 0.036, 0.037, 0.038, 0.039, 0.04, 0.041]
    mild = dict(OVERFIT, val_loss=creeping)
    assert codes(diagnose(mild)) == ["healthy"]


def test_underfitting_rule_and_threshold_override():
    (finding,) = diagnose(UNDERFIT)
    assert finding.rule == "final train acc (Keras running mean, dropout on) 0.9300 is below 0.97"
    # Fashion-MNIST-style threshold: the same run is fine there.
    assert codes(diagnose(UNDERFIT, min_train_acc=0.90)) == ["healthy"]


def test_stuck_at_chance_suppresses_the_other_rules():
    (finding,) = diagnose(CHANCE)
    assert finding.rule == (
        "final train acc (Keras running mean, dropout on) 0.1124 and val acc 0.1135 are at most 0.05 above chance (0.1000)"
    )


def test_chance_depends_on_the_number_of_classes():
    coin = history([0.69, 0.69], [0.51, 0.52], [0.69, 0.69], [0.50, 0.52])
    assert codes(diagnose(coin, n_classes=2)) == ["stuck_at_chance"]
    assert codes(diagnose(coin, n_classes=10)) == ["underfitting"]


def test_diverged_from_non_finite_loss_names_the_first_one():
    (finding,) = diagnose(DIVERGED)
    assert finding.rule == "loss is nan at epoch 3"


def test_diverged_from_status_alone():
    (finding,) = diagnose(HEALTHY, status="diverged")
    assert finding.code == "diverged"
    assert finding.rule == "the run's status is 'diverged'"


def test_missing_value_counts_as_non_finite():
    # SQLite stores NaN as NULL, so a history read back from the store holds None.
    stored = dict(HEALTHY, val_loss=HEALTHY["val_loss"][:5] + [None] * 7)
    (finding,) = diagnose(stored)
    assert finding.code == "diverged"
    assert finding.rule == "val_loss is nan at epoch 6"


def test_unstable_rule_reports_both_the_fall_and_the_spike():
    (finding,) = diagnose(UNSTABLE)
    assert finding.rule == (
        "val_acc fell 0.0400 from epoch 3 to 4 (0.9900 → 0.9500), more than 0.02; "
        "val_loss jumped +433% at epoch 4 (0.0300 → 0.1600) and fell back to 0.0320 at epoch 5"
    )


def test_val_loss_spike_alone_is_unstable():
    spike = dict(HEALTHY, val_loss=[0.058, 0.042, 0.036, 0.070, 0.031] + HEALTHY["val_loss"][5:])
    (finding,) = diagnose(spike)
    assert finding.code == "unstable_validation"
    assert finding.rule.startswith("val_loss jumped +94% at epoch 4")


def test_val_loss_jump_that_does_not_reverse_is_not_a_spike():
    # A jump on the last epoch has nothing to fall back in; one that stays up is a trend.
    last = dict(HEALTHY, val_loss=HEALTHY["val_loss"][:-1] + [0.05])
    stays = dict(HEALTHY, val_loss=HEALTHY["val_loss"][:10] + [0.05, 0.049])
    assert "unstable_validation" not in codes(diagnose(last))
    assert "unstable_validation" not in codes(diagnose(stays))


def test_rising_val_acc_is_learning_not_instability():
    fast = dict(HEALTHY, val_acc=[0.90, 0.97] + HEALTHY["val_acc"][2:])
    assert codes(diagnose(fast)) == ["healthy"]


def test_several_findings_come_in_fixed_order():
    dipping = [0.87, 0.895, 0.905, 0.86, 0.918, 0.922, 0.926, 0.93, 0.932, 0.94]
    shaky = dict(UNDERFIT, val_acc=dipping)
    assert codes(diagnose(shaky)) == ["underfitting", "unstable_validation"]


def test_healthy_rule_summarises_the_run():
    (finding,) = diagnose(HEALTHY)
    assert finding.label == "Healthy"
    assert finding.rule == (
        "no rule fired: final train acc (Keras running mean, dropout on) 0.9920, val acc 0.9921; "
        "final val_loss 0.0285 is +2% over its minimum 0.0280 (epoch 9)"
    )


def test_diagnosis_is_frozen():
    (finding,) = diagnose(HEALTHY)
    with pytest.raises(dataclasses.FrozenInstanceError):
        finding.code = "overfitting"  # type: ignore[misc]


# --- diagnose: one-epoch histories -------------------------------------------------------


def test_one_epoch_healthy_says_what_cannot_be_judged():
    (finding,) = diagnose(history([0.20], [0.98], [0.06], [0.985]))
    assert finding.code == "healthy"
    assert finding.rule == (
        "no rule fired: final train acc (Keras running mean, dropout on) 0.9800, val acc 0.9850; "
        "only 1 epoch, so overfitting and instability cannot be judged"
    )


@pytest.mark.parametrize(
    ("hist", "expected"),
    [
        (history([0.60], [0.90], [0.30], [0.93]), "underfitting"),
        (history([2.30], [0.11], [2.30], [0.1135]), "stuck_at_chance"),
        (history([math.nan], [0.098], [math.nan], [0.098]), "diverged"),
    ],
)
def test_one_epoch_histories(hist, expected):
    assert codes(diagnose(hist)) == [expected]


# --- diagnose: bad input -----------------------------------------------------------------


def test_rejects_malformed_histories_and_arguments():
    with pytest.raises(ValueError, match="differ in length"):
        diagnose(dict(HEALTHY, val_acc=HEALTHY["val_acc"][:-1]))
    with pytest.raises(ValueError, match="lacks val_loss"):
        diagnose({key: HEALTHY[key] for key in ("loss", "acc", "val_acc")})
    with pytest.raises(ValueError, match="no epochs"):
        diagnose(history([], [], [], []))
    with pytest.raises(ValueError, match="status"):
        diagnose(HEALTHY, status="finished")
    with pytest.raises(ValueError, match="n_classes"):
        diagnose(HEALTHY, n_classes=1)


# --- mean_ci -----------------------------------------------------------------------------


def test_mean_ci_matches_hand_computation():
    mean, half_width = mean_ci([0.99, 0.992, 0.994])
    assert mean == pytest.approx(0.992)
    # sd = 0.002 exactly, t(0.975, 2) = 4.302653
    assert half_width == pytest.approx(0.002 * T_975_2 / math.sqrt(3), rel=1e-6)


def test_mean_ci_other_confidence_uses_matching_quantile():
    _, half_width = mean_ci([0.99, 0.992, 0.994], confidence=0.99)
    assert half_width == pytest.approx(0.002 * 9.924843 / math.sqrt(3), rel=1e-6)


def test_mean_ci_single_value_has_no_interval():
    mean, half_width = mean_ci([0.9925])
    assert mean == 0.9925
    assert math.isnan(half_width)


def test_the_t_quantile_is_scipys_for_whole_degrees_of_freedom():
    for confidence in (0.5, 0.9, 0.95, 0.99, 0.999):
        for dof in [*range(1, 40), 100, 101, 1000, 1001]:
            expected = stats.t.ppf((1 + confidence) / 2, dof)
            assert t_quantile(confidence, dof) == pytest.approx(expected, rel=1e-10), (confidence, dof)
    with pytest.raises(ValueError):
        t_quantile(0.95, 0)
    with pytest.raises(ValueError):
        t_quantile(0.95, 2.5)


def test_mean_ci_is_scipys_t_interval():
    values = [0.91, 0.93, 0.925, 0.88, 0.94]
    low, high = stats.t.interval(0.95, 4, loc=np.mean(values), scale=stats.sem(values))
    assert mean_ci(values) == pytest.approx((np.mean(values), (high - low) / 2), rel=1e-10)


def test_mean_ci_rejects_empty_and_bad_confidence():
    with pytest.raises(ValueError):
        mean_ci([])
    with pytest.raises(ValueError):
        mean_ci([0.9, 0.91], confidence=95)


# --- binomial_se -------------------------------------------------------------------------


def test_binomial_se_matches_the_reference_figure():
    # DESIGN.md: one standard error at 99.2% on 10,000 test images is about 0.09 points.
    assert binomial_se(0.992, 10_000) == pytest.approx(math.sqrt(0.992 * 0.008 / 10_000))
    assert round(binomial_se(0.992, 10_000) * 100, 2) == 0.09


def test_binomial_se_rejects_nonsense():
    with pytest.raises(ValueError):
        binomial_se(99.2, 10_000)
    with pytest.raises(ValueError):
        binomial_se(0.99, 0)


# --- mcnemar_exact -----------------------------------------------------------------------


def paired_flags(both: int, b: int, c: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    """Correctness flags of A and B realising a 2x2 table, shuffled so order is irrelevant."""
    a = [True] * both + [True] * b + [False] * c + [False] * neither
    bb = [True] * both + [False] * b + [True] * c + [False] * neither
    order = np.random.default_rng(0).permutation(len(a))
    return np.array(a)[order], np.array(bb)[order]


@pytest.mark.parametrize(("b", "c"), [(10, 2), (2, 10), (45, 25), (31, 30), (0, 6), (1, 1)])
def test_mcnemar_matches_scipy_binomtest(b, c):
    result = mcnemar_exact(*paired_flags(9_900, b, c, 50))
    assert (result.b, result.c, result.statistic) == (b, c, min(b, c))
    assert result.p_value == pytest.approx(stats.binomtest(min(b, c), b + c, 0.5).pvalue)


def test_mcnemar_known_value():
    result = mcnemar_exact(*paired_flags(100, 10, 2, 5))
    # 2 * P(X <= 2), X ~ Binomial(12, 1/2) = 2 * (1 + 12 + 66) / 4096
    assert result.p_value == pytest.approx(158 / 4096)
    assert result.p_value == pytest.approx(0.0386, abs=5e-5)


def test_mcnemar_textbook_example_by_hand():
    # 7 images only A gets right, 1 only B gets right:
    # p = 2 * P(X <= 1), X ~ Binomial(8, 1/2) = 2 * (1 + 8) / 256 = 0.0703125.
    a = [True] * 7 + [False] + [True] * 20
    b = [False] * 7 + [True] + [True] * 20
    assert mcnemar_exact(a, b) == McNemarResult(b=7, c=1, statistic=1, p_value=0.0703125)


def test_mcnemar_no_discordant_pairs_gives_p_one():
    assert mcnemar_exact(*paired_flags(50, 0, 0, 3)) == McNemarResult(0, 0, 0, 1.0)


def test_mcnemar_is_symmetric_in_its_arguments():
    a, b = paired_flags(500, 12, 4, 20)
    forward, backward = mcnemar_exact(a, b), mcnemar_exact(b, a)
    assert (forward.b, forward.c) == (backward.c, backward.b)
    assert forward.p_value == backward.p_value


def test_mcnemar_accepts_zero_one_but_not_labels_or_mismatched_lengths():
    assert mcnemar_exact([1, 1, 0], [1, 0, 1]) == McNemarResult(1, 1, 1, 1.0)
    with pytest.raises(ValueError, match="booleans"):
        mcnemar_exact([7, 2, 1], [7, 2, 3])
    with pytest.raises(ValueError, match="length"):
        mcnemar_exact([True, False], [True])


# --- paired_difference -------------------------------------------------------------------


def test_paired_difference_by_seed():
    diff = paired_difference([0.992, 0.994, 0.993], [0.990, 0.991, 0.992])
    # per-seed differences 0.002, 0.003, 0.001: mean 0.002, sd 0.001
    assert diff.paired
    assert diff.mean == pytest.approx(0.002)
    assert diff.half_width == pytest.approx(0.001 * T_975_2 / math.sqrt(3), rel=1e-6)
    assert diff.low == pytest.approx(0.002 - diff.half_width)
    assert diff.high == pytest.approx(0.002 + diff.half_width)
    assert diff.note == "paired by seed over 3 seeds"


def test_paired_difference_unpaired_matches_welch():
    a, b = [0.990, 0.992, 0.994], [0.985, 0.987]
    diff = paired_difference(a, b)
    welch = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert not diff.paired
    assert diff.mean == pytest.approx(0.006)
    assert (diff.low, diff.high) == pytest.approx((welch.low, welch.high))
    assert diff.note == "unpaired (Welch): 3 vs 2 runs, seeds could not be matched"


def test_paired_difference_with_too_few_runs_has_no_interval():
    assert math.isnan(paired_difference([0.993], [0.990]).half_width)
    assert math.isnan(paired_difference([0.993], [0.990, 0.991]).half_width)
    assert paired_difference([0.993], [0.990, 0.991]).mean == pytest.approx(0.0025)


def test_paired_difference_identical_unpaired_runs_have_zero_width():
    diff = paired_difference([0.99, 0.99], [0.98, 0.98, 0.98])
    assert diff.half_width == 0.0


# --- significance_sentence ---------------------------------------------------------------


def difference(mean: float, half_width: float) -> PairedDifference:
    return PairedDifference(mean, half_width, 0.95, 3, 3, True, "paired by seed over 3 seeds")


def test_significant_sentence():
    sentence = significance_sentence(
        "s002-m9", "s000-m1", McNemarResult(40, 12, 12, 0.0003), difference(0.0062, 0.0021)
    )
    assert sentence == (
        "s002-m9 beats s000-m1 by 0.62 points (95% CI 0.41 to 0.83); "
        "McNemar p = 0.0003: significant at 5%."
    )


def test_not_significant_sentence():
    sentence = significance_sentence(
        "s000-m3", "s000-m1", McNemarResult(30, 22, 22, 0.3317), difference(0.0008, 0.0015)
    )
    assert sentence == (
        "s000-m3 beats s000-m1 by 0.08 points (95% CI -0.07 to 0.23); "
        "McNemar p = 0.3317: not significant at 5%: not distinguishable from noise, which is not evidence they are equal."
    )


def test_sentence_for_single_runs_and_tiny_p():
    sentence = significance_sentence(
        "a", "b", McNemarResult(90, 10, 10, 1e-12), difference(0.008, math.nan)
    )
    assert sentence == (
        "a beats b by 0.80 points (no CI: too few runs); McNemar p < 0.0001: significant at 5%."
    )


def test_sentence_says_trails_when_the_difference_is_negative():
    sentence = significance_sentence(
        "a", "b", McNemarResult(5, 9, 5, 0.4240), difference(-0.0004, 0.001)
    )
    assert sentence.startswith("a trails b by 0.04 points (95% CI -0.14 to 0.06)")


# --- summarise_runs ----------------------------------------------------------------------


def run_table() -> pd.DataFrame:
    rows = [
        # model, seed, test_acc, test_loss, train_loss, train_acc, val_loss, val_acc, best, s/epoch
        ("s000-m1", 0, 0.990, 0.030, 0.020, 0.994, 0.032, 0.989, 10, 2.0),
        ("s000-m1", 1, 0.992, 0.028, 0.022, 0.993, 0.030, 0.991, 11, 2.2),
        ("s000-m1", 2, 0.994, 0.026, 0.018, 0.995, 0.028, 0.993, 12, 2.4),
        ("s002-m9", 0, 0.9954, 0.018, 0.010, 0.997, 0.020, 0.995, 9, 5.0),
        ("s002-m9", 1, 0.9952, math.nan, 0.012, 0.996, 0.022, 0.994, 8, 5.2),
        ("s001-m1", 0, 0.1135, 2.301, 2.301, 0.112, 2.301, 0.1135, 1, 1.0),
    ]
    columns = [
        "model", "seed", "test_acc", "test_loss", "train_loss", "train_acc",
        "val_loss", "val_acc", "best_epoch", "seconds_per_epoch",
    ]
    return pd.DataFrame(rows, columns=columns)


def test_summarise_runs_one_row_per_model_best_first():
    summary = summarise_runs(run_table())
    assert list(summary.index) == ["s002-m9", "s000-m1", "s001-m1"]
    assert summary.index.name == "model"
    assert list(summary.columns) == [
        "n", "test_acc_mean", "test_acc_ci95", "test_loss_mean", "train_loss_mean",
        "train_acc_mean", "val_loss_mean", "val_acc_mean", "best_epoch_mean",
        "seconds_per_epoch_mean",
    ]
    assert summary["n"].tolist() == [2, 3, 1]


def test_summarise_runs_values():
    summary = summarise_runs(run_table())
    m1 = summary.loc["s000-m1"]
    assert m1["test_acc_mean"] == pytest.approx(0.992)
    assert m1["test_acc_ci95"] == pytest.approx(0.002 * T_975_2 / math.sqrt(3), rel=1e-6)
    assert m1["best_epoch_mean"] == pytest.approx(11.0)
    assert m1["seconds_per_epoch_mean"] == pytest.approx(2.2)
    # A missing test loss (diverged evaluation) is skipped, not propagated.
    assert summary.loc["s002-m9", "test_loss_mean"] == pytest.approx(0.018)
    assert math.isnan(summary.loc["s001-m1", "test_acc_ci95"])


def test_summarise_runs_rejects_missing_columns():
    with pytest.raises(ValueError, match="seconds_per_epoch"):
        summarise_runs(run_table().drop(columns="seconds_per_epoch"))


# --- inference-mode training metrics ---------------------------------------------------------------


def _dropout_history(running_acc: float, fit_acc: float) -> dict[str, list[float]]:
    """Four epochs of a BatchNormalization + dropout MLP: running-mean acc reads low, val acc is high."""
    return {
        "loss": [0.40, 0.20, 0.15, 0.12], "acc": [0.88, 0.94, 0.96, running_acc],
        "val_loss": [0.15, 0.10, 0.08, 0.075], "val_acc": [0.955, 0.970, 0.976, 0.979],
        "train_eval_loss": [0.14, 0.08, 0.05, 0.04], "train_eval_acc": [0.958, 0.976, 0.985, fit_acc],
    }


def test_dropout_model_is_judged_on_inference_mode_train_accuracy():
    # The s004-m7 case: Keras's running mean (dropout on) 0.9699, but the model fits its data.
    (finding,) = diagnose(_dropout_history(running_acc=0.9699, fit_acc=0.9890))
    assert finding.code == "healthy"
    assert "train acc (inference mode, fixed training subsample) 0.9890" in finding.rule


def test_underfitting_reads_inference_mode_accuracy_when_recorded():
    (finding,) = diagnose(_dropout_history(running_acc=0.99, fit_acc=0.9500))
    assert finding.code == "underfitting"
    assert finding.rule == "final train acc (inference mode, fixed training subsample) 0.9500 is below 0.97"


def test_partial_inference_mode_metrics_fall_back_to_the_running_mean():
    history = _dropout_history(running_acc=0.9699, fit_acc=0.9890)
    history["train_eval_acc"][0] = float("nan")  # an epoch recorded before the metric existed
    (finding,) = diagnose(history)
    assert finding.code == "underfitting" and "Keras running mean" in finding.rule


# --- real histories (tests/fixtures/histories, recorded by record.py on real MNIST) ------------------

HISTORIES = Path(__file__).parent / "fixtures" / "histories"


def _recorded(model: str) -> dict[str, list[float]]:
    epochs = json.loads((HISTORIES / f"{model}.json").read_text())["epochs"]
    return {key: [epoch[key] for epoch in epochs] for key in epochs[0] if key != "epoch"}


def test_real_dropout_mlp_is_not_underfitting():
    # s004-m7: BatchNormalization + dropout 0.5; Keras's running-mean acc sits below val acc by design.
    history = _recorded("s004-m7")
    assert history["acc"][-1] < history["val_acc"][-1]
    codes = [finding.code for finding in diagnose(history)]
    assert "underfitting" not in codes
    # The same history judged on the running mean alone is the misdiagnosis this rule replaced.
    running_only = {key: values for key, values in history.items() if not key.startswith("train_eval")}
    assert [finding.code for finding in diagnose(running_only)][:1] == ["underfitting"]


def test_real_plain_mlp_overfits():
    # s004-m2 without dropout, 20 epochs on 54,000 images: val loss turns up while train loss falls.
    codes = [finding.code for finding in diagnose(_recorded("s004-m2"))]
    assert "overfitting" in codes and "underfitting" not in codes


def test_sentence_decides_on_the_holm_adjusted_p_and_names_the_detectable_difference():
    # The case: raw p = 0.0314, one of 8 tests, Holm-adjusted about 0.25.
    sentence = significance_sentence(
        "s004-m2", "s004-m7", McNemarResult(60, 36, 36, 0.0314), difference(0.0012, 0.0010),
        adjusted_p=0.2512, detectable=0.0035,
    )
    assert sentence == (
        "s004-m2 beats s004-m7 by 0.12 points (95% CI 0.02 to 0.22); McNemar p = 0.0314, "
        "Holm-adjusted p = 0.2512: not significant at 5%: not distinguishable from noise "
        "(the test could have detected about 0.35 points with 80% power)."
    )


def test_overfitting_needs_the_gap_to_widen_not_the_train_loss_to_fall():
    # Real s004-m2 numbers (seed 0, 10 epochs on 54,000 images): the inference-mode train loss
    # wobbles up a little after val_loss's minimum while val_loss climbs 36%: overfitting.
    history = {"loss": [0.23, 0.08, 0.056, 0.037, 0.029, 0.027, 0.02, 0.018, 0.02, 0.017],
               "acc": [0.93, 0.975, 0.982, 0.988, 0.991, 0.991, 0.994, 0.994, 0.993, 0.994],
               "val_loss": [0.125, 0.11, 0.108, 0.0976, 0.123, 0.112, 0.123, 0.116, 0.128, 0.1331],
               "val_acc": [0.961, 0.966, 0.967, 0.973, 0.966, 0.97, 0.967, 0.973, 0.972, 0.971],
               "train_eval_loss": [0.08, 0.05, 0.035, 0.021, 0.03, 0.02, 0.025, 0.018, 0.03, 0.027],
               "train_eval_acc": [0.976, 0.985, 0.99, 0.993, 0.99, 0.994, 0.992, 0.996, 0.995, 0.992]}
    codes = [finding.code for finding in diagnose(history)]
    assert "overfitting" in codes
    # Both losses climbing together is not a widening gap: no overfitting call.
    history["train_eval_loss"] = [value + 0.5 for value in history["val_loss"]]
    assert "overfitting" not in [finding.code for finding in diagnose(history)]


def test_accuracy_interval_is_clipped_to_what_an_accuracy_can_be():
    # s000-m7's seeds: 88.4, 53.3 and 88.3% — the symmetric t interval runs past 100%.
    mean, half = mean_ci([0.884, 0.533, 0.883])
    assert mean + half > 1
    low, high = accuracy_interval(mean, half)
    assert high == 1.0 and low == pytest.approx(mean - half)
    assert accuracy_interval_text(mean, half) == f"{mean * 100:.2f}% (CI {low * 100:.2f} to 100.00)"
    assert accuracy_interval(0.01, 0.05) == (0.0, pytest.approx(0.06))


def test_accuracy_interval_text_inside_the_bounds_and_for_one_run():
    assert accuracy_interval_text(0.9815, 0.005) == "98.15% ± 0.50"
    assert accuracy_interval_text(0.9815, 0.005, unit="") == "98.15 ± 0.50"
    assert accuracy_interval_text(0.9815, math.nan) == "98.15%"


# -- a model's diagnosis over its seeds --------------------------------------------------------------


def _history_of(code: str) -> dict[str, list[float]]:
    """A history that fires exactly ``code`` (this file's synthetic histories)."""
    hist = {"healthy": HEALTHY, "overfitting": OVERFIT}[code]
    assert codes(diagnose(hist)) == [code]
    return hist


def test_model_diagnosis_covers_every_seed_and_names_the_dissenters():
    runs = [(10, 0, _history_of("healthy"), "completed"), (11, 1, _history_of("overfitting"), "completed"),
            (12, 2, _history_of("healthy"), "completed")]
    model = diagnose_seeds("m", runs)
    assert model.codes == "healthy" and model.agreeing == 2
    assert model.text == "healthy (2 of 3 seeds; seed 1: overfitting)"
    # The rule texts quoted are the lowest agreeing seed's, from that real run.
    assert (model.seed, model.run_id) == (0, 10) and model.findings == tuple(diagnose(_history_of("healthy")))
    assert [seed.codes for seed in model.dissenting] == ["overfitting"]


def test_model_diagnosis_when_all_seeds_agree_and_for_one_seed():
    overfit = _history_of("overfitting")
    model = diagnose_seeds("m", [(3, 2, overfit, "completed"), (1, 0, overfit, "completed"), (2, 1, overfit, "completed")])
    assert model.text == "overfitting (3 of 3 seeds)" and [s.seed for s in model.seeds] == [0, 1, 2]
    assert diagnose_seeds("m", [(1, 5, overfit, "completed")]).text == "overfitting (1 of 1 seed)"


def test_model_diagnosis_tie_goes_to_the_lowest_seed():
    runs = [(1, 4, _history_of("overfitting"), "completed"), (2, 7, _history_of("healthy"), "completed")]
    model = diagnose_seeds("m", runs)
    assert model.codes == "overfitting" and model.seed == 4
    assert model.text == "overfitting (1 of 2 seeds; seed 7: healthy)"


def test_model_diagnosis_needs_a_run():
    with pytest.raises(ValueError, match="no diagnosed run"):
        diagnose_seeds("m", [])
