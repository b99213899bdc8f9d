"""The files a job brings besides its own: job folders, and images taken from the inbox.

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
import dataclasses
import fnmatch
import json
import os
import stat as stat_module
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from hotfolder.claim import JobState, owner_gone
from hotfolder.config import FolderConfig
from hotfolder.errors import JobError
from hotfolder.fields import Limits
from hotfolder.fsutil import apply_mode, move, write_json
from hotfolder.images import bind, describe_bound, is_image_name

if TYPE_CHECKING:
    from hotfolder.parse import JobSpec

log = structlog.get_logger()

JOB_FILE_NAMES = ("job.json", "job.yaml", "job.yml", "prompt.txt")
JOB_FILE_EXTENSIONS = (".txt", ".json", ".yaml", ".yml", ".csv", ".jsonl")
# names of files still arriving: a folder holding one is not settled
TRANSFER_PATTERNS = ("*.tmp", "*.part", "*.partial", "*.crdownload", "*.download",
                     ".syncthing.*", ".~lock.*", "*.swp", "~$*")
RECORD = ".inputs.json"  # in processing/.NAME.inputs/: {"job": NAME, "to": "failed"|"done"}
COMPANION_WAIT_SECONDS = 10.0  # a named image not in the inbox yet is waited for this long

Wait = Callable[[float], None]  # sleeps, or raises when the job must stop waiting


def _control_chars(name: str) -> bool:
    return any(ord(ch) < 32 or ord(ch) == 127 for ch in name)


def name_problem(name: Any) -> str | None:
    """Why `name` cannot be a file named by a job (a plain name in the same folder)."""
    if not isinstance(name, str) or not name:
        return "expected a file name"
    if "/" in name or "\\" in name or name in (".", ".."):
        return f"{name!r} must be a plain file name next to the job, without a path"
    if name.startswith("."):
        return f"{name!r} is a hidden name; hidden files are never taken"
    if _control_chars(name) or len(name.encode()) > 255:
        return f"{name!r} is not a usable file name"
    return None


def parse_images_field(value: Any, problems: list[str]) -> dict[str, str]:
    """A spec's `images`: one file name (the template's image), or NODE -> file name, where
    NODE is `image`, `mask`, or a node id, title or class_type."""
    if value is None:
        return {}
    if isinstance(value, str):
        value = {"image": value}
    if not isinstance(value, Mapping) or not value:
        problems.append("images: expected a file name, or a mapping of node (image, mask, or "
                        "a node id, title or class) to a file name")
        return {}
    images: dict[str, str] = {}
    for ref, name in value.items():
        problem = name_problem(name)
        if not isinstance(ref, str) or not ref.strip():
            problems.append(f"images: {ref!r} is not a node (image, mask, or a node id, title "
                            "or class)")
        elif problem:
            problems.append(f"images.{ref}: {problem}")
        else:
            images[ref] = name
    return images


# -- job folders --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Listing:
    """A job folder's entries (at most `limit` + 1 of them are looked at)."""

    files: dict[str, os.stat_result]
    refusal: str | None  # an entry that makes the folder refused
    arriving: str | None  # a file still being copied in
    signature: tuple[Any, ...]
    truncated: bool

    @property
    def total_bytes(self) -> int:
        return sum(st.st_size for st in self.files.values())


def list_folder(path: Path, limit: int) -> Listing:
    files: dict[str, os.stat_result] = {}
    refusal = arriving = None
    signature: list[tuple[Any, ...]] = []
    truncated = False
    try:
        with os.scandir(path) as entries:
            for entry in entries:
                if len(signature) > limit:
                    truncated = True
                    break
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                signature.append((entry.name, stat_module.S_IFMT(st.st_mode), st.st_size,
                                  st.st_mtime_ns, st.st_ino))
                problem = _entry_refusal(entry.name, st)
                if problem and refusal is None:
                    refusal = problem
                elif any(fnmatch.fnmatchcase(entry.name, p) for p in TRANSFER_PATTERNS):
                    arriving = arriving or entry.name
                elif not problem:
                    files[entry.name] = st
    except OSError as exc:
        refusal = f"cannot be read ({exc.strerror or exc})"
    return Listing(files, refusal, arriving, tuple(sorted(signature)), truncated)


def _entry_refusal(name: str, st: os.stat_result) -> str | None:
    shown = repr(name)
    if stat_module.S_ISLNK(st.st_mode):
        return f"{shown} in it is a symbolic link: links are never followed"
    if stat_module.S_ISDIR(st.st_mode):
        return f"{shown} in it is a folder: a job folder holds files only"
    if not stat_module.S_ISREG(st.st_mode):
        return f"{shown} in it is not a regular file (a FIFO, socket or device)"
    if st.st_nlink > 1:
        return f"{shown} in it is a hard link to another file"
    if _control_chars(name):
        return f"a name in it contains control characters ({shown}); rename it"
    return None


