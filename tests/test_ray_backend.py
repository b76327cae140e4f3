"""The Ray backend on a real local cluster: the same numbers as the local backend, trained in other
processes; a worker SIGKILLed mid-task resumes from its checkpoint; a coordinator SIGKILLed mid-study
and started again trains nothing twice. One cluster (`ray start --head`, 2 CPUs, everything on
127.0.0.1) serves the whole module and is stopped at the end, with every process it started."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from cli_driver import SRC, run_cli, spawn_cli
from test_runner import tiny_experiment, write_experiment

from mnistlab import api
from mnistlab.runs import tasks
from mnistlab.data.synthetic import synthetic_dataset, write_dataset
from mnistlab.training.history import Reporter
from mnistlab.experiments.definition import parse_experiment
from mnistlab.runs.tasks import Placement
from mnistlab.runs.runner import run_experiment
from mnistlab.training.history import EPOCH_METRICS
from mnistlab.runs.store import RunStore

# Not imported here: mnistlab imports ray itself, after setting what this machine's network rules need
# (loopback only for a loopback address, no usage statistics, token authentication).
pytestmark = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                                reason="the ray extra is not installed (pip install 'mnistlab[ray]')")

CLUSTER_CPUS = 2  # two worker processes train at once
CLUSTER_GPUS = 1  # a logical GPU (Ray schedules it; tasks here train on the CPU): fractional shares
OBJECT_STORE_BYTES = 128 * 1024 * 1024
WORKER_TITLE = "ray::train_unit"  # Ray names a worker process after the task it runs


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _session_of(pid: int) -> int | None:
    try:
        # /proc/PID/stat: "pid (comm) state ppid pgrp session ..."; comm may hold spaces.
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[3])
    except (OSError, IndexError, ValueError):
        return None


def cluster_processes(head: subprocess.Popen) -> list[int]:
    """Every process the cluster started: all of them share the head's session."""
    return [int(entry.name) for entry in Path("/proc").iterdir()
            if entry.name.isdigit() and int(entry.name) != head.pid and _session_of(int(entry.name)) == head.pid]


def training_workers(head: subprocess.Popen) -> list[int]:
    found = []
    for pid in cluster_processes(head):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        if title.startswith(WORKER_TITLE):
            found.append(pid)
    return found


class Cluster:
    def __init__(self, head: subprocess.Popen, address: str) -> None:
        self.head, self.address = head, address


@pytest.fixture(scope="module")
def cluster():
    temp = tempfile.mkdtemp(prefix="mlr-", dir="/tmp")  # short: Unix socket paths stay under 107 bytes
    port, client_port = _free_port(), _free_port()
    env = {**os.environ, "PYTHONPATH": str(SRC), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # binds 127.0.0.1 only
           "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token"}
    # `ray start` (Ray 2.60) refuses token mode without a token, and ~/.ray/auth_token exists only where
    # something generated it before (not on a fresh machine): make it as a user would, with Ray's own
    # command. Not a token of the test's own in RAY_AUTH_TOKEN: Ray caches the token a process first
    # reads, so a private instance started later in this process would then disagree with its own GCS.
    subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "get-auth-token", "--generate"], env=env,
                   check=True, stdout=subprocess.DEVNULL)
    log_path = Path(temp) / "head.log"
    with open(log_path, "w") as log:
        head = subprocess.Popen(
            [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", "--node-ip-address",
             "127.0.0.1", "--port", str(port), "--ray-client-server-port", str(client_port),
             "--num-cpus", str(CLUSTER_CPUS), "--num-gpus", str(CLUSTER_GPUS), "--include-dashboard=false",
             "--disable-usage-stats", "--temp-dir", temp, "--object-store-memory", str(OBJECT_STORE_BYTES)],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in log_path.read_text():
            assert head.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "the Ray head did not start"
            time.sleep(0.2)
        yield Cluster(head, f"127.0.0.1:{port}")
    finally:
        head.send_signal(signal.SIGTERM)  # `ray start --block` stops every process it started
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        deadline = time.monotonic() + 30
        while (left := cluster_processes(head)) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in left:  # ours (the head's session), never anyone else's
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)
        assert not left, f"Ray processes outlived the cluster: {left}"


# /proc/net/tcp{,6} addresses of the loopback interface (127.0.0.1, IPv4-mapped 127.0.0.1, ::1).
LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}
LISTEN = "0A"


