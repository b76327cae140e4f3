"""`mnistlab run`'s training: the study once (every model × seed), or in rounds with --until-decided
(mnistlab.runs.sequential, through api.run_until_decided), saying each round and the summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mnistlab.cli.output import console, say
from mnistlab.errors import MnistlabError

__all__ = ["run_study"]


def run_study(study: Any, store: Path, data_dir: Path | None, options: dict[str, Any], log_format: str, quiet: bool,
              *, until_decided: bool, **settings: Any) -> list[int]:
    """Train ``study`` with `run`'s ``options``; every run id of the study. ``settings`` (--max-seeds,
    --budget, --overrun, --margin) are for --until-decided only: given without it, a usage error."""
    from mnistlab import api

    if not until_decided:
        if any(value is not None for value in settings.values()):
            raise MnistlabError("--max-seeds, --budget, --overrun and --margin: only with --until-decided")
        outcome = api.run(study, store, data_dir, **options)
        if not quiet:
            say(f"{study.name}: trained {len(outcome.trained)}, already done {len(outcome.skipped_finished)}, "
                f"left to another process {len(outcome.skipped_claimed) + len(outcome.lost)}  (store: {store})")
        return outcome.run_ids
    from mnistlab.report.progress import make_reporter
    from mnistlab.runs.sequential import round_text

    # Rounds add seeds beyond the file's: each run's label names it, without a place among all.
    options = {**options, "reporter_for": lambda task: make_reporter(
        console, log_format, quiet, model=task.model_id, seed=task.seed, label=f"{task.model_id} seed {task.seed} ")}
    found = api.run_until_decided(study, store, data_dir=data_dir, **settings,
                                  on_round=None if quiet else lambda *got: say(round_text(*got)), **options)
    if not quiet:
        say(f"{study.name}: trained {len(found.trained)} in {len(found.rounds)} round(s), stopped: {found.stopped}  "
            f"(store: {store})")
    return found.run_ids
