"""Turn ComfyUI's error answers into sentences the person who dropped the file can act on.

ComfyUI reports problems as terse machine records (`value_not_in_list`, a KeyError repr `'99'`,
an error filed under another node's input name). Everything here is pure: it reads a response
body or a WebSocket/history message plus the workflow that was sent, and returns
`(summary, details)`: one paragraph of plain English and a small JSON-safe record.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Mapping
from typing import Any

from hotfolder.workflow.graph import (
    Workflow,
    inputs_of,
    link_shaped,
    node_label,
    node_of,
    node_title,
)
from hotfolder.workflow.nodeinfo import (
    class_inputs,
    class_outputs,
    combo_choices,
    nearest_classes,
    not_a_choice,
    spec_parts,
    type_name,
)

MAX_PROBLEMS_IN_SUMMARY = 8  # the structured list always has all of them
MAX_TEXT = 300  # longest server text quoted in a sentence

_NODE_ID_RE = re.compile(r"Node ID '#([^']*)'")
_MISSING_CLASS_RE = re.compile(r"node (.+?) does not exist")
_LIST_LENGTH_RE = re.compile(r"\(list of length (\d+)\)")


# ---------------------------------------------------------------- POST /prompt rejections


def explain_rejection(body: Mapping[str, Any], workflow: Workflow, *,
                      object_info: Mapping[str, Any] | None = None,
                      ) -> tuple[str, list[dict[str, Any]]]:
    """Explain a 400 from POST /prompt, or a 200 whose `node_errors` dropped some outputs.

    `object_info` is optional: ComfyUI leaves out combo lists longer than 20 (samplers, big
    model folders), so without it such an error can only say how many choices there are.
    """
    body = body if isinstance(body, Mapping) else {}
    error = body.get("error")
    error = error if isinstance(error, Mapping) else {"message": str(error or "")}
    node_errors = body.get("node_errors") if isinstance(body.get("node_errors"), Mapping) else {}
    problems = [
        _explain_node_error(_Ctx(str(node_id), entry, err, workflow, object_info))
        for node_id, entry in node_errors.items()
        for err in (entry.get("errors") if isinstance(entry, Mapping) else None) or [{}]
    ]
    if not problems:
        problem = _explain_top_error(error, workflow, object_info)
        return f"ComfyUI rejected the workflow: {problem['explanation']}", [problem]
    sentences = [p["explanation"] for p in problems[:MAX_PROBLEMS_IN_SUMMARY]]
    if len(problems) > MAX_PROBLEMS_IN_SUMMARY:
        sentences.append(f"({len(problems) - MAX_PROBLEMS_IN_SUMMARY} more problems not shown.)")
    if "error" in body or "prompt_id" not in body:
        head = "ComfyUI rejected the workflow" + (
            ":" if len(problems) == 1 else f" ({len(problems)} problems):")
    else:
        head = (f"ComfyUI queued the workflow but skipped {_dropped(node_errors, workflow)}, "
                f"which failed validation:")
    return " ".join([head, *sentences]), problems


class _Ctx:
    """One per-node error with everything needed to word it; handlers add to `found`."""

    def __init__(self, node_id: str, entry: Any, err: Any, workflow: Workflow,
                 object_info: Mapping[str, Any] | None):
        entry = entry if isinstance(entry, Mapping) else {}
        self.err: Mapping[str, Any] = err if isinstance(err, Mapping) else {}
        extra = self.err.get("extra_info")
        self.extra: Mapping[str, Any] = extra if isinstance(extra, Mapping) else {}
        class_type = entry.get("class_type")
        self.class_type = class_type if isinstance(class_type, str) else None
        self.node_id, self.workflow, self.object_info = node_id, workflow, object_info
        self.label = node_label(workflow, node_id, self.class_type)
        name = self.extra.get("input_name")
        self.input = str(name) if name is not None else None
        self.inputs = inputs_of(node_of(workflow, node_id))
        self.value = self.extra.get("received_value", self.inputs.get(self.input or ""))
        self.where = f"{self.label}, input {self.input}" if self.input else self.label
        self.found: dict[str, Any] = {}


def _explain_node_error(ctx: _Ctx) -> dict[str, Any]:
    """One structured problem: our sentence in `explanation`, ComfyUI's record beside it."""
    kind = str(ctx.err.get("type") or "")
    sentence = _NODE_HANDLERS.get(kind, _generic)(ctx)
    said = _comfy_said(ctx.err)
    return {"node_id": ctx.node_id, "node_title": title_or_none(ctx.workflow, ctx.node_id),
            "class_type": ctx.class_type, "input": ctx.input, "value": ctx.value, "type": kind,
            "message": ctx.err.get("message", ""), "details": ctx.err.get("details", ""),
            **ctx.found, "explanation": f"{sentence} {said}" if said else sentence}


