"""The images a job brings besides its own file: taken from the inbox, and filed with it.

Images come with a job in three ways:

- a job folder: a directory dropped into the inbox holding `job.json` (or `job.yaml`,
  `prompt.txt`, or any one job file) and image files. The watcher takes it once nothing in it
  has changed for `settle_seconds`; it is claimed by renaming the whole directory into
  processing/ and moves as one into done/ or failed/.
- a job file naming images next to it (`"images": {"image": "photo.png"}`): when the job is
  claimed they are moved into a hidden folder beside it, `processing/.NAME.inputs/`, and leave
  with it for done/ or failed/. A small record in that folder says where they go, so a crash
  between moving the job and its images is finished at the next start.
- an image dropped alone into an `image_mode: per-file` folder: the image is the job.

Nothing here follows a symbolic link; entries the watcher refuses at the top of an inbox
(links, FIFOs, devices, hard links, names with control characters) make a job folder refused
too, and nested folders are not taken.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from hotfolder.config.model import FolderConfig
from hotfolder.errors import JobError, Kind
from hotfolder.fsutil import apply_mode, write_json
from hotfolder.job.claim import owner_gone
from hotfolder.job.images import bind, describe_bound
from hotfolder.job.state import JobState
from hotfolder.jobfile import (
    InUse,
    Refused,
    entry_refusal,
    is_image_name,
    open_file,
)
from hotfolder.moves import move
from hotfolder.writers import open_for_writing

if TYPE_CHECKING:
    from hotfolder.job.parse import JobSpec

log = structlog.get_logger()

RECORD = ".inputs.json"  # in processing/.NAME.inputs/: {"job": NAME, "to": "failed"|"done"}

Wait = Callable[[float], None]  # sleeps, or raises when the job must stop waiting


def attach_images(folder: FolderConfig, state: JobState, spec: JobSpec,
                  workflow: dict[str, Any], *, overrides: Mapping[str, tuple[str, ...]],
                  template_name: str, wait: Wait) -> None:
    """Find, check and bind the job's images, kept in `state.life.images` for `images.upload`,
    which sends them to each server the job is submitted to (once per server)."""
    files = job_image_files(folder, state, spec, wait)
    state.life.images = None if not files else bind(
        workflow, files, overrides=overrides, job_id=state.job_id,
        max_bytes=folder.limits.max_image_bytes, template_name=template_name,
        previous=state.life.images, trusted=folder.processing)


def job_image_files(folder: FolderConfig, state: JobState, spec: JobSpec,
                    wait: Wait) -> dict[str, tuple[str, Path]]:
    """What the job named -> (the file as dropped, where it is now)."""
    path = folder.processing / state.name
    if spec.kind == "image":
        return {"image": (state.source or state.name, path)}
    if not spec.images:
        return {}
    if path.is_dir():  # a job folder: the files are inside it
        return {ref: (name, path / name) for ref, name in spec.images.items()}
    if folder.image_mode == "per-file":
        raise JobError("in this folder (image_mode: per-file) every image dropped alone is a "
                       "job of its own, so a job file cannot take images from the inbox: put the "
                       "job file and its images together in a folder and drop that",
                       kind=Kind.INVALID)
    base = take_companions(folder, state, set(spec.images.values()), wait)
    return {ref: (name, base / name) for ref, name in spec.images.items()}


def take_companions(folder: FolderConfig, state: JobState, names: set[str], wait: Wait,
                    wait_seconds: float | None = None) -> Path:
    """Move the images a job file names from the inbox into `.NAME.inputs/` beside it.

    A name not in the inbox yet is waited for (it may still be on its way), and each is taken
    only once it has settled like a job file. Taken already (a resumed job): nothing to do.
    """
    base = JobState.inputs_path(folder, state.name)
    wanted = sorted(n for n in names if not (base / n).exists())
    if not wanted:
        return base
    own = {state.source, state.name}
    for name in wanted:
        if name in own:
            raise JobError(f"images: names the job file itself ({name})", kind=Kind.INVALID)
    limit = wait_seconds if wait_seconds is not None else max(folder.image_wait_seconds,
                                                              3 * folder.settle_seconds)
    _settle(folder, wanted, limit, wait)
    base.mkdir(exist_ok=True)
    if not (base / RECORD).exists():
        write_json(base / RECORD, {"job": state.name, "to": "failed"}, replace=True)
    for name in wanted:
        try:
            move_into(folder.inbox / name, base / name)
        except FileNotFoundError as exc:
            raise JobError(f"the image {name} named by this job was taken by another job "
                           "before this one", kind=Kind.MISSING_IMAGE) from exc
    log.info("job.images_taken", files=wanted)
    return base


def _settle(folder: FolderConfig, names: list[str], limit: float, wait: Wait) -> None:
    deadline = time.monotonic() + limit
    seen: dict[str, tuple[int, int, int]] = {}
    steady_since = time.monotonic()
    while True:
        current: dict[str, tuple[int, int, int]] = {}
        for name in names:
            try:
                st = (folder.inbox / name).lstat()
            except FileNotFoundError:
                continue
            if entry_refusal(name, st):
                raise JobError(f"the image {name} named by this job is refused: "
                               f"{entry_refusal(name, st)}", kind=Kind.REFUSED)
            current[name] = (st.st_size, st.st_mtime_ns, st.st_ino)
            if _being_written(folder, name):  # its writer is still at it: not settled yet
                current[name] = (-1, time.monotonic_ns(), st.st_ino)
        missing = [n for n in names if n not in current]
        if current != seen:
            seen, steady_since = current, time.monotonic()
        elif not missing and time.monotonic() - steady_since >= folder.settle_seconds:
            return
        if missing and time.monotonic() > deadline:
            present = sorted(p.name for p in folder.inbox.iterdir()
                             if is_image_name(p.name) and not p.name.startswith("."))[:10]
            raise JobError(f"the job names {', '.join(missing)}, which is not in the inbox "
                           f"(waited {limit:g} s; images there: {', '.join(present) or 'none'})",
                           kind=Kind.MISSING_IMAGE, details={"missing": missing})
        wait(min(0.1, max(folder.settle_seconds / 4, 0.02)))


def _being_written(folder: FolderConfig, name: str) -> bool:
    """A writer still has the image open (where the kernel can tell)."""
    if folder.ready != "auto":
        return False
    try:
        fd, _ = open_file(folder.inbox, name)
    except InUse:
        return True
    except (Refused, OSError):
        return False  # judged by the refusal check above
    try:
        return open_for_writing(fd).writing is True
    finally:
        os.close(fd)


def move_into(src: Path, target: Path) -> None:
    """A rename (the inbox and processing/ share a file system), else a copying move."""
    try:
        os.rename(src, target)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError) or not target.parent.is_dir():
            raise
        move(src, target.parent, target.name)


# -- leaving with the job -----------------------------------------------------------------------


def sidecar_inputs(state: JobState) -> dict[str, Any]:
    """`{"inputs": [...]}` for the sidecar or error file: each image, its nodes, its upload."""
    if state.life.images is None or not state.life.images.bound:
        return {}
    return {"inputs": describe_bound(state.life.images, state.uploads.get(state.server or ""))}


def finishing(folder: FolderConfig, state: JobState, to: str) -> None:
    """Say where the taken images go before the job file moves (see `sweep`)."""
    base = JobState.inputs_path(folder, state.name)
    if base.is_dir():
        write_json(base / RECORD, {"job": state.name, "to": to}, replace=True)


def take_along(folder: FolderConfig, state: JobState, dest: Path) -> list[Path]:
    """Move the images the job took from the inbox to where the job went (done/, failed/)."""
    return _empty_into(folder, JobState.inputs_path(folder, state.name), dest)


def _empty_into(folder: FolderConfig, base: Path, dest: Path) -> list[Path]:
    moved: list[Path] = []
    if not base.is_dir():
        return moved
    for entry in sorted(base.iterdir()):
        if entry.name == RECORD or not entry.is_file() or entry.is_symlink():
            continue
        final = move(entry, dest)
        apply_mode(final, folder.file_mode, touch=True)
        moved.append(final)
    (base / RECORD).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        base.rmdir()
    return moved


def sweep(folder: FolderConfig) -> int:
    """At start: images left in `.NAME.inputs/` whose job already left processing/ (a crash
    between the two moves, or a job file deleted while the daemon was down) follow it."""
    swept = 0
    try:
        entries = list(folder.processing.glob(".*.inputs"))
    except OSError:
        return 0
    for base in entries:
        try:
            record = json.loads((base / RECORD).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            record = {}
        job = record.get("job") if isinstance(record, Mapping) else None
        if not base.is_dir() or (isinstance(job, str) and (folder.processing / job).exists()):
            continue
        state = JobState.load(folder, job) if isinstance(job, str) else None
        if state is not None and owner_gone(state) is not True:  # another machine's: later
            continue
        dest = folder.done if record.get("to") == "done" else folder.failed
        moved = _empty_into(folder, base, dest)
        swept += len(moved)
        log.info("job.images_recovered", job=job, folder=folder.name, to=dest.name,
                 files=[p.name for p in moved])
    return swept
