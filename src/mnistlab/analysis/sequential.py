"""Until decided: intervals on paired per-seed differences that stay valid however often they are
looked at, the decisions drawn from them, and the simulation that chose the method.

The question. A study asks a family of m questions fixed after its first round: the reference
model (chosen on validation after round 1, then frozen) against each other model, on the paired
per-seed difference d_s = acc_ref(s) - acc_other(s) of test accuracy, in points; and for a full
factor grid each main effect, d_s = the seed's mean over a level's variants minus its mean over the
factor's first level's (runs/sequential.py builds the questions; this module only sees the d_s). Its looks are
fixed in advance by the design: after n_1 = ``first`` seeds, then every ``per_round`` seeds more,
up to ``max_seeds`` (K looks at n_1 < n_2 < ... < n_K = max_seeds).

The interval. At look k a question's interval is the t interval on its n_k differences at level
1 - alpha_k / m, where the alpha_k sum to alpha over the K looks:

    mean(d) ± t_{n_k - 1}(1 - alpha_k / (2 m)) · sd(d) / sqrt(n_k)

Each such interval misses the true mean difference with probability alpha_k / m when the d_s are
independent normal draws (the t interval is exact then; the d_s of different seeds are independent
because every seed trains its own networks). By the union bound (Bonferroni) over the K looks and
the m questions, the probability that *any* interval of *any* question at *any* look misses is at
most alpha, whatever the dependence between looks, and whatever the data decided about stopping:
a question that stops early simply has fewer chances to miss. This is a confidence sequence over
the K planned looks, and the guarantee covers every decision together.

The decisions. "different" when the interval excludes 0; "equivalent" when it lies within
±margin. A decided question is closed and gets no more seeds; a study stops when every question is
decided, or at max_seeds, or when its budget is spent. With probability at least 1 - alpha, every
decision the study makes is right.

Holm. Holm's step-down (multiple.holm, still the correction of the report's fixed-seed tests)
cannot shrink the divisor m here: each question carries two hypotheses (no difference; a difference
beyond the margin) of which one may be true until *both* are rejected, so Shaffer's (1986) bound on
the number of true hypotheses left stays m until a question is decided both ways. The step-down
therefore equals Bonferroni over the family for every decision that closes a question, and the
module uses Bonferroni across the family, said as such.

Why this method (benchmarks/bench_sequential.py, "Until decided: simulation" in
benchmarks/RESULTS.md). Three ways to spend alpha over the looks were simulated against the fixed
design (one t test at max_seeds) and against naive re-testing (a 5% t test at every look):

- ``uniform``: alpha_k = alpha / K (plain Bonferroni over the looks): valid, but its last look is
  held to alpha / K, so it loses most of the fixed design's power when the effect is moderate.
- ``final-heavy`` (Haybittle–Peto's idea, made exact with Bonferroni): the interim looks share
  INTERIM_SHARE of alpha equally, the last look keeps the rest; strong effects stop early, and the
  last look is nearly the fixed design's test. Chosen: where the fixed design's power is 98% or
  more, within 1 point of it on about three quarters of its seeds; where that power is lower, the
  gap grows to a few points (the price of the interim looks), while ``uniform`` loses 3 to 35.
  Under the null it stays below alpha (about 4% at 18 looks).
- a confidence sequence from Howard et al. (2021): their sub-Gaussian normal-mixture boundary
  needs a known variance, and their empirical-Bernstein boundary needs bounded observations, whose
  range here (a difference of accuracies lies in [-100, 100] points) is thousands of times the
  seed-to-seed spread (about 0.1 point), so its intervals stay far wider than the t interval's for
  any number of seeds a study can afford. The ``confseq`` package (0.0.11, January 2023, a C++
  extension that needs Boost to build; no wheel for Python 3.11) does not install here, and the
  registry's ``expectation`` has no release for Python 3.11 beyond 0.0.2, so neither is used.
- Lan–DeMets alpha spending with the joint distribution of the looks would be less conservative
  than the union bound, but its boundaries assume a known variance (z statistics); with two to
  twenty seeds the variance is the main unknown, and the t interval with the union bound is exact.

Assumption, stated where the guarantee is: the per-seed differences are independent and normal.
Accuracy differences on 10,000 test images are sums of many small per-image contributions, and the
simulation shows the error rate stays under alpha with heavy-tailed (Student t, 3 degrees of
freedom) differences as well.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from mnistlab.analysis.multiple import ALPHA

__all__ = [
    "DEFAULT_MARGIN",
    "DIFFERENT",
    "EQUIVALENT",
    "INTERIM_SHARE",
    "SPENDINGS",
    "Design",
    "Look",
    "QuestionTrace",
    "Simulation",
    "decide",
    "fixed_power",
    "guarantee_sentence",
    "interval",
    "simulate",
    "trace_question",
]

DIFFERENT = "different"
EQUIVALENT = "equivalent"
DEFAULT_MARGIN = 0.2  # points: half of the ~0.2-point noise floor of one run on 10,000 images (DESIGN.md), each side
# Share of alpha the interim looks spend together under "final-heavy"; the last look keeps the rest.
# Chosen in the simulation (bench_sequential.py): 0.2 to 0.5 were tried; 0.3 keeps the power within
# 1 point of the fixed design's where that is >= 98%, on about three quarters of its seeds.
INTERIM_SHARE = 0.3
SPENDINGS = ("final-heavy", "uniform", "naive")  # naive: alpha at every look, invalid, for comparison only


@dataclass(frozen=True)
class Design:
    """When a study looks, and how much error each look may spend.

    ``first``: seeds in round 1 (at least 2, a t interval needs a spread); ``per_round``: seeds
    added per later round; ``max_seeds``: the last look; ``family``: the number of questions m;
    ``margin``: the equivalence margin in points."""

    first: int
    per_round: int
    max_seeds: int
    family: int = 1
    margin: float = DEFAULT_MARGIN
    alpha: float = ALPHA
    spending: str = "final-heavy"

    def __post_init__(self) -> None:
        if self.first < 2:
            raise ValueError(f"the first round needs at least 2 seeds, got {self.first}")
        if self.per_round < 1:
            raise ValueError(f"seeds per round must be 1 or more, got {self.per_round}")
        if self.max_seeds < self.first:
            raise ValueError(f"max seeds ({self.max_seeds}) is below the first round's {self.first}")
        if self.family < 1:
            raise ValueError("a family has at least one question")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must lie in (0, 1), got {self.alpha}")
        if not (math.isfinite(self.margin) and self.margin >= 0):
            raise ValueError(f"the margin must be 0 or more points, got {self.margin}")
        if self.spending not in SPENDINGS:
            raise ValueError(f"spending {self.spending!r}: choose {', '.join(SPENDINGS)}")

    @property
    def looks(self) -> tuple[int, ...]:
        """The seed counts at which the study looks: first, first + per_round, ..., max_seeds."""
        sizes = list(range(self.first, self.max_seeds + 1, self.per_round))
        if sizes[-1] != self.max_seeds:
            sizes.append(self.max_seeds)
        return tuple(sizes)

    def look_alpha(self, index: int) -> float:
        """The error one question's interval may spend at look ``index`` (0-based): alpha_k / m."""
        count = len(self.looks)
        if self.spending == "naive":
            share = 1.0
        elif self.spending == "uniform" or count == 1:
            share = 1.0 / count
        else:
            share = INTERIM_SHARE / (count - 1) if index < count - 1 else 1.0 - INTERIM_SHARE
        return self.alpha * share / self.family


