"""The daemon as a child process and a hot folder on disk, for end-to-end tests."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "config" / "workflows" / "sdxl_txt2img.json"


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll `predicate` until it is truthy; fail the test with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def _port_block() -> range | None:
    """Ports below the kernel's ephemeral range, a block of its own for each test process
    (pytest-xdist worker). A port the kernel picks (bind to 0) may be handed out again, to the
    other worker or to any client connection, before the server meant to listen on it has
    bound it; a port from this block is handed out once per run, and never picked by the
    kernel."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    size = 1500
    start = 16000 + index * size
    return range(start, start + size) if start + size <= low else None


_PORTS = _port_block()
_next_port = iter(_PORTS) if _PORTS is not None else None


def free_port() -> int:
    """A port on 127.0.0.1 nothing listens on, for a server the test starts next."""
    for port in _next_port or ():
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))  # no SO_REUSEADDR: skips ports in TIME_WAIT too
            except OSError:
                continue
            return port
    with socket.socket() as s:  # no block of our own (or it is used up): the kernel's pick
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class HotFolder:
    """A configured hot folder on disk plus the daemon process that serves it."""

    base: Path
    server_url: str
    config: dict[str, Any] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    log_name: str = "daemon.log"

    @property
    def root(self) -> Path:
        return self.base / "hot"

    def dir(self, name: str) -> Path:
        """A subfolder of the (first) hot folder, where the config puts it."""
        configured = (self.config.get("folders") or [{}])[0].get(name)
        return Path(configured) if configured else self.root / name

    @property
    def config_path(self) -> Path:
        return self.base / "hotfolder.yaml"

    @property
    def log_path(self) -> Path:
        return self.base / self.log_name

    def write_config(self) -> None:
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))

    def start(self, *extra: str) -> subprocess.Popen[bytes]:
        self.write_config()
        offset = len(self.log())
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("HOTFOLDER_CONFIG", None)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "hotfolder", "run", "--config", str(self.config_path),
                 *extra], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.base)
        wait_for(lambda: "daemon.ready" in self.log()[offset:] or self.proc.poll() is not None,
                 what="the daemon to start")
        assert self.proc.poll() is None, self.log()
        return self.proc

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail("the daemon did not stop within 20 s of SIGTERM\n" + self.log())

    def in_processing(self) -> list[str]:
        """Names in processing/ (jobs and their state records), without the daemon's status."""
        return sorted(p.name for p in self.dir("processing").iterdir()
                      if p.name != ".hotfolder-status.json")

    def kill(self) -> None:
        """SIGKILL: no cleanup, no goodbye, like a power cut for this process."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def twin(self, log_name: str) -> HotFolder:
        """Another daemon process on the same folders and config."""
        return HotFolder(base=self.base, server_url=self.server_url, config=self.config,
                         log_name=log_name)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def drop(self, name: str, content: str | bytes, *, stale: bool = False) -> Path:
        """Write a job the way a careful copier does: temp name in the inbox, then rename.

        `stale`: with an mtime a minute old, as a copy that keeps the original's time, so a
        file that cannot be parsed fails at once instead of being given time to be finished."""
        inbox = self.dir("inbox")
        inbox.mkdir(parents=True, exist_ok=True)
        tmp = inbox / f".{name}.part"
        tmp.write_bytes(content.encode() if isinstance(content, str) else content)
        if stale:
            old = time.time() - 60
            os.utime(tmp, (old, old))
        final = inbox / name
        tmp.rename(final)
        return final

    def finished(self, name: str, timeout: float = 30.0) -> str:
        """Wait until the job file is in done/ or failed/; return which."""
        def where() -> str | None:
            if (self.dir("done") / name).exists():
                return "done"
            if (self.dir("failed") / name).exists():
                return "failed"
            return None
        try:
            return wait_for(where, timeout, what=f"{name} to finish")
        except pytest.fail.Exception:
            print(self.log()[-6000:])
            raise

    def error(self, name: str) -> dict[str, Any]:
        stem = name.rsplit(".", 1)[0]
        return json.loads((self.dir("failed") / f"{stem}.error.json").read_text())

    def sidecar(self, stem: str) -> dict[str, Any]:
        return json.loads((self.dir("outbox") / f"{stem}.json").read_text())


def make_config(base: Path, server_url: str, **folder: Any) -> dict[str, Any]:
    (base / "workflows").mkdir(parents=True, exist_ok=True)
    shutil.copy(TEMPLATE, base / "workflows" / "sdxl.json")
    return {
        "servers": [server_url],
        "comfy": {"poll_interval": 0.2, "backoff_initial": 0.1, "backoff_max": 0.5,
                  "request_timeout": 5, "retries_5xx": 2, "max_in_flight": 2},
        "workflows": {"sdxl": "workflows/sdxl.json"},
        "folders": [{"name": "main", "root": "hot", "workflow": "sdxl",
                     "settle_seconds": 0.2, **folder}],
        "log": {"level": "debug", "format": "json"},
    }


def png_prompt(path: Path) -> dict[str, Any]:
    """The API prompt ComfyUI (and the simulator) embed in a PNG's `prompt` text chunk."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    pos = 8
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"tEXt" and body.startswith(b"prompt\x00"):
            return json.loads(body.split(b"\x00", 1)[1])
        if kind == b"zTXt" and body.startswith(b"prompt\x00"):
            return json.loads(zlib.decompress(body.split(b"\x00", 1)[1][1:]))
        pos += 12 + length
    raise AssertionError(f"{path.name} has no prompt chunk")
