"""The factor levels of a study's runs, read from the run frame, and their effects."""

from __future__ import annotations

import json

import pandas as pd

from mnistlab.analysis.effects import FactorStudy, factor_effects
from mnistlab.training.history import COMPLETED

__all__ = ["factor_levels", "factor_runs", "factor_study"]


def factor_levels(runs: pd.DataFrame) -> dict[str, tuple[str, ...]]:
    """Each factor's levels in the order the experiment listed them (its variants' runs are
    created in that order, so first appearance by run id keeps it); {} outside factor studies."""
    levels: dict[str, list[str]] = {}
    for text in runs.sort_values("run_id")["factors"].dropna():
        for name, level in json.loads(text).items():
            known = levels.setdefault(str(name), [])
            if str(level) not in known:
                known.append(str(level))
    return {name: tuple(values) for name, values in levels.items()}


def factor_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The completed runs of factor variants, one column per factor holding the run's level."""
    chosen = runs[(runs["status"] == COMPLETED) & runs["factors"].notna()]
    levels = pd.DataFrame([{k: str(v) for k, v in json.loads(text).items()} for text in chosen["factors"]],
                          index=chosen.index)
    return pd.concat([chosen.drop(columns="factors"), levels], axis=1)


def factor_study(runs: pd.DataFrame) -> FactorStudy | None:
    """The study's factor effects (statsmodels OLS, Holm-corrected), or None when the experiment
    varied no factor with two or more levels among its completed runs."""
    levels = {name: values for name, values in factor_levels(runs).items() if len(values) > 1}
    if not levels:
        return None
    table = factor_runs(runs).dropna(subset=list(levels))
    present = {name: tuple(level for level in values if level in set(table[name])) for name, values in levels.items()}
    present = {name: values for name, values in present.items() if len(values) > 1}
    if not present or len(table) < 2:
        return None
    return factor_effects(table, present)