def job_file_in(files: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(the job file of a folder, or None and why not)."""
    named = [n for n in JOB_FILE_NAMES if n in files]
    if len(named) > 1:
        return None, f"it holds both {' and '.join(named)}; keep one"
    if named:
        return named[0], None
    candidates = sorted(n for n in files if not n.startswith(".")
                        and Path(n).suffix.lower() in JOB_FILE_EXTENSIONS)
    if len(candidates) == 1:
        return candidates[0], None
    if candidates:
        return None, (f"it holds {len(candidates)} possible job files ({', '.join(candidates)}); "
                      f"call the one to run {JOB_FILE_NAMES[0]} or {JOB_FILE_NAMES[-1]}")
    return None, (f"it holds no job file ({', '.join(JOB_FILE_NAMES)}, or one .txt/.json/.yaml "
                  "file)")


def folder_signature(path: Path, limits: Limits) -> tuple[Any, ...]:
    """Changes whenever anything in the job folder does: the watcher's settle test."""
    return list_folder(path, limits.max_folder_files).signature


def folder_not_ready(path: Path, limits: Limits) -> str | None:
    """Why a settled directory in the inbox is not (yet) a job to take, or None.

    Limits are not checked here: a folder over them is taken and failed with the reason."""
    listing = list_folder(path, limits.max_folder_files)
    if listing.refusal:
        return listing.refusal
    if listing.arriving:
        return f"{listing.arriving!r} in it is still being copied"
    if not listing.files and not listing.truncated:
        return "it is empty"
    name, problem = job_file_in(listing.files)
    return None if name or listing.truncated else problem


def read_image_job(path: Path, limits: Limits, txt_mode: str = "whole") -> JobSpec | None:
    """The spec of a job folder or of an image dropped alone; None for any other job file."""
    try:
        st = path.lstat()
    except OSError:
        return None
    if stat_module.S_ISDIR(st.st_mode):
        return read_folder_job(path, limits, txt_mode)
    if stat_module.S_ISREG(st.st_mode) and is_image_name(path.name):
        from hotfolder.parse import JobSpec

        return JobSpec(kind="image", images={"image": path.name})
    return None


def read_folder_job(path: Path, limits: Limits, txt_mode: str = "whole") -> JobSpec:
    listing = list_folder(path, limits.max_folder_files)
    if listing.refusal:
        raise JobError(f"the job folder is refused: {listing.refusal}", kind="refused")
    if listing.truncated or len(listing.files) > limits.max_folder_files:
        raise JobError(f"the job folder holds more than {limits.max_folder_files} files "
                       "(limits.max_folder_files)", kind="too_large")
    if listing.total_bytes > limits.max_folder_bytes:
        raise JobError(f"the job folder holds {listing.total_bytes} bytes; this folder takes "
                       f"job folders up to {limits.max_folder_bytes} (limits.max_folder_bytes)",
                       kind="too_large")
    name, problem = job_file_in(listing.files)
    if name is None:
        raise JobError(f"the job folder cannot run: {problem}", kind="invalid")
    from hotfolder.parse import parse_job

    try:
        spec = parse_job(path / name, limits, txt_mode=txt_mode)
    except JobError as exc:
        raise JobError(f"{name}: {exc.message}", kind=exc.kind, details=exc.details) from exc
    if spec.kind == "batch":  # each run takes its images from the folder
        return dataclasses.replace(spec, runs=tuple(
            _folder_images(run, name, listing.files) for run in spec.runs))
    return _folder_images(spec, name, listing.files)


def _folder_images(spec: JobSpec, name: str, files: Mapping[str, Any]) -> JobSpec:
    """The images `spec` names, all of them in the folder; or the folder's only image."""
    images = dict(spec.images)
    missing = sorted({f for f in images.values() if f not in files})
    if missing:
        present = sorted(n for n in files if is_image_name(n)) or ["none"]
        raise JobError(f"{name} names {', '.join(missing)}, not in the job folder (images in "
                       f"it: {', '.join(present)})", kind="missing_image")
    if not images:
        found = sorted(n for n in files if is_image_name(n) and not n.startswith("."))
        if len(found) > 1:
            raise JobError(f"the job folder holds {len(found)} images ({', '.join(found)}); say "
                           f"which goes where with images: in {name}, e.g. "
                           f'{{"images": {{"image": "{found[0]}", "mask": "{found[1]}"}}}}',
                           kind="invalid")
        if found:
            images = {"image": found[0]}
    return dataclasses.replace(spec, images=images)


# -- binding a job's images (called from Pipeline.prepare) -------------------------------------


def attach_images(folder: FolderConfig, state: JobState, spec: JobSpec,
                  workflow: dict[str, Any], *, overrides: Mapping[str, tuple[str, ...]],
                  template_name: str, wait: Wait) -> None:
    """Find, check and bind the job's images, kept in `state._images` for `images.upload`,
    which sends them to each server the job is submitted to (once per server)."""
    files = job_image_files(folder, state, spec, wait)
    state._images = None if not files else bind(
        workflow, files, overrides=overrides, job_id=state.job_id,
        max_bytes=folder.limits.max_image_bytes, template_name=template_name,
        previous=state._images)


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
                       kind="invalid")
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
            raise JobError(f"images: names the job file itself ({name})", kind="invalid")
    limit = wait_seconds if wait_seconds is not None else max(COMPANION_WAIT_SECONDS,
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
                           "before this one", kind="missing_image") from exc
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
            if _entry_refusal(name, st):
                raise JobError(f"the image {name} named by this job is refused: "
                               f"{_entry_refusal(name, st)}", kind="refused")
            current[name] = (st.st_size, st.st_mtime_ns, st.st_ino)
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
                           kind="missing_image", details={"missing": missing})
        wait(min(0.1, max(folder.settle_seconds / 4, 0.02)))


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
    if state._images is None or not state._images.bound:
        return {}
    return {"inputs": describe_bound(state._images, state.uploads.get(state.server or ""))}


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
        os.utime(final)
        apply_mode(final, folder.file_mode)
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
        if state is not None and not owner_gone(state):
            continue
        dest = folder.done if record.get("to") == "done" else folder.failed
        moved = _empty_into(folder, base, dest)
        swept += len(moved)
        log.info("job.images_recovered", job=job, folder=folder.name, to=dest.name,
                 files=[p.name for p in moved])
    return swept
