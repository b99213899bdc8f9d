"""HTTP side of one ComfyUI server, speaking the protocol exactly as the recorded captures show.

Every failure to get an answer (refused, timed out, 5xx) is a `ServerError`: the job is not
at fault and will be retried. A 400 is a `JobError` explained in the user's words. Only
`/history/{id}` is ever read, never the whole `/history`, which can hold 10,000 entries.
"""

from __future__ import annotations

import io
import json
import mimetypes
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import IO, Any
from urllib.parse import quote

import requests
import structlog
import urllib3

from hotfolder.comfy.explain import explain_rejection
from hotfolder.errors import JobError, Kind, ServerError, Stopping

log = structlog.get_logger()

CHUNK = 256 * 1024
RATE_WINDOW = 30.0  # seconds over which a transfer must keep its minimum rate


@dataclass(frozen=True)
class TransferLimits:
    """What one server may make the daemon read: JSON answers and WebSocket messages up to
    `answer_bytes`; an output file within `download_seconds`, never slower than
    `min_rate` bytes a second over any RATE_WINDOW. A server that breaks them is faulty."""

    answer_bytes: int = 64 * 1024 * 1024
    download_seconds: float = 3600.0
    min_rate: int = 10 * 1024


@dataclass(frozen=True)
class Submitted:
    prompt_id: str
    number: int | float | None


@dataclass(frozen=True)
class QueueState:
    running: frozenset[str]
    pending: frozenset[str]

    def __contains__(self, prompt_id: object) -> bool:
        return prompt_id in self.running or prompt_id in self.pending


