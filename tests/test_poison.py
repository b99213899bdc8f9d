"""One bad file never stops the daemon, nor puts it into a restart loop.

Names no file system call or log line can take, names too long for what the daemon derives
from them, and a job that kills the daemon outright (a test-only fault standing in for any
bug): each ends in failed/ or is left alone with a reason, and every other job is delivered.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from harness import HotFolder, make_config, wait_for


def _start_tolerating_death(hot: HotFolder) -> subprocess.Popen[bytes]:
    """Start the daemon as systemd would restart it: it may die again before it says ready."""
    hot.write_config()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(hot.log_path, "ab") as log:
        hot.proc = subprocess.Popen(
            [sys.executable, "-m", "hotfolder", "run", "--config", str(hot.config_path)],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=hot.base)
    return hot.proc


def test_a_job_that_kills_the_daemon_fails_after_three_deaths(tmp_path, sim, monkeypatch):
    monkeypatch.setenv("HOTFOLDER_TEST_KILL", "start:poison.txt")
    hot = HotFolder(base=tmp_path, server_url=sim.url, config=make_config(tmp_path, sim.url))
    try:
        hot.drop("poison.txt", "a prompt that trips a fatal fault")
        for i in range(5):
            hot.drop(f"fine{i}.txt", f"an ordinary prompt {i}")
        starts = 0
        while not (hot.dir("failed") / "poison.txt").exists():
            assert starts < 6, "still dying on the same job: a restart loop\n" + hot.log()
            proc = _start_tolerating_death(hot)
            starts += 1
            wait_for(lambda proc=proc: proc.poll() is not None
                     or (hot.dir("failed") / "poison.txt").exists(), timeout=30,
                     what="the daemon to die on the job, or fail it")
        assert starts == 4  # three deaths, then the job is failed instead of run
        error = hot.error("poison.txt")
        assert error["kind"] == "crashed"
        assert "hotfolder stopped while handling this job 3 times" in error["error"]
        for i in range(5):
            assert hot.finished(f"fine{i}.txt") == "done"
        assert hot.proc.poll() is None
    finally:
        hot.stop()


def _drop_long(hot: HotFolder, name: str, text: str) -> None:
    """A careful copy under a short temp name: the long name only appears with the rename."""
    tmp = hot.dir("inbox") / ".long.part"
    tmp.write_text(text)
    old = time.time() - 60  # complete long ago: an invalid one fails at once
    os.utime(tmp, (old, old))
    tmp.rename(hot.dir("inbox") / name)


def test_names_that_are_not_utf8_or_very_long_never_stop_the_daemon(hot):
    hot.start()
    inbox = hot.dir("inbox")
    with open(os.path.join(os.fsencode(inbox), b"bad\xff.txt"), "wb") as fh:
        fh.write(b"a name in a legacy encoding")
    os.mkdir(os.path.join(os.fsencode(inbox), b"folder\xfe"))
    long_bad = "x" * 246 + ".json"  # 251 bytes: its error file name must be shortened
    long_good = "y" * 250 + ".txt"  # 254 bytes: twice, so done/ needs a "-2" name
    _drop_long(hot, long_bad, "{")
    _drop_long(hot, long_good, "the first of two")
    wait_for(lambda: not (inbox / long_good).exists(), what="the first long name claimed")
    _drop_long(hot, long_good, "the second of two")
    assert hot.finished(long_bad) == "failed"
    errors = [p for p in hot.dir("failed").iterdir() if p.name.endswith(".error.json")]
    assert len(errors) == 1 and len(os.fsencode(errors[0].name)) <= 255
    assert hot.finished(long_good) == "done"
    wait_for(lambda: len(list(hot.dir("done").iterdir())) == 2, what="the second long name")
    assert all(len(os.fsencode(p.name)) <= 255 for p in hot.dir("done").iterdir())
    hot.drop("after.txt", "the daemon still runs")
    assert hot.finished("after.txt") == "done"
    assert os.path.exists(os.path.join(os.fsencode(inbox), b"bad\xff.txt"))
    assert os.path.isdir(os.path.join(os.fsencode(inbox), b"folder\xfe"))
    assert "not valid UTF-8" in hot.log()
    assert hot.proc.poll() is None
