"""Open once, decide on the descriptor, read from that descriptor.

A check made on a path and a use made of the same path later can meet two different files: a
job file that settled can be swapped for a symbolic link to a secret, or a hard link to a file
elsewhere, before it is claimed. So every file hotfolder takes from an inbox is opened without
following links (and without blocking, so a FIFO cannot hang it); its type, link count and size
are judged with `fstat` on that descriptor; its content is read from it; and the claim is tied
to its inode (`fingerprint`), so a file that is not the one claimed is refused, not read.
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import os
import stat as stat_module
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hotfolder.errors import JobError, Kind

FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff")


def is_image_name(name: str) -> bool:
    """An image dropped into an inbox (as a job of its own, or beside the job that names it)."""
    return Path(name).suffix.lower() in IMAGE_EXTENSIONS


# names of files still arriving: a folder holding one is not settled
TRANSFER_PATTERNS = ("*.tmp", "*.part", "*.partial", "*.crdownload", "*.download",
                     ".syncthing.*", ".~lock.*", "*.swp", "~$*")


class Refused(Exception):
    """Not a plain file (or folder) hotfolder may read: it is left where it is, with `reason`."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class InUse(Exception):
    """Someone holds the file (a writer, or a lease of another program such as Samba)."""


def has_control_chars(name: str) -> bool:
    """Line breaks, escapes and the like: a name no log line or error file could show."""
    return any(ord(ch) < 32 or ord(ch) == 127 for ch in name)


