"""A folder's output policy applied to one downloaded file, before it gets its outbox name.

ComfyUI's SaveImage embeds the whole API prompt and the editor's workflow in every PNG (text
chunks `prompt` and `workflow`): a studio handing files to a client may have to leave that
out, and print and web shops want JPEG or WebP. The default policy never opens a file, so
deliveries stay byte for byte what ComfyUI wrote.

`strip` removes a PNG's text chunks without decoding it: the pixels, the colour profile and
the frames of an animated PNG stay exactly as they were. Re-encoding to JPEG or WebP decodes
the picture, so the server's answer is bounded first (pixel count, formats Pillow may try);
the new file carries the pixels and the colour profile, never ComfyUI's text, EXIF or XMP.
Animated images are handed over as they are (a JPEG has one frame), and so is everything that
is not a still picture (video, audio, text).
"""

from __future__ import annotations

import shutil
import struct
import warnings
from dataclasses import dataclass, field
from typing import IO, Any

from PIL import Image, UnidentifiedImageError

from hotfolder.config.model import OutputPolicy
from hotfolder.errors import JobError, Kind

# the still-image files ComfyUI's nodes write, by the extension the server reports
STILL_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
PILLOW_FORMATS = ["PNG", "JPEG", "WEBP", "BMP", "TIFF"]  # never a decoder the suffix rules out
TARGET_SUFFIX = {"png": ".png", "jpeg": ".jpg", "webp": ".webp"}
# Pillow's own warning threshold (about 9459 x 9459): an untrusted answer decodes to at most
# 4 bytes a pixel, ~360 MB, whatever Pillow's global setting is in this process
MAX_PIXELS = 89_478_485
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TEXT_CHUNKS = frozenset({b"tEXt", b"iTXt", b"zTXt", b"eXIf"})  # iTXt also carries XMP
_BLOCK = 1024 * 1024
WHITE = (255, 255, 255)


@dataclass(frozen=True)
class Plan:
    """What happens to one output: `copy` (as written), `strip` (PNG text chunks removed) or
    `convert` (re-encoded); `suffix` is the extension its outbox name gets."""

    action: str
    suffix: str
    record: dict[str, Any] = field(default_factory=dict)  # what the sidecar entry adds


def applies(policy: OutputPolicy, suffix: str) -> bool:
    """Whether the policy may rewrite an output the server named with this extension (known
    before the download, so both names it may get can be reserved)."""
    if policy.untouched:
        return False
    if policy.format == "png":
        return suffix == ".png"
    return suffix in STILL_SUFFIXES


def target_suffix(policy: OutputPolicy, suffix: str) -> str:
    """The extension an output gets when the policy rewrites it."""
    return suffix if policy.format == "png" else TARGET_SUFFIX[policy.format]


def plan(src: IO[bytes], policy: OutputPolicy, suffix: str, name: str) -> Plan:
    """Decide from the downloaded file's header what to do with it (`src` is rewound)."""
    if not applies(policy, suffix):
        return Plan("copy", suffix, left_record(policy, suffix))
    try:
        if policy.format == "png":
            return Plan("strip", suffix, {"format": "png", "metadata": "stripped"})
        with _open(src, name) as image:
            if getattr(image, "n_frames", 1) > 1:
                if suffix == ".png" and policy.metadata == "strip":
                    return Plan("strip", suffix, {"format": "png", "metadata": "stripped",
                                                  "left_as_is": "animated image"})
                return Plan("copy", suffix, _left(policy, "animated image"))
            return Plan("convert", target_suffix(policy, suffix),
                        {"format": policy.format, "metadata": "none"})
    finally:
        src.seek(0)


def apply(plan: Plan, src: IO[bytes], dst: IO[bytes], policy: OutputPolicy, name: str) -> None:
    """Write the delivered file to `dst` as the plan says; a file that cannot be read as the
    image its name promises fails the job (delivering it would break the folder's promise)."""
    if plan.action == "copy":
        shutil.copyfileobj(src, dst, _BLOCK)
    elif plan.action == "strip":
        strip_png(src, dst, name)
    else:
        with _open(src, name) as image:
            encode(image, dst, policy, name)


