"""Static checks of an API-format workflow against a server's /object_info.

The point is to catch before submitting what ComfyUI would reject (and a few things it would
silently get wrong), worded like the rejection messages in `explain`, so a bad workflow is
reported once, clearly, instead of failing job after job. The rules follow ComfyUI's own
`validate_inputs`: INT/FLOAT literals go through int()/float() (so "7.5" is a fine FLOAT),
links are `["<node id>", <output index>]`, and "*" matches any type.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hotfolder.workflow.graph import node_label
from hotfolder.workflow.nodeinfo import (
    class_inputs,
    class_outputs,
    closest,
    combo_choices,
    nearest_classes,
    not_a_choice,
    spec_parts,
    type_name,
)

__all__ = ["check_workflow", "closest"]

# Combo options that mean "the server checks the value itself" (LoadImage's VALIDATE_INPUTS
# accepts "subfolder/name" files that never appear in the list) or "the list lives elsewhere".
_SELF_CHECKED_COMBO_KEYS = ("image_upload", "video_upload", "audio_upload", "remote",
                            "remote_combo")
_WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO", "*")


def check_workflow(workflow: Mapping[str, Any], object_info: Mapping[str, Any], *,
                   name: str = "workflow", unknown_inputs: bool = True) -> list[str]:
    """Every problem found, each a sentence starting with `name` and the node label.

    `unknown_inputs=False` drops the complaint about inputs a class does not have; ComfyUI
    ignores those, but they are usually typos whose intended value is silently lost.
    """
    shape = _shape_problem(workflow)
    if shape:
        return [f"{name}: {shape}"]
    problems: list[str] = []
    for node_id, node in workflow.items():
        for problem in _check_node(workflow, object_info, str(node_id), node, unknown_inputs):
            problems.append(f"{name}: {problem}")
    classes = [n.get("class_type") for n in workflow.values() if isinstance(n, Mapping)]
    known = all(isinstance(c, str) and c in object_info for c in classes)
    if known and not any(_is_output(object_info[c]) for c in classes):
        problems.append(f"{name}: has no output node (such as SaveImage or PreviewImage), so "
                        f"ComfyUI would refuse to run it.")
    return problems


def _shape_problem(workflow: Any) -> str | None:
    """Whole-file mistakes that make node-by-node checks meaningless."""
    if not isinstance(workflow, Mapping):
        return "is not a JSON object of nodes (API format: {\"<id>\": {\"class_type\", ...}})."
    if isinstance(workflow.get("nodes"), list) and "links" in workflow:
        return ("is a workflow saved from the ComfyUI editor (it has \"nodes\" and \"links\"); "
                "save it with \"Export (API)\" instead.")
    if not workflow:
        return "has no nodes."
    return None


def _is_output(info: Any) -> bool:
    """Old servers sent OUTPUT_NODE, current ones send output_node."""
    return isinstance(info, Mapping) and (info.get("output_node") is True
                                          or info.get("OUTPUT_NODE") is True)


def _check_node(workflow: Mapping[str, Any], object_info: Mapping[str, Any], node_id: str,
                node: Any, unknown_inputs: bool) -> list[str]:
    if not isinstance(node, Mapping):
        return [f"node {node_id} is not a node (expected an object with class_type and inputs)."]
    class_type = node.get("class_type")
    label = node_label(workflow, node_id)
    if not isinstance(class_type, str) or not class_type:
        return [f"{label} has no class_type, so ComfyUI cannot tell what kind of node it is."]
    if not isinstance(object_info.get(class_type), Mapping):
        given = node.get("inputs")
        near = nearest_classes(class_type, object_info,
                               list(given) if isinstance(given, Mapping) else ())
        hint = f" Did you mean {near[0]!r}?" if near else " Is a custom node missing?"
        return [f"{label}: class_type {class_type!r} does not exist on this server.{hint}"]
    inputs = node.get("inputs", {})
    if not isinstance(inputs, Mapping):
        return [f"{label}: inputs must be an object of input names to values."]
    sections = class_inputs(object_info, class_type)
    required, optional = sections.get("required", {}), sections.get("optional", {})
    problems = [f"{label}: required input {missing} is missing."
                for missing in required if missing not in inputs]
    for input_name, value in inputs.items():
        spec = required.get(input_name, optional.get(input_name))
        where = f"{label}, input {input_name}"
        if spec is not None:
            problems.extend(_check_value(workflow, object_info, where, value, spec))
        elif unknown_inputs and input_name not in sections.get("hidden", {}):
            near = closest(input_name, [*required, *optional])
            hint = f" Did you mean {near[0]}?" if near else ""
            problems.append(f"{where}: {class_type} has no such input, so ComfyUI would ignore "
                            f"it.{hint}")
    return problems


def _check_value(workflow: Mapping[str, Any], object_info: Mapping[str, Any], where: str,
                 value: Any, spec: Any) -> list[str]:
    kind, options = spec_parts(spec)
    if isinstance(value, list):
        return _check_link(workflow, object_info, where, value, kind)
    if isinstance(value, Mapping) and "__value__" in value:  # ComfyUI's wrapper for list values
        value = value["__value__"]
    choices = combo_choices(spec)
    if choices is not None:
        return _check_combo(where, value, choices, options)
    if kind in ("INT", "FLOAT"):
        return _check_number(where, value, kind, options)
    if kind == "BOOLEAN" and isinstance(value, str):
        return [f"{where}: {value!r} is a string; ComfyUI turns any non-empty string into True. "
                f"Write true or false without quotes."]
    if isinstance(kind, str) and kind not in _WIDGET_TYPES and "default" not in options:
        return [f"{where} expects a link from a {kind} output, not the value {value!r}."]
    return []


def _check_combo(where: str, value: Any, choices: list[Any],
                 options: Mapping[str, Any]) -> list[str]:
    if any(options.get(key) for key in _SELF_CHECKED_COMBO_KEYS):
        return []
    values = value if options.get("multiselect") and isinstance(value, list) else [value]
    bad = [v for v in values if v not in choices]
    if not bad:
        return []
    return [not_a_choice(where, bad[0], choices)[0]]


def _check_number(where: str, value: Any, kind: str, options: Mapping[str, Any]) -> list[str]:
    """int()/float() like ComfyUI, so "7.5" passes as FLOAT and "four" fails as INT."""
    try:
        number = int(value) if kind == "INT" else float(value)
    except (TypeError, ValueError, OverflowError):
        return [f"{where}: {value!r} is not a valid {kind}."]
    if kind == "INT" and isinstance(value, float) and value != number:
        return [f"{where}: {value!r} is not a whole number; ComfyUI would cut it to {number}."]
    low, high = options.get("min"), options.get("max")
    if isinstance(low, (int, float)) and number < low:
        return [f"{where}: {value!r} is below the minimum of {low}."]
    if isinstance(high, (int, float)) and number > high:
        return [f"{where}: {value!r} is above the maximum of {high}."]
    return []


def _check_link(workflow: Mapping[str, Any], object_info: Mapping[str, Any], where: str,
                link: list[Any], expected: Any) -> list[str]:
    if len(link) != 2:
        return [f"{where}: {link!r} is not a valid link; a link is [\"<node id>\", "
                f"<output index>]."]
    source, slot = link
    if not isinstance(source, str):
        if str(source) in workflow:
            return [f"{where} links to node {source} written as a number; node ids in links "
                    f"must be strings, e.g. [\"{source}\", {slot!r}]."]
        return [f"{where} is linked to node {source!r}, which is not in the workflow."]
    if source not in workflow:
        return [f"{where} is linked to node {source}, which is not in the workflow."]
    if not isinstance(slot, int) or isinstance(slot, bool):
        return [f"{where}: the output index {slot!r} in its link must be a whole number."]
    src_node = workflow[source]
    outputs = class_outputs(object_info, src_node.get("class_type")
                            if isinstance(src_node, Mapping) else None)
    if outputs is None:  # unknown source class: reported on that node already
        return []
    src_label = node_label(workflow, source)
    if not 0 <= slot < len(outputs):
        have = ", ".join(f"{i} {type_name(t)}" for i, t in enumerate(outputs)) or "none"
        return [f"{where} is linked to output {slot} of {src_label}, which has "
                f"{len(outputs)} outputs ({have})."]
    if not _types_match(outputs[slot], expected):
        return [f"{where} expects {type_name(expected)} but is linked to output {slot} of "
                f"{src_label}, which gives {type_name(outputs[slot])}."]
    return []


def _types_match(received: Any, expected: Any) -> bool:
    """ComfyUI's validate_node_input: "*" matches anything, "A,B" unions match on overlap;
    a combo-typed output feeding a combo input is fine whatever its exact list."""
    if _is_combo(expected) or _is_combo(received):
        return received == "*" or expected == "*" or (_is_combo(expected) and _is_combo(received))
    if not isinstance(received, str) or not isinstance(expected, str):
        return received == expected
    got = {t.strip() for t in received.split(",")}
    want = {t.strip() for t in expected.split(",")}
    return "*" in got or "*" in want or bool(got & want)


def _is_combo(kind: Any) -> bool:
    return isinstance(kind, (list, tuple)) or kind == "COMBO"
