"""Each server's node definitions (`/object_info`), fetched once and kept for conversions.

/object_info is large (about half a megabyte for a bare ComfyUI, far more with custom nodes),
so it is not fetched per job. It is fetched again when a workflow names a class the cached copy
lacks (a custom node installed since), at most once per `retry_missing` seconds so a stream of
jobs with a misspelt class does not hammer the server, and after `max_age` seconds anyway,
since an upgraded server may order or name its inputs differently, and at the next use after
the server may have restarted (its `epoch` changed: the WebSocket reconnected, or it came
back from being down). A caller may also say the copy contradicts what the server just
answered (`stale`), which counts as a miss. A failed fetch is the server's `ServerError`:
the job waits and tries again, it does not fail.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol


class InfoSource(Protocol):
    """What the cache needs of a server: `ComfyClient` has it."""

    name: str
    url: str

    def object_info(self) -> dict[str, Any]: ...


MAX_SERVERS = 64  # entries kept: servers renamed or moved by reloads leave theirs behind


@dataclass
class _Entry:
    info: dict[str, Any]
    fetched: float
    epoch: object = None


class ObjectInfoCache:
    def __init__(self, *, retry_missing: float = 5.0, max_age: float = 600.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.retry_missing = retry_missing
        self.max_age = max_age
        self.clock = clock
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, source: InfoSource, needed: Iterable[str] = (), *, epoch: object = None,
            stale: Callable[[dict[str, Any]], bool] | None = None) -> dict[str, Any]:
        """The server's node definitions; fetched if not cached, too old, fetched in another
        `epoch` of the server, or lacking one of the `needed` classes (or `stale` says so).
        Raises `ServerError` if the server cannot be asked."""
        key = (source.name, source.url)
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:  # one fetch per server at a time; the others wait for its result
            entry = self._entries.get(key)
            now = self.clock()
            if entry is not None and entry.epoch == epoch:
                age = now - entry.fetched
                missing = any(cls not in entry.info for cls in needed) or \
                    (stale is not None and stale(entry.info))
                if age < self.max_age and not (missing and age >= self.retry_missing):
                    return entry.info
            info = source.object_info()
            with self._guard:
                self._entries[key] = _Entry(info, self.clock(), epoch)
                while len(self._entries) > MAX_SERVERS:
                    oldest = min(self._entries, key=lambda k: self._entries[k].fetched)
                    del self._entries[oldest]
                    self._locks.pop(oldest, None)
            return info
