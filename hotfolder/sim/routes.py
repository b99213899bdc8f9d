"""The HTTP endpoints of ComfyUI 0.3.64 that a client uses, plus the simulator's `/sim/*`.

Each endpoint reproduces the captured status codes and body shapes, including the odd ones
(a GUI workflow as `prompt` crashes with a plain 500, `/history?max_items=abc` too, `/view`
answers bare 400/403/404), because a robust client has to be tested against exactly those.
"""

from __future__ import annotations

import json
import mimetypes
import os
import platform
import re
import sys
import uuid
from collections.abc import Callable
from typing import Any

from hotfolder.sim.catalog import MODEL_FOLDERS, models_in
from hotfolder.sim.context import SimContext
from hotfolder.sim.imagefiles import (
    PngError,
    alpha_png,
    decode_png,
    encode_jpeg,
    encode_png,
    save_with_mask_alpha,
)
from hotfolder.sim.validate import PromptCrash, validate_prompt
from hotfolder.sim.web import Request, Response, empty, json_response, parse_multipart, trouble

Handler = Callable[[SimContext, Request], Response]
COMFYUI_VERSION = "0.3.64"
MAX_UPLOAD_SIZE = 100 * 1024 * 1024
FEATURES = {"supports_preview_metadata": True, "max_upload_size": MAX_UPLOAD_SIZE}


def _field(data: Any, key: str, default: Any = None) -> Any:
    """`key in data` then `data[key]`, as ComfyUI reads request bodies (a list has no keys)."""
    return data[key] if isinstance(data, dict) and key in data else default


def _no_prompt() -> Response:
    error = {
        "type": "no_prompt",
        "message": "No prompt provided",
        "details": "No prompt provided",
        "extra_info": {},
    }
    return json_response({"error": error, "node_errors": {}}, 400)


def post_prompt(sim: SimContext, req: Request) -> Response:
    engine = sim.engine
    if sim.fault_state.take_http_5xx():
        sim.counters["http_5xx_injected"] += 1
        return trouble()
    try:
        data = req.json()
        if "number" in data:
            number: Any = float(data["number"])
        else:
            number = engine.next_number(front="front" in data and bool(data["front"]))
        if "prompt" not in data:
            sim.counters["prompts_rejected"] += 1
            return _no_prompt()
        prompt = data["prompt"]
        prompt_id = str(data.get("prompt_id", uuid.uuid4()))
        partial = _field(data, "partial_execution_targets")
        ok, error, outputs, node_errors = validate_prompt(prompt, sim.catalog, partial)
        extra_data = _field(data, "extra_data", {})
        if "client_id" in data:
            extra_data["client_id"] = data["client_id"]
    except (ValueError, TypeError, KeyError, AttributeError, PromptCrash):
        sim.counters["prompts_rejected"] += 1
        return trouble()
    if not ok:
        sim.counters["prompts_rejected"] += 1
        return json_response({"error": error, "node_errors": node_errors}, 400)
    engine.put(number, prompt_id, prompt, extra_data, outputs)
    return json_response({"prompt_id": prompt_id, "number": number, "node_errors": node_errors})


def get_prompt(sim: SimContext, req: Request) -> Response:
    return json_response(sim.engine.queue_info())


def get_queue(sim: SimContext, req: Request) -> Response:
    running, pending = sim.engine.current_queue()
    return json_response({"queue_running": running, "queue_pending": pending})


def post_queue(sim: SimContext, req: Request) -> Response:
    data = req.json()
    if _field(data, "clear"):
        sim.engine.clear_pending()
    if _field(data, "delete") is not None:
        for prompt_id in data["delete"]:
            sim.engine.delete_pending(prompt_id)
    return empty(200)


def get_history(sim: SimContext, req: Request) -> Response:
    max_items = int(req.query["max_items"]) if "max_items" in req.query else None
    offset = int(req.query["offset"]) if "offset" in req.query else -1
    return json_response(sim.engine.get_history(max_items=max_items, offset=offset))


def get_history_item(sim: SimContext, req: Request) -> Response:
    return json_response(sim.engine.get_history(req.params["prompt_id"]))


def post_history(sim: SimContext, req: Request) -> Response:
    data = req.json()
    if _field(data, "clear"):
        sim.engine.clear_history()
    if _field(data, "delete") is not None:
        for prompt_id in data["delete"]:
            sim.engine.delete_history(prompt_id)
    return empty(200)


