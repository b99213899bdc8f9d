"""Orphans are adopted by exactly one daemon, however many start at the same instant.

Jobs left in processing/ by a daemon that died (with a state record naming it, or without
one, dead between its claim and its first record) are taken over by whoever starts next. When
several daemons start together on one folder, the file system decides who takes each job;
each job runs once and ends in done/ once.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections import Counter

import pytest
import requests

from hotfolder.job.state import JobState

DAEMONS = 3


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _orphans(hot, round_no: int, count: int, *, stateless: bool) -> list[str]:
    processing = hot.dir("processing")
    processing.mkdir(parents=True, exist_ok=True)
    names = []
    dead = {"host": socket.gethostname(), "pid": _dead_pid(), "instance": "gone"}
    for n in range(count):
        name = f"r{round_no}-orphan{n}.txt"
        (processing / name).write_text(f"an orphan {round_no} {n}")
        if not (stateless and n % 2):  # a record naming a dead owner, or none at all
            state = JobState(name=name, folder="main", source=name, owner=dead,
                             lease_until=0.0, phase="submitted")
            (processing / f".{name}.state.json").write_text(json.dumps(state.record()))
        names.append(name)
    return names


def _executions(sim) -> Counter[str]:
    history = requests.get(f"{sim.url}/history", params={"max_items": 100000}, timeout=10).json()
    stems: Counter[str] = Counter()
    for entry in history.values():
        for node in entry["prompt"][2].values():
            if node["class_type"] == "SaveImage":
                prefix = node["inputs"]["filename_prefix"]
                stems[re.sub(r"^hotfolder/|-[0-9a-f]{8}$", "", prefix)] += 1
    return stems


def _rounds(hot, sim, tmp_path, rounds: int, stateless_rounds: int) -> None:
    hot.write_config()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("HOTFOLDER_TEST_KILL", None)
    all_names: list[str] = []
    for round_no in range(rounds):
        # a job without a record is given STATELESS_GRACE (10 s) first: only a few rounds
        names = _orphans(hot, round_no, 6, stateless=round_no < stateless_rounds)
        all_names += names
        with contextlib.ExitStack() as stack:
            logs = [stack.enter_context(open(tmp_path / f"d{round_no}-{i}.log", "wb"))
                    for i in range(DAEMONS)]
            procs = [subprocess.Popen([sys.executable, "-m", "hotfolder", "run", "--config",
                                       str(hot.config_path)], stdout=log,
                                      stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
                     for log in logs]
            try:
                for name in names:
                    assert hot.finished(name, timeout=60) == "done"
            finally:
                for proc in procs:
                    proc.send_signal(signal.SIGTERM)
                for proc in procs:
                    proc.wait(timeout=30)
    assert not hot.dir("failed").exists() or list(hot.dir("failed").iterdir()) == []
    done = sorted(p.name for p in hot.dir("done").iterdir())
    assert done == sorted(all_names)  # no name-2.txt: none ended twice
    ran = _executions(sim)
    assert {name[:-4]: ran[name[:-4]] for name in all_names} == {n[:-4]: 1 for n in all_names}
    assert [n for n in hot.in_processing() if not n.startswith(".hotfolder")] == []


def test_daemons_starting_together_adopt_each_orphan_once(hot, sim, tmp_path):
    _rounds(hot, sim, tmp_path, rounds=4, stateless_rounds=1)


@pytest.mark.slow
def test_daemons_starting_together_adopt_each_orphan_once_soak(hot, sim, tmp_path):
    _rounds(hot, sim, tmp_path, rounds=40, stateless_rounds=4)