class ComfyClient:
    """One server's HTTP API. Safe to share between threads (one session per thread)."""

    def __init__(self, url: str, *, name: str | None = None, timeout: float = 30.0,
                 headers: Mapping[str, str] | None = None, verify: bool | str = True,
                 limits: TransferLimits | None = None) -> None:
        self.url = url.rstrip("/")
        self.limits = limits or TransferLimits()
        self.name = name or self.url
        self.timeout = timeout
        self.headers = dict(headers or {})
        self.verify = verify
        self._local = threading.local()
        self._verify_setting = _ca_bundle_from_env(verify)

    # -- plumbing ---------------------------------------------------------------------------

    def _session(self) -> requests.Session:
        """A session that reads the environment once, when it is made.

        By default requests looks up proxies, no_proxy, netrc and CA-bundle variables on every
        request, about a third of the client's CPU time at the job rates hotfolder runs. Here
        the proxies (honouring no_proxy) and, for `verify: true`, $REQUESTS_CA_BUNDLE or
        $CURL_CA_BUNDLE are resolved once per session; ~/.netrc is not read (credentials
        come from the server's config). A config reload makes new clients, so new sessions.
        """
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.trust_env = False
            session.proxies.update(requests.utils.get_environ_proxies(self.url))
            session.headers["User-Agent"] = "hotfolder"
            session.headers.update(self.headers)
            self._local.session = session
        return session

    def _request(self, method: str, path: str, *, stream: bool = False,
                 **kwargs: Any) -> requests.Response:
        """One request. Unless `stream`, the whole answer is read here, within
        `limits.answer_bytes` and `timeout` in all (not only per read): a server that sends
        hundreds of megabytes, or a byte every few seconds, is faulty (`ServerError`)."""
        kwargs.setdefault("timeout", self.timeout)
        kwargs.setdefault("verify", self._verify_setting)
        try:
            response = self._session().request(method, self.url + path, stream=True, **kwargs)
            if not stream:
                with response:
                    body = io.BytesIO()
                    self._drain(response, body.write, limit=self.limits.answer_bytes,
                                seconds=max(float(kwargs["timeout"]), 1.0),
                                what=f"its answer to {method} {path}", key="comfy.max_answer_bytes")
                # what requests would have read itself, so .json() and .text work as usual
                response._content = body.getvalue()
        except requests.Timeout as exc:
            raise ServerError(f"ComfyUI at {self.url} did not answer {method} {path} within "
                              f"{kwargs['timeout']:g} s", server=self.name) from exc
        except requests.exceptions.SSLError as exc:
            raise ServerError(f"ComfyUI at {self.url}: TLS failed ({_reason(exc)}); check "
                              "the certificate, servers[].ca_bundle or servers[].verify",
                              server=self.name) from exc
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise ServerError(f"ComfyUI at {self.url} is unreachable ({_reason(exc)})",
                              server=self.name) from exc
        if response.status_code in (401, 407) or response.status_code >= 500:
            response.close()  # a streamed answer is not read any further
        if response.status_code in (401, 407):
            raise ServerError(f"ComfyUI at {self.url} answered HTTP {response.status_code}: "
                              "unauthorised - check the server's token, basic_auth or "
                              "headers in the config", server=self.name,
                              status=response.status_code)
        if response.status_code >= 500:
            body = "" if stream else response.text[:2000]
            raise ServerError(f"ComfyUI at {self.url} answered {method} {path} with HTTP "
                              f"{response.status_code}: {body.strip() or '(empty body)'}",
                              server=self.name, status=response.status_code, body=body)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError as exc:
            raise ServerError(f"ComfyUI at {self.url} answered {method} {path} with HTTP "
                              f"{response.status_code} and a body that is not JSON",
                              server=self.name, status=response.status_code,
                              body=response.text[:2000]) from exc

    # -- the API ------------------------------------------------------------------------------

    def submit(self, workflow: Mapping[str, Any], *, prompt_id: str,
               client_id: str) -> Submitted:
        """POST /prompt with our own prompt_id, so the job can be found again after any crash."""
        body = {"prompt": workflow, "client_id": client_id, "prompt_id": prompt_id}
        response = self._request("POST", "/prompt", json=body)
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if response.status_code == 403:
            # ComfyUI's Origin check answers 403 with an empty body; a proxy may refuse us too.
            # Not the job's fault: it waits until the server (or its proxy) lets us in.
            raise ServerError(f"ComfyUI at {self.url} refused POST /prompt with HTTP 403 (an "
                              "Origin/Host mismatch, or a proxy denying access)",
                              server=self.name, status=403)
        if response.status_code == 400 and isinstance(answer, Mapping):
            message, problems = explain_rejection(answer, workflow)
            raise JobError(message, kind=Kind.REJECTED,
                           details={"problems": problems, "comfyui": answer})
        if response.status_code != 200 or not isinstance(answer, Mapping):
            raise ServerError(f"ComfyUI at {self.url} answered POST /prompt with HTTP "
                              f"{response.status_code}: {response.text[:500]}",
                              server=self.name, status=response.status_code,
                              body=response.text[:2000])
        if answer.get("node_errors"):
            # ComfyUI dropped the invalid outputs and runs the rest: that is not what was asked
            message, problems = explain_rejection(answer, workflow)
            raise JobError(message, kind=Kind.REJECTED,
                           details={"problems": problems, "comfyui": answer,
                                    "partial_prompt_id": answer.get("prompt_id")})
        return Submitted(prompt_id=str(answer.get("prompt_id", prompt_id)),
                         number=answer.get("number"))

    def history(self, prompt_id: str) -> dict[str, Any] | None:
        """The finished entry, or None while queued, running, unknown or forgotten."""
        answer = self._json("GET", f"/history/{quote(prompt_id, safe='')}")
        if isinstance(answer, Mapping):
            entry = answer.get(prompt_id)
            if isinstance(entry, dict):
                return entry
        return None

    def queue(self) -> QueueState:
        answer = self._json("GET", "/queue")

        def ids(key: str) -> frozenset[str]:
            items = answer.get(key, []) if isinstance(answer, Mapping) else []
            return frozenset(str(item[1]) for item in items
                             if isinstance(item, list) and len(item) > 1)

        return QueueState(running=ids("queue_running"), pending=ids("queue_pending"))

    def queue_remaining(self) -> int:
        answer = self._json("GET", "/prompt")
        try:
            return int(answer["exec_info"]["queue_remaining"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ServerError(f"ComfyUI at {self.url}: unexpected /prompt answer {answer!r}",
                              server=self.name) from exc

    def object_info(self) -> dict[str, Any]:
        answer = self._json("GET", "/object_info")
        return answer if isinstance(answer, dict) else {}

    def interrupt(self, prompt_id: str) -> None:
        """Interrupts only if this prompt is the one running (ComfyUI ignores it otherwise)."""
        self._request("POST", "/interrupt", json={"prompt_id": prompt_id})

    def delete_queued(self, prompt_id: str) -> None:
        self._request("POST", "/queue", json={"delete": [prompt_id]})

    def delete_history(self, prompt_id: str) -> None:
        self._request("POST", "/history", json={"delete": [prompt_id]})

    def download(self, output: Mapping[str, Any], sink: IO[bytes],
                 max_bytes: int | None = None,
                 cancelled: Callable[[], bool] | None = None) -> int:
        """Stream one output file from /view into `sink`; returns the byte count.

        An answer longer than `max_bytes` is cut off and fails the job: a server (or whatever
        answers in its name) must not be able to fill the disk.
        """
        params = {"filename": str(output.get("filename", "")),
                  "subfolder": str(output.get("subfolder", "")),
                  "type": str(output.get("type", "output"))}
        response = self._request("GET", "/view", params=params, stream=True)
        with response:
            if response.status_code != 200:
                raise JobError(f"ComfyUI could not send the output {params['filename']!r} "
                               f"(HTTP {response.status_code} from /view)", kind=Kind.DOWNLOAD,
                               details={"output": dict(output), "status": response.status_code})
            try:
                return self._drain(response, sink.write, limit=max_bytes,
                                   seconds=self.limits.download_seconds,
                                   what=f"the output {params['filename']!r}",
                                   key="comfy.max_output_bytes", too_large=JobError,
                                   cancelled=cancelled)
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
                raise ServerError(f"download of {params['filename']!r} from {self.url} broke "
                                  f"off ({_reason(exc)})", server=self.name) from exc

    def upload_image(self, data: bytes, *, name: str, subfolder: str = "") -> str:
        """POST /upload/image into the input folder; returns the name LoadImage takes.

        `overwrite` is never sent (off): a file of that name with other content is kept and the
        upload gets a free name (`name (1).png`), identical content gets the same name back.
        """
        return self._upload("/upload/image", data, name=name, subfolder=subfolder)

    def upload_mask(self, data: bytes, *, name: str, subfolder: str,
                    original: Mapping[str, str]) -> str:
        """POST /upload/mask: ComfyUI saves a copy of `original` (an image already in its
        input folder) whose alpha channel is the alpha of `data`, under `name`."""
        return self._upload("/upload/mask", data, name=name, subfolder=subfolder,
                            extra={"original_ref": json.dumps(dict(original))})

    def _upload(self, path: str, data: bytes, *, name: str, subfolder: str,
                extra: Mapping[str, str] | None = None) -> str:
        mime = mimetypes.guess_type(name)[0] or "application/octet-stream"
        fields = {"type": "input", "subfolder": subfolder, **(extra or {})}
        response = self._request("POST", path, files={"image": (name, data, mime)},
                                 data=fields)
        status = response.status_code
        if status == 403:  # the Origin check, or a proxy denying us: as for POST /prompt
            raise ServerError(f"ComfyUI at {self.url} refused POST {path} with HTTP 403 (an "
                              "Origin/Host mismatch, or a proxy denying access)",
                              server=self.name, status=403)
        if status == 413:
            raise JobError(f"the image {name!r} ({len(data)} bytes) is larger than ComfyUI at "
                           f"{self.url} accepts (its --max-upload-size, 100 MB by default)",
                           kind=Kind.TOO_LARGE, details={"status": status, "bytes": len(data)})
        answer: Any = None
        if status == 200:
            try:
                answer = response.json()
            except ValueError:
                answer = None
        uploaded = answer.get("name") if isinstance(answer, Mapping) else None
        if status != 200 or not isinstance(uploaded, str) or not uploaded:
            body = response.text[:500].strip()
            raise JobError(f"ComfyUI at {self.url} did not take the image {name!r}: POST {path} "
                           f"answered HTTP {status}{': ' + body if body else ''}",
                           kind=Kind.UPLOAD, details={"status": status, "body": body})
        folder = answer.get("subfolder") or ""
        return f"{folder}/{uploaded}" if isinstance(folder, str) and folder else uploaded

    def _drain(self, response: requests.Response, write: Callable[[bytes], Any], *,
               limit: int | None, seconds: float, what: str, key: str,
               too_large: type[Exception] = ServerError,
               cancelled: Callable[[], bool] | None = None) -> int:
        """Read the answer's body into `write`: at most `limit` bytes, within `seconds`, and
        at least `limits.min_rate` bytes a second over each RATE_WINDOW. A read waiting longer
        than the request timeout for the next byte fails in requests itself."""
        started = window = time.monotonic()
        total = in_window = 0
        while chunk := _read_some(response):
            total += len(chunk)
            in_window += len(chunk)
            if limit is not None and total > limit:
                message = f"{what} is larger than {key} ({limit} bytes); reading stopped"
                if too_large is JobError:
                    raise JobError(message, kind=Kind.DOWNLOAD)
                raise ServerError(f"ComfyUI at {self.url}: {message}", server=self.name)
            write(chunk)
            if cancelled is not None and cancelled():
                raise Stopping  # the daemon stops: the download is picked up at the next start
            now = time.monotonic()
            if now - started > seconds:
                raise ServerError(f"ComfyUI at {self.url} took longer than {seconds:g} s to send "
                                  f"{what}; stopped", server=self.name)
            if now - window >= RATE_WINDOW:
                if in_window < self.limits.min_rate * (now - window):
                    raise ServerError(f"ComfyUI at {self.url} sent {what} at "
                                      f"{in_window / (now - window):.0f} bytes/s, under "
                                      f"comfy.min_download_rate ({self.limits.min_rate}); "
                                      "stopped", server=self.name)
                window, in_window = now, 0
        return total

    def ping(self) -> bool:
        try:
            self.queue_remaining()
        except ServerError:
            return False
        return True


def _ca_bundle_from_env(verify: bool | str) -> bool | str:
    """`verify: true` means the system's trust, which requests lets these variables name."""
    if verify is True:
        return os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    return verify


def _read_some(response: requests.Response) -> bytes:
    """Whatever has arrived (up to CHUNK), not a full CHUNK: a trickling server must not hold
    one read for hours."""
    return response.raw.read1(CHUNK, decode_content=True)


def _reason(exc: BaseException) -> str:
    text = str(exc)
    for marker in ("Connection refused", "Name or service not known", "timed out",
                   "Connection reset", "Remote end closed", "CERTIFICATE_VERIFY_FAILED",
                   "certificate verify failed", "WRONG_VERSION_NUMBER"):
        if marker in text:
            return marker.lower()
    return type(exc).__name__
