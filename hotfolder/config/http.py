"""The `http:` section: the status page and metrics endpoint, off unless `listen` is set.

Loopback is the default and the safe choice: anyone who reaches the page sees job names,
prompts and error messages. A non-loopback bind may be guarded by a token or basic auth, whose
secrets come from the same `{env|file|credential: …}` sources as the servers' secrets. Actions
(retrying a failed job) change files, so on a non-loopback bind they require one of those.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from hotfolder.config.problems import Problems, join
from hotfolder.credentials import SecretError, read_secret

DEFAULT_RECENT = 12


@dataclass(frozen=True)
class HttpConfig:
    host: str | None = None  # None: no page, no metrics endpoint
    port: int = 8787
    allow_actions: bool = False  # a Retry button for failed jobs
    recent: int = DEFAULT_RECENT  # finished and failed jobs listed per folder
    # secrets, never printed (repr=False)
    token: str | None = field(default=None, repr=False)
    basic_auth: tuple[str, str] | None = field(default=None, repr=False)  # user, password

    @property
    def enabled(self) -> bool:
        return self.host is not None

    @property
    def listen(self) -> str:
        return f"[{self.host}]:{self.port}" if self.host and ":" in self.host \
            else f"{self.host}:{self.port}"

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    @property
    def authenticated(self) -> bool:
        return self.token is not None or self.basic_auth is not None


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_http(value: Any, p: Problems) -> HttpConfig:
    where = "http"
    data = p.mapping(value, where, ("listen", "allow_actions", "recent", "token", "basic_auth"))
    host, port = _listen(data.get("listen"), join(where, "listen"), p)
    token = _secret(data.get("token"), join(where, "token"), p)
    basic = _basic(data.get("basic_auth"), join(where, "basic_auth"), p)
    config = HttpConfig(
        host=host, port=port,
        allow_actions=p.boolean(data, "allow_actions", where, False),
        recent=p.number(data, "recent", where, DEFAULT_RECENT, minimum=1, integer=True),
        token=token, basic_auth=basic)
    if config.enabled and config.allow_actions and not config.loopback \
            and not config.authenticated:
        p.add(join(where, "allow_actions"),
              f"actions on a page listening on {config.listen} (not loopback) need "
              "http.token or http.basic_auth, or anyone who reaches it can move files")
    return config


def _listen(value: Any, where: str, p: Problems) -> tuple[str | None, int]:
    if value is None:
        return None, HttpConfig.port
    parts = urlsplit("//" + value) if isinstance(value, str) and value else None
    try:
        port = parts.port if parts is not None else None
    except ValueError:
        port = None
    host = parts.hostname if parts is not None else None
    if parts is None or port is None or not host or parts.path or parts.query \
            or parts.username is not None:
        p.add(where, f"expected HOST:PORT such as 127.0.0.1:8787 or [::1]:8787, got {value!r}")
        return None, HttpConfig.port
    return host, port


def _secret(value: Any, where: str, p: Problems) -> str | None:
    if value is None:
        return None
    try:
        return read_secret(value)
    except SecretError as exc:
        p.add(where, str(exc))
        return None


def _basic(value: Any, where: str, p: Problems) -> tuple[str, str] | None:
    data = p.mapping(value, where, ("user", "password"))
    if not isinstance(value, Mapping):
        return None
    user = data.get("user")
    password = _secret(data.get("password"), join(where, "password"), p)
    if not isinstance(user, str) or not user or ":" in user:
        p.add(join(where, "user"), f"expected a user name without ':', got {user!r}")
        return None
    return (user, password) if password else None
