"""done/ and failed/ on another file system: a move is a copy, and a crash in the middle of
it must not leave the job twice (or lose it).

The second file system is /dev/shm (a tmpfs) where the test's own temp folder is elsewhere;
the tests are skipped, saying so, where both are the same file system.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

SHM = Path("/dev/shm")


@pytest.fixture
def other_fs(tmp_path: Path) -> Iterator[Path]:
    if not SHM.is_dir() or os.stat(SHM).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on a file system other than the test's temp folder")
    path = Path(tempfile.mkdtemp(dir=SHM, prefix="hotfolder-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _on_other_fs(hot, other_fs: Path) -> None:
    hot.config["folders"][0]["done"] = str(other_fs / "done")
    hot.config["folders"][0]["failed"] = str(other_fs / "failed")


def _left_in_processing(hot) -> list[str]:
    """What a stopped daemon left in processing/. A job shows in done/ once its copy there got its
    name, a moment before the original and its state record are removed: stop first, which
    lets that finish, rather than look while the daemon is still at it."""
    hot.stop()
    return [n for n in hot.in_processing() if not n.startswith(".hotfolder-status")]


def test_a_kill_between_the_copy_and_the_removal_finishes_the_move(hot, other_fs, monkeypatch):
    _on_other_fs(hot, other_fs)
    folder_job = hot.dir("inbox") / "scene"
    for name in ("fox.txt", "bad.json"):
        monkeypatch.setenv("HOTFOLDER_TEST_KILL", f"placed:{name}")
        hot.start()
        hot.drop(name, "a red fox" if name == "fox.txt" else '{"prompt": 3')
        hot.proc.wait(timeout=30)  # killed right after the copy got its name
        assert hot.proc.returncode == -signal.SIGKILL
        monkeypatch.delenv("HOTFOLDER_TEST_KILL")
        hot.start()
        assert hot.finished(name) in ("done", "failed")
        hot.stop()
    monkeypatch.setenv("HOTFOLDER_TEST_KILL", "placed:scene")
    hot.start()
    folder_job.mkdir()
    (folder_job / "prompt.txt").write_text("a scene")
    hot.proc.wait(timeout=30)
    monkeypatch.delenv("HOTFOLDER_TEST_KILL")
    hot.start()
    assert hot.finished("scene") == "done"
    assert sorted(p.name for p in (other_fs / "done").iterdir()) == ["fox.txt", "scene"]
    assert sorted(p.name for p in (other_fs / "failed").iterdir()) == ["bad.error.json",
                                                                       "bad.json"]
    assert (other_fs / "done" / "fox.txt").read_text() == "a red fox"
    assert (other_fs / "done" / "scene" / "prompt.txt").read_text() == "a scene"
    assert _left_in_processing(hot) == []
    assert sorted(p.name for p in hot.dir("outbox").iterdir() if p.suffix == ".png") == [
        "fox_00001.png", "scene_00001.png"]


def _kill_at_random(hot, rng: random.Random, jobs: int, rounds: int) -> None:
    names = [f"job{n:03d}.txt" for n in range(jobs)]
    hot.start()
    for name in names:
        hot.drop(name, f"prompt {name}")
    for _ in range(rounds):
        time.sleep(rng.uniform(0.05, 0.6))
        hot.kill()
        hot.start()
    for name in names:
        assert hot.finished(name, timeout=60) == "done"


def _check_once(hot, other_fs: Path, jobs: int) -> None:
    done = sorted(p.name for p in (other_fs / "done").iterdir())
    assert done == [f"job{n:03d}.txt" for n in range(jobs)]  # no job-2.txt: none twice
    sidecars = [json.loads(p.read_text()) for p in hot.dir("outbox").glob("*.json")]
    assert sorted(s["job"] for s in sidecars) == done
    assert _left_in_processing(hot) == []


def test_random_kills_with_done_on_another_file_system(hot, other_fs):
    _on_other_fs(hot, other_fs)
    rng = random.Random(int(os.environ.get("HOTFOLDER_TEST_SEED", time.time_ns() % 10**6)))
    _kill_at_random(hot, rng, jobs=30, rounds=8)
    _check_once(hot, other_fs, 30)


@pytest.mark.slow
def test_random_kills_with_done_on_another_file_system_soak(hot, other_fs):
    _on_other_fs(hot, other_fs)
    rng = random.Random(int(os.environ.get("HOTFOLDER_TEST_SEED", time.time_ns() % 10**6)))
    _kill_at_random(hot, rng, jobs=150, rounds=40)
    _check_once(hot, other_fs, 150)
