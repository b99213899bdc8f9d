"""The job fields a spec file or a folder's defaults may set, and how each is checked.

One table serves both the job parser and the config loader, so a field that is valid in a
job file is valid in `defaults:` and is described by the same words when it is not.
"""

from __future__ import annotations

from typing import Any

SEED_MAX = 2**64 - 1  # ComfyUI's seed inputs go up to 0xffffffffffffffff

# field -> (description used in error messages, checker returning an error or None)
_STR = "a string"
_INT = "a whole number"
_NUM = "a number"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_num(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and value == value and value not in (float("inf"), float("-inf")))


def _check_str(value: Any) -> str | None:
    return None if isinstance(value, str) else f"expected {_STR}, got {_describe(value)}"


def _check_seed(value: Any, *, allow_keep: bool = False) -> str | None:
    words = ("random", "keep") if allow_keep else ("random",)
    if isinstance(value, str):
        if value in words:
            return None
        return f"expected a whole number or {' or '.join(repr(w) for w in words)}, got {value!r}"
    if not _is_int(value):
        return f"expected a whole number or 'random', got {_describe(value)}"
    if not 0 <= value <= SEED_MAX:
        return f"must be between 0 and {SEED_MAX}, got {value}"
    return None


def _int_at_least(minimum: int):
    def check(value: Any) -> str | None:
        if not _is_int(value):
            return f"expected {_INT}, got {_describe(value)}"
        if value < minimum:
            return f"must be at least {minimum}, got {value}"
        return None
    return check


def _number_between(low: float, high: float):
    def check(value: Any) -> str | None:
        if not _is_num(value):
            return f"expected {_NUM}, got {_describe(value)}"
        if not low <= value <= high:
            return f"must be between {low:g} and {high:g}, got {value}"
        return None
    return check


FIELD_CHECKS = {
    "prompt": _check_str,
    "negative": _check_str,
    "seed": _check_seed,
    "steps": _int_at_least(1),
    "cfg": _number_between(0.0, 100.0),
    "width": _int_at_least(16),
    "height": _int_at_least(16),
    "batch_size": _int_at_least(1),
    "sampler": _check_str,
    "scheduler": _check_str,
    "denoise": _number_between(0.0, 1.0),
}
JOB_FIELDS = tuple(FIELD_CHECKS)


def check_field(name: str, value: Any, *, in_defaults: bool = False) -> str | None:
    """Return what is wrong with `value` for field `name`, or None when it is fine."""
    if name == "seed":
        return _check_seed(value, allow_keep=in_defaults)
    return FIELD_CHECKS[name](value)


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"{str(value).lower()} (true/false)"
    if isinstance(value, str):
        return f"the text {value!r}"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return repr(value)
