"""Reading an API-format workflow: links, node titles and labels, and what kind of workflow a
document is. One copy of these rules, so the patcher, the checker, the error explanations and
the config loader agree on what a link or a node's name is."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

Workflow = Mapping[str, Any] | None


def is_link(value: Any) -> bool:
    """ComfyUI's own rule: an input wired to another node is `[node_id, output_index]`."""
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
            and isinstance(value[1], int) and not isinstance(value[1], bool))


def link_shaped(value: Any) -> bool:
    """Any two-item list: what a user meant as a link even when it is malformed (`[4, 0]`, a
    number for the node id), which ComfyUI then fails on. Used to explain such failures."""
    return isinstance(value, (list, tuple)) and len(value) == 2


def node_title(node: Mapping[str, Any]) -> str:
    """The title the user gave a node in the editor (`_meta.title`), or ""."""
    meta = node.get("_meta")
    title = meta.get("title") if isinstance(meta, Mapping) else None
    return title if isinstance(title, str) else ""


def node_of(workflow: Workflow, node_id: str) -> Mapping[str, Any]:
    node = workflow.get(node_id) if isinstance(workflow, Mapping) else None
    return node if isinstance(node, Mapping) else {}


def inputs_of(node: Mapping[str, Any]) -> Mapping[str, Any]:
    return node["inputs"] if isinstance(node.get("inputs"), Mapping) else {}


def node_label(workflow: Workflow, node_id: str, class_type: str | None = None) -> str:
    """`node 4 'Load Checkpoint' (CheckpointLoaderSimple)`: the id to find it, the title the
    user gave it in the editor, and the class to look it up (pass "" to leave the class out)."""
    node = node_of(workflow, node_id)
    if class_type is None and isinstance(node.get("class_type"), str):
        class_type = node["class_type"]
    title, label = node_title(node), f"node {node_id}"
    if title and title != class_type:
        label += f" '{title}'"
    return f"{label} ({class_type})" if class_type else label


def is_gui_workflow(data: Any) -> bool:
    """A workflow saved with the editor's "Save": a `nodes` list next to `links` (+
    `definitions.subgraphs`); the API format maps node ids to `class_type` + `inputs`. Both
    are JSON objects, so the shape decides."""
    return isinstance(data, Mapping) and isinstance(data.get("nodes"), list) and "links" in data


def workflow_format(obj: Any) -> Literal["api", "gui"] | None:
    """Tell an API-format workflow from a GUI save, or neither."""
    if isinstance(obj, Mapping):
        if is_gui_workflow(obj):
            return "gui"
        if obj and all(isinstance(n, Mapping) and "class_type" in n for n in obj.values()):
            return "api"
    return None


def takes_images(workflow: Mapping[str, Any], bindings: Mapping[str, Any]) -> bool:
    """True when a template (API or GUI format) has a LoadImage node, or binds `image`."""
    if "image" in bindings:
        return True
    nodes = workflow.get("nodes")
    if isinstance(nodes, list):  # a GUI save
        return any(isinstance(n, Mapping) and n.get("type") == "LoadImage" for n in nodes)
    return any(isinstance(n, Mapping) and n.get("class_type") == "LoadImage"
               for n in workflow.values())
