"""The `webhooks:` section: where finished jobs are announced, signed or run as a command.

A URL entry is signed per Standard Webhooks, so its secret is required and comes from the
same `{env|file|credential: …}` sources as every other secret. An `exec:` entry runs a
command on this machine instead; nothing crosses a network, so it has no secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from hotfolder.config.problems import Problems, join
from hotfolder.credentials import SecretError, read_secret, redact, register
from hotfolder.retry import Backoff

EVENTS = ("job.done", "job.failed")
_COMMON = ("events", "folders", "timeout", "backoff_initial", "backoff_max", "give_up_hours",
           "max_pending")
URL_KEYS = ("url", "secret", *_COMMON)
EXEC_KEYS = ("exec", *_COMMON)


@dataclass(frozen=True)
class WebhookConfig:
    url: str | None = None  # a URL entry ...
    exec: tuple[str, ...] = ()  # ... or an argv run without a shell
    key: bytes = field(default=b"", repr=False)  # the HMAC key, never printed
    events: tuple[str, ...] = EVENTS
    folders: tuple[str, ...] = ()  # folder names; none: every folder
    timeout: float = 10.0  # seconds for one attempt (a command: 60 by default)
    backoff_initial: float = 5.0
    backoff_max: float = 600.0
    give_up_hours: float = 24.0  # an event still undelivered this long after its job ended
    max_pending: int = 10_000  # events waiting for this destination, per folder

    @property
    def ident(self) -> str:
        """Names this destination in queue file names: a new URL or command is a new one,
        and what was queued for the old one is not sent to it."""
        what = self.url if self.url is not None else json.dumps(list(self.exec))
        return hashlib.sha256(what.encode()).hexdigest()[:16]

    @property
    def shown(self) -> str:
        """For logs: the URL without user, password or query, or the command's program."""
        if self.url is None:
            return f"exec:{self.exec[0]}"
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        netloc = host if parts.port is None else f"{host}:{parts.port}"
        query = "***" if parts.query else ""
        return str(redact(urlunsplit((parts.scheme, netloc, parts.path, query, ""))))

    @property
    def backoff(self) -> Backoff:
        return Backoff(self.backoff_initial, self.backoff_max, jitter=0.1)

    def wants(self, folder: str, event: str) -> bool:
        return event in self.events and (not self.folders or folder in self.folders)


def signing_key(secret: str) -> bytes:
    """Standard Webhooks: `whsec_<base64>` is the key base64-encoded; any other text is the
    key as its UTF-8 bytes. Raises ValueError for a whsec_ secret that is not base64."""
    if secret.startswith("whsec_"):
        try:
            key = base64.b64decode(secret[len("whsec_"):], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("a whsec_ secret must be base64 after the prefix") from exc
        if not key:
            raise ValueError("the whsec_ secret is empty after the prefix")
        return key
    return secret.encode("utf-8")


def parse_webhooks(value: Any, folder_names: tuple[str, ...],
                   p: Problems) -> tuple[WebhookConfig, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        p.add("webhooks", "expected a list of webhooks (each with url and secret, or exec)")
        return ()
    hooks: list[WebhookConfig] = []
    for i, item in enumerate(value):
        where = f"webhooks[{i}]"
        is_exec = isinstance(item, Mapping) and "exec" in item
        entry = p.mapping(item, where, EXEC_KEYS if is_exec else URL_KEYS)
        if not isinstance(item, Mapping):
            continue
        hook = _exec(entry, where, p) if is_exec else _url(entry, where, p)
        if hook is None:
            continue
        events = _names(entry, "events", where, p, EVENTS) or EVENTS
        folders = _names(entry, "folders", where, p, folder_names)
        default_timeout = 60.0 if is_exec else 10.0
        hook = WebhookConfig(
            url=hook.url, exec=hook.exec, key=hook.key, events=events, folders=folders,
            timeout=p.number(entry, "timeout", where, default_timeout, minimum=0.1),
            backoff_initial=p.number(entry, "backoff_initial", where, 5.0, minimum=0.01),
            backoff_max=p.number(entry, "backoff_max", where, 600.0, minimum=0.01),
            give_up_hours=p.number(entry, "give_up_hours", where, 24.0, minimum=0.0001),
            max_pending=p.number(entry, "max_pending", where, 10_000, minimum=1, integer=True))
        if any(h.ident == hook.ident for h in hooks):
            p.add(where, "the same url or exec as an earlier webhook")
            continue
        hooks.append(hook)
    return tuple(hooks)


def _url(entry: Mapping[str, Any], where: str, p: Problems) -> WebhookConfig | None:
    url = entry.get("url")
    parts = urlsplit(url) if isinstance(url, str) else None
    if url is None:
        p.add(join(where, "url"), "expected url (an http:// or https:// URL) or exec "
                                  "(a command)")
        return None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        p.add(join(where, "url"), f"expected an http:// or https:// URL, got {url!r}")
        return None
    if parts.password:  # user:password@ in the URL: kept out of logs like any secret
        register(parts.password)
    if "secret" not in entry:
        p.add(join(where, "secret"), "expected a secret to sign with: {env: NAME}, "
                                     "{file: PATH} or {credential: NAME}")
        return None
    try:
        key = signing_key(read_secret(entry["secret"]))
    except (SecretError, ValueError) as exc:
        p.add(join(where, "secret"), str(exc))
        return None
    return WebhookConfig(url=url, key=key)


def _exec(entry: Mapping[str, Any], where: str, p: Problems) -> WebhookConfig | None:
    argv = entry.get("exec")
    if not isinstance(argv, list) or not argv \
            or not all(isinstance(a, str) and a for a in argv):
        p.add(join(where, "exec"), "expected a command as a list of arguments, such as "
                                   "[/usr/local/bin/notify, --quiet] (no shell)")
        return None
    return WebhookConfig(exec=tuple(argv))


def _names(entry: Mapping[str, Any], key: str, where: str, p: Problems,
           known: tuple[str, ...]) -> tuple[str, ...]:
    value = entry.get(key)
    if value is None:
        return ()
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        p.add(join(where, key), f"expected a non-empty list of names, got {value!r}")
        return ()
    unknown = [v for v in value if v not in known]
    if unknown:
        p.add(join(where, key), f"unknown {key} {', '.join(unknown)} "
                                f"(known: {', '.join(known)})")
        return ()
    return tuple(value)
