"""Notice files in the inboxes and hand them on once they have settled.

watchdog's observer only tells us *that* something happened; its handler just records the path
(an exception escaping a handler would kill the observer thread silently). A file is ready when
its size and mtime have not changed for `settle_seconds`, which covers slow copies and sync
clients. A start-up scan and a periodic rescan catch what the observer did not report.
"""

from __future__ import annotations

import fnmatch
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import structlog
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from hotfolder.config import FolderConfig

log = structlog.get_logger()

# temporary names of editors, browsers and sync clients: never jobs, never touched
IGNORED_PATTERNS = ("*.tmp", "*.part", "*.partial", "*.crdownload", "*.download", "~$*",
                    ".*", "Thumbs.db", "desktop.ini")

Ready = Callable[[FolderConfig, Path, float], None]


def is_ignored(name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in IGNORED_PATTERNS)


@dataclass
class _Pending:
    folder: FolderConfig
    size: int
    mtime_ns: int
    changed_at: float
    detected_at: float


class _Handler(FileSystemEventHandler):
    def __init__(self, note: Callable[[str], None]) -> None:
        self._note = note

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            return
        for path in (event.src_path, getattr(event, "dest_path", "")):
            if path:
                self._note(os.fsdecode(path))


class InboxWatcher:
    def __init__(self, folders: Iterable[FolderConfig], on_ready: Ready,
                 *, rescan_seconds: float = 30.0, use_observer: bool = True) -> None:
        self.folders = {f.inbox.resolve(): f for f in folders}
        self.on_ready = on_ready
        self.rescan_seconds = rescan_seconds
        self._lock = threading.Lock()
        self._noted: set[Path] = set()
        self._pending: dict[Path, _Pending] = {}
        self._handed: set[Path] = set()
        self._warned: set[Path] = set()
        self._observer = Observer() if use_observer else None
        self._next_rescan = 0.0

    def start(self) -> None:
        if self._observer is not None:
            for inbox in self.folders:
                self._observer.schedule(_Handler(self._note), str(inbox), recursive=False)
            self._observer.start()
        self.rescan()

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)

    def alive(self) -> bool:
        return self._observer is None or self._observer.is_alive()

    def idle(self) -> bool:
        with self._lock:
            return not self._pending and not self._noted

    def release(self, path: Path) -> None:
        """The file left the inbox (claimed, or gone): it may be noticed again if it returns."""
        with self._lock:
            self._handed.discard(path)

    def _note(self, raw: str) -> None:
        with self._lock:
            self._noted.add(Path(raw))

    def rescan(self) -> None:
        """Queue everything in the inboxes, oldest first (files dropped while we were down)."""
        found: list[tuple[float, Path]] = []
        for inbox in self.folders:
            try:
                entries = list(os.scandir(inbox))
            except OSError as exc:
                log.warning("folder.unreadable", inbox=str(inbox), error=str(exc))
                continue
            for entry in entries:
                try:
                    found.append((entry.stat().st_mtime, Path(entry.path)))
                except OSError:
                    continue
        with self._lock:
            self._noted.update(path for _, path in sorted(found))
        self._next_rescan = time.monotonic() + self.rescan_seconds

    def tick(self, now: float | None = None) -> None:
        """Advance settling; call often (the daemon's loop does, every ~0.1 s)."""
        now = time.monotonic() if now is None else now
        if now >= self._next_rescan:
            self.rescan()
        with self._lock:
            noted, self._noted = self._noted, set()
        for path in noted:
            self._consider(path, now)
        ready = []
        with self._lock:
            for path, pending in list(self._pending.items()):
                stat = _stat(path)
                if stat is None or not _is_regular(stat):
                    del self._pending[path]
                elif (stat.st_size, stat.st_mtime_ns) != (pending.size, pending.mtime_ns):
                    pending.size, pending.mtime_ns, pending.changed_at = (
                        stat.st_size, stat.st_mtime_ns, now)
                elif now - pending.changed_at >= pending.folder.settle_seconds:
                    del self._pending[path]
                    self._handed.add(path)
                    ready.append((pending.folder, path, pending.detected_at))
        for folder, path, detected_at in ready:
            self.on_ready(folder, path, detected_at)

    def _consider(self, path: Path, now: float) -> None:
        folder = self.folders.get(path.parent.resolve())
        if folder is None or path in self._pending or path in self._handed:
            return
        if is_ignored(path.name):
            return
        stat = _stat(path)
        if stat is None or not _is_regular(stat):
            return
        if path.suffix.lower() not in folder.extensions:
            if path not in self._warned:
                self._warned.add(path)
                log.info("job.ignored", file=path.name, folder=folder.name,
                         reason=f"not a job extension ({', '.join(folder.extensions)}); "
                                "left in place")
            return
        with self._lock:
            self._pending[path] = _Pending(folder, stat.st_size, stat.st_mtime_ns, now,
                                           detected_at=time.time())
        log.info("job.detected", file=path.name, folder=folder.name)


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.lstat()
    except OSError:
        return None


def _is_regular(result: os.stat_result) -> bool:
    return stat.S_ISREG(result.st_mode)
