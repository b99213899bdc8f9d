"""Contract tests: every capture from the real ComfyUI runs through the real client code.

`tests/fixtures/comfy-api/` holds exchanges recorded from a real ComfyUI 0.3.64 (see its
README). Each recorded HTTP exchange, at whatever depth the recorder nested it, is served by a
small replay server (recorded status, Content-Type and body) to the `ComfyClient` method that
makes that request, and the answer is checked against what the capture says happened. Each
WebSocket capture is fed frame by frame through `CompletionListener`.

A capture is never silently ignored: a route the client does not use must be listed in
`NOT_USED_BY_CLIENT`, a file without exchanges or frames in `FILES_WITHOUT_EXCHANGES`.
"""

from __future__ import annotations

import ast
import base64
import io
import json
import re
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import websocket

from hotfolder.comfy.client import ComfyClient, QueueState, Submitted
from hotfolder.comfy.failure import explain_history_failure
from hotfolder.comfy.listener import CompletionListener
from hotfolder.errors import JobError, ServerError
from hotfolder.job.deliver import collect_outputs
from hotfolder.sim.web import parse_multipart

CAPTURES = Path(__file__).parent / "fixtures" / "comfy-api"

# Routes that appear in the captures but that hotfolder's client never requests.
NOT_USED_BY_CLIENT: dict[str, str] = {
    "GET /history": "the full history can hold 10,000 entries; the client only reads "
                    "/history/{prompt_id}",
    "GET /object_info/{node_class}": "the client reads the whole /object_info once",
    "GET /system_stats": "not needed: liveness is GET /prompt (ping)",
    "GET /features": "the client does not negotiate features",
    "GET /models/{folder}": "model choices come from /object_info",
    "GET /ws": "the WebSocket; its recorded frames are replayed through CompletionListener",
}

# Files (or folders, ending in "/") that hold neither an HTTP exchange nor WebSocket frames.
FILES_WITHOUT_EXCHANGES: dict[str, str] = {
    "workflows/": "API-format workflows used by the captures",
    "object_info_full.json": "the body of GET /object_info, served for "
                             "object_info_full_summary.json",
    "object_info_trimmed.json": "a subset of /object_info, no request recorded",
    "history_all_keys.json": "GET /history listing: only the keys were kept, no request",
    "txt2img_tiny_timing.json": "timings only",
}

# Exchanges whose body was too large to keep in the capture but is stored in another file.
BODY_STORED_IN: dict[str, str] = {
    "object_info_full_summary.json": "object_info_full.json",
}

# What the client puts next to "prompt" in POST /prompt (everything else is ComfyUI's).
PROMPT_BODY_KEYS = ("client_id", "prompt_id", "number", "front", "extra_data",
                    "partial_execution_targets")
PLACEHOLDER_PROMPT_ID = "contract-test-prompt"
PLACEHOLDER_CLIENT_ID = "contract-test-client"
END_MESSAGES = ("execution_success", "execution_error", "execution_interrupted")


# ---------------------------------------------------------------- reading the captures


def route_of(method: str, path: str) -> str:
    """`GET /history/{prompt_id}` for `GET /history/25a1…`: the route, without ids or query."""
    route = unquote(urlsplit(path).path)
    for prefix, placeholder in (("/history/", "{prompt_id}"), ("/object_info/", "{node_class}"),
                                ("/models/", "{folder}")):
        if route.startswith(prefix) and len(route) > len(prefix):
            route = prefix + placeholder
    return f"{method.upper()} {route}"


@dataclass(frozen=True)
class Exchange:
    """One recorded request and the server's answer."""

    file: str  # relative to CAPTURES
    where: str  # e.g. "runs[0].post"; "" when the capture is a single exchange
    record: dict[str, Any]
    scope: dict[str, Any]  # the object holding it (the other steps of the same case)

    @property
    def id(self) -> str:
        return f"{self.file}::{self.where}" if self.where else self.file

    @property
    def request(self) -> dict[str, Any]:
        return self.record["request"]

    @property
    def method(self) -> str:
        return str(self.request["method"]).upper()

    @property
    def path(self) -> str:
        return str(self.request["path"])

    @property
    def status(self) -> int:
        return int(self.record["status"])

    @property
    def route(self) -> str:
        return route_of(self.method, self.path)

    @property
    def json_body(self) -> Any:
        return self.request.get("json_body")

    def answer(self) -> Any:
        """The response body as JSON, or None when it is not JSON."""
        try:
            return json.loads(self.served_body())
        except ValueError:
            return None

    def served_body(self) -> bytes:
        """Exactly the bytes the capture holds (an image body may have been cut short)."""
        if "response_body_base64" in self.record:
            return base64.b64decode(self.record["response_body_base64"])
        if "response_body_text" in self.record:
            return str(self.record["response_body_text"]).encode("utf-8")
        if self.file in BODY_STORED_IN:
            return (CAPTURES / BODY_STORED_IN[self.file]).read_bytes()
        return b""  # e.g. preview_image_temp_output.json::view_temp kept only the length

    def served_headers(self) -> dict[str, str]:
        recorded = self.record.get("response_headers") or {}
        return {k: str(v) for k, v in recorded.items()
                if k.lower() in ("content-type", "content-disposition")}


