"""Reading a ComfyUI WebSocket cheaply: whole frames cut from large reads, reads paced.

A daemon feeding many servers reads ~80 frames a job from each; websocket-client's own
parser and one read per frame made that its largest CPU cost. The listener
(`comfy/listener.py`) decides what the messages mean; this module only gets them off the
socket, within the size cap.
"""

from __future__ import annotations

import struct
import time
from typing import Any

import websocket
from websocket import continuous_frame, frame_buffer

READ_SIZE = 65536  # bytes asked of the socket at once (see BufferedWebSocket)
COALESCE_SECONDS = 0.02  # pause before each socket read (see BufferedWebSocket)


class _CappedFrames(frame_buffer):
    """websocket-client's frame parser, rewritten to take each frame whole from one buffer.

    The library's parser asks its source separately for each frame's header, length, mask and
    payload, through several layers of calls: at ~80 frames a job it was the largest CPU cost
    of a daemon feeding many servers. Here bytes are read in large pieces and a frame is
    cut out of them once it is all there (bytes read before a time-out stay buffered, so a
    frame may span several reads). A frame longer than the cap is refused as soon as its
    length is known, before its payload is gathered: a server cannot make the daemon buffer a
    4 GB frame.
    """

    limit = 64 * 1024 * 1024

    def __init__(self, recv_fn: Any, skip_utf8_validation: bool) -> None:
        super().__init__(recv_fn, skip_utf8_validation)
        self._buf = b""
        self._pos = 0

    def _need(self, count: int) -> bytes:
        """The buffer, holding at least `count` bytes from `_pos` on."""
        have = len(self._buf) - self._pos
        if have >= count:
            return self._buf
        parts = [self._buf[self._pos:]]
        try:
            while have < count:
                more = self.recv(max(count - have, READ_SIZE))
                parts.append(more)
                have += len(more)
        finally:  # a time-out keeps what arrived for the next call
            self._buf, self._pos = b"".join(parts), 0
        return self._buf

    def recv_frame(self) -> websocket.ABNF:
        with self.lock:
            buf = self._need(2)
            b1, b2 = buf[self._pos], buf[self._pos + 1]
            has_mask, length = b2 >> 7, b2 & 0x7F
            size = 2 + (2 if length == 126 else 8 if length == 127 else 0)
            buf = self._need(size + 4 * has_mask)
            start = self._pos
            if length == 126:
                length = struct.unpack_from("!H", buf, start + 2)[0]
            elif length == 127:
                length = struct.unpack_from("!Q", buf, start + 2)[0]
            if length > self.limit:
                raise websocket.WebSocketProtocolException(
                    f"a WebSocket frame of {length} bytes, over comfy.max_answer_bytes "
                    f"({self.limit})")
            head = size + 4 * has_mask
            buf = self._need(head + length)
            start = self._pos
            payload = buf[start + head:start + head + length]
            if has_mask:
                payload = websocket.ABNF.mask(buf[start + size:start + head], payload)
            self._pos = start + head + length
            frame = websocket.ABNF(b1 >> 7 & 1, b1 >> 6 & 1, b1 >> 5 & 1, b1 >> 4 & 1, b1 & 0xF,
                                   has_mask, payload)
        frame.validate(self.skip_utf8_validation)
        return frame

    def take_buffered(self, skip: bytes) -> list[bytes]:
        """The payloads of the text frames already whole in the buffer, cut out in one pass:
        the frames a read brought after the one `recv_frame` returned (a step's messages come
        in bursts). Binary frames and text frames starting with `skip` are passed over without
        being copied. Stops at the first frame that needs websocket-client's own handling (a
        control frame, a fragment, a mask, reserved bits) or is not all there yet: those are
        left for `recv_frame`. The caller makes sure no fragmented message is under way."""
        out: list[bytes] = []
        with self.lock:
            buf, pos = self._buf, self._pos
            end = len(buf)
            while end - pos >= 2:
                b1, b2 = buf[pos], buf[pos + 1]
                opcode = b1 & 0x0F
                if b1 & 0xF0 != 0x80 or b2 & 0x80 or opcode not in (1, 2):
                    break  # not fin, reserved bits, masked, or control/continuation
                length, head = b2 & 0x7F, 2
                if length == 126:
                    if end - pos < 4:
                        break
                    length, head = (buf[pos + 2] << 8) | buf[pos + 3], 4
                elif length == 127:
                    if end - pos < 10:
                        break
                    length, head = struct.unpack_from("!Q", buf, pos + 2)[0], 10
                start = pos + head
                if length > self.limit or end - start < length:
                    break
                pos = start + length
                if opcode == 1 and not (skip and buf.startswith(skip, start, pos)):
                    out.append(buf[start:pos])
            self._pos = pos
        return out


class _CappedMessages(continuous_frame):
    """The same cap for a message sent in many frames."""

    limit = 64 * 1024 * 1024

    def add(self, frame: websocket.ABNF) -> None:
        super().add(frame)
        if self.cont_data is not None and len(self.cont_data[1]) > self.limit:
            raise websocket.WebSocketProtocolException(
                f"a WebSocket message over comfy.max_answer_bytes ({self.limit} bytes)")


class BufferedWebSocket(websocket.WebSocket):
    """websocket-client with reads from the socket in large gulps.

    It asks the socket separately for each frame's 2-byte header, its length and its payload:
    three system calls per frame and about 80 frames per job, which made reading the socket the
    largest CPU cost of a daemon feeding several servers. Here one read takes whatever has
    arrived, and the frame parser is served from that.

    ComfyUI sends a message per sampler step, each a few milliseconds apart; waking for every
    one costs a thread switch apiece. A short pause before each read lets them gather in the
    socket's buffer and be taken together, at the price of up to COALESCE_SECONDS later
    notice of a finished job. While the listener knows that no prompt can finish yet (its
    sampler has steps to go), it sets `hold_until` and reads wait that long instead.
    """

    _chunk = b""
    _offset = 0
    hold_until = 0.0  # time.monotonic() before which no read is needed (set by the listener)

    def cap_messages(self, limit: int) -> None:
        """Frames and messages from now on at most `limit` bytes (comfy.max_answer_bytes)."""
        frames = _CappedFrames(self._recv, self.frame_buffer.skip_utf8_validation)
        frames.limit = limit
        messages = _CappedMessages(self.cont_frame.fire_cont_frame,
                                   self.cont_frame.skip_utf8_validation)
        messages.limit = limit
        self.frame_buffer, self.cont_frame = frames, messages

    def take_buffered(self, skip: bytes) -> list[bytes]:
        """Text messages already whole in the buffer, without a read (`_CappedFrames`); none
        while a fragmented message is being put together (websocket-client does that)."""
        frames = self.frame_buffer
        if not isinstance(frames, _CappedFrames) or self.cont_frame.cont_data is not None:
            return []
        return frames.take_buffered(skip)

    def _recv(self, bufsize: int) -> bytes:
        if self._offset >= len(self._chunk):
            time.sleep(max(COALESCE_SECONDS, self.hold_until - time.monotonic()))
            self._chunk, self._offset = super()._recv(READ_SIZE), 0
        start = self._offset
        self._offset = min(start + bufsize, len(self._chunk))
        return self._chunk[start:self._offset]
