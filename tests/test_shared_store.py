"""A store on a network filesystem: detection from a given mount table, the rollback journal there, and
the store's own writer lock (two real processes; stale by dead pid and by old heartbeat)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli_driver import SRC, run_cli
from mnistlab.errors import StoreUnavailable
from mnistlab.runs.shared import LOCK_NAME, Mount, mount_for, network_filesystem, parse_mountinfo
from mnistlab.runs.store import RunStore

MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 27 0:50 / /mnt/nfs rw,relatime shared:20 - nfs4 server:/export rw,vers=4.2
41 40 8:2 / /mnt/nfs/scratch rw,relatime - ext4 /dev/sdb1 rw
42 27 0:51 / /mnt/lab\\040data rw,relatime - lustre 10.0.0.1@tcp:/lab rw
43 27 0:52 / /home/me/remote rw - fuse.sshfs me@host:/ rw
44 27 0:53 / /srv rw - cifs //nas/share rw
45 27 0:54 / /srv rw - xfs /dev/sdc1 rw
46 27 0:55 / /gpfs/fs1 rw - gpfs fs1 rw
"""


@pytest.mark.parametrize(("path", "expected"), [
    ("/mnt/nfs/runs", "nfs4"),
    ("/mnt/nfs", "nfs4"),
    ("/mnt/nfs/scratch/runs", None),  # a local disk mounted inside the NFS tree: the longest prefix wins
    ("/mnt/nfsdata/runs", None),  # a prefix of the name, not a folder above it
    ("/mnt/lab data/runs", "lustre"),  # mountinfo's \040 is a space
    ("/home/me/remote/x", "fuse.sshfs"),
    ("/srv/runs", None),  # the later mount on /srv hides the cifs one
    ("/gpfs/fs1/project", "gpfs"),
    ("/tmp/runs", None),
])
def test_network_filesystem_from_a_given_mount_table(path, expected):
    mounts = parse_mountinfo(MOUNTINFO)
    assert network_filesystem(path, mounts) == expected


def test_mountinfo_parsing_and_matching():
    mounts = parse_mountinfo(MOUNTINFO + "garbage line\n")
    assert Mount("/mnt/lab data", "lustre", "10.0.0.1@tcp:/lab") in mounts and len(mounts) == 9
    assert mount_for("/anything", mounts).fstype == "ext4"
    assert mount_for("/x", []) is None and network_filesystem("/x", []) is None


@pytest.fixture
def nfs_root(tmp_path, monkeypatch):
    """A store folder this process (and children given `env`) take to be on NFS."""
    root = tmp_path / "store"
    root.mkdir()
    table = tmp_path / "mountinfo"
    table.write_text(f"27 1 8:1 / / rw - ext4 /dev/sda1 rw\n40 27 0:50 / {root.resolve()} rw - nfs4 srv:/e rw\n")
    monkeypatch.setenv("MNISTLAB_MOUNTINFO", str(table))
    return root


def test_on_a_network_filesystem_the_store_uses_the_rollback_journal_and_a_lock_of_its_own(nfs_root):
    with RunStore(nfs_root) as store:
        assert store.network == "nfs4"
        assert store.read_rows("SELECT * FROM pragma_journal_mode")[1] == [("delete",)]
        lock = json.loads((nfs_root / LOCK_NAME).read_text())  # the schema's creation was a write
        assert lock["host"] == socket.gethostname() and lock["pid"] == os.getpid()
        assert time.time() - lock["heartbeat"] < 60
        store.save_experiment("e", {})
        with RunStore(nfs_root) as second:  # this process's other store objects share its lock
            second.save_experiment("f", {})
    assert not (nfs_root / LOCK_NAME).exists()  # given back on close
    assert not list(nfs_root.glob("*-wal"))
    with RunStore(nfs_root) as reader:
        assert [record.name for record in reader.experiments()] == ["e", "f"]
    assert not (nfs_root / LOCK_NAME).exists()  # reading takes no lock


def test_a_local_store_keeps_wal_and_takes_no_lock(tmp_path, monkeypatch):
    monkeypatch.setenv("MNISTLAB_MOUNTINFO", str(tmp_path / "absent"))
    with RunStore(tmp_path / "store") as store:
        store.save_experiment("e", {})
        assert store.network is None and store.read_rows("SELECT * FROM pragma_journal_mode")[1] == [("wal",)]
    assert not (tmp_path / "store" / LOCK_NAME).exists()


HOLDER = r"""
import sys
from mnistlab.runs.store import RunStore
store = RunStore(sys.argv[1])
store.save_experiment("held", {})
print("locked", flush=True)
sys.stdin.readline()
"""


def test_a_second_writer_is_refused_while_the_first_lives_and_may_write_once_it_died(nfs_root):
    with RunStore(nfs_root) as store:
        store.save_experiment("e", {})
        store.ensure_run("e", "m", {"x": 1}, 0, "mnist", "split", 1)
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(nfs_root)], env=env, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == "locked", holder.stderr.read()
        with RunStore(nfs_root) as store:
            assert [run.id for run in store.runs()] == [1]  # reading is fine
            with pytest.raises(StoreUnavailable, match=f"being written by {socket.gethostname()}:{holder.pid}"):
                store.add_tags(1, ["x"])
        result = run_cli("tag", "1", "x", "--store", nfs_root)
        assert result.exit_code == 1 and len(result.error_lines) == 1
        assert "network filesystem (nfs4)" in result.error_lines[0] and "--backend ray" in result.error_lines[0]
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with RunStore(nfs_root) as store:  # the holder's pid is dead on this host: its lock is stale
        assert store.add_tags(1, ["x"]) == ["x"]
        assert [record.name for record in store.experiments()] == ["e", "held"]


def test_a_lock_from_another_host_is_stale_only_once_its_heartbeat_is_old(nfs_root):
    with RunStore(nfs_root) as store:
        store.save_experiment("e", {})
    lock = nfs_root / LOCK_NAME
    lock.write_text(json.dumps({"host": "elsewhere", "pid": 1, "token": "t", "heartbeat": time.time()}))
    with RunStore(nfs_root) as store:
        with pytest.raises(StoreUnavailable, match="being written by elsewhere:1, heartbeat 0 s ago"):
            store.save_experiment("f", {})
    lock.write_text(json.dumps({"host": "elsewhere", "pid": 1, "token": "t", "heartbeat": time.time() - 3600}))
    with RunStore(nfs_root) as store:
        store.save_experiment("f", {})
        assert json.loads(lock.read_text())["host"] == socket.gethostname()  # taken over
