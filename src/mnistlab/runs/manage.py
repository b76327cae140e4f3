"""Run management over a store: naming runs, tags and user notes, removing runs with their artifacts,
and finding what the store's folder holds that no run needs (gc).

Removal is crash-safe in this order: (1) one transaction deletes the runs' rows and records each in
``removed_runs`` (from then on the run is gone for every reader, and its id is never reused); (2) its
artifacts folder (model folder, checkpoints) is deleted; (3) the removal is marked done. A SIGKILL
before (1) commits leaves the run whole; after it, the run is gone and the next ``rm`` or ``gc``
finishes deleting its folder (``sweep_removals``). A run a live process is training is refused.

gc moves each folder it frees aside under the store's write lock (no run is created, claimed or
removed meanwhile, so it never takes a folder a run has just been given) and deletes it after; a
folder moved aside and left by a kill is itself an orphan that the next gc frees.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from mnistlab.errors import EnvironmentFailure, MnistlabError
from mnistlab.runs.records import RunRecord, UserNote
from mnistlab.runs.store import ARTIFACTS_DIR, DEFAULT_ROOT, RunStore, open_existing_store
from mnistlab.util.strict import whole_number

__all__ = ["Freed", "Removal", "artifact_garbage", "delete_path", "find_run", "free", "note", "opened", "remove_runs",
           "size_of", "sweep_removals", "tag", "untag"]

T = TypeVar("T")
GC_ASIDE_PREFIX = ".gc-"  # a folder gc moved aside and is deleting: artifacts/.gc-<name>-<pid>


def find_run(store: RunStore, reference: str | int) -> int:
    """The id of the one run `reference` names: a run id, or a prefix of a run's spec hash, model id or
    `experiment/model_id` (as `mnistlab ls EXPERIMENT` lists them); a one-line MnistlabError otherwise."""
    matches = store.find_runs(str(reference))
    if len(matches) != 1:
        found = "no run" if not matches else f"{len(matches)} runs"
        raise MnistlabError(f"{store.path}: {found} match '{reference}'; `mnistlab ls EXPERIMENT` lists run ids")
    return matches[0].id


def opened(store: RunStore | str | Path, work: Callable[[RunStore], T]) -> T:
    """``work`` on a RunStore: the one given, or the existing store in that folder (closed after)."""
    if isinstance(store, RunStore):
        return work(store)
    with open_existing_store(store) as run_store:
        return work(run_store)


# -- tags and notes ------------------------------------------------------------------------------


def tag(run: str | int, tags: Sequence[str], store: RunStore | str | Path = DEFAULT_ROOT) -> list[str]:
    """Put `tags` on the run `run` names (as `find_run` reads it); the run's tags after (`ls --tag` finds them)."""
    if not tags:
        raise MnistlabError("tag: give at least one tag")
    return opened(store, lambda run_store: run_store.add_tags(find_run(run_store, run), list(tags)))


def untag(run: str | int, tags: Sequence[str], store: RunStore | str | Path = DEFAULT_ROOT) -> list[str]:
    """Take `tags` off the run; a tag it does not have is a one-line error (a typo, most likely)."""
    def work(run_store: RunStore) -> list[str]:
        run_id = find_run(run_store, run)
        missing = [name for name in tags if name not in run_store.tags(run_id)]
        if not tags or missing:
            raise MnistlabError(f"untag: run {run_id} has no tag {', '.join(repr(t) for t in missing)}" if missing
                                else "untag: give at least one tag")
        return run_store.remove_tags(run_id, list(tags))

    return opened(store, work)


def note(run: str | int, text: str, store: RunStore | str | Path = DEFAULT_ROOT) -> UserNote:
    """Add a note of yours to the run; `show` lists it beside the system's own notes."""
    return opened(store, lambda run_store: run_store.add_user_note(find_run(run_store, run), text))


# -- removal -------------------------------------------------------------------------------------


@dataclass
class Removal:
    """What one `remove` did: the runs removed now, and removals left unfinished earlier (by a
    kill) that it finished."""

    removed: list[RunRecord] = field(default_factory=list)
    finished: list[int] = field(default_factory=list)
    experiment: str | None = None  # the experiment removed with its runs (None: none was)
    already: list[int] = field(default_factory=list)  # named runs an earlier rm removed


def _run_folder(store: RunStore, run_id: int) -> Path:
    return store.root / ARTIFACTS_DIR / str(run_id)


def delete_path(path: Path) -> None:
    """Delete a file or a folder; one line (exit 1) when the machine refuses."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
    except FileNotFoundError:
        pass  # deleted meanwhile (another rm or gc finishing the same job)
    except OSError as error:
        raise EnvironmentFailure(f"{error.filename or path}: cannot delete: {error.strerror or error}; "
                                 "fix that and run the command again to finish") from None


def sweep_removals(store: RunStore) -> list[int]:
    """Finish removals a kill interrupted: delete the removed runs' folders; their ids."""
    finished = []
    for run_id, _ in store.pending_removals():
        delete_path(_run_folder(store, run_id))
        store.removal_done(run_id)
        finished.append(run_id)
    return finished


