"""Find where each job field goes in an API workflow, and write a job's values into a copy of it.

Bindings are found from the graph itself (the sampler's seed, the text encoders linked to its
`positive` and `negative` inputs, the latent node feeding it, every `filename_prefix`, the
LoadImage and LoadImageMask nodes that take a job's images), so a template works without
configuration; a template's `bindings:` override any field.
"""

from __future__ import annotations

import copy
import fnmatch
from collections.abc import Iterable, Mapping
from typing import Any

from hotfolder.errors import JobError, Kind
from hotfolder.workflow.graph import is_link, node_title

Target = tuple[str, str]  # (node id, input name)

# field -> input names that take it on any node that has them as literal values
_DIRECT_INPUTS = {
    "seed": ("seed", "noise_seed"),
    "steps": ("steps",),
    "cfg": ("cfg",),
    "sampler": ("sampler_name",),
    "scheduler": ("scheduler",),
    "denoise": ("denoise",),
    "filename_prefix": ("filename_prefix",),
}
_SIZE_FIELDS = ("width", "height", "batch_size")
_TEXT_INPUTS = ("text", "text_g", "text_l")
_PRIMITIVE_TEXT = ("value", "string", "text")
_IMAGE_LOADERS = {"image": "LoadImage", "mask": "LoadImageMask"}


def resolve_node(workflow: Mapping[str, Any], ref: str) -> str:
    """A node by id, by its `_meta.title`, or by a class_type that occurs exactly once."""
    if ref in workflow:
        return ref
    by_title = [nid for nid, node in workflow.items() if node_title(node) == ref]
    if len(by_title) == 1:
        return by_title[0]
    if len(by_title) > 1:
        raise JobError(f"{len(by_title)} nodes are titled {ref!r} (ids "
                       f"{', '.join(by_title)}): address one by its id", kind=Kind.PATCH)
    by_class = [nid for nid, node in workflow.items() if node.get("class_type") == ref]
    if len(by_class) == 1:
        return by_class[0]
    if len(by_class) > 1:
        raise JobError(f"the workflow has {len(by_class)} {ref} nodes (ids "
                       f"{', '.join(by_class)}): address one by its id or title", kind=Kind.PATCH)
    raise JobError(f"no node with id, title or class {ref!r} in the workflow; nodes are: "
                   + ", ".join(f"{nid} {_label(node)}" for nid, node in workflow.items()),
                   kind=Kind.PATCH)


def resolve_target(workflow: Mapping[str, Any], target: str) -> Target:
    """`NODE.INPUT`, split at the last dot: titles may contain dots, input names never do."""
    ref, _, input_name = target.rpartition(".")
    if not ref or not input_name:
        raise JobError(f"{target!r} is not NODE.INPUT", kind=Kind.PATCH)
    node_id = resolve_node(workflow, ref)
    inputs = workflow[node_id].get("inputs", {})
    if input_name not in inputs:
        raise JobError(f"node {node_id} {_label(workflow[node_id])} has no input "
                       f"{input_name!r}; its inputs are: {', '.join(inputs) or 'none'}",
                       kind=Kind.PATCH)
    return node_id, input_name


def find_bindings(workflow: Mapping[str, Any]) -> dict[str, list[Target]]:
    """Where each field goes in this graph, found from its structure."""
    found: dict[str, list[Target]] = {}
    for nid, node in workflow.items():
        for key, value in node.get("inputs", {}).items():
            if is_link(value):
                continue
            for field, names in _DIRECT_INPUTS.items():
                if key in names:
                    found.setdefault(field, []).append((nid, key))
    for field in _SIZE_FIELDS:
        targets = [(nid, field) for nid in _latent_nodes(workflow)
                   if field in workflow[nid].get("inputs", {})
                   and not is_link(workflow[nid]["inputs"][field])]
        if targets:
            found[field] = targets
    for field, polarity in (("prompt", "positive"), ("negative", "negative")):
        targets = _text_targets(workflow, polarity)
        if targets:
            found[field] = targets
    for field, loader in _IMAGE_LOADERS.items():  # a job's input image, and its mask
        targets = [(nid, "image") for nid, node in workflow.items()
                   if node.get("class_type") == loader
                   and isinstance(node.get("inputs", {}).get("image"), str)]
        if targets:
            found[field] = targets
    return found


def bindings_for(workflow: Mapping[str, Any],
                 overrides: Mapping[str, Iterable[str]]) -> dict[str, list[Target]]:
    found = find_bindings(workflow)
    for field, targets in overrides.items():
        found[field] = [resolve_target(workflow, t) for t in targets]
    return found


def patch_workflow(base: Mapping[str, Any], *, template_name: str,
                   overrides: Mapping[str, Iterable[str]], values: Mapping[str, Any],
                   sets: Mapping[str, Any], optional: Iterable[str] = ()) -> dict[str, Any]:
    """A patched deep copy of `base`; fields in `optional` are skipped if the graph has no place.

    `set:` comes after the fields (it is the more specific), except for `filename_prefix`,
    which is hotfolder's own and is written last so no job can point it anywhere else.
    """
    workflow: dict[str, Any] = copy.deepcopy(dict(base))
    bindings = bindings_for(workflow, overrides)
    optional = set(optional)
    ordered = [(k, v) for k, v in values.items() if k != "filename_prefix"]
    last = [(k, v) for k, v in values.items() if k == "filename_prefix"]
    _apply_values(workflow, bindings, ordered, optional, template_name)
    for target, value in sets.items():
        node_id, input_name = resolve_target(workflow, target)
        current = workflow[node_id]["inputs"][input_name]
        if is_link(current):
            raise JobError(f"set {target}: input {input_name!r} of node {node_id} "
                           f"{_label(workflow[node_id])} is connected to node {current[0]}; "
                           "set the value on that node instead", kind=Kind.PATCH)
        workflow[node_id]["inputs"][input_name] = value
    _apply_values(workflow, bindings, last, optional, template_name)
    return workflow


