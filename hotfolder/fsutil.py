"""File operations that never leave half a file and never overwrite one.

Sync clients and NAS users see a file the moment its name appears, so every file is written
under a hidden temporary name and linked into place; links fail instead of overwriting, which
is how a name clash becomes a suffix instead of a lost file. (Moves are moves.py's.)
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import socket
import stat
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

_HOST = hashlib.sha1((os.environ.get("HOTFOLDER_NODE") or socket.gethostname()).encode(),
                     usedforsecurity=False).hexdigest()[:8]
_TEMP = re.compile(r"^\..*\.([0-9a-f]{8})-(\d+)-[0-9a-f]{6}\.tmp$")


NAME_MAX = 255  # bytes in one file name, on every file system hotfolder meets


def fit(stem: str, suffix: str, limit: int = NAME_MAX) -> str:
    """`stem + suffix`, the stem cut (never inside a character) so the name fits in `limit`
    bytes: a name derived from a long job name must not fail with ENAMETOOLONG."""
    room = limit - len(os.fsencode(suffix))
    data = os.fsencode(stem)
    if len(data) <= room:
        return stem + suffix
    return data[:max(room, 0)].decode("utf-8", "ignore") + suffix


def temp_name(name: str) -> str:
    """A hidden name that says who writes it, so a restart can clear a dead writer's leftovers."""
    return f".{fit(name, '', 100)}.{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:6]}.tmp"


def temp_path(directory: Path, name: str) -> Path:
    return directory / temp_name(name)


def dead_temp(name: str, *, ours_alive: bool = False) -> bool:
    """A temp name of a writer on this host that no longer runs, or of an earlier process with
    our pid (pids repeat across restarts, in a container always) unless `ours_alive`: once
    this process writes, its own temp files are live."""
    match = _TEMP.match(name)
    if not match or match.group(1) != _HOST:
        return False
    pid = int(match.group(2))
    if pid == os.getpid():
        return not ours_alive
    return not pid_alive(pid)


def clear_dead_temps(directory: Path, *, ours_alive: bool = False) -> int:
    """Remove temp files of writers on this host that no longer run (killed mid-write).
    `ours_alive`: this process is already writing (a reload), so its own temps stay."""
    removed = 0
    try:
        entries = list(directory.iterdir())
    except OSError:
        return 0
    for entry in entries:
        if not dead_temp(entry.name, ours_alive=ours_alive):
            continue
        if entry.is_dir() and not entry.is_symlink():  # a job folder's copy, or its leftover
            shutil.rmtree(entry, ignore_errors=True)
            removed += 1
            continue
        with contextlib.suppress(FileNotFoundError):
            entry.unlink()
            removed += 1
    return removed


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


NOFOLLOW_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def apply_mode(path: Path, mode: int | None, *, touch: bool = False) -> None:
    """Give a delivered or moved file the folder's permissions (e.g. group-writable on a NAS),
    and with `touch` the current time as its mtime (the finish time, for pruning).

    Both act on a descriptor opened without following links, and only on a plain file with one
    name (or a job folder and the plain files in it, which get search permission where reading
    is allowed): a link, or a hard link to a file elsewhere, is never changed through."""
    if mode is None and not touch:
        return
    try:
        fd = os.open(path, NOFOLLOW_READ)
    except OSError:
        return  # a link (ELOOP), or gone: nothing of ours to change
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            if touch:
                os.utime(fd)
            if mode is not None:
                os.fchmod(fd, mode | (mode & 0o444) >> 2)
                for entry in os.listdir(fd):
                    chmod_at(fd, entry, mode)
        elif stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
            if touch:
                os.utime(fd)
            if mode is not None:
                os.fchmod(fd, mode)
    finally:
        os.close(fd)


