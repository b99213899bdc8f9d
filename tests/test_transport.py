"""The client's requests behind what sits in front of ComfyUI: a load balancer that sets a
sticky cookie. A job's POST /prompt is sent once, whatever the answer carries."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from hotfolder.comfy.client import ComfyClient


class _Sticky(BaseHTTPRequestHandler):
    """A balancer's answers: a cookie with every POST /prompt; each request is noted."""

    seen: ClassVar[list[tuple[str, str, str | None]]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: bytes, **headers: str) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key.replace("_", "-"), value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append(("POST", self.path, self.headers.get("Cookie")))
        prompt_id = "p-1"
        self._answer(200, json.dumps({"prompt_id": prompt_id, "number": 0,
                                      "node_errors": {}}).encode(),
                     Content_Type="application/json", Set_Cookie="lb=gpu-7; Path=/")

    def do_GET(self) -> None:
        self.seen.append(("GET", self.path.split("?")[0], self.headers.get("Cookie")))
        self._answer(200, b"PNG-BYTES", Content_Type="image/png")


@pytest.fixture
def sticky_url() -> Iterator[str]:
    _Sticky.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Sticky)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_prompt_answered_with_a_cookie_is_sent_once_and_the_cookie_goes_along(sticky_url):
    client = ComfyClient(sticky_url, timeout=10)
    client.submit({"1": {"class_type": "X", "inputs": {}}}, prompt_id="p-1", client_id="c")
    sink = io.BytesIO()
    client.download({"filename": "a.png", "subfolder": "", "type": "output"}, sink)
    assert sink.getvalue() == b"PNG-BYTES"
    assert _Sticky.seen == [("POST", "/prompt", None), ("GET", "/view", "lb=gpu-7")]
