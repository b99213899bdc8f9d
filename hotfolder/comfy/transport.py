"""The HTTP underneath the ComfyUI client: one session per thread, every answer read within a
size and a time limit, every failure to get one a `ServerError` that says whether the request
may have reached the server anyway (`uncertain`)."""

from __future__ import annotations

import io
import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests
import urllib3
from requests.structures import CaseInsensitiveDict

from hotfolder.errors import JobError, Kind, ServerError, Stopping

CHUNK = 256 * 1024
POOL_SIZE = 64  # connections to one server kept open for reuse (more may be open at once)
_DIRECT = frozenset({"json", "params", "timeout", "verify"})  # what `_direct` knows how to send
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
        # the direct way (`_direct`): one connection pool shared by every thread; and the
        # cookies any answer set, sent with later requests whichever way they go
        self._direct_lock = threading.Lock()
        self._direct_checked = False  # whether the direct way may be taken is known
        self._adapter: requests.adapters.HTTPAdapter | None = None
        self._pool: urllib3.HTTPConnectionPool | None = None
        self._direct_headers: dict[str, str] = {}
        self._prefix = urlsplit(self.url).path
        self.cookies = requests.cookies.RequestsCookieJar()  # read and changed under:
        self._cookies_lock = threading.Lock()
        self._has_cookies = False

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
        with self._direct_lock:
            adapter, self._adapter, self._pool = self._adapter, None, None
            self._direct_checked = False
        if adapter is not None:
            adapter.close()

    def _direct_pool(self) -> urllib3.HTTPConnectionPool | None:
        """The connection pool for the direct way, or None where requests must do the work:
        a proxy, or credentials in the URL."""
        if self._direct_checked:
            return self._pool
        with self._direct_lock:
            if not self._direct_checked:
                session = self._session()  # the headers and proxies requests would use
                self._give_back(session)
                base = requests.Request("GET", self.url + "/").prepare()
                if not (requests.utils.select_proxy(base.url, session.proxies)
                        or "@" in urlsplit(self.url).netloc):
                    self._direct_headers = dict(session.headers)
                    self._adapter = requests.adapters.HTTPAdapter(pool_maxsize=POOL_SIZE)
                    self._pool = self._adapter.get_connection_with_tls_context(
                        base, self._verify_setting)
                self._direct_checked = True
        return self._pool

    def _request(self, method: str, path: str, *, stream: bool = False,
                 **kwargs: Any) -> requests.Response:
        """One request. Unless `stream`, the whole answer is read here, within
        `limits.answer_bytes` and `timeout` in all (not only per read): a server that sends
        hundreds of megabytes, or a byte every few seconds, is faulty (`ServerError`)."""
        kwargs.setdefault("timeout", self.timeout)
        kwargs.setdefault("verify", self._verify_setting)
        try:
            response = self._direct(method, path, kwargs)
            if response is None or response.is_redirect:
                session = self._session()
                try:
                    response = self._send(session, method, self.url + path, kwargs)
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
        except urllib3.exceptions.NewConnectionError as exc:  # (a ConnectTimeoutError too)
            raise ServerError(f"ComfyUI at {self.url} is unreachable ({failure_reason(exc)})",
                              server=self.name) from exc
        except (requests.ConnectTimeout, urllib3.exceptions.ConnectTimeoutError) as exc:
            raise ServerError(f"ComfyUI at {self.url} did not accept a connection within "
                              f"{kwargs['timeout']:g} s", server=self.name) from exc
        except (requests.Timeout, urllib3.exceptions.TimeoutError) as exc:
            raise ServerError(f"ComfyUI at {self.url} did not answer {method} {path} within "
                              f"{kwargs['timeout']:g} s", server=self.name,
                              uncertain=True) from exc
        except (requests.exceptions.SSLError, urllib3.exceptions.SSLError) as exc:
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

    def _direct(self, method: str, path: str,
                kwargs: dict[str, Any]) -> requests.Response | None:
        """The request sent straight through urllib3's connection pool, which requests itself
        sends through, its answer dressed as the `requests.Response` requests would have
        made; None where requests must send it (`_direct_pool`, an upload, a TLS setting of
        the request's own). Preparing and sending through requests cost twice urllib3's own
        time, the client's largest cost at fleet job rates.

        A redirect is answered closed, to be asked again the usual way (a 3xx was not acted
        on, so asking again is safe). Cookies a server sets are kept and sent with later
        requests; the request that set them is never sent again (a POST /prompt behind a
        sticky load balancer would queue the prompt twice)."""
        if not _DIRECT.issuperset(kwargs) or kwargs["verify"] != self._verify_setting:
            return None
        pool = self._direct_pool()
        if pool is None:
            return None
        target = self._prefix + path
        if kwargs.get("params"):
            target += "?" + urlencode(kwargs["params"], doseq=True)
        headers, body, url = self._direct_headers, None, self.url + target[len(self._prefix):]
        if kwargs.get("json") is not None:
            body = json.dumps(kwargs["json"], allow_nan=False).encode()
            headers = {**headers, "Content-Type": "application/json"}
        request = None  # as requests would have prepared it, for the cookies' rules
        if self._has_cookies:
            request = requests.Request(method, url, headers=headers).prepare()
            with self._cookies_lock:
                cookie = requests.cookies.get_cookie_header(self.cookies, request)
            if cookie:
                headers = {**headers, "Cookie": cookie}
        timeout = float(kwargs["timeout"])
        raw = pool.urlopen(method, target, body=body, headers=headers, retries=False,
                           redirect=False, assert_same_host=False, preload_content=False,
                           decode_content=False,
                           timeout=urllib3.Timeout(connect=timeout, read=timeout))
        response = requests.Response()
        response.status_code = raw.status
        response.headers = CaseInsensitiveDict(raw.headers)
        response.raw = raw
        response.reason = raw.reason
        response.url = url
        response.encoding = requests.utils.get_encoding_from_headers(response.headers)
        if response.is_redirect:
            response.close()
        elif "set-cookie" in response.headers:
            self._keep_cookies(request or requests.Request(method, url, headers=headers).prepare(),
                               raw)
        return response

    def _send(self, session: requests.Session, method: str, url: str,
              kwargs: dict[str, Any]) -> requests.Response:
        """The way requests sends it: through a proxy, with credentials from the URL, an
        upload, a redirect to follow. The cookies any answer set go along and are kept for
        the direct way too."""
        with self._cookies_lock:
            cookies = self.cookies.copy()
        response = session.request(method, url, stream=True, cookies=cookies, **kwargs)
        for answer in (*response.history, response):
            if "set-cookie" in answer.headers:
                self._keep_cookies(answer.request, answer.raw)
        return response

    def _keep_cookies(self, request: requests.PreparedRequest,
                      raw: urllib3.BaseHTTPResponse) -> None:
        with self._cookies_lock:
            requests.cookies.extract_cookies_to_jar(self.cookies, request, raw)
            self._has_cookies = bool(len(self.cookies))

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
