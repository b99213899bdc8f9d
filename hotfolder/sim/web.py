"""Request/response plumbing shared by the routes, shaped after aiohttp's answers.

ComfyUI runs on aiohttp; clients see its conventions: JSON as `application/json;
charset=utf-8`, bare status codes with an empty body and no Content-Type, the plain-text 500
"Server got itself in trouble" for any unhandled exception, and "404: Not Found" for unknown
routes. These helpers make every route answer in those exact forms.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

JSON_TYPE = "application/json; charset=utf-8"
TEXT_TYPE = "text/plain; charset=utf-8"
TROUBLE = b"500 Internal Server Error\n\nServer got itself in trouble"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes
    params: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        """Parse the body like aiohttp's `request.json()`; raises ValueError when invalid."""
        return json.loads(self.body.decode("utf-8"))

    def json_or(self, default: Any) -> Any:
        try:
            return self.json()
        except ValueError:
            return default


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


def json_response(data: Any, status: int = 200) -> Response:
    return Response(status, json.dumps(data).encode("utf-8"), JSON_TYPE)


def empty(status: int = 200) -> Response:
    return Response(status)


def trouble() -> Response:
    return Response(500, TROUBLE, TEXT_TYPE)


def not_found() -> Response:
    return Response(404, b"404: Not Found", TEXT_TYPE)


def method_not_allowed() -> Response:
    return Response(405, b"405: Method Not Allowed", TEXT_TYPE)


@dataclass
class Part:
    name: str
    filename: str | None
    data: bytes


_PARAM = re.compile(r';\s*([A-Za-z0-9_*-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')


def _header_params(value: str) -> dict[str, str]:
    out = {}
    for key, raw in _PARAM.findall(value):
        raw = raw.strip()
        if raw.startswith('"') and raw.endswith('"'):
            raw = raw[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        out[key.lower()] = raw
    return out


def parse_multipart(content_type: str, body: bytes) -> dict[str, Part]:
    """Parse multipart/form-data; the first part of each name wins."""
    params = _header_params(content_type)
    boundary = params.get("boundary")
    if not content_type.lower().startswith("multipart/form-data") or not boundary:
        raise ValueError("not multipart/form-data")
    delimiter = b"--" + boundary.encode("latin-1")
    parts: dict[str, Part] = {}
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        chunk = chunk[2:] if chunk.startswith(b"\r\n") else chunk
        head, sep, data = chunk.partition(b"\r\n\r\n")
        if not sep:
            continue
        if data.endswith(b"\r\n"):
            data = data[:-2]
        headers = {}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        disposition = _header_params(";" + headers.get("content-disposition", "").partition(";")[2])
        name = disposition.get("name")
        if name is None or name in parts:
            continue
        parts[name] = Part(name, disposition.get("filename"), data)
    return parts
