"""The worker threads and the books they keep: which jobs this daemon owns, how many pieces of
work are queued or running, and which jobs are parked (waiting for their server without
holding a worker). The daemon decides what a piece of work means (daemon/loop.py `_handle`);
this module only runs it and counts."""

from __future__ import annotations

import heapq
import itertools
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hotfolder.config.model import FolderConfig
from hotfolder.job.state import JobState, Outcome


@dataclass
class Work:
    folder: FolderConfig
    path: Path | None = None  # an inbox file to claim
    state: JobState | None = None  # or a job already in processing/ (resumed)
    detected_at: float | None = None
    ready_by: str | None = None  # what said the file was complete (watch.py)


class Workers:
    def __init__(self, handle: Callable[[Work], Outcome | None], stop: threading.Event) -> None:
        self.handle = handle
        self.stop = stop
        self.queue: queue.Queue[Work | None] = queue.Queue()
        self.threads: list[threading.Thread] = []
        self.lock = threading.Lock()  # guards everything below
        self.active: dict[tuple[str, str], JobState] = {}  # (folder, name) -> jobs we own
        self.outstanding = 0  # queued or running
        self.counts = {"done": 0, "failed": 0, "left": 0}
        # jobs waiting for their server without holding a worker: (due, order, work)
        self._parked: list[tuple[float, int, Work]] = []
        self._park_order = itertools.count()

    # -- threads ---------------------------------------------------------------------------------

    def grow(self, wanted: int) -> None:
        while len(self.threads) < wanted:
            thread = threading.Thread(target=self._run, name=f"worker-{len(self.threads)}",
                                      daemon=True)
            self.threads.append(thread)
            thread.start()

    def alive(self) -> bool:
        return all(t.is_alive() for t in self.threads)

    def join(self, seconds: float) -> None:
        """After `stop` is set: wake the idle workers, give the busy ones `seconds` in all (a
        worker in a network read notices the stop at its next byte or time-out)."""
        for _ in self.threads:
            self.queue.put(None)
        deadline = time.monotonic() + seconds
        for thread in self.threads:
            if thread.is_alive():
                thread.join(timeout=max(0.1, deadline - time.monotonic()))

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                work = self.queue.get(timeout=30.0)  # join() wakes idle workers (None)
            except queue.Empty:
                continue
            if work is None:
                continue
            try:
                outcome = self.handle(work)
                if outcome is not None:
                    with self.lock:
                        self.counts[outcome.status] += 1
            finally:
                with self.lock:
                    self.outstanding -= 1

    # -- the books -------------------------------------------------------------------------------

    def enqueue(self, work: Work) -> None:
        with self.lock:
            self.outstanding += 1
        self.queue.put(work)

    def own(self, folder: FolderConfig, state: JobState) -> None:
        with self.lock:
            self.active[(folder.name, state.name)] = state

    def release(self, folder: FolderConfig, state: JobState) -> None:
        with self.lock:
            self.active.pop((folder.name, state.name), None)

    def owned(self) -> list[tuple[str, JobState]]:
        """(folder name, state) of every job this daemon owns now."""
        with self.lock:
            return [(folder, state) for (folder, _), state in self.active.items()]

    def running(self) -> int:
        with self.lock:
            return len(self.active)

    def running_by_folder(self) -> Counter[str]:
        with self.lock:
            return Counter(folder for folder, _ in self.active)

    def busy(self) -> bool:
        with self.lock:
            return self.outstanding > 0

    def idle(self) -> bool:
        with self.lock:
            return self.outstanding == 0 and not self._parked

    def waiting(self) -> int:
        with self.lock:
            return max(0, self.outstanding - len(self.active))

    # -- parking ---------------------------------------------------------------------------------

    def park(self, work: Work, seconds: float) -> None:
        """The job stays ours (still in `active`) and goes back to a worker when it is due."""
        with self.lock:
            heapq.heappush(self._parked, (time.monotonic() + seconds, next(self._park_order),
                                          work))

    def unpark(self, now: float) -> None:
        """Parked jobs whose time has come go back to the workers."""
        while True:
            with self.lock:
                if not self._parked or self._parked[0][0] > now:
                    return
                _, _, work = heapq.heappop(self._parked)
            self.enqueue(work)