def listening_addresses(pids: list[int]) -> list[tuple[int, str]]:
    """(pid, hex address) of every TCP socket the processes listen on."""
    owners = {}
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    owners[target[len("socket:["):-1]] = pid
        except OSError:
            continue  # exited meanwhile
    found = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == LISTEN and fields[9] in owners:
                found.append((owners[fields[9]], fields[1].split(":")[0]))
    return found


def test_every_ray_process_listens_on_loopback_only(cluster):
    from mnistlab.runs.ray.env import Connection

    with Connection(cluster.address) as ray:  # the coordinator's own Ray endpoint counts too
        assert ray.is_initialized()
        listening = listening_addresses([cluster.head.pid, *cluster_processes(cluster.head), os.getpid()])
    assert {pid for pid, _ in listening} >= {os.getpid()} and len(listening) >= 3  # GCS, raylet, this driver...
    assert [(pid, address) for pid, address in listening if address not in LOOPBACK] == []


def _stored(store_dir: Path, name: str) -> dict[tuple[str, int], dict]:
    """(model, seed) → status, history, predictions, final and notes of each stored run."""
    with RunStore(store_dir) as store:
        runs = {}
        for record in store.runs(name):
            assert (record.model_id, record.seed) not in runs  # every run stored once
            runs[(record.model_id, record.seed)] = {
                "id": record.id, "status": record.status, "history": store.history(record.id),
                "predictions": store.predictions(record.id), "final": record.final, "notes": record.notes,
                "started_at": record.started_at, "ended_at": record.ended_at,
            }
        return runs


def _assert_same_numbers(ray_run: dict, local_run: dict) -> None:
    for metric in ("epoch", *EPOCH_METRICS):
        if metric != "seconds":  # wall-clock time is the only thing allowed to differ
            assert ray_run["history"][metric] == local_run["history"][metric], metric
    assert np.array_equal(ray_run["predictions"][0], local_run["predictions"][0])
    assert np.array_equal(ray_run["predictions"][1], local_run["predictions"][1])
    assert ray_run["final"]["test_acc"] == local_run["final"]["test_acc"]


def test_a_study_on_ray_equals_the_local_backend_bit_for_bit(cluster, tmp_path, tiny_data_dir, monkeypatch):
    study = tiny_experiment(tiny_data_dir, name="rayeq", epochs=2)  # 2 models x 2 seeds
    with monkeypatch.context() as patched:  # what this (the coordinating) process would record
        patched.setattr(tasks, "package_versions", lambda device="cpu": {"machine": "the coordinator"})
        outcome = api.run(study, tmp_path / "ray", backend="ray", address=cluster.address)
    assert len(outcome.trained) == 4 and not outcome.failed
    api.run(study, tmp_path / "local")
    on_ray, local = _stored(tmp_path / "ray", "rayeq"), _stored(tmp_path / "local", "rayeq")
    assert set(on_ray) == set(local) and len(on_ray) == 4
    for key, run in on_ray.items():
        assert run["status"] == "completed" and run["history"]["epoch"] == [1, 2]
        worker = run["final"]["ray"]
        # Trained in a worker process of the cluster, never in this (the coordinating) process.
        assert worker["pid"] != os.getpid() and worker["host"] == socket.gethostname()
        assert worker["attempt"] == 1 and worker["resumed_from_epoch"] == 0 and worker["unit"] == [run["id"]]
        _assert_same_numbers(run, local[key])
    with RunStore(tmp_path / "ray") as store:  # the run folders are model folders, checkpoints gone
        for run in on_ray.values():
            assert (store.run_dir(run["id"]) / "model.json").exists()
            assert not (store.run_dir(run["id"]) / "checkpoint").exists()
            # Both the store and the model folder name the worker's packages and machine, not the coordinator's.
            recorded = store.get_run(run["id"]).versions
            assert recorded["machine"] != "the coordinator" and "torch" in recorded
            assert json.loads((store.run_dir(run["id"]) / "model.json").read_text())["versions"] == recorded
    shown = run_cli("show", str(next(iter(on_ray.values()))["id"]), "--store", tmp_path / "ray")
    assert shown.exit_code == 0 and "Ray worker " in " ".join(shown.stdout.split())
    again = api.run(study, tmp_path / "ray", backend="ray", address=cluster.address)
    assert again.trained == [] and len(again.skipped_finished) == 4


