"""Unit tests for the worker threads' waiting (daemon/workers.py)."""

from __future__ import annotations

import threading
from collections import Counter

from harness import wait_for

from hotfolder.daemon.workers import Work, Workers


class NoSlotSource:
    """Jobs wait, but no server ever has a slot for one; counts who asks."""

    def __init__(self) -> None:
        self.asked: Counter[str] = Counter()
        self._lock = threading.Lock()

    def add(self, work: Work) -> None:
        raise AssertionError("not used")

    def take(self) -> Work | None:
        with self._lock:
            self.asked[threading.current_thread().name] += 1
        return None

    def more(self) -> bool:
        return False

    def top_priority(self) -> int | None:
        return 0

    def __len__(self) -> int:
        return 1

    def wait_hint(self, longest: float) -> float:
        return 0.001  # whoever waits with a time-out asks again at once


def test_while_jobs_wait_for_a_slot_only_one_idle_worker_keeps_asking():
    """Every idle worker waking on a timer to ask the scheduler cost a scan of every server
    per worker and wake-up; one asking is enough, the others wait for a poke."""
    stop = threading.Event()
    source = NoSlotSource()
    workers = Workers(handle=lambda work: None, stop=stop, source=source)
    workers.grow(8)
    try:
        wait_for(lambda: len(source.asked) == 8 and max(source.asked.values()) >= 50,
                 what="every worker asking once and one of them fifty times")
        asked = dict(source.asked)
        assert len(asked) == 8  # each worker asked once as it started
        assert sorted(asked.values())[:-1] == [1] * 7  # then only one of them went on
    finally:
        stop.set()
        workers.join(5)
    assert not any(t.is_alive() for t in workers.threads)


class CountingCondition(threading.Condition):
    def __init__(self) -> None:
        super().__init__()
        self.notified = 0

    def notify(self, n: int = 1) -> None:
        self.notified += n
        super().notify(n)


def test_a_rush_slot_wakes_a_worker_only_for_a_job_that_may_take_it():
    """Every prompt queued on a full server opens its rush slot; waking a worker for it
    while only lower priorities wait made it scan every server for nothing."""
    source = NoSlotSource()  # its highest priority waiting is 0
    workers = Workers(handle=lambda work: None, stop=threading.Event(), source=source)
    workers._wake = wake = CountingCondition()
    workers.poke(1)
    assert wake.notified == 0
    workers.poke(0)
    workers.poke()  # a slot any job may take
    assert wake.notified == 2


class OneJobSource(NoSlotSource):
    """Two jobs wait; the first is handed out once `release` is set, the second never."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.handed = False

    def take(self) -> Work | None:
        super().take()
        with self._lock:
            if self.release.is_set() and not self.handed:
                self.handed = True
                return Work(folder=None, path=None)  # type: ignore[arg-type]
        return None


def test_the_worker_asking_on_a_timer_hands_that_over_when_it_takes_a_job():
    """Jobs still wait: without another worker taking over the asking, the next could wait
    for a poke that never comes (a server's own queue shrinking sends none)."""
    stop = threading.Event()
    source = OneJobSource()
    busy = threading.Event()
    workers = Workers(handle=lambda work: busy.wait() and None, stop=stop, source=source)
    workers.grow(2)
    try:
        wait_for(lambda: len(source.asked) == 2, what="both workers asking")
        source.release.set()  # the worker on the timer takes the job and is busy with it
        wait_for(lambda: source.handed, what="the job handed out")
        handed_at = sum(source.asked.values())
        wait_for(lambda: sum(source.asked.values()) >= handed_at + 20,
                 what="the other worker asking on the timer")
    finally:
        stop.set()
        busy.set()
        workers.join(5)
