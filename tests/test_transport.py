"""The client's requests behind what sits in front of ComfyUI: a load balancer that sets a
sticky cookie, a redirect, a path prefix, an HTTP proxy; and the failures to get an answer,
each a `ServerError` that says whether the request may have been sent. A job's POST /prompt
is sent once, whatever the answer carries."""

from __future__ import annotations

import io
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from hotfolder.comfy.client import ComfyClient
from hotfolder.errors import ServerError


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
        if self.path.endswith("/old/queue"):
            self._answer(307, b"", Location=self.path.replace("/old/queue", "/queue"))
        elif self.path.endswith("/queue"):
            self._answer(200, json.dumps({"queue_running": [], "queue_pending": []}).encode(),
                         Content_Type="application/json")
        else:
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


def test_a_redirect_is_followed_once(sticky_url):
    client = ComfyClient(sticky_url, timeout=10)
    assert client._json("GET", "/old/queue") == {"queue_running": [], "queue_pending": []}
    assert _Sticky.seen == [("GET", "/old/queue", None)] * 2 + [("GET", "/queue", None)]


def test_a_server_url_with_a_path_keeps_it_in_every_request(sticky_url):
    client = ComfyClient(sticky_url + "/comfy", timeout=10)
    client.submit({"1": {"class_type": "X", "inputs": {}}}, prompt_id="p-1", client_id="c")
    assert client._json("GET", "/queue")["queue_pending"] == []
    assert [path for _, path, _ in _Sticky.seen] == ["/comfy/prompt", "/comfy/queue"]


def test_an_http_proxy_from_the_environment_is_used(sticky_url, monkeypatch):
    for name in ("no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("http_proxy", sticky_url)  # it answers whatever it is asked to fetch
    client = ComfyClient("http://comfy.invalid:8188", timeout=10)
    assert client._json("GET", "/queue")["queue_pending"] == []
    assert _Sticky.seen == [("GET", "http://comfy.invalid:8188/queue", None)]


def test_a_refused_connection_was_not_sent():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    client = ComfyClient(f"http://127.0.0.1:{port}", timeout=10)
    with pytest.raises(ServerError) as caught:
        client.submit({}, prompt_id="p-1", client_id="c")
    assert not caught.value.uncertain and "connection refused" in caught.value.message


def test_a_request_accepted_and_never_answered_may_have_been_sent():
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        client = ComfyClient(f"http://127.0.0.1:{port}", timeout=0.3)
        with pytest.raises(ServerError) as caught:
            client.submit({}, prompt_id="p-1", client_id="c")
    assert caught.value.uncertain and "did not answer POST /prompt" in caught.value.message


def test_a_cookie_set_on_an_upload_goes_along_with_later_requests(sticky_url):
    client = ComfyClient(sticky_url, timeout=10)
    client._request("POST", "/upload/image", files={"image": ("a.png", b"PNG", "image/png")})
    client._json("GET", "/queue")
    assert _Sticky.seen == [("POST", "/upload/image", None), ("GET", "/queue", "lb=gpu-7")]
