"""File operations that never leave half a file and never overwrite one.

Sync clients and NAS users see a file the moment its name appears, so every file is written
under a hidden temporary name and linked into place; links fail instead of overwriting, which
is how a name clash becomes a suffix instead of a lost file. Moves fall back to copy + fsync
when the destination is on another file system (EXDEV).
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
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

_HOST = hashlib.sha1(socket.gethostname().encode(), usedforsecurity=False).hexdigest()[:8]
_TEMP = re.compile(r"^\..*\.([0-9a-f]{8})-(\d+)-[0-9a-f]{6}\.tmp$")


def temp_path(directory: Path, name: str) -> Path:
    """A hidden name that says who writes it, so a restart can clear a dead writer's leftovers."""
    return directory / f".{name[:100]}.{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:6]}.tmp"


def clear_dead_temps(directory: Path) -> int:
    """Remove temp files of writers on this host that no longer run (killed mid-write)."""
    removed = 0
    try:
        entries = list(directory.iterdir())
    except OSError:
        return 0
    for entry in entries:
        match = _TEMP.match(entry.name)
        if not match or match.group(1) != _HOST:
            continue
        pid = int(match.group(2))
        if pid != os.getpid() and pid_alive(pid):
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


def apply_mode(path: Path, mode: int | None) -> None:
    """Give a delivered or moved file the folder's permissions (e.g. group-writable on a NAS).

    A job folder gets them too (plus search permission where reading is allowed), and so do
    the plain files in it; links and files with other names elsewhere are never changed."""
    if mode is None:
        return
    if not path.is_dir() or path.is_symlink():
        os.chmod(path, mode)
        return
    os.chmod(path, mode | (mode & 0o444) >> 2)
    for entry in os.scandir(path):
        info = entry.stat(follow_symlinks=False)
        if stat.S_ISREG(info.st_mode) and info.st_nlink == 1:
            os.chmod(entry.path, mode)


def candidates(name: str) -> Iterator[str]:
    """`fox.txt`, `fox-2.txt`, `fox-3.txt`, … — suffix before the extension(s) we know."""
    stem, ext = split_name(name)
    yield name
    n = 2
    while True:
        yield f"{stem}-{n}{ext}"
        n += 1


def split_name(name: str) -> tuple[str, str]:
    for double in (".error.json", ".state.json"):
        if name.endswith(double):
            return name[: -len(double)], double
    stem, dot, ext = name.rpartition(".")
    return (stem, dot + ext) if stem else (name, "")


def place(tmp: Path, target: Path) -> Path:
    """Give `tmp` the first free name among target, target-2, …; return the name used."""
    for name in candidates(target.name):
        final = target.with_name(name)
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


def write_json(target: Path, data: Any, *, replace: bool = False, compact: bool = False) -> Path:
    """Write JSON atomically; `replace` overwrites (state records), else a free name is used.

    `compact` is for records only the daemon reads, saved several times a job: without an
    indent, json uses its C encoder, about ten times faster than the indenting one.
    """
    if compact:
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=str) + "\n"
    else:
        text = json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n"
    if replace:
        tmp = temp_path(target.parent, target.name)
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return target
    with atomic_writer(target, "w") as (fh, placed):
        fh.write(text)
    return placed[0]


def move(src: Path, dest_dir: Path, name: str | None = None) -> Path:
    """Move `src` into `dest_dir` under a free name, across file systems if need be.

    A name already holding `src` itself (a move cut short between link and unlink) finishes
    that move instead of making a second copy.
    """
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / (name or src.name)
    if src.is_dir() and not src.is_symlink():
        return _move_dir(src, target)
    try:
        for candidate in candidates(target.name):
            final = dest_dir / candidate
            try:
                os.link(src, final)
            except FileExistsError:
                if _same_file(src, final):
                    os.unlink(src)
                    return final
                continue
            os.unlink(src)
            return final
    except OSError as exc:
        if exc.errno == errno.EXDEV:
            return _copy_across(src, target)
        if exc.errno in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK,
                         errno.EACCES):
            return _rename_free(src, target)
        raise
    raise AssertionError("unreachable")


def _move_dir(src: Path, target: Path) -> Path:
    """A job folder moves by one rename; across file systems it is copied under a hidden name,
    renamed into place, and the original is renamed aside before it is removed, so processing/
    never holds half a folder."""
    for candidate in candidates(target.name):
        final = target.with_name(candidate)
        if final.exists() or final.is_symlink():
            continue
        try:
            os.rename(src, final)
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                continue
            if exc.errno != errno.EXDEV:
                raise
            return _copy_dir_across(src, target)
        return final
    raise AssertionError("unreachable")


def _copy_dir_across(src: Path, target: Path) -> Path:
    tmp = temp_path(target.parent, target.name)
    try:
        _copy_tree(src, tmp)
        for candidate in candidates(target.name):
            final = target.with_name(candidate)
            if final.exists() or final.is_symlink():
                continue
            try:
                os.rename(tmp, final)
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    continue
                raise
            break
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    trash = temp_path(src.parent, src.name)
    os.rename(src, trash)
    shutil.rmtree(trash, ignore_errors=True)
    return final


def _copy_tree(src: Path, dest: Path) -> None:
    """Files copied and synced, links copied as links (never followed), nothing else."""
    dest.mkdir()
    for entry in os.scandir(src):
        info = entry.stat(follow_symlinks=False)
        out = dest / entry.name
        if stat.S_ISLNK(info.st_mode):
            os.symlink(os.readlink(entry.path), out)
        elif stat.S_ISDIR(info.st_mode):
            _copy_tree(Path(entry.path), out)
        elif stat.S_ISREG(info.st_mode):
            with open(entry.path, "rb") as reader, open(out, "xb") as writer:
                shutil.copyfileobj(reader, writer, 1024 * 1024)
                writer.flush()
                os.fsync(writer.fileno())
            shutil.copystat(entry.path, out)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _rename_free(src: Path, target: Path) -> Path:
    for candidate in candidates(target.name):
        final = target.with_name(candidate)
        if not final.exists():
            os.rename(src, final)
            return final
    raise AssertionError("unreachable")


def _copy_across(src: Path, target: Path) -> Path:
    tmp = temp_path(target.parent, target.name)
    try:
        with open(src, "rb") as reader, open(tmp, "wb") as writer:
            shutil.copyfileobj(reader, writer, 1024 * 1024)
            writer.flush()
            os.fsync(writer.fileno())
        shutil.copystat(src, tmp)
        final = place(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    os.unlink(src)
    return final


def free_stem(directory: Path, stem: str, suffixes: list[str],
              taken: set[str] | frozenset[str] = frozenset()) -> str:
    """The first of stem, stem-2, … not in `taken` and with no `stem + suffix` in `directory`."""
    for n in range(1, 1_000_000):
        candidate = stem if n == 1 else f"{stem}-{n}"
        if candidate in taken:
            continue
        if not any((directory / f"{candidate}{s}").exists() for s in suffixes):
            return candidate
    raise AssertionError("unreachable")
