"""A misbehaving server is the server's problem: capped answers and messages, downloads with a
deadline, outputs per job bounded, and one stuck server never holding the workers that the
jobs of other servers need."""

from __future__ import annotations

import json
import struct
import threading
import time
import tracemalloc
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
import websocket
from harness import HotFolder, make_config, wait_for

from hotfolder.comfy.client import ComfyClient
from hotfolder.comfy.transport import TransferLimits
from hotfolder.comfy.wsframes import _CappedFrames, _CappedMessages
from hotfolder.errors import ServerError


class _Hostile(BaseHTTPRequestHandler):
    """/history/x: 20 MB of JSON; /queue: a byte every 0.3 s."""

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        try:
            if self.path.startswith("/history"):
                self.wfile.write(b'{"x": {"outputs": {}, "junk": "')
                for _ in range(20):
                    self.wfile.write(b"x" * 1024 * 1024)
                self.wfile.write(b'"}}')
            else:
                for byte in b'{"queue_running": [], "queue_pending": []}':
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.3)
        except OSError:
            pass


@pytest.fixture
def hostile_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_an_answer_over_the_cap_is_refused_without_being_held(hostile_url):
    client = ComfyClient(hostile_url, timeout=10, limits=TransferLimits(answer_bytes=1 << 20))
    tracemalloc.start()
    try:
        with pytest.raises(ServerError, match=r"comfy\.max_answer_bytes"):
            client.history("x")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"{peak / 2**20:.0f} MiB held for a 20 MB answer"


def test_a_trickling_answer_fails_within_the_request_timeout(hostile_url):
    client = ComfyClient(hostile_url, timeout=2)
    with pytest.raises(ServerError, match="took longer than 2 s"):
        client.queue()


def test_websocket_frames_and_messages_over_the_cap_are_refused_before_buffering():
    header = bytes([0x81, 127]) + struct.pack("!Q", 4 * 1024**3)  # a 4 GB text frame
    data = iter([header[:2], header[2:]])
    frames = _CappedFrames(lambda n: next(data), True)
    frames.limit = 1 << 20
    with pytest.raises(websocket.WebSocketProtocolException, match="4294967296 bytes"):
        frames.recv_frame()
    messages = _CappedMessages(False, True)
    messages.limit = 1000
    messages.add(websocket.ABNF(fin=0, opcode=websocket.ABNF.OPCODE_TEXT, data=b"x" * 600))
    with pytest.raises(websocket.WebSocketProtocolException, match="max_answer_bytes"):
        messages.add(websocket.ABNF(fin=0, opcode=websocket.ABNF.OPCODE_CONT, data=b"x" * 600))


def test_outputs_per_job_and_their_total_size_are_bounded(tmp_path, sim):
    config = make_config(tmp_path, sim.url)
    config["comfy"]["max_outputs"] = 3
    hot = HotFolder(base=tmp_path, server_url=sim.url, config=config)
    try:
        hot.start()
        hot.drop("many.json", json.dumps({"prompt": "a fox", "batch_size": 5}))
        assert hot.finished("many.json") == "failed"
        assert "comfy.max_outputs" in hot.error("many.json")["error"]
        hot.stop()
        config["comfy"].update(max_outputs=1000, max_job_output_bytes=1500)
        hot.start()
        hot.drop("big.json", json.dumps({"prompt": "a fox", "batch_size": 3}))
        assert hot.finished("big.json") == "failed"
        assert "comfy.max_job_output_bytes" in hot.error("big.json")["error"]
    finally:
        hot.stop()


def test_a_trickling_server_does_not_hold_up_the_other_servers_jobs(tmp_path, make_sim):
    stuck = make_sim(job_seconds=0.05)
    healthy = make_sim(job_seconds=0.05)
    requests.post(f"{stuck.url}/sim/faults", json={"trickle_seconds": 0.2}, timeout=5)
    config = make_config(tmp_path, healthy.url)
    config["servers"] = [{"url": stuck.url, "name": "stuck", "tags": ["stuck"]},
                         {"url": healthy.url, "name": "healthy", "tags": ["healthy"]}]
    config["comfy"].update(download_timeout=2, max_in_flight=2)
    config["stop_grace_seconds"] = 5
    config["folders"] = [
        {"name": "slow", "root": "slow", "workflow": "sdxl", "settle_seconds": 0.2,
         "server_tags": ["stuck"]},
        {"name": "fast", "root": "hot", "workflow": "sdxl", "settle_seconds": 0.2,
         "server_tags": ["healthy"]}]
    hot = HotFolder(base=tmp_path, server_url=healthy.url, config=config)
    slow = tmp_path / "slow"
    try:
        hot.start()
        for i in range(6):  # enough to hold every worker (slots + 2) were they kept waiting
            (slow / "inbox" / f".s{i}.part").write_text(f"a job on the stuck server {i}")
            (slow / "inbox" / f".s{i}.part").rename(slow / "inbox" / f"s{i}.txt")
        wait_for(lambda: any(e.get("event") == "job.parked" for e in hot.events()),
                 what="a stuck download parked")
        for i in range(8):
            hot.drop(f"f{i}.txt", f"a job on the healthy server {i}")
        for i in range(8):
            assert hot.finished(f"f{i}.txt", timeout=60) == "done"
        assert not list((slow / "done").iterdir()) and not list((slow / "failed").iterdir())
        assert len(list((slow / "processing").glob("s*.txt"))) == 6  # waiting, not failed
        down = wait_for(lambda: [e for e in hot.events() if e.get("event") == "server.unreachable"],
                        what="the stuck download counted against its server")
        assert {e.get("server") for e in down} == {"stuck"}
        assert "took longer than 2 s" in down[0]["error"]
        started = time.monotonic()
        assert hot.stop() == 0
        assert time.monotonic() - started < 5 + 5  # its grace period, and a margin to exit
        assert "daemon.stopped" in hot.log()
    finally:
        hot.stop()
