"""The worker threads and the books they keep: which jobs this daemon owns, how many pieces of
work are queued or running, and which jobs are parked (waiting for their server without
holding a worker). The daemon decides what a piece of work means (daemon/loop.py `_handle`);
this module only runs it and counts.

Jobs already ours (resumed, unparked) are run in turn; new inbox files come from a `Source`
(dispatch.py), which hands one out only when a server has a slot for it, so an idle worker
asks it again whenever a slot may have come free (`poke`)."""

from __future__ import annotations

import contextlib
import heapq
import itertools
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from hotfolder.comfy.pool import Reservation
from hotfolder.config.model import FolderConfig
from hotfolder.job.state import JobState, Outcome

IDLE_WAIT = 30.0  # an idle worker with nothing waiting anywhere: only a poke wakes it sooner
WAITING_WAIT = 0.5  # jobs wait for a slot: a server's own queue may shrink without a word


@dataclass
class Work:
    folder: FolderConfig
    path: Path | None = None  # an inbox file to claim
    state: JobState | None = None  # or a job already in processing/ (resumed)
    detected_at: float | None = None
    ready_by: str | None = None  # what said the file was complete (watch.py)
    slot: Reservation | None = None  # the server slot the scheduler reserved for it


class Source(Protocol):
    def add(self, work: Work) -> None: ...
    def take(self) -> Work | None: ...
    def more(self) -> bool: ...
    def top_priority(self) -> int | None: ...
    def __len__(self) -> int: ...
    def wait_hint(self, longest: float) -> float: ...


class Workers:
    def __init__(self, handle: Callable[[Work], Outcome | None], stop: threading.Event,
                 source: Source) -> None:
        self.handle = handle
        self.stop = stop
        self.source = source
        self._ours: deque[Work] = deque()  # jobs already ours, run in turn
        self._wake = threading.Condition()
        self._held = 0  # pokes are held back (`held`) ...
        self._missed = 0  # ... and this many are due when they are let go
        self._polling = False  # an idle worker waits to ask again while jobs wait (`_next`)
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
        with self._wake:
            self._wake.notify_all()
        deadline = time.monotonic() + seconds
        for thread in self.threads:
            if thread.is_alive():
                thread.join(timeout=max(0.1, deadline - time.monotonic()))

    def poke(self, priority: int | None = None) -> None:
        """Something changed (a file waits, a slot came free): one idle worker looks. A slot
        only a job of at least `priority` may take wakes none while no such job waits."""
        if priority is not None:
            top = self.source.top_priority()
            if top is None or top < priority:
                return
        with self._wake:
            if self._held:
                self._missed += 1
            else:
                self._wake.notify()

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Files found ready together wait together before any is handed out: the scheduler
        then sees every folder's jobs at its first choice, not the first folder's alone (which
        would put every idle server on that folder's models)."""
        with self._wake:
            self._held += 1
        try:
            yield
        finally:
            with self._wake:
                self._held -= 1
                if not self._held and self._missed:
                    self._wake.notify(self._missed)
                    self._missed = 0

    def _next(self) -> Work | None:
        with self._wake:
            while not self.stop.is_set():
                work = self._ours.popleft() if self._ours else self.source.take()
                if work is not None:
                    if (self._ours or self.source.more()
                            or (len(self.source) and not self._polling)):
                        # there is more for another worker, or jobs wait and this one was
                        # the one asking on a timer: another takes that over
                        self._wake.notify()
                    return work
                if len(self.source) and not self._polling:
                    # one idle worker asks again every so often (a server's own queue may
                    # shrink without a word); the others wait for a poke
                    self._polling = True
                    try:
                        self._wake.wait(self.source.wait_hint(WAITING_WAIT))
                    finally:
                        self._polling = False
                else:
                    self._wake.wait(IDLE_WAIT)
        return None

    def _run(self) -> None:
        while not self.stop.is_set():
            work = self._next()
            if work is None:
                continue
            try:
                outcome = self.handle(work)
                if outcome is not None:
                    with self.lock:
                        self.counts[outcome.status] += 1
            finally:
                if work.slot is not None:
                    work.slot.cancel()  # reserved, but the job never submitted: it goes back
                with self.lock:
                    self.outstanding -= 1

    # -- the books -------------------------------------------------------------------------------

    def enqueue(self, work: Work) -> None:
        """A job already ours (resumed, or back from parking), or a new inbox file, which
        waits in the source for a server."""
        with self.lock:
            self.outstanding += 1
        if work.path is not None and work.state is None:
            self.source.add(work)
        else:
            with self._wake:
                self._ours.append(work)
        self.poke()

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
