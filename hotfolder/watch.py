"""Notice files in the inboxes and hand them on once they have settled.

watchdog's observer only tells us *that* something happened; its handler just records the path
(an exception escaping a handler would kill the observer thread silently). A file is ready when
its size and mtime have not changed for `settle_seconds`, which covers slow copies and sync
clients; a job folder (a directory in the inbox) when nothing in it has. A start-up scan and a
periodic rescan catch what the observer did not report.
"""

from __future__ import annotations

import fnmatch
import os
import stat as stat_module
import threading
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from pathlib import Path

import structlog
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from hotfolder.config import FolderConfig
from hotfolder.images import is_image_name
from hotfolder.inotify import native_observer
from hotfolder.inputs import folder_not_ready, folder_signature
from hotfolder.mounts import fs_type, needs_polling

log = structlog.get_logger()

# temporary names of editors, browsers and sync clients: never jobs, never touched. Hidden
# names cover .~lock.*, .syncthing.*, .dropbox*, ._* and .DS_Store. Dropbox's "conflicted
# copy" files keep their extension and are real jobs.
IGNORED_PATTERNS = ("*.tmp", "*.part", "*.partial", "*.crdownload", "*.download", "~$*",
                    ".*", "Thumbs.db", "desktop.ini", "*.swp", "*~")
CANCEL_SUFFIX = ".cancel"
HELD_CHECK_SECONDS = 1.0  # a job folder not ready to be taken is looked at again this often

Ready = Callable[[FolderConfig, Path, float], None]
Cancel = Callable[[FolderConfig, Path], None]


def is_ignored(name: str, extra: Iterable[str] = ()) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in (*IGNORED_PATTERNS, *extra))


def has_control_chars(name: str) -> bool:
    """Line breaks, escapes and the like: a name no log line or error file could show."""
    return any(ord(ch) < 32 or ord(ch) == 127 for ch in name)


def observer_mode(folder: FolderConfig) -> tuple[str, str | None]:
    """`native` (inotify & co.) or `poll`, and the file system type that decided it."""
    kind = fs_type(folder.inbox)
    if folder.watch != "auto":
        return folder.watch, kind
    return ("poll" if needs_polling(kind) else "native"), kind


@dataclass
class _Pending:
    folder: FolderConfig
    # size, mtime, inode: a replaced file starts settling again (a job folder: its entries')
    signature: Hashable
    changed_at: float
    detected_at: float
    is_dir: bool = False


class _Handler(FileSystemEventHandler):
    def __init__(self, note: Callable[[str], None]) -> None:
        self._note = note

    def on_any_event(self, event: FileSystemEvent) -> None:
        for path in (event.src_path, getattr(event, "dest_path", "")):
            if path:
                self._note(os.fsdecode(path))


