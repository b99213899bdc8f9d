"""A tiny baseline JPEG encoder that keeps only the DC term of each 8x8 block.

Real ComfyUI sends JPEG latent previews and answers `/view?preview=jpeg;Q` with a JPEG. A client
only checks that it gets a decodable JPEG, so a blocky 8x8-average image is faithful enough and
keeps the simulator stdlib-only: no DCT, one Huffman table per class, about 100 lines.
"""

from __future__ import annotations

import struct

# Luminance and chrominance quantisation tables of the JPEG spec (Annex K), zig-zag order is
# irrelevant here because only entry 0 (the DC divisor) shapes the output.
_STD_LUMA_DC = 16
_STD_CHROMA_DC = 17
_STD_LUMA_REST = 50
_STD_CHROMA_REST = 99

# Standard DC Huffman table (Annex K.3): code lengths 1..16, symbols = size categories 0..11.
_DC_BITS = (0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0)
_DC_VALUES = tuple(range(12))
# A one-symbol AC table: only End-Of-Block, code "0". Every block is DC-only.
_AC_BITS = (1,) + (0,) * 15
_AC_VALUES = (0x00,)


def _huffman_codes(bits: tuple[int, ...], values: tuple[int, ...]) -> dict[int, tuple[int, int]]:
    codes: dict[int, tuple[int, int]] = {}
    code = 0
    index = 0
    for length in range(1, 17):
        for _ in range(bits[length - 1]):
            codes[values[index]] = (code, length)
            code += 1
            index += 1
        code <<= 1
    return codes


_DC_CODES = _huffman_codes(_DC_BITS, _DC_VALUES)
_EOB = _huffman_codes(_AC_BITS, _AC_VALUES)[0x00]


def _scaled(base: int, quality: int) -> int:
    quality = min(100, max(1, quality))
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return min(255, max(1, (base * scale + 50) // 100))


class _BitWriter:
    def __init__(self) -> None:
        self.out = bytearray()
        self.acc = 0
        self.count = 0

    def write(self, value: int, length: int) -> None:
        self.acc = (self.acc << length) | (value & ((1 << length) - 1))
        self.count += length
        while self.count >= 8:
            self.count -= 8
            byte = (self.acc >> self.count) & 0xFF
            self.out.append(byte)
            if byte == 0xFF:
                self.out.append(0x00)  # byte stuffing
        self.acc &= (1 << self.count) - 1

    def flush(self) -> bytes:
        if self.count:
            self.write((1 << (8 - self.count)) - 1, 8 - self.count)
        return bytes(self.out)


def _segment(marker: int, body: bytes) -> bytes:
    return struct.pack(">HH", marker, len(body) + 2) + body


def encode_jpeg(width: int, height: int, rgb: bytes, quality: int = 90) -> bytes:
    """Encode 8-bit RGB as a baseline, non-subsampled YCbCr JPEG of 8x8 flat blocks."""
    if len(rgb) != width * height * 3:
        raise ValueError("pixel buffer does not match the size")
    q_luma = [_scaled(_STD_LUMA_DC, quality)] + [_scaled(_STD_LUMA_REST, quality)] * 63
    q_chroma = [_scaled(_STD_CHROMA_DC, quality)] + [_scaled(_STD_CHROMA_REST, quality)] * 63
    header = bytearray(b"\xff\xd8")
    header += _segment(0xFFE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
    header += _segment(0xFFDB, bytes([0x00, *q_luma]) + bytes([0x01, *q_chroma]))
    header += _segment(
        0xFFC0,
        struct.pack(">BHHB", 8, height, width, 3) + bytes([1, 0x11, 0, 2, 0x11, 1, 3, 0x11, 1]),
    )
    header += _segment(
        0xFFC4,
        bytes([0x00, *_DC_BITS, *_DC_VALUES]) + bytes([0x10, *_AC_BITS, *_AC_VALUES]),
    )
    header += _segment(0xFFDA, bytes([3, 1, 0x00, 2, 0x00, 3, 0x00, 0, 63, 0]))

    writer = _BitWriter()
    previous = [0, 0, 0]
    divisors = (q_luma[0], q_chroma[0], q_chroma[0])
    for by in range(0, height, 8):
        for bx in range(0, width, 8):
            sums = [0.0, 0.0, 0.0]
            for y in range(by, by + 8):
                row = min(y, height - 1) * width
                for x in range(bx, bx + 8):
                    i = (row + min(x, width - 1)) * 3
                    r, g, b = rgb[i], rgb[i + 1], rgb[i + 2]
                    sums[0] += 0.299 * r + 0.587 * g + 0.114 * b - 128
                    sums[1] += -0.168736 * r - 0.331264 * g + 0.5 * b
                    sums[2] += 0.5 * r - 0.418688 * g - 0.081312 * b
            for comp in range(3):
                # DC coefficient of an 8x8 DCT is the sum of the samples divided by 8.
                dc = round(sums[comp] / 8 / divisors[comp])
                diff = dc - previous[comp]
                previous[comp] = dc
                size = abs(diff).bit_length()
                code, length = _DC_CODES[size]
                writer.write(code, length)
                if size:
                    writer.write(diff if diff >= 0 else diff + (1 << size) - 1, size)
                writer.write(*_EOB)
    return bytes(header) + writer.flush() + b"\xff\xd9"
