"""A folder's output policy on one file: what is stripped, what is re-encoded and how, what is
left alone, and what a hostile answer gets."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageCms
from PIL.PngImagePlugin import PngInfo

from hotfolder.config.model import OutputPolicy
from hotfolder.errors import JobError, Kind
from hotfolder.job import convert_output as convert
from hotfolder.job.deliver import deliver_all
from hotfolder.job.state import JobState
from hotfolder.outdir import OutDir

STRIP = OutputPolicy(metadata="strip")
JPEG = OutputPolicy(format="jpeg")
WEBP = OutputPolicy(format="webp")


def comfy_png(mode: str = "RGB", size: tuple[int, int] = (16, 12), *,
              icc: bytes | None = None) -> bytes:
    """A PNG as SaveImage writes it, plus every other way a text can ride along."""
    image = Image.new(mode, size, (200, 30, 40, 128)[: len(mode)])  # RGBA: half see-through
    info = PngInfo()
    info.add_text("prompt", '{"3": {"class_type": "KSampler"}}')
    info.add_text("workflow", '{"nodes": [], "note": "Grüße ✓"}')  # iTXt: beyond Latin-1
    info.add_text("parameters", "x" * 2000, zip=True)  # zTXt
    buffer = io.BytesIO()
    image.save(buffer, "PNG", pnginfo=info, exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x00",
               **({"icc_profile": icc} if icc else {}))
    return buffer.getvalue()


def chunk_types(data: bytes) -> list[bytes]:
    kinds, pos = [], 8
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        kinds.append(kind)
        pos += 12 + length
    return kinds


def run(data: bytes, policy: OutputPolicy, suffix: str = ".png") -> tuple[convert.Plan, bytes]:
    src, dst = io.BytesIO(data), io.BytesIO()
    plan = convert.plan(src, policy, suffix, "ComfyUI_00001_.png")
    convert.apply(plan, src, dst, policy, "ComfyUI_00001_.png")
    return plan, dst.getvalue()


def test_strip_removes_every_text_chunk_and_keeps_pixels_and_colour_profile():
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    source = comfy_png(icc=icc)
    assert {b"tEXt", b"iTXt", b"zTXt", b"eXIf", b"iCCP"} <= set(chunk_types(source))
    plan, out = run(source + b"trailing bytes", STRIP)
    assert (plan.action, plan.suffix, plan.record) == \
        ("strip", ".png", {"format": "png", "metadata": "stripped"})
    assert not {b"tEXt", b"iTXt", b"zTXt", b"eXIf"} & set(chunk_types(out))
    assert chunk_types(out)[-1] == b"IEND" and out.endswith(source[-12:])  # nothing after IEND
    with Image.open(io.BytesIO(out)) as image, Image.open(io.BytesIO(source)) as before:
        assert image.text == {} and "prompt" not in image.info and "exif" not in image.info
        assert image.info["icc_profile"] == icc
        assert image.tobytes() == before.tobytes()


def test_default_policy_never_opens_a_file():
    assert not convert.applies(OutputPolicy(), ".png")
    source = comfy_png()
    plan, out = run(source, OutputPolicy())
    assert (plan.action, plan.record, out) == ("copy", {}, source)


def test_jpeg_flattens_transparency_onto_white_and_carries_no_text():
    image = Image.new("RGBA", (8, 8), (0, 0, 0, 0))  # transparent black
    image.putpixel((0, 0), (0, 0, 255, 255))
    buffer = io.BytesIO()
    info = PngInfo()
    info.add_text("prompt", "{}")
    image.save(buffer, "PNG", pnginfo=info)
    plan, out = run(buffer.getvalue(), JPEG)
    assert (plan.action, plan.suffix, plan.record) == \
        ("convert", ".jpg", {"format": "jpeg", "metadata": "none"})
    with Image.open(io.BytesIO(out)) as jpeg:
        assert (jpeg.format, jpeg.mode, jpeg.size) == ("JPEG", "RGB", (8, 8))
        assert min(jpeg.getpixel((6, 6))) > 240  # white, not the black under the alpha
        assert "exif" not in jpeg.info and b"prompt" not in out


def test_quality_is_the_encoders():
    noisy = Image.frombytes("RGB", (64, 64), bytes((i * 7919) % 251 for i in range(64 * 64 * 3)))
    buffer = io.BytesIO()
    noisy.save(buffer, "PNG")
    sizes = {}
    for fmt in ("jpeg", "webp"):
        for quality in (10, 95):
            sizes[fmt, quality] = len(run(buffer.getvalue(),
                                          OutputPolicy(format=fmt, quality=quality))[1])
        assert sizes[fmt, 10] < sizes[fmt, 95]


def test_sixteen_bit_grey_is_scaled_not_clipped():
    buffer = io.BytesIO()
    Image.new("I;16", (4, 4), 0x8000).save(buffer, "PNG")
    with Image.open(io.BytesIO(run(buffer.getvalue(), JPEG)[1])) as jpeg:
        assert 120 <= jpeg.getpixel((1, 1))[0] <= 136  # mid-grey, not white


def test_webp_keeps_alpha_and_the_colour_profile():
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    plan, out = run(comfy_png("RGBA", icc=icc), WEBP)
    assert plan.suffix == ".webp"
    with Image.open(io.BytesIO(out)) as webp:
        assert (webp.format, webp.mode, webp.size) == ("WEBP", "RGBA", (16, 12))
        assert webp.info.get("icc_profile") == icc
        assert "exif" not in webp.info and "xmp" not in webp.info
    assert b"KSampler" not in out and b"workflow" not in out


def test_video_and_other_files_pass_untouched_and_say_so():
    data = b"\x00\x00\x00\x18ftypmp42 not really a video"
    for policy in (STRIP, JPEG, WEBP):
        plan, out = run(data, policy, ".mp4")
        assert (plan.action, plan.suffix, out) == ("copy", ".mp4", data)
        assert "left_as_is" in plan.record
    plan, _ = run(data, STRIP, ".webp")  # strip rewrites PNGs only
    assert plan.record == {"left_as_is": "metadata: strip rewrites PNG files only"}


def test_animated_images_are_not_flattened_to_one_frame():
    frames = [Image.new("RGB", (8, 8), c) for c in ("red", "blue")]
    buffer = io.BytesIO()
    info = PngInfo()
    info.add_text("prompt", "{}")
    frames[0].save(buffer, "PNG", save_all=True, append_images=frames[1:], pnginfo=info)
    plan, out = run(buffer.getvalue(), JPEG)
    assert (plan.action, plan.suffix, out) == ("copy", ".png", buffer.getvalue())
    assert plan.record == {"left_as_is": "animated image"}
    plan, out = run(buffer.getvalue(), OutputPolicy(format="jpeg", metadata="strip"))
    assert (plan.action, plan.suffix) == ("strip", ".png")
    with Image.open(io.BytesIO(out)) as image:
        assert image.n_frames == 2 and image.text == {}


def png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(
            ">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0"))
            + chunk(b"IEND", b""))


@pytest.mark.parametrize("side", [9500, 100_000])  # over Pillow's warning, over its error
def test_a_decompression_bomb_fails_the_job_before_decoding(side):
    with pytest.raises(JobError) as info:
        run(png_header(side, side), WEBP)
    assert info.value.kind == Kind.TOO_LARGE
    assert "too large to re-encode" in info.value.message


@pytest.mark.parametrize("policy", [STRIP, JPEG])
def test_an_output_that_is_not_the_image_its_name_says_fails_the_job(policy):
    for data in (b"<html>502 Bad Gateway</html>", png_header(8, 8)[:40]):
        with pytest.raises(JobError) as info:
            run(data, policy)
        assert info.value.kind == Kind.DOWNLOAD
        assert "cannot be read as the image its name says" in info.value.message


class FakeClient:
    def __init__(self, files: dict[str, bytes]) -> None:
        self.files, self.fetched = files, []

    def download(self, output: dict[str, Any], fh: Any, limit: Any, cancelled: Any) -> int:
        self.fetched.append(output["filename"])
        fh.write(self.files[output["filename"]])
        return len(self.files[output["filename"]])


def test_delivery_converts_renames_and_a_replay_finds_what_was_placed(tmp_path: Path):
    files = {"a_00001_.png": comfy_png(), "clip_00001.mp4": b"video"}
    outputs = [{"filename": name, "subfolder": "", "type": "output", "node": "9",
                "kind": "images"} for name in files]
    state = JobState(name="fox.txt", folder="f")
    client = FakeClient(files)
    with OutDir(tmp_path) as outdir:
        delivered = deliver_all(client, outputs, outdir, state, save=lambda: None,
                                policy=JPEG)
        assert [(f["file"], f.get("format")) for f in delivered] == \
            [("fox_00001.jpg", "jpeg"), ("fox_00002.mp4", None)]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["fox_00001.jpg", "fox_00002.mp4"]
        state.delivered = {}  # a crash after placing, before the record was saved
        again = deliver_all(client, outputs, outdir, state, save=lambda: None,
                            policy=JPEG)
    assert again == delivered and len(client.fetched) == 2
    with Image.open(tmp_path / "fox_00001.jpg") as image:
        assert (image.format, image.size) == ("JPEG", (16, 12))
