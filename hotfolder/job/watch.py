"""Notice files in the inboxes and hand them on the moment they are complete.

What "complete" means is ready.py's to decide (from the writer where the kernel can tell,
else the clock); the claim and the pipeline check again (claim.py, intake.py).

watchdog's handler only records the path and what happened (an exception escaping a handler
would kill the observer thread silently). A start-up scan and a periodic rescan catch what the
observer did not report.
"""

from __future__ import annotations

import os
import stat as stat_module
import threading
import time
from collections.abc import Callable, Hashable, Iterable
from pathlib import Path
from typing import Any

import structlog
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from hotfolder.config.model import FolderConfig
from hotfolder.inotify import native_observer
from hotfolder.job.inboxfiles import ignored_name, not_a_job
from hotfolder.job.jobfolder import folder_not_ready, folder_signature
from hotfolder.job.ready import HINT_CLOSED, HINT_FOUND, HINT_RENAMED, Pending, Readiness, rule
from hotfolder.mounts import fs_type, needs_polling

log = structlog.get_logger()

HELD_CHECK_SECONDS = 1.0  # a job folder not ready to be taken is looked at again this often

Ready = Callable[[FolderConfig, Path, float, str], None]
Cancel = Callable[[FolderConfig, Path], None]


def observer_mode(folder: FolderConfig) -> tuple[str, str | None]:
    """`native` (inotify & co.) or `poll`, and the file system type that decided it."""
    kind = fs_type(folder.inbox)
    if folder.watch != "auto":
        return folder.watch, kind
    return ("poll" if needs_polling(kind) else "native"), kind


class _Handler(FileSystemEventHandler):
    """Only records the path and what happened: an exception escaping a handler would kill the
    observer thread silently."""

    def __init__(self, note: Callable[[str, str], None]) -> None:
        self._note = note

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type == "closed":
            self._note(os.fsdecode(event.src_path), HINT_CLOSED)
            return
        if event.event_type == "moved" and event.dest_path:
            self._note(os.fsdecode(event.dest_path), HINT_RENAMED)
            if event.src_path:
                self._note(os.fsdecode(event.src_path), "changed")
            return
        if event.src_path:
            self._note(os.fsdecode(event.src_path), "changed")


