"""Two machines on one hot folder whose clocks disagree: a live owner's jobs are never taken,
a dead owner's are taken over a lease after it fell silent.

The machines are two daemons told they are different nodes (HOTFOLDER_NODE); one of them has
its wall clock shifted by an hour (HOTFOLDER_TEST_CLOCK_SHIFT, for tests only). Leases are
judged by whether the owner's record changes, on the watcher's own monotonic clock.
"""

from __future__ import annotations

import re
import signal
from collections import Counter

import pytest
import requests
from harness import wait_for

LEASE = 3


def _executions(sim) -> Counter[str]:
    history = requests.get(f"{sim.url}/history", params={"max_items": 1000}, timeout=10).json()
    return Counter(re.sub(r"^hotfolder/|-[0-9a-f]{8}$", "", node["inputs"]["filename_prefix"])
                   for entry in history.values() for node in entry["prompt"][2].values()
                   if node["class_type"] == "SaveImage")


def _machine(hot, monkeypatch, node: str, shift: float = 0.0, log: str = "a.log"):
    daemon = hot.twin(log)
    monkeypatch.setenv("HOTFOLDER_NODE", node)
    monkeypatch.setenv("HOTFOLDER_TEST_CLOCK_SHIFT", str(shift))
    daemon.start()
    monkeypatch.delenv("HOTFOLDER_TEST_CLOCK_SHIFT")
    return daemon


@pytest.fixture
def slow_jobs(make_sim, tmp_path):
    return make_sim(job_seconds=2.5)


def _folder(hot_factory):
    hot = hot_factory
    hot.config["lease_seconds"] = LEASE
    return hot


@pytest.mark.parametrize("shift", [-3600, pytest.param(-60, marks=pytest.mark.slow),
                                   pytest.param(3600, marks=pytest.mark.slow)])
def test_a_live_owner_with_another_clock_keeps_its_jobs(tmp_path, slow_jobs, monkeypatch, shift):
    from harness import HotFolder, make_config

    hot = HotFolder(base=tmp_path, server_url=slow_jobs.url,
                    config={**make_config(tmp_path, slow_jobs.url), "lease_seconds": LEASE})
    a = _machine(hot, monkeypatch, "machine-a", shift, "a.log")
    try:
        names = [f"live{n}.txt" for n in range(3)]
        for name in names:
            hot.drop(name, f"a job of machine a {name}")
        wait_for(lambda: slow_jobs.stats()["prompts_received"] >= 2, what="a's submissions")
        b = _machine(hot, monkeypatch, "machine-b", 0.0, "b.log")
        try:
            for name in names:
                assert hot.finished(name, timeout=60) == "done"
        finally:
            b.stop()
        assert "job.resuming" not in b.log(), b.log()[-3000:]
        assert _executions(slow_jobs) == Counter({n[:-4]: 1 for n in names})
    finally:
        a.stop()


@pytest.mark.parametrize("shift", [3600, pytest.param(-3600, marks=pytest.mark.slow)])
def test_a_dead_owners_jobs_are_taken_over_a_lease_later(tmp_path, slow_jobs, monkeypatch,
                                                          shift):
    from harness import HotFolder, make_config

    hot = HotFolder(base=tmp_path, server_url=slow_jobs.url,
                    config={**make_config(tmp_path, slow_jobs.url), "lease_seconds": LEASE})
    a = _machine(hot, monkeypatch, "machine-a", shift, "a.log")
    names = [f"dead{n}.txt" for n in range(2)]
    for name in names:
        hot.drop(name, f"a job of machine a {name}")
    wait_for(lambda: len([n for n in hot.in_processing() if n.endswith(".state.json")]) == 2,
             what="a's records")
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait()
    b = _machine(hot, monkeypatch, "machine-b", 0.0, "b.log")
    try:
        for name in names:
            assert hot.finished(name, timeout=40) == "done", b.log()[-3000:]
        assert b.log().count("job.resuming") == 2
    finally:
        b.stop()
