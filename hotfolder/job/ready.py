"""When an inbox entry is complete: from its writer where the kernel can tell, else the clock.

On a local disk (the native observer) a file is complete when it was renamed into the inbox,
its writer closed it, or it was already there, and nobody still has it open for writing (asked
of the kernel: writers.py); it is handed on at once. A file held open is never complete,
however quiet, and is listed as being written. Where the writer is invisible (the polling
observer on NFS/SMB/FUSE, files from another host) or the kernel cannot say, a file must also
have kept its size, mtime and inode for `settle_seconds`; so must a job folder, whose inside
the observer does not see. `ready: settle` makes the clock the only rule.
"""

from __future__ import annotations

import os
import time
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from hotfolder.config.model import FolderConfig
from hotfolder.jobfile import InUse, Refused, list_folder, open_dir, open_file
from hotfolder.writers import WriterCheck, open_for_writing, writers_of

log = structlog.get_logger()

WRITING_RECHECK_SECONDS = 1.0  # a file held open is asked about again this often (or on close)
WRITERS_LOOKUP_SECONDS = 10.0  # who holds it (a look through /proc) at most this often
# what the observer or a scan says of a path that means "its writer is done", if nobody
# else still has it open
HINT_RENAMED, HINT_CLOSED, HINT_FOUND = "renamed in", "writer closed", "found"


@dataclass
class Pending:
    folder: FolderConfig
    # size, mtime, inode: a replaced file starts settling again (a job folder: its entries')
    signature: Hashable
    changed_at: float
    detected_at: float
    is_dir: bool = False
    hint: str | None = None  # "renamed in" | "writer closed" | "found": its writer is done
    writing_since: float | None = None  # wall time it was first found held open for writing
    writers: list[dict[str, Any]] = field(default_factory=list)
    next_ask: float = 0.0  # when to ask the kernel again about a file held open
    writers_at: float = 0.0  # when `writers` was looked up


class Readiness:
    """Decides, tick by tick, whether a pending entry may be taken, and remembers which
    files are held open (for the status) and which folders the kernel cannot answer for."""

    def __init__(self) -> None:
        self._blind: set[str] = set()  # folders told once that the kernel cannot say

    def ready_by(self, path: Path, pending: Pending, now: float, *, native: bool) -> str | None:
        """Why the entry may be taken now ("writer closed", "renamed in", "found", "settled"),
        or None while it may not.

        The kernel is asked whether anyone has it open for writing: on a native observer that
        answer alone decides for a file that arrived by rename, was closed by its writer, or was
        found already there; a file only seen created, a job folder (whose inside is not
        watched) and every file a polling observer sees also wait out `settle_seconds`. A
        file held open is never taken. Where the kernel cannot say, the clock decides."""
        folder = pending.folder
        settled = now - pending.changed_at >= folder.settle_seconds
        if folder.ready == "settle":
            return "settled" if settled else None
        quick = pending.hint is not None and native and (
            not pending.is_dir or pending.hint == HINT_RENAMED)
        if not (quick or settled) or (pending.writing_since is not None and now < pending.next_ask
                                      and not pending.hint):
            return None
        check = folder_writers(path) if pending.is_dir else file_writers(path)
        if check.writing:
            self._mark_writing(path, pending, now)
            pending.hint = None  # the next close (or the next look) decides
            return None
        was_open = pending.writing_since is not None
        if was_open:
            log.info("job.written", file=path.name, folder=folder.name,
                     seconds=round(time.time() - pending.writing_since, 1))
            pending.writing_since, pending.writers = None, []
        if check.writing is None:
            self._say_blind(folder, check.reason)
            return "settled" if settled else None
        if quick and pending.hint:
            return pending.hint
        # seen open before, free now: its writer closed it (whether or not that event came
        # before this look)
        return HINT_CLOSED if was_open and native else "settled"

    def _mark_writing(self, path: Path, pending: Pending, now: float) -> None:
        first = pending.writing_since is None
        if first:
            pending.writing_since = time.time()
        if first or now >= pending.writers_at + WRITERS_LOOKUP_SECONDS:
            pending.writers, pending.writers_at = writers_of(path), now
        pending.next_ask = now + WRITING_RECHECK_SECONDS
        if first:
            log.info("job.being_written", file=path.name, folder=pending.folder.name,
                     writers=pending.writers,
                     note="a writer has it open; it is taken once closed")

    def _say_blind(self, folder: FolderConfig, reason: str) -> None:
        if folder.name not in self._blind:
            self._blind.add(folder.name)
            log.info("folder.writer_check_unavailable", folder=folder.name, reason=reason,
                     fallback=f"files are taken after {folder.settle_seconds:g} s without a "
                              "change (settle_seconds)")


def file_writers(path: Path) -> WriterCheck:
    """Whether anyone has the inbox file open for writing (opened here without following)."""
    try:
        fd, _ = open_file(path.parent, path.name)
    except InUse:
        return WriterCheck(True)
    except (Refused, OSError):
        return WriterCheck(False)  # gone or refused: the claim decides, and says why
    try:
        return open_for_writing(fd)
    finally:
        os.close(fd)


def folder_writers(path: Path) -> WriterCheck:
    """Whether any file in a job folder is open for writing; "cannot tell" if any cannot."""
    try:
        fd, _ = open_dir(path.parent, path.name)
    except (Refused, OSError):
        return WriterCheck(False)
    try:
        answer = WriterCheck(False)
        for name in list_folder(fd, 10_000).files:
            try:
                file_fd, _ = open_file(fd, name)
            except InUse:
                return WriterCheck(True)
            except (Refused, OSError):
                continue
            try:
                check = open_for_writing(file_fd)
            finally:
                os.close(file_fd)
            if check.writing:
                return check
            if check.writing is None:
                answer = check
        return answer
    finally:
        os.close(fd)


def rule(folder: FolderConfig, mode: str) -> str:
    """How this folder decides a file is complete, for the `folder.watching` log line."""
    if folder.ready == "settle":
        return f"after {folder.settle_seconds:g} s without a change (ready: settle)"
    if mode == "native":
        return ("as soon as its writer has closed it or it was renamed in, asking the kernel "
                "whether anyone still writes it")
    return (f"after {folder.settle_seconds:g} s without a change (polling), and never while a "
            "writer on this machine has it open")
