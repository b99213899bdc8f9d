"""The HTTP underneath the ComfyUI client: one session per thread, every answer read within a
size and a time limit, every failure to get one a `ServerError` that says whether the request
may have reached the server anyway (`uncertain`)."""

from __future__ import annotations

import io
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import requests
import urllib3

from hotfolder.errors import JobError, Kind, ServerError, Stopping

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


class Transport:
    def __init__(self, url: str, *, name: str | None = None, timeout: float = 30.0,
                 headers: Mapping[str, str] | None = None, verify: bool | str = True,
                 limits: TransferLimits | None = None) -> None:
        self.url = url.rstrip("/")
        self.limits = limits or TransferLimits()
        self.name = name or self.url
        self.timeout = timeout
        self.headers = dict(headers or {})
        self.verify = verify
        self._idle: list[requests.Session] = []  # sessions no thread is sending on
        self._idle_lock = threading.Lock()
        self._proxies: dict[str, str] | None = None
        self._verify_setting = _ca_bundle_from_env(verify)

    def _session(self) -> requests.Session:
        """An idle session of this server's, or a new one that reads the environment once.

        By default requests looks up proxies, no_proxy, netrc and CA-bundle variables on every
        request, about a third of the client's CPU time at the job rates hotfolder runs. Here
        the proxies (honouring no_proxy) are resolved once per client and, for `verify: true`,
        $REQUESTS_CA_BUNDLE or $CURL_CA_BUNDLE once; ~/.netrc is not read (credentials come
        from the server's config). A config reload makes new clients, so new sessions.

        Sessions are lent to one request at a time and shared by all threads: with a session
        per thread and server, every worker met every server with a new session and a new
        connection (64 workers x 32 servers), which cost more than the jobs themselves.
        """
        with self._idle_lock:
            if self._idle:
                return self._idle.pop()
            if self._proxies is None:
                self._proxies = requests.utils.get_environ_proxies(self.url)
        session = requests.Session()
        session.trust_env = False
        session.proxies.update(self._proxies)
        session.headers["User-Agent"] = "hotfolder"
        session.headers.update(self.headers)
        return session

    def _give_back(self, session: requests.Session) -> None:
        """Once its request is sent and answered (a streamed body is read without it)."""
        with self._idle_lock:
            self._idle.append(session)

    def close(self) -> None:
        """Close the idle sessions and their kept-alive connections."""
        with self._idle_lock:
            idle, self._idle = self._idle, []
        for session in idle:
            session.close()

    def _request(self, method: str, path: str, *, stream: bool = False,
                 **kwargs: Any) -> requests.Response:
        """One request. Unless `stream`, the whole answer is read here, within
        `limits.answer_bytes` and `timeout` in all (not only per read): a server that sends
        hundreds of megabytes, or a byte every few seconds, is faulty (`ServerError`)."""
        kwargs.setdefault("timeout", self.timeout)
        kwargs.setdefault("verify", self._verify_setting)
        try:
            session = self._session()
            try:
                response = _send(session, method, self.url + path, kwargs)
            finally:
                self._give_back(session)
            if not stream:
                with response:
                    body = io.BytesIO()
                    self._drain(response, body.write, limit=self.limits.answer_bytes,
                                seconds=max(float(kwargs["timeout"]), 1.0),
                                what=f"its answer to {method} {path}", key="comfy.max_answer_bytes")
                # what requests would have read itself, so .json() and .text work as usual
                response._content = body.getvalue()
        except requests.ConnectTimeout as exc:
            raise ServerError(f"ComfyUI at {self.url} did not accept a connection within "
                              f"{kwargs['timeout']:g} s", server=self.name) from exc
        except requests.Timeout as exc:
            raise ServerError(f"ComfyUI at {self.url} did not answer {method} {path} within "
                              f"{kwargs['timeout']:g} s", server=self.name,
                              uncertain=True) from exc
        except requests.exceptions.SSLError as exc:
            raise ServerError(f"ComfyUI at {self.url}: TLS failed ({failure_reason(exc)}); check "
                              "the certificate, servers[].ca_bundle or servers[].verify",
                              server=self.name) from exc
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise ServerError(f"ComfyUI at {self.url} is unreachable ({failure_reason(exc)})",
                              server=self.name, uncertain=_maybe_sent(exc)) from exc
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
                              server=self.name, status=response.status_code, body=body,
                              uncertain=True)
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


_LEAN = frozenset({"json", "params", "timeout", "verify"})


def _send(session: requests.Session, method: str, url: str,
          kwargs: dict[str, Any]) -> requests.Response:
    """`session.request(..., stream=True)`, made leaner for the two requests every job makes
    (its POST /prompt, its GET /view): the request is prepared with the session's headers and
    handed to the session's adapter directly, skipping the merging of per-request and session
    settings (a tenth of a millisecond a request: it was the client's largest cost after the
    socket). What the lean path does not do itself goes the usual way: a request with other
    arguments (an upload) from the start; a redirect again through `session.request` (a 3xx
    was not acted on, so asking again is safe). Cookies a server sets are kept in the
    session's jar and sent with later requests; the request that set them is never sent again
    (a POST /prompt behind a sticky load balancer would queue the prompt twice)."""
    if not _LEAN.issuperset(kwargs):
        return session.request(method, url, stream=True, **kwargs)
    prepared = requests.PreparedRequest()
    prepared.prepare(method=method, url=url, headers=session.headers,
                     params=kwargs.get("params"), json=kwargs.get("json"),
                     cookies=session.cookies if len(session.cookies) else None)
    response = session.get_adapter(url).send(prepared, stream=True, timeout=kwargs["timeout"],
                                             verify=kwargs["verify"], proxies=session.proxies)
    if response.is_redirect:
        response.close()
        return session.request(method, url, stream=True, **kwargs)
    if "set-cookie" in response.headers:  # kept, as session.request would: never sent again
        requests.cookies.extract_cookies_to_jar(session.cookies, prepared, response.raw)
    return response


def _ca_bundle_from_env(verify: bool | str) -> bool | str:
    """`verify: true` means the system's trust, which requests lets these variables name."""
    if verify is True:
        return os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    return verify


def _read_some(response: requests.Response) -> bytes:
    """Whatever has arrived (up to CHUNK), not a full CHUNK: a trickling server must not hold
    one read for hours."""
    return response.raw.read1(CHUNK, decode_content=True)


def failure_reason(exc: BaseException) -> str:
    text = str(exc)
    for marker in ("Connection refused", "Name or service not known", "timed out",
                   "Connection reset", "Remote end closed", "CERTIFICATE_VERIFY_FAILED",
                   "certificate verify failed", "WRONG_VERSION_NUMBER"):
        if marker in text:
            return marker.lower()
    return type(exc).__name__


def json_or_none(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _maybe_sent(exc: BaseException) -> bool:
    """False only when the connection itself failed (refused, no route, name unknown): then
    nothing was sent. A connection lost later may have delivered the request."""
    if isinstance(exc, requests.ConnectionError) and exc.args:
        reason = getattr(exc.args[0], "reason", exc.args[0])
        if isinstance(reason, urllib3.exceptions.NewConnectionError):  # name errors too
            return False
    return True
