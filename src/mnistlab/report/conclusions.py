"""Written conclusions: one sentence per finding, generated from the numbers.

Every sentence carries its estimate, 95% CI and Holm-adjusted p-value. A finding that does
not survive correction is called "not distinguishable from noise" together with the smallest
effect the study could have detected (80% power, two-sided α = 0.05) — never "equal". Under
protocol ``test`` (validation on the test set, as the seed notebooks did) every sentence says
that its figure is optimistic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from mnistlab.analysis.compare import accuracy_interval, p_text
from mnistlab.analysis.intervals import mean_ci
from mnistlab.analysis.effects import METRICS, Effect, FactorStudy
from mnistlab.analysis.ranking import ModelComparison, Statistics
from mnistlab.analysis.multiple import ALPHA, POWER
from mnistlab.training.history import COMPLETED
from mnistlab.util.display import html_of

__all__ = [
    "TEST_PROTOCOL_CAVEAT",
    "Conclusions",
    "comparison_sentence",
    "loss_text",
    "effect_sentence",
    "selection_sentence",
    "write_conclusions",
]

TEST_PROTOCOL_CAVEAT = "caveat: protocol test validated on the test set, so this figure is optimistic"
POWER_TEXT = f"{POWER:.0%} power, two-sided α = {ALPHA:g}"


@dataclass(frozen=True)
class Conclusions:
    """The report's conclusions: ``sentences`` in reading order, and how they were reached."""

    sentences: tuple[str, ...]
    method: str

    def text(self) -> str:
        return "\n".join(self.sentences)

    def to_json(self) -> dict[str, object]:
        return {"sentences": list(self.sentences), "method": self.method}
    def _repr_html_(self) -> str | None:
        """In a notebook: the sentences as a numbered list (mnistlab.report.notebook renders them)."""
        return html_of(self)


def _with_caveat(sentence: str, peeks: bool) -> str:
    if not peeks:
        return sentence
    return sentence.removesuffix(".") + f" — {TEST_PROTOCOL_CAVEAT}."


def _points(value: float) -> str:
    return f"{value * 100:.2f}"


def _interval(low: float, high: float, scale: float, digits: int) -> str:
    if not (math.isfinite(low) and math.isfinite(high)):
        return "no 95% CI: too few runs"
    return f"95% CI {low * scale:.{digits}f} to {high * scale:.{digits}f}"


# -- model comparisons -----------------------------------------------------------------------------


def comparison_sentence(comparison: ModelComparison, peeks: bool = False) -> str:
    """One comparison of the best model with another, as a conclusion."""
    diff = comparison.difference
    seeds = len(comparison.common_seeds)
    tests = (f"McNemar over {seeds} seed{'s' if seeds != 1 else ''}, {p_text(comparison.mcnemar.p_value)}, "
             f"Holm-adjusted {p_text(comparison.p_adjusted)}")
    interval = _interval(diff.low, diff.high, 100, 2)
    if comparison.significant and diff.includes_zero:
        # McNemar asks whether these trained networks differ on these images; the interval over seeds
        # asks whether the models do, seed-to-seed variation included. Only both together make it real.
        sentence = (f"{comparison.a} against {comparison.b}: these trained networks differ on the test images "
                    f"({_points(diff.mean)} points; {tests}), but over seeds the difference's {interval} "
                    f"includes 0, so with {seeds} seed{'s' if seeds != 1 else ''} it is not established that the "
                    "models, rather than their seeds, differ; more seeds would decide it.")
    elif comparison.significant:
        verb = "more" if diff.mean >= 0 else "less"
        sentence = (f"{comparison.a} is {verb} accurate than {comparison.b} by {_points(abs(diff.mean))} points "
                    f"({interval}; {tests}).")
    else:
        sentence = (f"{comparison.a} against {comparison.b}: a difference of {_points(diff.mean)} points "
                    f"({interval}; {tests}) is not distinguishable from noise; "
                    f"{_detectable(comparison.detectable, 'this comparison')}.")
    return _with_caveat(sentence, peeks)


def _detectable(value: float, subject: str) -> str:
    if not math.isfinite(value):
        return f"{subject} had too little data to say what difference it could have detected"
    return f"{subject} could have detected about {_points(value)} points ({POWER_TEXT})"


# -- factor effects --------------------------------------------------------------------------------


def _amount(effect: Effect, value: float) -> str:
    """A size in the metric's unit: accuracy in points, loss as a number."""
    if effect.metric == "test_acc":
        return f"{_points(value)} points"
    return loss_text(value)


def loss_text(value: float) -> str:
    """A loss or loss difference: 4 decimals, or 3 significant digits when smaller than 0.001."""
    return f"{value:.4f}" if value == 0 or abs(value) >= 1e-3 else f"{value:.2e}"


def _effect_interval(effect: Effect) -> str:
    if effect.metric == "test_acc":
        return _interval(effect.low, effect.high, 100, 2)
    if not (math.isfinite(effect.low) and math.isfinite(effect.high)):
        return "no 95% CI: too few runs"
    return f"95% CI {loss_text(effect.low)} to {loss_text(effect.high)}"


def _signed(effect: Effect) -> str:
    if effect.metric == "test_acc":
        return f"{effect.estimate * 100:+.2f} points"
    return ("+" if effect.estimate >= 0 else "-") + loss_text(abs(effect.estimate))


def _detectable_effect(effect: Effect) -> str:
    if not math.isfinite(effect.detectable):
        return "the study had too few runs to say what effect it could have detected"
    return f"the study could have detected about {_amount(effect, effect.detectable)} ({POWER_TEXT})"


def _averaged(effect: Effect) -> str:
    return f", averaged over {' and '.join(effect.averaged_over)}" if effect.averaged_over else ""


