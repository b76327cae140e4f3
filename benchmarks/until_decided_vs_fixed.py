"""Runs used and decisions reached: a study run `--until-decided` against the fixed design at its
maximum number of seeds (the same rule, one look at max_seeds), each from its own store.

    export MNISTLAB_DATA_DIR=/path/to/datasets
    mnistlab run factors-004 --store /tmp/f004-seq --until-decided --max-seeds 10 --budget 20m
    mnistlab run factors-004 --store /tmp/f004-fixed --seeds 0:10
    PYTHONPATH=src python benchmarks/until_decided_vs_fixed.py /tmp/f004-seq /tmp/f004-fixed factors-004 \\
        factors-004+seeds=0:10

The fixed design's questions are asked by mnistlab.runs.sequential.study_state with the until-decided
study's settings cut to one look at max_seeds (its error split over the family only), so both
columns use one rule; its reference is chosen on validation over all its seeds.
"""

from __future__ import annotations

import argparse

from mnistlab.runs.sequential import StudyState, stored_settings, study_state
from mnistlab.runs.store import open_existing_store


def lines(title: str, runs: int, state: StudyState) -> list[str]:
    found = [f"{title}: {runs} runs; reference {state.reference}"]
    return found + [f"  {q.label}: {q.decision or 'open'} on {q.seeds} seeds" for q in state.questions]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("until_decided_store", "fixed_store", "experiment", "fixed_experiment"):
        parser.add_argument(name)
    args = parser.parse_args()
    with open_existing_store(args.until_decided_store) as store:
        settings = stored_settings(store, args.experiment)
        if settings is None:
            raise SystemExit(f"{args.until_decided_store}: experiment {args.experiment!r} was not run --until-decided")
        print("\n".join(lines("until decided", len(store.runs(args.experiment)),
                              study_state(store, args.experiment, settings["models"], settings))))
    last = int(settings["max_seeds"])
    fixed = {**settings, "first": last, "per_round": 1, "schedule": settings["schedule"][:last]}
    with open_existing_store(args.fixed_store) as store:
        print("\n".join(lines(f"fixed design ({last} seeds)", len(store.runs(args.fixed_experiment)),
                              study_state(store, args.fixed_experiment, settings["models"], fixed))))


if __name__ == "__main__":
    main()
