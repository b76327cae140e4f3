"""The commands over a store's runs: ``ls`` (with its filters and --json), ``tag``, ``untag``, ``note``,
``rm`` and ``gc``; each a few lines over ``mnistlab.api``. ``register_store_commands`` adds them to
the app (app.py calls it), so that this module never imports app.py.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Optional

import typer

from mnistlab.cli.options import StoreOption
from mnistlab.cli.output import console, say
from mnistlab.runs.store import DEFAULT_ROOT
from mnistlab.training.history import STATUSES

__all__ = ["register_store_commands"]

Status = Enum("Status", {name: name for name in STATUSES}, type=str)  # history.py's, one home
RunArgument = Annotated[str, typer.Argument(help="A run id (mnistlab ls EXPERIMENT), or a unique model id / spec hash prefix.")]


def _size(count: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024  # type: ignore[assignment]
    return f"{count} bytes"


def ls_(
    experiment: Annotated[Optional[str], typer.Argument(help="Show this experiment's runs.")] = None,
    status: Annotated[Optional[Status], typer.Option(help="Only runs in this status.")] = None,
    model: Annotated[Optional[str], typer.Option(help="Only runs of this model id.")] = None,
    tag: Annotated[Optional[str], typer.Option(help="Only runs carrying this tag (mnistlab tag).")] = None,
    where: Annotated[Optional[str], typer.Option(
        help="Only runs where this holds, e.g. \"test_acc > 0.99 and epochs >= 10\"; fields are the keys of "
             "ls --json, text values quoted.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the runs as one JSON document.")] = False,
    store: StoreOption = DEFAULT_ROOT,
) -> None:
    """List the stored experiments, or one experiment's runs and models; with a filter or --json, the runs."""
    from mnistlab import api
    from mnistlab.cli.json_output import print_json
    from mnistlab.cli.views import experiment_view, experiments_table, run_rows_table

    filtered = any(value is not None for value in (status, model, tag, where))
    name = api.experiment_name(experiment) if experiment else None
    if not (filtered or as_json):
        with api.open_store(store, create=False) as run_store:
            console.print(experiment_view(run_store, name) if name else experiments_table(run_store))
        return
    rows = api.list_runs(store, name, status=status.value if status else None, model=model, tag=tag, where=where)
    if as_json:
        print_json({"store": str(store), "experiment": name, "runs": rows}, indent=1)
        return
    console.print(run_rows_table(rows, f"Runs{f' of {name}' if name else ''} matching the filters ({len(rows)})",
                                 with_experiment=name is None))


def tag(
    run: RunArgument,
    tags: Annotated[list[str], typer.Argument(help="The tags to add (no spaces).")],
    store: StoreOption = DEFAULT_ROOT,
) -> None:
    """Tag a run (ls --tag finds it; show lists its tags)."""
    from mnistlab import api

    say(f"run {run}: tags {', '.join(api.tag(run, tags, store))}")


def untag(
    run: RunArgument,
    tags: Annotated[list[str], typer.Argument(help="The tags to take off.")],
    store: StoreOption = DEFAULT_ROOT,
) -> None:
    """Take tags off a run."""
    from mnistlab import api

    left = api.untag(run, tags, store)
    say(f"run {run}: tags {', '.join(left) if left else 'none'}")


def note(
    run: RunArgument,
    text: Annotated[str, typer.Argument(help="The note (quote it).")],
    store: StoreOption = DEFAULT_ROOT,
) -> None:
    """Add a note of yours to a run; show lists it beside the system's own notes."""
    from mnistlab import api

    api.note(run, text, store)
    say(f"run {run}: note added")


def rm(
    runs: Annotated[Optional[list[str]], typer.Argument(help="The runs to remove (ids or references).")] = None,
    experiment: Annotated[Optional[str], typer.Option(help="Remove this experiment: all its runs and its row.")] = None,
    store: StoreOption = DEFAULT_ROOT,
) -> None:
    """Remove runs (or a whole experiment) with their model folders and checkpoints; crash-safe, rerun to finish."""
    from mnistlab import api

    done = api.remove_runs(runs or (), api.experiment_name(experiment) if experiment else None, store)
    if done.finished:
        say(f"finished an interrupted removal of run{'s' if len(done.finished) > 1 else ''} "
            f"{', '.join(map(str, done.finished))}")
    if done.already:
        of = f" (experiment {done.experiment})" if done.experiment else ""
        say(f"already removed: run{'s' if len(done.already) > 1 else ''} {', '.join(map(str, done.already))}{of}")
        if not done.removed:
            return
    removed = ", ".join(f"{record.id} ({record.experiment}/{record.model_id}, seed {record.seed})"
                        for record in done.removed)
    say(f"removed {len(done.removed)} run(s){': ' + removed if removed else ''}"
        + (f"; experiment {done.experiment} removed" if done.experiment else ""))


def gc(
    yes: Annotated[bool, typer.Option("--yes", help="Delete what is listed (without it, only list).")] = False,
    store: StoreOption = DEFAULT_ROOT,
) -> None:
    """List what the store's folder holds that nothing needs (sizes), and delete it with --yes."""
    from mnistlab import api

    found = api.gc(store, yes=yes)
    for item in found:
        say(f"{_size(item.bytes):>10}  {item.path}  ({item.reason})")
    total = _size(sum(item.bytes for item in found))
    if yes:
        say(f"freed {total} in {len(found)} item(s)")
    else:
        say(f"{total} in {len(found)} item(s) can be freed" + ("; run again with --yes to delete them" if found else ""))


def register_store_commands(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("ls")(ls_)
    for command in (tag, untag, note, rm, gc):
        app.command()(command)
