"""Minimal PNG writer and reader (stdlib zlib only).

The simulator must hand out real, decodable image files (the daemon downloads and moves them,
a user opens them), carrying the `prompt` text chunk the real SaveImage writes. Reading is
needed for `/view?channel=a`, JPEG previews and LoadImage of uploaded files; it handles the
common 8-bit, non-interlaced colour types and gives up cleanly on anything else.
"""

from __future__ import annotations

import struct
import zlib

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# colour type -> channels, for 8-bit images
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


class PngError(ValueError):
    """The bytes are not a PNG this small reader understands."""


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def encode_png(
    width: int,
    height: int,
    pixels: bytes,
    *,
    alpha: bool = False,
    text: dict[str, str] | None = None,
    compress_level: int = 4,
) -> bytes:
    """Encode 8-bit RGB (or RGBA) rows; `text` becomes tEXt chunks before the image data."""
    channels = 4 if alpha else 3
    stride = width * channels
    if len(pixels) != stride * height:
        raise ValueError(f"expected {stride * height} pixel bytes, got {len(pixels)}")
    # Filter type 0 on every row: simplest valid choice, and the images are tiny.
    raw = b"".join(b"\x00" + pixels[y * stride : (y + 1) * stride] for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 6 if alpha else 2, 0, 0, 0)
    parts = [PNG_MAGIC, _chunk(b"IHDR", header)]
    for key, value in (text or {}).items():
        parts.append(
            _chunk(b"tEXt", key.encode("latin-1") + b"\x00" + value.encode("latin-1", "replace"))
        )
    parts.append(_chunk(b"IDAT", zlib.compress(raw, compress_level)))
    parts.append(_chunk(b"IEND", b""))
    return b"".join(parts)


def read_text_chunks(data: bytes) -> dict[str, str]:
    """The tEXt chunks of a PNG (used by tests to check the embedded prompt)."""
    out: dict[str, str] = {}
    for kind, body in _iter_chunks(data):
        if kind == b"tEXt" and b"\x00" in body:
            key, _, value = body.partition(b"\x00")
            out[key.decode("latin-1")] = value.decode("latin-1")
    return out


def _iter_chunks(data: bytes):
    if not data.startswith(PNG_MAGIC):
        raise PngError("not a PNG file")
    pos = len(PNG_MAGIC)
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if len(body) != length:
            raise PngError("truncated chunk")
        yield kind, body
        pos += 12 + length
        if kind == b"IEND":
            return


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def _unfilter(raw: bytes, height: int, stride: int, bpp: int) -> bytearray:
    out = bytearray(stride * height)
    prev = bytearray(stride)
    pos = 0
    for y in range(height):
        kind = raw[pos]
        line = bytearray(raw[pos + 1 : pos + 1 + stride])
        pos += 1 + stride
        if kind == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif kind == 2:
            for i in range(stride):
                line[i] = (line[i] + prev[i]) & 0xFF
        elif kind == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xFF
        elif kind == 4:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                up_left = prev[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + _paeth(left, prev[i], up_left)) & 0xFF
        elif kind != 0:
            raise PngError(f"bad filter type {kind}")
        out[y * stride : (y + 1) * stride] = line
        prev = line
    return out


def _expand_bits(
    packed: bytearray, width: int, height: int, stride: int, depth: int, scale: bool
) -> bytearray:
    """Unpack 1/2/4-bit samples to one byte each (grey levels scaled to 0..255)."""
    out = bytearray()
    mask = (1 << depth) - 1
    factor = 255 // mask if scale else 1
    for y in range(height):
        row = packed[y * stride : (y + 1) * stride]
        for x in range(width):
            bit = x * depth
            shift = 8 - depth - (bit % 8)
            out.append(((row[bit // 8] >> shift) & mask) * factor)
    return out


def decode_png(data: bytes, max_pixels: int = 1 << 20) -> tuple[int, int, bytes, bytes]:
    """Decode to (width, height, rgb bytes, alpha bytes). Non-interlaced images only."""
    width = height = depth = colour = interlace = -1
    palette = b""
    transparency = b""
    idat = []
    for kind, body in _iter_chunks(data):
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
        elif kind == b"PLTE":
            palette = body
        elif kind == b"tRNS":
            transparency = body
        elif kind == b"IDAT":
            idat.append(body)
    if width <= 0 or height <= 0:
        raise PngError("missing IHDR")
    low_depth = depth in (1, 2, 4) and colour in (0, 3)
    if interlace != 0 or colour not in _CHANNELS or not (depth == 8 or low_depth):
        raise PngError("only 8-bit (or 1/2/4-bit grey/palette) non-interlaced PNGs are supported")
    if width * height > max_pixels:
        raise PngError("image too large to decode here")
    channels = _CHANNELS[colour]
    stride = width * channels if depth == 8 else (width * depth + 7) // 8
    try:
        raw = zlib.decompress(b"".join(idat))
    except zlib.error as exc:
        raise PngError(str(exc)) from exc
    if len(raw) < (stride + 1) * height:
        raise PngError("not enough image data")
    px = _unfilter(raw, height, stride, channels)
    count = width * height
    if depth < 8:
        px = _expand_bits(px, width, height, stride, depth, scale=colour == 0)
    if colour == 2:
        return width, height, bytes(px), b"\xff" * count
    if colour == 6:
        rgb = bytearray(count * 3)
        rgb[0::3], rgb[1::3], rgb[2::3] = px[0::4], px[1::4], px[2::4]
        return width, height, bytes(rgb), bytes(px[3::4])
    if colour == 0:
        return width, height, bytes(b for v in px for b in (v, v, v)), b"\xff" * count
    if colour == 4:
        grey = px[0::2]
        return width, height, bytes(b for v in grey for b in (v, v, v)), bytes(px[1::2])
    # colour == 3: palette
    if len(palette) < 3:
        raise PngError("palette image without PLTE")
    rgb = bytearray(count * 3)
    alpha = bytearray(b"\xff" * count)
    for i, index in enumerate(px):
        rgb[i * 3 : i * 3 + 3] = palette[index * 3 : index * 3 + 3].ljust(3, b"\x00")
        if index < len(transparency):
            alpha[i] = transparency[index]
    return width, height, bytes(rgb), bytes(alpha)
