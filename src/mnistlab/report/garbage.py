"""``gc``: what a store's folder holds that nothing needs, and freeing exactly that.

Two kinds, each from its one home: artifacts (runs.manage: folders of no run, damaged checkpoints set
aside) and reports (this package's file names: ``<slug>.html``, ``<slug>.md``, ``<slug>-files/``) of
experiments no longer in the store. A report being written is never touched: its experiment is in the
store, and the temporary files of a write in progress (``.*.part``) are never listed.
"""

from __future__ import annotations

from pathlib import Path

from mnistlab.report.content import slug
from mnistlab.report.folders import REPORTS_DIR
from mnistlab.runs.manage import Freed, artifact_garbage, delete_path, free, opened, size_of
from mnistlab.runs.store import DEFAULT_ROOT, RunStore

__all__ = ["gc", "orphan_reports"]

REPORT_ENDINGS = (".html", ".md", "-files")


def orphan_reports(folder: Path, experiments: list[str]) -> list[Freed]:
    """The report files in ``folder`` of experiments not in ``experiments``."""
    if not folder.is_dir():
        return []
    kept = {slug(name) for name in experiments}
    found = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue  # a write in progress (util.atomic's temporary files), or not ours
        stem = next((entry.name[: -len(end)] for end in REPORT_ENDINGS if entry.name.endswith(end)), None)
        if stem and stem not in kept:
            found.append(Freed(entry, size_of(entry), f"report of experiment '{stem}', no longer in the store"))
    return found


def gc(store: RunStore | str | Path = DEFAULT_ROOT, yes: bool = False) -> list[Freed]:
    """What the store's folder holds that nothing needs (Freed: path, bytes, reason), deleted only with
    `yes`; the list is then exactly what was freed, each item checked again just before. Runs being
    trained and reports being written are never touched."""
    def work(run_store: RunStore) -> list[Freed]:
        reports_dir = run_store.root / REPORTS_DIR
        artifacts = artifact_garbage(run_store)
        reports = orphan_reports(reports_dir, [record.name for record in run_store.experiments()])
        if not yes:
            return artifacts + reports
        freed = free(run_store, artifacts)
        still = {item.path for item in orphan_reports(reports_dir, [record.name for record in run_store.experiments()])}
        for item in reports:
            if item.path in still:
                delete_path(item.path)
                freed.append(item)
        return freed

    return opened(store, work)
