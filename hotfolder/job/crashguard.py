"""The guard against a job that kills the daemon: count the deaths, isolate the suspects.

A job's record notes the phase the daemon is in with it. When a daemon dies while a job is in a
RISKY_PHASES phase (working on its content: reading, parsing, preparing; downloading its
results), or before the job had a record at all, the next owner counts a crash against it
(claim.adopt); a job with MAX_CRASHES is failed instead of run again, so no file can put the
service into a restart loop.

Counting alone would blame the innocent: a poison job kills every job that is being prepared
beside it. So a job with a crash against it (a suspect) does its risky phases alone: `Gate`
lets any number of ordinary jobs in at once, or one suspect with nobody else. A suspect that
dies again is then the only one counted; an innocent one gets through and is done.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

from hotfolder.errors import Stopping

# phases in which the daemon works on the job's own content: a death there may be the job's
# doing. Waiting for a server slot or for ComfyUI is not.
RISKY_PHASES = frozenset({"preparing", "delivering"})
MAX_CRASHES = 3  # a job the daemon died on this often goes to failed/, not round again


class Gate:
    """Shared passage for ordinary jobs, sole passage for suspects (suspects go first)."""

    def __init__(self, stop: threading.Event) -> None:
        self._stop = stop
        self._cond = threading.Condition()
        self._inside = 0  # ordinary jobs in a risky phase
        self._alone = False  # a suspect in one
        self._suspects_waiting = 0

    @contextlib.contextmanager
    def passage(self, suspect: bool) -> Iterator[None]:
        with self._cond:
            if suspect:
                self._suspects_waiting += 1
                try:
                    self._wait(lambda: not self._alone and self._inside == 0)
                finally:
                    self._suspects_waiting -= 1
                self._alone = True
            else:
                self._wait(lambda: not self._alone and self._suspects_waiting == 0)
                self._inside += 1
        try:
            yield
        finally:
            with self._cond:
                if suspect:
                    self._alone = False
                else:
                    self._inside -= 1
                self._cond.notify_all()

    def _wait(self, ready: Callable[[], bool]) -> None:
        while not self._cond.wait_for(ready, timeout=0.5):
            if self._stop.is_set():
                self._cond.notify_all()
                raise Stopping
