"""Factor effects: what changing one thing in a model does, with an interval, over many runs.

A factor study trains every combination of factor levels with several seeds. One ordinary
least-squares model per metric (statsmodels) explains each run's figure by its factor levels
plus its seed as a blocking factor (a seed fixes the data order, dropout masks and the
validation split's use, so runs of one seed share part of their luck). Pairwise interactions
join the model when the design allows: every pair of levels present and residual degrees of
freedom left over.

Effects are contrasts of the fitted cell means, averaged with equal weight over the levels of
the other factors and over seeds: "BN vs plain, averaged over depths 2, 3 and 5". They are
estimated with ``OLSResults.t_test``, so estimate, 95% CI and p-value come from one place.
Each metric's main effects form one family of tests and its interactions another; both are
Holm-corrected (``mnistlab.analysis.multiple.holm``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import statsmodels.api as sm
from patsy import build_design_matrices, dmatrices

from mnistlab.analysis.multiple import ALPHA, holm, t_detectable

__all__ = ["METRICS", "Effect", "FactorStudy", "LevelMean", "factor_effects"]

# The metrics whose effects a study reports: higher is better for accuracy, lower for loss.
METRICS = {"test_acc": "test accuracy", "val_loss": "final validation loss"}
# Fewer residual degrees of freedom than this and the interaction model's error variance is
# too poorly known to be worth the lost main-effect precision: stay additive.
MIN_INTERACTION_DOF = 2


@dataclass(frozen=True)
class Effect:
    """One contrast: ``level`` against ``reference`` of ``factor`` (a main effect), or for an
    interaction, how much the effect of ``level`` differs at ``by_level`` of ``by_factor``
    compared with their references (a difference of differences)."""

    metric: str
    factor: str
    level: str
    reference: str
    estimate: float
    low: float
    high: float
    p_value: float
    p_adjusted: float
    detectable: float
    averaged_over: tuple[str, ...]
    n_runs: int
    by_factor: str | None = None
    by_level: str | None = None
    by_reference: str | None = None

    @property
    def significant(self) -> bool:
        """Decided on the Holm-adjusted p-value only."""
        return self.p_adjusted < ALPHA

    @property
    def is_interaction(self) -> bool:
        return self.by_factor is not None

    @property
    def label(self) -> str:
        text = f"{self.factor}={self.level} vs {self.reference}"
        if self.by_factor is not None:
            text += f": at {self.by_factor}={self.by_level} minus at {self.by_factor}={self.by_reference}"
        return text


@dataclass(frozen=True)
class LevelMean:
    """The fitted mean of ``metric`` at one factor level, averaged over everything else."""

    metric: str
    factor: str
    level: str
    mean: float
    low: float
    high: float


@dataclass(frozen=True)
class FactorStudy:
    """Every factor effect of a study; ``factors`` maps each factor to its levels, reference first."""

    factors: dict[str, tuple[str, ...]]
    effects: tuple[Effect, ...]
    level_means: tuple[LevelMean, ...]
    n_runs: int
    seeds: tuple[int, ...]
    formulas: dict[str, str]
    notes: tuple[str, ...]

    def main_effects(self, metric: str) -> list[Effect]:
        return [e for e in self.effects if e.metric == metric and not e.is_interaction]

    def interactions(self, metric: str) -> list[Effect]:
        return [e for e in self.effects if e.metric == metric and e.is_interaction]


def factor_effects(runs: pd.DataFrame, factors: Mapping[str, Sequence[str]],
                   metrics: Sequence[str] = tuple(METRICS)) -> FactorStudy:
    """Effects of ``factors`` (name → levels, the first being the reference) on each metric.

    ``runs``: one row per completed run with a column per factor (its level, as text), ``seed``
    and the metric columns. Factors with a single level are left out (nothing to contrast).
    """
    varied = {name: tuple(str(level) for level in levels) for name, levels in factors.items() if len(levels) > 1}
    if not varied:
        raise ValueError("a factor study needs at least one factor with two or more levels")
    missing = [name for name in (*varied, "seed", *metrics) if name not in runs.columns]
    if missing:
        raise ValueError(f"run table lacks columns: {', '.join(missing)}")
    effects: list[Effect] = []
    means: list[LevelMean] = []
    formulas: dict[str, str] = {}
    notes: list[str] = []
    seeds = tuple(sorted(int(seed) for seed in runs["seed"].unique()))
    for metric in metrics:
        data = runs.dropna(subset=[metric])
        if data.empty:
            continue
        fit = _fit(data, varied, metric)
        if fit is None:
            notes.append(f"{METRICS.get(metric, metric)}: too few runs to fit a model "
                         f"({len(data)} runs for {_parameter_count(data, varied)} parameters).")
            continue
        result, grid, design, formula = fit
        formulas[metric] = formula
        main = _main_effects(metric, result, grid, design, varied, len(data), seeds)
        inter = (_interactions(metric, result, grid, design, varied, len(data), seeds)
                 if ":" in formula else [])
        effects += _with_holm(main) + _with_holm(inter)
        means += _level_means(metric, result, grid, design, varied)
    return FactorStudy(varied, tuple(effects), tuple(means), int(len(runs)), seeds, formulas, tuple(notes))


# -- the model ------------------------------------------------------------------------------------

# Factor names are the user's; formula terms need identifiers, so columns are renamed f0, f1, ...
def _column(index: int) -> str:
    return f"f{index}"


def _term(index: int, levels: Sequence[str]) -> str:
    return f"C({_column(index)}, levels={list(levels)!r})"


def _parameter_count(data: pd.DataFrame, factors: Mapping[str, Sequence[str]]) -> int:
    return 1 + sum(len(levels) - 1 for levels in factors.values()) + max(0, data["seed"].nunique() - 1)


def _fit(data: pd.DataFrame, factors: Mapping[str, Sequence[str]], metric: str):
    frame = pd.DataFrame({_column(i): data[name].astype(str).to_numpy() for i, name in enumerate(factors)})
    frame["seed"] = data["seed"].astype(int).astype(str).to_numpy()
    frame["y"] = data[metric].astype(float).to_numpy()
    levels = list(factors.values())
    main = [_term(i, lv) for i, lv in enumerate(levels)]
    block = ["C(seed)"] if frame["seed"].nunique() > 1 else []
    additive = "y ~ " + " + ".join(main + block)
    pairs = [f"{_term(i, levels[i])}:{_term(j, levels[j])}" for i, j in itertools.combinations(range(len(levels)), 2)]
    candidates = ([additive + " + " + " + ".join(pairs)] if pairs and _all_pairs_present(frame, levels) else []) + [additive]
    for formula in candidates:
        # patsy builds the design, so the same coding can be applied to the grid of cells below.
        response, exog = dmatrices(formula, frame, return_type="dataframe")
        rank = np.linalg.matrix_rank(exog.to_numpy())
        dof = exog.shape[0] - rank
        interactive = formula != additive
        if rank < exog.shape[1] or dof < (MIN_INTERACTION_DOF if interactive else 1):
            continue
        result = sm.OLS(response, exog).fit()
        # Every cell of the design (each level combination, each seed), equally weighted: the
        # contrasts below average the fitted cell means over it.
        grid = pd.DataFrame(list(itertools.product(*levels, sorted(frame["seed"].unique()))),
                            columns=[*(_column(i) for i in range(len(levels))), "seed"])
        design = build_design_matrices([exog.design_info], grid)[0]
        return result, grid, np.asarray(design), formula
    return None


def _all_pairs_present(frame: pd.DataFrame, levels: Sequence[Sequence[str]]) -> bool:
    for i, j in itertools.combinations(range(len(levels)), 2):
        seen = set(zip(frame[_column(i)], frame[_column(j)]))
        if len(seen) < len(levels[i]) * len(levels[j]):
            return False
    return True


def _rows(grid: pd.DataFrame, design: np.ndarray, **levels: str) -> np.ndarray:
    """The mean design row of the grid cells at these levels (columns f0, f1, ...)."""
    mask = np.ones(len(grid), dtype=bool)
    for column, level in levels.items():
        mask &= (grid[column] == level).to_numpy()
    return design[mask].mean(axis=0)


def _contrast(result, vector: np.ndarray) -> tuple[float, float, float, float, float]:
    """Estimate, 95% CI, p-value and detectable effect of one linear contrast of the fit."""
    test = result.t_test(vector.reshape(1, -1))
    estimate = float(np.squeeze(test.effect))
    low, high = (float(v) for v in np.squeeze(test.conf_int(alpha=ALPHA)))
    se = float(np.squeeze(test.sd))
    return estimate, low, high, float(np.squeeze(test.pvalue)), t_detectable(se, float(result.df_resid))


def _over(factors: Mapping[str, Sequence[str]], skip: Sequence[str], seeds: Sequence[int]) -> tuple[str, ...]:
    parts = [f"{name} ({', '.join(levels)})" for name, levels in factors.items() if name not in skip]
    if len(seeds) > 1:
        parts.append(f"{len(seeds)} seeds")
    return tuple(parts)


def _main_effects(metric, result, grid, design, factors, n_runs, seeds) -> list[Effect]:
    effects = []
    for index, (name, levels) in enumerate(factors.items()):
        reference = _rows(grid, design, **{_column(index): levels[0]})
        for level in levels[1:]:
            vector = _rows(grid, design, **{_column(index): level}) - reference
            estimate, low, high, p, detectable = _contrast(result, vector)
            effects.append(Effect(metric, name, level, levels[0], estimate, low, high, p, math.nan, detectable,
                                  _over(factors, [name], seeds), n_runs))
    return effects


def _interactions(metric, result, grid, design, factors, n_runs, seeds) -> list[Effect]:
    effects = []
    names = list(factors)
    for i, j in itertools.combinations(range(len(names)), 2):
        a, b = factors[names[i]], factors[names[j]]
        ci, cj = _column(i), _column(j)
        for level in a[1:]:
            for by in b[1:]:
                vector = (_rows(grid, design, **{ci: level, cj: by}) - _rows(grid, design, **{ci: a[0], cj: by})
                          - _rows(grid, design, **{ci: level, cj: b[0]}) + _rows(grid, design, **{ci: a[0], cj: b[0]}))
                estimate, low, high, p, detectable = _contrast(result, vector)
                effects.append(Effect(metric, names[i], level, a[0], estimate, low, high, p, math.nan, detectable,
                                      _over(factors, [names[i], names[j]], seeds), n_runs,
                                      by_factor=names[j], by_level=by, by_reference=b[0]))
    return effects


def _with_holm(effects: list[Effect]) -> list[Effect]:
    adjusted, _ = holm([effect.p_value for effect in effects])
    return [replace(effect, p_adjusted=float(p)) for effect, p in zip(effects, adjusted)]


def _level_means(metric, result, grid, design, factors) -> list[LevelMean]:
    means = []
    for index, (name, levels) in enumerate(factors.items()):
        for level in levels:
            estimate, low, high, _, _ = _contrast(result, _rows(grid, design, **{_column(index): level}))
            means.append(LevelMean(metric, name, level, estimate, low, high))
    return means
