"""Image files in and out of the simulator, through Pillow (a dependency of hotfolder anyway).

The simulator hands out real, decodable files (the daemon downloads and moves them, a user
opens them): PNGs carrying the `prompt`/`workflow` text chunks the real SaveImage writes, and
JPEG latent previews and `/view?preview=jpeg` answers. It also reads PNGs that clients upload
for LoadImage and `/view?channel=...`, which may be hostile: `decode_png` is bounded by the
size in the header, checked here before Pillow decodes any pixel data, and every way a broken
file fails comes out as `PngError`. (`/upload/mask` composites with Pillow as ComfyUI does,
under Pillow's own limits only; its errors are the route's 500.)

Pixels travel through the simulator as raw bytes (`imaging.ImageBatch`): 8-bit RGB rows, or
RGBA where asked; `Image.frombytes` / `tobytes` convert without per-pixel Python loops.
"""

from __future__ import annotations

import io
import struct

from PIL import Image
from PIL.PngImagePlugin import PngInfo

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DEFAULT_MAX_PIXELS = 1 << 20

# Everything Pillow raises for a file it cannot (or will not) read: UnidentifiedImageError
# and truncation are OSErrors, a bad chunk CRC is a SyntaxError, oversized text chunks and
# unsupported conversions are ValueErrors. Pillow's own bomb check (its global limit) cannot
# fire for a size under `max_pixels`; were a caller to allow more, it is a refusal like the rest
# (the warning arrives as an exception only where warnings are errors, as in the test suite).
_PILLOW_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    Image.DecompressionBombError,
    Image.DecompressionBombWarning,
)


class PngError(ValueError):
    """The bytes are not a PNG the simulator will decode (broken, or too large)."""


def _image(mode: str, width: int, height: int, pixels: bytes) -> Image.Image:
    expected = width * height * len(mode)
    if len(pixels) != expected:
        raise ValueError(f"expected {expected} pixel bytes, got {len(pixels)}")
    return Image.frombytes(mode, (width, height), pixels)


def encode_png(
    width: int,
    height: int,
    pixels: bytes,
    *,
    alpha: bool = False,
    text: dict[str, str] | None = None,
    compress_level: int = 4,
) -> bytes:
    """Encode 8-bit RGB (or RGBA) rows; `text` becomes text chunks, as SaveImage writes them.

    Like ComfyUI, each entry goes through `PngInfo.add_text`: a tEXt chunk (the JSON the
    output nodes write is ASCII), an iTXt one only for text that Latin-1 cannot hold.
    """
    image = _image("RGBA" if alpha else "RGB", width, height, pixels)
    metadata = PngInfo()
    for key, value in (text or {}).items():
        metadata.add_text(key, value)
    buffer = io.BytesIO()
    image.save(buffer, "PNG", pnginfo=metadata, compress_level=compress_level)
    return buffer.getvalue()


def encode_jpeg(width: int, height: int, rgb: bytes, quality: int = 90) -> bytes:
    """Encode 8-bit RGB as a baseline JPEG; quality is clamped to 1..100."""
    buffer = io.BytesIO()
    _image("RGB", width, height, rgb).save(buffer, "JPEG", quality=min(100, max(1, quality)))
    return buffer.getvalue()


def _header_size(data: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk, which the PNG format puts first and only once.

    Only chunk headers are read, up to the first IDAT: a second IHDR (Pillow would take the
    last one) is refused, so the size checked here is the size Pillow decodes.
    """
    if not data.startswith(PNG_MAGIC):
        raise PngError("not a PNG file")
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise PngError("missing IHDR")
    width, height = struct.unpack(">II", data[16:24])
    if width <= 0 or height <= 0:
        raise PngError("missing IHDR")
    pos = 33
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if kind in (b"IDAT", b"IEND"):
            break
        if kind == b"IHDR":
            raise PngError("more than one IHDR")
        pos += 12 + length
    return width, height


def _check_size(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise PngError("image too large to decode here")


def decode_png(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int, bytes, bytes]:
    """Decode to (width, height, rgb bytes, alpha bytes); PngError when broken or too large.

    Only PNG is accepted (a JPEG upload is "not a PNG", as before). The pixel count is checked
    on the header before decoding, and again on the size Pillow read, so a file cannot make
    the simulator decode more than `max_pixels` pixels, whatever Pillow's global limit is.
    """
    _check_size(*_header_size(data), max_pixels)
    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as image:
            width, height = image.size
            _check_size(width, height, max_pixels)
            # through RGBA: a palette with transparency becomes an alpha channel, no warning
            rgba = image.convert("RGBA")
        return width, height, rgba.convert("RGB").tobytes(), rgba.getchannel("A").tobytes()
    except PngError:
        raise
    except _PILLOW_ERRORS as exc:
        raise PngError(str(exc) or type(exc).__name__) from exc


def alpha_png(width: int, height: int, alpha: bytes) -> bytes:
    """A black RGBA PNG carrying `alpha`: what `/view?channel=a` answers."""
    rgba = bytearray(width * height * 4)
    rgba[3::4] = alpha
    return encode_png(width, height, bytes(rgba), alpha=True)


def save_with_mask_alpha(source: str, mask: bytes, path: str) -> None:
    """`/upload/mask`: write a copy of the image file `source`, text chunks included, whose
    alpha channel is that of the uploaded image `mask`, to `path`.

    Errors are Pillow's own (OSError, ValueError, ...), which the route answers with a 500.
    """
    with Image.open(source) as original:
        metadata = PngInfo()
        for key, value in getattr(original, "text", {}).items():
            metadata.add_text(key, value)
        composite = original.convert("RGBA")
    with Image.open(io.BytesIO(mask)) as uploaded:
        composite.putalpha(uploaded.convert("RGBA").getchannel("A"))
    composite.save(path, compress_level=4, pnginfo=metadata)  # format by extension, as ComfyUI
