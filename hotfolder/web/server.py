"""The status page's HTTP server: waitress, in a daemon thread beside the loop.

Routes: `/` (the page), `/api/status` (the `hotfolder status --json` document), `/metrics`
(Prometheus text), `/thumb/FOLDER/FILE` (a thumbnail from that folder's outbox), `/healthz`
(200 while the main loop is healthy, for load balancers and container checks) and, with
`http.allow_actions: true`, `POST /api/retry`. Nothing else on disk is reachable: the only
file-serving route goes through `thumbs.open_in`.

Protections, each for a reason:
- With a token or basic auth configured, everything but /healthz needs it. A browser presents
  the token once as `?token=…` and gets an HttpOnly, SameSite=Strict cookie (a hash of it).
- A loopback page without auth answers only Host names that are loopback, so a web page
  elsewhere cannot read it through DNS rebinding.
- Actions are POSTs with a JSON body and a per-process token from the page itself
  (`X-Hotfolder-Csrf`), which another site can neither read nor send without a CORS
  preflight this server never grants.
- Served by waitress: slow clients cost a connection each, never a thread or the page; at
  most MAX_CONNECTIONS at once, idle ones closed after IDLE_SECONDS.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote, urlsplit

import structlog

from hotfolder.config.http import HttpConfig, is_loopback
from hotfolder.config.model import Config, FolderConfig
from hotfolder.web.actions import ActionError, retry_failed
from hotfolder.web.thumbs import Thumbnails

log = structlog.get_logger()

MAX_CONNECTIONS = 100  # open connections at once; more wait in the listen backlog
MAX_BODY = 4096
MAX_HEADER = 16 * 1024
IDLE_SECONDS = 30  # a connection that sends and receives nothing this long is closed
THREADS = 4  # requests served at once (each is quick: the page asks once a second)
COOKIE = "hotfolder_token"
CSP = ("default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
       "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
       "frame-ancestors 'none'")


class Backend(Protocol):
    """What the page needs from the daemon."""

    config: Config

    def status_document(self) -> dict[str, Any]: ...

    def health(self) -> dict[str, Any]: ...

    def metrics_text(self) -> str: ...


@dataclass
class Request:
    method: str
    target: str  # as sent: still percent-encoded
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    body: bytes = b""
    client: str = ""


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


def text(status: int, message: str) -> Response:
    return Response(status, (message + "\n").encode())


def as_json(status: int, data: Any) -> Response:
    return Response(status, json.dumps(data, default=str).encode(), "application/json",
                    {"Cache-Control": "no-store"})


class WebApp:
    """Routing, auth and the handlers, on plain Request/Response values (tested directly)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.csrf = secrets.token_urlsafe(32)
        self.thumbs = Thumbnails()
        self.page = resources.files("hotfolder.web").joinpath("page.html").read_text("utf-8")

    def respond(self, req: Request) -> Response:
        http = self.backend.config.http
        if not req.target.startswith("/"):
            return text(400, "bad request target")
        split = urlsplit(req.target)
        try:
            parts = [unquote(p, errors="strict") for p in split.path.split("/")[1:]]
        except UnicodeDecodeError:
            return text(404, "not found")
        if parts == ["healthz"]:
            return self._only(req, ("GET", "HEAD")) or self.healthz()
        if http.loopback and not http.authenticated and not _loopback_host(req):
            return text(403, "this page answers only on loopback names (localhost, 127.0.0.1, "
                             "[::1]); to serve it under other names set http.token or "
                             "http.basic_auth")
        query = dict(parse_qsl(split.query))
        if http.token and "token" in query:
            return self._token_login(http, query["token"], split.path)
        if not self._authorised(req, http):
            return self._challenge(http)
        if parts == [""]:
            return self._only(req, ("GET", "HEAD")) or self.index()
        if parts == ["api", "status"]:
            return self._only(req, ("GET", "HEAD")) or as_json(
                200, self.backend.status_document())
        if parts == ["metrics"]:
            return self._only(req, ("GET", "HEAD")) or Response(
                200, self.backend.metrics_text().encode(),
                "text/plain; version=0.0.4; charset=utf-8", {"Cache-Control": "no-store"})
        if len(parts) == 3 and parts[0] == "thumb":
            return self._only(req, ("GET", "HEAD")) or self.thumbnail(parts[1], parts[2])
        if parts == ["api", "retry"]:
            return self._only(req, ("POST",)) or self.retry(req, http)
        return text(404, "not found")

    # -- handlers -----------------------------------------------------------------------------

    def healthz(self) -> Response:
        health = self.backend.health()
        return as_json(200 if health.get("healthy") else 503, health)

    def index(self) -> Response:
        nonce = secrets.token_urlsafe(16)
        actions = "on" if self.backend.config.http.allow_actions else "off"
        body = (self.page.replace("__NONCE__", nonce).replace("__CSRF__", self.csrf)
                .replace("__ACTIONS__", actions))
        return Response(200, body.encode(), "text/html; charset=utf-8",
                        {"Content-Security-Policy": CSP.format(nonce=nonce),
                         "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})

    def thumbnail(self, folder_name: str, name: str) -> Response:
        folder = self._folder(folder_name)
        made = self.thumbs.get(folder.outbox, name) if folder is not None else None
        if made is None:
            return text(404, "not found")
        body, content_type = made
        return Response(200, body, content_type, {"Cache-Control": "private, max-age=300"})

    def retry(self, req: Request, http: HttpConfig) -> Response:
        if not http.allow_actions:
            return as_json(403, {"error": "actions are off (http.allow_actions: false)"})
        sent = req.headers.get("x-hotfolder-csrf", "")
        if not hmac.compare_digest(sent.encode(), self.csrf.encode()):
            return as_json(403, {"error": "missing or stale page token; reload the page"})
        if req.headers.get("sec-fetch-site", "same-origin") != "same-origin" \
                or not _same_origin(req):
            return as_json(403, {"error": "cross-site request refused"})
        if req.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return as_json(415, {"error": "expected application/json"})
        try:
            data = json.loads(req.body)
        except ValueError:
            data = None
        if not isinstance(data, dict) or not isinstance(data.get("folder"), str) \
                or not isinstance(data.get("file"), str):
            return as_json(400, {"error": "expected {\"folder\": NAME, \"file\": NAME}"})
        folder = self._folder(data["folder"])
        if folder is None:
            return as_json(404, {"error": "no such folder"})
        try:
            target = retry_failed(folder, data["file"], client=req.client)
        except ActionError as exc:
            return as_json(exc.status, {"error": exc.message})
        return as_json(200, {"ok": True, "inbox_name": target.name})

    # -- helpers ------------------------------------------------------------------------------

    def _folder(self, name: str) -> FolderConfig | None:
        return next((f for f in self.backend.config.folders if f.name == name), None)

    @staticmethod
    def _only(req: Request, methods: tuple[str, ...]) -> Response | None:
        if req.method in methods:
            return None
        response = text(405, "method not allowed")
        response.headers["Allow"] = ", ".join(methods)
        return response

    def _authorised(self, req: Request, http: HttpConfig) -> bool:
        if not http.authenticated:
            return True
        scheme, _, credentials = req.headers.get("authorization", "").partition(" ")
        credentials = credentials.strip()
        if http.token and scheme.lower() == "bearer" \
                and hmac.compare_digest(credentials.encode(), http.token.encode()):
            return True
        if http.basic_auth and scheme.lower() == "basic":
            try:
                given = base64.b64decode(credentials, validate=True)
            except (binascii.Error, ValueError):
                given = b""
            expected = ":".join(http.basic_auth).encode()
            if hmac.compare_digest(given, expected):
                return True
        if http.token is None:
            return False
        cookie = _cookies(req.headers.get("cookie", "")).get(COOKIE, "")
        return hmac.compare_digest(cookie.encode(), _cookie_value(http.token).encode())

    def _token_login(self, http: HttpConfig, given: str, path: str) -> Response:
        assert http.token is not None
        if not hmac.compare_digest(given.encode(), http.token.encode()):
            return self._challenge(http)
        response = text(303, "signed in")
        # the same URL without the token; relative, so a reverse proxy's path prefix stays,
        # and only a plain name, so it can never point to another site
        last = path.rsplit("/", 1)[-1]
        response.headers["Location"] = last if re.fullmatch(r"[\w.-]+", last) else "./"
        response.headers["Set-Cookie"] = (f"{COOKIE}={_cookie_value(http.token)}; HttpOnly; "
                                          "SameSite=Strict; Path=/")
        return response

    @staticmethod
    def _challenge(http: HttpConfig) -> Response:
        response = text(401, "authentication required: open the page once as "
                             "/?token=YOUR_TOKEN, or send the configured credentials")
        response.headers["WWW-Authenticate"] = ('Basic realm="hotfolder", charset="UTF-8"'
                                                if http.basic_auth else 'Bearer realm="hotfolder"')
        return response


def _cookie_value(token: str) -> str:
    """The cookie holds a hash of the token, never the token itself."""
    return hashlib.sha256(b"hotfolder-web:" + token.encode()).hexdigest()


def _cookies(header: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in header.split(";"):
        name, _, value = part.strip().partition("=")
        out.setdefault(name, value)
    return out


def _host_of(value: str) -> str | None:
    try:
        return urlsplit("//" + value).hostname
    except ValueError:
        return None


def _loopback_host(req: Request) -> bool:
    host = req.headers.get("host")
    if host is not None and "," in host:  # several Host headers, joined: which one counts?
        return False
    return host is None or is_loopback(_host_of(host))


def _same_origin(req: Request) -> bool:
    origin = req.headers.get("origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc.lower() == req.headers.get("host", "").lower()


# -- the socket side ------------------------------------------------------------------------------


REASONS = {200: "OK", 303: "See Other", 400: "Bad Request", 401: "Unauthorized",
           403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 411: "Length Required",
           413: "Payload Too Large", 415: "Unsupported Media Type", 500: "Internal Server Error",
           503: "Service Unavailable"}


def wsgi_app(app: WebApp) -> Callable[[dict[str, Any], Callable[..., Any]], list[bytes]]:
    """The WebApp as a WSGI application, for waitress."""

    def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        method = environ["REQUEST_METHOD"]
        headers = {key[5:].replace("_", "-").lower(): value for key, value in environ.items()
                   if key.startswith("HTTP_")}
        if environ.get("CONTENT_TYPE"):
            headers["content-type"] = environ["CONTENT_TYPE"]
        body, too_large = b"", False
        if method == "POST":  # waitress refuses bodies over MAX_BODY itself; this is a check
            body = environ["wsgi.input"].read(MAX_BODY + 1)
            too_large = len(body) > MAX_BODY
        if too_large:
            response = text(413, "request body too large")
        else:
            request = Request(method, environ.get("REQUEST_URI") or "/", headers, body,
                              environ.get("REMOTE_ADDR", ""))
            try:
                response = app.respond(request)
            except Exception:  # a bug must not kill the page's thread or show a traceback
                log.exception("web.internal_error", path=request.target)
                response = text(500, "internal error; see the daemon's log")
        start_response(f"{response.status} {REASONS.get(response.status, 'Status')}", [
            ("Content-Type", response.content_type),
            ("Content-Length", str(len(response.body))),
            ("X-Content-Type-Options", "nosniff"), *response.headers.items()])
        return [] if method == "HEAD" else [response.body]

    return application


class WebServer:
    """Serves a WebApp on `http.listen` until stopped, with waitress.

    waitress reads every request off its socket in one event loop and hands only complete
    requests to its few threads, so a client that sends a byte every few seconds holds one
    connection, never a thread or the page; connections are capped (MAX_CONNECTIONS), idle
    ones closed after IDLE_SECONDS, headers and bodies bounded.
    """

    def __init__(self, backend: Backend) -> None:
        self.app = WebApp(backend)
        self.http = backend.config.http
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> WebServer:
        """Bind and serve; raises OSError when the address cannot be used."""
        from waitress.server import create_server

        host, port = self.http.host or "127.0.0.1", self.http.port
        try:
            self._server = create_server(
                wsgi_app(self.app), host=host, port=port, threads=THREADS,
                connection_limit=MAX_CONNECTIONS, channel_timeout=IDLE_SECONDS,
                cleanup_interval=5, max_request_header_size=MAX_HEADER,
                max_request_body_size=MAX_BODY, ident="hotfolder", expose_tracebacks=False,
                clear_untrusted_proxy_headers=True)
        except ValueError as exc:  # waitress says "unable to resolve" as a ValueError
            raise OSError(str(exc)) from exc
        self.port = int(self._server.effective_port)
        self._thread = threading.Thread(target=self._server.run, name="web", daemon=True)
        self._thread.start()
        shown = f"[{host}]" if ":" in host else host
        log.info("web.listening", url=f"http://{shown}:{self.port}/",
                 actions=self.http.allow_actions, auth=self.http.authenticated)
        if not self.http.loopback and not self.http.authenticated:
            log.warning("web.unauthenticated", listen=self.http.listen,
                        reason="anyone who reaches this address sees job names, prompts and "
                               "errors; set http.token or http.basic_auth")
        return self

    def stop(self) -> None:
        if self._server is not None:
            from waitress import wasyncore

            server, sockets = self._server, self._server._map
            server.task_dispatcher.shutdown()
            # the listener and every connection are closed by the serving thread itself (its
            # trigger runs the close between two selects): closed from here, a select under
            # way in that thread fails on the closed descriptors
            trigger = getattr(server, "trigger", None)
            if trigger is not None and self._thread is not None and self._thread.is_alive():
                trigger.pull_trigger(lambda: wasyncore.close_all(sockets))
                self._thread.join(timeout=5)
            if sockets:  # not served (or it did not stop in time): closed here after all
                wasyncore.close_all(sockets)
            self._server = None