def not_utf8(name: str) -> bool:
    """A name whose bytes are not UTF-8 (a legacy encoding on an SMB/NFS share): Python holds
    it with surrogates, which no log line, record or error file could write."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def refusal(name: str, result: os.stat_result) -> str | None:
    """Why an inbox entry is never opened or moved (None: it may be a job)."""
    if not_utf8(name):
        return ("the name is not valid UTF-8 (written in a legacy encoding?); rename it, and "
                "it is taken")
    if stat_module.S_ISDIR(result.st_mode):
        return ("the name contains control characters (such as a line break); rename it"
                if has_control_chars(name) else None)
    if stat_module.S_ISLNK(result.st_mode):
        return "a symbolic link: links are never followed; the link and its target are untouched"
    if not stat_module.S_ISREG(result.st_mode):
        return "not a regular file (a FIFO, socket or device): never opened"
    if result.st_nlink > 1:
        return "a hard link to another file: refused, so a drop cannot reach files elsewhere"
    if has_control_chars(name):
        return "the name contains control characters (such as a line break); rename it"
    return None


def open_file(directory: Path | int, name: str, *,
              own: bool = False) -> tuple[int, os.stat_result]:
    """Open `name` in `directory` (a path, or a descriptor) read-only, never through a link.

    Raises `Refused` for anything but a plain file with one link, `InUse` when another program
    holds a lease on it, FileNotFoundError when it is gone. `own`: a claimed job in processing/,
    whose second link may be the daemon's own move to done/ cut short by a crash; the caller
    ties it to the inode the claim judged (with one link) instead."""
    where, dir_fd = _at(directory, name)
    try:
        fd = os.open(where, FILE_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Refused(refusal(name, os.lstat(where, dir_fd=dir_fd))
                          or "a symbolic link: links are never followed") from exc
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise InUse(name) from exc
        if exc.errno in (errno.ENXIO, errno.ENODEV, errno.EOPNOTSUPP):
            raise Refused("not a regular file (a FIFO, socket or device): never opened") from exc
        raise
    st = os.fstat(fd)
    problem = (refusal(name, st) if not (own and stat_module.S_ISREG(st.st_mode)) else None) \
        or (None if stat_module.S_ISREG(st.st_mode) else "a folder where a plain file was expected")
    if problem:
        os.close(fd)
        raise Refused(problem)
    return fd, st


def open_dir(directory: Path | int, name: str) -> tuple[int, os.stat_result]:
    """Open the folder `name` in `directory` without following a link (`Refused` otherwise)."""
    where, dir_fd = _at(directory, name)
    try:
        fd = os.open(where, DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise Refused("not a folder (a link or a file where a folder was expected)") from exc
        raise
    return fd, os.fstat(fd)


def _at(directory: Path | int, name: str) -> tuple[str, int | None]:
    """`name` relative to a folder descriptor, or joined to a folder path."""
    if isinstance(directory, int):
        return name, directory
    return os.path.join(directory, name), None


def open_below(base: Path, relative: Iterable[str]) -> tuple[int, os.stat_result]:
    """A file under a folder of the daemon's own (`processing/`), opened one name at a time
    without following links, so a folder swapped for a link on the way cannot redirect it."""
    parts = list(relative)
    parent = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts[:-1]:
            child, _ = open_dir(parent, part)
            os.close(parent)
            parent = child
        return open_file(parent, parts[-1])
    finally:
        os.close(parent)


def read_fd(fd: int, st: os.stat_result, limit: int, what: str = "job file",
            key: str = "limits.max_job_bytes") -> bytes:
    """The content behind `fd`, its size checked on the descriptor before anything is read."""
    if st.st_size > limit:
        raise JobError(f"the {what} is {st.st_size} bytes; this folder takes files up to "
                       f"{limit} ({key})", kind=Kind.TOO_LARGE)
    chunks, total = [], 0
    while total <= limit:
        chunk = os.read(fd, min(1 << 20, limit + 1 - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    if total > limit:
        raise JobError(f"the {what} grew past {limit} bytes while being read ({key})",
                       kind=Kind.TOO_LARGE)
    return b"".join(chunks)


# -- job folders ------------------------------------------------------------------------------


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


def list_folder(folder: Path | int, limit: int) -> Listing:
    """A job folder's entries, listed through a descriptor: a path is opened without following
    a link (a folder swapped for a link cannot be listed), a descriptor is used as it is."""
    files: dict[str, os.stat_result] = {}
    refusal = arriving = None
    signature: list[tuple[Any, ...]] = []
    truncated = False
    try:
        fd = folder if isinstance(folder, int) else open_dir(folder.parent, folder.name)[0]
    except Refused as exc:
        return Listing({}, exc.reason, None, (), False)
    except OSError as exc:
        return Listing({}, f"cannot be read ({exc.strerror or exc})", None, (), False)
    try:
        with os.scandir(fd) as entries:
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
                problem = entry_refusal(entry.name, st)
                if problem and refusal is None:
                    refusal = problem
                elif any(fnmatch.fnmatchcase(entry.name, p) for p in TRANSFER_PATTERNS):
                    arriving = arriving or entry.name
                elif not problem:
                    files[entry.name] = st
    except OSError as exc:
        refusal = f"cannot be read ({exc.strerror or exc})"
    finally:
        if not isinstance(folder, int):
            os.close(fd)
    return Listing(files, refusal, arriving, tuple(sorted(signature)), truncated)


def entry_refusal(name: str, st: os.stat_result) -> str | None:
    shown = repr(name)
    if stat_module.S_ISLNK(st.st_mode):
        return f"{shown} in it is a symbolic link: links are never followed"
    if stat_module.S_ISDIR(st.st_mode):
        return f"{shown} in it is a folder: a job folder holds files only"
    if not stat_module.S_ISREG(st.st_mode):
        return f"{shown} in it is not a regular file (a FIFO, socket or device)"
    if st.st_nlink > 1:
        return f"{shown} in it is a hard link to another file"
    if has_control_chars(name) or not_utf8(name):
        return f"a name in it contains control characters or is not UTF-8 ({shown}); rename it"
    return None


# -- what the claim saw ----------------------------------------------------------------------


def file_print(st: os.stat_result) -> dict[str, Any]:
    """What identifies a file and its content's version: inode, size, mtime."""
    return {"dev": st.st_dev, "ino": st.st_ino, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def folder_print(st: os.stat_result, listing_signature: tuple[Any, ...]) -> dict[str, Any]:
    """A job folder's: its inode, and every entry's name, type, size, mtime and inode."""
    digest = hashlib.sha256(repr(listing_signature).encode()).hexdigest()[:32]
    newest = max((entry[3] for entry in listing_signature), default=st.st_mtime_ns)
    return {"dev": st.st_dev, "ino": st.st_ino, "listing": digest,
            "mtime_ns": max(newest, st.st_mtime_ns)}


def same_inode(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    return a is not None and b is not None and (a.get("dev"), a.get("ino")) == (b.get("dev"),
                                                                                b.get("ino"))


@dataclass(frozen=True)
class Content:
    """A job file as it was read: the bytes, their digest, and the fingerprint they came with."""

    data: bytes
    sha256: str
    seen: dict[str, Any]

    @property
    def size(self) -> int:
        return len(self.data)

    def record(self) -> dict[str, Any]:
        """What the sidecar says about the job file that ran."""
        return {"bytes": self.size, "sha256": self.sha256}


def read_content(fd: int, st: os.stat_result, limit: int) -> Content:
    """Read a job file from its descriptor; `seen` says which version of the file it was (the
    fingerprint taken after reading, so a write during the read shows as a change later)."""
    data = read_fd(fd, st, limit)
    after = os.fstat(fd)
    return Content(data, hashlib.sha256(data).hexdigest(), file_print(after))
