"""What newer servers add to output entries: `metadata`, `id` and `preview_id`.

Derived from ComfyUI's source (comfy_execution/media_enrichment.py and asset_enrichment.py),
not recorded. Right after an output node runs, each file entry whose file exists in its folder
gets `metadata` (for an image `{"kind": "image", "width", "height"}`); that version is what
the cache keeps. The history entry and the `executed` message get a copy that also carries
the file's asset `id` and, for an image (its own preview), `preview_id` equal to it. A cached
replay registers the same files again: the ids are dropped and set anew. A client should
ignore keys it does not know, which is what these are there to test.
"""

from __future__ import annotations

import copy
import mimetypes
import os
import struct
import uuid
from typing import Any

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _entries(output_ui: dict[str, Any]):
    for entries in output_ui.values():
        if isinstance(entries, list):
            yield from (e for e in entries if isinstance(e, dict))


def _path(entry: dict[str, Any], folders: dict[str, str]) -> str | None:
    """The entry's file, if it is inside the folder of its type and exists."""
    filename, subfolder = entry.get("filename"), entry.get("subfolder") or ""
    base = folders.get(entry.get("type")) if isinstance(entry.get("type"), str) else None
    if base is None or not isinstance(filename, str) or not isinstance(subfolder, str):
        return None
    base = os.path.abspath(base)
    path = os.path.abspath(os.path.join(base, subfolder, filename))
    try:
        if os.path.commonpath((base, path)) != base:
            return None
    except ValueError:
        return None
    return path if os.path.isfile(path) else None


def _image_size(path: str) -> tuple[int, int] | None:
    """Width and height from a PNG header (the simulator writes its images as PNG)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(24)
    except OSError:
        return None
    if len(head) < 24 or not head.startswith(PNG_MAGIC) or head[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", head[16:24])
    return (width, height) if width > 0 and height > 0 else None


def with_media_metadata(output_ui: dict[str, Any], folders: dict[str, str]) -> dict[str, Any]:
    """A copy whose image entries carry `metadata`; an entry that has one keeps it."""
    out: dict[str, Any] = {}
    for key, entries in output_ui.items():
        if not isinstance(entries, list):
            out[key] = entries
            continue
        out[key] = []
        for entry in entries:
            path = _path(entry, folders) if isinstance(entry, dict) else None
            mime = mimetypes.guess_type(str(entry.get("filename")), strict=False)[0] \
                if path else None
            size = _image_size(path) if path and mime and mime.startswith("image/") else None
            if size is not None and "metadata" not in entry:
                entry = {**entry, "metadata": {"kind": "image", "width": size[0],
                                               "height": size[1]}}
            out[key].append(entry)
    return out


def registered(
    output_ui: dict[str, Any], folders: dict[str, str], asset_ids: dict[str, str]
) -> dict[str, Any]:
    """A copy with each existing file's asset `id` (and `preview_id` for an image).

    `asset_ids` maps a file to its id, so registering the same file again (a cached replay)
    gives the same id.
    """
    out = copy.deepcopy(output_ui)
    for entry in _entries(out):
        entry.pop("id", None)
        entry.pop("preview_id", None)
        path = _path(entry, folders)
        if path is None:
            continue
        entry["id"] = asset_ids.setdefault(path, str(uuid.uuid4()))
        mime = mimetypes.guess_type(path, strict=False)[0] or ""
        if mime.startswith("image/"):
            entry["preview_id"] = entry["id"]
    return out
