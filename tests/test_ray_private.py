"""`mnistlab run --backend ray` without --address: a private Ray instance on this machine, started
for the run (loopback only, a short temporary folder under /tmp) and stopped with it, every process
and the folder gone afterwards. Its own module: it is a second cluster, apart from test_ray_backend's."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest
from cli_driver import run_cli
from test_runner import tiny_experiment, write_experiment

from mnistlab.runs.ray.env import TEMP_PREFIX
from mnistlab.runs.store import RunStore

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                                reason="the ray extra is not installed (pip install 'mnistlab[ray]')")


def _ray_processes_under(folders: set[Path]) -> list[int]:
    """Processes whose command line names one of the folders (the GCS and raylet name their session)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if any(str(folder) in command for folder in folders):
            found.append(int(entry.name))
    return found


def test_a_private_instance_trains_and_leaves_nothing_behind(tmp_path, tiny_data_dir):
    study = tiny_experiment(tiny_data_dir, name="rayprivate", epochs=1, seeds=(0,))
    study["models"] = study["models"][:1]  # the MLP alone
    path = write_experiment(tmp_path, study)
    before = set(Path("/tmp").glob(f"{TEMP_PREFIX}*"))
    result = run_cli("run", path, "--backend", "ray", "--store", tmp_path / "store", "--no-report")
    assert result.exit_code == 0, result
    assert "trained 1, already done 0" in result.stdout
    with RunStore(tmp_path / "store") as store:
        (run,) = store.runs("rayprivate")
        assert run.status == "completed" and store.history(run.id)["epoch"] == [1]
        assert run.final["ray"]["attempt"] == 1
        recorded = store.provenance(run.id)  # the coordinator records provenance as the local backend does
        assert recorded["sources"][0]["file"] == str(path.resolve()) and recorded["command"]["entry"] == "cli"
    made = set(Path("/tmp").glob(f"{TEMP_PREFIX}*")) - before
    assert made == set()  # its temporary folder is removed
    deadline = time.monotonic() + 15  # shutdown signals them; give them a moment to exit
    while (left := _ray_processes_under({Path("/tmp") / TEMP_PREFIX})) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert left == []  # its GCS, raylet and workers are gone
