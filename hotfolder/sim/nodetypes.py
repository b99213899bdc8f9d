"""The first check of a prompt: does every node have a class_type the server knows?

Both server versions stop at the first node that fails it, with a 400 and empty node_errors,
but say it differently. 0.3.64 (recorded): `invalid_prompt`, "Cannot execute because node X
does not exist." Newer servers (derived from ComfyUI's source): `missing_node_type`, naming
the node by its `_meta.title` and putting node id, class_type and title in `extra_info`.
"""

from __future__ import annotations

from typing import Any

from hotfolder.sim.catalog import Catalog


def _error(kind: str, message: str, node_id: Any, extra: dict[str, Any]) -> dict[str, Any]:
    return {"type": kind, "message": message, "details": f"Node ID '#{node_id}'",
            "extra_info": extra}


def node_type_error(
    node_id: Any, node: Any, catalog: Catalog, missing_node_type: bool
) -> dict[str, Any] | None:
    """The top-level error for this node, or None when its class_type is known.

    Uses the same Python operations as the server, so a malformed node (`_meta` not an
    object, an unhashable class_type) raises, which the caller turns into the plain 500.
    """
    if "class_type" not in node:
        if not missing_node_type:
            return _error("invalid_prompt",
                          "Cannot execute because a node is missing the class_type property.",
                          node_id, {})
        title = node.get("_meta", {}).get("title")
        return _error(
            "missing_node_type",
            f"Node '{title or f'ID #{node_id}'}' has no class_type. "
            "The workflow may be corrupted or a custom node is missing.",
            node_id, {"node_id": node_id, "class_type": None, "node_title": title},
        )
    class_type = node["class_type"]
    if isinstance(class_type, (list, dict)):
        raise TypeError(f"unhashable type: '{type(class_type).__name__}'")
    if class_type in catalog:
        return None
    if not missing_node_type:
        return _error("invalid_prompt", f"Cannot execute because node {class_type} does not exist.",
                      node_id, {})
    title = node.get("_meta", {}).get("title", class_type)
    return _error(
        "missing_node_type",
        f"Node '{title}' not found. The custom node may not be installed.",
        node_id, {"node_id": node_id, "class_type": class_type, "node_title": title},
    )
