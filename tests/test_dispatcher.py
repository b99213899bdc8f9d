"""Unit tests for the dispatcher between ready files and workers (daemon/dispatch.py)."""

from __future__ import annotations

import threading
from pathlib import Path

from hotfolder.comfy.pool import ServerPool
from hotfolder.config.load import parse_config
from hotfolder.daemon.dispatch import Dispatcher
from hotfolder.daemon.workers import Work

WORKFLOW = Path(__file__).resolve().parents[1] / "config/workflows/sdxl_txt2img.json"


def dispatcher(tmp_path: Path, servers: int,
               slots: int = 1) -> tuple[Dispatcher, list[Work]]:
    config = parse_config({
        "servers": [{"name": f"gpu{i}", "url": f"http://127.0.0.1:{9 + i}"}
                    for i in range(servers)],
        "comfy": {"max_in_flight": slots},
        "workflows": {}, "folders": [{"root": "hot", "workflow": str(WORKFLOW)}],
    }, base=tmp_path)
    folder = config.folders[0]
    folder.inbox.mkdir(parents=True)
    d = Dispatcher(config, ServerPool(config.servers, config.comfy, threading.Event()))
    works = []
    for name in ("a", "b", "c"):
        path = folder.inbox / f"{name}.txt"
        path.write_text(name)
        works.append(Work(folder, path))
        d.add(works[-1], now=0.0)
    return d, works  # taken later than any hold for a model load lasts


def test_another_worker_is_asked_to_take_only_while_a_server_is_left_free(tmp_path):
    """A worker that took a job wakes another only when that one can take a job too: in a
    backlog, every wake-up was a scan of every server that found none free."""
    d, works = dispatcher(tmp_path, servers=2)
    first = d.take(now=10.0)
    assert first is works[0] and first.slot is not None
    assert d.more()  # the second server is free and two jobs wait
    second = d.take(now=10.0)
    assert second is works[1] and not d.more()  # every server is taken
    assert d.take(now=10.0) is None and len(d) == 1


def test_another_worker_is_asked_while_the_same_server_has_a_slot_left(tmp_path):
    d, works = dispatcher(tmp_path, servers=1, slots=2)
    assert d.take(now=10.0) is works[0] and d.more()
    assert d.take(now=10.0) is works[1] and not d.more()


def test_the_last_waiting_job_taken_leaves_nothing_more(tmp_path):
    d, works = dispatcher(tmp_path, servers=4)
    assert [d.take(now=10.0) for _ in works] == works
    assert not d.more() and len(d) == 0