def _apply_values(workflow: dict[str, Any], bindings: Mapping[str, list[Target]],
                  values: Iterable[tuple[str, Any]], optional: set[str],
                  template_name: str) -> None:
    for field, value in values:
        targets = bindings.get(field)
        if not targets:
            if field in optional:
                continue
            raise JobError(f"the workflow template {template_name!r} has no place for the field "
                           f"{field!r}; remove it from the job, or add a binding for it under "
                           f"workflows.{template_name}.bindings in the config", kind=Kind.PATCH)
        for node_id, input_name in targets:
            workflow[node_id]["inputs"][input_name] = value


def _label(node: Mapping[str, Any]) -> str:
    title, cls = node_title(node), node.get("class_type", "?")
    return f"{title!r} ({cls})" if title and title != cls else f"({cls})"


def _latent_nodes(workflow: Mapping[str, Any]) -> list[str]:
    """Nodes feeding a sampler's `latent_image`, else any Empty*Latent* node."""
    linked = []
    for node in workflow.values():
        value = node.get("inputs", {}).get("latent_image")
        if is_link(value) and value[0] in workflow and value[0] not in linked:
            linked.append(value[0])
    sized = [nid for nid in linked if "width" in workflow[nid].get("inputs", {})]
    if sized:
        return sized
    return [nid for nid, node in workflow.items()
            if str(node.get("class_type", "")).startswith("Empty")
            and "Latent" in str(node.get("class_type", ""))]


def _text_targets(workflow: Mapping[str, Any], polarity: str) -> list[Target]:
    """Text inputs upstream of every `positive` (or `negative`) input, following conditioning."""
    start = [value[0] for node in workflow.values()
             for key, value in node.get("inputs", {}).items()
             if key == polarity and is_link(value)]
    targets: list[Target] = []
    seen: set[str] = set()
    queue = [nid for nid in start if nid in workflow]
    while queue:
        nid = queue.pop(0)
        if nid in seen:
            continue
        seen.add(nid)
        inputs = workflow[nid].get("inputs", {})
        texts = [key for key in _TEXT_INPUTS if key in inputs]
        if texts:
            for key in texts:
                targets.extend(_text_source(workflow, nid, key))
            continue
        if is_link(inputs.get(polarity)):
            nexts = [inputs[polarity][0]]
        else:
            nexts = [v[0] for k, v in inputs.items() if k.startswith("conditioning") and is_link(v)]
        queue.extend(n for n in nexts if n in workflow)
    return list(dict.fromkeys(targets))


def _text_source(workflow: Mapping[str, Any], nid: str, key: str) -> list[Target]:
    """The literal text behind an encoder input: the input itself or a primitive linked to it."""
    value = workflow[nid]["inputs"][key]
    if not is_link(value):
        return [(nid, key)] if isinstance(value, str) else []
    source = workflow.get(value[0], {})
    for name in _PRIMITIVE_TEXT:
        literal = source.get("inputs", {}).get(name)
        if isinstance(literal, str):
            return [(value[0], name)]
    return []


def check_links(workflow: Mapping[str, Any]) -> None:
    """A dropped workflow's links must point at nodes it has (ComfyUI's own error is cryptic)."""
    for nid, node in workflow.items():
        inputs = node.get("inputs", {})
        if not isinstance(inputs, Mapping):
            raise JobError(f"node {nid} {_label(node)}: 'inputs' must be a mapping",
                           kind=Kind.INVALID)
        for key, value in inputs.items():
            if is_link(value) and value[0] not in workflow:
                raise JobError(f"node {nid} {_label(node)}, input {key!r} is linked to node "
                               f"{value[0]}, which is not in the workflow", kind=Kind.INVALID)


def check_sets_allowed(workflow: Mapping[str, Any], sets: Mapping[str, Any],
                       allowed: Iterable[str]) -> None:
    """`set:` only on inputs the folder allows, matched as written or as CLASS.INPUT."""
    patterns = tuple(allowed)
    for target in sets:
        node_id, input_name = resolve_target(workflow, target)
        by_class = f"{workflow[node_id].get('class_type')}.{input_name}"
        if not any(fnmatch.fnmatchcase(name, p) for p in patterns for name in (target, by_class)):
            raise JobError(f"set {target}: this folder does not allow changing {by_class} "
                           f"(allowed: {', '.join(patterns) or 'nothing'})", kind=Kind.REFUSED)


def check_classes_allowed(workflow: Mapping[str, Any], denied: Iterable[str]) -> None:
    patterns = tuple(denied)
    for nid, node in workflow.items():
        cls = str(node.get("class_type", ""))
        if any(fnmatch.fnmatchcase(cls, p) for p in patterns):
            raise JobError(f"node {nid} {_label(node)}: the class {cls} is not allowed in this "
                           "folder (deny_classes)", kind=Kind.REFUSED)
