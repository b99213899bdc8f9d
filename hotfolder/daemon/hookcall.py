"""One delivery attempt of one event: a signed POST, or a command run with the event on stdin.

Every attempt is bounded in time, and a command is killed the moment the daemon stops, so the
sender thread never holds up a stop for long. An attempt that fails in any way (no answer, not
a 2xx, a non-zero exit, a timeout) is simply tried again later: the outcome is a value, not an
exception, because the sender treats every failure alike.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import requests

from hotfolder.config.webhooks import WebhookConfig
from hotfolder.credentials import redact

ENV_EVENT_MAX = 64 * 1024  # HOTFOLDER_EVENT holds the body up to this; stdin always has it
STDERR_SHOWN = 500  # bytes of a failing command's stderr put in the log
POLL = 0.1  # how often a running command is checked against the stop request


@dataclass(frozen=True)
class Result:
    ok: bool
    status: int | None = None  # the HTTP status, or the command's exit code
    error: str | None = None  # why it failed, for the log


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """`webhook-signature` per Standard Webhooks: HMAC-SHA256 over "id.timestamp.body"."""
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode("ascii")


def headers(key: bytes, msg_id: str, body: bytes, now: float | None = None) -> dict[str, str]:
    stamp = int(now if now is not None else time.time())
    return {"webhook-id": msg_id, "webhook-timestamp": str(stamp),
            "webhook-signature": sign(key, msg_id, stamp, body),
            "Content-Type": "application/json",
            "User-Agent": "hotfolder-webhooks"}


def post(session: requests.Session, hook: WebhookConfig, msg_id: str, body: bytes) -> Result:
    """The body is sent as is; the answer's body is never read (a receiver is untrusted)."""
    assert hook.url is not None
    try:
        with session.post(hook.url, data=body, headers=headers(hook.key, msg_id, body),
                          timeout=(min(hook.timeout, 5.0), hook.timeout), stream=True,
                          allow_redirects=False) as answer:
            code = answer.status_code
    except requests.RequestException as exc:
        return Result(False, error=str(redact(_short(exc))))
    if 200 <= code < 300:
        return Result(True, code)
    return Result(False, code, error=f"HTTP {code}")


def _short(exc: Exception) -> str:
    """requests' messages repeat the whole URL (with its query) and nested reprs."""
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 300 else text[:300] + "…"


def run(hook: WebhookConfig, item: Mapping[str, Any], stopping: Callable[[], bool]) -> Result:
    """Run the command with the event on stdin and in the environment; exit 0 is success."""
    body = item["body"].encode("utf-8")
    env = {**os.environ, "HOTFOLDER_EVENT_TYPE": item["type"], "HOTFOLDER_EVENT_ID": item["id"],
           "HOTFOLDER_JOB": item["job"], "HOTFOLDER_FOLDER": item["folder"]}
    if len(body) <= ENV_EVENT_MAX:
        env["HOTFOLDER_EVENT"] = item["body"]
    with tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(list(hook.exec), stdin=subprocess.PIPE,
                                    stdout=subprocess.DEVNULL, stderr=err, env=env,
                                    start_new_session=True)
        except OSError as exc:
            return Result(False, error=f"cannot run {hook.exec[0]}: {exc.strerror or exc}")
        deadline = time.monotonic() + hook.timeout
        data: bytes | None = body
        while True:
            try:
                proc.communicate(data, timeout=POLL)
                break
            except subprocess.TimeoutExpired:
                data = None  # already handed over; communicate() keeps writing it
            except (BrokenPipeError, OSError):
                data = None  # the command did not read its stdin: it may still succeed
                if proc.poll() is not None:
                    break
            if stopping() or time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                why = "the daemon is stopping" if stopping() else \
                    f"no exit within {hook.timeout:g} s"
                return Result(False, error=f"killed: {why}")
        if proc.returncode == 0:
            return Result(True, 0)
        err.seek(0)
        tail = err.read()[-STDERR_SHOWN:].decode("utf-8", "replace").strip()
        return Result(False, proc.returncode,
                      error=f"exit {proc.returncode}" + (f": {redact(tail)}" if tail else ""))
