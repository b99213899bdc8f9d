"""What the listener makes of messages: the told history entry and throttled progress lines."""

from __future__ import annotations

import threading
from typing import Any

from hotfolder.comfy import listener as complete
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
