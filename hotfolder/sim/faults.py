"""Fault switches of the simulator.

A real ComfyUI fails in a handful of ways a hot-folder daemon must survive: a node raises, the
server answers 5xx, it is slow, a proxy drops or blocks the WebSocket. `Faults` turns each of
those on, either at construction time, from the command line, or at runtime over
`POST /sim/faults`, so tests and benchmarks can provoke them on demand.
"""

from __future__ import annotations

import dataclasses
import random
import threading
from dataclasses import dataclass
from typing import Any


@dataclass
class Faults:
    """What should go wrong. All defaults mean "behave like a healthy server"."""

    error_rate: float = 0.0  # fraction of executions that end in execution_error at a node
    fail_next: int = 0  # the next N executions raise
    http_5xx_rate: float = 0.0  # fraction of POST /prompt answered with the plain-text 500
    http_5xx_next: int = 0  # the next N POST /prompt answered with the plain-text 500
    # fraction of POST /prompt answered with a 500 *after* the prompt was queued (it runs): a
    # proxy's error, or a server failing between queueing and answering
    http_5xx_after_queue_rate: float = 0.0
    http_5xx_after_queue_next: int = 0  # the next N of those
    prompt_delay_seconds: float = 0.0  # POST /prompt queues (and answers) only after this
    slow_seconds: float = 0.0  # delay before every HTTP answer (not /sim/*)
    trickle_seconds: float = 0.0  # /view answers sent a byte at a time, this far apart
    drop_ws_after: int = 0  # server closes each WebSocket after N text messages; 0 = never
    no_ws: bool = False  # WebSocket upgrade refused with 404, as if a proxy blocked it

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_FIELD_TYPES: dict[str, type] = {
    "error_rate": float,
    "fail_next": int,
    "http_5xx_rate": float,
    "http_5xx_next": int,
    "http_5xx_after_queue_rate": float,
    "http_5xx_after_queue_next": int,
    "prompt_delay_seconds": float,
    "slow_seconds": float,
    "trickle_seconds": float,
    "drop_ws_after": int,
    "no_ws": bool,
}


def coerce_fault_updates(updates: Any) -> dict[str, Any]:
    """Check a JSON object from `POST /sim/faults` and convert its values.

    Raises ValueError with a message meant for the HTTP caller, so a typo in a test does not
    silently leave a fault switched off.
    """
    if not isinstance(updates, dict):
        raise ValueError("expected a JSON object")
    unknown = sorted(set(updates) - set(_FIELD_TYPES))
    if unknown:
        raise ValueError(f"unknown fault field(s): {', '.join(unknown)}")
    out: dict[str, Any] = {}
    for key, value in updates.items():
        kind = _FIELD_TYPES[key]
        if kind is bool:
            if not isinstance(value, bool):
                raise ValueError(f"{key}: expected true or false")
            out[key] = value
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{key}: expected a number")
        if kind is int and float(value) != int(value):
            raise ValueError(f"{key}: expected an integer")
        if value < 0:
            raise ValueError(f"{key}: must not be negative")
        if key.endswith("_rate") and value > 1:
            raise ValueError(f"{key}: must be between 0 and 1")
        out[key] = kind(value)
    return out


class FaultState:
    """The live `Faults` plus the randomness and counters deciding each injected failure.

    One lock guards the "next N" counters: several HTTP threads may POST at once, and each
    fault must fire exactly N times.
    """

    def __init__(self, faults: Faults | None = None, seed: int | None = None) -> None:
        self.faults = faults if faults is not None else Faults()
        self._lock = threading.Lock()
        self._rng = random.Random(seed)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return self.faults.to_dict()

    def update(self, updates: Any) -> dict[str, Any]:
        values = coerce_fault_updates(updates)
        with self._lock:
            for key, value in values.items():
                setattr(self.faults, key, value)
            return self.faults.to_dict()

    def take_http_5xx(self) -> bool:
        """True when this POST /prompt must fail with a 500."""
        with self._lock:
            if self.faults.http_5xx_next > 0:
                self.faults.http_5xx_next -= 1
                return True
            return self._rng.random() < self.faults.http_5xx_rate

    def take_http_5xx_after_queue(self) -> bool:
        """True when this POST /prompt, its prompt queued, must still answer with a 500."""
        with self._lock:
            if self.faults.http_5xx_after_queue_next > 0:
                self.faults.http_5xx_after_queue_next -= 1
                return True
            return self._rng.random() < self.faults.http_5xx_after_queue_rate

    def take_execution_failure(self) -> bool:
        """True when the prompt about to execute must end in execution_error."""
        with self._lock:
            if self.faults.fail_next > 0:
                self.faults.fail_next -= 1
                return True
            return self._rng.random() < self.faults.error_rate

    def random_letters(self, count: int) -> str:
        with self._lock:
            return "".join(self._rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(count))
