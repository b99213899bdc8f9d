"""Learn that a prompt finished: one WebSocket per server, with `/history` as the safety net.

ComfyUI sends execution messages only to the socket whose clientId matches the prompt's
client_id, only while it is connected, and never replays them. So the socket connects before
anything is submitted, every (re)connection uses a fresh client id (a second socket with an old
id goes deaf when the old one closes), and after a reconnect every waiter is woken to reconcile
through `/history`. Waiters whose prompt was sent under an older id, or that run while no socket
is up, poll `/history/{id}` at the configured interval.
"""

from __future__ import annotations

import contextlib
import json
import ssl
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog
import websocket

from hotfolder.comfy.wsframes import BufferedWebSocket
from hotfolder.retry import Backoff

log = structlog.get_logger()

PROGRESS_LOG_SECONDS = 1.0  # at most one job.progress line a second per job
# the longest pause between reads while a sampler has steps to go: a long job wakes this
# thread about once a second, not at each of its steps; what waits meanwhile is the queue
# count in `status` messages and an interruption from elsewhere, noticed up to this late
MAX_HOLD_SECONDS = 1.0
# ComfyUI sends `progress_state` (every node's state, again at each step) about as often as
# `progress`; it is nine tenths of the bytes of a job's messages and nothing here uses it.
# ComfyUI writes messages with json.dumps' default separators, so the prefix identifies it
# without parsing; written any other way, it is parsed and ignored like any unknown type.
UNUSED_PREFIX = b'{"type": "progress_state"'


@dataclass
class Watch:
    """What the WebSocket has told us about one prompt."""

    prompt_id: str
    client_id: str
    job: str = ""
    folder: str = ""
    wake: threading.Event = field(default_factory=threading.Event)
    finished: bool = False  # `executing` node null, or an end message, was seen
    error: dict[str, Any] | None = None
    progress: tuple[int, int] | None = None
    progress_logged_at: float = float("-inf")
    steps_from: tuple[float, int, int] | None = None  # (monotonic, step, steps) of a sampler
    outputs: dict[str, Any] = field(default_factory=dict)  # from `executed`, in run order
    succeeded: bool = False  # `execution_success`
    ended: bool = False  # `executing` node null: nothing more will come about this prompt

    def entry(self, workflow: Mapping[str, Any]) -> dict[str, Any] | None:
        """The history entry the socket has told us in full, or None.

        ComfyUI sends a prompt's messages only to the socket of the client id it was posted
        under (registered here before the POST), and a reconnect always takes a fresh id. So a
        success that ended on this socket means every `executed` message (cached output nodes
        send one again) came here too, and /history would say nothing new: one request per
        job saved. History lists outputs in the workflow's node order, not the order they
        ran, so they are put in that order (output numbering must not depend on the path).
        Errors, nodes the workflow does not name (expanded at run time), and anything less
        certain still go to /history.
        """
        if not (self.succeeded and self.ended):
            return None
        order = {node_id: i for i, node_id in enumerate(workflow)}
        if any(node_id not in order for node_id in self.outputs):
            return None
        outputs = dict(sorted(self.outputs.items(), key=lambda item: order[item[0]]))
        return {"outputs": outputs, "from": "websocket",
                "status": {"status_str": "success", "completed": True, "messages": []}}


