"""One retry policy: capped exponential backoff, waited on the daemon's stop event.

Every loop that waits for a server (submitting, following a prompt, downloading, fetching node
definitions for a GUI workflow, probing a server that is down, reconnecting its WebSocket)
backs off the same way, so `comfy.backoff_initial` and `comfy.backoff_max` mean one thing
everywhere. The loops themselves stay plain `while` loops: what they do between attempts
(mark the server down, fail over, park the job, count 5xx answers against a budget) differs,
which is why a decorator-style retry library does not fit them.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass

from hotfolder.errors import Stopping


@dataclass(frozen=True)
class Backoff:
    initial: float
    maximum: float
    jitter: float = 0.0  # each delay varies by up to ± this fraction, so many waiters spread

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number `attempt` (1, 2, …): initial, ×2, … ≤ maximum."""
        base = min(self.initial * 2 ** max(0, attempt - 1), self.maximum)
        return base * (1 + random.uniform(-self.jitter, self.jitter)) if self.jitter else base

    def start(self) -> Retry:
        return Retry(self)


class Retry:
    """The attempts of one wait-for-the-server loop."""

    def __init__(self, policy: Backoff) -> None:
        self.policy = policy
        self.attempt = 0

    def next_delay(self) -> float:
        self.attempt += 1
        return self.policy.delay(self.attempt)

    def reset(self) -> None:
        """The server answered: the next trouble starts from the initial delay again."""
        self.attempt = 0

    def pause(self, stop: threading.Event) -> float:
        """Wait the next delay, or raise Stopping the moment the daemon stops. Returns the
        seconds waited."""
        seconds = self.next_delay()
        pause(stop, seconds)
        return seconds


def pause(stop: threading.Event, seconds: float) -> None:
    """Sleep `seconds`, or raise Stopping as soon as the daemon is asked to stop."""
    if stop.wait(seconds):
        raise Stopping
