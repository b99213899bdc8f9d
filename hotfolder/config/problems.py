"""Collecting config problems with their key paths, so a user sees all of them at once."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any


class Problems:
    """Collects "key.path: what is wrong" lines so the user sees all of them at once."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, where: str, what: str) -> None:
        self.lines.append(f"{where}: {what}")

    def mapping(self, value: Any, where: str, known: tuple[str, ...]) -> Mapping[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.add(where, f"expected a mapping of keys, got {type(value).__name__}")
            return {}
        for key in value:
            if key not in known:
                near = difflib.get_close_matches(str(key), known, n=1)
                hint = f"did you mean {join(where, near[0])}? " if near else ""
                self.add(join(where, str(key)),
                         f"unknown key ({hint}known: " + ", ".join(known) + ")")
        return value

    def number(self, data: Mapping[str, Any], key: str, where: str, default: float,
               *, minimum: float = 0.0, maximum: float | None = None,
               integer: bool = False) -> Any:
        value = data.get(key, default)
        ok_type = (int,) if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, ok_type):
            kind = "a whole number" if integer else "a number"
            self.add(join(where, key), f"expected {kind}, got {value!r}")
            return default
        if value < minimum:
            self.add(join(where, key), f"must be at least {minimum:g}, got {value}")
            return default
        if maximum is not None and value > maximum:
            self.add(join(where, key), f"must be at most {maximum:g}, got {value}")
            return default
        return value

    def boolean(self, data: Mapping[str, Any], key: str, where: str, default: bool) -> bool:
        value = data.get(key, default)
        if not isinstance(value, bool):
            self.add(join(where, key), f"expected true or false, got {value!r}")
            return default
        return value

    def choice(self, data: Mapping[str, Any], key: str, where: str, default: str,
               choices: tuple[str, ...]) -> str:
        value = data.get(key, default)
        if value not in choices:
            self.add(join(where, key), f"expected one of {', '.join(choices)}, got {value!r}")
            return default
        return str(value)


def join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def patterns(value: Any, where: str, p: Problems) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        p.add(where, "expected a list of file name patterns such as ['*.bak', 'draft-*']")
        return ()
    return tuple(value)