def _change(effect: Effect) -> str:
    return f"changing {effect.factor} from {effect.reference} to {effect.level}"


def effect_sentence(effect: Effect, peeks: bool = False) -> str:
    """One factor effect (main or interaction) as a conclusion."""
    metric = METRICS.get(effect.metric, effect.metric)
    tests = f"{_effect_interval(effect)}, {p_text(effect.p_value)}, Holm-adjusted {p_text(effect.p_adjusted)}"
    verb = "raises" if effect.estimate >= 0 else "lowers"
    change = _change(effect)
    if effect.is_interaction:
        where = f"at {effect.by_factor} = {effect.by_level} than at {effect.by_factor} = {effect.by_reference}"
        if effect.significant:
            sentence = (f"{change[0].upper()}{change[1:]} {verb} {metric} by {_amount(effect, abs(effect.estimate))} "
                        f"more {where} ({tests}){_averaged(effect)}.")
        else:
            sentence = (f"Whether {change} does more {where} is not distinguishable from noise "
                        f"({_signed(effect)}, {tests}); {_detectable_effect(effect)}.")
        return _with_caveat(sentence, peeks)
    if effect.significant:
        sentence = (f"{change[0].upper()}{change[1:]} {verb} {metric} by {_amount(effect, abs(effect.estimate))} "
                    f"({tests}){_averaged(effect)}.")
    else:
        sentence = (f"{change[0].upper()}{change[1:]} changes {metric} by {_signed(effect)} ({tests})"
                    f"{_averaged(effect)}: not distinguishable from noise; {_detectable_effect(effect)}.")
    return _with_caveat(sentence, peeks)


# -- the model chosen ------------------------------------------------------------------------------


def selection_sentence(best: str, runs: pd.DataFrame, peeks: bool) -> str:
    """How the best model was chosen, and its test figure, reported once."""
    mine = runs[(runs["model"] == best) & (runs["status"] == COMPLETED)]
    accs = mine["test_acc"].dropna().to_numpy()
    vals = mine["val_acc"].dropna().to_numpy()
    val_text = f"mean final validation accuracy {vals.mean() * 100:.2f}%" if len(vals) else "validation"
    if len(accs) > 1:
        mean, half = mean_ci(accs)
        low, high = accuracy_interval(mean, half)
        test = f"{mean * 100:.2f}% (95% CI {low * 100:.2f} to {high * 100:.2f}, {len(accs)} seeds)"
    elif len(accs) == 1:
        test = f"{accs[0] * 100:.2f}% (1 run, no CI)"
    else:
        test = "not measured"
    sentence = (f"The model chosen on validation alone ({val_text}) is {best}; its test accuracy, "
                f"reported once, is {test}.")
    if peeks:
        sentence = sentence.removesuffix(".") + (" — under protocol test the validation set is the test "
                                                 "set, so this choice peeks and the figure is optimistic.")
    return sentence


# -- assembly --------------------------------------------------------------------------------------


def write_conclusions(best: str, runs: pd.DataFrame, statistics: Statistics | None,
                      study: FactorStudy | None, protocols: Sequence[str]) -> Conclusions:
    """Every conclusion a report draws, in reading order: the chosen model, the factor effects
    (when the experiment varied factors) and the comparisons of the best model with the others."""
    peeks = "test" in protocols
    sentences = [selection_sentence(best, runs, peeks)]
    if study is not None:
        for metric in METRICS:
            sentences += [effect_sentence(effect, peeks) for effect in study.main_effects(metric)]
            sentences += _interaction_sentences(study.interactions(metric), metric, peeks)
    if statistics is not None and statistics.comparisons:
        significant = [c for c in statistics.comparisons if c.significant]
        established = [c for c in significant if c.established]
        sentences.append(_with_caveat(
            f"Of {len(statistics.comparisons)} comparisons of {statistics.best} with the other models, "
            f"{len(significant)} survive Holm's correction at {ALPHA * 100:g}%, {len(established)} of them with a "
            "95% CI over seeds that excludes 0.", peeks))
        sentences += [comparison_sentence(c, peeks) for c in statistics.comparisons]
    method = ("Each sentence gives the estimate, its 95% confidence interval and the Holm-adjusted "
              f"p-value; a finding is called significant only when the adjusted p is below {ALPHA:g}. "
              "Holm's correction runs over each family of tests: the best model against every other "
              "(McNemar's exact test stratified by seed, on every shared seed), each metric's factor "
              "main effects, and each metric's interactions. A finding that is not significant is not "
              "evidence of no effect: the sentence names the smallest effect the study could have "
              f"detected ({POWER_TEXT}).")
    return Conclusions(tuple(sentences), method)


def _interaction_sentences(effects: list[Effect], metric: str, peeks: bool) -> list[str]:
    """Significant interactions one by one; the rest summed up in one sentence."""
    if not effects:
        return []
    sentences = [effect_sentence(effect, peeks) for effect in effects if effect.significant]
    quiet = [effect for effect in effects if not effect.significant]
    if quiet:
        pairs = sorted({f"{e.factor} × {e.by_factor}" for e in quiet})
        largest = max(quiet, key=lambda e: abs(e.estimate))
        sentences.append(_with_caveat(
            f"{len(quiet)} of {len(effects)} {' and '.join(pairs)} interaction contrasts on "
            f"{METRICS.get(metric, metric)} are not distinguishable from noise; the largest: {_change(largest)} "
            f"does {_signed(largest)} more at {largest.by_factor} = {largest.by_level} than at "
            f"{largest.by_factor} = {largest.by_reference} ({_effect_interval(largest)}, Holm-adjusted "
            f"{p_text(largest.p_adjusted)}); {_detectable_effect(largest)}.", peeks))
    return sentences
