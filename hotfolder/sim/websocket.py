"""Minimal RFC 6455 server side: handshake, unmasked server frames, masked client frames.

Each connection gets its own writer thread and outgoing queue so that the simulated GPU never
blocks on a slow or dead client, while the order of frames on one socket stays exactly the order
in which they were sent (clients depend on `execution_success` preceding `executing null`).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import queue
import socket
import struct
import threading
from collections.abc import Callable
from typing import Any, BinaryIO

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_MESSAGE = 16 * 1024 * 1024

OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def accept_key(client_key: str) -> str:
    digest = hashlib.sha1((client_key.strip() + GUID).encode("ascii")).digest()  # noqa: S324 - RFC 6455
    return base64.b64encode(digest).decode("ascii")


def encode_frame(opcode: int, payload: bytes) -> bytes:
    length = len(payload)
    if length < 126:
        header = struct.pack(">BB", 0x80 | opcode, length)
    elif length < 1 << 16:
        header = struct.pack(">BBH", 0x80 | opcode, 126, length)
    else:
        header = struct.pack(">BBQ", 0x80 | opcode, 127, length)
    return header + payload


def _unmask(payload: bytes, mask: bytes) -> bytes:
    if not payload:
        return payload
    repeated = (mask * (len(payload) // 4 + 1))[: len(payload)]
    value = int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")
    return value.to_bytes(len(payload), "big")


class ConnectionClosed(Exception):
    pass


class WebSocket:
    """One accepted WebSocket connection.

    Frames can be queued before `start()`: the connection is registered before the handshake
    answer goes out, so a client that POSTs right after connecting misses nothing.
    """

    def __init__(self, sock: socket.socket, rfile: BinaryIO, drop_after: int = 0) -> None:
        self.sock = sock
        self.rfile = rfile
        self.drop_after = drop_after
        self.feature_flags: dict[str, Any] = {}
        self.text_sent = 0
        self.closed = threading.Event()
        self._closing = False
        self._lock = threading.Lock()
        self._outgoing: queue.SimpleQueue[tuple[int, bytes] | None] = queue.SimpleQueue()
        self._idle = threading.Condition(self._lock)
        self._pending = 0
        self._writer = threading.Thread(target=self._write_loop, name="sim-ws-writer", daemon=True)

    def start(self) -> None:
        """Begin writing queued frames; call once the 101 handshake answer is out."""
        self._writer.start()

    @property
    def supports_preview_metadata(self) -> bool:
        return bool(self.feature_flags.get("supports_preview_metadata"))

    # -- sending (any thread) ---------------------------------------------------------------
    def _enqueue(self, opcode: int, payload: bytes) -> bool:
        with self._lock:
            if self._closing:
                return False
            self._pending += 1
            self._outgoing.put((opcode, payload))
            if opcode == OP_TEXT:
                self.text_sent += 1
                if self.drop_after and self.text_sent >= self.drop_after:
                    self._begin_close(1001, b"simulated drop")
            return True

    def send_text(self, text: str) -> bool:
        return self._enqueue(OP_TEXT, text.encode("utf-8"))

    def send_binary(self, data: bytes) -> bool:
        return self._enqueue(OP_BINARY, data)

    def close(self, code: int = 1000, reason: bytes = b"") -> None:
        with self._lock:
            self._begin_close(code, reason)

    def abort(self) -> None:
        """Drop the TCP connection without a closing handshake (simulator stopping)."""
        with self._lock:
            self._closing = True
            self._outgoing.put(None)
        self._shutdown()

    def _begin_close(self, code: int, reason: bytes) -> None:
        if self._closing:
            return
        self._closing = True
        self._pending += 1
        self._outgoing.put((OP_CLOSE, struct.pack(">H", code) + reason))
        self._outgoing.put(None)

    def flush(self, timeout: float) -> None:
        """Wait until everything queued so far has been handed to the kernel."""
        with self._idle:
            self._idle.wait_for(lambda: self._pending == 0 or self.closed.is_set(), timeout)

    def _write_loop(self) -> None:
        try:
            while True:
                item = self._outgoing.get()
                if item is None:
                    break
                opcode, payload = item
                try:
                    self.sock.sendall(encode_frame(opcode, payload))
                except OSError:
                    break
                finally:
                    with self._idle:
                        self._pending -= 1
                        self._idle.notify_all()
                if opcode == OP_CLOSE:
                    break
        finally:
            with self._lock:
                self._closing = True
            self.closed.set()
            with self._idle:
                self._idle.notify_all()
            if self.drop_after and self.text_sent >= self.drop_after:
                self._shutdown()

    def _shutdown(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    # -- receiving (the connection's own thread) --------------------------------------------
    def _read_exact(self, count: int) -> bytes:
        data = self.rfile.read(count)
        if data is None or len(data) < count:
            raise ConnectionClosed()
        return data

    def _read_frame(self) -> tuple[bool, int, bytes]:
        first, second = self._read_exact(2)
        fin, opcode = bool(first & 0x80), first & 0x0F
        masked, length = bool(second & 0x80), second & 0x7F
        if length == 126:
            (length,) = struct.unpack(">H", self._read_exact(2))
        elif length == 127:
            (length,) = struct.unpack(">Q", self._read_exact(8))
        if length > MAX_MESSAGE or not masked:
            self.close(1009 if masked else 1002)
            raise ConnectionClosed()
        mask = self._read_exact(4)
        return fin, opcode, _unmask(self._read_exact(length), mask)

    def serve(self, on_text: Callable[[str], None]) -> None:
        """Read client frames until the connection ends; answers pings and close frames."""
        fragments: list[bytes] = []
        fragment_op = OP_TEXT
        try:
            while True:
                fin, opcode, payload = self._read_frame()
                if opcode == OP_PING:
                    self._enqueue(OP_PONG, payload)
                elif opcode == OP_PONG:
                    continue
                elif opcode == OP_CLOSE:
                    code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else 1000
                    self.close(code if code in (1000, 1001) else 1000)
                    return
                elif opcode in (OP_TEXT, OP_BINARY, OP_CONTINUATION):
                    if opcode != OP_CONTINUATION:
                        fragments, fragment_op = [], opcode
                    fragments.append(payload)
                    if sum(len(f) for f in fragments) > MAX_MESSAGE:
                        self.close(1009)
                        return
                    if fin:
                        message = b"".join(fragments)
                        fragments = []
                        if fragment_op == OP_TEXT:
                            on_text(message.decode("utf-8", "replace"))
        except (ConnectionClosed, OSError, ValueError):
            return
        finally:
            with self._lock:
                self._closing = True
                self._outgoing.put(None)
            self.closed.wait(1.0)
