"""Read a claimed job, and make sure what runs is what was dropped.

The job (a file, a job folder, or an image dropped alone) is opened in processing/ without
following links, must be the inode the claim saw, and is parsed from the bytes read from that
descriptor. Where its writer is invisible to the daemon (a share written from another host,
a writer that kept its descriptor across the claim's rename), the file can still change after
the claim, so its fingerprint (inode, size, mtime; for a job folder every entry's) is checked
again right before the first submit, and its content once more before the job is reported
done. A job whose file changed raises `StillWritten`: it waits in processing/ until the file
has been stable for the settle window, then is read afresh (and, if it had run already, run
again). A parse failure that a file cut short would also cause (truncated JSON, YAML, UTF-8, an
empty file) is not final while the file is fresh: the job waits until it has been unchanged for
`fresh_window` and reads it again; only a stable file that is still invalid fails.
"""

from __future__ import annotations

import dataclasses
import os
import stat as stat_module
import time
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from hotfolder.config.model import FolderConfig
from hotfolder.errors import JobError, Kind
from hotfolder.job.finish import supersede_outputs
from hotfolder.job.jobfolder import job_file_in
from hotfolder.job.parse import JobSpec, parse_bytes
from hotfolder.job.state import JobState, Record
from hotfolder.jobfile import (
    InUse,
    Refused,
    file_print,
    folder_print,
    is_image_name,
    list_folder,
    open_dir,
    open_file,
    read_content,
    same_inode,
)
from hotfolder.writers import open_for_writing

log = structlog.get_logger()

FRESH_SECONDS = 5.0  # the shortest "modified moments ago" window for a parse failure
MAX_RERUNS = 3  # a job whose file keeps changing under it fails after this many runs


class StillWritten(Exception):
    """The job file is still being written: wait until it is stable for `window`, read again.

    `credit` is how long it has been stable already; `error` the parse failure that made a
    fresh file suspect; `rerun` says the job had run (its outputs are superseded)."""

    def __init__(self, why: str, window: float, *, credit: float = 0.0,
                 error: JobError | None = None, rerun: bool = False) -> None:
        self.why, self.window, self.credit = why, window, credit
        self.error, self.rerun = error, rerun
        super().__init__(why)


def fresh_window(folder: FolderConfig) -> float:
    return max(3 * folder.settle_seconds, FRESH_SECONDS)


def read_job(folder: FolderConfig, state: JobState, *, settled: bool = False,
             final: bool = False) -> JobSpec:
    """The claimed job's spec, read through one descriptor per file.

    `settled`: the file was seen to change and has been stable since, so only its inode must
    still be the claimed one. `final`: a parse failure is the job's, however fresh the file.
    """
    try:
        entry = os.lstat(folder.processing / state.name)
    except FileNotFoundError as exc:
        raise JobError("cancelled: its file was removed from processing/",
                       kind=Kind.CANCELLED) from exc
    try:
        if stat_module.S_ISDIR(entry.st_mode):
            return _read_folder(folder, state, settled=settled, final=final)
        fd, st = open_file(folder.processing, state.name, own=True)
    except (Refused, InUse) as exc:
        reason = exc.reason if isinstance(exc, Refused) else "another program holds it"
        raise JobError(f"the entry in processing/ is no longer one hotfolder may read "
                       f"({reason}); it was not read", kind=Kind.REFUSED) from exc
    try:
        if is_image_name(state.name):  # an image dropped alone: checked when it is bound
            _tie(state, file_print(st), settled, folder.settle_seconds)
            state.read = {"name": state.source or state.name, "bytes": st.st_size}
            return JobSpec(kind="image", images={"image": state.source or state.name})
        content = read_content(fd, st, folder.limits.max_job_bytes)
    finally:
        os.close(fd)
    _tie(state, content.seen, settled, folder.settle_seconds)
    name = state.source or state.name
    spec = _parse(folder, name, content.data, content.seen, final)
    state.read = {"name": name, **content.record()}
    return spec