def _limit_sentence(ctx: _Ctx, which: str, words: str) -> str:
    _, options = spec_parts(ctx.extra.get("input_config"))
    found = re.search(rf"{which} of (\S+)", str(ctx.err.get("message", "")))
    limit = options.get(which, found.group(1) if found else "?")
    return f"{ctx.where}: {fmt_value(ctx.value)} is {words} of {limit}."


def _not_in_list(ctx: _Ctx) -> str:
    choices = combo_choices(ctx.extra.get("input_config"))
    if choices is None:  # ComfyUI leaves out lists longer than 20: the server's own, then
        choices = _listed_choices(ctx.object_info, ctx.class_type, ctx.input)
    if choices is None:
        found = _LIST_LENGTH_RE.search(str(ctx.err.get("details", "")))
        count = f" (it has {found.group(1)} entries)" if found else ""
        return (f"{ctx.where}: {fmt_value(ctx.value)} is not one of the server's choices. "
                f"ComfyUI did not send the list of choices{count}.")
    sentence, ctx.found["choices"] = not_a_choice(ctx.where, ctx.value, choices)
    return sentence


def _listed_choices(object_info: Mapping[str, Any] | None, class_type: Any,
                    input_name: Any) -> list[Any] | None:
    sections = class_inputs(object_info, class_type)
    spec = {**sections.get("optional", {}), **sections.get("required", {})}.get(input_name)
    return combo_choices(spec) if spec is not None else None


# ---------------------------------------------------------------- when node definitions help


def node_info_wanted(body: Any) -> list[str] | None:
    """The node classes whose definitions would name the fix for this rejection, or None
    when they would not help: a list input ComfyUI sent no choices for, or a class it does
    not have (then any definitions do: the nearest class names come from all of them)."""
    if not isinstance(body, Mapping):
        return None
    wanted: list[str] | None = None
    for entry, err in _node_errors(body):
        if err.get("type") == "value_not_in_list" and \
                combo_choices(_extra(err).get("input_config")) is None:
            wanted = (wanted or []) + [str(entry.get("class_type"))]
    if wanted is None and _missing_class_name(body) is not None:
        wanted = []
    return wanted


def node_info_disagrees(body: Any, object_info: Mapping[str, Any]) -> bool:
    """True when cached definitions contradict the server's answer (a class or input it lacks,
    a value it has, a class it says is gone): the server changed since they were fetched."""
    if not isinstance(body, Mapping):
        return False
    for entry, err in _node_errors(body):
        extra = _extra(err)
        if err.get("type") == "value_not_in_list" and combo_choices(extra.get("input_config")) \
                is None:
            choices = _listed_choices(object_info, entry.get("class_type"),
                                      extra.get("input_name"))
            if choices is None or extra.get("received_value") in choices:
                return True
    return _missing_class_name(body) in object_info


def _node_errors(body: Mapping[str, Any]) -> list[tuple[Mapping[str, Any], Mapping[str, Any]]]:
    node_errors = body.get("node_errors")
    entries = node_errors.values() if isinstance(node_errors, Mapping) else []
    return [(entry, err) for entry in entries if isinstance(entry, Mapping)
            for err in entry.get("errors") or [] if isinstance(err, Mapping)]


def _extra(err: Mapping[str, Any]) -> Mapping[str, Any]:
    extra = err.get("extra_info")
    return extra if isinstance(extra, Mapping) else {}


def _missing_class_name(body: Mapping[str, Any]) -> str | None:
    error = body.get("error")
    if not isinstance(error, Mapping) or error.get("type") not in ("invalid_prompt",
                                                                   "missing_node_type"):
        return None
    found = _MISSING_CLASS_RE.search(str(error.get("message") or ""))
    named = _extra(error).get("class_type") or (found.group(1) if found else None)
    return named if isinstance(named, str) else None


def _bad_type(ctx: _Ctx) -> str:
    kind, _ = spec_parts(ctx.extra.get("input_config"))
    if not isinstance(kind, str):
        found = re.search(r"to an? (\S+) value", str(ctx.err.get("message", "")))
        kind = found.group(1) if found else "value of the right type"
    return f"{ctx.where}: {fmt_value(ctx.value)} is not a valid {kind}."


def _type_mismatch(ctx: _Ctx) -> str:
    expected, _ = spec_parts(ctx.extra.get("input_config"))
    link = ctx.extra.get("linked_node") or ctx.value
    source = (f"output {link[1]} of {node_label(ctx.workflow, str(link[0]))}"
              if link_shaped(link) else "another node")
    return (f"{ctx.where} expects {type_name(expected)} but is linked to {source}, which gives "
            f"{type_name(ctx.extra.get('received_type', '?'))}.")


