"""Whether anyone still has a file open for writing: asked of the kernel, not guessed from a clock.

A read lease (`fcntl` `F_SETLEASE` `F_RDLCK`) is granted only while nobody has the file open for
writing, on any descriptor of any process on this machine. Trying to take one and letting go at
once therefore answers "is its writer done?" exactly, in three system calls, with no settle
window. The kernel grants it to the file's owner, or to a process with `CAP_LEASE` (the service
unit gives the daemon that one capability); where it refuses (another user's file without the
capability, a file system without leases, a share written from another host) the answer is
"cannot tell", and the caller falls back to the settle window.

While the lease is held, a writer's `open()` waits for it to be let go, and the kernel tells the
lease holder with SIGIO, whose default action would end the process: the daemon ignores SIGIO
(`ignore_lease_breaks`, from the main thread at start), leases are never tried unless it does,
and each is let go in the very next system call.

Who the writer is, for `hotfolder status`, comes from `/proc/*/fd` as far as this user may look.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

F_SETLEASE = getattr(fcntl, "F_SETLEASE", 1024)
_SIGIO = getattr(signal, "SIGIO", None)
_NO_LEASE = {
    errno.EACCES: "the kernel lets only a file's owner or a process with CAP_LEASE ask",
    errno.EPERM: "the kernel lets only a file's owner or a process with CAP_LEASE ask",
    errno.EINVAL: "this file system cannot say (no leases)",
    errno.ENOLCK: "this file system cannot say (no leases)",
}


@dataclass(frozen=True)
class WriterCheck:
    """The kernel's answer: `writing` True or False, or None with the reason it cannot tell."""

    writing: bool | None
    reason: str = ""


def ignore_lease_breaks() -> bool:
    """Ignore SIGIO (main thread only), so a writer opening a file during a check harms no one."""
    if _SIGIO is None or threading.current_thread() is not threading.main_thread():
        return False  # the demo's daemon runs in a thread: files are then taken by the clock
    signal.signal(_SIGIO, signal.SIG_IGN)
    return True


def _lease_breaks_ignored() -> bool:
    return _SIGIO is not None and signal.getsignal(_SIGIO) == signal.SIG_IGN


def open_for_writing(fd: int) -> WriterCheck:
    """Ask whether anyone has the file behind `fd` (opened read-only) open for writing."""
    if not _lease_breaks_ignored():
        return WriterCheck(None, "SIGIO is not ignored in this process, so no lease is tried")
    try:
        fcntl.fcntl(fd, F_SETLEASE, fcntl.F_RDLCK)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
            return WriterCheck(True)
        return WriterCheck(None, _NO_LEASE.get(exc.errno or 0, f"the kernel said: {exc}"))
    with contextlib.suppress(OSError):  # closing the descriptor lets go of it anyway
        fcntl.fcntl(fd, F_SETLEASE, fcntl.F_UNLCK)
    return WriterCheck(False)


def writers_of(path: Path, limit: int = 3, proc: Path = Path("/proc")) -> list[dict[str, Any]]:
    """Processes holding `path` open for writing (pid and command name), as far as /proc shows.

    Costs a look at every open descriptor this user may see: for a file known to be held open,
    now and then, never per tick.
    """
    try:
        target = os.stat(path, follow_symlinks=False)
    except OSError:
        return []
    wanted, key = str(path), (target.st_dev, target.st_ino)
    found: list[dict[str, Any]] = []
    try:
        pids = [p for p in os.listdir(proc) if p.isdigit()]
    except OSError:
        return []
    for pid in pids:
        fd_dir = proc / pid / "fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue  # gone, or another user's process
        for fd in fds:
            try:
                if os.readlink(fd_dir / fd) != wanted:
                    continue
                held = os.stat(fd_dir / fd)
                flags = _fd_flags(proc / pid / "fdinfo" / fd)
            except OSError:
                continue
            if (held.st_dev, held.st_ino) == key and flags & os.O_ACCMODE in (os.O_WRONLY,
                                                                               os.O_RDWR):
                found.append({"pid": int(pid), "process": _comm(proc / pid)})
                break
        if len(found) >= limit:
            break
    return found


def _fd_flags(fdinfo: Path) -> int:
    for line in fdinfo.read_text().splitlines():
        if line.startswith("flags:"):
            return int(line.split()[1], 8)
    return 0


def _comm(pid_dir: Path) -> str:
    try:
        return (pid_dir / "comm").read_text().strip()
    except OSError:
        return "?"
