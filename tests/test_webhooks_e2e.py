"""Webhooks end to end: the real daemon, the simulator and a receiver on 127.0.0.1, checked
with the standardwebhooks library's verifier."""

from __future__ import annotations

import base64
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests
from harness import HotFolder, free_port, make_config, wait_for
from standardwebhooks.webhooks import Webhook

SECRET = "whsec_" + base64.b64encode(b"a test key of 24 bytes!!").decode()
FAST = {"backoff_initial": 0.1, "backoff_max": 0.3}


class Receiver:
    """An HTTP endpoint on a fixed port that can be down (refusing), hanging (accepting and
    never answering) or answering 204; it records what arrives."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.arrived: list[dict[str, Any]] = []  # every request, answered or not
        self.answered: list[dict[str, Any]] = []  # those answered 204
        self.release = threading.Event()  # set: hanging requests end (unanswered)
        self.hang = False
        self._server: ThreadingHTTPServer | None = None
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                got = {"headers": dict(self.headers), "body": body}
                receiver.arrived.append(got)
                if receiver.hang:
                    receiver.release.wait(60)
                    return
                self.send_response(204)
                self.end_headers()
                receiver.answered.append(got)

            def log_message(self, *args: Any) -> None:
                pass

        self._handler = Handler

    def up(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def down(self) -> None:
        self.release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def verified(self) -> dict[str, dict[str, Any]]:
        """The answered events by webhook-id, each checked by the reference verifier."""
        verifier = Webhook(SECRET)
        return {got["headers"]["webhook-id"]: verifier.verify(got["body"], got["headers"])
                for got in self.answered}


def _config(tmp_path: Path, url: str, hook: dict[str, Any], **extra: Any) -> dict[str, Any]:
    config = make_config(tmp_path, url)
    config["webhooks"] = [{"url": hook.pop("url"), "secret": {"env": "HOOK_SECRET"},
                           **FAST, **hook}]
    config.update(extra)
    return config


RECORDER = """
import json, os, sys
with open(sys.argv[1], "a") as out:
    env = {k: v for k, v in os.environ.items() if k.startswith("HOTFOLDER_")}
    out.write(json.dumps({"stdin": sys.stdin.read(), "env": env}) + "\\n")
