"""Tests that span many comparisons: Holm's correction, McNemar over every seed, and the
smallest difference a study could have detected.

Kept apart from ``analysis`` (one comparison's interval or p-value) because these answer a
report-level question: of all the differences a report names, which survive correction, and
what would a non-significant one have needed to be to show up?
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import NormalIndPower

from mnistlab.analysis.compare import McNemarResult, mcnemar_exact

__all__ = [
    "ALPHA",
    "POWER",
    "StratifiedMcNemar",
    "holm",
    "mcnemar_detectable",
    "mcnemar_stratified",
    "t_detectable",
]

# Every report decides at the conventional two-sided 5% and sizes "what could have been seen"
# at the conventional 80% power; both stated in the report's words, never implied.
ALPHA = 0.05
POWER = 0.80


def holm(p_values: Sequence[float], alpha: float = ALPHA) -> tuple[np.ndarray, np.ndarray]:
    """Holm's step-down adjustment of one family of tests: (adjusted p-values, reject flags).

    Holm controls the family-wise error rate at ``alpha`` under any dependence between the
    tests (the comparisons of one best model against every other share that model's runs),
    and is uniformly more powerful than Bonferroni. NaN p-values stay NaN and do not count
    towards the family's size.
    """
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(p.shape, math.nan)
    reject = np.zeros(p.shape, dtype=bool)
    known = np.isfinite(p)
    if known.any():
        flags, corrected, _, _ = multipletests(p[known], alpha=alpha, method="holm")
        adjusted[known], reject[known] = corrected, flags
    return adjusted, reject


@dataclass(frozen=True)
class StratifiedMcNemar:
    """McNemar's exact test with one stratum per seed; ``per_seed`` holds each seed's table."""

    b: int
    c: int
    n_images: int
    seeds: tuple[int, ...]
    per_seed: tuple[McNemarResult, ...]
    p_value: float

    @property
    def discordant(self) -> int:
        return self.b + self.c


def mcnemar_stratified(pairs: Sequence[tuple[Sequence[bool], Sequence[bool]]],
                       seeds: Sequence[int]) -> StratifiedMcNemar:
    """McNemar's exact test over every seed: one (correct_a, correct_b) pair of flags per seed.

    Conditional on the number of discordant images n_s in seed s, the count b_s that model A
    alone got right is Binomial(n_s, 1/2) under the null that A and B err alike — whatever the
    seed's own discordance rate, so strata with different rates need no weighting. Runs of
    different seeds are trained independently, so the b_s are independent and their sum is
    Binomial(Σ n_s, 1/2): the stratified exact test is the exact binomial test on the pooled
    discordant counts (the exact form of the Mantel–Haenszel test for matched pairs).
    """
    if not pairs:
        raise ValueError("mcnemar_stratified needs at least one seed's paired predictions")
    if len(pairs) != len(seeds):
        raise ValueError(f"{len(pairs)} prediction pairs for {len(seeds)} seeds")
    per_seed = tuple(mcnemar_exact(a, b) for a, b in pairs)
    b = sum(result.b for result in per_seed)
    c = sum(result.c for result in per_seed)
    if b + c == 0:
        p_value = 1.0
    else:
        p_value = float(sps.binomtest(min(b, c), n=b + c, p=0.5, alternative="two-sided").pvalue)
    return StratifiedMcNemar(b, c, len(pairs[0][0]), tuple(int(s) for s in seeds), per_seed, p_value)


def mcnemar_detectable(discordant: int, n_images: int, n_seeds: int,
                       alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest accuracy difference (a fraction) McNemar's test over ``n_seeds`` × ``n_images``
    paired predictions with ``discordant`` disagreements would detect with ``power``.

    Given the discordant pairs, the test is a one-sample test of the share A wins against 1/2;
    statsmodels' power solver gives the detectable effect as Cohen's h, turned back into a
    share, and the share's excess over 1/2 times the discordant rate is the accuracy gap.
    nan when there are no discordant pairs (nothing to size the test on).
    """
    if discordant <= 0:
        return math.nan
    h = NormalIndPower().solve_power(effect_size=None, nobs1=discordant, alpha=alpha, power=power,
                                     ratio=0, alternative="two-sided")
    share = math.sin(math.asin(math.sqrt(0.5)) + float(h) / 2) ** 2
    return min(1.0, (2 * share - 1) * discordant / (n_images * n_seeds))


def t_detectable(standard_error: float, dof: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest true difference a two-sided t test with this standard error and these degrees
    of freedom would reject at ``alpha`` with probability ``power`` (noncentral t, solved exactly).

    nan when there is no standard error or no degree of freedom left to estimate it.
    """
    if not (math.isfinite(standard_error) and standard_error > 0 and dof > 0):
        return math.nan
    return _detectable_shift(float(dof), alpha, power) * standard_error


@functools.lru_cache(maxsize=256)
def _detectable_shift(dof: float, alpha: float, power: float) -> float:
    """The noncentrality (in standard errors) at which the test's power is ``power``; it depends
    on the degrees of freedom only, and one report's contrasts share a few, hence the cache."""
    critical = sps.t.ppf(1 - alpha / 2, dof)

    def shortfall(shift: float) -> float:
        # scipy's noncentral t returns nan for the far tail's vanishing mass: count it as 0.
        far_tail = float(np.nan_to_num(sps.nct.cdf(-critical, dof, shift)))
        return float(sps.nct.sf(critical, dof, shift)) + far_tail - power

    # Power is alpha < power at shift 0; widen the bracket until it passes ``power`` (with one
    # degree of freedom that takes a shift of ~20 standard errors).
    upper = critical + 1.0
    while shortfall(upper) < 0:
        upper *= 2
    return float(optimize.brentq(shortfall, 0.0, upper))
