"""The report's "Until decided" section: for each question the round and seeds it was decided on,
which stayed open and why, and the guarantee in one sentence; recomputed from the store's runs
(runs.sequential.study_state), never read from a state file."""

from __future__ import annotations

from dataclasses import dataclass

from mnistlab.analysis.outperform import outperform
from mnistlab.analysis.sequential import guarantee_sentence
from mnistlab.runs.sequential import (STOP_BUDGET, STOP_DECIDED, STOP_MAX_SEEDS, StudyState, stop_reason,
                                      stored_settings, study_state)
from mnistlab.runs.store import RunStore
from mnistlab.training.history import COMPLETED

__all__ = ["HEADERS", "UntilDecidedSection", "until_decided_section"]

HEADERS = ("Question", "Decision", "Decided at round", "Seeds", "Mean difference (points)", "Interval (points)",
           "P(reference > other)")
REASONS = {
    STOP_DECIDED: "every question was decided",
    STOP_MAX_SEEDS: "the maximum number of seeds was reached",
    STOP_BUDGET: "the time budget ran out (or the study was stopped) before the maximum number of seeds",
}


@dataclass(frozen=True)
class UntilDecidedSection:
    guarantee: str
    note: str
    rows: tuple[tuple[str, ...], ...]
    open_note: str


def _accuracies(store: RunStore, experiment: str) -> dict[str, dict[int, float]]:
    found: dict[str, dict[int, float]] = {}
    for record in store.runs(experiment):
        test = (record.final or {}).get("test_acc")
        if record.status == COMPLETED and isinstance(test, (int, float)):
            found.setdefault(record.model_id, {})[record.seed] = float(test)
    return found


def _rows(store: RunStore, experiment: str, state: StudyState) -> tuple[tuple[str, ...], ...]:
    accuracies = _accuracies(store, experiment)
    rows = []
    for question in state.questions:
        mine, theirs = accuracies.get(question.reference, {}), accuracies.get(question.other, {})
        seeds = [seed for seed in state.schedule if seed in mine and seed in theirs]
        wins = outperform(question.reference, question.other, [mine[s] for s in seeds], [theirs[s] for s in seeds]) \
            if seeds else None
        last = question.trace.looks[-1] if question.trace.looks else None
        rows.append((
            f"{question.reference} vs {question.other}",
            question.decision or "open",
            str(last.round) if question.decision is not None and last is not None else "—",
            str(question.seeds),
            f"{last.mean:+.3f}" if last is not None else "—",
            f"{last.low:+.3f} to {last.high:+.3f}" if last is not None else "—",
            f"{wins.share * 100:.0f}% (Wilson CI {wins.low * 100:.0f}–{wins.high * 100:.0f}%)" if wins else "—",
        ))
    return tuple(rows)


def until_decided_section(store: RunStore, experiment: str) -> UntilDecidedSection | None:
    """The section for a study run with --until-decided; None for a fixed-seed one."""
    settings = stored_settings(store, experiment)
    if settings is None:
        return None
    state = study_state(store, experiment, list(settings.get("models", [])), settings)
    design = state.design
    config = next(record.config for record in store.experiments() if record.name == experiment)
    reason = stop_reason(state, len(config.get("seeds", [])))
    looks = ", ".join(str(size) for size in design.looks)
    reference = state.reference or "not chosen (a model did not finish round 1)"
    note = (f"Trained in rounds until decided. Reference: {reference}, chosen on validation after round 1 "
            f"({design.first} seeds) and frozen; the family is it against each of the {design.family} other "
            f"model(s), on the paired per-seed difference in test accuracy. Looks planned at {looks} seeds; "
            f"a question is 'different' when its interval excludes 0 and 'equivalent' when it lies within "
            f"±{design.margin:g} points, and gets no more seeds once decided. The interval shown is the one "
            "of its last look (its decision's, if decided). Holm's step-down cannot lower the divisor here "
            "(each question keeps a hypothesis that may be true until it is decided both ways), so the "
            "family is split Bonferroni-wise (mnistlab.analysis.sequential). P(reference > other) is the "
            "share of paired seeds the reference won (ties half), with its 95% Wilson interval.")
    still_open = [question.other for question in state.open]
    open_note = f"The study stopped because {REASONS.get(reason, 'round 1 did not finish for every model')}."
    if still_open:
        open_note += f" Still open: {', '.join(still_open)}; more seeds (or a larger budget) would decide them."
    return UntilDecidedSection(guarantee_sentence(design), note, _rows(store, experiment, state), open_note)
