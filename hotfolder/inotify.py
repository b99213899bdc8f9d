"""The native observer, told by inotify only that a name appeared in an inbox.

A path arriving (created, or moved in) is all the watcher needs: settling is judged by stat()
on every tick, so writes, opens and closes need not be reported. Asking for nothing else
matters twice over:
- each claim renames a file out of the inbox; had inotify reported that half of the move,
  watchdog would hold it 0.5 s waiting for the other half (in a folder it does not watch),
  and every later inbox event behind it;
- a daemon at tens of jobs a second would otherwise pay for an event per write of every
  download and state record.
Where inotify is not available (not Linux), the platform's own observer is used as is.
"""

from __future__ import annotations

from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

try:
    from watchdog.observers.inotify import InotifyEmitter
    from watchdog.observers.inotify_c import InotifyConstants
except ImportError:  # pragma: no cover - not Linux
    InotifyEmitter = None  # type: ignore[assignment,misc]


if InotifyEmitter is not None:

    class ArrivalsEmitter(InotifyEmitter):
        """An inotify emitter asking only for names appearing (IN_CREATE, IN_MOVED_TO)."""

        def get_event_mask_from_filter(self) -> int:  # type: ignore[override]
            return (InotifyConstants.IN_CREATE | InotifyConstants.IN_MOVED_TO
                    | InotifyConstants.IN_DELETE_SELF)


def native_observer() -> BaseObserver:
    if InotifyEmitter is None:  # pragma: no cover - not Linux
        return Observer()
    return BaseObserver(ArrivalsEmitter)
