"""GUI-format workflow -> API-format prompt, as ComfyUI's frontend builds it when you press Run.

`build` reproduces the frontend's `graphToPrompt`: primitives write their values into their
targets, every node that runs gets its widget values (by definition order) and its links
(traced through reroutes, bypassed nodes and subgraphs), notes and other editor-only nodes,
muted (mode 2) and bypassed (mode 4) nodes are left out, and inputs linked to a node that is
not in the prompt are removed. `convert` then refuses what the frontend would let through but
the server cannot run: a required input with no source on a node an output depends on.
Anything that makes conversion impossible is a `JobError` naming the node: its id, title and
type, and what is missing.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hotfolder.errors import JobError, Kind
from hotfolder.workflow.graph import is_link
from hotfolder.workflow.gui2api.flatten import Exec, Flat, LinkTo, Value, node_label
from hotfolder.workflow.gui2api.graph import MODE_BYPASS, MODE_MUTED, read_workflow
from hotfolder.workflow.gui2api.widgets import (
    js_numbers,
    node_widgets,
    serialize_value,
    widget_values,
)
from hotfolder.workflow.nodeinfo import class_inputs, nearest_classes

MAX_LISTED = 8  # problems spelled out in one message; `details` has all of them
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)


@dataclass
class Conversion:
    """The prompt the frontend would send, and what would stop the server from running it."""

    prompt: dict[str, Any]
    problems: list[str] = field(default_factory=list)


def convert(gui: Mapping[str, Any], object_info: Mapping[str, Any], *,
            rng: random.Random | None = None) -> dict[str, Any]:
    """The API-format prompt for a GUI-format workflow, or a `JobError` saying why not.

    `object_info` is the target server's node definitions; `rng` picks the options of dynamic
    prompts (`{a|b}`), a fresh random choice per conversion when not given, as in the editor.
    """
    result = build(gui, object_info, rng=rng)
    if result.problems:
        raise _error("it cannot run on this server", result.problems)
    return result.prompt


def build(gui: Mapping[str, Any], object_info: Mapping[str, Any], *,
          rng: random.Random | None = None) -> Conversion:
    """The prompt exactly as the frontend builds it, with the problems found in it.

    Raises `JobError` when there is no prompt to build: a malformed file, a node type the
    server does not have, a widget only the browser can fill in.
    """
    _refuse_group_nodes(gui)
    flat = Flat(read_workflow(gui), object_info)
    runs = [ex for ex in flat.execs.values() if _runs(ex, object_info)]
    _check_known(runs, object_info)
    rng = rng or random.Random()  # picks dynamic-prompt options, as the editor does
    prompt: dict[str, Any] = {}
    why: dict[tuple[str, str], str] = {}  # (node id, input) -> why it has no value
    for ex in runs:
        inputs = _widget_inputs(ex, object_info, flat.written, rng)
        for slot, item in enumerate(ex.inputs):
            if item.link is None:
                continue
            found = flat.resolve_input(ex, slot)
            if isinstance(found, LinkTo):
                inputs[item.name] = [found.node_id, found.slot]
            elif isinstance(found, Value):
                value = js_numbers(found.value)
                inputs[item.name] = {"__value__": value} if isinstance(value, list) else value
            else:
                why[(ex.id, item.name)] = found.why
        title = ex.node.title
        if title is None:
            info = object_info.get(ex.node.type)
            title = str(info.get("display_name") or ex.node.type) \
                if isinstance(info, Mapping) else ex.node.type
        prompt[ex.id] = {"inputs": inputs, "class_type": ex.node.type, "_meta": {"title": title}}
    for node_id, node in prompt.items():  # links to nodes left out are dropped
        for name, value in list(node["inputs"].items()):
            if is_link(value) and value[0] not in prompt:
                del node["inputs"][name]
                why[(node_id, name)] = f"it is fed by {_left_out(flat.execs.get(value[0]))}"
    return Conversion(prompt, _missing_required(prompt, flat, object_info, why))


def _runs(ex: Exec, object_info: Mapping[str, Any]) -> bool:
    """Whether the node goes into the prompt."""
    if ex.is_virtual or ex.node.mode in (MODE_MUTED, MODE_BYPASS) or ex.in_muted:
        return False
    # Inside a bypassed subgraph the frontend still sends every node (only links through the
    # instance are bypassed); an output node there would then run, so it is left out.
    return not (ex.in_bypassed and _is_output(object_info, ex.node.type))


def _refuse_group_nodes(gui: Mapping[str, Any]) -> None:
    extra = gui.get("extra")
    groups = extra.get("groupNodes") if isinstance(extra, Mapping) else None
    if groups:
        raise JobError("this workflow uses group nodes (the editor's older way of grouping, "
                       f"{', '.join(sorted(map(str, groups)))}), which hotfolder does not "
                       "convert; in ComfyUI convert them to subgraphs, or export with "
                       "\"Save (API Format)\"", kind=Kind.CONVERSION)


def _check_known(runs: list[Exec], object_info: Mapping[str, Any]) -> None:
    problems: list[str] = []
    for ex in runs:
        kind = ex.node.type
        if not isinstance(object_info.get(kind), Mapping):
            if _UUID.fullmatch(kind):
                problems.append(f"{ex.label()} is a subgraph whose definition is missing from "
                                "the file (definitions.subgraphs)")
                continue
            near = nearest_classes(kind, object_info)
            hint = f" (closest: {', '.join(near)})" if near else " (is a custom node missing?)"
            problems.append(f"{ex.label()} is a node type this server does not have{hint}")
            continue
        for name in node_widgets(object_info, kind).browser_only:
            problems.append(f"{ex.label()}: its input '{name}' is filled in by the editor in "
                            "the browser at run time, so it cannot be converted here")
    if problems:
        raise _error(None, problems)


def _widget_inputs(ex: Exec, object_info: Mapping[str, Any],
                   overrides: Mapping[tuple[str, str], Any], rng: random.Random) -> dict[str, Any]:
    widgets = node_widgets(object_info, ex.node.type).widgets
    values = widget_values(widgets, ex.node.widgets_values)
    inputs: dict[str, Any] = {}
    for widget in widgets:
        if widget.serialize:
            value = overrides.get((ex.id, widget.name), values[widget.name])
            inputs[widget.name] = serialize_value(widget, value, rng)
    return inputs


def _left_out(ex: Exec | None) -> str:
    if ex is None:
        return "a node that is not in the workflow"
    if ex.node.mode == MODE_MUTED or ex.in_muted:
        return f"{ex.label()}, which is muted"
    if ex.in_bypassed:
        return f"{ex.label()}, which is inside a bypassed subgraph"
    return f"{ex.label()}, which is not sent to the server"


def _missing_required(prompt: Mapping[str, Any], flat: Flat, object_info: Mapping[str, Any],
                      why: Mapping[tuple[str, str], str]) -> list[str]:
    """Required inputs without a value on the output nodes and everything they depend on,
    which is what the server validates."""
    needed = [nid for nid, node in prompt.items() if _is_output(object_info, node["class_type"])]
    seen: set[str] = set()
    problems: list[str] = []
    while needed:
        node_id = needed.pop()
        if node_id in seen:
            continue
        seen.add(node_id)
        inputs = prompt[node_id]["inputs"]
        needed.extend(v[0] for v in inputs.values() if is_link(v))
        for name in class_inputs(object_info, prompt[node_id]["class_type"]).get("required", {}):
            if name not in inputs:
                reason = why.get((node_id, name), "it is not connected")
                problems.append(f"{node_label(flat.execs[node_id])}: required input '{name}' "
                                f"has no source: {reason}")
    return sorted(problems)


def _is_output(object_info: Mapping[str, Any], class_type: str) -> bool:
    info = object_info.get(class_type)
    return isinstance(info, Mapping) and bool(info.get("output_node") or info.get("OUTPUT_NODE"))


def _error(head: str | None, problems: list[str]) -> JobError:
    """One prefix: "cannot convert the GUI workflow" already says the rest of a head."""
    shown = problems[:MAX_LISTED]
    more = len(problems) - len(shown)
    text = "; ".join(shown) + (f"; and {more} more" if more > 0 else "")
    said = f"{head}: {text}" if head else text
    return JobError(f"cannot convert the GUI workflow: {said}", kind=Kind.CONVERSION,
                    details={"problems": problems})

