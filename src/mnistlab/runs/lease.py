"""Keeping a claim alive while a run trains, however long its epochs take.

A claim goes stale when its heartbeat is older than the store's lease; an epoch of a large model
on a CPU can take half an hour, so a heartbeat per epoch would let a second ``mnistlab run`` take
a live run over. ``Heartbeat`` refreshes the claim from a thread every ``heartbeat_seconds``.
``RunStore`` holds one SQLite connection and is not thread-safe, so the thread opens its own
store on the same folder.
"""

from __future__ import annotations

import threading
from pathlib import Path
from types import TracebackType

from mnistlab.errors import LeaseLost, StoreError
from mnistlab.runs.store import RunStore

__all__ = ["Heartbeat"]


class Heartbeat:
    """``with Heartbeat(root, run_id, owner, interval):`` refreshes the claim until the block
    ends. ``lost`` turns true once the store says ``owner`` no longer holds the run; writes
    made with ``owner`` are refused from then on, so the trainer stops at its next write."""

    def __init__(self, root: Path, run_id: int, owner: str, interval: float) -> None:
        self.root, self.run_id, self.owner, self.interval = Path(root), run_id, owner, interval
        self.lost = False
        self.last_error: StoreError | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"mnistlab-heartbeat-{run_id}",
                                        daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()

    def check(self) -> None:
        """Raise LeaseLost if the thread found the claim gone."""
        if self.lost:
            raise LeaseLost(f"run {self.run_id} is no longer held by {self.owner}; "
                            "it was left to its new owner")

    def _beat(self) -> None:
        try:
            store = RunStore(self.root)
        except StoreError as error:  # the trainer's own writes will report the store's state
            self.last_error = error
            return
        with store:
            while not self._stop.wait(self.interval):
                try:
                    if not store.heartbeat(self.run_id, self.owner):
                        self.lost = True
                        return
                except StoreError as error:
                    # Busy or briefly unwritable: try again next beat; the lease allows
                    # several missed beats before anyone may take the run over.
                    self.last_error = error
