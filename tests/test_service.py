"""Running as a systemd service: sd_notify, graceful stop, reload, status."""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from harness import HotFolder, make_config, wait_for

from hotfolder.job.state import read_record
from hotfolder.notify import Notifier
from hotfolder.sim import SimServer


class NotifySocket:
    """The listening end systemd would hold: collects every datagram the daemon sends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            for line in data.decode().splitlines():
                self.messages.append((time.monotonic(), line))

    def lines(self, prefix: str) -> list[str]:
        return [m for _, m in self.messages if m.startswith(prefix)]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path):
    sock = NotifySocket(tmp_path / "notify.sock")
    yield sock
    sock.close()


def start_with_env(hot: HotFolder, env: dict[str, str]) -> None:
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        hot.start()
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def test_sd_notify_ready_status_watchdog_and_stopping(hot, notify_socket):
    start_with_env(hot, {"NOTIFY_SOCKET": str(notify_socket.path), "WATCHDOG_USEC": "400000"})
    wait_for(lambda: notify_socket.lines("READY=1"), what="READY=1")
    hot.drop("fox.txt", "a fox")
    assert hot.finished("fox.txt") == "done"
    wait_for(lambda: any("1 done" in s for s in notify_socket.lines("STATUS=")),
             what="a STATUS= line counting the finished job")
    time.sleep(1.0)
    assert hot.stop() == 0
    assert notify_socket.lines("READY=1") == ["READY=1"]  # once
    statuses = notify_socket.lines("STATUS=")
    assert len(set(statuses)) >= 2, "STATUS= never changed"
    assert any("comfy@" in s and " up" in s for s in statuses)
    pings = [t for t, m in notify_socket.messages if m == "WATCHDOG=1"]
    assert len(pings) >= 3
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    assert min(gaps) > 0.1, "pinged faster than half of WATCHDOG_USEC"
    assert notify_socket.lines("STOPPING=1")


def test_notifier_honours_watchdog_pid_and_abstract_sockets():
    assert Notifier({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}).watchdog_seconds is None
    mine = Notifier({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())})
    assert mine.watchdog_seconds == 1.0
    assert Notifier({"NOTIFY_SOCKET": "@hotfolder-test"}).address == "\0hotfolder-test"
    assert not Notifier({}).enabled


def test_sigterm_lets_a_running_job_finish_and_leaves_the_rest(tmp_path):
    with SimServer(host="127.0.0.1", port=0, job_seconds=1.5) as sim:
        config = make_config(tmp_path, sim.url)
        config["comfy"]["max_in_flight"] = 1
        hot = HotFolder(base=tmp_path, server_url=sim.url, config=config)
        hot.start()
        try:
            hot.drop("first.txt", "runs while we stop")
            wait_for(lambda: sim.stats()["prompts_received"] == 1, what="first submitted")
            # ready, waiting for the server's one slot: it stays unclaimed in the inbox
            hot.drop("second.txt", "waiting for a slot, never claimed")
            wait_for(lambda: any(e.get("event") == "job.ready" and e.get("file") == "second.txt"
                                 for e in hot.events()), what="second ready")
            hot.proc.send_signal(signal.SIGTERM)
            hot.drop("third.txt", "dropped after SIGTERM")
            assert hot.proc.wait(timeout=20) == 0
            assert (hot.dir("done") / "first.txt").exists()  # finished and delivered
            assert (hot.dir("outbox") / "first_00001.png").exists()
            assert sim.stats()["prompts_received"] == 1  # nothing new was submitted
            assert not [n for n in hot.in_processing() if not n.startswith(".")]
            assert (hot.dir("inbox") / "second.txt").exists()
            assert (hot.dir("inbox") / "third.txt").exists()  # not claimed while stopping
            # the next start picks up what was left
            hot.start()
            assert hot.finished("second.txt") == "done"
            assert hot.finished("third.txt") == "done"
        finally:
            hot.stop()


def test_grace_period_over_job_resumed_after_restart(tmp_path):
    with SimServer(host="127.0.0.1", port=0, job_seconds=3) as sim:
        config = make_config(tmp_path, sim.url)
        config["stop_grace_seconds"] = 0.5
        hot = HotFolder(base=tmp_path, server_url=sim.url, config=config)
        hot.start()
        try:
            hot.drop("long.txt", "longer than the grace period")
            wait_for(lambda: sim.stats()["prompts_received"] == 1, what="submitted")
            assert hot.stop() == 0
            assert "long.txt" in hot.in_processing()
            state = read_record(hot.dir("processing") / ".long.txt.state.json")
            assert state["prompt_id"] and state["phase"] == "submitted"
            hot.start()
            assert hot.finished("long.txt") == "done"
            assert sim.stats()["prompts_received"] == 1  # found again, not run twice
        finally:
            hot.stop()


def test_sighup_adds_a_folder_and_rejects_a_broken_config(hot):
    hot.start()
    hot.config["folders"].append({"name": "upscale", "root": "hot2", "workflow": "sdxl",
                                  "settle_seconds": 0.2})
    hot.write_config()
    hot.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "config.reloaded" in hot.log(), what="the reload")
    (hot.base / "hot2" / "inbox" / "new.txt").write_text("in the new folder")
    wait_for(lambda: (hot.base / "hot2" / "done" / "new.txt").exists(), what="new folder job")

    good = hot.config_path.read_text()
    hot.config_path.write_text(good + "\nthis: [is not valid\n")
    hot.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "config.reload_failed" in hot.log(), what="the rejected reload")
    assert hot.proc.poll() is None
    hot.drop("still.txt", "the old config keeps working")
    assert hot.finished("still.txt") == "done"


def test_status_command_shows_folders_jobs_and_servers(tmp_path):
    with SimServer(host="127.0.0.1", port=0, job_seconds=4) as sim:
        hot = HotFolder(base=tmp_path, server_url=sim.url, config=make_config(tmp_path, sim.url))
        hot.start()
        try:
            hot.drop("slow.txt", "in flight while we look")
            wait_for(lambda: sim.stats()["prompts_received"] == 1, what="submitted")

            def status() -> dict:
                out = subprocess.run([sys.executable, "-m", "hotfolder", "status", "--json",
                                      "--config", str(hot.config_path)], capture_output=True,
                                     text=True, check=True, timeout=30).stdout
                return json.loads(out)

            doc = wait_for(lambda: (d := status())["folders"][0]["jobs"] and
                           d["folders"][0]["jobs"][0]["progress"] and d, what="progress")
            job = doc["folders"][0]["jobs"][0]
            assert job["job"] == "slow.txt" and job["prompt_id"] and job["server"]
            assert doc["daemon"]["running"] and doc["servers"][0]["up"] is True
            assert doc["folders"][0]["counts"]["running"] == 1
            text = subprocess.run([sys.executable, "-m", "hotfolder", "status", "--config",
                                   str(hot.config_path)], capture_output=True, text=True,
                                  check=True, timeout=30).stdout
            assert "slow.txt: step" in text and "server " in text and ": up" in text
        finally:
            hot.stop()
    doc = json.loads(subprocess.run(
        [sys.executable, "-m", "hotfolder", "status", "--json", "--config",
         str(hot.config_path)], capture_output=True, text=True, check=True, timeout=30).stdout)
    assert doc["daemon"]["running"] is False or doc["folders"][0]["jobs"] == []


def test_units_carry_the_required_directives():
    root = Path(__file__).resolve().parents[1] / "systemd"
    for unit in ("hotfolder.service", "hotfolder@.service"):
        text = (root / unit).read_text()
        for directive in ("Type=notify", "ExecReload=/bin/kill -HUP $MAINPID",
                          "Restart=on-failure", "WatchdogSec=", "User=hotfolder",
                          "NoNewPrivileges=yes", "ProtectSystem=strict", "ReadWritePaths=",
                          "ProtectHome=", "PrivateTmp=yes", "PrivateDevices=yes",
                          "ProtectKernelTunables=yes", "SystemCallFilter=@system-service",
                          "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6", "UMask=",
                          "LoadCredential=", "RestartPreventExitStatus=78"):
            assert directive in text, (unit, directive)
    assert "--config /etc/hotfolder/%i.yaml" in (root / "hotfolder@.service").read_text()


def test_sighup_swaps_servers_without_losing_the_job_in_flight(tmp_path):
    with SimServer(host="127.0.0.1", port=0, job_seconds=2) as old, \
            SimServer(host="127.0.0.1", port=0, job_seconds=0.05) as new:
        config = make_config(tmp_path, old.url)
        config["servers"] = [{"url": old.url, "name": "old"}]
        hot = HotFolder(base=tmp_path, server_url=old.url, config=config)
        hot.start()
        try:
            hot.drop("inflight.txt", "running on the server being removed")
            wait_for(lambda: old.stats()["prompts_received"] == 1, what="submitted to old")
            hot.config["servers"] = [{"url": new.url, "name": "new"}]
            hot.write_config()
            hot.proc.send_signal(signal.SIGHUP)
            wait_for(lambda: "config.reloaded" in hot.log(), what="the reload")
            hot.drop("after.txt", "goes to the server just added")
            assert hot.finished("after.txt") == "done"
            assert hot.finished("inflight.txt") == "done"
            assert hot.sidecar("inflight")["server"] == "old"
            assert hot.sidecar("after")["server"] == "new"
            assert old.stats()["prompts_received"] == 1
        finally:
            hot.stop()


def test_a_job_waiting_for_a_slot_stays_unclaimed_in_the_inbox(tmp_path):
    """A file is claimed only when a server has a slot for it (the scheduler chooses which
    file then): while it waits, another daemon on the same folder may still take it."""
    with SimServer(host="127.0.0.1", port=0, job_seconds=4) as sim:
        config = make_config(tmp_path, sim.url)
        config["comfy"]["max_in_flight"] = 1
        hot = HotFolder(base=tmp_path, server_url=sim.url, config=config)
        hot.start()
        try:
            hot.drop("first.txt", "holds the only slot")
            wait_for(lambda: sim.stats()["prompts_received"] == 1, what="first submitted")
            hot.drop("second.txt", "waits for the slot")
            wait_for(lambda: any(e.get("event") == "job.ready" and e.get("file") == "second.txt"
                                 for e in hot.events()), what="second ready")
            assert (hot.dir("inbox") / "second.txt").exists()
            assert "second.txt" not in hot.in_processing()
            assert sim.stats()["prompts_received"] == 1
            assert hot.finished("second.txt") == "done"
        finally:
            hot.stop()