def _custom_failed(ctx: _Ctx) -> str:
    reason = str(ctx.err.get("details") or "").strip()
    if ctx.input and reason.startswith(f"{ctx.input} - "):
        reason = reason[len(ctx.input) + 3:]
    value = f"{fmt_value(ctx.value)} " if ctx.value is not None else ""
    sentence = f"{ctx.where}: {value}was refused by the node's own check"
    sentence += f": {clip(reason)}." if reason and reason != ctx.input else "."
    if "invalid image file" in reason.lower():
        sentence += " The file is not in ComfyUI's input folder; upload it first."
    return sentence


def _link_exception(ctx: _Ctx) -> str:
    """A KeyError/IndexError while following links. ComfyUI files it under the node whose link
    is bad but names the *downstream* node's input, so the culprit is looked up here."""
    exc_type = str(ctx.extra.get("exception_type") or "")
    message = str(ctx.err.get("details") or ctx.extra.get("exception_message") or "")
    links = {name: v for name, v in ctx.inputs.items() if link_shaped(v)}
    if exc_type.endswith("KeyError"):
        sentence = _missing_link_target(ctx, links, _key_from_repr(message))
    elif exc_type.endswith("IndexError"):
        sentence = _slot_out_of_range(ctx, links)
    else:
        what = f"{exc_type}: {message}" if exc_type else message
        sentence = f"{ctx.label}: ComfyUI hit an error while checking it ({clip(what)})."
    if ctx.found.get("input") in ctx.inputs:
        ctx.found["value"] = ctx.inputs[ctx.found["input"]]
    via = ctx.extra.get("linked_node")
    if ctx.input and link_shaped(via):
        downstream = next((str(n) for n in ctx.workflow or {}
                           if link_shaped(v := inputs_of(node_of(ctx.workflow, n)).get(ctx.input))
                           and list(v) == list(via)), None)
        whose = node_label(ctx.workflow, downstream) if downstream else "another node"
        sentence = (f"{sentence[:-1]} (ComfyUI noticed this while following input "
                    f"{ctx.input} of {whose}).")
        ctx.found["noticed_via"] = {"node_id": downstream, "input": ctx.input}
    return sentence


def _missing_link_target(ctx: _Ctx, links: Mapping[str, Any], key: Any) -> str:
    culprits = [name for name, v in links.items() if v[0] == key and type(v[0]) is type(key)]
    if culprits:
        ctx.found["input"] = culprits[0]
    names = ", ".join(culprits)
    if isinstance(key, int) and not isinstance(key, bool):
        return (f"{ctx.label}, input {names or '?'} links to node {key} written as a number; "
                f'node ids in links must be strings, e.g. ["{key}", 0].')
    if culprits:
        return f"{ctx.label}, input {names} is linked to node {key}, which is not in the workflow."
    return f"{ctx.label}: one of its inputs is linked to node {key}, which is not in the workflow."


def _slot_out_of_range(ctx: _Ctx, links: Mapping[str, Any]) -> str:
    bad = []
    for name, (src, slot) in links.items():
        outputs = class_outputs(ctx.object_info, node_of(ctx.workflow, str(src)).get("class_type"))
        if outputs is not None and isinstance(slot, int) and not 0 <= slot < len(outputs):
            bad.append((name, src, slot, f", which has only {len(outputs)} outputs."))
    if not bad and links:  # no object_info: the highest index is the likeliest culprit
        name, (src, slot) = max(links.items(), key=lambda kv: kv[1][1]
                                if isinstance(kv[1][1], int) else -1)
        bad = [(name, src, slot, "; that output probably does not exist.")]
    if not bad:
        return f"{ctx.label}: one of its links points at an output its source does not have."
    name, src, slot, why = bad[0]
    ctx.found["input"] = name
    return (f"{ctx.label}, input {name} is linked to output {slot} of "
            f"{node_label(ctx.workflow, str(src))}{why}")


def _generic(ctx: _Ctx) -> str:
    kind = ctx.err.get("type") or "an unnamed error"
    value = f" (value {fmt_value(ctx.value)})" if ctx.input and ctx.value is not None else ""
    return f"{ctx.where}{value}: ComfyUI reported {kind}."


