"""Never lose a job, never repeat an output: SIGKILL, server restarts, two daemons, cancel."""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from pathlib import Path

import pytest
import requests
from harness import HotFolder, make_config, wait_for

from hotfolder.job.state import read_record
from hotfolder.sim import SimServer


def drop_jobs(hot: HotFolder, count: int, prefix: str = "job") -> list[str]:
    names = [f"{prefix}{i:03d}.txt" for i in range(count)]
    for name in names:
        hot.drop(name, f"prompt number {name}")
    return names


def all_finished(hot: HotFolder, names: list[str]) -> bool:
    finished = {p.name for p in hot.dir("done").iterdir()} | \
        {p.name for p in hot.dir("failed").iterdir()}
    return all(n in finished for n in names)


def assert_exactly_once(hot: HotFolder, names: list[str]) -> None:
    """Every job in exactly one of done/ or failed/, each output once, nothing partial."""
    done = sorted(p.name for p in hot.dir("done").iterdir())
    failed = sorted(p.name for p in hot.dir("failed").iterdir() if not p.name.endswith(
        ".error.json"))
    assert sorted(done + failed) == sorted(names), "a job was lost or finished twice"
    assert failed == [], [hot.error(n) for n in failed]
    leftovers = hot.in_processing()
    assert leftovers == [], f"left in processing/: {leftovers}"
    assert list(hot.dir("inbox").iterdir()) == []
    outbox = list(hot.dir("outbox").iterdir())
    assert not [p.name for p in outbox if p.name.startswith(".")], "a temp file was left"
    sidecars = [json.loads(p.read_text()) for p in outbox if p.suffix == ".json"]
    assert sorted(s["job"] for s in sidecars) == sorted(names), "a sidecar is missing or doubled"
    listed = Counter(o["file"] for s in sidecars for o in s["outputs"])
    images = Counter(p.name for p in outbox if p.suffix == ".png")
    assert listed == images, "an output is missing, doubled or unlisted"
    assert all(n == 1 for n in listed.values())
    for sidecar in sidecars:  # each job's images are its own (the prompt embedded in the PNG)
        stem = Path(sidecar["job"]).stem
        assert [o["file"] for o in sidecar["outputs"]] == [f"{stem}_00001.png"]


def kill_and_restart_run(tmp_path: Path, jobs: int, seed: int, deadline: float,
                         max_kills: int) -> None:
    sim = SimServer(host="127.0.0.1", port=0, job_seconds=0.03)
    sim.start()
    hot = HotFolder(base=tmp_path, server_url=sim.url, config=make_config(tmp_path, sim.url))
    hot.config["folders"][0]["settle_seconds"] = 0.1
    rng = random.Random(seed)
    try:
        hot.start()
        names = drop_jobs(hot, jobs)
        kills = 0
        stop_at = time.monotonic() + deadline
        # kill at random until the jobs are done or enough kills landed, then let the last
        # daemon finish: a kill between a claim's rename and its record leaves a job that is
        # adopted only after claim.STATELESS_GRACE, which endless kills would never allow
        while not all_finished(hot, names) and kills < max_kills:
            time.sleep(rng.uniform(0.05, 0.6))
            hot.kill()
            kills += 1
            hot.start()
        wait_for(lambda: all_finished(hot, names), timeout=max(30.0, stop_at - time.monotonic()),
                 what=f"every job to finish after {kills} kills")
        hot.stop()
        assert kills >= 5, "the run ended before the daemon was killed often enough"
        assert_exactly_once(hot, names)
        resumed = [e for e in hot.events() if e.get("event") == "job.resuming"]
        assert resumed, "no kill landed while a job was in flight"
    finally:
        hot.kill()
        sim.stop()


def test_sigkill_at_many_points_loses_and_repeats_nothing(tmp_path):
    kill_and_restart_run(tmp_path, jobs=50, seed=1, deadline=150, max_kills=40)


@pytest.mark.slow
def test_sigkill_soak(tmp_path):
    """The long variant: `pytest -m slow`."""
    kill_and_restart_run(tmp_path, jobs=400, seed=int(time.time()), deadline=1200,
                         max_kills=400)


def test_simulator_restart_mid_run_loses_history_but_no_job(tmp_path, monkeypatch):
    sim = SimServer(host="127.0.0.1", port=0, job_seconds=0.15)
    sim.start()
    port = sim.port
    hot = HotFolder(base=tmp_path, server_url=sim.url, config=make_config(tmp_path, sim.url))
    try:
        hot.start()
        names = drop_jobs(hot, 20)
        wait_for(lambda: len(list(hot.dir("done").iterdir())) >= 3, what="a few jobs done")
        sim.stop()  # history and queue are gone, like a ComfyUI restart
        time.sleep(1.0)
        sim = SimServer(host="127.0.0.1", port=port, job_seconds=0.05)
        sim.start()
        wait_for(lambda: all_finished(hot, names), timeout=60, what="every job to finish")
        hot.stop()
        assert_exactly_once(hot, names)
        assert any(e.get("event") in ("job.lost_by_server", "server.unreachable")
                   for e in hot.events())
    finally:
        hot.kill()
        sim.stop()


