"""Reading a server's node definitions (`/object_info`) and suggesting valid choices.

Both the rejection explainer and the static template checker need the same reading of input
specs (`[TYPE, {options}]`, old and new combo forms) and the same "did you mean" logic.
"""

from __future__ import annotations

import difflib
import itertools
import re
from collections.abc import Collection, Iterable, Mapping
from typing import Any

MAX_LISTED = 5  # choices shown when none is close
# Names compared at most: /object_info is a server's answer (untrusted, and a model folder
# can hold thousands of files); difflib costs grow with every name and its length.
MAX_CANDIDATES = 20_000
MAX_NAME = 200
CLASS_CUTOFF = 0.75  # a class name must be this similar to be offered (difflib's ratio)
CONTAINED_BONUS = 0.2  # every word of the name, in order, inside a longer class name
# Words that turn a node into its opposite: VAEDecode is close to VAEEncode in spelling and
# the wrong node to offer for it.
_OPPOSITES = {("encode", "decode"), ("load", "save"), ("loader", "save"),
              ("positive", "negative"), ("upscale", "downscale"), ("to", "from"),
              ("enable", "disable"), ("add", "subtract"), ("min", "max")}
_OPPOSITE = {a: b for pair in _OPPOSITES for a, b in (pair, pair[::-1])}
_WORD_RE = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")


def closest(name: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """Close matches ignoring case, since `Euler` for `euler` is the commonest slip."""
    by_lower: dict[str, str] = {}
    for choice in itertools.islice(choices, MAX_CANDIDATES):
        by_lower.setdefault(str(choice)[:MAX_NAME].lower(), str(choice))
    return [by_lower[k] for k in
            difflib.get_close_matches(str(name)[:MAX_NAME].lower(), by_lower, n=n)]


def words(name: str) -> list[str]:
    """`VAEEncodeForInpaint` -> vae, encode, for, inpaint."""
    return [w.lower() for w in _WORD_RE.findall(name)]


def nearest_classes(name: str, object_info: Mapping[str, Any] | None,
                    inputs: Collection[str] = (), n: int = 3) -> list[str]:
    """Node classes the server has that could be what `name` meant, best first.

    Spelling alone misleads for node classes: `VAEDecode` is one letter from `VAEEncode` and
    does the opposite, and a short form (`CheckpointSimple` for `CheckpointLoaderSimple`)
    loses similarity with every word it leaves out. So a class is offered only when it is
    very similar or holds all of the name's words in order, is not its opposite
    (Encode/Decode, Load/Save, ...), and takes every input the node was given (`inputs`,
    when known).
    """
    if not isinstance(object_info, Mapping):
        return []
    name = str(name)[:MAX_NAME]
    mine = words(name)
    matcher = difflib.SequenceMatcher(None, "", name.lower())  # it caches its second text
    scored: list[tuple[float, str]] = []
    for candidate in itertools.islice(object_info, MAX_CANDIDATES):
        if not isinstance(candidate, str) or len(candidate) > MAX_NAME or candidate == name:
            continue
        matcher.set_seq1(candidate.lower())
        if matcher.quick_ratio() + CONTAINED_BONUS < CLASS_CUTOFF:
            continue  # cannot reach the cut-off even with the bonus: skip the costly ratio
        theirs = words(candidate)
        score = matcher.ratio()
        if len(mine) >= 2 and _in_order(mine, theirs):
            score += CONTAINED_BONUS
        if score < CLASS_CUTOFF or _opposite(mine, theirs):
            continue
        if inputs and not set(inputs) <= _input_names(object_info.get(candidate)):
            continue
        scored.append((score, candidate))
    scored.sort(key=lambda item: (-item[0], item[1]))
    return [candidate for _, candidate in scored[:n]]


def _in_order(part: list[str], whole: list[str]) -> bool:
    rest = iter(whole)
    return all(word in rest for word in part)


def _opposite(mine: list[str], theirs: list[str]) -> bool:
    return any(_OPPOSITE.get(w) in theirs and w not in theirs for w in mine)


def _input_names(info: Any) -> set[str]:
    sections = info.get("input") if isinstance(info, Mapping) else None
    if not isinstance(sections, Mapping):
        return set()
    return {str(k) for section in sections.values() if isinstance(section, Mapping)
            for k in section}


def not_a_choice(where: str, value: Any, choices: Iterable[Any]) -> tuple[str, list[str]]:
    """`WHERE: 'euler_ancestrial' is not one of the server's choices; did you mean
    'euler_ancestral'?` (or the choices there are, when none is close), and the choices named."""
    names = [str(c) for c in itertools.islice(choices, MAX_CANDIDATES)]
    shown = repr(value)
    shown = shown if len(shown) <= MAX_NAME else shown[: MAX_NAME - 1] + "…"
    head = f"{where}: {shown} is not one of the server's choices"
    near = closest(str(value), names)
    if near:
        also = f" Also close: {quote_all(near[1:])}." if len(near) > 1 else ""
        return f"{head}; did you mean {near[0]!r}?{also}", near
    advice, named = suggest_choices(value, names)
    return f"{head}. {advice}", named


def suggest_choices(value: Any, choices: Iterable[Any]) -> tuple[str, list[str]]:
    """A sentence naming valid choices to try, and those choices.

    Asks "did you mean" only when difflib finds something close, so nobody is told that an
    unrelated file name is "close" to theirs.
    """
    names = [str(c) for c in itertools.islice(choices, MAX_CANDIDATES)]
    near = closest(str(value), names)
    if near:
        also = f" Also close: {quote_all(near[1:])}." if len(near) > 1 else ""
        return f"Did you mean {near[0]!r}?{also}", near
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