def _read_folder(folder: FolderConfig, state: JobState, *, settled: bool,
                 final: bool) -> JobSpec:
    limits = folder.limits
    fd, st = open_dir(folder.processing, state.name)
    try:
        listing = list_folder(fd, limits.max_folder_files)
        _tie(state, folder_print(st, listing.signature), settled, folder.settle_seconds)
        if listing.refusal:
            raise JobError(f"the job folder is refused: {listing.refusal}", kind=Kind.REFUSED)
        if listing.truncated or len(listing.files) > limits.max_folder_files:
            raise JobError(f"the job folder holds more than {limits.max_folder_files} files "
                           "(limits.max_folder_files)", kind=Kind.TOO_LARGE)
        if listing.total_bytes > limits.max_folder_bytes:
            raise JobError(f"the job folder holds {listing.total_bytes} bytes; this folder "
                           f"takes job folders up to {limits.max_folder_bytes} "
                           "(limits.max_folder_bytes)", kind=Kind.TOO_LARGE)
        name, problem = job_file_in(listing.files)
        if name is None:
            raise JobError(f"the job folder cannot run: {problem}", kind=Kind.INVALID)
        try:
            file_fd, file_st = open_file(fd, name)
        except (Refused, InUse, FileNotFoundError) as exc:
            raise StillWritten(f"{name} in the job folder changed while it was read",
                               folder.settle_seconds) from exc
        try:
            content = read_content(file_fd, file_st, limits.max_job_bytes)
        finally:
            os.close(file_fd)
    finally:
        os.close(fd)
    try:
        spec = _parse(folder, name, content.data, content.seen, final)
    except JobError as exc:
        raise JobError(f"{name}: {exc.message}", kind=exc.kind, details=exc.details) from exc
    state.read = {"name": f"{state.source or state.name}/{name}", **content.record()}
    if spec.kind == "batch":  # each run takes its images from the folder
        return dataclasses.replace(spec, runs=tuple(
            _folder_images(run, name, listing.files) for run in spec.runs))
    return _folder_images(spec, name, listing.files)


def _tie(state: JobState, seen: dict[str, Any], settled: bool, window: float) -> None:
    """The claim holds this inode; a changed version of it is waited out, never read early."""
    claimed = state.file
    if claimed is not None and not same_inode(claimed, seen):
        raise JobError("the entry in processing/ is no longer the file that was claimed (it "
                       "was replaced); the replacement was not read", kind=Kind.REFUSED)
    if claimed is not None and not settled and not _same_version(claimed, seen):
        raise StillWritten("the job file changed after it was claimed", window)
    state.file = seen


