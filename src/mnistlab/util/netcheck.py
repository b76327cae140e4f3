"""A short connection check for the outside services mnistlab talks to (a Ray cluster, an MLflow
server), made before any work: their own clients retry for minutes when nobody listens, which
looks like a hang. The one home of the probe and its timeout."""

from __future__ import annotations

import socket

from mnistlab.errors import EnvironmentFailure, MnistlabError
from mnistlab.util.strict import whole_number

PROBE_SECONDS = 5.0
_MAX_PORT = 65535


def host_port(address: str, what: str) -> tuple[str, int] | None:
    """(host, port) of ``[scheme://]host:port[/path]``; None where there is no port to check (``auto``,
    a name the client resolves itself); a one-line error for a port with no host or a bad port."""
    rest = address.split("://", 1)[-1].split("/", 1)[0]
    host, colon, port = rest.rpartition(":")
    if not colon or "]" in port:
        return None
    number = whole_number(port, upper=_MAX_PORT)
    if not host or number is None:
        raise MnistlabError(f"{what} {address!r}: give host:port, e.g. 127.0.0.1:6379")
    return host.strip("[]"), number


def check_reachable(host: str, port: int, what: str, hint: str) -> None:
    """Connect and close within PROBE_SECONDS, or fail with one line (an environment failure):
    "{what} ({the reason}); {hint}"."""
    try:
        socket.create_connection((host, port), timeout=PROBE_SECONDS).close()
    except OSError as error:
        raise EnvironmentFailure(f"{what} ({error.strerror or error}); {hint}") from None


def check_ray_address(address: str) -> None:
    """Fail in seconds when nothing listens at a host:port Ray address (Ray itself retries for
    minutes, and prints its own traceback for an address it cannot parse, such as ':1')."""
    found = host_port(address, "--address")
    if found is not None:
        check_reachable(*found, f"--address {address}: no Ray cluster answers there",
                        "start one with `ray start --head`, or leave out --address")


__all__ = ["PROBE_SECONDS", "check_ray_address", "check_reachable", "host_port"]
