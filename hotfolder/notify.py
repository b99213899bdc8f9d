"""systemd's notify protocol: one datagram per message to $NOTIFY_SOCKET, no libsystemd.

READY=1 once folders are watched and the config is valid (ComfyUI being down is a normal state,
reported in STATUS=, not a reason to withhold READY); WATCHDOG=1 only from a healthy main loop,
so a wedged loop lets systemd restart us.
"""

from __future__ import annotations

import os
import socket
import time

import structlog

log = structlog.get_logger()


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):
            address = "\0" + address[1:]  # abstract namespace
        self.address = address
        self.watchdog_seconds: float | None = None
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        if usec and usec.isdigit() and (not pid or pid == str(os.getpid())):
            self.watchdog_seconds = int(usec) / 2 / 1_000_000  # ping at half the timeout
        self._last_status = ""
        self._next_ping = 0.0

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, *lines: str) -> None:
        if not self.address:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.connect(self.address)
                sock.sendall("\n".join(lines).encode())
        except OSError as exc:
            log.warning("systemd.notify_failed", error=str(exc))

    def ready(self, status: str) -> None:
        self._last_status = status
        self.send("READY=1", f"STATUS={status}")

    def status(self, text: str) -> None:
        if text != self._last_status:
            self._last_status = text
            self.send(f"STATUS={text}")

    def watchdog(self, now: float | None = None) -> None:
        """Ping if due; call from the main loop only after its health check passed."""
        if self.watchdog_seconds is None:
            return
        now = time.monotonic() if now is None else now
        if now >= self._next_ping:
            self._next_ping = now + self.watchdog_seconds
            self.send("WATCHDOG=1")

    def reloading(self) -> None:
        self.send("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping: finishing jobs already on ComfyUI")
