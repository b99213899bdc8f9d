"""Output nodes: where simulated results become files, UI entries and WebSocket frames.

File naming follows ComfyUI's SaveImage exactly (`<basename(prefix)>_<counter:05>_.png` in
`dirname(prefix)`, the counter continuing from the files already on disk), because a daemon
predicts, finds and moves these files; a prefix escaping the output folder fails at execution
time with the real message.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Protocol

from hotfolder.sim.imagefiles import encode_png
from hotfolder.sim.imaging import ImageBatch


class OutputContext(Protocol):
    """What an output node needs from the engine."""

    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    output_dir: str
    temp_dir: str

    def random_letters(self, count: int) -> str: ...

    def send_images(self, pngs: list[bytes]) -> None: ...


def _compute_vars(prefix: str, width: int, height: int) -> str:
    now = time.localtime()
    for key, value in (
        ("%width%", str(width)),
        ("%height%", str(height)),
        ("%year%", str(now.tm_year)),
        ("%month%", f"{now.tm_mon:02}"),
        ("%day%", f"{now.tm_mday:02}"),
        ("%hour%", f"{now.tm_hour:02}"),
        ("%minute%", f"{now.tm_min:02}"),
        ("%second%", f"{now.tm_sec:02}"),
    ):
        prefix = prefix.replace(key, value)
    return prefix


def save_path(prefix: str, base_dir: str, width: int, height: int) -> tuple[str, str, int, str]:
    """(folder, file base name, next counter, subfolder) for a filename_prefix.

    Raises the real "Saving image outside the output folder is not allowed" exception.
    """
    prefix = _compute_vars(prefix, width, height)
    normal = os.path.normpath(prefix)
    subfolder = os.path.dirname(normal)
    filename = os.path.basename(normal)
    folder = os.path.join(base_dir, subfolder)
    common = os.path.commonpath((base_dir, os.path.abspath(folder)))
    if common != base_dir:
        raise Exception(
            "**** ERROR: Saving image outside the output folder is not allowed."
            f"\n full_output_folder: {os.path.abspath(folder)}"
            f"\n         output_dir: {base_dir}"
            f"\n         commonpath: {common}\n"
        )
    counter = 0
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        os.makedirs(folder, exist_ok=True)
        names = []
    for name in names:
        head = name[: len(filename) + 1]
        if os.path.normcase(head[:-1]) != os.path.normcase(filename) or head[-1:] != "_":
            continue
        try:
            number = int(name[len(filename) + 1 :].split("_")[0])
        except ValueError:
            number = 0
        counter = max(counter, number)
    return folder, filename, counter + 1, subfolder


def _png_text(ctx: OutputContext) -> dict[str, str]:
    text = {"prompt": json.dumps(ctx.prompt)}
    extra = ctx.extra_data.get("extra_pnginfo")
    if isinstance(extra, dict):
        for key, value in extra.items():
            text[str(key)] = json.dumps(value)
    return text


def _write_images(
    images: ImageBatch, prefix: Any, base_dir: str, kind: str, ctx: OutputContext, compress: int
) -> list[dict[str, str]]:
    folder, filename, counter, subfolder = save_path(
        str(prefix), base_dir, images.width, images.height
    )
    text = _png_text(ctx)
    results = []
    for frame in images.frames:
        name = f"{filename}_{counter:05}_.png"
        data = encode_png(images.width, images.height, frame, text=text, compress_level=compress)
        with open(os.path.join(folder, name), "wb") as handle:
            handle.write(data)
        results.append({"filename": name, "subfolder": subfolder, "type": kind})
        counter += 1
    return results


def save_image(inputs: dict[str, Any], ctx: OutputContext) -> dict[str, Any]:
    images = inputs["images"]
    return {
        "images": _write_images(
            images, inputs.get("filename_prefix", "ComfyUI"), ctx.output_dir, "output", ctx, 4
        )
    }


def preview_image(inputs: dict[str, Any], ctx: OutputContext) -> dict[str, Any]:
    prefix = "ComfyUI_temp_" + ctx.random_letters(5)
    return {"images": _write_images(inputs["images"], prefix, ctx.temp_dir, "temp", ctx, 1)}


def preview_any(inputs: dict[str, Any], ctx: OutputContext) -> dict[str, Any]:
    source = inputs.get("source")
    if isinstance(source, str):
        text = source
    elif source is None:
        text = "None"
    elif isinstance(source, (int, float, bool)):
        text = str(source)
    else:
        try:
            text = json.dumps(source)
        except (TypeError, ValueError):
            text = str(source)
    return {"text": [text]}


def save_image_websocket(inputs: dict[str, Any], ctx: OutputContext) -> None:
    images: ImageBatch = inputs["images"]
    ctx.send_images(
        [encode_png(images.width, images.height, f, compress_level=1) for f in images.frames]
    )


def save_animated_webp(inputs: dict[str, Any], ctx: OutputContext) -> dict[str, Any]:
    """Keeps it simple: one file named .webp (PNG bytes of the first frame) per batch."""
    images: ImageBatch = inputs["images"]
    prefix = str(inputs.get("filename_prefix", "ComfyUI"))
    folder, filename, counter, subfolder = save_path(
        prefix, ctx.output_dir, images.width, images.height
    )
    name = f"{filename}_{counter:05}_.webp"
    first = images.frames[0] if images.frames else b"\x80" * (images.width * images.height * 3)
    with open(os.path.join(folder, name), "wb") as handle:
        handle.write(encode_png(images.width, images.height, first, text=_png_text(ctx)))
    return {
        "images": [{"filename": name, "subfolder": subfolder, "type": "output"}],
        "animated": [len(images.frames) > 1],
    }


OUTPUT_NODES = {
    "SaveImage": save_image,
    "PreviewImage": preview_image,
    "PreviewAny": preview_any,
    "SaveImageWebsocket": save_image_websocket,
    "SaveAnimatedWEBP": save_animated_webp,
}
