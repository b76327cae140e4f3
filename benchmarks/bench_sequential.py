"""The simulation behind `--until-decided`: error under the null, power and seeds under alternatives.

Not a timing benchmark: pure numpy on synthetic per-seed differences (no training), a few seconds.
It prints the tables of "Until decided: simulation" in RESULTS.md, from fixed seeds:

    PYTHONPATH=src python benchmarks/bench_sequential.py [--studies 20000]

Each simulated study is one question (the reference against one model): per-seed differences in
points, drawn N(effect, SPREAD) (or Student t with 3 degrees of freedom scaled to that spread),
looked at after 3 seeds and after every further seed up to 20 (18 looks), by the same rule the driver
uses (mnistlab.analysis.sequential). The fixed design is one t test at 5% on 20 seeds.
"""

from __future__ import annotations

import argparse
import math

from mnistlab.analysis.sequential import DEFAULT_MARGIN, INTERIM_SHARE, Design, fixed_power, simulate

FIRST, PER_ROUND, MAX_SEEDS = 3, 1, 20
SPREAD = 0.1  # points: a typical seed-to-seed spread of a paired difference of two MNIST CNNs
EFFECTS = (0.06, 0.08, 0.10, 0.12, 0.15)
AT_MARGIN_SPREAD = 0.3  # wide enough that "different" is not reached first, the worst case for "equivalent"
SPENDINGS = ("final-heavy", "uniform", "naive")


def design(spending: str, margin: float = 0.0) -> Design:
    return Design(FIRST, PER_ROUND, MAX_SEEDS, margin=margin, spending=spending)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=20_000)
    studies = parser.parse_args().studies
    looks = len(design("final-heavy").looks)
    print(f"{studies} studies per row; looks at {FIRST}..{MAX_SEEDS} seeds ({looks} looks); spread {SPREAD} points; "
          f"final-heavy interim share {INTERIM_SHARE}")
    print("\nUnder the null (true difference 0): share decided 'different' (± 1 SE)")
    print("| spending | normal, no margin | Student t3, no margin | normal, margin "
          f"{DEFAULT_MARGIN} (share 'equivalent') |")
    print("|---|---|---|---|")
    for index, spending in enumerate(SPENDINGS):
        normal = simulate(design(spending), 0.0, SPREAD, studies, seed=10 + index)
        heavy = simulate(design(spending), 0.0, SPREAD, studies, seed=20 + index, tails=3.0)
        margin = simulate(design(spending, DEFAULT_MARGIN), 0.0, SPREAD, studies, seed=30 + index)
        print(f"| {spending} | {normal.different:.4f} ± {normal.different_se:.4f} | "
              f"{heavy.different:.4f} ± {heavy.different_se:.4f} | {margin.different:.4f} "
              f"({margin.equivalent:.3f}; mean seeds {margin.mean_seeds:.1f}) |")
    print(f"\nAt the margin (true difference {DEFAULT_MARGIN}, spread {AT_MARGIN_SPREAD}): share wrongly decided "
          "'equivalent' (± 1 SE)")
    for index, spending in enumerate(SPENDINGS):
        edge = simulate(design(spending, DEFAULT_MARGIN), DEFAULT_MARGIN, AT_MARGIN_SPREAD, studies, seed=50 + index)
        print(f"- {spending}: {edge.equivalent:.4f} ± {math.sqrt(edge.equivalent * (1 - edge.equivalent) / studies):.4f}")
    print("\nUnder alternatives (no margin): power, and seeds used as a share of the fixed design's")
    print("| effect (points) | fixed design power | final-heavy power | final-heavy seeds | uniform power | "
          "uniform seeds |")
    print("|---|---|---|---|---|---|")
    for index, effect in enumerate(EFFECTS):
        fixed = fixed_power(MAX_SEEDS, effect, SPREAD, studies, seed=40 + index)
        heavy = simulate(design("final-heavy"), effect, SPREAD, studies, seed=40 + index)
        uniform = simulate(design("uniform"), effect, SPREAD, studies, seed=40 + index)
        print(f"| {effect:.2f} | {fixed:.3f} | {heavy.different:.3f} | {heavy.mean_seeds / MAX_SEEDS:.0%} | "
              f"{uniform.different:.3f} | {uniform.mean_seeds / MAX_SEEDS:.0%} |")


if __name__ == "__main__":
    main()
