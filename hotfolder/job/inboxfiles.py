"""Which inbox entries are jobs, and for the others why not: the one place that decides it.

The watcher asks before it takes anything; `hotfolder status` and the status page ask the same
question to count what waits and to list what is ignored, so a `notes.md` or a picture in a
folder that takes none is visible, with the reason, instead of silently never becoming a job.
"""

from __future__ import annotations

import bisect
import fnmatch
import os
import stat as stat_module
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from hotfolder.config.model import FolderConfig
from hotfolder.jobfile import is_image_name, refusal

# temporary names of editors, browsers and sync clients: never jobs, never touched. Hidden
# names cover .~lock.*, .syncthing.*, .dropbox*, ._* and .DS_Store. Dropbox's "conflicted
# copy" files keep their extension and are real jobs.
IGNORED_PATTERNS = ("*.tmp", "*.part", "*.partial", "*.crdownload", "*.download", "~$*",
                    ".*", "Thumbs.db", "desktop.ini", "*.swp", "*~")
CANCEL_SUFFIX = ".cancel"
MAX_LISTED = 50  # ignored entries a status lists per folder (all of them are counted)


@dataclass(frozen=True)
class NotAJob:
    """Why an inbox entry is not a job."""

    reason: str
    # listed as ignored by `status`: not a writer's temporary or hidden file (those come and
    # go by the hundred while files arrive) and not a cancel request (taken at once)
    listed: bool = True
    refused: bool = False  # unsafe to open (a link, a device): logged as a warning
    cancel: bool = False  # NAME.cancel: a request to cancel the job NAME


def is_ignored(name: str, extra: Iterable[str] = ()) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in (*IGNORED_PATTERNS, *extra))


def ignored_name(folder: FolderConfig, name: str) -> NotAJob | None:
    """What the name alone decides: a writer's temporary file, or the folder's `ignore:`."""
    if is_ignored(name):
        return NotAJob("a hidden or temporary name (a writer's, or the system's)", listed=False)
    pattern = next((p for p in folder.ignore if fnmatch.fnmatchcase(name, p)), None)
    if pattern is not None:
        return NotAJob(f"matches the folder's ignore pattern {pattern!r}")
    return None


def not_a_job(folder: FolderConfig, name: str, result: os.stat_result) -> NotAJob | None:
    """None for a job (a job file, or a job folder); else why the entry is not one.
    `result` is the entry's lstat: a link is judged as a link, never followed."""
    by_name = ignored_name(folder, name)
    if by_name is not None:
        return by_name
    problem = refusal(name, result)
    if problem is not None:
        return NotAJob(problem, refused=True)
    if stat_module.S_ISDIR(result.st_mode):
        return None  # a job folder
    if name.endswith(CANCEL_SUFFIX):
        return NotAJob("a cancel request", listed=False, cancel=True)
    suffix = Path(name).suffix.lower()
    if suffix in folder.extensions:
        return None
    if is_image_name(name):
        return NotAJob("a picture: it waits for a job file that names it (images:); this "
                       "folder takes pictures as jobs only with image_mode: per-file")
    return NotAJob(f"extension {suffix or '(none)'} is not one this folder takes "
                   f"({', '.join(folder.extensions)}); left in place")


@dataclass(frozen=True)
class Survey:
    waiting: int  # jobs in the inbox (files and job folders)
    ignored: list[dict[str, str]]  # the first MAX_LISTED entries that are not, by name
    ignored_total: int  # how many are not, in all (hidden and temporary names not counted)


_surveys: dict[Path, tuple[tuple[int, int], float, Survey]] = {}
_surveys_lock = threading.Lock()
SURVEY_SECONDS = 5.0  # an unchanged inbox is looked at again after this long


def survey(folder: FolderConfig, limit: int = MAX_LISTED, *, now: float | None = None) -> Survey:
    """The inbox as status shows it, from one lstat per entry. The page asks every second,
    so an inbox whose listing has not changed (same mtime) is surveyed at most every few
    seconds: a big inbox on a network share costs one stat of the folder per request."""
    now = time.monotonic() if now is None else now
    try:
        stamp = os.stat(folder.inbox)
    except OSError:
        return Survey(0, [], 0)
    key = (stamp.st_mtime_ns, stamp.st_ino)
    with _surveys_lock:
        cached = _surveys.get(folder.inbox)
    if cached is not None and cached[0] == key and now - cached[1] < SURVEY_SECONDS:
        return cached[2]
    found = _survey(folder, limit)
    with _surveys_lock:
        _surveys[folder.inbox] = (key, now, found)
    return found


def _survey(folder: FolderConfig, limit: int) -> Survey:
    waiting, count = 0, 0
    ignored: list[tuple[str, str]] = []  # kept sorted, at most `limit` long
    try:
        entries = os.scandir(folder.inbox)
    except OSError:
        return Survey(0, [], 0)
    with entries:
        for entry in entries:
            try:
                result = entry.stat(follow_symlinks=False)
            except OSError:
                continue  # gone meanwhile
            verdict = not_a_job(folder, entry.name, result)
            if verdict is None:
                waiting += 1
            elif verdict.listed:
                count += 1
                name = shown(entry.name) + ("/" if stat_module.S_ISDIR(result.st_mode) else "")
                if len(ignored) < limit or name < ignored[-1][0]:
                    bisect.insort(ignored, (name, verdict.reason))
                    del ignored[limit:]
    return Survey(waiting, [{"file": n, "reason": r} for n, r in ignored], count)


def shown(name: str) -> str:
    """A name safe to print on a terminal: control characters and undecodable bytes escaped
    (a name can carry an escape sequence)."""
    return name if name.isprintable() else repr(name)[1:-1]
