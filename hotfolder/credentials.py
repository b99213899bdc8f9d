"""Secrets for secured servers: read from env vars, files or systemd credentials, never printed.

A secret never has to be written in the YAML itself. Every secret read is registered here, and
the log pipeline, error files and command output pass their text through `redact`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

MASK = "***"
_known: set[str] = set()
_lock = threading.Lock()


class SecretError(ValueError):
    """A secret could not be read; the message says from where (never the value)."""


def read_secret(spec: Any) -> str:
    """`{env: NAME}`, `{file: PATH}` or `{credential: NAME}` (from $CREDENTIALS_DIRECTORY)."""
    if not isinstance(spec, Mapping) or len(spec) != 1:
        raise SecretError("expected one of {env: NAME}, {file: PATH} or {credential: NAME} "
                          "(secrets are never written in the config itself)")
    (kind, name), = spec.items()
    if not isinstance(name, str) or not name:
        raise SecretError(f"{kind}: expected a name, got {name!r}")
    if kind == "env":
        value = os.environ.get(name)
        if value is None:
            raise SecretError(f"the environment variable {name} is not set")
    elif kind in ("file", "credential"):
        if kind == "credential":
            directory = os.environ.get("CREDENTIALS_DIRECTORY")
            if not directory:
                raise SecretError("$CREDENTIALS_DIRECTORY is not set: run under systemd with "
                                  "LoadCredential=, or use {file: PATH} or {env: NAME}")
            if "/" in name:
                raise SecretError(f"credential: {name!r} is a name, not a path")
            path = Path(directory) / name
        else:
            path = Path(name)
        try:
            value = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise SecretError(f"cannot read {path}: {exc.strerror or exc}") from exc
    else:
        raise SecretError(f"unknown secret source {kind!r} (env, file or credential)")
    value = value.strip()
    if not value:
        raise SecretError(f"the secret from {kind} {name} is empty")
    register(value)
    return value


def register(value: str) -> None:
    if len(value) >= 4:  # shorter ones would mask ordinary words
        with _lock:
            _known.add(value)


def redact(value: Any) -> Any:
    """The same value with every known secret replaced by ***, in strings, lists and dicts."""
    if isinstance(value, str):
        with _lock:
            secrets = sorted(_known, key=len, reverse=True)
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, MASK)
        return value
    if isinstance(value, Mapping):
        return {k: redact(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    return value