class InboxWatcher:
    def __init__(self, folders: Iterable[FolderConfig], on_ready: Ready,
                 on_cancel: Cancel | None = None, *, poll_seconds: float = 1.0,
                 wake: threading.Event | None = None) -> None:
        self.folders = {f.inbox.resolve(): f for f in folders}
        self.wake = wake or threading.Event()  # set when the observer reports an inbox path
        self.on_ready = on_ready
        self.on_cancel = on_cancel
        self.poll_seconds = poll_seconds
        self._lock = threading.Lock()
        self._noted: set[Path] = set()
        self._pending: dict[Path, _Pending] = {}
        self._handed: set[Path] = set()
        self._warned: set[Path] = set()
        # job folders not ready when they settled (no job file yet, a link inside): path ->
        # (folder, signature, next look); and the reason last logged for each
        self._held: dict[Path, tuple[FolderConfig, Hashable, float]] = {}
        self._held_reason: dict[Path, str] = {}
        self._observers: dict[str, BaseObserver] = {}
        self._next_rescan: dict[Path, float] = {}

    def start(self) -> None:
        for inbox, folder in self.folders.items():
            mode, kind = observer_mode(folder)
            if mode not in self._observers:
                self._observers[mode] = (PollingObserver(timeout=self.poll_seconds)
                                         if mode == "poll" else native_observer())
            self._observers[mode].schedule(_Handler(self._note), str(inbox), recursive=False)
            log.info("folder.watching", folder=folder.name, inbox=str(inbox), observer=mode,
                     file_system=kind or "unknown", setting=folder.watch)
        for observer in self._observers.values():
            observer.start()
        self.rescan()

    def stop(self) -> None:
        for observer in self._observers.values():
            observer.stop()
        for observer in self._observers.values():
            if observer.is_alive():
                observer.join(timeout=5)

    def alive(self) -> bool:
        return all(o.is_alive() for o in self._observers.values())

    def idle(self) -> bool:
        with self._lock:
            return not self._pending and not self._noted

    def quiet(self) -> bool:
        """Nothing to settle or look at again: the daemon's loop may tick slowly."""
        with self._lock:
            return not self._pending and not self._noted and not self._held

    def release(self, path: Path) -> None:
        """The file left the inbox (claimed, or gone): it may be noticed again if it returns."""
        with self._lock:
            self._handed.discard(path)

    def _note(self, raw: str) -> None:
        path = Path(raw)
        if path.parent in self.folders:  # a watched root also reports outbox writes: skip those
            with self._lock:
                self._noted.add(path)
            self.wake.set()

    def rescan(self, only: Iterable[Path] | None = None) -> None:
        """Queue everything in the inboxes, oldest first (files dropped while we were down)."""
        found: list[tuple[float, Path]] = []
        now = time.monotonic()
        for inbox in (self.folders if only is None else only):
            self._next_rescan[inbox] = now + self.folders[inbox].rescan_seconds
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

    def tick(self, now: float | None = None) -> None:
        """Advance settling; call often (the daemon's loop does, every ~0.1 s)."""
        now = time.monotonic() if now is None else now
        due = [inbox for inbox, when in self._next_rescan.items() if now >= when]
        if due:
            self.rescan(due)
        with self._lock:
            noted, self._noted = self._noted, set()
        for path in noted:
            self._consider(path, now)
        self._look_at_held(now)
        ready = []
        with self._lock:
            for path, pending in list(self._pending.items()):
                signature = self._signature_now(path, pending)
                if signature is None:
                    del self._pending[path]
                elif signature != pending.signature:
                    pending.signature, pending.changed_at = signature, now
                elif now - pending.changed_at >= pending.folder.settle_seconds:
                    del self._pending[path]
                    if pending.is_dir and self._hold(path, pending, now):
                        continue
                    self._handed.add(path)
                    ready.append((pending.folder, path, pending.detected_at))
        for folder, path, detected_at in ready:
            self.on_ready(folder, path, detected_at)

    @staticmethod
    def _signature_now(path: Path, pending: _Pending) -> Hashable | None:
        stat = _stat(path)
        if stat is None:
            return None
        if pending.is_dir:
            if not stat_module.S_ISDIR(stat.st_mode):
                return None
            return folder_signature(path, pending.folder.limits)
        return _signature(stat) if _is_regular(stat) else None

    def _hold(self, path: Path, pending: _Pending, now: float) -> bool:
        """A settled job folder that cannot be taken yet is held and looked at again when
        something in it changes (the observer does not see inside it); said once per reason."""
        reason = folder_not_ready(path, pending.folder.limits)
        if reason is None:
            self._held_reason.pop(path, None)
            return False
        if reason != self._held_reason.get(path):
            self._held_reason[path] = reason
            log.warning("job.ignored", file=repr(path.name + "/"), folder=pending.folder.name,
                        reason=f"a job folder that cannot be taken: {reason}; it is taken once "
                               "that changes")
        self._held[path] = (pending.folder, pending.signature, now + HELD_CHECK_SECONDS)
        return True

    def _look_at_held(self, now: float) -> None:
        for path, (folder, signature, due) in list(self._held.items()):
            if now < due:
                continue
            stat = _stat(path)
            if stat is None or not stat_module.S_ISDIR(stat.st_mode):
                del self._held[path]
                self._held_reason.pop(path, None)
                continue
            current = folder_signature(path, folder.limits)
            if current == signature:
                self._held[path] = (folder, signature, now + HELD_CHECK_SECONDS)
                continue
            del self._held[path]
            with self._lock:  # changed: it settles again
                self._pending[path] = _Pending(folder, current, now, time.time(), is_dir=True)

    def _consider(self, path: Path, now: float) -> None:
        folder = self.folders.get(path.parent)
        if folder is None or path in self._pending or path in self._handed \
                or path in self._held:
            return
        if is_ignored(path.name, folder.ignore):
            return
        stat = _stat(path)  # lstat: a symlink is seen as one, never followed
        if stat is None:
            return
        if stat_module.S_ISDIR(stat.st_mode) and not has_control_chars(path.name):
            with self._lock:  # a job folder: settles when nothing in it changes any more
                self._pending[path] = _Pending(folder, folder_signature(path, folder.limits),
                                               now, detected_at=time.time(), is_dir=True)
            log.info("job.detected", file=path.name + "/", folder=folder.name)
            return
        refusal = _refusal(path.name, stat)
        if refusal:  # left alone, never opened, never moved; said once
            if path not in self._warned:
                self._warned.add(path)
                log.warning("job.ignored", file=repr(path.name), folder=folder.name,
                            reason=refusal)
            return
        if path.name.endswith(CANCEL_SUFFIX) and self.on_cancel is not None:
            self.on_cancel(folder, path)
            return
        if path.suffix.lower() not in folder.extensions:
            if path not in self._warned:
                self._warned.add(path)
                reason = (f"not a job extension ({', '.join(folder.extensions)}); left in place"
                          if not is_image_name(path.name) else
                          "an image: it waits for a job file that names it (images:); "
                          "image_mode: per-file makes each image a job")
                log.info("job.ignored", file=path.name, folder=folder.name, reason=reason)
            return
        with self._lock:
            self._pending[path] = _Pending(folder, _signature(stat), now,
                                           detected_at=time.time())
        log.info("job.detected", file=path.name, folder=folder.name)


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.lstat()
    except OSError:
        return None


def _refusal(name: str, result: os.stat_result) -> str | None:
    if stat_module.S_ISDIR(result.st_mode):
        return "the name contains control characters (such as a line break); rename it"
    if stat_module.S_ISLNK(result.st_mode):
        return "a symbolic link: links are never followed; the link and its target are untouched"
    if not stat_module.S_ISREG(result.st_mode):
        return "not a regular file (a FIFO, socket or device): never opened"
    if result.st_nlink > 1:
        return "a hard link to another file: refused, so a drop cannot reach files elsewhere"
    if has_control_chars(name):
        return "the name contains control characters (such as a line break); rename it"
    return None


def _signature(result: os.stat_result) -> tuple[int, int, int]:
    return result.st_size, result.st_mtime_ns, result.st_ino


def _is_regular(result: os.stat_result) -> bool:
    return stat_module.S_ISREG(result.st_mode)
