"""The loop's one wait, and signal handlers that touch no lock.

A Python signal handler runs in the main thread between two bytecodes, wherever that thread
is, and a second signal can interrupt the first handler. A handler that calls
`threading.Event.set()` takes the event's lock; interrupted inside `set()` by the next signal,
the second handler waits for that same lock for ever (a burst of SIGHUPs did exactly that).
So the handlers here only append the signal number to a deque (one C call, never split by
another handler), and the loop sleeps on a self-pipe instead of an event: the interpreter's
own C handler writes to the pipe (`signal.set_wakeup_fd`), other threads write to it with
`wake()`, and the loop reads the signals when it wakes.
"""

from __future__ import annotations

import collections
import contextlib
import os
import select
import signal
import threading


class Wakeup:
    def __init__(self) -> None:
        self._read, self._write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.signals: collections.deque[int] = collections.deque()

    def wake(self) -> None:
        """Wake the loop now (from any thread)."""
        with contextlib.suppress(BlockingIOError):  # a full pipe: a wake-up is pending anyway
            os.write(self._write, b"\0")

    def wait(self, timeout: float) -> None:
        """Sleep until `timeout`, a `wake()` or a signal, whichever comes first."""
        ready, _, _ = select.select([self._read], [], [], timeout)
        if ready:
            with contextlib.suppress(BlockingIOError):
                while os.read(self._read, 4096):
                    pass

    def catch(self, *signums: int) -> None:
        """Route these signals to `signals` and the pipe. Only from the main thread."""
        if threading.current_thread() is not threading.main_thread():
            return
        signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        for signum in signums:
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, _frame: object) -> None:
        self.signals.append(signum)  # nothing else: see the module's docstring

    def take(self) -> list[int]:
        """The signals received since the last call, oldest first."""
        taken = []
        while True:
            try:
                taken.append(self.signals.popleft())
            except IndexError:
                return taken

    def close(self) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.set_wakeup_fd(-1)
        for fd in (self._read, self._write):
            with contextlib.suppress(OSError):
                os.close(fd)