def test_two_daemons_on_one_folder_process_each_job_once(hot):
    hot.config["folders"][0]["settle_seconds"] = 0.1
    first = hot
    second = hot.twin("daemon-2.log")
    first.start()
    second.start()
    try:
        names = drop_jobs(hot, 30)
        wait_for(lambda: all_finished(hot, names), timeout=60, what="every job to finish")
        first.stop()
        second.stop()
        assert_exactly_once(hot, names)
        claimed = [e["job"] for d in (first, second) for e in d.events()
                   if e.get("event") == "job.claimed"]
        assert sorted(claimed) == sorted(names), "a job was claimed twice"
    finally:
        second.kill()


def _queue_ids(url: str) -> tuple[set[str], set[str]]:
    q = requests.get(f"{url}/queue", timeout=5).json()
    return ({i[1] for i in q["queue_running"]}, {i[1] for i in q["queue_pending"]})


def _state(hot: HotFolder, name: str) -> dict:
    record = read_record(hot.dir("processing") / f".{name}.state.json")
    assert record is not None
    return record


def test_cancel_a_queued_and_a_running_job(tmp_path):
    sim = SimServer(host="127.0.0.1", port=0, job_seconds=20)
    sim.start()
    hot = HotFolder(base=tmp_path, server_url=sim.url, config=make_config(tmp_path, sim.url))
    try:
        hot.start()
        hot.drop("running.txt", "will be interrupted")
        wait_for(lambda: _queue_ids(sim.url)[0], what="the first job to run")
        hot.drop("queued.txt", "will be removed from the queue")
        wait_for(lambda: _queue_ids(sim.url)[1], what="the second job to queue")
        running_id = _state(hot, "running.txt")["prompt_id"]
        queued_id = _state(hot, "queued.txt")["prompt_id"]
        assert _queue_ids(sim.url) == ({running_id}, {queued_id})

        os.unlink(hot.dir("processing") / "queued.txt")  # cancel by deleting from processing/
        wait_for(lambda: (hot.dir("failed") / "queued.error.json").exists(), what="cancel 1")
        assert queued_id not in _queue_ids(sim.url)[1]
        assert hot.error("queued.txt")["kind"] == "cancelled"

        hot.drop("running.cancel", "")  # cancel by a .cancel file in the inbox
        assert hot.finished("running.txt") == "failed"
        assert hot.error("running.txt")["kind"] == "cancelled"
        wait_for(lambda: not _queue_ids(sim.url)[0], timeout=10, what="the interrupt")
        history = requests.get(f"{sim.url}/history/{running_id}", timeout=5).json()
        messages = [m[0] for m in history[running_id]["status"]["messages"]]
        assert "execution_interrupted" in messages
        assert not (hot.dir("inbox") / "running.cancel").exists()
        assert not list(hot.dir("outbox").iterdir())
    finally:
        hot.stop()
        sim.stop()


def test_sigkill_during_a_batch_keeps_every_run_exactly_once(tmp_path):
    sim = SimServer(host="127.0.0.1", port=0, job_seconds=0.03)
    sim.start()
    hot = HotFolder(base=tmp_path, server_url=sim.url, config=make_config(tmp_path, sim.url))
    rng = random.Random(7)
    try:
        hot.start()
        hot.drop("many.json", json.dumps({"prompt": "x", "count": 20, "seed": 1000}))
        kills = 0
        stop_at = time.monotonic() + 120
        while not (hot.dir("done") / "many.json").exists():
            assert time.monotonic() < stop_at, f"not finished after {kills} kills"
            time.sleep(rng.uniform(0.05, 0.4))
            hot.kill()
            kills += 1
            hot.start()
        hot.stop()
        assert kills >= 3
        assert hot.in_processing() == [] and list(hot.dir("failed").iterdir()) == []
        folder = hot.dir("outbox") / "many"
        assert [p.name for p in hot.dir("outbox").iterdir()] == ["many"]  # one folder, no -2
        images = sorted(p.name for p in folder.iterdir() if p.suffix == ".png")
        assert images == [f"many-{i:04d}_00001.png" for i in range(1, 21)]
        assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["runs_done"] == 20
        assert [r["seed"] for r in manifest["runs"]] == list(range(1000, 1020))
        assert [r["outputs"] for r in manifest["runs"]] == [[name] for name in images]
    finally:
        hot.kill()
        sim.stop()
