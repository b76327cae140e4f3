"""Holm's correction, McNemar over every seed, detectable effects, and factor effects from a
linear model, on synthetic run sets whose true effects are known."""

from __future__ import annotations

import gc
import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mnistlab.analysis.effects import factor_effects
from mnistlab.analysis.multiple import holm, mcnemar_detectable, mcnemar_stratified, t_detectable

from test_analysis import paired_flags


# -- Holm --------------------------------------------------------------------------------------------


def test_holm_matches_a_hand_computed_case():
    # Sorted p: 0.005 (×4 = 0.020), 0.01 (×3 = 0.030), 0.03 (×2 = 0.060), 0.04 (×1 = 0.040, but the
    # step-down keeps adjusted p monotone: max(0.060, 0.040) = 0.060). Back in input order:
    adjusted, reject = holm([0.01, 0.04, 0.03, 0.005])
    assert adjusted.tolist() == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert reject.tolist() == [True, False, False, True]


def test_holm_caps_at_one_and_skips_missing_p_values():
    adjusted, reject = holm([0.5, math.nan, 0.6])
    # A family of two (nan does not count): 0.5 × 2 = 1.0, then max(1.0, 0.6) = 1.0.
    assert adjusted[0] == pytest.approx(1.0) and adjusted[2] == pytest.approx(1.0)
    assert math.isnan(adjusted[1]) and not reject.any()


def test_holm_of_one_test_is_the_raw_p():
    adjusted, _ = holm([0.0314])
    assert adjusted.tolist() == pytest.approx([0.0314])


# -- McNemar over every seed ------------------------------------------------------------------------


def test_stratified_mcnemar_pools_discordant_pairs_over_seeds():
    # Seed 0: 7 images only A right, 1 only B; seed 1: 5 and 2. Pooled: 12 vs 3 of 15:
    # p = 2 * P(X <= 3), X ~ Binomial(15, 1/2) = 2 * (1 + 15 + 105 + 455) / 32768.
    seed0, seed1 = paired_flags(500, 7, 1, 20), paired_flags(500, 5, 2, 20)
    result = mcnemar_stratified([seed0, seed1], [0, 1])
    assert (result.b, result.c, result.discordant, result.n_images) == (12, 3, 15, 528)
    assert result.p_value == pytest.approx(2 * 576 / 32768)
    assert [(r.b, r.c) for r in result.per_seed] == [(7, 1), (5, 2)]
    # One seed alone is the plain exact McNemar test.
    single = mcnemar_stratified([seed0], [0])
    assert single.p_value == pytest.approx(0.0703125)


def test_stratified_mcnemar_without_disagreement_has_p_one():
    assert mcnemar_stratified([paired_flags(10, 0, 0, 1)], [3]).p_value == 1.0
    with pytest.raises(ValueError):
        mcnemar_stratified([], [])


def test_mcnemar_detectable_grows_with_discordance_and_shrinks_with_seeds():
    # 100 discordant predictions out of 2 × 10,000: (z_.975 + z_.8) × sqrt(100) / 20,000 ≈ 0.0014.
    assert mcnemar_detectable(100, 10_000, 2) == pytest.approx(2.8016 * 10 / 20_000, rel=0.02)
    assert mcnemar_detectable(400, 10_000, 2) > mcnemar_detectable(100, 10_000, 2)
    assert mcnemar_detectable(100, 10_000, 4) < mcnemar_detectable(100, 10_000, 2)
    assert math.isnan(mcnemar_detectable(0, 10_000, 2))


def test_t_detectable_is_the_shift_with_80_percent_power():
    # Many degrees of freedom: the normal approximation (z_.975 + z_.8) × SE.
    assert t_detectable(0.1, 10_000) == pytest.approx((1.95996 + 0.84162) * 0.1, rel=1e-3)
    # Few: by definition the two-sided test at that shift rejects 80% of the time.
    shift = t_detectable(1.0, 4)
    critical = stats.t.ppf(0.975, 4)
    power = stats.nct.sf(critical, 4, shift) + stats.nct.cdf(-critical, 4, shift)
    assert power == pytest.approx(0.8, abs=1e-6)
    assert t_detectable(1.0, 1) > t_detectable(1.0, 4) > t_detectable(1.0, 100)
    assert math.isnan(t_detectable(math.nan, 4)) and math.isnan(t_detectable(0.1, 0))


# -- factor effects on synthetic studies -------------------------------------------------------------

DEPTHS = ["2", "3", "5"]
NORMS = ["plain", "bn"]
SEEDS = [0, 1, 2]


