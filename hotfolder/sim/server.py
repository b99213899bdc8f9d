"""`SimServer`: the simulator's HTTP + WebSocket front, on a stdlib ThreadingHTTPServer.

HTTP/1.1 keep-alive is supported (the client uses a `requests.Session`), each connection gets a
daemon thread so dozens of concurrent clients stay served, and `stop()` cuts every open
connection: a kept-alive socket must not keep talking to a simulator that was "restarted".
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from hotfolder import __version__
from hotfolder.sim import routes
from hotfolder.sim.api import api_behaviour
from hotfolder.sim.catalog import Catalog
from hotfolder.sim.engine import Engine
from hotfolder.sim.faults import Faults, FaultState
from hotfolder.sim.hub import SocketHub
from hotfolder.sim.imagefiles import encode_png
from hotfolder.sim.web import Request, Response, empty, method_not_allowed, not_found, trouble
from hotfolder.sim.websocket import WebSocket, accept_key

MAX_BODY = routes.MAX_UPLOAD_SIZE + 1024 * 1024


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def origin_mismatch(headers: dict[str, str]) -> bool:
    """ComfyUI's origin-only middleware: a loopback Host with a different Origin gets a 403."""
    host, origin = headers.get("host"), headers.get("origin")
    if not host or not origin:
        return False
    host_domain = host.lower()
    parsed_origin = urlsplit(origin)
    origin_domain = parsed_origin.netloc.lower()
    parsed_host = urlsplit("//" + host_domain)
    try:
        origin_port, host_port = parsed_origin.port, parsed_host.port
    except ValueError:
        return False
    if origin_port is None:
        host_domain = parsed_host.hostname or ""
    if host_port is None:
        origin_domain = parsed_origin.hostname or ""
    return (
        _is_loopback(parsed_host.hostname)
        and bool(host_domain)
        and bool(origin_domain)
        and (host_domain != origin_domain)
    )


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], sim: SimServer) -> None:
        self.sim = sim
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def close_connections(self) -> None:
        with self.connections_lock:
            open_sockets = list(self.connections)
        for sock in open_sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = f"hotfolder-sim/{__version__}"
    sys_version = ""
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes: without this, Nagle plus the client's
        # delayed ACK add ~40 ms to every keep-alive request (and to WebSocket frames).
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: an unconfigured structlog would print every request to stdout."""

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_OPTIONS(self) -> None:
        self._dispatch("OPTIONS")

    def _read_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            total = 0
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                total += size
                if total > MAX_BODY:
                    return None
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            return None
        return self.rfile.read(length) if length > 0 else b""

    def _dispatch(self, method: str) -> None:
        sim = self.server.sim
        try:
            body = self._read_body()
        except (ValueError, OSError):
            self.close_connection = True
            self._send(Response(400, b"bad request body", "text/plain; charset=utf-8"))
            return
        if body is None:
            self.close_connection = True
            self._send(Response(413, b"413: Request Entity Too Large", "text/plain; charset=utf-8"))
            return
        split = urlsplit(self.path)
        headers = {k.lower(): v for k, v in self.headers.items()}
        query: dict[str, str] = {}
        for key, value in parse_qsl(split.query, keep_blank_values=True):
            query.setdefault(key, value)
        request = Request(method, unquote(split.path), query, headers, body)
        if origin_mismatch(headers):
            self._send(empty(403))
            return
        slow = sim.fault_state.faults.slow_seconds
        if slow > 0 and not split.path.startswith("/sim/"):
            time.sleep(slow)
        if split.path == "/ws" and method == "GET":
            self._websocket(request)
            return
        if method == "OPTIONS":
            self._send(empty(200))
            return
        handler, params, known = routes.match(method, request.path, sim.api)
        if handler is None:
            self._send(method_not_allowed() if known else not_found())
            return
        request.params = params
        try:
            response = handler(sim, request)
        except Exception:  # noqa: BLE001 - aiohttp answers any route exception with a plain 500
            response = trouble()
        trickle = sim.fault_state.faults.trickle_seconds if request.path == "/view" else 0.0
        self._send(response, head=method == "HEAD", trickle=trickle)

    def _send(self, response: Response, head: bool = False, trickle: float = 0.0) -> None:
        try:
            self.send_response(response.status)
            if response.content_type:
                self.send_header("Content-Type", response.content_type)
            for key, value in response.headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            if not head and response.body and trickle > 0:  # a link that barely moves
                for i in range(len(response.body)):
                    self.wfile.write(response.body[i:i + 1])
                    self.wfile.flush()
                    time.sleep(trickle)
            elif not head and response.body:
                self.wfile.write(response.body)
        except OSError:
            self.close_connection = True

    def _websocket(self, request: Request) -> None:
        sim = self.server.sim
        if sim.fault_state.faults.no_ws:
            self._send(not_found())
            return
        key = request.headers.get("sec-websocket-key")
        if request.headers.get("upgrade", "").lower() != "websocket" or not key:
            self._send(
                Response(400, b'Can "Upgrade" only to "WebSocket".', "text/plain; charset=utf-8")
            )
            return
        sid = request.query.get("clientId", "") or uuid.uuid4().hex
        self.close_connection = True
        ws = WebSocket(self.connection, self.rfile, drop_after=sim.fault_state.faults.drop_ws_after)
        engine = sim.engine
        ws.send_text(
            json.dumps({"type": "status", "data": {"status": engine.queue_info(), "sid": sid}})
        )
        if engine.client_id == sid and engine.last_node_id is not None:
            ws.send_text(json.dumps({"type": "executing", "data": {"node": engine.last_node_id}}))
        sim.hub.register(sid, ws)
        try:
            self.send_response(101, "Switching Protocols")
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.send_header("Sec-WebSocket-Accept", accept_key(key))
            self.end_headers()
            self.wfile.flush()
        except OSError:
            sim.hub.unregister(sid)
            ws.abort()
            return
        ws.start()
        first = True

        def on_text(text: str) -> None:
            nonlocal first
            try:
                message = json.loads(text)
                if first and isinstance(message, dict) and message.get("type") == "feature_flags":
                    flags = message.get("data", {})
                    ws.feature_flags = flags if isinstance(flags, dict) else {}
                    sim.hub.send("feature_flags", dict(routes.FEATURES), sid)
            except ValueError:
                pass
            first = False

        try:
            ws.serve(on_text)
        finally:
            sim.hub.unregister(sid)


class SimServer:
    """A ComfyUI look-alike: `start()` serves in background threads, `stop()` ends it.

    `api` picks the server imitated: "0.3.64" (recorded, the default) or "newer" (see `api`).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        job_seconds: float = 0.2,
        faults: Faults | None = None,
        output_dir: str | os.PathLike[str] | None = None,
        *,
        input_dir: str | os.PathLike[str] | None = None,
        preview_method: str | None = None,
        random_seed: int | None = None,
        api: str = "0.3.64",
        model_load_seconds: float = 0.0,
    ) -> None:
        self.api = api_behaviour(api)
        self.host = host
        self._requested_port = port
        self.job_seconds = job_seconds
        self.fault_state = FaultState(faults if faults is not None else Faults(), random_seed)
        self._scratch = tempfile.mkdtemp(prefix="hotfolder-sim-")
        self.output_dir = self._folder(output_dir, "output")
        self.input_dir = self._folder(input_dir, "input")
        self.temp_dir = self._folder(None, "temp")
        self.catalog = Catalog(self.input_dir)
        self.hub = SocketHub()
        self.engine = Engine(
            self.catalog,
            self.hub,
            self.fault_state,
            output_dir=self.output_dir,
            input_dir=self.input_dir,
            temp_dir=self.temp_dir,
            job_seconds=job_seconds,
            preview_method=preview_method,
            api=self.api,
            model_load_seconds=model_load_seconds,
        )
        self.counters = {"prompts_rejected": 0, "http_5xx_injected": 0,
                         "http_5xx_after_queue": 0, "uploads": 0}
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = port

    def _folder(self, given: str | os.PathLike[str] | None, name: str) -> str:
        path = os.path.join(self._scratch, name) if given is None else os.fspath(given)
        path = os.path.abspath(path)
        os.makedirs(path, exist_ok=True)
        return path

    @property
    def faults(self) -> Faults:
        return self.fault_state.faults

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def job_seconds(self) -> float:
        return self._job_seconds

    @job_seconds.setter
    def job_seconds(self, value: float) -> None:
        self._job_seconds = float(value)
        if hasattr(self, "engine"):
            self.engine.job_seconds = self._job_seconds

    @property
    def model_load_seconds(self) -> float:  # what switching models costs (sim/models.py)
        return self.engine.models.load_seconds

    @model_load_seconds.setter
    def model_load_seconds(self, value: float) -> None:
        self.engine.models.load_seconds = float(value)

    def set_faults(self, **updates: Any) -> dict[str, Any]:
        return self.fault_state.update(updates)

    def start(self) -> SimServer:
        example = os.path.join(self.input_dir, "example.png")
        if not os.path.exists(example):
            with open(example, "wb") as handle:
                handle.write(encode_png(8, 8, bytes((90, 140, 200)) * 64))
        self._httpd = _HTTPServer((self.host, self._requested_port), self)
        self.port = self._httpd.server_address[1]
        self.engine.start()
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.01},
            name="sim-http",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, cut open connections, end the worker; safe to call twice."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self.hub.close_all()
            self._httpd.close_connections()
            self.engine.stop()
            self._httpd = None
        shutil.rmtree(self._scratch, ignore_errors=True)

    def __enter__(self) -> SimServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stats(self) -> dict[str, Any]:
        engine = self.engine
        with engine.mutex:
            out = dict(engine.stats)
            out["queue_remaining"] = len(engine.queue) + len(engine.running)
        out["busy_seconds"] = round(out["busy_seconds"], 6)
        out.update(self.counters)
        out.update(engine.models.counters())
        out["websockets"] = self.hub.count()
        return out
