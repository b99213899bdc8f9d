"""Signals at any moment never hang the daemon: hundreds of SIGHUPs (reloads) and SIGINT or
SIGTERM at random times, and each daemon still stops promptly after its SIGTERM.

A signal handler runs in the main thread between two bytecodes, wherever that thread is:
also inside the loop's own wait. A handler that takes a lock the interrupted code holds
waits for ever, so the daemon's handlers touch no lock (daemon/wakeup.py).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time

import pytest

STOP_SECONDS = 2.0  # a daemon with nothing to drain stops well within this; a hang never does


def _hammer(hot, rng: random.Random, signals: int) -> None:
    hot.start()
    drained = False
    for _ in range(signals):
        if hot.proc.poll() is not None:
            break
        hot.proc.send_signal(signal.SIGHUP)
        time.sleep(rng.uniform(0, 0.004))
    if rng.random() < 0.5:  # a first SIGINT drains; the SIGTERM after it stops at once
        hot.proc.send_signal(signal.SIGINT)
        drained = True
        time.sleep(rng.uniform(0, 0.05))
    sent = time.monotonic()
    hot.proc.send_signal(signal.SIGTERM)
    try:
        hot.proc.wait(timeout=STOP_SECONDS * 10)
    except subprocess.TimeoutExpired:
        hot.proc.kill()
        hot.proc.wait()
        pytest.fail("the daemon hung after its signals:\n" + hot.log()[-3000:])
    took = time.monotonic() - sent
    assert took < STOP_SECONDS, f"the daemon took {took:.1f} s to stop\n{hot.log()[-3000:]}"
    # a daemon already exiting after its SIGINT may meet the SIGTERM in the interpreter's own
    # shutdown, where the default action ends it: stopped all the same
    clean = hot.proc.returncode == 0 or (drained and hot.proc.returncode == -signal.SIGTERM
                                         and hot.log().count("daemon.stopped") > 0)
    assert clean, f"exit {hot.proc.returncode}\n{hot.log()[-3000:]}"


def _rounds(hot, rounds: int, signals: int) -> None:
    seed = int(os.environ.get("HOTFOLDER_TEST_SEED", time.time_ns() % 10**6))
    rng = random.Random(seed)
    hot.config["folders"][0]["settle_seconds"] = 0.05
    for n in range(rounds):
        hot.drop(f"job{n}.txt", f"a job under fire {n}")  # work going on while signals come
        _hammer(hot, rng, signals)
    assert "config.reloaded" in hot.log(), f"seed {seed}"
    assert "internal_error" not in hot.log() and "unhealthy" not in hot.log(), f"seed {seed}"
    hot.start()  # whatever a stop left in processing/ is finished now, none of it failed
    for n in range(rounds):
        assert hot.finished(f"job{n}.txt") == "done", f"seed {seed}"


def test_random_signals_never_hang_the_daemon(hot):
    _rounds(hot, rounds=6, signals=150)


@pytest.mark.slow
def test_random_signals_never_hang_the_daemon_soak(hot):
    _rounds(hot, rounds=60, signals=300)