@dataclass(frozen=True)
class FrameSet:
    """The frames one WebSocket saw, in order, as the recorder stored them."""

    file: str
    where: str
    frames: list[dict[str, Any]]
    scope: dict[str, Any]

    @property
    def id(self) -> str:
        return f"{self.file}::{self.where}"

    def messages(self) -> list[dict[str, Any]]:
        """The decoded JSON text frames (binary frames never reach `handle`)."""
        return [f["json"] for f in self.frames if f.get("kind") == "text"]


def _join(where: str, key: str | int) -> str:
    return f"{where}[{key}]" if isinstance(key, int) else (f"{where}.{key}" if where else key)


def _find_exchanges(node: Any, where: str, scope: dict[str, Any],
                    found: list[tuple[str, dict[str, Any], dict[str, Any]]]) -> None:
    if isinstance(node, dict):
        if "request" in node and "status" in node:
            found.append((where, node, scope))
            return
        for key, value in node.items():
            _find_exchanges(value, _join(where, key), node, found)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _find_exchanges(value, _join(where, i), scope, found)


def _is_frame_list(value: Any) -> bool:
    return (isinstance(value, list) and bool(value)
            and all(isinstance(f, dict) and "kind" in f and "t" in f for f in value))


def _find_frames(node: Any, where: str, scope: dict[str, Any],
                 found: list[tuple[str, list[dict[str, Any]], dict[str, Any]]]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if _is_frame_list(value):
                found.append((_join(where, key), value, node))
            elif (key.endswith("frame") and isinstance(value, dict)
                  and isinstance(value.get("type"), str)):
                # a single decoded message, e.g. ws_connect_without_clientId.json::first_frame
                found.append((_join(where, key), [{"t": 0.0, "kind": "text", "json": value}], node))
            else:
                _find_frames(value, _join(where, key), node, found)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _find_frames(value, _join(where, i), scope, found)


def _capture_files() -> list[Path]:
    # newer/: what current ComfyUI answers (tests/test_client_modes.py, test_sim_newer.py)
    return sorted(p for p in CAPTURES.rglob("*.json")
                  if "newer" not in p.relative_to(CAPTURES).parts)


def _rel(path: Path) -> str:
    return path.relative_to(CAPTURES).as_posix()


def _load_all() -> tuple[list[Exchange], list[FrameSet]]:
    exchanges: list[Exchange] = []
    frame_sets: list[FrameSet] = []
    for path in _capture_files():
        capture = json.loads(path.read_text(encoding="utf-8"))
        root = capture if isinstance(capture, dict) else {}
        found: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
        _find_exchanges(capture, "", root, found)
        exchanges += [Exchange(_rel(path), where, record, scope) for where, record, scope in found]
        frames: list[tuple[str, list[dict[str, Any]], dict[str, Any]]] = []
        _find_frames(capture, "", root, frames)
        frame_sets += [FrameSet(_rel(path), where, fs, scope) for where, fs, scope in frames]
    return exchanges, frame_sets


EXCHANGES, FRAME_SETS = _load_all()


def _history_records() -> dict[str, list[dict[str, Any]]]:
    """Every non-empty history entry in any capture, by prompt id."""
    entries: dict[str, list[dict[str, Any]]] = {}
    for ex in EXCHANGES:
        if ex.route == "GET /history/{prompt_id}" and ex.status == 200:
            for prompt_id, entry in (ex.answer() or {}).items():
                entries.setdefault(prompt_id, []).append(entry)
    return entries


HISTORY = _history_records()


# ---------------------------------------------------------------- the replay server


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.path).query, keep_blank_values=True)


