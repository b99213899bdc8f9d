"""The native observer, told by inotify only how names arrive in an inbox and when writers close.

The watcher needs three things: a name appeared (IN_CREATE), a file was renamed in
(IN_MOVED_TO: complete, the way sync clients and careful scripts deliver), and a writer closed
a file (IN_CLOSE_WRITE: its last write is done). Asking for nothing else matters twice over:
- each claim renames a file out of the inbox; had inotify reported that half of the move
  (IN_MOVED_FROM), watchdog would hold it 0.5 s waiting for the other half (in a folder it does
  not watch), and every later inbox event behind it;
- a daemon at tens of jobs a second would otherwise pay for an event per write (IN_MODIFY) of
  every file arriving; a close is one event per file.
A rename in is reported as a move with no source (watchdog's "full events"), so the watcher can
tell it from a file created in place. Where inotify is not available (not Linux), the
platform's own observer is used as is.
"""

from __future__ import annotations

from typing import Any

from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

try:
    from watchdog.observers.inotify import InotifyEmitter
    from watchdog.observers.inotify_c import InotifyConstants
except ImportError:  # pragma: no cover - not Linux
    InotifyEmitter = None  # type: ignore[assignment,misc]


if InotifyEmitter is not None:

    class ArrivalsEmitter(InotifyEmitter):
        """An inotify emitter asking only for names appearing and writers closing."""

        def get_event_mask_from_filter(self) -> int:  # type: ignore[override]
            return (InotifyConstants.IN_CREATE | InotifyConstants.IN_MOVED_TO
                    | InotifyConstants.IN_CLOSE_WRITE | InotifyConstants.IN_DELETE_SELF)

        def build_and_queue_event(self, event: Any, *, full_events: bool = False) -> None:
            # full events: an unpaired IN_MOVED_TO becomes a move from "" (a rename in),
            # not a creation
            super().build_and_queue_event(event, full_events=True)


def native_observer() -> BaseObserver:
    if InotifyEmitter is None:  # pragma: no cover - not Linux
        return Observer()
    return BaseObserver(ArrivalsEmitter)