class CompletionListener:
    """Owns the WebSocket of one server and routes its messages to the prompts' watches."""

    def __init__(self, url: str, *, name: str, stop: threading.Event, enabled: bool = True,
                 backoff_max: float = 30.0, headers: Mapping[str, str] | None = None,
                 verify: bool | str = True, max_message_bytes: int = 64 * 1024 * 1024) -> None:
        self.max_message_bytes = max_message_bytes
        # the same auth as HTTP: a proxy in front of ComfyUI guards /ws too
        self.headers = [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.sslopt: dict[str, Any] = (
            {"cert_reqs": ssl.CERT_NONE, "check_hostname": False} if verify is False
            else {"ca_certs": verify} if isinstance(verify, str) else {})
        self.ws_url = url.replace("https://", "wss://", 1).replace("http://", "ws://", 1) + "/ws"
        self.name = name
        self.enabled = enabled
        self.backoff_max = backoff_max
        self._stop = stop
        self._lock = threading.Lock()
        self._watches: dict[str, Watch] = {}
        self._client_id = uuid.uuid4().hex
        self.drops = 0  # connections that were live and ended
        self._live = threading.Event()
        self.queue_remaining: int | None = None
        self._thread: threading.Thread | None = None
        self._ws: websocket.WebSocket | None = None

    @property
    def client_id(self) -> str:
        return self._client_id

    def live_for(self, watch: Watch) -> bool:
        """True when messages about this prompt can reach us now."""
        return self._live.is_set() and watch.client_id == self._client_id

    def watch(self, prompt_id: str, *, client_id: str | None = None, job: str = "",
              folder: str = "") -> Watch:
        """Register before POSTing, so no message about the prompt can be missed.

        `client_id` is the id the prompt was sent under, when it was sent earlier (a resumed
        job); messages reach us only if that is still the socket's id.
        """
        with self._lock:
            w = self._watches.get(prompt_id)
            if w is None:
                w = Watch(prompt_id=prompt_id, client_id=client_id or self._client_id,
                          job=job, folder=folder)
                self._watches[prompt_id] = w
            return w

    def wake(self, prompt_id: str) -> None:
        with self._lock:
            w = self._watches.get(prompt_id)
        if w is not None:
            w.wake.set()

    def progress(self, prompt_id: str) -> tuple[int, int] | None:
        with self._lock:
            w = self._watches.get(prompt_id)
        return w.progress if w is not None else None

    def forget(self, prompt_id: str) -> None:
        with self._lock:
            self._watches.pop(prompt_id, None)

    def start(self) -> None:
        if not self.enabled:
            return
        self._thread = threading.Thread(target=self._run, name=f"ws-{self.name}", daemon=True)
        self._thread.start()

    def alive(self) -> bool:
        return not self.enabled or (self._thread is not None and self._thread.is_alive())

    def close(self) -> None:
        ws = self._ws
        if ws is not None:
            ws.close(timeout=0.5)

    # -- the socket loop ------------------------------------------------------------------------

    def _run(self) -> None:
        reconnect = Backoff(0.5, self.backoff_max, jitter=0.5).start()
        announced_down = False
        while not self._stop.is_set():
            client_id = uuid.uuid4().hex
            try:
                ws = websocket.create_connection(f"{self.ws_url}?clientId={client_id}",
                                                 class_=BufferedWebSocket,
                                                 timeout=10, enable_multithread=True,
                                                 header=self.headers, sslopt=self.sslopt,
                                                 # ~80 frames a job; json.loads checks them
                                                 # anyway, the pure-Python check costs ~5 ms
                                                 skip_utf8_validation=True)
            except Exception as exc:  # noqa: BLE001 - any failure to connect means "poll instead"
                if not announced_down:
                    log.info("server.websocket_unavailable", server=self.name,
                             reason=str(exc) or type(exc).__name__,
                             action="following jobs by polling /history until it connects")
                    announced_down = True
                self._stop.wait(reconnect.next_delay())
                continue
            ws.cap_messages(self.max_message_bytes)
            with self._lock:
                self._client_id = client_id
            self._ws = ws
            self._live.set()
            reconnect.reset()
            if announced_down:
                log.info("server.websocket_connected", server=self.name)
            announced_down = False
            self._wake_all()  # reconcile: anything may have finished while we were away
            try:
                self._receive(ws)
            finally:
                self._live.clear()
                self.drops += 1  # the server may have restarted (pool.py: its models)
                self._ws = None
                ws.close(timeout=0.5)
                self._wake_all()
            if not self._stop.is_set():
                log.info("server.websocket_dropped", server=self.name,
                         action="reconnecting; jobs are reconciled through /history")

    def _receive(self, ws: websocket.WebSocket) -> None:
        ws.settimeout(1.0)
        # a read brings a burst of frames: after the first, the rest are cut out in one pass
        take = getattr(ws, "take_buffered", None)
        while not self._stop.is_set():
            try:
                opcode, data = ws.recv_data()
            except websocket.WebSocketTimeoutException:
                continue
            except websocket.WebSocketProtocolException as exc:
                log.warning("server.answer_refused", server=self.name, reason=str(exc),
                            action="the WebSocket is dropped and opened again; jobs are "
                                   "followed through /history meanwhile")
                return
            except (websocket.WebSocketException, OSError):
                return
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                return
            if opcode == websocket.ABNF.OPCODE_TEXT:  # binary previews are not ours to keep
                self._text(data)
            if take is not None:
                for data in take(UNUSED_PREFIX):
                    self._text(data)

    def _text(self, data: bytes) -> None:
        if data.startswith(UNUSED_PREFIX):
            return  # see UNUSED_PREFIX
        try:
            message = json.loads(data)
        except ValueError:
            return
        if isinstance(message, dict):
            self.handle(message)

    def handle(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        data = message.get("data")
        if not isinstance(data, dict):
            return
        if kind == "status":
            with contextlib.suppress(KeyError, TypeError, ValueError):
                self.queue_remaining = int(data["status"]["exec_info"]["queue_remaining"])
            return
        prompt_id = data.get("prompt_id")
        with self._lock:
            w = self._watches.get(prompt_id) if isinstance(prompt_id, str) else None
        if w is None:
            return
        if kind == "progress":
            self._progress(w, data)
        elif kind == "executed":
            if isinstance(data.get("output"), dict):
                w.outputs[str(data.get("node"))] = data["output"]
        elif kind == "executing" and data.get("node") is None:
            w.finished = w.ended = True
            w.wake.set()
        elif kind in ("execution_success", "execution_error", "execution_interrupted"):
            # ComfyUI writes the history entry after these and before `executing null`, so
            # waking here would mostly fetch /history too early and have to ask again
            if kind != "execution_success":
                w.error = {"type": kind, **data}
            w.succeeded = kind == "execution_success"
            w.finished = True

    def _progress(self, w: Watch, data: dict[str, Any]) -> None:
        try:
            value, maximum = int(data["value"]), int(data["max"])
        except (KeyError, TypeError, ValueError):
            return
        w.progress = (value, maximum)
        self._hold(w, value, maximum)
        # one line per quarter, at most one a second: a long job shows it is moving, a
        # 30-step job gets a few lines, and a fast one (tens a second) does not flood the log
        quarter = (value * 4) // maximum if maximum > 0 else 0
        now = time.monotonic()
        if (maximum > 0 and quarter > ((value - 1) * 4) // maximum
                and now - w.progress_logged_at >= PROGRESS_LOG_SECONDS):
            w.progress_logged_at = now
            log.info("job.progress", job=w.job, folder=w.folder, prompt_id=w.prompt_id,
                     server=self.name, node=data.get("node"), step=value, steps=maximum)

    def _hold(self, w: Watch, value: int, maximum: int) -> None:
        """Let the socket rest while the sampler has steps to go: ComfyUI runs one prompt at a
        time, so nothing can finish before them. The pause is half the time those steps took
        so far, at most MAX_HOLD_SECONDS: fewer wake-ups of this thread (a long job sends a
        message a step), and a finished job is still noticed within COALESCE_SECONDS."""
        now = time.monotonic()
        start = w.steps_from
        if start is None or value <= start[1] or maximum != start[2]:
            w.steps_from = (now, value, maximum)  # a new sampler, or the first step seen
            return
        per_step = (now - start[0]) / (value - start[1])
        ws = self._ws
        if ws is not None and maximum > value:
            ws.hold_until = now + min(MAX_HOLD_SECONDS, 0.5 * per_step * (maximum - value))

    def _wake_all(self) -> None:
        with self._lock:
            for w in self._watches.values():
                w.wake.set()