def test_a_seed_bundle_is_one_task_whose_seeds_stream_to_their_own_runs(cluster, tmp_path, tiny_data_dir):
    study = tiny_experiment(tiny_data_dir, name="raybundle", epochs=2)
    outcome = api.run(study, tmp_path / "ray", backend="ray", address=cluster.address, bundle=2)
    assert len(outcome.trained) == 4
    api.run(study, tmp_path / "local", bundle=2)
    on_ray, local = _stored(tmp_path / "ray", "raybundle"), _stored(tmp_path / "local", "raybundle")
    for model in ("tiny-mlp", "tiny-cnn"):
        seeds = [on_ray[(model, seed)] for seed in (0, 1)]
        # Both seeds of a model trained as one unit, by one worker process (one fit_bundle call).
        assert seeds[0]["final"]["ray"]["unit"] == seeds[1]["final"]["ray"]["unit"] == sorted(r["id"] for r in seeds)
        assert seeds[0]["final"]["ray"]["pid"] == seeds[1]["final"]["ray"]["pid"] != os.getpid()
        for seed, run in zip((0, 1), seeds):
            assert run["history"]["epoch"] == [1, 2]
            _assert_same_numbers(run, local[(model, seed)])  # the local backend's bundles, bit for bit


@pytest.mark.parametrize(("gpus_per_task", "together"), [(0.5, True), (1, False)])
def test_fractional_gpus_let_small_tasks_share_a_gpu(cluster, tmp_path, tiny_data_dir, gpus_per_task, together):
    # Two one-run units on a cluster with one GPU: half a GPU each puts both in flight at once
    # (the second is claimed before the first finishes); a whole GPU each runs them one after the other.
    study = tiny_experiment(tiny_data_dir, name=f"raygpu{gpus_per_task}", epochs=2, seeds=(0,))
    outcome = api.run(study, tmp_path / "ray", backend="ray", address=cluster.address, gpus_per_task=gpus_per_task,
                      cpus_per_task=1)
    assert len(outcome.trained) == 2 and not outcome.failed
    first, second = sorted(_stored(tmp_path / "ray", study["name"]).values(), key=lambda run: run["started_at"])
    assert (second["started_at"] < first["ended_at"]) is together


@pytest.mark.parametrize(("placement", "words"), [
    ({"cpus_per_task": CLUSTER_CPUS + 1}, f"has {CLUSTER_CPUS} CPUs, fewer than one task asks for ({CLUSTER_CPUS + 1})"),
    ({"gpus_per_task": CLUSTER_GPUS + 1}, f"has {CLUSTER_GPUS} GPUs, fewer than one task asks for ({CLUSTER_GPUS + 1})"),
])
def test_a_placement_no_node_can_satisfy_is_refused_before_anything_is_stored(cluster, tmp_path, tiny_data_dir,
                                                                              placement, words):
    from mnistlab.errors import MnistlabError

    with pytest.raises(MnistlabError, match="the Ray cluster") as info:  # Ray would keep such tasks pending forever
        api.run(tiny_experiment(tiny_data_dir, name="rayfit"), tmp_path / "store", backend="ray",
                address=cluster.address, **placement)
    assert words in str(info.value)
    with RunStore(tmp_path / "store") as store:
        assert store.runs() == []


def test_an_error_in_training_fails_its_runs_and_is_one_line(cluster, tmp_path, tiny_data_dir):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")  # --artifacts names a file: no worker can create a checkpoint folder there
    path = write_experiment(tmp_path, tiny_experiment(tiny_data_dir, name="rayfail", seeds=(0,)))
    result = run_cli("run", path, "--backend", "ray", "--address", cluster.address, "--artifacts", blocker,
                     "--store", tmp_path / "store", "--no-report")
    assert result.exit_code == 1, result  # the worker's EnvironmentFailure, carried back as itself
    assert len(result.error_lines) == 1 and "cannot create a checkpoint folder" in result.error_lines[0]
    assert str(blocker) in result.error_lines[0] and "Traceback" not in result.stderr
    with RunStore(tmp_path / "store") as store:
        runs = store.runs("rayfail")
        assert {r.status for r in runs} == {"failed"}  # both were in flight; each recorded failed once
        assert all(str(blocker) in r.error for r in runs)
        assert all(store.history(r.id)["epoch"] == [] for r in runs)


def _slow_data(tmp_path: Path) -> Path:
    # Epochs of a second or so on two cores: long enough to kill something mid-epoch.
    return write_dataset(synthetic_dataset(n_train=3000, n_test=100, seed=2), tmp_path / "data")


