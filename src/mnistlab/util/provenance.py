"""What produced a run, recorded with it: the git state of the files that defined it, the installed
distributions (and a hash of that list), the command line or API call, and the numerics environment
(util/machine.py's). Collecting it never fails a run: a missing or slow ``git`` is recorded as such.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import socket
import subprocess
import sys
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["PROVENANCE_FORMAT", "GIT_TIMEOUT_SECONDS", "NUMERIC_FLAG_PREFIXES", "collect", "distributions", "environment_differences",
           "forget", "git_state", "invocation", "set_invocation"]

PROVENANCE_FORMAT = 1  # raised when a key changes meaning; readers say "not recorded" for what is absent
GIT_TIMEOUT_SECONDS = 5.0
# The keys of a provenance's "environment" that `compare` sets side by side (machine.numerics_environment).
# The CPU flags that pick kernels (so change numerics): what `show` names; the provenance keeps every flag.
NUMERIC_FLAG_PREFIXES = ("avx", "amx", "fma", "f16c", "sse4", "neon", "asimd", "sve")
ENVIRONMENT_KEYS = ("torch", "cuda", "cudnn", "onednn", "cpu_capability", "python", "cpu", "cpu_flags")

_invocation: dict[str, Any] | None = None


def set_invocation(argv: list[str] | None, entry: str = "cli") -> None:
    """Name the command this process runs (the CLI calls it with ``mnistlab ARGS...``); None: no
    command, so runs record the API call."""
    global _invocation
    _invocation = None if argv is None else {"entry": entry, "command": shlex.join(argv)}


def invocation() -> dict[str, Any]:
    """The command line as the CLI set it, else an API call from this interpreter's argv."""
    if _invocation is not None:
        return dict(_invocation)
    return {"entry": "api", "command": shlex.join([sys.executable, *sys.argv])}


def forget() -> None:
    """Drop what was read once per study (git states, the distributions): the runner calls it as each
    study starts, so a long-lived process (a notebook) records the tree and packages as they are now."""
    _repository_state.cache_clear()
    distributions.cache_clear()


def _git(folder: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True,
                              timeout=GIT_TIMEOUT_SECONDS, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


@lru_cache(maxsize=64)  # per study (forget): a study's runs record its start's state, for one git call each
def _repository_state(folder: Path) -> tuple[str | None, str | None, bool | None, str]:
    """(repository root, commit, dirty, why not) of the repository holding ``folder``."""
    try:
        found = subprocess.run(["git", "--version"], capture_output=True, timeout=GIT_TIMEOUT_SECONDS,
                               stdin=subprocess.DEVNULL).returncode == 0
    except (OSError, subprocess.SubprocessError):
        found = False
    if not found:
        return None, None, None, "git not found"
    root = _git(folder, "rev-parse", "--show-toplevel")
    if root is None:
        return None, None, None, "not in a git repository"
    commit = _git(folder, "rev-parse", "HEAD")
    status = _git(folder, "status", "--porcelain", "--untracked-files=no")
    return (root.strip(), commit.strip() if commit else None, None if status is None else bool(status.strip()),
            "" if commit else "no commit yet")


def git_state(file: str | Path) -> dict[str, Any]:
    """The git commit and dirty flag of the repository holding ``file`` (dirty: a tracked file
    differs from the commit, or ``file`` itself is not tracked), or why there is none."""
    path = Path(file).resolve()
    root, commit, dirty, why = _repository_state(path.parent)
    state: dict[str, Any] = {"file": str(path), "repository": root, "commit": commit}
    if root is None or commit is None:
        return {**state, "dirty": None, "reason": why}
    tracked = _git(path.parent, "ls-files", "--error-unmatch", path.name) is not None
    return {**state, "dirty": bool(dirty) or not tracked, "tracked": tracked}


@lru_cache(maxsize=1)
def distributions() -> tuple[dict[str, str], str]:
    """Every installed distribution with its version (names lower-cased, sorted), and the sha256 of
    that list: two runs with the same hash had the same packages installed."""
    found: dict[str, str] = {}
    for dist in metadata.distributions():
        name = (dist.metadata.get("Name") or "").strip().lower().replace("_", "-")
        if name:
            found.setdefault(name, dist.version or "")
    ordered = dict(sorted(found.items()))
    digest = hashlib.sha256(json.dumps(ordered, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return ordered, digest


def source_files(sources: list[str | None]) -> list[Path]:
    """The existing files among sources as errors name them (``file.yaml``, ``file.yaml:ID``, ``<python>``)."""
    files: list[Path] = []
    for source in sources:
        if not source:
            continue
        for candidate in (source, source.rsplit(":", 1)[0]):
            path = Path(candidate)
            if path.is_file():
                if path.resolve() not in files:
                    files.append(path.resolve())
                break
    return files


def collect(sources: list[str | None], device: str = "cpu") -> dict[str, Any]:
    """A run's provenance: the git state of each source file (the experiment file, the spec files),
    the distributions and their hash, the command, the host, the numerics environment and how idle
    OpenMP threads wait (mnistlab/mnistlab/__init__.py: speed, not numbers)."""
    from mnistlab import SPIN_CHOICE
    from mnistlab.util.machine import numerics_environment

    packages, digest = distributions()
    return {"format": PROVENANCE_FORMAT, "command": invocation(), "host": socket.gethostname(),
            "sources": [git_state(path) for path in source_files(sources)],
            "distributions": packages, "distributions_sha256": digest,
            "environment": numerics_environment(device), "openmp_wait": SPIN_CHOICE.note()}


def environment_differences(a: dict[str, Any] | None, b: dict[str, Any] | None) -> list[str]:
    """What differs between two provenances' environments and packages, one phrase each (empty when
    they agree, or when either was not recorded: the caller says that)."""
    if a is None or b is None:
        return []
    differences = []
    env_a, env_b = a.get("environment") or {}, b.get("environment") or {}
    for key in ENVIRONMENT_KEYS:
        if env_a.get(key) != env_b.get(key):
            if key == "cpu_flags":
                only_a = sorted(set(env_a.get(key) or []) - set(env_b.get(key) or []))
                only_b = sorted(set(env_b.get(key) or []) - set(env_a.get(key) or []))
                differences.append(f"CPU flags (only the first: {' '.join(only_a) or 'none'}; "
                                   f"only the second: {' '.join(only_b) or 'none'})")
            else:
                differences.append(f"{key} {env_a.get(key)} vs {env_b.get(key)}")
    if a.get("distributions_sha256") != b.get("distributions_sha256"):
        dists_a, dists_b = a.get("distributions") or {}, b.get("distributions") or {}
        changed = sorted(name for name in set(dists_a) | set(dists_b) if dists_a.get(name) != dists_b.get(name))
        shown = ", ".join(f"{name} {dists_a.get(name, 'absent')} vs {dists_b.get(name, 'absent')}"
                          for name in changed[:5])
        more = f" and {len(changed) - 5} more" if len(changed) > 5 else ""
        differences.append(f"installed packages ({shown}{more})")
    return differences