def interval(differences: Sequence[float], error: float) -> tuple[float, float, float]:
    """(mean, low, high) of the t interval at level 1 - ``error`` on paired differences; infinite
    bounds with fewer than 2 differences or an undefined spread."""
    values = np.asarray(differences, dtype=float)
    if values.size == 0:
        return math.nan, -math.inf, math.inf
    mean = float(values.mean())
    if values.size < 2:
        return mean, -math.inf, math.inf
    spread = float(values.std(ddof=1))
    half = float(sps.t.ppf(1 - error / 2, values.size - 1)) * spread / math.sqrt(values.size)
    return mean, mean - half, mean + half


def decide(low: float, high: float, margin: float) -> str | None:
    """"different" if the interval excludes 0, "equivalent" if it lies within ±margin, else None
    (open). An interval that does both (a real difference smaller than the margin) is "different":
    the answer the study was asked first."""
    if low > 0 or high < 0:
        return DIFFERENT
    if -margin < low and high < margin:
        return EQUIVALENT
    return None


@dataclass(frozen=True)
class Look:
    """One question at one look: its seeds, interval and decision (None: still open)."""

    round: int  # 1-based
    seeds: int
    mean: float
    low: float
    high: float
    decision: str | None


@dataclass(frozen=True)
class QuestionTrace:
    """A question's looks in order, up to its decision or the last look its data reached."""

    looks: tuple[Look, ...]

    @property
    def decision(self) -> str | None:
        return self.looks[-1].decision if self.looks else None

    @property
    def decided_at(self) -> Look | None:
        return self.looks[-1] if self.looks and self.looks[-1].decision is not None else None


