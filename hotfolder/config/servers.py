"""The `servers:` section: URLs, dispatch settings, TLS, and auth headers built from secrets."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from hotfolder.config.problems import Problems, join, patterns
from hotfolder.credentials import SecretError, read_secret, register


@dataclass(frozen=True)
class ServerConfig:
    url: str
    name: str
    weight: float = 1.0  # relative speed: a server twice as fast takes twice the share
    tags: tuple[str, ...] = ()
    max_in_flight: int | None = None  # overrides comfy.max_in_flight for this server
    # Authorization and extra headers, secrets resolved; never printed (repr=False)
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    verify: bool | str = True  # TLS certificate check: on, off, or a CA bundle path


def parse_servers(value: Any, base: Path, p: Problems) -> tuple[ServerConfig, ...]:
    if value is None:
        value = ["http://127.0.0.1:8188"]
    if not isinstance(value, list) or not value:
        p.add("servers", "expected a non-empty list of ComfyUI URLs")
        return ()
    servers: list[ServerConfig] = []
    for i, item in enumerate(value):
        where = f"servers[{i}]"
        if isinstance(item, str):
            item = {"url": item}
        entry = p.mapping(item, where, ("url", "name", "weight", "tags", "max_in_flight",
                                        "token", "basic_auth", "headers", "verify",
                                        "ca_bundle"))
        url = entry.get("url")
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
            p.add(join(where, "url"), f"expected an http:// or https:// URL, got {url!r}")
            continue
        name = entry.get("name", parts.netloc)
        if not isinstance(name, str) or not name:
            p.add(join(where, "name"), f"expected a non-empty string, got {name!r}")
            continue
        if any(s.name == name for s in servers):
            p.add(join(where, "name"), f"duplicate server name {name!r}")
        servers.append(ServerConfig(
            url=url.rstrip("/"), name=name,
            weight=p.number(entry, "weight", where, 1.0, minimum=0.01),
            tags=patterns(entry.get("tags"), join(where, "tags"), p),
            max_in_flight=(p.number(entry, "max_in_flight", where, 2, minimum=1, integer=True)
                           if "max_in_flight" in entry else None),
            headers=_auth(entry, where, p), verify=_verify(entry, where, base, p)))
    return tuple(servers)


def _auth(entry: Mapping[str, Any], where: str, p: Problems) -> dict[str, str]:
    """Headers for a secured server: Bearer token, basic auth and extra headers, whose values
    come from env vars, files or systemd credentials (or plain text, for non-secrets)."""
    headers: dict[str, str] = {}

    def secret(value: Any, key: str) -> str | None:
        try:
            return read_secret(value)
        except SecretError as exc:
            p.add(join(where, key), str(exc))
            return None

    if entry.get("token") is not None:
        token = secret(entry["token"], "token")
        if token:
            headers["Authorization"] = f"Bearer {token}"
    basic = entry.get("basic_auth")
    if basic is not None:
        data = p.mapping(basic, join(where, "basic_auth"), ("user", "password"))
        user = data.get("user")
        password = secret(data.get("password"), "basic_auth.password")
        if not isinstance(user, str) or not user or ":" in user:
            p.add(join(where, "basic_auth.user"), f"expected a user name, got {user!r}")
        elif password:
            pair = base64.b64encode(f"{user}:{password}".encode()).decode()
            register(pair)
            headers["Authorization"] = f"Basic {pair}"
    extra = p.mapping(entry.get("headers"), join(where, "headers"),
                      tuple(entry.get("headers") or ()))
    for name, value in extra.items():
        text = value if isinstance(value, str) else secret(value, f"headers.{name}")
        if text is not None:
            headers[str(name)] = text
    return headers


def _verify(entry: Mapping[str, Any], where: str, base: Path,
            p: Problems) -> bool | str:
    verify = entry.get("verify", True)
    if not isinstance(verify, bool):
        p.add(join(where, "verify"), f"expected true or false, got {verify!r}")
        return True
    bundle = entry.get("ca_bundle")
    if bundle is not None:
        path = (base / str(bundle)).resolve()
        if not path.is_file():
            p.add(join(where, "ca_bundle"), f"file not found: {path}")
            return True
        if not verify:
            p.add(join(where, "ca_bundle"), "ca_bundle and verify: false contradict")
        return str(path)
    return verify