def study(rng: np.random.Generator, bn_effect: float = 0.0, depth_effect: float = 0.0, noise: float = 0.001,
          seed_effect: float = 0.002, interaction: float = 0.0) -> pd.DataFrame:
    """One simulated 3 × 2 study with 3 seeds: known effects plus Gaussian noise per run."""
    seed_shift = {seed: rng.normal(0, seed_effect) for seed in SEEDS}
    rows = []
    for depth, norm, seed in itertools.product(DEPTHS, NORMS, SEEDS):
        bn = norm == "bn"
        acc = (0.97 + bn_effect * bn + depth_effect * (depth == "5") + interaction * bn * (depth == "5")
               + seed_shift[seed] + rng.normal(0, noise))
        rows.append({"depth": depth, "norm": norm, "seed": seed, "test_acc": acc, "val_loss": 1.0 - acc})
    return pd.DataFrame(rows)


FACTORS = {"depth": DEPTHS, "norm": NORMS}


def effect(result, metric: str, factor: str, level: str, by: str | None = None):
    (found,) = [e for e in result.effects
                if e.metric == metric and e.factor == factor and e.level == level and e.by_level == by]
    return found


def test_known_effects_are_recovered_with_intervals_that_cover_them():
    result = factor_effects(study(np.random.default_rng(1), bn_effect=0.004, depth_effect=-0.002), FACTORS)
    bn = effect(result, "test_acc", "norm", "bn")
    assert bn.reference == "plain" and bn.low < 0.004 < bn.high and bn.estimate == pytest.approx(0.004, abs=0.001)
    assert bn.significant and bn.p_adjusted >= bn.p_value
    assert bn.averaged_over == ("depth (2, 3, 5)", "3 seeds")
    five = effect(result, "test_acc", "depth", "5")
    assert five.low < -0.002 < five.high and five.significant
    three = effect(result, "test_acc", "depth", "3")
    assert three.low < 0 < three.high  # no true effect: the interval covers 0
    # val_loss is 1 - acc here: the same effects, mirrored.
    assert effect(result, "val_loss", "norm", "bn").estimate == pytest.approx(-bn.estimate)
    # Main effects of one metric are one Holm family: 3 tests.
    family = result.main_effects("test_acc")
    assert len(family) == 3
    assert sorted(e.p_adjusted for e in family) == pytest.approx(sorted(holm([e.p_value for e in family])[0]))


def test_effect_equals_the_difference_of_level_means_in_a_balanced_design():
    data = study(np.random.default_rng(2), bn_effect=0.003)
    result = factor_effects(data, FACTORS)
    means = data.groupby("norm")["test_acc"].mean()
    assert effect(result, "test_acc", "norm", "bn").estimate == pytest.approx(means["bn"] - means["plain"])
    level = [m for m in result.level_means if m.metric == "test_acc" and m.factor == "norm" and m.level == "bn"]
    assert level[0].mean == pytest.approx(means["bn"]) and level[0].low < means["bn"] < level[0].high


def test_interaction_is_estimated_when_the_design_allows():
    result = factor_effects(study(np.random.default_rng(3), bn_effect=0.002, interaction=0.006), FACTORS)
    assert ":" in result.formulas["test_acc"]
    deeper = effect(result, "test_acc", "depth", "5", by="bn")
    assert deeper.by_factor == "norm" and deeper.low < 0.006 < deeper.high and deeper.significant
    assert not effect(result, "test_acc", "depth", "3", by="bn").significant


def test_one_run_per_cell_and_one_seed_stays_additive():
    data = study(np.random.default_rng(4), bn_effect=0.003)
    result = factor_effects(data[data["seed"] == 0], FACTORS)
    assert ":" not in result.formulas["test_acc"] and "seed" not in result.formulas["test_acc"]
    assert not result.interactions("test_acc")


def test_null_factor_false_positive_rate_is_five_percent(monkeypatch):
    # 400 simulated studies in which depth has no effect (norm does): the raw test of depth 3 vs 2
    # must reject at about 5%, within binomial tolerance, and Holm's adjustment can only lower it.
    # statsmodels' Holm branch calls gc.collect() on every call (~0.1 s in a big process); the
    # correction itself is arithmetic, so the simulation skips the collection.
    monkeypatch.setattr(gc, "collect", lambda *args: 0)
    rng = np.random.default_rng(12)
    studies = 400
    raw = adjusted = 0
    for _ in range(studies):
        result = factor_effects(study(rng, bn_effect=0.003), FACTORS, metrics=("test_acc",))
        null = effect(result, "test_acc", "depth", "3")
        raw += null.p_value < 0.05
        adjusted += null.p_adjusted < 0.05
    assert stats.binomtest(raw, studies, 0.05).pvalue > 0.01, f"{raw} of {studies} rejected"
    assert adjusted <= raw


def test_factor_effects_rejects_a_study_without_factors():
    with pytest.raises(ValueError, match="two or more levels"):
        factor_effects(study(np.random.default_rng(0)), {"depth": ["2"]})