class ReplayServer:
    """127.0.0.1 on a free port; answers with the loaded exchange and keeps what it received.

    A request for another method or path than the recorded one gets a 404 "no recorded
    exchange", so a client that asks for the wrong thing fails loudly.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._exchange: Exchange | None = None
        self._received: list[Received] = []
        replay = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                replay._answer(self)

            do_POST = do_GET

            def log_message(self, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, name="replay",
                                        daemon=True)
        self._thread.start()

    def load(self, exchange: Exchange) -> None:
        with self._lock:
            self._exchange = exchange
            self._received = []

    @property
    def received(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    def only_request(self) -> Received:
        received = self.received
        assert len(received) == 1, f"expected one request, the client made {received}"
        return received[0]

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        got = Received(handler.command, handler.path, dict(handler.headers.items()),
                       handler.rfile.read(length) if length else b"")
        with self._lock:
            self._received.append(got)
            exchange = self._exchange
        if exchange is not None and exchange.method == got.method and (
                unquote(urlsplit(exchange.path).path) == unquote(urlsplit(got.path).path)):
            status, headers, body = (exchange.status, exchange.served_headers(),
                                     exchange.served_body())
        else:
            status, headers = 404, {"Content-Type": "text/plain; charset=utf-8"}
            body = f"replay: no recorded exchange for {got.method} {got.path}".encode()
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.wfile.write(body)


@pytest.fixture(scope="module")
def replay_server() -> Iterator[ReplayServer]:
    server = ReplayServer()
    try:
        yield server
    finally:
        server.close()


def _close_client(client: ComfyClient) -> None:
    client.close()


@pytest.fixture
def client(replay_server: ReplayServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[ComfyClient]:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    comfy = ComfyClient(replay_server.url, name="replay", timeout=5)
    try:
        yield comfy
    finally:
        _close_client(comfy)


# ---------------------------------------------------------------- replaying, route by route


def _names_node(message: str, node_id: Any) -> bool:
    return re.search(rf"\bnode {re.escape(str(node_id))}\b", message) is not None


def _expect_ok_or_server_error(exchange: Exchange, call: Callable[[], Any]) -> None:
    """POST /interrupt, /queue and /history answer 200 with an empty body, or a 5xx."""
    if exchange.status >= 500:
        with pytest.raises(ServerError) as caught:
            call()
        assert caught.value.status == exchange.status
        assert caught.value.body == exchange.served_body().decode("utf-8")
    elif exchange.status == 200:
        assert call() is None
    else:
        pytest.fail(f"no expectation for HTTP {exchange.status} on {exchange.route}")


def _submit_arguments(exchange: Exchange) -> tuple[Any, str, str, bool]:
    """(workflow, prompt_id, client_id, whether the client can send the recorded request)."""
    body = exchange.json_body
    if isinstance(body, dict) and "prompt" in body:
        workflow, client_shaped = body["prompt"], isinstance(body["prompt"], dict)
    elif isinstance(body, dict):  # no "prompt": the workflow-like thing is the body itself
        workflow = {k: v for k, v in body.items() if k not in PROMPT_BODY_KEYS}
        client_shaped = False
    else:  # a raw (non-JSON or empty) body: the client always sends a JSON object
        workflow, client_shaped, body = {}, False, {}
    answer = exchange.answer()
    recorded_id = answer.get("prompt_id") if isinstance(answer, dict) else None
    prompt_id = str(body.get("prompt_id") or recorded_id or PLACEHOLDER_PROMPT_ID)
    client_id = str(body.get("client_id") or PLACEHOLDER_CLIENT_ID)
    return workflow, prompt_id, client_id, client_shaped


def _replay_submit(exchange: Exchange, client: ComfyClient, server: ReplayServer) -> None:
    workflow, prompt_id, client_id, client_shaped = _submit_arguments(exchange)
    answer = exchange.answer()

    def submit() -> Submitted:
        return client.submit(workflow, prompt_id=prompt_id, client_id=client_id)

    if exchange.status == 200 and not answer.get("node_errors"):
        assert submit() == Submitted(prompt_id=answer["prompt_id"], number=answer["number"])
    elif exchange.status == 200:  # some outputs dropped: not the job that was asked for
        with pytest.raises(JobError) as caught:
            submit()
        assert caught.value.kind == "rejected"
        assert caught.value.details["partial_prompt_id"] == answer["prompt_id"]
        for node_id in answer["node_errors"]:
            assert _names_node(caught.value.message, node_id), caught.value.message
    elif exchange.status == 400:
        with pytest.raises(JobError) as caught:
            submit()
        _check_rejection(caught.value, answer, workflow)
    elif exchange.status == 403:
        with pytest.raises(ServerError) as refused:
            submit()
        assert refused.value.status == 403
    elif exchange.status >= 500:
        with pytest.raises(ServerError) as failed:
            submit()
        text = exchange.served_body().decode("utf-8")
        assert failed.value.status == exchange.status
        assert failed.value.body == text
        assert all(line in failed.value.message for line in text.splitlines() if line.strip())
    else:
        pytest.fail(f"no expectation for HTTP {exchange.status} from POST /prompt")

    sent = server.only_request().json()
    assert sent == {"prompt": workflow, "client_id": client_id, "prompt_id": prompt_id}
    if client_shaped:  # the client sends exactly the recorded workflow and ids
        recorded = exchange.json_body
        assert sent["prompt"] == recorded["prompt"]
        for key in ("client_id", "prompt_id"):
            if key in recorded:
                assert sent[key] == recorded[key]


def _check_rejection(error: JobError, answer: dict[str, Any], workflow: Any) -> None:
    assert error.kind == "rejected"
    assert error.details["comfyui"] == answer
    assert error.details["problems"]
    message = error.message
    node_errors = answer.get("node_errors") or {}
    for node_id in node_errors:
        assert _names_node(message, node_id), f"node {node_id} not named in: {message}"
    if node_errors:
        return
    top = answer["error"]
    if top["type"] == "invalid_prompt":
        node_id = re.search(r"#([^']+)", top["details"]).group(1)
        assert _names_node(message, node_id), message
        missing = re.search(r"node (\S+) does not exist", top["message"])
        assert (missing.group(1) if missing else "class_type") in message
    elif top["type"] == "prompt_no_outputs":
        assert "no output node" in message or "no nodes" in message, message
    elif top["type"] == "no_prompt":
        assert "no workflow" in message, message
        if isinstance(workflow, dict) and "nodes" in workflow and "links" in workflow:
            assert "Export (API)" in message, message
    else:
        assert top["message"] in message, message


def _recorded_files(entry: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(node, filename, subfolder, type) of every file the history entry lists, in order."""
    return [(str(node_id), item["filename"], item.get("subfolder", ""), item.get("type", "output"))
            for node_id, node_out in entry["outputs"].items()
            for items in node_out.values() if isinstance(items, list)
            for item in items if isinstance(item, dict) and "filename" in item]


