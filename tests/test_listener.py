"""What the listener makes of messages: the told history entry and throttled progress lines."""

from __future__ import annotations

import threading
from typing import Any

import websocket

from hotfolder.comfy import listener as complete
from hotfolder.comfy import wsframes
from hotfolder.comfy.listener import CompletionListener

WORKFLOW = {"4": {}, "9": {}, "12": {}}  # only the node order matters here


def _listener() -> CompletionListener:
    return CompletionListener("http://127.0.0.1:9", name="s", stop=threading.Event(),
                              enabled=False)


def _msg(kind: str, **data: Any) -> dict[str, Any]:
    return {"type": kind, "data": {"prompt_id": "p", **data}}


def _executed(node: str, name: str) -> dict[str, Any]:
    return _msg("executed", node=node, output={"images": [{"filename": name, "type": "output"}]})


def test_a_success_ended_on_the_socket_is_told_in_workflow_order() -> None:
    listener = _listener()
    watch = listener.watch("p")
    for message in (_executed("12", "b.png"), _executed("9", "a.png"),
                    _msg("execution_success")):
        listener.handle(message)
    assert watch.entry(WORKFLOW) is None  # `executing` null not seen yet: more may come
    assert not watch.wake.is_set()  # ComfyUI writes history only after execution_success
    listener.handle(_msg("executing", node=None))
    told = watch.entry(WORKFLOW)
    assert told is not None and watch.wake.is_set()
    assert list(told["outputs"]) == ["9", "12"]
    assert told["status"]["status_str"] == "success"


def test_errors_and_unknown_nodes_are_left_to_history() -> None:
    listener = _listener()
    failed = listener.watch("p")
    for message in (_executed("9", "a.png"), _msg("execution_error", node_id="12"),
                    _msg("executing", node=None)):
        listener.handle(message)
    assert failed.finished and failed.entry(WORKFLOW) is None

    listener = _listener()
    expanded = listener.watch("p")
    for message in (_executed("9:3", "a.png"), _msg("execution_success"),
                    _msg("executing", node=None)):
        listener.handle(message)
    assert expanded.entry(WORKFLOW) is None  # a node id the workflow does not name


class _Lines:
    """Stands in for the module's logger (structlog may have cached it, configured by a CLI
    test, before capture_logs could see it)."""

    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []

    def info(self, event: str, **kw: Any) -> None:
        self.lines.append({"event": event, **kw})


def test_progress_lines_are_at_most_one_a_second_per_job(monkeypatch) -> None:
    lines = _Lines()
    monkeypatch.setattr(complete, "log", lines)
    listener = _listener()
    watch = listener.watch("p", job="fox.txt")
    for step in range(1, 41):
        listener.handle(_msg("progress", value=step, max=40, node="3"))
    assert watch.progress == (40, 40)
    # the first quarter only; the other three came too soon after it
    assert [e["step"] for e in lines.lines if e["event"] == "job.progress"] == [10]
    watch.progress_logged_at -= 1.0  # a second later
    listener.handle(_msg("progress", value=20, max=40, node="3"))
    assert [e["step"] for e in lines.lines if e["event"] == "job.progress"] == [10, 20]


def test_frames_are_cut_whole_from_reads_of_any_size_and_survive_a_time_out() -> None:
    """The parser's reads never line up with frames: split anywhere, with a time-out between
    two pieces of one frame, every frame still comes out whole and in order."""
    frames = [websocket.ABNF.create_frame("x" * size, websocket.ABNF.OPCODE_TEXT)
              for size in (3, 125, 126, 300, 70_000)]
    frames[1].mask_value = 1  # a masked frame (a client's; a server should not, but may)
    stream = b"".join(f.format() if i == 1 else _unmasked(f) for i, f in enumerate(frames))
    stream += bytes([0x89, 2]) + b"hi"  # a ping between them
    for piece in (1, 7, 4096):
        pieces: list[Any] = [stream[i:i + piece] for i in range(0, len(stream), piece)]
        pieces.insert(len(pieces) // 2, websocket.WebSocketTimeoutException("time-out"))

        def recv(_count: int, pieces: list[Any] = pieces) -> bytes:
            item = pieces.pop(0)
            if isinstance(item, Exception):
                raise item
            return item

        parser = wsframes._CappedFrames(recv, True)
        got = []
        while len(got) < 6:
            try:
                got.append(parser.recv_frame())
            except websocket.WebSocketTimeoutException:
                continue
        assert [len(f.data) for f in got[:5]] == [3, 125, 126, 300, 70_000]
        assert all(f.data == b"x" * len(f.data) and f.fin == 1 for f in got[:5])
        assert (got[5].opcode, got[5].data) == (websocket.ABNF.OPCODE_PING, b"hi")


def test_frames_already_read_are_taken_in_one_pass_up_to_one_that_needs_the_library() -> None:
    """After a read, whole text frames are cut out together; binary ones and the unused kind
    are passed over; a ping (or a frame not all there yet) is left for `recv_frame`."""
    def text(payload: str, fin: int = 1) -> bytes:
        return _unmasked(websocket.ABNF(fin, 0, 0, 0, websocket.ABNF.OPCODE_TEXT, 0, payload))

    binary = _unmasked(websocket.ABNF.create_frame(b"\x01" * 200, websocket.ABNF.OPCODE_BINARY))
    big = "y" * 70_000
    stream = (text("a") + binary + text('{"type": "skip me"}') + text(big) + text("b")
              + bytes([0x89, 2]) + b"hi" + text("c") + text("d")[:-1])
    pieces = [stream]
    parser = wsframes._CappedFrames(lambda _n: pieces.pop(0), True)
    assert parser.recv_frame().data == b"a"
    assert parser.take_buffered(b'{"type": "skip') == [big.encode(), b"b"]
    assert parser.take_buffered(b"") == []  # the ping comes first
    assert parser.recv_frame().opcode == websocket.ABNF.OPCODE_PING
    assert parser.take_buffered(b"") == [b"c"]  # "d" is not all there
    pieces.append(b"d")
    assert parser.recv_frame().data == b"d"
    parser._buf, parser._pos = text("e", fin=0) + text("f"), 0  # a fragment: the library's
    assert parser.take_buffered(b"") == []


def _unmasked(frame: Any) -> bytes:
    """A server's frame: header and payload, no mask."""
    frame.mask_value = 0
    return frame.format()


def test_the_socket_rests_while_the_sampler_has_steps_to_go(monkeypatch: Any) -> None:
    """Half the time the remaining steps will take (at the pace so far), at most 1 s; a
    clock passed in by patching, so no test waits."""
    clock = [100.0]
    monkeypatch.setattr(complete.time, "monotonic", lambda: clock[0])
    listener = _listener()
    listener._ws = ws = wsframes.BufferedWebSocket()
    listener.watch("p")

    def step(value: int, at: float, steps: int = 30) -> float:
        clock[0] = at
        listener.handle(_msg("progress", value=value, max=steps, node="3"))
        return ws.hold_until

    assert step(1, 100.0) == 0.0  # one step tells no pace
    assert step(2, 100.1) == 100.1 + 1.0  # 28 steps of 0.1 s to go: the cap
    assert round(step(20, 101.9) - 101.9, 6) == 0.5  # 10 steps to go: half their time
    assert round(step(29, 102.8) - 102.8, 6) == 0.05  # one step to go: half of it
    assert step(30, 102.9) == 102.85  # the last step: no new rest, the old one is over
    assert step(1, 103.0, steps=4) == 102.85  # a second sampler starts its own pace
    assert round(step(2, 103.2, steps=4) - 103.2, 6) == 0.2