def test_a_worker_killed_mid_task_resumes_from_its_checkpoint(cluster, tmp_path):
    data_dir = _slow_data(tmp_path)
    study = tiny_experiment(data_dir, name="raykill", epochs=3, seeds=(0,), cnn_filters=32)
    study["models"] = study["models"][1:]  # the CNN alone
    killed: list[int] = []

    class KillTheWorker(Reporter):
        """When epoch 2 is stored, the worker is training epoch 3 and epoch 1's checkpoint is on disk."""

        def end_epoch(self, epoch, epochs, metrics):
            if epoch == 2 and not killed:
                (pid,) = training_workers(cluster.head)
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

    with RunStore(tmp_path / "ray") as store:
        outcome = run_experiment(parse_experiment(study), store, placement=Placement("ray", cluster.address),
                                 reporter_for=lambda task: KillTheWorker())
    assert killed and len(outcome.trained) == 1
    api.run(study, tmp_path / "local")
    ((key, run),) = _stored(tmp_path / "ray", "raykill").items()
    assert run["status"] == "completed"
    assert run["history"]["epoch"] == [1, 2, 3]  # none duplicated, none lost
    worker = run["final"]["ray"]
    assert worker["pid"] != killed[0] and worker["attempt"] == 2
    assert worker["resumed_from_epoch"] >= 1  # from a checkpoint, not from scratch
    assert any(note.startswith("Ray attempt 2 on ") and f"resumed after epoch {worker['resumed_from_epoch']}" in note
               for note in run["notes"]), run["notes"]
    _assert_same_numbers(run, _stored(tmp_path / "local", "raykill")[key])  # resuming changed no number


def test_a_coordinator_killed_mid_study_and_restarted_trains_nothing_twice(cluster, tmp_path):
    data_dir = _slow_data(tmp_path)
    # The MLP finishes while the CNN trains: the kill finds one run finished and one part-way.
    path = write_experiment(tmp_path, tiny_experiment(data_dir, name="raycoord", epochs=3, seeds=(0,), cnn_filters=32))
    store_dir = tmp_path / "store"
    command = ("run", str(path), "--store", str(store_dir), "--backend", "ray", "--address", cluster.address,
               "--quiet", "--no-report")
    first = spawn_cli(*command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 150
    while True:  # kill once a run is finished and another is part-way
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline, "the study never reached the state to kill it in"
        if (store_dir / "store.sqlite").exists():
            runs = _stored(store_dir, "raycoord")
            done = [k for k, r in runs.items() if r["status"] == "completed"]
            partway = [k for k, r in runs.items() if r["status"] == "running" and r["history"]["epoch"]]
            if done and partway:
                break
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.communicate()
    before = _stored(store_dir, "raycoord")
    second = spawn_cli(*command[:-2], "--no-report", stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # not --quiet
    out, err = second.communicate(timeout=240)
    assert second.returncode == 0, err
    after = _stored(store_dir, "raycoord")
    assert len(after) == 2
    finished_before = {k for k, r in before.items() if r["status"] == "completed"}
    for key, run in after.items():
        assert run["status"] == "completed", (key, run)
        assert run["history"]["epoch"] == [1, 2, 3]  # every epoch once
        if key in finished_before:  # not resubmitted: the same result, finished once
            assert run["final"] == before[key]["final"] and run["ended_at"] == before[key]["ended_at"]
            continue
        stored = len(before[key]["history"]["epoch"])
        # Resubmitted, and resumed where the killed coordinator's attempt left its checkpoint (the epoch it
        # last received, or the one before if the kill came between the two), not trained from scratch.
        assert run["final"]["ray"]["resumed_from_epoch"] >= max(stored - 1, 0), (key, run["final"], stored)
        if stored >= 2:
            assert run["final"]["ray"]["resumed_from_epoch"] >= 1
    trained = int(out.split("trained ")[1].split(",")[0])
    assert trained == 2 - len(finished_before)


def test_an_address_where_no_cluster_answers_is_one_line_in_seconds(tmp_path, tiny_data_dir):
    path = write_experiment(tmp_path, tiny_experiment(tiny_data_dir, name="rayaddr"))
    address = f"127.0.0.1:{_free_port()}"  # nothing listens there (Ray alone would retry for minutes)
    result = run_cli("run", path, "--backend", "ray", "--address", address, "--store", tmp_path / "store")
    assert result.exit_code == 1, result
    expected = (f"error: --address {address}: no Ray cluster answers there (Connection refused); "
                "start one with `ray start --head`, or leave out --address")
    assert result.error_lines == [expected]