class InboxWatcher:
    def __init__(self, folders: Iterable[FolderConfig], on_ready: Ready,
                 on_cancel: Cancel | None = None, *, poll_seconds: float = 1.0,
                 wake: Callable[[], None] | None = None) -> None:
        self.folders = {f.inbox.resolve(): f for f in folders}
        self.wake = wake or (lambda: None)  # called when the observer reports an inbox path
        self.on_ready = on_ready
        self.on_cancel = on_cancel
        self.poll_seconds = poll_seconds
        self._lock = threading.Lock()
        self._noted: dict[Path, str] = {}  # path -> what was seen of it (a hint, or "changed")
        self._pending: dict[Path, Pending] = {}
        self._handed: set[Path] = set()
        self._warned: set[Path] = set()
        # job folders not ready when they settled (no job file yet, a link inside): path ->
        # (folder, signature, next look); and the reason last logged for each
        self._held: dict[Path, tuple[FolderConfig, Hashable, float]] = {}
        self._held_reason: dict[Path, str] = {}
        self._observers: dict[str, BaseObserver] = {}
        self._modes: dict[Path, str] = {}  # inbox -> "native" | "poll"
        self._next_rescan: dict[Path, float] = {}
        self.readiness = Readiness()
        # entries a claim refused (swapped for a link, unreadable): left alone until they change
        self._refused: dict[Path, Hashable] = {}

    def start(self) -> None:
        for inbox, folder in self.folders.items():
            mode, kind = observer_mode(folder)
            self._modes[inbox] = mode
            if mode not in self._observers:
                self._observers[mode] = (PollingObserver(timeout=self.poll_seconds)
                                         if mode == "poll" else native_observer())
            self._observers[mode].schedule(_Handler(self._note), str(inbox), recursive=False)
            log.info("folder.watching", folder=folder.name, inbox=str(inbox), observer=mode,
                     file_system=kind or "unknown", setting=folder.watch, ready=rule(folder, mode))
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
            return not self._noted and all(p.writing_since is not None
                                           for p in self._pending.values())

    def quiet(self) -> bool:
        """Nothing to settle or look at again: the daemon's loop may tick slowly."""
        with self._lock:
            return not self._pending and not self._noted and not self._held

    def release(self, path: Path) -> None:
        """The file left the inbox (claimed, or gone): it may be noticed again if it returns."""
        with self._lock:
            self._handed.discard(path)

    def refused(self, path: Path) -> None:
        """A claim refused the entry: it stays where it is, not looked at again until it
        changes (its type, size, mtime or inode)."""
        stat = _stat(path)
        with self._lock:
            self._handed.discard(path)
            if stat is not None:
                self._refused[path] = _entry_key(stat)

    def look_again(self, path: Path) -> None:
        """A worker found the file still being written when it came to claim it."""
        with self._lock:
            self._handed.discard(path)
        self._note(str(path), "changed")

    def being_written(self, now: float | None = None) -> dict[str, list[dict[str, Any]]]:
        """Files held open for writing, by folder: shown by `status` and the page."""
        now = time.time() if now is None else now
        out: dict[str, list[dict[str, Any]]] = {}
        with self._lock:
            for path, pending in self._pending.items():
                if pending.writing_since is not None:
                    out.setdefault(pending.folder.name, []).append({
                        "file": path.name, "since": pending.writing_since,
                        "seconds": round(now - pending.writing_since, 1),
                        "writers": list(pending.writers)})
        return out

    def _note(self, raw: str, kind: str) -> None:
        path = Path(raw)
        if path.parent in self.folders:  # a watched root also reports outbox writes: skip those
            with self._lock:
                if self._noted.get(path) not in (HINT_CLOSED, HINT_RENAMED, HINT_FOUND):
                    self._noted[path] = kind
            self.wake()

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
                    found.append((entry.stat(follow_symlinks=False).st_mtime, Path(entry.path)))
                except OSError:
                    continue
        with self._lock:
            for _, path in sorted(found):
                self._noted.setdefault(path, HINT_FOUND)

    def tick(self, now: float | None = None) -> None:
        """Advance settling; call often (the daemon's loop does, every ~0.1 s)."""
        now = time.monotonic() if now is None else now
        due = [inbox for inbox, when in self._next_rescan.items() if now >= when]
        if due:
            self.rescan(due)
        with self._lock:
            noted, self._noted = self._noted, {}
        for path, kind in noted.items():
            self._consider(path, kind, now)
        self._look_at_held(now)
        ready = []
        with self._lock:
            pending_items = list(self._pending.items())
        for path, pending in pending_items:
            signature = self._signature_now(path, pending)
            if signature is None:
                with self._lock:
                    self._pending.pop(path, None)
                continue
            if signature != pending.signature:
                pending.signature, pending.changed_at = signature, now
                if pending.is_dir:
                    pending.hint = None  # changed inside since it arrived: it settles again
            ready_by = self.readiness.ready_by(path, pending, now,
                                               native=self._modes.get(path.parent) == "native")
            if ready_by is None:
                continue
            with self._lock:
                self._pending.pop(path, None)
            if pending.is_dir and self._hold(path, pending, now):
                continue
            with self._lock:
                self._handed.add(path)
            ready.append((pending.folder, path, pending.detected_at, ready_by))
        for folder, path, detected_at, ready_by in ready:
            log.debug("job.ready", file=path.name, folder=folder.name, ready_by=ready_by)
            self.on_ready(folder, path, detected_at, ready_by)

    @staticmethod
    def _signature_now(path: Path, pending: Pending) -> Hashable | None:
        stat = _stat(path)
        if stat is None:
            return None
        if pending.is_dir:
            if not stat_module.S_ISDIR(stat.st_mode):
                return None
            return folder_signature(path, pending.folder.limits)
        return _signature(stat) if stat_module.S_ISREG(stat.st_mode) else None

    def _hold(self, path: Path, pending: Pending, now: float) -> bool:
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
                self._pending[path] = Pending(folder, current, now, time.time(), is_dir=True)

    def _consider(self, path: Path, kind: str, now: float) -> None:
        folder = self.folders.get(path.parent)
        if folder is None or path in self._handed or path in self._held:
            return
        pending = self._pending.get(path)
        if pending is not None:  # a close or a rename: its writer may be done
            if kind in (HINT_CLOSED, HINT_RENAMED):
                pending.hint = kind
            return
        if ignored_name(folder, path.name) is not None:
            return
        stat = _stat(path)  # lstat: a symlink is seen as one, never followed
        if stat is None:
            self._refused.pop(path, None)
            return
        if path in self._refused:
            if self._refused[path] == _entry_key(stat):
                return
            del self._refused[path]
        hint = kind if kind in (HINT_CLOSED, HINT_RENAMED, HINT_FOUND) else None
        verdict = not_a_job(folder, path.name, stat)
        if verdict is None and stat_module.S_ISDIR(stat.st_mode):
            with self._lock:  # a job folder: settles when nothing in it changes any more
                self._pending[path] = Pending(folder, folder_signature(path, folder.limits),
                                               now, detected_at=time.time(), is_dir=True,
                                               hint=hint)
            log.info("job.detected", file=path.name + "/", folder=folder.name)
            return
        if verdict is not None and verdict.cancel:
            if self.on_cancel is not None:
                self.on_cancel(folder, path)
            return
        if verdict is not None:  # left alone, never opened, never moved; said once
            if path not in self._warned:
                self._warned.add(path)
                if verdict.refused:
                    log.warning("job.ignored", file=repr(path.name), folder=folder.name,
                                reason=verdict.reason)
                else:
                    log.info("job.ignored", file=path.name, folder=folder.name,
                             reason=verdict.reason)
            return
        with self._lock:
            self._pending[path] = Pending(folder, _signature(stat), now,
                                           detected_at=time.time(), hint=hint)
        log.info("job.detected", file=path.name, folder=folder.name)

def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.lstat()
    except OSError:
        return None


def _entry_key(result: os.stat_result) -> tuple[int, int, int, int]:
    return result.st_mode, result.st_size, result.st_mtime_ns, result.st_ino


def _signature(result: os.stat_result) -> tuple[int, int, int]:
    return result.st_size, result.st_mtime_ns, result.st_ino
