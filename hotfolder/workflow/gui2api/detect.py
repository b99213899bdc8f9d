"""What a GUI save needs from a server: the node types it uses (to tell whether cached node
definitions are stale), without the frontend's own virtual nodes. (Telling a GUI save from an
API workflow is `workflow.graph.is_gui_workflow`.)"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Node types that exist only in ComfyUI's web frontend: never sent to the server.
VIRTUAL_TYPES = frozenset({"Reroute", "PrimitiveNode", "Note", "MarkdownNote"})
NOTE_TYPES = frozenset({"Note", "MarkdownNote"})


def subgraph_ids(data: Mapping[str, Any]) -> set[str]:
    definitions = data.get("definitions")
    subgraphs = definitions.get("subgraphs") if isinstance(definitions, Mapping) else None
    if not isinstance(subgraphs, list):
        return set()
    return {str(s["id"]) for s in subgraphs if isinstance(s, Mapping) and "id" in s}


def node_types(data: Mapping[str, Any]) -> set[str]:
    """Every node type the server must define: all types at the top level and inside subgraph
    definitions, minus the frontend's own and the subgraph instances.

    Used to decide whether a cached /object_info is stale before converting.
    """
    local = subgraph_ids(data) | VIRTUAL_TYPES
    graphs: list[Any] = [data]
    definitions = data.get("definitions")
    if isinstance(definitions, Mapping) and isinstance(definitions.get("subgraphs"), list):
        graphs.extend(definitions["subgraphs"])
    types: set[str] = set()
    for graph in graphs:
        nodes = graph.get("nodes") if isinstance(graph, Mapping) else None
        for node in nodes if isinstance(nodes, list) else []:
            kind = node.get("type") if isinstance(node, Mapping) else None
            if isinstance(kind, str) and kind not in local:
                types.add(kind)
    return types
