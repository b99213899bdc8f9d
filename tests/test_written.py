"""The job that runs is the file that was dropped: taken the moment it is complete, never
before, and never another file swapped in for it.

Each test runs the real daemon against the simulator and writes into its inbox the way a slow
copy, an editor, a script or an attacker would.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import requests
from harness import HotFolder, make_config, wait_for

SECRET = "SECRET-TOKEN-do-not-leak-4711"


def _claimed_at(hot: HotFolder, job: str) -> float | None:
    for event in hot.events():
        if event.get("event") == "job.claimed" and event.get("job") == job:
            return datetime.fromisoformat(event["timestamp"]).timestamp()
    return None


def _event(hot: HotFolder, name: str, **match: Any) -> dict[str, Any] | None:
    for event in hot.events():
        if event.get("event") == name and all(event.get(k) == v for k, v in match.items()):
            return event
    return None


def _write_in_steps(path: Path, chunks: list[bytes], pause: float,
                    closed: dict[str, float]) -> None:
    """One descriptor, several writes with pauses between them: a slow copy or a script."""
    with open(path, "wb") as fh:
        for i, chunk in enumerate(chunks):
            if i:
                time.sleep(pause)
            fh.write(chunk)
            fh.flush()
    closed[path.name] = time.time()


def _status_json(hot: HotFolder) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "hotfolder", "status", "--config",
                          str(hot.config_path), "--json"], capture_output=True, text=True,
                         check=True, cwd=hot.base)
    return json.loads(out.stdout)


# -- never another file ---------------------------------------------------------------------


def test_a_settled_file_swapped_for_a_link_before_its_claim_is_refused(tmp_path, make_sim):
    sim = make_sim(job_seconds=60)  # the busy job holds the server until cancelled
    config = make_config(tmp_path, sim.url, file_mode="0666")
    config["comfy"]["max_in_flight"] = 1  # one slot: the next file is claimed when it frees
    hot = HotFolder(base=tmp_path, server_url=sim.url, config=config)
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "comfy-token"
    secret.write_text(SECRET)
    secret.chmod(0o600)
    try:
        hot.start()
        hot.drop("busy.txt", "a job that keeps the only slot")
        wait_for(lambda: _event(hot, "job.claimed", job="busy.txt"), what="the busy job claimed")
        inbox = hot.dir("inbox")
        hot.drop("victim-link.txt", "an honest prompt")
        hot.drop("victim-hardlink.txt", "another honest prompt")
        for name in ("victim-link.txt", "victim-hardlink.txt"):
            wait_for(lambda name=name: _event(hot, "job.ready", file=name),
                     what=f"{name} settled and waiting for a slot")
        assert (inbox / "victim-link.txt").exists() and not _claimed_at(hot, "victim-link.txt")
        # swapped while it waits for a slot: a link to the daemon's own token, and a hard
        # link to it
        (inbox / "victim-link.txt").unlink()
        os.symlink(secret, inbox / "victim-link.txt")
        (inbox / "victim-hardlink.txt").unlink()
        os.link(secret, inbox / "victim-hardlink.txt")
        (inbox / "busy.cancel").write_text("")  # the slot is freed: the victims' claims come now
        assert hot.finished("busy.txt", timeout=30) == "failed"
        for name in ("victim-link.txt", "victim-hardlink.txt"):
            wait_for(lambda name=name: _event(hot, "job.refused", file=repr(name)),
                     what=f"{name} refused at its claim")
        hot.drop("after.json", "{", stale=True)  # a later job, handled: the daemon moved on
        assert hot.finished("after.json") == "failed"
        assert os.path.islink(inbox / "victim-link.txt")
        assert (inbox / "victim-hardlink.txt").stat().st_nlink == 2
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600  # file_mode never reached it
        assert secret.read_text() == SECRET
        assert not [p for p in hot.dir("done").iterdir() if p.name.startswith("victim")]
        assert not [p for p in hot.dir("failed").iterdir() if p.name.startswith("victim")]
        assert hot.error("busy.txt")["kind"] == "cancelled"
        assert not [p for p in hot.dir("processing").iterdir() if p.name.startswith("victim")]
        # the secret is nowhere: not in the outbox, not on the server, not in the log
        for path in hot.dir("outbox").iterdir():
            assert SECRET.encode() not in path.read_bytes(), path
        assert SECRET not in requests.get(f"{sim.url}/history", timeout=5).text
        assert SECRET not in hot.log()
        assert hot.proc.poll() is None
    finally:
        hot.stop()


def test_a_batch_output_folder_swapped_for_a_link_receives_nothing_through_it(tmp_path,
                                                                                make_sim):
    sim = make_sim(job_seconds=0.6)
    config = make_config(tmp_path, sim.url)
    config["comfy"]["max_in_flight"] = 1  # the runs go one at a time
    hot = HotFolder(base=tmp_path, server_url=sim.url, config=config)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    try:
        hot.start()
        hot.drop("grid.json", json.dumps({"prompt": "a red fox", "seed": 1, "count": 4}))
        outbox = hot.dir("outbox")
        wait_for(lambda: (outbox / "grid" / "grid-0001_00001.png").exists(),
                 what="the first run's output")
        os.rename(outbox / "grid", outbox / "grid-moved")  # the attacker's swap
        os.symlink(elsewhere, outbox / "grid")
        assert hot.finished("grid.json") == "done"
        assert list(elsewhere.iterdir()) == []
        kept = sorted(p.name for p in (outbox / "grid-moved").iterdir())
        assert kept == ["grid-0001_00001.png", "grid-0002_00001.png", "grid-0003_00001.png",
                        "grid-0004_00001.png", "manifest.json"]
        assert os.path.islink(outbox / "grid")
    finally:
        hot.stop()


# -- never before it is complete ---------------------------------------------------------------


def test_write_pause_write_on_one_descriptor_runs_the_full_content(hot):
    settle = 0.5
    hot.config["folders"][0]["settle_seconds"] = settle
    hot.start()
    inbox = hot.dir("inbox")
    closed: dict[str, float] = {}
    jobs = {
        "prompt.txt": [b"a red fox in a snowy forest,", b" golden hour, photorealistic"],
        "spec.json": [b'{"prompt": "a snow owl', b' at night", "steps": 3}'],
        "rows.csv": [b"prompt,seed\na grey wolf,1\n", b"a brown bear,2\n"],
    }
    writers = [threading.Thread(target=_write_in_steps,
                                args=(inbox / name, chunks, 3 * settle, closed))
               for name, chunks in jobs.items()]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    for name in jobs:
        assert hot.finished(name) == "done", name
        assert _claimed_at(hot, name) >= closed[name], f"{name} was claimed before its close"
    assert hot.sidecar("prompt")["prompt"] == "a red fox in a snowy forest, golden hour, " \
                                              "photorealistic"
    assert hot.sidecar("spec")["prompt"] == "a snow owl at night"
    manifest = json.loads((hot.dir("outbox") / "rows" / "manifest.json").read_text())
    assert [r["prompt"] for r in manifest["runs"]] == ["a grey wolf", "a brown bear"]


def test_a_file_held_open_is_not_taken_until_closed_and_shows_as_being_written(hot):
    hot.start()
    inbox = hot.dir("inbox")
    path = inbox / "held.txt"
    fh = open(path, "wb")  # noqa: SIM115 - held open on purpose, closed below
    try:
        fh.write(b"written whole, but its writer keeps it open")
        fh.flush()
        wait_for(lambda: _event(hot, "job.being_written", file="held.txt"),
                 what="the daemon to see the writer")
        doc = wait_for(lambda: (lambda d: d if d["folders"][0]["being_written"] else None)(
            _status_json(hot)), what="status --json to list the file")
        held = doc["folders"][0]["being_written"][0]
        assert held["file"] == "held.txt"
        assert {"pid": os.getpid(), "process": Path(f"/proc/{os.getpid()}/comm").read_text()
                .strip()} in held["writers"]
        time.sleep(max(0.0, 3 - held["seconds"]))  # held open 3 s in all (15 x settle), quiet
        assert path.exists(), "taken while its writer still had it open"
        assert not _claimed_at(hot, "held.txt")
    finally:
        fh.close()
    closed = time.time()
    assert hot.finished("held.txt") == "done"
    assert _claimed_at(hot, "held.txt") >= closed
    assert _event(hot, "job.claimed", job="held.txt")["ready_by"] == "writer closed"
    assert hot.sidecar("held")["prompt"] == "written whole, but its writer keeps it open"
    wait_for(lambda: not _status_json(hot)["folders"][0]["being_written"],
             what="the status to drop the file")


def test_a_rename_into_the_inbox_is_claimed_without_the_settle_wait(hot):
    hot.config["folders"][0]["settle_seconds"] = 60.0  # a wait the test could not sit out
    hot.start()
    hot.drop("renamed.txt", "delivered by a rename, as sync clients do")
    assert hot.finished("renamed.txt", timeout=30) == "done"
    assert _event(hot, "job.claimed", job="renamed.txt")["ready_by"] == "renamed in"


# -- where the writer is invisible: the settle window, backed up -------------------------------


def _invisible(hot: HotFolder) -> None:
    """A share whose writers the daemon cannot see: polling, and the clock alone decides."""
    hot.config["folders"][0].update(watch="poll", ready="settle", settle_seconds=0.3)


def test_polling_a_file_appended_after_the_claim_is_read_again_before_submit(tmp_path,
                                                                              make_sim):
    sim = make_sim(job_seconds=1.0)
    config = make_config(tmp_path, sim.url)
    config["comfy"]["max_in_flight"] = 1  # the job waits for the slot between claim and submit
    hot = HotFolder(base=tmp_path, server_url=sim.url, config=config)
    _invisible(hot)
    try:
        hot.start()
        hot.drop("blocker.txt", "a job holding the only slot")
        wait_for(lambda: _event(hot, "job.submitted", job="blocker.txt"), what="the blocker")
        path = hot.dir("inbox") / "appended.txt"
        with open(path, "wb") as fh:
            fh.write(b"a red fox")
            fh.flush()
            wait_for(lambda: not path.exists(), what="the claim (the writer keeps writing)")
            fh.write(b", in deep snow")  # the descriptor still points at the claimed file
        assert hot.finished("appended.txt") == "done"
        assert hot.sidecar("appended")["prompt"] == "a red fox, in deep snow"
        assert _event(hot, "job.still_being_written", job="appended.txt")
        assert (hot.dir("done") / "appended.txt").read_bytes() == b"a red fox, in deep snow"
    finally:
        hot.stop()


def test_polling_a_json_invalid_when_first_read_and_completed_later_runs(hot):
    _invisible(hot)
    hot.start()
    closed: dict[str, float] = {}
    _write_in_steps(hot.dir("inbox") / "late.json",
                    [b'{"prompt": "a fox', b' in snow", "steps": 4}'], 4.0, closed)
    assert hot.finished("late.json", timeout=40) == "done"
    assert hot.sidecar("late")["prompt"] == "a fox in snow"
    waited = _event(hot, "job.still_being_written", job="late.json")
    assert waited and "invalid JSON" in waited["error"]


def test_polling_a_file_changed_while_on_the_server_runs_again_with_its_final_content(
        tmp_path, make_sim):
    sim = make_sim(job_seconds=1.5)
    hot = HotFolder(base=tmp_path, server_url=sim.url, config=make_config(tmp_path, sim.url))
    _invisible(hot)
    try:
        hot.start()
        path = hot.dir("inbox") / "edited.txt"
        with open(path, "wb") as fh:
            fh.write(b"the first draft of a prompt")
            fh.flush()
            wait_for(lambda: _event(hot, "job.submitted", job="edited.txt"),
                     what="the first draft on the server")
            fh.seek(0)
            fh.truncate()
            fh.write(b"the final prompt")
        assert hot.finished("edited.txt") == "done"
        sidecar = hot.sidecar("edited")
        assert sidecar["prompt"] == "the final prompt"
        assert sidecar["reran"]["previous"]["bytes"] == len(b"the first draft of a prompt")
        assert sidecar["job_file"]["bytes"] == len(b"the final prompt")
        done = (hot.dir("done") / "edited.txt").read_bytes()
        assert done == b"the final prompt"
        assert sidecar["job_file"]["sha256"] == hashlib.sha256(done).hexdigest()
        pngs = sorted(p.name for p in hot.dir("outbox").glob("edited*.png"))
        assert pngs == ["edited_00001.png"]  # the first run's image was taken back
        assert _event(hot, "job.rerun", job="edited.txt")
    finally:
        hot.stop()