def _same_version(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    keys = ("dev", "ino", "listing") if "listing" in a else ("dev", "ino", "size", "mtime_ns")
    return all(a.get(k) == b.get(k) for k in keys)


def _parse(folder: FolderConfig, name: str, data: bytes, seen: Mapping[str, Any],
           final: bool) -> JobSpec:
    try:
        return parse_bytes(name, data, folder.limits, txt_mode=folder.txt_mode)
    except JobError as exc:
        if not exc.incomplete:
            raise
        age = max(0.0, time.time() - seen["mtime_ns"] / 1e9)
        window = fresh_window(folder)
        if not final and age < window:
            raise StillWritten("the job file cannot be read yet and was modified moments ago",
                               window, credit=age, error=exc) from exc
        raise JobError(f"{exc.message} (the file had not changed for {age:.1f} s when it was "
                       "read)", kind=exc.kind, details={**exc.details,
                                                        "stable_seconds": round(age, 1)}) from exc


def _folder_images(spec: JobSpec, name: str, files: Mapping[str, Any]) -> JobSpec:
    """The images `spec` names, all of them in the folder; or the folder's only image."""
    images = dict(spec.images)
    missing = sorted({f for f in images.values() if f not in files})
    if missing:
        present = sorted(n for n in files if is_image_name(n)) or ["none"]
        raise JobError(f"{name} names {', '.join(missing)}, not in the job folder (images in "
                       f"it: {', '.join(present)})", kind=Kind.MISSING_IMAGE)
    if not images:
        found = sorted(n for n in files if is_image_name(n) and not n.startswith("."))
        if len(found) > 1:
            raise JobError(f"the job folder holds {len(found)} images ({', '.join(found)}); say "
                           f"which goes where with images: in {name}, e.g. "
                           f'{{"images": {{"image": "{found[0]}", "mask": "{found[1]}"}}}}',
                           kind=Kind.INVALID)
        if found:
            images = {"image": found[0]}
    return dataclasses.replace(spec, images=images)


# -- after the read ---------------------------------------------------------------------------


def current_print(folder: FolderConfig, name: str) -> dict[str, Any] | None:
    """The entry's fingerprint now (None: it is gone)."""
    path = folder.processing / name
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat_module.S_ISDIR(st.st_mode):
        return folder_print(st, list_folder(path, folder.limits.max_folder_files).signature)
    return file_print(st)


def verify_unchanged(folder: FolderConfig, state: JobState) -> None:
    """Right before the first submit: the file must still be the version that was read."""
    now = current_print(folder, state.name)
    if now is not None and state.file is not None and not _same_version(state.file, now):
        raise StillWritten("the job file changed after it was read, before it was submitted",
                           folder.settle_seconds)


def verify_content(folder: FolderConfig, state: JobState) -> None:
    """Before the job is reported done: what goes to done/ must be byte-identical to what ran.

    The fingerprint first (cheap); then, for a job file, the bytes themselves, since a writer
    can keep size and mtime."""
    now = current_print(folder, state.name)
    if now is None or state.file is None:
        return  # removed (cancelled) or never read: nothing to compare
    changed = not _same_version(state.file, now)
    if not changed and state.read and "sha256" in state.read and "listing" not in now:
        try:
            fd, st = open_file(folder.processing, state.name, own=True)
        except (Refused, InUse, FileNotFoundError):
            changed = True
        else:
            try:
                changed = read_content(fd, st, folder.limits.max_job_bytes).sha256 \
                    != state.read["sha256"]
            except JobError:
                changed = True
            finally:
                os.close(fd)
    if changed:
        raise StillWritten("the job file changed while the job ran", folder.settle_seconds,
                           rerun=True)


def await_stable(folder: FolderConfig, state: JobState, window: float, *, credit: float,
                 wait: Callable[[float], None], check: Callable[[], None],
                 ask_writers: bool = True) -> float:
    """Wait until the job's entry has not changed for `window` seconds (and, where the kernel
    can tell, nobody has it open for writing); return how long it has been stable."""
    last = current_print(folder, state.name)
    since = time.monotonic() - credit
    step = min(0.25, max(folder.settle_seconds / 4, 0.05))
    while True:
        now = time.monotonic()
        if now - since >= window and not (ask_writers and _held_open(folder, state.name)):
            return now - since
        wait(step)
        check()
        current = current_print(folder, state.name)
        if current is None:
            raise JobError("cancelled: its file was removed from processing/", kind=Kind.CANCELLED)
        if current != last or (ask_writers and _held_open(folder, state.name)):
            last, since = current, time.monotonic()


def _held_open(folder: FolderConfig, name: str) -> bool:
    try:
        fd, _ = open_file(folder.processing, name)
    except InUse:
        return True
    except (Refused, OSError):
        return False  # a job folder, or gone: the fingerprint decides
    try:
        return open_for_writing(fd).writing is True
    finally:
        os.close(fd)


def wait_out(folder: FolderConfig, state: JobState, again: StillWritten, record: Record,
             *, wait: Callable[[float], None], check: Callable[[], None]) -> None:
    """The job file is still being written: the job waits in processing/ until the file is
    stable, then it is read afresh. A job that ran on stale content has its outputs taken back
    first, and runs again at most MAX_RERUNS times."""
    log.info("job.still_being_written", reason=again.why, prompt_id=state.prompt_id,
             wait_seconds=round(max(0.0, again.window - again.credit), 1),
             error=again.error.message if again.error else None)
    if again.rerun:
        state.reruns += 1
        if state.reruns > MAX_RERUNS:
            raise JobError(f"the job file kept changing while the job ran ({MAX_RERUNS} runs "
                           "were made on content that had changed by their end); finish "
                           "writing it, then drop it again", kind=Kind.CHANGING)
        superseded = supersede_outputs(folder, state)
        record.reran = {"reason": again.why, "run": state.reruns + 1,
                           "previous": {**(state.read or {}), "prompt_id": state.prompt_id,
                                        "outputs": superseded}}
        log.warning("job.rerun", reason=again.why, superseded=superseded,
                    previous_sha256=(state.read or {}).get("sha256"),
                    action="run again with the job file's final content")
    # the next read starts the job over: a new seed, its images bound and uploaded afresh
    state.prompt_id = state.server = state.submitted_at = None
    state.seed, state.life.images, state.uploads = None, None, {}
    state.phase = "being written"
    state.save(folder)
    stable = await_stable(folder, state, again.window, credit=again.credit, wait=wait,
                          check=check, ask_writers=folder.ready == "auto")
    state.phase = "claimed"
    log.info("job.reading_again", stable_seconds=round(stable, 1))
