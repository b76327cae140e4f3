"""How idle OpenMP threads wait (mnistlab/__init__.py) and freed memory kept while training (util/memory.py)."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

import pytest

from mnistlab.util import memory
from mnistlab import (BUSY_SPINCOUNT, CHOSEN_VARIABLE, IDLE_SPINCOUNT, choose_spin_count,
                                  other_runnable_threads, running_threads, without_chosen_spin_count)

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")


def _probe(code: str, **env: str) -> str:
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", CHOSEN_VARIABLE)}
    environment.update(env)
    environment["PYTHONPATH"] = os.pathsep.join([SRC, environment.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True,
                          check=True, timeout=120).stdout.strip()


# --- the spin count ---------------------------------------------------------------------------


def test_an_idle_machine_gets_the_long_spin_and_a_busy_one_the_short():
    idle, busy = {}, {}
    assert choose_spin_count(idle, others=lambda: 0).spincount == IDLE_SPINCOUNT
    assert idle["GOMP_SPINCOUNT"] == IDLE_SPINCOUNT and idle[CHOSEN_VARIABLE] == IDLE_SPINCOUNT
    choice = choose_spin_count(busy, others=lambda: 1)
    assert busy["GOMP_SPINCOUNT"] == BUSY_SPINCOUNT and "1 other runnable" in choice.note()
    unknown = {}
    assert choose_spin_count(unknown, others=lambda: None).spincount == BUSY_SPINCOUNT  # the safe side
    assert int(IDLE_SPINCOUNT) > int(BUSY_SPINCOUNT)


def test_load_is_the_minimum_over_samples_so_a_passing_process_is_not_load():
    counts = iter([3, 1, 4, 2])
    assert other_runnable_threads(lambda: next(counts), samples=4, interval=0) == 0
    steady = iter([3, 3, 4, 3])
    assert other_runnable_threads(lambda: next(steady), samples=4, interval=0) == 2
    assert other_runnable_threads(lambda: None, samples=2, interval=0) is None
    if os.path.exists("/proc/stat"):
        assert running_threads() >= 1  # this thread runs while it reads


def test_a_users_setting_wins_and_torch_loaded_first_is_said_not_hidden():
    told = {"GOMP_SPINCOUNT": "300000"}
    choice = choose_spin_count(told, others=lambda: 0)
    assert choice.spincount is None and told == {"GOMP_SPINCOUNT": "300000"} and "user's GOMP_SPINCOUNT=300000" in choice.note()
    passive = {"OMP_WAIT_POLICY": "PASSIVE"}
    assert choose_spin_count(passive, others=lambda: 0).spincount is None and "GOMP_SPINCOUNT" not in passive
    late = {}
    choice = choose_spin_count(late, torch_loaded=True, others=lambda: 0)
    assert choice.spincount is None and late == {} and "torch was loaded before mnistlab" in choice.note()


def test_a_parents_choice_is_chosen_again_and_a_peer_gets_the_users_environment():
    inherited = {"GOMP_SPINCOUNT": IDLE_SPINCOUNT, CHOSEN_VARIABLE: IDLE_SPINCOUNT}
    assert choose_spin_count(inherited, others=lambda: 1).spincount == BUSY_SPINCOUNT
    assert inherited["GOMP_SPINCOUNT"] == BUSY_SPINCOUNT
    # the user changed it after mnistlab chose: the user's
    changed = {"GOMP_SPINCOUNT": "5", CHOSEN_VARIABLE: IDLE_SPINCOUNT}
    assert choose_spin_count(changed, others=lambda: 0).spincount is None and changed["GOMP_SPINCOUNT"] == "5"
    assert without_chosen_spin_count({"GOMP_SPINCOUNT": "1000", CHOSEN_VARIABLE: "1000", "A": "b"}) == {"A": "b"}
    assert without_chosen_spin_count({"GOMP_SPINCOUNT": "5", CHOSEN_VARIABLE: "1000"}) == {"GOMP_SPINCOUNT": "5"}


def test_the_spin_count_is_set_before_torch_loads_when_mnistlab_comes_first():
    code = ("import sys, os; import mnistlab; assert 'torch' not in sys.modules; "
            "import torch; print(os.environ.get('GOMP_SPINCOUNT'), os.environ.get('OMP_WAIT_POLICY'), "
            "mnistlab.SPIN_CHOICE.spincount)")
    value, policy, chosen = _probe(code).split()
    assert value in (IDLE_SPINCOUNT, BUSY_SPINCOUNT) and policy == "None" and chosen == value
    # the CLI's entry imports mnistlab (the package) before anything that loads torch
    assert _probe("import os; import mnistlab.cli.app; print(os.environ.get('GOMP_SPINCOUNT'))") in (
        IDLE_SPINCOUNT, BUSY_SPINCOUNT)
    code = "import os, mnistlab; print(os.environ.get('OMP_WAIT_POLICY'), os.environ.get('GOMP_SPINCOUNT'))"
    assert _probe(code, OMP_WAIT_POLICY="PASSIVE") == "PASSIVE None"
    assert _probe(code, GOMP_SPINCOUNT="300000") == "None 300000"
    late = "import torch, mnistlab; print(mnistlab.SPIN_CHOICE.spincount)"
    assert _probe(late) == "None"


def test_the_provenance_records_how_threads_waited():
    from mnistlab import SPIN_CHOICE
    from mnistlab.util.provenance import collect

    assert collect([]).get("openmp_wait") == SPIN_CHOICE.note()


# --- freed memory kept ------------------------------------------------------------------------


glibc = pytest.mark.skipif(memory._libc() is None, reason="mallopt is glibc's")


@glibc
def test_training_keeps_freed_memory_and_gives_it_back_after(monkeypatch):
    calls = []
    libc = memory._libc()

    class Recorder:
        def mallopt(self, parameter, value):
            calls.append(("mallopt", parameter.value, value.value))
            return libc.mallopt(parameter, value)

        def malloc_trim(self, pad):
            calls.append(("trim", pad.value))
            return libc.malloc_trim(pad)

    monkeypatch.setattr(memory, "_libc", lambda: Recorder())
    with memory.keep_freed_memory() as applied:
        with memory.keep_freed_memory():  # nested: the outer block's policy holds until it ends
            pass
        assert applied is True
        assert ("trim", 0) not in calls
    assert calls.count(("mallopt", memory.M_TRIM_THRESHOLD, memory.TRAINING_TRIM_THRESHOLD)) == 2
    assert ("mallopt", memory.M_MMAP_THRESHOLD, memory.TRAINING_MMAP_THRESHOLD) in calls
    assert calls[-2:] == [("mallopt", memory.M_TRIM_THRESHOLD, memory.AFTER_TRIM_THRESHOLD), ("trim", 0)]


def test_elsewhere_than_glibc_nothing_is_done(monkeypatch):
    monkeypatch.setattr(memory, "_libc", lambda: None)
    with memory.keep_freed_memory() as applied:
        assert applied is False


@glibc
def test_a_cpu_fit_runs_inside_it(monkeypatch):
    from mnistlab.data.synthetic import synthetic_dataset
    from mnistlab.training.config import TrainConfig
    from mnistlab.training.engine import fit
    from mnistlab.zoo import get_model

    seen = []
    real = memory.keep_freed_memory

    def watched():
        seen.append("entered")
        return real()

    monkeypatch.setattr(memory, "keep_freed_memory", watched)
    fit(get_model("s004-m1"), synthetic_dataset(256, 64), TrainConfig(epochs=1, batch_size=64, device="cpu"))
    assert seen == ["entered"]
