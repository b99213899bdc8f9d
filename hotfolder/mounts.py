"""Which file system a folder lives on, to choose between inotify and polling.

inotify only sees writes made by this kernel: files arriving over NFS/SMB from another machine,
or through a FUSE sync client, can go unnoticed, so such folders are polled.
"""

from __future__ import annotations

import os
from pathlib import Path

MOUNTINFO = "/proc/self/mountinfo"
REMOTE_TYPES = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "davfs", "afs", "ceph", "glusterfs",
    "lustre", "gpfs", "beegfs", "ncpfs", "coda", "virtiofs", "vboxsf", "vmhgfs", "sshfs",
})


def needs_polling(fs_type: str | None) -> bool:
    if fs_type is None:
        return False
    return fs_type in REMOTE_TYPES or fs_type == "fuse" or fs_type.startswith("fuse.")


def fs_type(path: Path, mountinfo: str = MOUNTINFO) -> str | None:
    """The type of the file system holding `path` (longest matching mount point), or None."""
    try:
        with open(mountinfo, encoding="utf-8", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    target = os.path.realpath(path)
    best: tuple[int, str] | None = None
    for line in lines:
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if not sep or len(fields) < 5 or not right:
            continue
        mount_point = _unescape(fields[4])
        if _within(target, mount_point) and (best is None or len(mount_point) > best[0]):
            best = (len(mount_point), right.split()[0])
    return best[1] if best else None


def _within(path: str, mount_point: str) -> bool:
    return mount_point == "/" or path == mount_point or path.startswith(mount_point + "/")


def _unescape(field: str) -> str:
    """mountinfo writes spaces, tabs, newlines and backslashes as octal escapes."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field
