"""Endpoints for files: `/view` (download, with ComfyUI's channel and preview conversions),
`/upload/image` and `/upload/mask`.

They share ComfyUI's rules for folder types, `name [output]` annotations, subfolders and path
traversal, whose exact bare 400/403/404 answers a client must handle, and they are where
untrusted image bytes are decoded (through `imagefiles`, which bounds that). Kept apart from
the queue endpoints (`routes_queue`) and the route table (`routes`), which imports these.
"""

from __future__ import annotations

import json
import mimetypes
import os
from collections.abc import Callable
from typing import Any

from hotfolder.sim.context import SimContext
from hotfolder.sim.imagefiles import (
    PngError,
    alpha_png,
    decode_png,
    encode_jpeg,
    encode_png,
    save_with_mask_alpha,
)
from hotfolder.sim.web import Request, Response, empty, json_response, parse_multipart, trouble


def _annotated(name: str, sim: SimContext) -> tuple[str, str | None]:
    for suffix, folder in (
        ("[output]", sim.output_dir),
        ("[input]", sim.input_dir),
        ("[temp]", sim.temp_dir),
    ):
        if name.endswith(suffix):
            return name[: -(len(suffix) + 1)], folder
    return name, None


def get_view(sim: SimContext, req: Request) -> Response:
    query = req.query
    if "filename" not in query:
        return empty(404)
    filename, folder = _annotated(query["filename"], sim)
    if not filename:
        return empty(400)
    if filename[0] == "/" or ".." in filename:
        return empty(400)
    if folder is None:
        folder = {"output": sim.output_dir, "input": sim.input_dir, "temp": sim.temp_dir}.get(
            query.get("type", "output")
        )
        if folder is None:
            return empty(400)
    if "subfolder" in query:
        full = os.path.join(folder, query["subfolder"])
        if os.path.commonpath((os.path.abspath(full), folder)) != folder:
            return empty(403)
        folder = full
    filename = os.path.basename(filename)
    path = os.path.join(folder, filename)
    if not os.path.isfile(path):
        return empty(404)
    with open(path, "rb") as handle:
        data = handle.read()
    headers = {"Content-Disposition": f'filename="{filename}"'}
    channel = query.get("channel", "rgba")
    try:
        if "preview" in query:
            info = query["preview"].split(";")
            quality = int(info[-1]) if info[-1].isdigit() else 90
            if info[0] == "jpeg" and "a" not in query.get("channel", ""):
                width, height, rgb, _ = decode_png(data)
                return Response(
                    200, encode_jpeg(width, height, rgb, quality), "image/jpeg", headers
                )
            # WebP previews are not encoded here: the original file is served instead.
        elif channel == "rgb":
            width, height, rgb, _ = decode_png(data)
            return Response(200, encode_png(width, height, rgb), "image/png", headers)
        elif channel == "a":
            width, height, _, alpha = decode_png(data)
            return Response(200, alpha_png(width, height, alpha), "image/png", headers)
    except PngError:
        pass
    content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    if sim.api.view_nosniff and "preview" not in query:  # newer: the file itself, as is
        headers["X-Content-Type-Options"] = "nosniff"
    return Response(200, data, content_type, headers)


def post_upload_image(sim: SimContext, req: Request) -> Response:
    try:
        parts = parse_multipart(req.headers.get("content-type", ""), req.body)
    except ValueError:
        return empty(400)
    return _image_upload(sim, parts)


def post_upload_mask(sim: SimContext, req: Request) -> Response:
    """Like /upload/image, except that what is saved is a copy of `original_ref` (a file in
    the input, output or temp folder) whose alpha channel is the uploaded image's alpha.

    As in ComfyUI 0.3.64, the checks of `original_ref` live inside the save step, whose return
    value is ignored: a bad or missing original still answers 200 with the name, and nothing
    is written. A missing or non-JSON `original_ref` is an unhandled error (500).
    """
    try:
        parts = parse_multipart(req.headers.get("content-type", ""), req.body)
    except ValueError:
        return empty(400)

    def save(data: bytes, path: str) -> None:
        ref_part = parts.get("original_ref")
        original_ref = json.loads(ref_part.data.decode("utf-8") if ref_part else None)  # type: ignore[arg-type]
        filename, folder = _annotated(original_ref["filename"], sim)
        if filename[0] == "/" or ".." in filename:
            return
        if folder is None:
            folder = {"output": sim.output_dir, "input": sim.input_dir,
                      "temp": sim.temp_dir}.get(original_ref.get("type", "output"))
        if folder is None:
            return
        if original_ref.get("subfolder", "") != "":
            full = os.path.join(folder, original_ref["subfolder"])
            if os.path.commonpath((os.path.abspath(full), folder)) != folder:
                return
            folder = full
        source = os.path.join(folder, filename)
        if os.path.isfile(source):
            save_with_mask_alpha(source, data, path)

    try:
        return _image_upload(sim, parts, save)
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, OSError):
        return trouble()  # aiohttp's answer to an exception in the handler


def _image_upload(sim: SimContext, parts: dict[str, Any],
                  save: Callable[[bytes, str], None] | None = None) -> Response:
    """ComfyUI's `image_upload`: the naming, duplicate and traversal rules of both routes."""

    def text(name: str) -> str | None:
        part = parts.get(name)
        return None if part is None else part.data.decode("utf-8", "replace")

    image = parts.get("image")
    if image is None or image.filename is None:
        return empty(400)
    filename = image.filename
    if not filename:
        return empty(400)
    kind = text("type") or "input"
    upload_dir = {"input": sim.input_dir, "temp": sim.temp_dir, "output": sim.output_dir}.get(kind)
    if upload_dir is None:
        return trouble()  # the real get_dir_by_type fails on an unknown type
    subfolder = text("subfolder") or ""
    folder = os.path.join(upload_dir, os.path.normpath(subfolder))
    path = os.path.abspath(os.path.join(folder, filename))
    if os.path.commonpath((upload_dir, path)) != upload_dir:
        return empty(400)
    os.makedirs(folder, exist_ok=True)
    duplicate = False
    if text("overwrite") not in ("true", "1"):
        stem, ext = os.path.splitext(filename)
        counter = 1
        while os.path.exists(path):
            with open(path, "rb") as handle:
                if handle.read() == image.data:
                    duplicate = True
                    break
            filename = f"{stem} ({counter}){ext}"
            path = os.path.join(folder, filename)
            counter += 1
    if not duplicate:
        if save is not None:
            save(image.data, path)
        else:
            with open(path, "wb") as handle:
                handle.write(image.data)
    sim.counters["uploads"] += 1
    return json_response({"name": filename, "subfolder": subfolder, "type": kind})
