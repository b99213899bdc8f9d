"""What the simulator tests share: a deadline poll, and closing the clients they opened."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import websocket

TIMEOUT = 10.0
OPEN: list[Any] = []  # sessions and sockets to close when the test ends


def wait_until(predicate: Callable[[], Any], what: str = "condition",
               timeout: float = TIMEOUT) -> Any:
    """Poll with a deadline; returns the first truthy value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def close_open() -> None:
    while OPEN:
        item = OPEN.pop()
        if isinstance(item, websocket.WebSocket):
            item.shutdown()  # no handshake: a reader thread may still be reading this socket
        else:
            item.close()
