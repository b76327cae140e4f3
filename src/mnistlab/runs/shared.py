"""A store on a network filesystem: detecting one, and the writer lock the store takes there.

SQLite's WAL mode needs shared memory between every process using the database, so all of them must
be on one host; its file locks are unreliable over NFS, SMB, Lustre, GPFS and the like (sqlite.org:
"WAL does not work over a network filesystem"; "file locking ... is buggy on many network
filesystems"). So where the store's folder is on such a filesystem (``network_filesystem``: read from
/proc/self/mountinfo, longest mount point first), the store (1) uses the rollback journal
(journal_mode=DELETE), which a single writer can use safely there, and (2) lets one process write at a
time, with a lock file of its own (``WriterLock``) that does not depend on SQLite's locks: created with
O_EXCL, holding host, pid and a heartbeat timestamp that a thread refreshes. A lock whose heartbeat is
older than ``STALE_SECONDS``, or whose pid is dead on this host, is stale and is taken over. Several
machines train into one store with ``--backend ray``: the coordinator is the only writer.

``MNISTLAB_MOUNTINFO`` names a file read instead of /proc/self/mountinfo (tests give their own table).
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnistlab.errors import StoreUnavailable
from mnistlab.runs.owners import owner_is_dead

__all__ = ["LOCK_NAME", "NETWORK_FILESYSTEMS", "STALE_SECONDS", "Mount", "WriterLock", "mount_for",
           "hold_writer_lock", "network_filesystem", "parse_mountinfo", "writer_lock"]

LOCK_NAME = "store.lock"
MOUNTINFO = Path("/proc/self/mountinfo")
HEARTBEAT_SECONDS = 10.0
STALE_SECONDS = HEARTBEAT_SECONDS * 6  # as run claims: six missed heartbeats
# Filesystem types (mountinfo's field after " - ") on which SQLite's WAL and locks are not to be trusted.
NETWORK_FILESYSTEMS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "gpfs", "beegfs", "ceph", "fuse.ceph", "fuse.cephfs",
    "9p", "fuse.sshfs", "sshfs", "glusterfs", "fuse.glusterfs", "afs", "ocfs2", "gfs2", "fuse.s3fs",
    "fuse.gcsfuse", "fuse.rclone", "fuse.juicefs", "davfs", "fuse.davfs2", "panfs", "wekafs", "orangefs",
    "virtiofs", "vboxsf", "fuse.lizardfs", "fuse.moosefs",
})


@dataclass(frozen=True)
class Mount:
    """One line of mountinfo: where a filesystem is mounted and its type."""

    mount_point: str
    fstype: str
    source: str


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash in paths as octal escapes (\040 ...).
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[Mount]:
    """The mounts of a /proc/PID/mountinfo text, in order (a later mount on a point hides earlier ones)."""
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields[6:]:
            continue  # not a mountinfo line
        separator = fields.index("-", 6)
        if len(fields) < separator + 3 or len(fields) < 5:
            continue
        mounts.append(Mount(_unescape(fields[4]), fields[separator + 1], _unescape(fields[separator + 2])))
    return mounts


def _system_mounts() -> list[Mount]:
    source = Path(os.environ.get("MNISTLAB_MOUNTINFO") or MOUNTINFO)
    try:
        return parse_mountinfo(source.read_text(errors="replace"))
    except OSError:
        return []  # not Linux, or no /proc: nothing is known to be a network filesystem


def mount_for(path: Path | str, mounts: list[Mount]) -> Mount | None:
    """The mount holding ``path``: the longest mount point that is ``path`` or a folder above it (the
    last one listed among equals, as it hides the others)."""
    target = os.path.abspath(os.path.realpath(path))
    best: Mount | None = None
    for mount in mounts:
        point = mount.mount_point.rstrip("/") or "/"
        inside = target == point or target.startswith(point if point == "/" else point + "/")
        if inside and (best is None or len(point) >= len(best.mount_point.rstrip("/") or "/")):
            best = mount
    return best


def network_filesystem(path: Path | str, mounts: list[Mount] | None = None) -> str | None:
    """The type of the network filesystem holding ``path`` (nfs, cifs, lustre, ...), or None when it is
    local. ``mounts``: the mount table (default: this process's)."""
    mount = mount_for(path, _system_mounts() if mounts is None else mounts)
    return mount.fstype if mount is not None and mount.fstype in NETWORK_FILESYSTEMS else None


class WriterLock:
    """The one-writer lock of a store on a network filesystem: ``<root>/store.lock``, made with O_EXCL.

    ``acquire`` takes it (or takes over a stale one) and starts the heartbeat thread; a live holder
    elsewhere is a one-line StoreUnavailable pointing to ``--backend ray``. Re-entrant within a process
    (its store and its heartbeat threads' stores share one): ``writer_lock`` hands out one per folder."""

    def __init__(self, root: Path, fstype: str, stale_seconds: float = STALE_SECONDS,
                 heartbeat_seconds: float = HEARTBEAT_SECONDS) -> None:
        self.path, self.fstype = Path(root) / LOCK_NAME, fstype
        self.stale_seconds, self.heartbeat_seconds = stale_seconds, heartbeat_seconds
        self.token = uuid.uuid4().hex
        self.holders = 0
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _content(self) -> dict[str, Any]:
        return {"host": socket.gethostname(), "pid": os.getpid(), "token": self.token, "heartbeat": time.time()}

    def _read(self) -> dict[str, Any] | None:
        try:
            value = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    def _stale(self, holder: dict[str, Any] | None) -> bool:
        if holder is None:  # unreadable or half-written: stale only once the file itself is old
            try:
                return time.time() - self.path.stat().st_mtime > self.stale_seconds
            except FileNotFoundError:
                return True
        heartbeat = holder.get("heartbeat")
        old = not isinstance(heartbeat, (int, float)) or time.time() - heartbeat > self.stale_seconds
        return old or owner_is_dead(f"{holder.get('host')}:{holder.get('pid')}")

    def acquire(self) -> None:
        with self._mutex:
            if self.holders:
                self.holders += 1
                return
            for _ in range(3):  # create; or take a stale lock over and create again
                try:
                    descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                except FileExistsError:
                    holder = self._read()
                    if not self._stale(holder):
                        raise self._busy(holder) from None
                    self._break()
                    continue
                with os.fdopen(descriptor, "w") as handle:
                    json.dump(self._content(), handle)
                self.holders = 1
                self._stop.clear()
                self._thread = threading.Thread(target=self._beat, name="mnistlab-store-lock", daemon=True)
                self._thread.start()
                return
            raise self._busy(self._read())

    def _break(self) -> None:
        # Renamed first: of two processes breaking the same stale lock, only one rename succeeds.
        aside = self.path.with_name(f"{LOCK_NAME}.stale-{uuid.uuid4().hex}")
        try:
            os.replace(self.path, aside)
            aside.unlink()
        except FileNotFoundError:
            pass

    def _busy(self, holder: dict[str, Any] | None) -> StoreUnavailable:
        who = "another process" if holder is None else f"{holder.get('host')}:{holder.get('pid')}"
        age = "" if holder is None or not isinstance(holder.get("heartbeat"), (int, float)) else \
            f", heartbeat {max(0.0, time.time() - holder['heartbeat']):.0f} s ago"
        return StoreUnavailable(
            f"{self.path.parent}: this store is on a network filesystem ({self.fstype}) and is being written by "
            f"{who}{age}; SQLite allows one writer there: wait for it, or train from several machines with "
            f"`mnistlab run --backend ray` (one coordinator writes the store)")

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_seconds):
            holder = self._read()
            if holder is None or holder.get("token") != self.token:
                return  # taken over (this process stalled past the stale age): the next write reports it
            temporary = self.path.with_name(f".{LOCK_NAME}.{self.token}")
            try:
                temporary.write_text(json.dumps(self._content()))
                os.replace(temporary, self.path)
            except OSError:
                pass  # a missed beat; STALE_SECONDS allows several

    def holds(self) -> bool:
        """True while the lock file is still this lock's (not taken over as stale)."""
        holder = self._read()
        return holder is not None and holder.get("token") == self.token

    def release(self) -> None:
        with self._mutex:
            if self.holders == 0:
                return
            self.holders -= 1
            if self.holders:
                return
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
            if self.holds():
                self.path.unlink(missing_ok=True)


_LOCKS: dict[Path, WriterLock] = {}
_LOCKS_MUTEX = threading.Lock()


def writer_lock(root: Path, fstype: str) -> WriterLock:
    """This process's one WriterLock for the store in ``root``."""
    key = Path(os.path.realpath(root))
    with _LOCKS_MUTEX:
        if key not in _LOCKS:
            _LOCKS[key] = WriterLock(key, fstype)
        return _LOCKS[key]


def hold_writer_lock(held: WriterLock | None, root: Path, fstype: str) -> WriterLock:
    """Before a store object's write: take this process's lock on ``root`` on its first write (the
    store gives it back when closed), and on later ones check it was not taken over meanwhile."""
    if held is None:
        lock = writer_lock(root, fstype)
        lock.acquire()
        return lock
    if not held.holds():
        raise StoreUnavailable(f"{root}: this process lost the store's writer lock (its heartbeat went stale and "
                               "another process took it over); nothing was written")
    return held