"""


def test_done_failed_and_batch_events_arrive_signed_once_the_receiver_is_up(
        tmp_path, sim, monkeypatch):
    monkeypatch.setenv("HOOK_SECRET", SECRET)
    receiver = Receiver()  # down: connections are refused
    script, got = tmp_path / "record.py", tmp_path / "exec.jsonl"
    script.write_text(RECORDER)
    web = free_port()
    config = _config(tmp_path, sim.url, {"url": receiver.url},
                     http={"listen": f"127.0.0.1:{web}"})
    config["webhooks"].append({"exec": [sys.executable, str(script), str(got)],
                               "events": ["job.done"], "folders": ["main"], **FAST})
    hot = HotFolder(base=tmp_path, server_url=sim.url, config=config)
    try:
        hot.start()
        hot.drop("fox.txt", "a red fox")
        hot.drop("bad.json", json.dumps({"prompt": "x", "steps": "many"}))
        hot.drop("trio.json", json.dumps({"prompt": "a cat", "count": 3, "seed": 1}))
        # every job finishes while the receiver refuses every attempt
        assert [hot.finished(n) for n in ("fox.txt", "bad.json", "trio.json")] == \
            ["done", "failed", "done"]
        wait_for(lambda: any(e["event"] == "webhook.failed" for e in hot.events()),
                 what="a failed attempt")
        assert not receiver.answered
        receiver.up()
        events = wait_for(lambda: len(receiver.verified()) == 3 and receiver.verified(),
                          what="three signed events")
        wait_for(lambda: got.exists() and len(got.read_text().splitlines()) == 2,
                 what="the command to see both done jobs")
        wait_for(lambda: not list((hot.dir("processing") / ".hotfolder-events").iterdir()),
                 what="an empty queue")
        wait_for(lambda: 'hotfolder_webhook_deliveries_total{result="ok"} 5.0' in (
            text := requests.get(f"http://127.0.0.1:{web}/metrics", timeout=10).text)
            and "hotfolder_webhook_pending 0.0" in text, what="the metrics to count them")
    finally:
        hot.stop()
        receiver.down()
    by_job = {e["data"]["job"]: e for e in events.values()}
    done, failed, batch = by_job["fox.txt"], by_job["bad.json"], by_job["trio.json"]
    assert (done["type"], failed["type"], batch["type"]) == ("job.done", "job.failed",
                                                            "job.done")
    sidecar = hot.sidecar("fox")
    assert done["data"]["sidecar"] == sidecar and done["data"]["sidecar_path"] == "fox.json"
    assert done["data"]["outputs"] == [
        {"path": o["file"], "bytes": (hot.dir("outbox") / o["file"]).stat().st_size}
        for o in sidecar["outputs"]]
    assert failed["data"]["error"] == hot.error("bad.json")
    assert failed["data"]["folder"] == "main" and failed["data"]["outputs"] == []
    assert batch["data"]["runs"] == {"total": 3, "done": 3, "failed": 0}
    assert batch["data"]["manifest"] == "trio/manifest.json"
    assert [o["path"] for o in batch["data"]["outputs"]] == [
        f"trio/trio-000{i}_00001.png" for i in (1, 2, 3)]
    assert all(e["timestamp"].endswith("Z") for e in events.values())
    ran = [json.loads(line) for line in got.read_text().splitlines()]
    assert {r["env"]["HOTFOLDER_JOB"] for r in ran} == {"fox.txt", "trio.json"}
    for r in ran:
        assert json.loads(r["stdin"]) == events[r["env"]["HOTFOLDER_EVENT_ID"]]
        assert r["env"]["HOTFOLDER_EVENT"] == r["stdin"]
        assert (r["env"]["HOTFOLDER_EVENT_TYPE"], r["env"]["HOTFOLDER_FOLDER"]) == \
            ("job.done", "main")
    sent = [e for e in hot.events() if e["event"] == "webhook.sent"]
    assert {e["event_id"] for e in sent if e["url"] == receiver.url} == set(events)


def test_pending_events_survive_a_crash_and_a_stop_with_their_ids(tmp_path, sim, monkeypatch):
    monkeypatch.setenv("HOOK_SECRET", SECRET)
    receiver = Receiver()
    receiver.hang = True  # accepts, never answers
    receiver.up()
    hot = HotFolder(base=tmp_path, server_url=sim.url,
                    config=_config(tmp_path, sim.url, {"url": receiver.url, "timeout": 60}))
    queue = hot.dir("processing") / ".hotfolder-events"

    def queued() -> set[str]:  # event ids from the queue's names (temp names are hidden)
        return {p.name.split(".")[0] for p in queue.iterdir() if not p.name.startswith(".")}

    try:
        # the daemon dies after two.txt's event is queued, before the job file is filed
        monkeypatch.setenv("HOTFOLDER_TEST_KILL", "queued:two.txt")
        proc = hot.start()
        hot.drop("one.txt", "first")
        assert hot.finished("one.txt") == "done"  # while its event's attempt hangs
        wait_for(lambda: receiver.arrived, what="the first attempt")
        hot.drop("two.txt", "second")
        wait_for(lambda: proc.poll() is not None, what="the daemon to die")
        assert not receiver.answered and (hot.dir("processing") / "two.txt").exists()
        queued_ids = queued()
        assert len(queued_ids) == 2
        before = len(receiver.arrived)

        monkeypatch.delenv("HOTFOLDER_TEST_KILL")
        hot.start()  # two.txt is finished again; the receiver still hangs
        assert hot.finished("two.txt") == "done"
        wait_for(lambda: len(receiver.arrived) > before, what="an attempt after the restart")
        assert queued() == queued_ids  # the replayed finish queued the same id again
        assert receiver.arrived[before]["headers"]["webhook-id"] in queued_ids
        assert hot.stop() == 0  # SIGTERM with an attempt under way: it does not wait for it

        receiver.hang = False
        receiver.release.set()
        hot.start()
        delivered = wait_for(lambda: len(receiver.verified()) == 2 and receiver.verified(),
                             what="both events after the restart")
    finally:
        hot.stop()
        receiver.down()
    assert set(delivered) == queued_ids
    assert {e["data"]["job"] for e in delivered.values()} == {"one.txt", "two.txt"}
    assert all(e["type"] == "job.done" for e in delivered.values())
