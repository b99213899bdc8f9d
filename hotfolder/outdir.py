"""Writing into one output folder held open, so a folder swapped for a link cannot redirect it.

A batch's outputs go to `outbox/<job>/`, a folder anyone who can write the outbox could replace
with a symbolic link to somewhere else while the batch runs. So the folder is opened once
(without following a link, for the folders hotfolder makes) and every file is created, linked
into place, checked or removed relative to that descriptor (`dir_fd`): whatever happens to the
name afterwards, the writes land in the folder that was opened, or nowhere. Files are written
under a hidden temporary name and linked to their final one, as everywhere (fsutil.py).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from hotfolder.fsutil import candidates, chmod_at, dead_temp, temp_name

CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class OutDir:
    """An open output folder. `follow` is for folders from the config (the outbox itself may
    be a link an administrator made); folders hotfolder creates are opened without following."""

    def __init__(self, path: Path, *, follow: bool = False) -> None:
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
        self.path = path
        self.fd = os.open(path, flags)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> OutDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __truediv__(self, name: str) -> Path:
        """The path a file here has (for messages and records; never opened by it)."""
        return self.path / name

    def exists(self, name: str) -> bool:
        try:
            os.lstat(name, dir_fd=self.fd)
        except FileNotFoundError:
            return False
        return True

    def plain_size(self, name: str) -> int | None:
        """The size of a plain file of that name (not a link, not a hard link), else None."""
        try:
            st = os.lstat(name, dir_fd=self.fd)
        except FileNotFoundError:
            return None
        return st.st_size if stat.S_ISREG(st.st_mode) and st.st_nlink == 1 else None

    @contextlib.contextmanager
    def writer(self, name: str) -> Iterator[tuple[IO[bytes], list[str]]]:
        """Write to a hidden temp file; on success it is linked at the first free name among
        name, name-2, … (appended to the list)."""
        tmp = temp_name(name)
        placed: list[str] = []
        fd = os.open(tmp, CREATE, 0o666, dir_fd=self.fd)
        try:
            with os.fdopen(fd, "wb") as fh:
                yield fh, placed
                fh.flush()
                os.fsync(fh.fileno())
            placed.append(self._place(tmp, name))
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=self.fd)

    @contextlib.contextmanager
    def scratch(self, name: str) -> Iterator[IO[bytes]]:
        """A hidden temp file to write and read back (a download still to be converted), never
        given a final name; removed on exit, or by `clear_dead_temps` after a crash."""
        tmp = temp_name(name)
        fd = os.open(tmp, (CREATE & ~os.O_WRONLY) | os.O_RDWR, 0o600, dir_fd=self.fd)
        try:
            with os.fdopen(fd, "w+b") as fh:
                yield fh
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=self.fd)

    def write_json(self, name: str, data: Any, *, replace: bool = False) -> str:
        """JSON written atomically; `replace` overwrites (a manifest), else a free name."""
        data_bytes = (json.dumps(data, indent=2, ensure_ascii=False, default=str)
                      + "\n").encode("utf-8")
        if not replace:
            with self.writer(name) as (fh, placed):
                fh.write(data_bytes)
            return placed[0]
        tmp = temp_name(name)
        fd = os.open(tmp, CREATE, 0o666, dir_fd=self.fd)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data_bytes)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=self.fd)
        return name

    def _place(self, tmp: str, name: str) -> str:
        for final in candidates(name):
            try:
                os.link(tmp, final, src_dir_fd=self.fd, dst_dir_fd=self.fd,
                        follow_symlinks=False)
            except FileExistsError:
                continue
            except OSError as exc:  # some SMB/FUSE mounts refuse hard links
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP,
                                     errno.EMLINK, errno.EACCES):
                    raise
                if self.exists(final):
                    continue
                os.replace(tmp, final, src_dir_fd=self.fd, dst_dir_fd=self.fd)
                return final
            os.unlink(tmp, dir_fd=self.fd)
            return final
        raise AssertionError("unreachable")

    def chmod(self, name: str, mode: int | None) -> None:
        """Give a file written here the folder's permissions (never through a link)."""
        if mode is not None:
            chmod_at(self.fd, name, mode)

    def unlink(self, name: str) -> bool:
        try:
            os.unlink(name, dir_fd=self.fd)
        except FileNotFoundError:
            return False
        return True

    def clear_dead_temps(self) -> int:
        """Temp files of writers on this host that no longer run (downloads cut by a kill)."""
        removed = 0
        for name in os.listdir(self.fd):
            if dead_temp(name) and self.unlink(name):
                removed += 1
        return removed
