"""Reading a server's node definitions (`/object_info`) and suggesting valid choices.

Both the rejection explainer and the static template checker need the same reading of input
specs (`[TYPE, {options}]`, old and new combo forms) and the same "did you mean" logic.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

MAX_LISTED = 5  # choices shown when none is close


def closest(name: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """Close matches ignoring case, since `Euler` for `euler` is the commonest slip."""
    by_lower: dict[str, str] = {}
    for choice in choices:
        by_lower.setdefault(str(choice).lower(), str(choice))
    return [by_lower[k] for k in difflib.get_close_matches(str(name).lower(), by_lower, n=n)]


def suggest_choices(value: Any, choices: Iterable[Any]) -> tuple[str, list[str]]:
    """A sentence naming valid choices to try, and those choices.

    Says "Closest" only when difflib finds something close, so nobody is told that an
    unrelated file name is "close" to theirs.
    """
    names = [str(c) for c in choices]
    near = closest(str(value), names)
    if near:
        return f"Closest: {quote_all(near)}.", near
    if not names:
        return "The server offers no choices at all for this input.", []
    if len(names) == 1:
        return f"The server's only choice is {quote_all(names)}.", names
    if len(names) <= MAX_LISTED:
        return f"The server's choices are {quote_all(names)}.", names
    first = names[:MAX_LISTED]
    return (f"None is close; the first {MAX_LISTED} of {len(names)} choices are "
            f"{quote_all(first)}.", first)


def spec_parts(spec: Any) -> tuple[Any, Mapping[str, Any]]:
    """Split an input spec `[TYPE, {options}]` (or a bare TYPE) into TYPE and options.

    An error's `input_config` has the same shape as an /object_info spec, so both modules
    read specs through here.
    """
    if isinstance(spec, (list, tuple)):
        options = spec[1] if len(spec) > 1 and isinstance(spec[1], Mapping) else {}
        return (spec[0] if spec else None), options
    return spec, {}


def combo_choices(spec: Any) -> list[Any] | None:
    """Choices of a combo input: old `[[...], {}]` or newer `["COMBO", {"options": [...]}]`."""
    kind, options = spec_parts(spec)
    if isinstance(kind, (list, tuple)):
        return list(kind)
    if kind == "COMBO":
        listed = options.get("options")
        return list(listed) if isinstance(listed, (list, tuple)) else []
    return None


def type_name(kind: Any) -> str:
    """A combo's type is its whole list of choices; name it instead of printing it."""
    return "a list of choices" if isinstance(kind, (list, tuple)) else str(kind)


def class_inputs(object_info: Mapping[str, Any] | None, class_type: Any) -> dict[str, dict]:
    """`{"required": {...}, "optional": {...}, "hidden": {...}}` of a class, {} if unknown."""
    info = object_info.get(class_type) if isinstance(object_info, Mapping) and \
        isinstance(class_type, str) else None
    sections = info.get("input") if isinstance(info, Mapping) else None
    sections = sections if isinstance(sections, Mapping) else {}
    return {k: dict(v) for k, v in sections.items() if isinstance(v, Mapping)}


def class_outputs(object_info: Mapping[str, Any] | None, class_type: Any) -> list[Any] | None:
    """Output types of a class, or None when the class (or its outputs) is unknown."""
    info = object_info.get(class_type) if isinstance(object_info, Mapping) and \
        isinstance(class_type, str) else None
    outputs = info.get("output") if isinstance(info, Mapping) else None
    return list(outputs) if isinstance(outputs, (list, tuple)) else None


def quote_all(names: Iterable[str], sep: str = ", ") -> str:
    return sep.join(repr(str(n)) for n in names)
