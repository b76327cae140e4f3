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

__all__ = ["HEADERS", "UntilDecidedSection", "until_decided_section"]

HEADERS = ("Question (A vs B)", "Decision", "Decided at round", "Seeds", "Mean difference A − B (points)",
           "Interval (points)", "P(A > B)")
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


def _rows(state: StudyState) -> tuple[tuple[str, ...], ...]:
    rows = []
    for question in state.questions:
        wins = outperform(question.reference, question.other, question.differences,
                          [0.0] * question.seeds) if question.seeds else None
        last = question.trace.looks[-1] if question.trace.looks else None
        rows.append((
            question.label,
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
            f"({design.first} seeds) and frozen; the family of {design.family} question(s) is it against each "
            "other model, and each factor level against its factor's first level (a full grid's main effect, "
            "averaged over the other factors), on the paired per-seed difference in test accuracy. Looks "
            f"planned at {looks} seeds; "
            f"a question is 'different' when its interval excludes 0 and 'equivalent' when it lies within "
            f"±{design.margin:g} points, and gets no more seeds once decided. The interval shown is the one "
            "of its last look (its decision's, if decided). Holm's step-down cannot lower the divisor here "
            "(each question keeps a hypothesis that may be true until it is decided both ways), so the "
            "family is split Bonferroni-wise (mnistlab.analysis.sequential). P(A > B) is the share of paired "
            "seeds on which A won (ties half), with its 95% Wilson interval.")
    still_open = [question.label for question in state.open]
    open_note = f"The study stopped because {REASONS.get(reason, 'round 1 did not finish for every model')}."
    if still_open:
        open_note += f" Still open: {', '.join(still_open)}; more seeds (or a larger budget) would decide them."
    return UntilDecidedSection(guarantee_sentence(design), note, _rows(state), open_note)
