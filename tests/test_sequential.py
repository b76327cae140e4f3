"""Until decided: the error guarantee and power of analysis/sequential.py, by simulation (synthetic
per-seed differences, fixed seeds, no training), and its look-by-look rule on hand-made data."""

from __future__ import annotations

import math

import pytest

from mnistlab.analysis.multiple import ALPHA
from mnistlab.analysis.sequential import (DIFFERENT, EQUIVALENT, Design, decide, fixed_power, interval, simulate,
                                          trace_question)

STUDIES = 4000
SPREAD = 0.1  # points
MANY_LOOKS = Design(first=3, per_round=1, max_seeds=20, margin=0.0)  # 18 looks, no equivalence stop


def test_looks_and_spending_sum_to_alpha():
    assert MANY_LOOKS.looks == tuple(range(3, 21))
    assert Design(3, 4, 12).looks == (3, 7, 11, 12)  # the last look is always max_seeds
    for spending in ("final-heavy", "uniform"):
        design = Design(3, 2, 15, family=4, spending=spending)
        total = sum(design.look_alpha(k) for k in range(len(design.looks))) * design.family
        assert math.isclose(total, ALPHA)


def test_null_rate_stays_under_alpha_over_many_looks():
    result = simulate(MANY_LOOKS, 0.0, SPREAD, STUDIES, seed=1)
    assert result.different <= ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / STUDIES)  # measured 0.039
    heavy = simulate(MANY_LOOKS, 0.0, SPREAD, STUDIES, seed=2, tails=3.0)
    assert heavy.different <= ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / STUDIES)  # measured 0.033


def test_naive_retesting_exceeds_the_bound():
    # The same looks at 5% each: the classic error, which the bound above must catch.
    naive = Design(first=3, per_round=1, max_seeds=20, margin=0.0, spending="naive")
    result = simulate(naive, 0.0, SPREAD, STUDIES, seed=1)
    assert result.different > ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / STUDIES)  # measured 0.23


def test_power_near_the_fixed_design_on_fewer_runs():
    effect = 0.10  # points: the fixed 20-seed design's power is about 99% here
    fixed = fixed_power(MANY_LOOKS.max_seeds, effect, SPREAD, STUDIES, seed=3)
    sequential = simulate(MANY_LOOKS, effect, SPREAD, STUDIES, seed=3)
    assert sequential.different >= fixed - 0.02  # measured 0.984 against 0.990
    assert sequential.mean_seeds <= 0.8 * MANY_LOOKS.max_seeds  # measured 76%


def test_uniform_spending_loses_power():
    # Why final-heavy was chosen: Bonferroni with equal shares holds its last look to alpha / 18.
    uniform = Design(first=3, per_round=1, max_seeds=20, margin=0.0, spending="uniform")
    heavy = simulate(MANY_LOOKS, 0.08, SPREAD, STUDIES, seed=4).different
    assert simulate(uniform, 0.08, SPREAD, STUDIES, seed=4).different < heavy - 0.1  # measured 0.64 vs 0.90


def test_decide_and_interval():
    assert decide(0.1, 0.3, 0.2) == DIFFERENT
    assert decide(-0.3, -0.1, 0.2) == DIFFERENT
    assert decide(-0.1, 0.15, 0.2) == EQUIVALENT
    assert decide(-0.1, 0.25, 0.2) is None
    mean, low, high = interval([1.0, 2.0, 3.0], 0.05)
    assert mean == 2.0 and math.isclose(high - mean, 4.302653 / math.sqrt(3), rel_tol=1e-5)  # t_2(0.975) = 4.3027
    assert interval([1.0], 0.05)[1] == -math.inf


def test_trace_stops_at_the_first_decision_and_needs_whole_looks():
    design = Design(first=2, per_round=2, max_seeds=8, margin=0.2)
    clear = [1.0, 1.1, 0.9, 1.0, 1.05, 0.95, 1.0, 1.0]
    trace = trace_question(design, clear)
    assert trace.decision == DIFFERENT
    assert all(look.decision is None for look in trace.looks[:-1])
    assert trace.decided_at is not None and trace.decided_at.seeds in design.looks
    noisy = [0.3, -0.3, 0.2]  # 3 seeds: only the 2-seed look is complete
    assert [look.seeds for look in trace_question(design, noisy).looks] == [2]
    assert trace_question(design, noisy).decision is None


@pytest.mark.parametrize("bad", [dict(first=1), dict(per_round=0), dict(max_seeds=2), dict(margin=-1.0),
                                 dict(spending="pocock")])
def test_design_refuses_bad_settings(bad):
    settings = dict(first=3, per_round=1, max_seeds=10) | bad
    with pytest.raises(ValueError):
        Design(**settings)


def test_a_difference_at_the_margin_is_rarely_called_equivalent():
    # The worst case for "equivalent": a true difference exactly at the margin, with a spread that
    # keeps "different" from being reached first; naive re-testing fails the same bound.
    bound = ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / STUDIES)
    design = Design(first=3, per_round=1, max_seeds=20, margin=0.2)
    assert simulate(design, 0.2, 0.3, STUDIES, seed=5).equivalent <= bound  # measured 0.018
    naive = Design(first=3, per_round=1, max_seeds=20, margin=0.2, spending="naive")
    assert simulate(naive, 0.2, 0.3, STUDIES, seed=5).equivalent > bound  # measured 0.076
