"""Who holds something in a store: ``host:pid`` owners, and whether one is known to be dead.

The one home of that rule for the store's run claims and its shared-filesystem lock: an owner on
this host whose pid no longer exists is dead; an owner on another host cannot be checked, so only
an expired lease or heartbeat frees what it holds.
"""

from __future__ import annotations

import os
import socket

from mnistlab.util.strict import whole_number

__all__ = ["current_owner", "owner_is_dead"]


def current_owner() -> str:
    """The claim owner for this process, ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def owner_is_dead(owner: str) -> bool:
    """True when ``owner`` names a process on this host that no longer exists.

    Owners on other hosts, or not in ``host:pid`` form, cannot be checked; only the lease
    expires them.
    """
    host, _, pid_text = owner.rpartition(":")
    pid = whole_number(pid_text, upper=2**31 - 1)  # a pid_t; os.kill overflows past it
    if host != socket.gethostname() or pid is None or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, but another user's
        return False
    return False
