"""Is a dropped file really an image, and what is it: magic bytes first, then Pillow reads the
header (never the whole picture, so a decompression bomb costs nothing). Opened below the
job's folder without following links; a mask is prepared the way ComfyUI reads it."""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import structlog

from hotfolder.errors import JobError, Kind
from hotfolder.jobfile import InUse, Refused, open_below, open_file

log = structlog.get_logger()

HEAD_BYTES = 64


def sniff(head: bytes) -> str | None:
    """The image format the first bytes announce (PNG, JPEG, WebP, GIF, BMP, TIFF), or None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:2] == b"BM" and len(head) >= 26:
        return "BMP"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    return None


_OTHER_MAGIC = (
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive (or a Word/Excel/zipped file)"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"Rar!", "a RAR archive"),
    (b"7z\xbc\xaf", "a 7-Zip archive"),
    (b"8BPS", "a Photoshop document (save it as PNG or JPEG)"),
    (b"\x00\x00\x01\x00", "a Windows icon"),
    (b"OggS", "Ogg audio or video"),
    (b"ID3", "an MP3 file"),
    (b"\x7fELF", "a program (ELF)"),
    (b"MZ", "a Windows program"),
)


def describe(head: bytes) -> str:
    """What the first bytes of a file that is not an image look like, in plain words."""
    if not head:
        return "an empty file"
    for magic, what in _OTHER_MAGIC:
        if head.startswith(magic):
            return what
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"heic", b"heix", b"mif1", b"msf1", b"hevc"):
            return "a HEIC/HEIF photo (not supported: save it as JPEG or PNG)"
        if brand in (b"avif", b"avis"):
            return "an AVIF image (not supported: save it as PNG, JPEG or WebP)"
        return "an MP4/QuickTime video"
    if head[:4] == b"RIFF":
        return "a RIFF file (WAV audio or AVI video)"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    if text and all(ch.isprintable() or ch in "\r\n\t" for ch in text[:-1]):
        start = text.lstrip().lower()
        if start.startswith(("<svg", "<?xml")):
            return "an SVG or XML file (a drawing, not pixels: export it as PNG)"
        if start.startswith(("<!doctype html", "<html")):
            return "a web page (HTML)"
        if start.startswith(("{", "[")):
            return "JSON text"
        return f"text ({text.strip()[:30]!r})"
    return "unrecognised data (it starts with " + " ".join(f"{b:02x}" for b in head[:8]) + ")"


@dataclass(frozen=True)
class ImageInfo:
    format: str
    width: int
    height: int
    mode: str
    bytes: int


def _open_plain(path: Path, name: str, trusted: Path | None = None) -> BinaryIO:
    """Open a file the job brings: never through a link, never a FIFO, device or hard link.

    Below `trusted` (processing/), every folder on the way is opened without following a link
    too, so a job folder swapped for a link cannot redirect the read."""
    try:
        if trusted is not None and path.is_relative_to(trusted):
            fd, _ = open_below(trusted, path.relative_to(trusted).parts)
        else:
            fd, _ = open_file(path.parent, path.name)
    except FileNotFoundError as exc:
        raise JobError(f"the image {name} is missing", kind=Kind.MISSING_IMAGE) from exc
    except Refused as exc:
        raise JobError(f"{name} is not a plain file (a link, FIFO or device): refused "
                       f"({exc.reason})", kind=Kind.INVALID_IMAGE) from exc
    except (InUse, OSError) as exc:
        raise JobError(f"cannot read the image {name}: {getattr(exc, 'strerror', None) or exc} "
                       "(a symbolic link is never followed)", kind=Kind.INVALID_IMAGE) from exc
    return os.fdopen(fd, "rb")


def read_plain(path: Path, name: str, trusted: Path | None = None) -> bytes:
    with _open_plain(path, name, trusted) as fh:
        return fh.read()


def check_image(path: Path, *, name: str, max_bytes: int,
                trusted: Path | None = None) -> ImageInfo:
    """An image file the job brings, checked before anything is uploaded (a `JobError` names
    the file and says what it looks like instead)."""
    with _open_plain(path, name, trusted) as fh:
        st = os.fstat(fh.fileno())
        _check_size(st.st_size, name, max_bytes)
        head = fh.read(HEAD_BYTES)
        kind = _sniffed(head, name)
        fh.seek(0)
        return _verify(fh, name, kind, st.st_size)


def read_image(path: Path, name: str, *, max_bytes: int,
               trusted: Path | None = None) -> tuple[bytes, os.stat_result]:
    """The file's bytes, read through one descriptor (never through a link), within
    `max_bytes`, with the fstat of that descriptor."""
    with _open_plain(path, name, trusted) as fh:
        st = os.fstat(fh.fileno())
        _check_size(st.st_size, name, max_bytes)
        return fh.read(), st


def verify_bytes(data: bytes, name: str) -> ImageInfo:
    """`check_image` for bytes already read."""
    return _verify(io.BytesIO(data), name, _sniffed(data[:HEAD_BYTES], name), len(data))


def _check_size(size: int, name: str, max_bytes: int) -> None:
    if size > max_bytes:
        raise JobError(f"the image {name} is {size} bytes; this folder takes images "
                       f"up to {max_bytes} bytes (limits.max_image_bytes)", kind=Kind.TOO_LARGE)


def _sniffed(head: bytes, name: str) -> str:
    kind = sniff(head)
    if kind is None:
        raise JobError(f"{name} is not an image: it looks like {describe(head)}. Images "
                       "may be PNG, JPEG, WebP, GIF, BMP or TIFF", kind=Kind.INVALID_IMAGE,
                       details={"file": name, "first_bytes": head[:16].hex()})
    return kind


def _verify(fh: Any, name: str, kind: str, size: int) -> ImageInfo:
    """Pillow reads the header and checks what it can without decoding every pixel."""
    from PIL import Image, UnidentifiedImageError

    Image.init()
    if kind not in Image.OPEN:  # this Pillow cannot read it; ComfyUI's may: trust the bytes
        return ImageInfo(kind, 0, 0, "", size)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(fh, formats=[kind]) as image:
                width, height = image.size
                mode = image.mode
                image.verify()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise JobError(f"{name} has too many pixels to be a sensible input ({exc})",
                       kind=Kind.INVALID_IMAGE) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError,
            IndexError) as exc:
        raise JobError(f"{name} starts like a {kind} image but cannot be read ({exc}); is it "
                       "complete?", kind=Kind.INVALID_IMAGE, details={"file": name}) from exc
    return ImageInfo(kind, width, height, mode, size)


# -- which node takes which file ----------------------------------------------------------------


def mask_bytes(data: bytes, name: str, *, alpha: bool) -> tuple[bytes, tuple[int, int]]:
    """The mask as sent: as it is for a node reading a colour channel; for one reading alpha
    (LoadImageMask's default, and what /upload/mask keeps), a PNG whose alpha is the mask.

    A mask with real transparency is taken as the editor makes them (transparent = change); a
    black-and-white one (white = change), the usual kind, gets alpha = 255 - brightness, so
    LoadImageMask's `1 - alpha` gives back white = 1.
    """
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        size = image.size
        if not alpha:
            return data, size
        rgba = image.convert("RGBA")
    if rgba.getchannel("A").getextrema() != (255, 255):
        mask = rgba.getchannel("A")
    else:
        mask = rgba.convert("L").point(lambda v: 255 - v)
    out = Image.new("LA", size)
    out.putalpha(mask)
    buffer = io.BytesIO()
    out.save(buffer, format="PNG")
    log.debug("job.mask_prepared", file=name, size=size)
    return buffer.getvalue(), size