def remove_runs(runs: Sequence[str | int] = (), experiment: str | None = None,
                store: RunStore | str | Path = DEFAULT_ROOT) -> Removal:
    """Remove runs (as `find_run` reads them), or a whole experiment (its runs and its row), from the
    store with their artifacts (model folders, checkpoints), crash-safely (this module's docstring).

    Refused whole, before anything is deleted, if a named run does not exist or a live process is
    training one. Rerunning after a kill finishes the interrupted removal."""
    if bool(runs) == (experiment is not None):
        raise MnistlabError("rm: name runs, or --experiment NAME, not both and not neither")
    return opened(store, lambda run_store: _remove(run_store, list(runs), experiment))


def _remove(store: RunStore, references: list[str | int], experiment: str | None) -> Removal:
    finished = sweep_removals(store)
    outcome = Removal(finished=finished, experiment=experiment)
    if experiment is not None:
        if experiment not in {record.name for record in store.experiments()}:
            if any(name == experiment for _, name in store.removed(experiment=experiment)):
                outcome.already = [run_id for run_id, name in store.removed(experiment=experiment) if name == experiment]
                return outcome  # removed already (this is a rerun): nothing left to do
            raise MnistlabError(f"{store.path}: no experiment '{experiment}' in this store; `mnistlab ls` lists them")
        run_ids = [run.id for run in store.runs(experiment)]
    else:
        run_ids = []
        for reference in references:
            number = whole_number(str(reference))
            if number is not None and any(run_id == number for run_id, _ in store.removed(run_id=number)):
                outcome.already.append(number)  # removed by an earlier (perhaps interrupted, now finished) rm
                continue
            run_ids.append(find_run(store, reference))
    outcome.removed = store.remove_runs(run_ids, experiment=experiment)
    if experiment is not None and experiment in {record.name for record in store.experiments()}:
        outcome.experiment = None  # a run was added meanwhile: the experiment stays, with it
    for record in outcome.removed:
        delete_path(_run_folder(store, record.id))
        store.removal_done(record.id)
    return outcome


# -- gc ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Freed:
    """One thing gc frees: its path, its size in bytes, and why it is not needed."""

    path: Path
    bytes: int
    reason: str


def size_of(path: Path) -> int:
    """Bytes held by a file or a folder's files (links are not followed)."""
    if not path.is_dir() or path.is_symlink():
        return path.lstat().st_size if (path.exists() or path.is_symlink()) else 0
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += (Path(folder) / name).lstat().st_size
            except FileNotFoundError:
                pass
    return total


def artifact_garbage(store: RunStore) -> list[Freed]:
    """What the artifacts folder holds that no run needs: folders of no run in the store (orphans,
    removals a kill interrupted, folders gc moved aside) and the damaged checkpoints set aside in
    runs' folders; runs a live process is training are left alone."""
    from mnistlab.runs.tasks import CHECKPOINT_DIR, DAMAGED_SUFFIX  # their home; it loads torch, so only here

    folder = store.root / ARTIFACTS_DIR
    if not folder.is_dir():
        return []
    runs = {run.id: run for run in store.runs()}
    pending = {run_id for run_id, _ in store.pending_removals()}
    found = []
    for entry in sorted(folder.iterdir()):
        run_id = whole_number(entry.name)
        if run_id is None or run_id not in runs:
            reason = ("removed run (its removal was interrupted)" if run_id in pending
                      else "left by an interrupted gc" if entry.name.startswith(GC_ASIDE_PREFIX)
                      else "no run in the store")
            found.append(Freed(entry, size_of(entry), reason))
        elif entry.is_dir() and not store.is_live(runs[run_id]):
            found += [Freed(damaged, size_of(damaged), f"damaged checkpoint of run {run_id}, set aside")
                      for damaged in sorted(entry.glob(f"{CHECKPOINT_DIR}{DAMAGED_SUFFIX}*"))]
    return found


def free(store: RunStore, planned: list[Freed]) -> list[Freed]:
    """Delete what ``planned`` (from ``artifact_garbage``) lists, each checked again and moved aside
    under the store's write lock (a run created or claimed since the plan keeps its folder, and a
    checkpoint set aside meanwhile under a freed name is not taken); what was freed."""
    artifacts = store.root / ARTIFACTS_DIR
    aside: list[tuple[Freed, Path]] = []
    with store.exclusive():
        still = {item.path for item in artifact_garbage(store)}
        for number, item in enumerate(planned):
            if item.path not in still:
                continue
            target = (item.path if item.path.name.startswith(GC_ASIDE_PREFIX)
                      else artifacts / f"{GC_ASIDE_PREFIX}{os.getpid()}-{number}")
            os.replace(item.path, target)
            aside.append((item, target))
    for _, target in aside:
        delete_path(target)
    for run_id, _ in store.pending_removals():
        if not _run_folder(store, run_id).exists():
            store.removal_done(run_id)
    return [item for item, _ in aside]
