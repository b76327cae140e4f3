"""Importing Ray and joining (or starting) a cluster, on this machine's network rules.

Everything Ray is configured by environment variables read when ``ray`` is imported, so they are set
here first: usage statistics off; token authentication on (``ray start`` enables it for the clusters
it starts, and a driver without it cannot connect); and for a cluster on this machine alone (no
address, or a loopback one) Ray's single-machine mode, in which every Ray process binds 127.0.0.1
rather than the machine's network addresses.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path
from types import ModuleType

from mnistlab.errors import EnvironmentFailure, MnistlabError
from mnistlab.util.netcheck import check_ray_address

MISSING = "--backend ray needs mnistlab[ray]: pip install 'mnistlab[ray]'"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
LOCAL_NODE_IP = "127.0.0.1"
# A private single-machine instance: a small object store (the dataset is put once, results are
# small) and a short temporary folder (Unix socket paths under it must stay within 107 characters).
LOCAL_OBJECT_STORE_BYTES = 256 * 1024 * 1024
TEMP_PREFIX = "mlr-"
SINGLE_MACHINE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray uses the loopback address for its node


def is_loopback(address: str | None) -> bool:
    """True for no address (a private instance) or one naming this machine's loopback interface."""
    if address is None:
        return True
    host = address.split("://", 1)[-1].rsplit(":", 1)[0]
    return host in LOOPBACK_HOSTS


def import_ray(loopback: bool) -> ModuleType:
    """``ray``, imported after the environment is set; MnistlabError when it is not installed."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    already = "ray" in sys.modules
    if loopback:
        os.environ.setdefault(SINGLE_MACHINE, "0")
    try:
        import ray
    except ImportError:
        raise MnistlabError(MISSING) from None
    if loopback and already and not ray.is_initialized() and _cluster_mode(ray):
        raise MnistlabError(
            f"ray was imported before mnistlab could keep it on {LOCAL_NODE_IP}: set {SINGLE_MACHINE}=0 before "
            "importing ray, call ray.init yourself, or give --address")
    return ray


def _cluster_mode(ray: ModuleType) -> bool:
    try:
        from ray._private import ray_constants
    except ImportError:  # a Ray without the constant: assume the safe answer
        return True
    return bool(getattr(ray_constants, "ENABLE_RAY_CLUSTER", True))


class Connection:
    """``with Connection(address):`` — Ray connected for the block. Reuses a session the caller
    opened (ray.init in a notebook) and leaves it open; otherwise connects to ``address`` or starts a
    private instance on this machine, and shuts it down (and removes its temporary folder) at the end."""

    def __init__(self, address: str | None) -> None:
        self.address = address
        self.ray = import_ray(is_loopback(address))
        self._owned = False
        self._temp_dir: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> ModuleType:
        ray = self.ray
        if ray.is_initialized():
            return ray
        options: dict = {"log_to_driver": False, "logging_level": logging.WARNING, "include_dashboard": False}
        if is_loopback(self.address):
            options["_node_ip_address"] = LOCAL_NODE_IP
        try:
            if self.address is None:
                self._temp_dir = tempfile.TemporaryDirectory(prefix=TEMP_PREFIX, ignore_cleanup_errors=True,
                                                             dir="/tmp" if Path("/tmp").is_dir() else None)
                ray.init(object_store_memory=LOCAL_OBJECT_STORE_BYTES, _temp_dir=self._temp_dir.name, **options)
            else:
                check_ray_address(self.address)
                options.pop("include_dashboard")  # the cluster's own setting
                ray.init(address=self.address, **options)
        except (ConnectionError, RuntimeError, ValueError) as error:
            self._remove_temp()
            where = f"--address {self.address}" if self.address else "a Ray instance on this machine"
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise EnvironmentFailure(f"{where}: cannot connect to Ray: {first}") from None
        self._owned = True
        return ray

    def __exit__(self, *exc_info: object) -> None:
        if self._owned:
            self.ray.shutdown()
            self._owned = False
        self._remove_temp()

    def _remove_temp(self) -> None:
        if self._temp_dir is not None:
            self._temp_dir.cleanup()
            self._temp_dir = None