def _as_files(outputs: list[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    return [(o["node"], o["filename"], o.get("subfolder", ""), o.get("type", "output"))
            for o in outputs]


def _replay_history(exchange: Exchange, client: ComfyClient, server: ReplayServer) -> None:
    prompt_id = unquote(urlsplit(exchange.path).path[len("/history/"):])
    answer = exchange.answer()
    if exchange.status != 200:
        pytest.fail(f"no expectation for HTTP {exchange.status} from GET /history/{{id}}")
    entry = client.history(prompt_id)
    assert server.only_request().path == exchange.path
    if not answer:  # queued, running, unknown, deleted or lost in a restart
        assert entry is None
        return
    assert entry == answer[prompt_id]
    status = entry["status"]
    if status["status_str"] == "success":
        files = _recorded_files(entry)
        assert _as_files(collect_outputs(entry, include_temp=True)) == files
        assert _as_files(collect_outputs(entry, include_temp=False)) == [
            f for f in files if f[3] == "output"]
        return
    assert status["status_str"] == "error"
    events = dict(status["messages"])
    failure = events.get("execution_error") or events.get("execution_interrupted")
    assert failure is not None, "the capture records why the prompt failed"
    message, details = explain_history_failure(entry, None)
    assert details["node_id"] == failure["node_id"]
    assert _names_node(message, failure["node_id"]), message
    assert failure["node_type"] in message
    assert ("interrupted" if "execution_interrupted" in events else "failed") in message


def _replay_queue(exchange: Exchange, client: ComfyClient, server: ReplayServer) -> None:
    answer = exchange.answer()
    state = client.queue()
    server.only_request()
    assert isinstance(state, QueueState)
    assert state.running == {item[1] for item in answer["queue_running"]}
    assert state.pending == {item[1] for item in answer["queue_pending"]}
    for item in answer["queue_running"] + answer["queue_pending"]:
        assert item[1] in state
    assert "not-a-queued-prompt" not in state


def _replay_queue_remaining(exchange: Exchange, client: ComfyClient,
                            server: ReplayServer) -> None:
    assert client.queue_remaining() == exchange.answer()["exec_info"]["queue_remaining"]
    server.only_request()


def _replay_download(exchange: Exchange, client: ComfyClient, server: ReplayServer) -> None:
    recorded = parse_qs(urlsplit(exchange.path).query, keep_blank_values=True)
    output = {key: recorded[key][0] for key in ("filename", "subfolder", "type") if key in recorded}
    sink = io.BytesIO()
    if exchange.status == 200:
        served = exchange.served_body()
        assert client.download(output, sink) == len(served)
        assert sink.getvalue() == served
    elif 400 <= exchange.status < 500:
        with pytest.raises(JobError) as caught:
            client.download(output, sink)
        assert caught.value.kind == "download"
        assert caught.value.details["status"] == exchange.status
        assert sink.getvalue() == b""
    else:
        pytest.fail(f"no expectation for HTTP {exchange.status} from GET /view")
    sent = server.only_request().query()
    for key, value in output.items():
        assert sent[key] == [value]
    assert sent["type"] == [output.get("type", "output")]  # ComfyUI's own default


def _one_prompt_id(body: Any, key: str) -> str | None:
    """The single prompt id of `{"prompt_id": id}` or `{"delete": [id]}`, if the body is that."""
    if not isinstance(body, dict):
        return None
    value = body.get(key)
    if key == "delete":
        value = value[0] if isinstance(value, list) and len(value) == 1 else None
    return value if isinstance(value, str) and set(body) == {key} else None


def _replay_interrupt(exchange: Exchange, client: ComfyClient, server: ReplayServer) -> None:
    prompt_id = _one_prompt_id(exchange.json_body, "prompt_id")
    _expect_ok_or_server_error(exchange,
                               lambda: client.interrupt(prompt_id or PLACEHOLDER_PROMPT_ID))
    sent = server.only_request().json()
    if prompt_id is not None:  # otherwise the recorded body ({} or none) is not one we send
        assert sent == exchange.json_body


def _replay_delete(call: Callable[[ComfyClient, str], None]) -> Callable[..., None]:
    def replay(exchange: Exchange, client: ComfyClient, server: ReplayServer) -> None:
        prompt_id = _one_prompt_id(exchange.json_body, "delete")
        _expect_ok_or_server_error(exchange,
                                   lambda: call(client, prompt_id or PLACEHOLDER_PROMPT_ID))
        sent = server.only_request().json()
        if prompt_id is not None:  # otherwise it was {"clear": true} or not JSON
            assert sent == exchange.json_body
    return replay


def _replay_object_info(exchange: Exchange, client: ComfyClient, server: ReplayServer) -> None:
    info = client.object_info()
    server.only_request()
    assert isinstance(info, dict)
    if "class_names" in exchange.record:  # the summary of the 497 KB body
        assert sorted(info) == sorted(exchange.record["class_names"])
        assert len(info) == exchange.record["class_count"]
    else:
        assert info == exchange.answer()


def _replay_upload(exchange: Exchange, client: ComfyClient, server: ReplayServer) -> None:
    """The recorder's raw_body says what was sent: `fields={...}, image=NAME (N bytes)`."""
    raw = exchange.request["raw_body"]
    fields = ast.literal_eval(re.search(r"fields=(\{.*?\})", raw).group(1))
    name = re.search(r"image=(\S+) \(", raw).group(1)
    subfolder = fields.get("subfolder", "")
    data = b"\x89PNG\r\n\x1a\n" + bytes(range(64))

    def upload() -> str:
        return client.upload_image(data, name=name, subfolder=subfolder)

    if exchange.status == 200:
        answer = exchange.answer()
        expected = f"{answer['subfolder']}/{answer['name']}" if answer["subfolder"] else \
            answer["name"]
        assert upload() == expected  # what LoadImage takes: "<subfolder>/<name>"
    elif exchange.status == 400:  # a traversal subfolder: not something a retry mends
        with pytest.raises(JobError) as caught:
            upload()
        assert caught.value.kind == "upload" and caught.value.details["status"] == 400
        assert name in caught.value.message
    else:
        pytest.fail(f"no expectation for HTTP {exchange.status} from POST /upload/image")
    sent = server.only_request()
    parts = parse_multipart(sent.headers["Content-Type"], sent.body)
    assert parts["image"].filename == name and parts["image"].data == data
    assert parts["type"].data == b"input"
    assert parts["subfolder"].data.decode() == subfolder
    assert "overwrite" not in parts  # off: a name in use by other content is never replaced


REPLAYED: dict[str, Callable[[Exchange, ComfyClient, ReplayServer], None]] = {
    "POST /prompt": _replay_submit,
    "GET /history/{prompt_id}": _replay_history,
    "GET /queue": _replay_queue,
    "GET /prompt": _replay_queue_remaining,
    "GET /view": _replay_download,
    "POST /interrupt": _replay_interrupt,
    "POST /queue": _replay_delete(lambda c, pid: c.delete_queued(pid)),
    "POST /history": _replay_delete(lambda c, pid: c.delete_history(pid)),
    "GET /object_info": _replay_object_info,
    "POST /upload/image": _replay_upload,
}


# routes the client never calls are not parametrized at all (not skipped): the test below
# checks that each of them is listed, with its reason, in NOT_USED_BY_CLIENT
USED_EXCHANGES = [e for e in EXCHANGES if e.route not in NOT_USED_BY_CLIENT]


@pytest.mark.parametrize("exchange", USED_EXCHANGES, ids=[e.id for e in USED_EXCHANGES])
def test_recorded_exchange_through_client(exchange: Exchange, replay_server: ReplayServer,
                                          client: ComfyClient) -> None:
    if exchange.route not in REPLAYED:
        pytest.fail(f"no replay for {exchange.route}: add one, or list it in NOT_USED_BY_CLIENT")
    replay_server.load(exchange)
    REPLAYED[exchange.route](exchange, client, replay_server)
    sent = replay_server.only_request()
    assert route_of(sent.method, sent.path) == exchange.route
    # a mismatching Origin gets 403 from ComfyUI (prompt_error_origin_mismatch.json)
    assert "origin" not in {name.lower() for name in sent.headers}


def test_every_exchange_is_replayed_or_listed() -> None:
    assert not set(REPLAYED) & set(NOT_USED_BY_CLIENT)
    routes = {ex.route for ex in EXCHANGES}
    unknown = sorted(f"{ex.id}: {ex.route}" for ex in EXCHANGES
                     if ex.route not in REPLAYED and ex.route not in NOT_USED_BY_CLIENT)
    assert not unknown, "captures whose route nobody handles:\n" + "\n".join(unknown)
    assert not set(REPLAYED) - routes, "a replayed route without any capture"


def test_every_capture_file_is_used() -> None:
    with_content = {ex.file for ex in EXCHANGES} | {fs.file for fs in FRAME_SETS}
    files = [_rel(path) for path in _capture_files()]

    def listed(name: str) -> bool:
        return any(name == key or (key.endswith("/") and name.startswith(key))
                   for key in FILES_WITHOUT_EXCHANGES)

    ignored = [name for name in files if name not in with_content and not listed(name)]
    assert not ignored, f"capture files with no exchange or frames: {ignored}"
    stale = [key for key in FILES_WITHOUT_EXCHANGES
             if not any(name == key or name.startswith(key) for name in files)]
    assert not stale, f"FILES_WITHOUT_EXCHANGES lists files that do not exist: {stale}"
    assert EXCHANGES and FRAME_SETS


# ---------------------------------------------------------------- WebSocket captures


@dataclass
class Expected:
    """What the frames of one socket say about one prompt."""

    finished_at: int | None = None  # index of the first completion message
    end: str | None = None  # the first execution_success/_error/_interrupted
    end_data: dict[str, Any] | None = None
    progress: tuple[int, int] | None = None


def _expected(messages: list[dict[str, Any]], prompt_id: str) -> Expected:
    expected = Expected()
    for i, message in enumerate(messages):
        kind, data = message.get("type"), message.get("data")
        if not isinstance(data, dict) or data.get("prompt_id") != prompt_id:
            continue
        if kind == "progress":
            expected.progress = (int(data["value"]), int(data["max"]))
        ends = kind in END_MESSAGES or (kind == "executing" and data.get("node") is None)
        if ends and expected.finished_at is None:
            expected.finished_at = i
        if kind in END_MESSAGES and expected.end is None:
            expected.end, expected.end_data = kind, data
    return expected


def _prompt_ids(frame_set: FrameSet) -> list[str]:
    """Prompt ids named by the frames, by the case's own POSTs or by a `prompt_ids` field."""
    ids: dict[str, None] = {}
    for message in frame_set.messages():
        data = message.get("data")
        if isinstance(data, dict) and isinstance(data.get("prompt_id"), str):
            ids[data["prompt_id"]] = None
    found: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    _find_exchanges(frame_set.scope, "", frame_set.scope, found)
    for _, record, _ in found:
        if record["request"].get("path") == "/prompt" and record["status"] == 200:
            ids[json.loads(record["response_body_text"])["prompt_id"]] = None
    for prompt_id in frame_set.scope.get("prompt_ids") or []:
        ids[prompt_id] = None
    return list(ids)


def _listener() -> CompletionListener:
    return CompletionListener("http://127.0.0.1:9", name="replay", stop=threading.Event(),
                              enabled=False)


def _last_queue_remaining(messages: list[dict[str, Any]]) -> int | None:
    values = [m["data"]["status"]["exec_info"]["queue_remaining"] for m in messages
              if m.get("type") == "status"]
    return values[-1] if values else None


def _check_end_state(listener: CompletionListener, watches: dict[str, Any],
                     expected: dict[str, Expected], messages: list[dict[str, Any]]) -> None:
    for prompt_id, watch in watches.items():
        want = expected[prompt_id]
        assert watch.finished == (want.finished_at is not None), prompt_id
        assert watch.wake.is_set() == watch.finished, prompt_id
        assert watch.progress == want.progress, prompt_id
        if want.end in (None, "execution_success"):
            assert watch.error is None, (prompt_id, watch.error)
        else:
            assert watch.error is not None, prompt_id
            assert watch.error["type"] == want.end
            assert watch.error["node_id"] == want.end_data["node_id"]
            assert watch.error["prompt_id"] == prompt_id
    assert listener.queue_remaining == _last_queue_remaining(messages)


DECOY = "not-a-prompt-of-this-capture"


@pytest.mark.parametrize("frame_set", FRAME_SETS, ids=[fs.id for fs in FRAME_SETS])
def test_websocket_capture_through_listener(frame_set: FrameSet) -> None:
    messages = frame_set.messages()
    prompt_ids = _prompt_ids(frame_set)
    expected = {pid: _expected(messages, pid) for pid in prompt_ids}
    _check_capture_claims(frame_set, expected)

    listener = _listener()
    watches = {pid: listener.watch(pid) for pid in prompt_ids}
    decoy = listener.watch(DECOY)
    for i, message in enumerate(messages):
        listener.handle(message)  # unknown types (progress_state, feature_flags) must not raise
        for prompt_id, watch in watches.items():
            at = expected[prompt_id].finished_at
            assert watch.finished == (at is not None and i >= at), (
                f"{prompt_id} after frame {i} {message.get('type')}")
    _check_end_state(listener, watches, expected, messages)
    assert (decoy.finished, decoy.error, decoy.progress) == (False, None, None)
    assert not decoy.wake.is_set()


def test_executing_null_alone_is_the_completion_signal() -> None:
    """Every capture also ends with an end message, which finishes the watch first; without
    them (the README's "completion signal"), `executing` node null must finish it on its own."""
    checked = 0
    for frame_set in FRAME_SETS:
        messages = [m for m in frame_set.messages() if m.get("type") not in END_MESSAGES]
        listener = _listener()
        for prompt_id in _prompt_ids(frame_set):
            want = _expected(messages, prompt_id)
            watch = listener.watch(prompt_id)
            for i, message in enumerate(messages):
                listener.handle(message)
                done = want.finished_at is not None and i >= want.finished_at
                assert watch.finished == done, (frame_set.id, prompt_id, i)
            assert watch.error is None
            checked += want.finished_at is not None
    assert checked


def test_socket_told_outputs_are_the_recorded_history_outputs() -> None:
    """A success seen through to `executing` null is taken without asking /history, so its
    `executed` messages must name exactly the outputs, in the order, that ComfyUI's history
    recorded for the same prompt (cached output nodes included). Anything else is not told."""
    compared = 0
    for frame_set in FRAME_SETS:
        messages = frame_set.messages()
        listener = _listener()
        watches = {pid: listener.watch(pid) for pid in _prompt_ids(frame_set)}
        for message in messages:
            listener.handle(message)
        for prompt_id, watch in watches.items():
            recorded = HISTORY.get(prompt_id, [])
            workflow = recorded[0]["prompt"][2] if recorded else {}
            told = watch.entry(workflow)
            want = _expected(messages, prompt_id)
            ended = any(m.get("type") == "executing" and m["data"].get("node") is None
                        and m["data"].get("prompt_id") == prompt_id for m in messages)
            if want.end != "execution_success" or not ended or not recorded:
                assert told is None or not recorded, (frame_set.id, prompt_id)
                continue
            assert told is not None and told["status"]["status_str"] == "success"
            for entry in recorded:
                assert list(told["outputs"].items()) == list(entry["outputs"].items()), (
                    frame_set.id, prompt_id)
                compared += 1
    assert compared >= 2


def _check_capture_claims(frame_set: FrameSet, expected: dict[str, Expected]) -> None:
    """The frame-derived expectations agree with the README and with recorded history."""
    ends = {want.end for want in expected.values()}
    name = frame_set.file
    if name.startswith("ws_success"):
        assert ends == {"execution_success"}
    if "runtime_error" in name:
        assert "execution_error" in ends
    if name.startswith("interrupt"):
        assert "execution_interrupted" in ends
    if name == "ws_other_clients_prompt.json":  # another client's prompt: only `status`
        assert {m["type"] for m in frame_set.messages()} == {"status"}
    for prompt_id, want in expected.items():
        if want.end is None:
            continue
        assert want.finished_at is not None
        for entry in HISTORY.get(prompt_id, []):
            status = entry["status"]
            events = [event for event, _ in status["messages"]]
            assert want.end in events, (prompt_id, events)
            assert (status["status_str"] == "success") == (want.end == "execution_success")
            data = dict(status["messages"])[want.end]
            assert data.get("node_id") == want.end_data.get("node_id")


class RecordedSocket:
    """Plays a capture's frames, text and binary, to the listener's real socket loop."""

    def __init__(self, frames: list[dict[str, Any]]) -> None:
        self._frames = iter(frames)
        self.binary_frames = 0

    def settimeout(self, timeout: float) -> None:
        pass

    def recv_data(self) -> tuple[int, bytes]:
        frame = next(self._frames, None)
        if frame is None:
            raise websocket.WebSocketConnectionClosedException("end of the capture")
        if frame["kind"] == "text":
            return websocket.ABNF.OPCODE_TEXT, json.dumps(frame["json"]).encode("utf-8")
        self.binary_frames += 1
        head = bytes.fromhex(str(frame["first_16_bytes_hex"]))
        return websocket.ABNF.OPCODE_BINARY, head.ljust(int(frame["len"]), b"\0")


@pytest.mark.parametrize("frame_set", FRAME_SETS, ids=[fs.id for fs in FRAME_SETS])
def test_websocket_capture_through_socket_loop(frame_set: FrameSet) -> None:
    """The same frames through `_receive`, binary ones included: those are skipped."""
    messages = frame_set.messages()
    prompt_ids = _prompt_ids(frame_set)
    listener = _listener()
    watches = {pid: listener.watch(pid) for pid in prompt_ids}
    sock = RecordedSocket(frame_set.frames)
    listener._receive(sock)
    assert sock.binary_frames == sum(f["kind"] != "text" for f in frame_set.frames)
    _check_end_state(listener, watches, {pid: _expected(messages, pid) for pid in prompt_ids},
                     messages)


# ---------------------------------------------------------------- no server at all


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


CALLS: dict[str, Callable[[ComfyClient], Any]] = {
    "submit": lambda c: c.submit({}, prompt_id="p", client_id="c"),
    "history": lambda c: c.history("p"),
    "queue": lambda c: c.queue(),
    "queue_remaining": lambda c: c.queue_remaining(),
    "object_info": lambda c: c.object_info(),
    "interrupt": lambda c: c.interrupt("p"),
    "delete_queued": lambda c: c.delete_queued("p"),
    "delete_history": lambda c: c.delete_history("p"),
    "download": lambda c: c.download({"filename": "a.png"}, io.BytesIO()),
}


@pytest.mark.parametrize("call", list(CALLS.values()), ids=list(CALLS))
def test_closed_port_is_a_server_error(call: Callable[[ComfyClient], Any],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    gone = ComfyClient(f"http://127.0.0.1:{_free_port()}", name="gone", timeout=2)
    try:
        with pytest.raises(ServerError) as caught:
            call(gone)
        assert "unreachable (connection refused)" in caught.value.message
        assert caught.value.status is None
        assert gone.ping() is False
    finally:
        _close_client(gone)
