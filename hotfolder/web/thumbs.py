"""Scaled-down previews of outbox images: the only files the status page ever reads from disk.

A request names a hot folder (looked up by name in the config, never used as a path) and one
file name. The name must be a single visible path component; the file is opened relative to the
outbox directory with O_NOFOLLOW, so `..`, encoded slashes and symlinks (inside or leading out)
never reach anything but a regular file directly in that outbox. Only image types are decoded,
and only a thumbnail (at most THUMB_SIDE pixels a side) is ever sent: the full file never is.

Pillow does the decoding and scaling (PNG, JPEG, WebP, GIF, BMP; 16-bit PNGs too), imported
only when the first thumbnail is asked for. Thumbnails are kept in memory (a small LRU keyed by
inode, size and mtime), never written next to the outputs, where sync clients and NAS users
would see them. At most two are made at once, so a page full of new images cannot take the CPU
from the daemon.
"""

from __future__ import annotations

import io
import os
import stat
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger()

THUMB_SIDE = 256
CACHE_ENTRIES = 512
MAX_SOURCE_BYTES = 512 * 1024**2
MAX_PIXELS = 64 * 1024**2  # 8192 x 8192; beyond this Pillow would warn of a decompression bomb
FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".gif": "GIF",
           ".bmp": "BMP"}


def safe_name(name: str) -> bool:
    """One visible path component: no separators, no `.`/`..`, no NUL or control characters."""
    return (bool(name) and not name.startswith(".") and "/" not in name and "\\" not in name
            and not any(ord(c) < 32 or ord(c) == 127 for c in name) and len(name) <= 255)


def open_in(directory: Path, name: str) -> tuple[int, os.stat_result] | None:
    """Open a regular file directly inside `directory`, never through a symlink.

    Returns the open descriptor and its stat, or None (the caller answers 404 for all cases,
    so a probe learns nothing about what exists)."""
    if not safe_name(name):
        return None
    try:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return None
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=dir_fd)
    except OSError:  # ELOOP for a symlink, ENOENT, EACCES, …
        return None
    finally:
        os.close(dir_fd)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:  # a FIFO, device, directory,
        # or a hard link: its content may be a file from anywhere else
        os.close(fd)
        return None
    return fd, info


class Thumbnails:
    def __init__(self, side: int = THUMB_SIDE, entries: int = CACHE_ENTRIES) -> None:
        self.side = side
        self.entries = entries
        self._cache: OrderedDict[tuple[Any, ...], tuple[bytes, str]] = OrderedDict()
        self._lock = threading.Lock()
        self._busy = threading.BoundedSemaphore(2)

    def get(self, outbox: Path, name: str) -> tuple[bytes, str] | None:
        """(image bytes, content type) of the thumbnail of outbox/name, or None."""
        fmt = FORMATS.get(os.path.splitext(name)[1].lower())
        if fmt is None:
            return None
        opened = open_in(outbox, name)
        if opened is None:
            return None
        fd, info = opened
        key = (str(outbox), name, info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
        with os.fdopen(fd, "rb") as fh:
            with self._lock:
                if key in self._cache:
                    self._cache.move_to_end(key)
                    return self._cache[key]
            if info.st_size > MAX_SOURCE_BYTES:
                return None
            with self._busy:
                made = self._make(fh, fmt, name)
        if made is not None:
            with self._lock:
                self._cache[key] = made
                while len(self._cache) > self.entries:
                    self._cache.popitem(last=False)
        return made

    def _make(self, fh: Any, fmt: str, name: str) -> tuple[bytes, str] | None:
        from PIL import Image  # Pillow: only a daemon with the page on loads it

        try:
            with Image.open(fh, formats=[fmt]) as im:
                if im.width * im.height > MAX_PIXELS:
                    log.info("web.thumbnail_skipped", file=name, reason="image too large",
                             width=im.width, height=im.height)
                    return None
                im.draft("RGB", (self.side, self.side))  # JPEG: decode at a reduced size
                im.thumbnail((self.side, self.side))
                return encode(im)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            log.info("web.thumbnail_failed", file=name, error=str(exc) or type(exc).__name__)
            return None


def encode(im: Any) -> tuple[bytes, str]:
    """JPEG for opaque images (small), PNG where there is transparency."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        im = im.point(lambda v: v / 256).convert("L")  # 16-bit grey: keep the tones
    transparent = im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info
    out = io.BytesIO()
    if transparent:
        im.convert("RGBA").save(out, "PNG", optimize=True)
        return out.getvalue(), "image/png"
    im.convert("RGB").save(out, "JPEG", quality=82)
    return out.getvalue(), "image/jpeg"