def trace_question(design: Design, differences: Sequence[float]) -> QuestionTrace:
    """Replay the design's looks over a question's differences in seed-schedule order.

    A look happens only when all its seeds are in: seeds beyond the last complete look (a round cut
    short by the budget) are not looked at, because the guarantee holds for the planned looks only.
    Stops at the first decision; deterministic, so a report can recompute it from the runs."""
    looks = []
    for index, size in enumerate(design.looks):
        if len(differences) < size:
            break
        mean, low, high = interval(differences[:size], design.look_alpha(index))
        verdict = decide(low, high, design.margin)
        looks.append(Look(index + 1, size, mean, low, high, verdict))
        if verdict is not None:
            break
    return QuestionTrace(tuple(looks))


def guarantee_sentence(design: Design) -> str:
    """The guarantee in one sentence, with the design's numbers."""
    return (f"With probability at least {100 * (1 - design.alpha):g}%, every decision below is right, "
            f"however many of the {len(design.looks)} planned rounds were looked at: each interval is a t "
            f"interval whose error is split (Bonferroni) over the {design.family} question(s) and the rounds, "
            "assuming independent, normal per-seed differences.")


# -- simulation -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Simulation:
    """What ``simulate`` found over ``studies`` simulated one-question studies."""

    studies: int
    different: float  # share decided "different"
    equivalent: float
    mean_seeds: float  # per study, at its stop

    @property
    def different_se(self) -> float:
        return math.sqrt(self.different * (1 - self.different) / self.studies)


def _draws(rng: np.random.Generator, studies: int, seeds: int, effect: float, spread: float,
           tails: float | None) -> np.ndarray:
    if tails is None:
        noise = rng.standard_normal((studies, seeds))
    else:  # Student t scaled to unit variance: heavy tails with the same spread
        noise = rng.standard_t(tails, (studies, seeds)) / math.sqrt(tails / (tails - 2))
    return effect + spread * noise


def simulate(design: Design, effect: float, spread: float, studies: int, seed: int,
             tails: float | None = None) -> Simulation:
    """Run ``studies`` one-question studies of ``design`` on synthetic per-seed differences
    (mean ``effect``, standard deviation ``spread``, in points; ``tails``: Student t degrees of
    freedom instead of normal draws) and count what they decided, and on how many seeds.

    Vectorised over studies: every study draws max_seeds differences up front and is read at each
    look as the driver would read it (the same ``interval`` and ``decide`` rule, per look)."""
    rng = np.random.default_rng(seed)
    data = _draws(rng, studies, design.max_seeds, effect, spread, tails)
    total = np.cumsum(data, axis=1)
    squares = np.cumsum(data ** 2, axis=1)
    verdict = np.zeros(studies, dtype=np.int8)  # 0 open, 1 different, 2 equivalent
    stopped = np.full(studies, design.max_seeds)
    for index, size in enumerate(design.looks):
        mean = total[:, size - 1] / size
        spread_hat = np.sqrt(np.maximum(squares[:, size - 1] - size * mean ** 2, 0.0) / (size - 1))
        half = sps.t.ppf(1 - design.look_alpha(index) / 2, size - 1) * spread_hat / math.sqrt(size)
        low, high = mean - half, mean + half
        open_now = verdict == 0
        different = open_now & ((low > 0) | (high < 0))
        equivalent = open_now & ~different & (low > -design.margin) & (high < design.margin)
        verdict[different], verdict[equivalent] = 1, 2
        stopped[different | equivalent] = size
    return Simulation(studies, float(np.mean(verdict == 1)), float(np.mean(verdict == 2)), float(stopped.mean()))


def fixed_power(seeds: int, effect: float, spread: float, studies: int, seed: int, alpha: float = ALPHA) -> float:
    """Share of fixed-design studies (one t test on ``seeds`` differences at ``alpha``) that find a
    difference: the yardstick for the sequential design's power, simulated on the same draws."""
    fixed = Design(first=seeds, per_round=1, max_seeds=seeds, margin=0.0, alpha=alpha)
    return simulate(fixed, effect, spread, studies, seed).different
