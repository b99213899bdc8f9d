"""The simulator's image files: PNG/JPEG written through Pillow, and hostile PNGs read safely."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable

import pytest
import requests
from PIL import Image
from simtools import OPEN, wait_until

from hotfolder.sim import SimServer
from hotfolder.sim.imagefiles import PngError, decode_png, encode_jpeg, encode_png

RED_GREEN = bytes((255, 0, 0, 0, 255, 0)) * 4  # 4x2 RGB


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def ihdr(width: int, height: int, colour: int = 2) -> bytes:
    return chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0))


def png(*chunks: bytes) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks) + chunk(b"IEND", b"")


ONE_PIXEL = chunk(b"IDAT", zlib.compress(b"\x00\x01\x02\x03"))


def pillow_png(image: Image.Image, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **params)
    return buffer.getvalue()


def test_png_round_trip_keeps_pixels_and_text_chunks() -> None:
    data = encode_png(4, 2, RED_GREEN, text={"prompt": '{"1": {}}', "workflow": "{}"})
    assert decode_png(data) == (4, 2, RED_GREEN, b"\xff" * 8)
    assert chunk(b"tEXt", b'prompt\x00{"1": {}}') in data  # a plain tEXt chunk, as SaveImage
    with Image.open(io.BytesIO(data)) as image:
        assert image.text == {"prompt": '{"1": {}}', "workflow": "{}"}
    rgba = bytes((1, 2, 3, 40)) * 8
    assert decode_png(encode_png(4, 2, rgba, alpha=True)) == (4, 2, bytes((1, 2, 3)) * 8,
                                                              bytes((40,)) * 8)
    with pytest.raises(ValueError, match="pixel bytes"):
        encode_png(4, 2, RED_GREEN[:-1])


@pytest.mark.parametrize("quality", [0, 75, 500])
def test_jpeg_is_a_decodable_jpeg_of_the_size(quality: int) -> None:
    data = encode_jpeg(4, 2, RED_GREEN, quality)
    assert data.startswith(b"\xff\xd8\xff")
    with Image.open(io.BytesIO(data)) as image:
        assert (image.format, image.size) == ("JPEG", (4, 2))


def test_decoding_converts_grey_palette_and_transparency() -> None:
    grey = Image.new("LA", (2, 1), (7, 9))
    assert decode_png(pillow_png(grey)) == (2, 1, b"\x07" * 6, b"\x09\x09")
    palette = Image.new("P", (2, 1), 1)
    palette.putpalette(bytes((0, 0, 0, 10, 20, 30)))
    data = pillow_png(palette, transparency=bytes((255, 128)))
    assert decode_png(data) == (2, 1, bytes((10, 20, 30)) * 2, b"\x80\x80")
    interlaced = pillow_png(Image.new("RGB", (9, 9), (1, 2, 3)), interlace=1)
    assert decode_png(interlaced)[2] == bytes((1, 2, 3)) * 81


def test_the_size_is_bounded_before_anything_is_decoded() -> None:
    # a header claiming 40000x40000 (beyond Pillow's own bomb limit) and no real data
    with pytest.raises(PngError, match="too large"):
        decode_png(png(ihdr(40000, 40000), chunk(b"IDAT", zlib.compress(b""))))
    big = pillow_png(Image.new("RGB", (600, 600)))
    assert decode_png(big)[:2] == (600, 600)
    with pytest.raises(PngError, match="too large"):
        decode_png(big, max_pixels=512 * 512)
    # Pillow would take the size of a second IHDR: refused, so the checked size is the real one
    with pytest.raises(PngError, match="IHDR"):
        decode_png(png(ihdr(8, 8), ihdr(40000, 40000), chunk(b"IDAT", b"")))


def test_a_deflate_bomb_decodes_no_more_than_the_header_says() -> None:
    rows = b"".join(b"\x00" + b"\x00" * 30 for _ in range(10))
    flood = zlib.compress(rows + b"\x00" * (64 << 20), 9)  # 64 MiB more than the image needs
    assert len(flood) < 100_000
    try:
        width, height, rgb, _ = decode_png(png(ihdr(10, 10), chunk(b"IDAT", flood)))
    except PngError:
        return  # refusing it is as good as ignoring the excess
    assert (width, height, len(rgb)) == (10, 10, 300)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"GIF89a",
        b"\xff\xd8\xff\xe0" + bytes(64),  # a JPEG: LoadImage only reads PNGs
        png(ihdr(0, 8)),
        png(chunk(b"tEXt", b"a\x00b"), ihdr(8, 8)),  # IHDR not first
        png(ihdr(8, 8), chunk(b"IDAT", b"not zlib at all")),
        png(ihdr(8, 8), chunk(b"IDAT", zlib.compress(b"\x00" * 10))),  # too little data
        png(ihdr(8, 8))[:40],  # truncated
        png(ihdr(1, 1), chunk(b"tEXt", b"a\x00b")[:-1] + b"?", ONE_PIXEL),  # bad CRC
        png(ihdr(8, 8), chunk(b"IDAT", zlib.compress(b"\x07" + bytes(24)) * 8)),  # bad filter
    ],
)
def test_broken_pngs_are_a_png_error(data: bytes) -> None:
    assert decode_png(png(ihdr(1, 1), ONE_PIXEL)) == (1, 1, b"\x01\x02\x03", b"\xff")
    with pytest.raises(PngError):
        decode_png(data)


def test_a_hostile_upload_is_served_as_is_and_loaded_as_a_stand_in(
    make_sim: Callable[..., SimServer],
) -> None:
    sim = make_sim(job_seconds=0)
    session = requests.Session()
    OPEN.append(session)
    bomb = png(ihdr(40000, 40000), chunk(b"IDAT", zlib.compress(b"")))
    answer = session.post(f"{sim.url}/upload/image", files={"image": ("bomb.png", bomb)},
                          timeout=10)
    assert answer.status_code == 200
    for channel in ("rgb", "a"):
        view = session.get(f"{sim.url}/view",
                           params={"filename": "bomb.png", "type": "input", "channel": channel},
                           timeout=10)
        assert (view.status_code, view.content) == (200, bomb)
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "bomb.png"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0],
                                                    "filename_prefix": "bomb"}},
    }
    prompt_id = session.post(f"{sim.url}/prompt", json={"prompt": prompt},
                             timeout=10).json()["prompt_id"]
    entry = wait_until(
        lambda: session.get(f"{sim.url}/history/{prompt_id}", timeout=10).json(), "history"
    )
    assert entry[prompt_id]["status"]["status_str"] == "success"
    [image] = entry[prompt_id]["outputs"]["2"]["images"]
    with Image.open(f"{sim.output_dir}/{image['filename']}") as saved:
        assert saved.size == (64, 64)  # the stand-in picture of an unreadable upload
