"""Between "a file is ready" and "a worker claims it": the waiting jobs, handed out one at a
time when a server has a free slot, to the server the choice (schedule.py) pairs them with.

A job is paired when a slot is free, not when it is dropped, so the choice sees every job
waiting at that moment. The slot is reserved for the job (comfy/pool.py `Reservation`) while
it is claimed and prepared; a job that never gets as far as submitting gives it back.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from hotfolder.comfy.pool import ServerPool
from hotfolder.config.model import Config
from hotfolder.daemon.schedule import FreeServer, Queue, Waiting
from hotfolder.daemon.workers import Work
from hotfolder.job.peek import Peeker


class Dispatcher:
    def __init__(self, config: Config, pool: ServerPool) -> None:
        self.pool = pool
        self.queue = Queue(config.schedule)
        self.peeker = Peeker(config.templates)
        self._lock = threading.Lock()
        self._unpaired: deque[Work] = deque()  # handed out without a server: we are stopping
        self._more = False  # the last take left a job waiting and a slot free for it

    def update(self, config: Config) -> None:
        with self._lock:
            self.queue.config = config.schedule
            self.peeker.update(config.templates)

    def add(self, work: Work, now: float | None = None) -> None:
        """A ready inbox file: looked at (its models and priority), then it waits."""
        assert work.path is not None
        peek = self.peeker.look(work.folder, work.path)
        with self._lock:
            self.queue.add(Waiting(priority=peek.priority, models=peek.models,
                                   tags=work.folder.server_tags,
                                   ready_at=time.monotonic() if now is None else now,
                                   item=work))

    def __len__(self) -> int:
        with self._lock:
            return len(self.queue) + len(self._unpaired)

    def more(self) -> bool:
        """Whether another take may hand out a job right away (another worker should ask)."""
        with self._lock:
            return self._more

    def top_priority(self) -> int | None:
        with self._lock:
            return self.queue.top_priority()

    def wait_hint(self, longest: float) -> float:
        """How long a worker may wait before asking again, at most `longest`: less when a
        model load was held back and may go sooner."""
        with self._lock:
            hold_until = self.queue.hold_until  # set by the last choice that held one back
            if hold_until is None:
                return longest
            # a moment past the hold's end, so the next choice is no longer held
            return min(longest, max(0.0, hold_until - time.monotonic()) + 0.005)

    def take(self, now: float | None = None) -> Work | None:
        """The next job with a slot reserved for it on its server, or None for now. While
        the daemon stops, every waiting job is handed out without one (it stays unclaimed)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if self.pool.draining.is_set() or self.pool.stop.is_set():
                self._unpaired.extend(j.item for j in self.queue.take_all())
            if self._unpaired:
                work = self._unpaired.popleft()
                self._more = bool(self._unpaired)
                return work
            # held back only if this take's choice says so (with no free server it makes none)
            self.queue.hold_until = None
            if not len(self.queue):
                return None
            free, busy = self.pool.free(self.queue.top_priority())
            servers = {s.name: s for s, _ in free}
            views = [FreeServer(s.name, s.tags, s.upcoming, s.load, bar) for s, bar in free]
            while views:
                chosen = self.queue.choose(views, now, busy)
                if chosen is None:
                    return None
                job, view = chosen
                slot = self.pool.reserve(servers[view.name], job.models, job.priority)
                if slot is None:  # taken meanwhile by a job that was not waiting here
                    views.remove(view)
                    continue
                self.queue.remove(job)
                self._more = bool(len(self.queue)) and (
                    len(views) > 1 or self.pool.has_room(servers[view.name]))
                work: Work = job.item
                work.slot = slot
                return work
        return None