def strip_png(src: IO[bytes], dst: IO[bytes], name: str) -> None:
    """Copy a PNG chunk by chunk, leaving out every text and EXIF chunk and anything after
    IEND. Nothing is decoded: chunk lengths only, each bounded by what was downloaded."""
    if src.read(8) != PNG_SIGNATURE:
        raise _unreadable(name, "it is not a PNG")
    dst.write(PNG_SIGNATURE)
    while True:
        head = src.read(8)
        if len(head) < 8:
            raise _unreadable(name, "the PNG ends before its IEND chunk")
        length, kind = struct.unpack(">I4s", head)
        if length > 0x7FFFFFFF:
            raise _unreadable(name, f"a PNG chunk claims {length} bytes")
        if kind in TEXT_CHUNKS:
            src.seek(length + 4, 1)  # the body and its CRC
            continue
        dst.write(head)
        left = length + 4
        while left:
            block = src.read(min(left, _BLOCK))
            if not block:
                raise _unreadable(name, "the PNG ends inside a chunk")
            dst.write(block)
            left -= len(block)
        if kind == b"IEND":
            return


def encode(image: Image.Image, dst: IO[bytes], policy: OutputPolicy, name: str) -> None:
    """Re-encode a still image. JPEG has no alpha: transparency is flattened onto white, the
    background prints and web pages assume. The colour profile is kept; nothing else is."""
    icc = image.info.get("icc_profile")
    try:
        image.load()
        image = _eight_bit(image)
        if policy.format == "jpeg":
            out = _flattened(image) if _has_alpha(image) else image.convert("RGB")
            options: dict[str, Any] = {"quality": policy.quality}
        else:
            out = image.convert("RGBA" if _has_alpha(image) else "RGB")
            options = {"quality": policy.quality, "method": 4}
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, struct.error) as exc:
        raise _unreadable(name, str(exc)) from exc
    if isinstance(icc, bytes) and icc:
        options["icc_profile"] = icc
    out.save(dst, "JPEG" if policy.format == "jpeg" else "WEBP", **options)


def _open(src: IO[bytes], name: str) -> Image.Image:
    """Pillow's view of the header, refused before any pixel is decoded when it is too big."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(src, formats=PILLOW_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _too_big(name, str(exc)) from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError,
            IndexError, struct.error) as exc:
        raise _unreadable(name, str(exc)) from exc
    width, height = image.size
    if width * height > MAX_PIXELS:
        image.close()
        raise _too_big(name, f"{width} x {height} pixels")
    return image


def _eight_bit(image: Image.Image) -> Image.Image:
    """A 16-bit grey PNG (some save nodes write them) scaled down: Pillow's own conversion
    would clip every value over 255 to white."""
    if image.mode == "I" or image.mode.startswith("I;16"):
        return image.convert("I").point(lambda v: v / 256).convert("L")
    return image


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info


def _flattened(image: Image.Image) -> Image.Image:
    rgba = image.convert("RGBA")
    out = Image.new("RGB", rgba.size, WHITE)
    out.paste(rgba, mask=rgba.getchannel("A"))
    return out


def _left(policy: OutputPolicy, why: str) -> dict[str, Any]:
    """The default policy adds nothing to the sidecar: its files are never looked at."""
    return {} if policy.untouched else {"left_as_is": why}


def left_record(policy: OutputPolicy, suffix: str) -> dict[str, Any]:
    """The sidecar's word on an output the policy does not touch, by its extension."""
    if policy.format == "png" and suffix in STILL_SUFFIXES:
        return _left(policy, "metadata: strip rewrites PNG files only")
    return _left(policy, "not a still image")


def found_record(policy: OutputPolicy, suffix: str, name: str) -> dict[str, Any]:
    """The sidecar's word on an output found already placed under its final name (a crash
    came between placing it and recording it), told by the name it was given."""
    if not applies(policy, suffix):
        return left_record(policy, suffix)
    if policy.format == "png":
        return {"format": "png", "metadata": "stripped"}
    if name.endswith(target_suffix(policy, suffix)):
        return {"format": policy.format, "metadata": "none"}
    return _left(policy, "animated image")


def _unreadable(name: str, why: str) -> JobError:
    return JobError(f"ComfyUI's output {name!r} cannot be read as the image its name says "
                    f"({why}); not delivered", kind=Kind.DOWNLOAD, details={"output": name})


def _too_big(name: str, why: str) -> JobError:
    return JobError(f"ComfyUI's output {name!r} is too large to re-encode ({why}; at most "
                    f"{MAX_PIXELS} pixels); not delivered", kind=Kind.TOO_LARGE,
                    details={"output": name})
