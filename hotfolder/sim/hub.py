"""Who receives which WebSocket message.

Sockets are kept in a dict keyed by sid, exactly like ComfyUI's `PromptServer.sockets`,
including its quirk: when a socket closes its sid is popped even if a newer socket registered
the same sid meanwhile, so that newer socket stops receiving anything ("goes deaf"). Clients
that reconnect with a fixed clientId must cope with this; the simulator reproduces it.
"""

from __future__ import annotations

import json
import struct
import threading
from typing import Any

from hotfolder.sim.websocket import WebSocket

EVENT_PREVIEW_IMAGE = 1
EVENT_PREVIEW_IMAGE_WITH_METADATA = 4
_FORMATS = {"JPEG": (1, "image/jpeg"), "PNG": (2, "image/png")}


class SocketHub:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.sockets: dict[str, WebSocket] = {}

    def register(self, sid: str, ws: WebSocket) -> None:
        with self._lock:
            self.sockets.pop(sid, None)  # the old socket stays open but is no longer addressed
            self.sockets[sid] = ws

    def unregister(self, sid: str) -> None:
        with self._lock:
            self.sockets.pop(sid, None)  # unconditionally, even if it is a newer socket's entry

    def _targets(self, sid: str | None) -> list[WebSocket]:
        with self._lock:
            if sid is None:
                return list(self.sockets.values())
            ws = self.sockets.get(sid)
            return [] if ws is None else [ws]

    def send(self, event: str, data: Any, sid: str | None) -> None:
        """To one sid, or to every socket when sid is None."""
        text = json.dumps({"type": event, "data": data})
        for ws in self._targets(sid):
            ws.send_text(text)

    def send_progress(
        self,
        progress: dict[str, Any],
        image: tuple[str, bytes] | None,
        meta: dict[str, Any],
        sid: str | None,
    ) -> None:
        """A `progress` message and, optionally, its preview image as a binary frame.

        Sockets that announced `supports_preview_metadata` get the event-4 frame before the
        text message; others get the legacy event-1 frame after it (the captured orders).
        """
        text = json.dumps({"type": "progress", "data": progress})
        for ws in self._targets(sid):
            if image is None:
                ws.send_text(text)
                continue
            kind, data = image
            code, mime = _FORMATS[kind]
            if ws.supports_preview_metadata:
                header = json.dumps({**meta, "image_type": mime}).encode("utf-8")
                frame = (
                    struct.pack(">II", EVENT_PREVIEW_IMAGE_WITH_METADATA, len(header))
                    + header
                    + data
                )
                ws.send_binary(frame)
                ws.send_text(text)
            else:
                ws.send_text(text)
                ws.send_binary(struct.pack(">II", EVENT_PREVIEW_IMAGE, code) + data)

    def flush(self, sid: str | None, timeout: float) -> None:
        for ws in self._targets(sid):
            ws.flush(timeout)

    def close_all(self) -> None:
        with self._lock:
            sockets = list(self.sockets.values())
            self.sockets.clear()
        for ws in sockets:
            ws.abort()

    def count(self) -> int:
        with self._lock:
            return len(self.sockets)