_NODE_HANDLERS: dict[str, Callable[[_Ctx], str]] = {
    "required_input_missing": lambda c: f"{c.label}: required input {c.input} is missing.",
    "value_smaller_than_min": lambda c: _limit_sentence(c, "min", "below the minimum"),
    "value_bigger_than_max": lambda c: _limit_sentence(c, "max", "above the maximum"),
    "value_not_in_list": _not_in_list,
    "invalid_input_type": _bad_type,
    "return_type_mismatch": _type_mismatch,
    "bad_linked_input": lambda c: (f"{c.where}: {fmt_value(c.value)} is not a valid link; a link "
                                   f'is ["<node id>", <output index>].'),
    "custom_validation_failed": _custom_failed,
    "dependency_cycle": lambda c: (f"{c.label} is part of a loop of links "
                                   f"({clip(str(c.err.get('details', '')))})."),
    "exception_during_inner_validation": _link_exception,
    "exception_during_validation": _link_exception,
}


def _explain_top_error(error: Mapping[str, Any], workflow: Workflow,
                       object_info: Mapping[str, Any] | None) -> dict[str, Any]:
    """Errors about the whole request, when `node_errors` has no node to blame."""
    kind, message = str(error.get("type") or ""), str(error.get("message") or "")
    details = str(error.get("details") or "")
    extra = error.get("extra_info") if isinstance(error.get("extra_info"), Mapping) else {}
    found = _NODE_ID_RE.search(details)
    node_id = str(extra.get("node_id") or (found.group(1) if found else "")) or None
    problem: dict[str, Any] = {
        "node_id": node_id, "node_title": title_or_none(workflow, node_id) if node_id else None,
        "class_type": None, "input": None, "value": None, "type": kind, "message": message,
        "details": details}
    if kind in ("invalid_prompt", "missing_node_type") and node_id is not None:
        sentence = _missing_class(problem, message, extra, workflow, object_info)
    elif kind == "prompt_no_outputs":
        sentence = ("the workflow has no nodes." if isinstance(workflow, Mapping) and not workflow
                    else "the workflow has no output node (such as Save Image or Preview Image), "
                         "so there is nothing to run.")
    elif kind == "no_prompt":
        sentence = 'the request contained no workflow (no "prompt").'
        if isinstance(workflow, Mapping) and "nodes" in workflow and "links" in workflow:
            sentence += (" The file is a workflow saved from the ComfyUI editor; save it with "
                         '"Export (API)" instead.')
    elif kind == "prompt_outputs_failed_validation":
        sentence = "every output node failed validation" + (
            f": {clip(details)}." if details else ", and ComfyUI gave no reason.")
    else:
        said = ": ".join(t for t in dict.fromkeys((message, details)) if t)
        sentence = clip(said or "no reason given").rstrip(".") + (f" ({kind})." if kind else ".")
    problem["explanation"] = sentence
    return problem


def _missing_class(problem: dict[str, Any], message: str, extra: Mapping[str, Any],
                   workflow: Workflow, object_info: Mapping[str, Any] | None) -> str:
    node_id = problem["node_id"]
    found = _MISSING_CLASS_RE.search(message)
    class_type = extra.get("class_type") or (found.group(1) if found else None) or \
        node_of(workflow, node_id).get("class_type")
    if not isinstance(class_type, str) or "class_type" in message:
        return (f"{node_label(workflow, node_id)} has no class_type, so ComfyUI cannot tell what "
                f"kind of node it is.")
    problem["class_type"] = class_type
    sentence = (f"{node_label(workflow, node_id, '')} uses class_type '{class_type}', which "
                f"does not exist on this server (a custom node may be missing, or the name is "
                f"misspelled).")
    near = nearest_classes(class_type, object_info, list(inputs_of(node_of(workflow, node_id))))
    if near:
        problem["choices"] = near
        sentence += f" Did you mean {near[0]!r}?"
    return sentence


# ---------------------------------------------------------------- small helpers


def title_or_none(workflow: Workflow, node_id: str) -> str | None:
    return node_title(node_of(workflow, node_id)) or None


def _key_from_repr(text: str) -> Any:
    """`'99'` -> "99" and `4` -> 4: str(KeyError) is the repr of the missing key."""
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        return text.strip()


def _comfy_said(err: Mapping[str, Any]) -> str:
    message = str(err.get("message") or "").strip()
    details = str(err.get("details") or "").strip()
    said = f"{message}: {details}" if message and details else message or details
    return f'(ComfyUI said: "{clip(said)}")' if said else ""


def _dropped(node_errors: Mapping[str, Any], workflow: Workflow) -> str:
    outputs = list(dict.fromkeys(
        str(o) for entry in node_errors.values() if isinstance(entry, Mapping)
        for o in entry.get("dependent_outputs") or []))
    if not outputs:
        return "some outputs"
    noun = "output" if len(outputs) == 1 else "outputs"
    return f"{noun} " + ", ".join(node_label(workflow, o) for o in outputs)


def fmt_value(value: Any) -> str:
    return clip(repr(value), 120)


def clip(text: str, limit: int = MAX_TEXT) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
