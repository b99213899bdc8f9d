"""The job fields a spec file or a folder's defaults may set, and how each is checked.

One table serves both the job parser and the config loader, so a field that is valid in a
job file is valid in `defaults:` and is described by the same words when it is not.
"""

from __future__ import annotations

import reprlib
from dataclasses import dataclass
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
        words_shown = " or ".join(repr(w) for w in words)
        return f"expected a whole number or {words_shown}, got {shown(value)}"
    if not _is_int(value):
        return f"expected a whole number or 'random', got {_describe(value)}"
    if value < 0:  # -1 means "random" in many other tools: say how it is written here
        return (f"must be between 0 and {SEED_MAX}, got {shown(value)}; for a random seed "
                "write seed: random")
    if value > SEED_MAX:
        return f"must be between 0 and {SEED_MAX}, got {shown(value)}"
    return None


def _int_at_least(minimum: int):
    def check(value: Any) -> str | None:
        if not _is_int(value):
            return f"expected {_INT}, got {_describe(value)}"
        if value < minimum:
            return f"must be at least {minimum}, got {shown(value)}"
        return None
    return check


def _number_between(low: float, high: float):
    def check(value: Any) -> str | None:
        if not _is_num(value):
            return f"expected {_NUM}, got {_describe(value)}"
        if not low <= value <= high:
            return f"must be between {low:g} and {high:g}, got {shown(value)}"
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


@dataclass(frozen=True)
class Limits:
    """Bounds a folder puts on what a dropped file may ask for (untrusted drops)."""

    max_job_bytes: int = 1024 * 1024  # checked before the file is read
    max_prompt_chars: int = 20_000
    max_steps: int = 500
    max_side: int = 8192  # width and height
    max_batch: int = 64
    max_runs: int = 1000  # runs of one batch job (count x prompts x matrix, CSV rows, ...)
    max_image_bytes: int = 100 * 1024 * 1024  # each input image (ComfyUI's own upload limit)
    max_folder_files: int = 100  # files in a job folder
    max_folder_bytes: int = 1024**3  # all files of a job folder together
    max_nodes: int = 2000  # nodes of a workflow, subgraphs of a GUI save unfolded
    max_links: int = 10_000  # links between them
    max_depth: int = 16  # subgraphs inside subgraphs
    max_prompt_bytes: int = 16 * 1024 * 1024  # the API prompt as sent to ComfyUI
    min_priority: int = 0  # the range of a job's own `priority` (added to the folder's)
    max_priority: int = 0


PRIORITY_LIMITS = ("min_priority", "max_priority")  # may be 0 or negative, unlike the rest


def check_priority(value: Any, limits: Limits) -> str | None:
    """What is wrong with a job's own `priority`, naming the limit it breaks."""
    if not _is_int(value):
        return f"expected {_INT}, got {_describe(value)}"
    if value > limits.max_priority:
        return (f"must be at most {limits.max_priority} (this folder's limits.max_priority), "
                f"got {shown(value)}")
    if value < limits.min_priority:
        return (f"must be at least {limits.min_priority} (this folder's limits.min_priority), "
                f"got {shown(value)}")
    return None


_LIMITED = {"steps": "max_steps", "width": "max_side", "height": "max_side",
            "batch_size": "max_batch"}


def check_field(name: str, value: Any, *, in_defaults: bool = False,
                limits: Limits | None = None) -> str | None:
    """Return what is wrong with `value` for field `name`, or None when it is fine."""
    if name == "seed":
        return _check_seed(value, allow_keep=in_defaults)
    problem = FIELD_CHECKS[name](value)
    if problem or limits is None:
        return problem
    if name in _LIMITED and value > getattr(limits, _LIMITED[name]):
        key = _LIMITED[name]
        return (f"must be at most {getattr(limits, key)} (this folder's limits.{key}), "
                f"got {shown(value)}")
    if name in ("prompt", "negative") and len(value) > limits.max_prompt_chars:
        return (f"is {len(value)} characters long; this folder allows at most "
                f"{limits.max_prompt_chars} (limits.max_prompt_chars)")
    return None


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict = 2, 4, 4


def shown(value: Any) -> str:
    """A value from a job file as a message may quote it: a short, cut repr. Never the whole
    of a huge text, structure or number, whose repr alone can cost minutes and gigabytes."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"a number of about {int(value.bit_length() * 0.30103) + 1} digits"
    try:
        return _REPR.repr(value)
    except (ValueError, RecursionError):
        return f"a {type(value).__name__}"


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"{str(value).lower()} (true/false)"
    if isinstance(value, str):
        return f"the text {shown(value)}"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return shown(value)
