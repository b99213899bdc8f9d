"""A node's widgets as ComfyUI's frontend builds them from /object_info, and their values.

A GUI save stores widget values by position only (`widgets_values`), so the names come from
rebuilding the frontend's widget list: one widget per INT/FLOAT/STRING/BOOLEAN/COMBO input in
the definition's input order, plus the frontend's extra widgets that take a position but are
never sent (`control_after_generate` after a seed, the upload button after an image combo)
and the few that extensions add and do send. Values past the end of that list come from newer
node versions and are ignored, as the frontend ignores them.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hotfolder.workflow.nodeinfo import class_inputs, spec_parts

VALUE_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
# Input types whose widget exists only in the browser (webcam capture, the 3D viewer): their
# value is produced by the page at queue time, so no file holds it.
BROWSER_ONLY_TYPES = frozenset({"WEBCAM", "LOAD_3D", "LOAD_3D_ANIMATION", "IMAGECOMPARE"})
# Options that make the frontend add an upload button widget right after the combo.
UPLOAD_OPTIONS = ("image_upload", "video_upload", "audio_upload", "animated_image_upload")
# Widgets that frontend extensions append to core nodes and that end up in the prompt.
EXTENSION_WIDGETS: Mapping[str, tuple[tuple[str, Any], ...]] = {
    "SaveGLB": (("image", ""),),
    "PreviewAny": (("preview", ""),),
}


@dataclass(frozen=True)
class Widget:
    name: str
    default: Any = None
    serialize: bool = True
    dynamic_prompts: bool = False


@dataclass(frozen=True)
class NodeWidgets:
    widgets: tuple[Widget, ...]
    browser_only: tuple[str, ...] = ()  # inputs whose value only the browser can make


def node_widgets(object_info: Mapping[str, Any], class_type: str) -> NodeWidgets:
    sections = class_inputs(object_info, class_type)
    info = object_info.get(class_type)
    order = info.get("input_order") if isinstance(info, Mapping) else None
    widgets: list[Widget] = []
    browser_only: list[str] = []
    for section in ("required", "optional"):
        specs = sections.get(section, {})
        names = order.get(section) if isinstance(order, Mapping) else None
        names = [n for n in names if n in specs] if isinstance(names, list) else list(specs)
        for name in names:
            kind, options = spec_parts(specs[name])
            if isinstance(kind, str) and kind in BROWSER_ONLY_TYPES:
                browser_only.append(name)
                continue
            is_combo = isinstance(kind, (list, tuple)) or kind == "COMBO"
            if not (is_combo or kind in VALUE_TYPES) or options.get("forceInput"):
                continue  # a socket only
            widgets.append(Widget(name, _default(kind, options),
                                  dynamic_prompts=kind == "STRING"
                                  and bool(options.get("dynamicPrompts"))))
            if options.get("control_after_generate"):
                widgets.append(Widget("control_after_generate", "randomize", serialize=False))
            if is_combo and any(options.get(key) for key in UPLOAD_OPTIONS):
                widgets.append(Widget("upload", serialize=False))
    for name, default in EXTENSION_WIDGETS.get(class_type, ()):
        widgets.append(Widget(name, default))
    return NodeWidgets(tuple(widgets), tuple(browser_only))


def _default(kind: Any, options: Mapping[str, Any]) -> Any:
    if "default" in options:
        return options["default"]
    if isinstance(kind, (list, tuple)):
        return kind[0] if kind else None
    if kind == "COMBO":
        listed = options.get("options")
        return listed[0] if isinstance(listed, list) and listed else None
    return {"INT": 0, "FLOAT": 0, "STRING": "", "BOOLEAN": False}.get(str(kind))


def widget_values(widgets: tuple[Widget, ...], stored: Any) -> dict[str, Any]:
    """Each widget's value: from `widgets_values` by position (or by name when a custom node
    saved a mapping), else its default. Extra stored values are ignored."""
    values: dict[str, Any] = {}
    for i, widget in enumerate(widgets):
        if isinstance(stored, list) and i < len(stored):
            value = stored[i]
        elif isinstance(stored, Mapping) and widget.name in stored:
            value = stored[widget.name]
        else:
            value = widget.default
        values.setdefault(widget.name, value)  # two widgets never share a name in practice
    return values


def serialize_value(widget: Widget, value: Any, rng: random.Random) -> Any:
    """The value as the frontend puts it in the prompt."""
    if widget.dynamic_prompts and isinstance(value, str):
        value = dynamic_prompt(value, rng)
    if isinstance(value, list):  # a bare list would read as a link: ComfyUI unwraps this
        return {"__value__": js_numbers(value)}
    return js_numbers(value)


def js_numbers(value: Any) -> Any:
    """Numbers as JavaScript writes them: a whole float is an integer (`1.0` -> `1`)."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer() \
            and abs(value) < 1e21:
        return int(value)
    if isinstance(value, list):
        return [js_numbers(v) for v in value]
    if isinstance(value, Mapping):
        return {k: js_numbers(v) for k, v in value.items()}
    return value


# JavaScript's `.` stops at \r, \u2028 and \u2029 as well as \n
_COMMENTS = re.compile("/\\*[\\s\\S]*?\\*/|//[^\n\r\u2028\u2029]*")
_ESCAPED = re.compile(r"\\([{}|])")


def dynamic_prompt(text: str, rng: random.Random) -> str:
    """The frontend's dynamic prompts: `//` and `/* */` comments removed, and each `{a|b|c}`
    replaced by one of its options picked at random, the chosen option being a dynamic prompt
    itself (nested groups). `\\{`, `\\|` and `\\}` stand for the characters themselves."""
    source = _COMMENTS.sub("", text)
    out: list[str] = []
    pos = 0
    while pos < len(source):
        char = source[pos]
        pos += 1
        if char == "\\":
            out.append("\\" + source[pos:pos + 1])
            pos += 1
        elif char == "{":
            options, pos = _group(source, pos)
            out.append(dynamic_prompt(options[math.floor(rng.random() * len(options))], rng))
        else:
            out.append(char)
    return _ESCAPED.sub(r"\1", "".join(out))


def _group(text: str, pos: int) -> tuple[list[str], int]:
    """The options of the group opened just before `pos` (split at top-level `|`), and the
    position after its closing `}` (or the end of the text if it is never closed)."""
    options: list[str] = []
    current: list[str] = []
    depth = 0
    while pos < len(text):
        char = text[pos]
        pos += 1
        if char == "\\":
            current.append("\\" + text[pos:pos + 1])
            pos += 1
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            if not depth:
                break
            depth -= 1
        elif char == "|" and not depth:
            options.append("".join(current))
            current = []
            continue
        current.append(char)
    options.append("".join(current))
    return options, pos