def post_interrupt(sim: SimContext, req: Request) -> Response:
    data = req.json_or({})
    sim.engine.interrupt(data.get("prompt_id"))
    return empty(200)


def post_free(sim: SimContext, req: Request) -> Response:
    req.json_or({})
    return empty(200)


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


def get_object_info(sim: SimContext, req: Request) -> Response:
    return json_response(sim.catalog.all())


def get_object_info_class(sim: SimContext, req: Request) -> Response:
    name = req.params["node_class"]
    info = sim.catalog.info(name)
    return json_response({} if info is None else {name: info})


def get_system_stats(sim: SimContext, req: Request) -> Response:
    ram = 16 * 1024**3
    device = {
        "name": "hotfolder-sim (simulated GPU)",
        "type": "cpu",
        "index": None,
        "vram_total": ram,
        "vram_free": ram,
        "torch_vram_total": ram,
        "torch_vram_free": ram,
    }
    system = {
        "os": os.name,
        "ram_total": ram,
        "ram_free": ram,
        "comfyui_version": COMFYUI_VERSION,
        "required_frontend_version": "1.27.10",
        "installed_templates_version": "0.1.95",
        "required_templates_version": "0.1.95",
        "python_version": sys.version,
        "pytorch_version": f"simulated ({platform.python_implementation()})",
        "embedded_python": False,
        "argv": [
            "main.py",
            "--listen",
            sim.host,
            "--port",
            str(sim.port),
            "--output-directory",
            sim.output_dir,
        ],
    }
    return json_response({"system": system, "devices": [device]})


def get_features(sim: SimContext, req: Request) -> Response:
    return json_response(dict(FEATURES))


def get_models(sim: SimContext, req: Request) -> Response:
    return json_response(list(MODEL_FOLDERS))


def get_models_folder(sim: SimContext, req: Request) -> Response:
    files = models_in(req.params["folder"])
    return empty(404) if files is None else json_response(files)


def get_embeddings(sim: SimContext, req: Request) -> Response:
    return json_response([])


def get_root(sim: SimContext, req: Request) -> Response:
    html = (
        b"<!doctype html><title>ComfyUI simulator</title><p>hotfolder ComfyUI API simulator "
        b"(no web UI). See /system_stats, /object_info, /queue, /history.</p>"
    )
    return Response(200, html, "text/html; charset=utf-8")


def get_sim_faults(sim: SimContext, req: Request) -> Response:
    return json_response(sim.fault_state.snapshot())


def post_sim_faults(sim: SimContext, req: Request) -> Response:
    try:
        return json_response(sim.fault_state.update(req.json()))
    except ValueError as exc:
        return json_response({"error": str(exc)}, 400)


def get_sim_stats(sim: SimContext, req: Request) -> Response:
    return json_response(sim.stats())


ROUTES: list[tuple[str, re.Pattern[str], Handler]] = [
    (method, re.compile(f"^{pattern}$"), handler)
    for method, pattern, handler in [
        ("GET", "/", get_root),
        ("GET", "/prompt", get_prompt),
        ("POST", "/prompt", post_prompt),
        ("GET", "/queue", get_queue),
        ("POST", "/queue", post_queue),
        ("GET", "/history", get_history),
        ("POST", "/history", post_history),
        ("GET", "/history/(?P<prompt_id>[^/]+)", get_history_item),
        ("POST", "/interrupt", post_interrupt),
        ("POST", "/free", post_free),
        ("GET", "/view", get_view),
        ("POST", "/upload/image", post_upload_image),
        ("POST", "/upload/mask", post_upload_mask),
        ("GET", "/object_info", get_object_info),
        ("GET", "/object_info/(?P<node_class>[^/]+)", get_object_info_class),
        ("GET", "/system_stats", get_system_stats),
        ("GET", "/features", get_features),
        ("GET", "/models", get_models),
        ("GET", "/models/(?P<folder>[^/]+)", get_models_folder),
        ("GET", "/embeddings", get_embeddings),
        ("GET", "/sim/faults", get_sim_faults),
        ("POST", "/sim/faults", post_sim_faults),
        ("GET", "/sim/stats", get_sim_stats),
    ]
]


def match(method: str, path: str) -> tuple[Handler | None, dict[str, str], bool]:
    """(handler, path params, path_known). path_known without handler means 405."""
    known = False
    for route_method, pattern, handler in ROUTES:
        found = pattern.match(path)
        if found is None:
            continue
        known = True
        if route_method == method or (method == "HEAD" and route_method == "GET"):
            return handler, found.groupdict(), True
    return None, {}, known
