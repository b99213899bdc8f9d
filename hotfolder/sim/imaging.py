"""Values that flow along the simulated graph, and the pixels behind them.

The simulator does not diffuse anything, but the images it writes must differ when the job
differs (prompt text, seed), stay identical when it does not, and stay tiny so thousands of jobs
cost nothing. Pixel sizes are the latent size (width/8, height/8) clamped to 8..128.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

MIN_SIDE = 8
MAX_SIDE = 128
MAX_FRAMES = 64  # a batch_size of 4096 must not allocate 4096 images

_INVERT = bytes(255 - i for i in range(256))


def sim_side(pixels: Any) -> int:
    """Map a requested pixel size to the simulator's tiny one (the latent size)."""
    try:
        value = int(pixels)
    except (TypeError, ValueError):
        value = 512
    return min(MAX_SIDE, max(MIN_SIDE, value // 8))


def clamp_side(value: float) -> int:
    return min(MAX_SIDE, max(MIN_SIDE, int(value)))


@dataclass(frozen=True)
class ImageBatch:
    """An IMAGE value: a batch of RGB frames of one size."""

    width: int
    height: int
    frames: tuple[bytes, ...]

    def __str__(self) -> str:
        return f"tensor(<simulated IMAGE batch={len(self.frames)} {self.height}x{self.width}x3>)"


@dataclass(frozen=True)
class Latent:
    """A LATENT value. `text`/`seed` are set once a sampler has "denoised" it."""

    width: int
    height: int
    batch: int
    text: str | None = None
    seed: int | None = None
    source: ImageBatch | None = None  # set by VAEEncode, kept for img2img without a sampler

    def __str__(self) -> str:
        shape = f"batch={self.batch} {self.height}x{self.width}"
        return f"{{'samples': tensor(<simulated LATENT {shape}>)}}"


@dataclass(frozen=True)
class Thing:
    """Any other typed value (MODEL, CLIP, CONDITIONING, SIGMAS, ...)."""

    kind: str
    text: str = ""
    info: tuple[tuple[str, Any], ...] = field(default=())

    def get(self, key: str, default: Any = None) -> Any:
        return dict(self.info).get(key, default)

    def __str__(self) -> str:
        return f"<simulated {self.kind}>"


def solid(width: int, height: int, colour: int) -> bytes:
    colour = int(colour) & 0xFFFFFF
    return bytes(((colour >> 16) & 0xFF, (colour >> 8) & 0xFF, colour & 0xFF)) * (width * height)


def render(width: int, height: int, text: str, seed: Any, index: int) -> bytes:
    """A deterministic picture: colours from the prompt text, stripes and grain from the seed."""
    base = hashlib.sha256(text.encode("utf-8", "replace")).digest()
    grain = hashlib.sha256(f"{seed}\x00{index}\x00{text}".encode("utf-8", "replace")).digest()
    colour_a = base[0:3]
    colour_b = bytes((grain[0], grain[1], grain[2]))
    period = 2 + grain[3] % 6
    step_x = 1 + grain[4] % 3
    step_y = grain[5] % 3
    out = bytearray()
    for y in range(height):
        for x in range(width):
            colour = colour_a if ((x * step_x + y * step_y) // period) % 2 else colour_b
            noise = grain[(x * 7 + y * 13) % 32] & 0x0F
            out += bytes((colour[0] ^ noise, colour[1] ^ noise, colour[2] ^ noise))
    return bytes(out)


def invert(pixels: bytes) -> bytes:
    return pixels.translate(_INVERT)


def soften(pixels: bytes) -> bytes:
    """A cheap horizontal blur: good enough to change the bytes like ImageBlur would."""
    out = bytearray(pixels)
    for i in range(3, len(pixels)):
        out[i] = (pixels[i] + pixels[i - 3]) >> 1
    return bytes(out)


def resize(pixels: bytes, width: int, height: int, new_width: int, new_height: int) -> bytes:
    """Nearest-neighbour resize of RGB bytes."""
    if (width, height) == (new_width, new_height):
        return pixels
    out = bytearray()
    for y in range(new_height):
        row = (y * height // new_height) * width
        for x in range(new_width):
            i = (row + x * width // new_width) * 3
            out += pixels[i : i + 3]
    return bytes(out)


def blend_towards_grey(pixels: bytes, fraction: float) -> bytes:
    """What a latent preview looks like part-way through sampling."""
    fraction = min(1.0, max(0.0, fraction))
    return bytes(int(128 + (value - 128) * fraction) for value in pixels)


def decode_latent(latent: Latent) -> ImageBatch:
    """VAEDecode: the sampled picture, the encoded source, or flat grey for an empty latent."""
    frames = []
    for index in range(min(latent.batch, MAX_FRAMES)):
        if latent.text is not None:
            frames.append(render(latent.width, latent.height, latent.text, latent.seed, index))
        elif latent.source is not None and latent.source.frames:
            src = latent.source
            frame = src.frames[min(index, len(src.frames) - 1)]
            frames.append(resize(frame, src.width, src.height, latent.width, latent.height))
        else:
            frames.append(solid(latent.width, latent.height, 0x808080))
    return ImageBatch(latent.width, latent.height, tuple(frames))


def map_frames(image: ImageBatch, func) -> ImageBatch:
    return ImageBatch(image.width, image.height, tuple(func(frame) for frame in image.frames))


def scale_image(image: ImageBatch, new_width: int, new_height: int) -> ImageBatch:
    return ImageBatch(
        new_width,
        new_height,
        tuple(resize(f, image.width, image.height, new_width, new_height) for f in image.frames),
    )