def chmod_at(dir_fd: int, name: str, mode: int) -> None:
    """`mode` on the plain file `name` in the folder `dir_fd`: on its descriptor, never
    through a link, never on a file with other names elsewhere."""
    try:
        fd = os.open(name, NOFOLLOW_READ, dir_fd=dir_fd)
    except OSError:
        return
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
            os.fchmod(fd, mode)
    finally:
        os.close(fd)


def candidates(name: str) -> Iterator[str]:
    """`fox.txt`, `fox-2.txt`, `fox-3.txt`, … — suffix before the extension(s) we know."""
    stem, ext = split_name(name)
    yield fit(stem, ext) if len(os.fsencode(name)) > NAME_MAX else name
    n = 2
    while True:
        yield fit(stem, f"-{n}{ext}")
        n += 1


def split_name(name: str) -> tuple[str, str]:
    for double in (".error.json", ".state.json"):
        if name.endswith(double):
            return name[: -len(double)], double
    stem, dot, ext = name.rpartition(".")
    return (stem, dot + ext) if stem else (name, "")


def place(tmp: Path, target: Path, *, before: Callable[[str], None] | None = None) -> Path:
    """Give `tmp` the first free name among target, target-2, …; return the name used.
    `before(name)` is told each name just before `tmp` is linked to it."""
    for name in candidates(target.name):
        final = target.with_name(name)
        if before is not None:
            if final.exists() or final.is_symlink():
                continue
            before(name)
        try:
            os.link(tmp, final)
        except FileExistsError:
            continue
        except OSError as exc:
            # some SMB/FUSE mounts refuse hard links: check-then-rename is the best they allow
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK,
                                 errno.EACCES):
                raise
            if final.exists():
                continue
            os.replace(tmp, final)
            return final
        os.unlink(tmp)
        return final
    raise AssertionError("unreachable")


@contextlib.contextmanager
def atomic_writer(target: Path, mode: str = "wb") -> Iterator[tuple[IO[Any], list[Path]]]:
    """Write to a hidden temp file; on success it is placed at a free name (put in the list)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(target.parent, target.name)
    placed: list[Path] = []
    try:
        with open(tmp, mode) as fh:
            yield fh, placed
            fh.flush()
            os.fsync(fh.fileno())
        placed.append(place(tmp, target))
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def json_line(data: Any) -> str:
    """`data` as one compact line of JSON (json's C encoder), newline included."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=str) + "\n"


def write_json(target: Path, data: Any, *, replace: bool = False, compact: bool = False,
               durable: bool = True) -> Path:
    """Write JSON atomically; `replace` overwrites (state records), else a free name is used.

    `compact` is for records only the daemon reads, saved several times a job: without an
    indent, json uses its C encoder, about ten times faster than the indenting one.
    `durable: False` skips the fsync, for a record a process crash must not lose but a power
    cut may (the page cache outlives the process).
    """
    if compact:
        text = json_line(data)
    else:
        text = json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n"
    if replace:
        # plain descriptors: no buffered text file around a single write, and no unlink of a
        # temp name the replace already took (a record is written several times a job)
        tmp = temp_path(target.parent, target.name)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        try:
            try:
                data_bytes = text.encode("utf-8")
                while data_bytes:
                    data_bytes = data_bytes[os.write(fd, data_bytes):]
                if durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return target
    with atomic_writer(target, "w") as (fh, placed):
        fh.write(text)
    return placed[0]


def free_stem(directory: Path, stem: str, suffixes: list[str],
              taken: set[str] | frozenset[str] = frozenset(),
              exists: Callable[[str], bool] | None = None) -> str:
    """The first of stem, stem-2, … not in `taken` and with no `stem + suffix` in `directory`
    (`exists` answers for a name there, e.g. relative to an open folder)."""
    exists = exists or (lambda name: os.path.lexists(directory / name))
    for n in range(1, 1_000_000):
        candidate = stem if n == 1 else f"{stem}-{n}"
        if candidate in taken:
            continue
        if not any(exists(f"{candidate}{s}") for s in suffixes):
            return candidate
    raise AssertionError("unreachable")
