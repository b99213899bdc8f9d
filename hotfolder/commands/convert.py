"""`hotfolder convert`: a GUI-format workflow in, the API-format prompt out.

The node definitions come from a running server's /object_info or from a saved copy of it,
since the widget values in a GUI save are only positions until a definition names them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from hotfolder.comfy.client import ComfyClient
from hotfolder.errors import JobError, ServerError
from hotfolder.job.parse import decode_text
from hotfolder.workflow.graph import is_gui_workflow, workflow_format
from hotfolder.workflow.gui2api.convert import convert

DEFAULT_SERVER = "http://127.0.0.1:8188"


def run_convert(source: Path, *, server: str | None, object_info: Path | None,
                output: Path | None, out: TextIO, err: TextIO) -> int:
    """0 when converted, 1 when the workflow cannot be converted or no definitions were had,
    2 when a file cannot be read."""
    try:
        gui = _read_json(source, "workflow")
        info = _read_json(object_info, "/object_info") if object_info else None
    except (OSError, ValueError, JobError) as exc:
        err.write(f"hotfolder: {_reason(exc)}\n")
        return 2
    if not is_gui_workflow(gui):
        if workflow_format(gui) == "api":
            err.write(f"hotfolder: {source} is already in API format; written out unchanged\n")
            return _write(gui, output, out)
        err.write(f"hotfolder: {source} is not a ComfyUI workflow (no nodes and links)\n")
        return 1
    if info is None:
        url = server or DEFAULT_SERVER
        try:
            info = ComfyClient(url).object_info()
        except ServerError as exc:
            err.write(f"hotfolder: cannot get the node definitions: {exc.message}\n")
            return 1
    if not isinstance(info, Mapping) or not info:
        err.write("hotfolder: the node definitions are empty or not a JSON object\n")
        return 1
    try:
        prompt = convert(gui, info)
    except JobError as exc:
        err.write(f"hotfolder: {exc.message}\n")
        return 1
    return _write(prompt, output, out)


def _read_json(path: Path, what: str) -> Any:
    text = decode_text(path.read_bytes())
    if not text.strip():
        raise ValueError(f"{path} is empty ({what})")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({what}): line {exc.lineno}, column "
                         f"{exc.colno}: {exc.msg}") from exc


def _write(data: Any, output: Path | None, out: TextIO) -> int:
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    if output is None:
        out.write(text)
    else:
        output.write_text(text, encoding="utf-8")
    return 0


def _reason(exc: Exception) -> str:
    if isinstance(exc, JobError):
        return exc.message
    if isinstance(exc, OSError):
        return f"cannot read {exc.filename}: {exc.strerror or exc}"
    return str(exc)
