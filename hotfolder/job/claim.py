"""Claim a settled file by an atomic rename into processing/, and keep its state record there.

The rename is the lock: of two processes renaming the same inbox file, exactly one succeeds.
The state record (a hidden JSON file beside the job) says who owns the job and which server and
prompt_id it went to, so a restarted daemon finds the job again instead of running it twice. An
owner refreshes its lease while the job lives; a job whose owner is gone (same host, dead
process) or whose lease ran out (another host) is adopted, again by a rename only one wins.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import time
from pathlib import Path
from typing import Any

from hotfolder.config.model import LEASE_SECONDS, FolderConfig
from hotfolder.fsutil import candidates, pid_alive
from hotfolder.job.crashguard import RISKY_PHASES
from hotfolder.job.state import HOST, INSTANCE, JobState, owner_me
from hotfolder.jobfile import (
    InUse,
    Refused,
    file_print,
    folder_print,
    list_folder,
    open_dir,
    open_file,
)
from hotfolder.writers import open_for_writing

STATELESS_GRACE = 10.0  # a claim's record follows its rename at once; on a share, give it time

class BeingWritten(Exception):
    """A writer still has the file (or a file in the job folder) open: it is not taken."""


def claim(folder: FolderConfig, path: Path, detected_at: float | None = None, *,
          ask_writers: bool = True) -> JobState | None:
    """Move an inbox file (or job folder) into processing/; None if someone else took it first.

    The entry is opened first, without following links, and judged on that descriptor (type,
    link count, and, with `ask_writers`, whether anyone still has it open for writing); after
    the rename the name in processing/ must hold that same inode. A link or a file swapped in
    at any point is refused (`Refused`, left in the inbox); a file being written raises
    `BeingWritten`.

    The record is written at once (without an fsync: a power cut that loses it loses the
    rename too, or leaves a record-less file adopted after STATELESS_GRACE): another daemon
    starting this very moment on the same folder must see the job is owned, or it would
    adopt it as an orphan and run it too.
    """
    folder.processing.mkdir(parents=True, exist_ok=True)
    try:
        fd, seen = _open_entry(folder, path.name, ask_writers)
    except FileNotFoundError:
        return None  # gone: claimed by another process, or deleted by the user
    except PermissionError as exc:
        raise Refused("the daemon may not read it (permission denied): give its user read "
                      "access") from exc
    try:
        for name in candidates(path.name):
            target = folder.processing / name
            if target.exists() or JobState.path_for(folder, name).exists() \
                    or JobState.inputs_path(folder, name).exists():
                continue
            try:
                os.rename(path, target)
            except FileNotFoundError:
                return None
            _check_moved(folder, path, target, os.fstat(fd))
            # "preparing": what the daemon does next; a death from here on is the job's
            state = JobState(name=name, folder=folder.name, source=path.name,
                             detected_at=detected_at, file=seen, phase="preparing")
            state.save(folder, durable=False)
            return state
        return None
    finally:
        os.close(fd)


def _open_entry(folder: FolderConfig, name: str, ask_writers: bool) -> tuple[int, dict[str, Any]]:
    """The inbox entry opened and judged: a plain file, or a job folder of plain files.

    lstat only chooses how to open it; each open checks the type on its descriptor, so an
    entry swapped in between is refused, not misread."""
    if stat.S_ISDIR(os.lstat(folder.inbox / name).st_mode):
        fd, st = open_dir(folder.inbox, name)
        try:
            return fd, _judge_folder(fd, st, folder, ask_writers)
        except BaseException:
            os.close(fd)
            raise
    try:
        fd, st = open_file(folder.inbox, name)
    except InUse as exc:
        raise BeingWritten(name) from exc
    if ask_writers and open_for_writing(fd).writing:
        os.close(fd)
        raise BeingWritten(name)
    return fd, file_print(st)


def _judge_folder(fd: int, st: os.stat_result, folder: FolderConfig,
                  ask_writers: bool) -> dict[str, Any]:
    listing = list_folder(fd, folder.limits.max_folder_files)
    if listing.refusal:
        raise Refused(f"a job folder that cannot be taken: {listing.refusal}")
    if listing.arriving:
        raise BeingWritten(listing.arriving)
    for entry in listing.files if ask_writers else ():
        try:
            file_fd, _ = open_file(fd, entry)
        except InUse as exc:
            raise BeingWritten(entry) from exc
        except (FileNotFoundError, Refused) as exc:
            raise BeingWritten(entry) from exc  # changed since listed: look again later
        try:
            if open_for_writing(file_fd).writing:
                raise BeingWritten(entry)
        finally:
            os.close(file_fd)
    return folder_print(st, listing.signature)


def _check_moved(folder: FolderConfig, source: Path, target: Path, held: os.stat_result) -> None:
    """The claim holds only if the name in processing/ is the inode that was judged; anything
    else (swapped in between) goes back to the inbox, untouched and unread."""
    try:
        now = os.lstat(target)
    except FileNotFoundError:
        now = None
    if now is not None and (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
        return
    if now is not None:
        for name in candidates(source.name):
            if not os.path.lexists(folder.inbox / name):
                with contextlib.suppress(OSError):
                    os.rename(target, folder.inbox / name)
                break
    raise Refused("it was replaced by another file while it was being claimed; the "
                  "replacement was not read")


def owner_gone(state: JobState) -> bool | None:
    """Whether the job's owner is gone: told at once for an owner on this machine (its
    process is asked); None for one on another machine, whose clock cannot be compared with
    ours: only its heartbeat staying still for the lease time tells (`Orphans`)."""
    owner = state.owner or {}
    if owner.get("instance") == INSTANCE:
        return False
    if owner.get("host") == HOST:
        pid = owner.get("pid")
        if not isinstance(pid, int) or pid == os.getpid():
            return True  # our pid, another instance: a previous life of this process
        return not pid_alive(pid)
    return None


def adopt(folder: FolderConfig, name: str, state: JobState | None) -> JobState | None:
    """Take over an orphaned job; None if another process took it first.

    Each adoption has a generation (the record's, plus one), and only the process that
    creates that generation's marker exclusively adopts: of several daemons judging the same
    dead owner (or the same job without a record) at the same instant, the file system picks
    one. A later look at a record already renewed by the winner sees a live owner, and a
    stale view of the old one asks for a generation that is taken."""
    generation = (state.generation if state is not None else 0) + 1
    marker = JobState.adoption_path(folder, name, generation)
    try:
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return None
    try:
        os.write(fd, json.dumps(owner_me()).encode())
    finally:
        os.close(fd)
    if not (folder.processing / name).exists():  # it finished (or left) since it was seen
        marker.unlink(missing_ok=True)
        return None
    if state is None:
        # a job gets its record when it is submitted or has waited a second: one without
        # died between its claim and then, while it was read, parsed and prepared
        state = JobState(name=name, folder=folder.name, source=name, phase="preparing")
    if state.phase in RISKY_PHASES:
        state.crashes += 1
    state.generation = generation
    state.phase = "claimed"
    state.owner = owner_me()
    state.renew(folder)
    return state


class Orphans:
    """Finds jobs in processing/ that nobody owns any more (at start, and from time to time).

    A job owned on another machine is judged by its heartbeat on this machine's monotonic
    clock: taken over only once its record has not changed for `lease_seconds` as measured
    here, so two machines whose clocks differ (by a minute, or an hour) never take each
    other's live jobs, and a dead machine's jobs are taken over a lease after it fell silent.
    """

    def __init__(self, lease_seconds: float = LEASE_SECONDS) -> None:
        self.lease_seconds = lease_seconds
        self._stateless_since: dict[Path, float] = {}
        self._heartbeats: dict[tuple[str, str], tuple[Any, float]] = {}  # -> (beat, seen at)

    def _silent(self, folder: FolderConfig, state: JobState, now: float) -> bool:
        """True once the remote owner's heartbeat has stood still for the lease time."""
        key, beat = (folder.name, state.name), (state.owner, state.lease_until, state.generation)
        seen = self._heartbeats.get(key)
        if seen is None or seen[0] != beat:
            self._heartbeats[key] = (beat, now)
            return False
        return now - seen[1] >= self.lease_seconds

    def scan(self, folder: FolderConfig, busy: set[str], now: float | None = None,
             *, at_start: bool = False) -> list[JobState]:
        now = time.monotonic() if now is None else now
        if not folder.processing.is_dir():
            return []
        adopted = []
        live_names = set()
        for entry in sorted(folder.processing.iterdir(), key=_mtime):
            if entry.name.startswith(".") or entry.name in busy or not _is_file(entry):
                continue
            live_names.add(entry.name)
            state = JobState.load(folder, entry.name)
            if state is None:
                # a daemon writes the record right after its claim's rename: give it time, at
                # start too (another daemon may have claimed it this very moment)
                first = self._stateless_since.setdefault(entry, now)
                if now - first < STATELESS_GRACE:
                    continue
            elif (gone := owner_gone(state)) is None:
                if not self._silent(folder, state, now):
                    continue
            elif not gone:
                continue
            taken = adopt(folder, entry.name, state)
            self._stateless_since.pop(entry, None)
            self._heartbeats.pop((folder.name, entry.name), None)
            if taken is not None:
                adopted.append(taken)
        if at_start:
            _remove_stale_records(folder, live_names | busy)
        return adopted


def _remove_stale_records(folder: FolderConfig, names: set[str]) -> None:
    """State records whose job already left (a crash between the move and the cleanup)."""
    wanted = {JobState.path_for(folder, n).name for n in names}
    for entry in folder.processing.glob(".*.state.json"):
        if entry.name not in wanted:
            state = JobState.load(folder, entry.name[1:-len(".state.json")])
            if state is None or owner_gone(state) is True:
                entry.unlink(missing_ok=True)
    for entry in folder.processing.glob(".*.adopted.*"):  # adoption markers (adopt)
        job = entry.name[1:].rsplit(".adopted.", 1)[0]
        if job not in names and not (folder.processing / job).exists():
            entry.unlink(missing_ok=True)
    for entry in folder.processing.glob(".*.moving"):  # a move's marker (moves.py)
        if not (folder.processing / entry.name[1:-len(".moving")]).exists():
            entry.unlink(missing_ok=True)
    journals = {JobState.journal_for(folder, n).name for n in names}
    for entry in folder.processing.glob(".*.runs.jsonl"):
        if entry.name not in journals and not entry.with_name(
                entry.name[: -len(".runs.jsonl")] + ".state.json").exists():
            entry.unlink(missing_ok=True)


def _is_file(path: Path) -> bool:
    """A job: a file, or a job folder (a directory), never a symbolic link."""
    try:
        return (path.is_file() or path.is_dir()) and not path.is_symlink()
    except OSError:
        return False


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
