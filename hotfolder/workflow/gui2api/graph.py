"""The GUI format read into plain typed objects: nodes, slots, links, subgraph definitions.

Everything a hand-edited or truncated save can get wrong is a `JobError` here, so the
conversion itself works on a well-formed graph. Node and link ids are kept as strings (the
frontend writes `String(node.id)` into the prompt); links come in two shapes, the array
`[id, origin, origin_slot, target, target_slot, type]` of the top level and the object form
of subgraphs and newer saves.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hotfolder.errors import JobError, Kind

SUBGRAPH_INPUT = "-10"  # the id of a subgraph's input node in its links
SUBGRAPH_OUTPUT = "-20"

MODE_MUTED = 2  # LGraphEventMode.NEVER
MODE_BYPASS = 4


@dataclass(frozen=True)
class InputSlot:
    name: str
    type: str
    link: str | None
    widget: str | None  # the widget this input socket stands for, if any


@dataclass(frozen=True)
class OutputSlot:
    name: str
    type: str
    links: tuple[str, ...]


@dataclass(frozen=True)
class Node:
    id: str
    type: str
    mode: int
    title: str | None
    inputs: tuple[InputSlot, ...]
    outputs: tuple[OutputSlot, ...]
    widgets_values: Any  # a list (the usual), a mapping (some custom nodes) or None
    properties: Mapping[str, Any]


@dataclass(frozen=True)
class Link:
    id: str
    origin_id: str
    origin_slot: int
    target_id: str
    target_slot: int
    type: str


@dataclass(frozen=True)
class GraphIO:
    """One input or output slot of a subgraph definition."""

    name: str
    type: str


@dataclass
class Graph:
    """The top-level graph or one subgraph definition."""

    id: str
    name: str
    nodes: dict[str, Node]
    links: dict[str, Link]
    inputs: tuple[GraphIO, ...] = ()
    outputs: tuple[GraphIO, ...] = ()
    order: list[str] = field(default_factory=list)  # node ids, as the save orders them


@dataclass
class Workflow:
    root: Graph
    subgraphs: dict[str, Graph]


def read_workflow(data: Mapping[str, Any]) -> Workflow:
    root = _graph(data, "workflow", "")
    subgraphs: dict[str, Graph] = {}
    definitions = data.get("definitions")
    raw = definitions.get("subgraphs") if isinstance(definitions, Mapping) else None
    if raw is not None and not isinstance(raw, list):
        raise _bad("definitions.subgraphs must be a list")
    for i, item in enumerate(raw or []):
        if not isinstance(item, Mapping) or "id" not in item:
            raise _bad(f"definitions.subgraphs[{i}] is not a subgraph definition")
        sid = str(item["id"])
        graph = _graph(item, f"subgraph {item.get('name') or sid}", sid)
        graph.inputs = _io(item.get("inputs"), f"subgraph {sid} inputs")
        graph.outputs = _io(item.get("outputs"), f"subgraph {sid} outputs")
        subgraphs[sid] = graph
    return Workflow(root=root, subgraphs=subgraphs)


def _graph(data: Mapping[str, Any], where: str, gid: str) -> Graph:
    nodes_raw = data.get("nodes")
    if not isinstance(nodes_raw, list):
        raise _bad(f"{where}: 'nodes' must be a list")
    nodes: dict[str, Node] = {}
    for i, raw in enumerate(nodes_raw):
        node = _node(raw, f"{where}, nodes[{i}]")
        if node.id in nodes:
            raise _bad(f"{where}: two nodes have the id {node.id}")
        nodes[node.id] = node
    links: dict[str, Link] = {}
    links_raw = data.get("links") or []
    if not isinstance(links_raw, list):
        raise _bad(f"{where}: 'links' must be a list")
    for i, raw in enumerate(links_raw):
        link = _link(raw, f"{where}, links[{i}]")
        links[link.id] = link
    return Graph(id=gid, name=str(data.get("name") or where), nodes=nodes, links=links,
                 order=_order(nodes_raw))


def _order(nodes_raw: list[Any]) -> list[str]:
    """Node ids by the save's own execution order ("order"), then by position in the file."""
    def key(item: tuple[int, Any]) -> tuple[float, int]:
        order = item[1].get("order")
        ok = isinstance(order, (int, float)) and not isinstance(order, bool)
        return (float(order) if ok else float("inf"), item[0])

    return [str(raw["id"]) for _, raw in sorted(enumerate(nodes_raw), key=key)]


def _node(raw: Any, where: str) -> Node:
    if not isinstance(raw, Mapping):
        raise _bad(f"{where} is not a node object")
    node_id, kind = raw.get("id"), raw.get("type")
    if not isinstance(node_id, (int, str)) or isinstance(node_id, bool):
        raise _bad(f"{where} has no id")
    if not isinstance(kind, str) or not kind:
        raise _bad(f"{where} (id {node_id}) has no type")
    mode = raw.get("mode", 0)
    title = raw.get("title")
    properties = raw.get("properties")
    return Node(
        id=str(node_id), type=kind,
        mode=mode if isinstance(mode, int) and not isinstance(mode, bool) else 0,
        title=title if isinstance(title, str) else None,
        inputs=tuple(_input(s, f"{where} (id {node_id}) inputs[{j}]")
                     for j, s in enumerate(_list(raw.get("inputs"), where, "inputs"))),
        outputs=tuple(_output(s, f"{where} (id {node_id}) outputs[{j}]")
                      for j, s in enumerate(_list(raw.get("outputs"), where, "outputs"))),
        widgets_values=raw.get("widgets_values"),
        properties=properties if isinstance(properties, Mapping) else {},
    )


def _list(value: Any, where: str, key: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _bad(f"{where}: '{key}' must be a list")
    return value


def _input(raw: Any, where: str) -> InputSlot:
    if not isinstance(raw, Mapping):
        raise _bad(f"{where} is not an input slot")
    widget = raw.get("widget")
    widget_name = widget.get("name") if isinstance(widget, Mapping) else None
    link = raw.get("link")
    return InputSlot(name=str(raw.get("name", "")), type=_type(raw.get("type")),
                     link=None if link is None else str(link),
                     widget=str(widget_name) if widget_name is not None else None)


def _output(raw: Any, where: str) -> OutputSlot:
    if not isinstance(raw, Mapping):
        raise _bad(f"{where} is not an output slot")
    links = raw.get("links")
    return OutputSlot(name=str(raw.get("name", "")), type=_type(raw.get("type")),
                      links=tuple(str(x) for x in links) if isinstance(links, list) else ())


def _type(value: Any) -> str:
    """Slot types are strings; litegraph writes 0 or -1 for "any" in old saves."""
    return value if isinstance(value, str) else "*"


def _link(raw: Any, where: str) -> Link:
    if isinstance(raw, list) and len(raw) >= 5:
        fields = dict(zip(("id", "origin_id", "origin_slot", "target_id", "target_slot",
                           "type"), raw, strict=False))
    elif isinstance(raw, Mapping):
        fields = dict(raw)
    else:
        raise _bad(f"{where} is not a link")
    try:
        return Link(id=str(fields["id"]), origin_id=str(fields["origin_id"]),
                    origin_slot=int(fields["origin_slot"]), target_id=str(fields["target_id"]),
                    target_slot=int(fields["target_slot"]), type=_type(fields.get("type")))
    except (KeyError, TypeError, ValueError) as exc:
        raise _bad(f"{where} is not a valid link ({exc})") from exc


def _io(raw: Any, where: str) -> tuple[GraphIO, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(s, Mapping) for s in raw):
        raise _bad(f"{where} must be a list of slots")
    return tuple(GraphIO(name=str(s.get("name", "")), type=_type(s.get("type"))) for s in raw)


def _bad(what: str) -> JobError:
    return JobError(f"the GUI workflow is malformed: {what}", kind=Kind.INVALID)


def expanded_size(workflow: Workflow, *, max_nodes: int, max_links: int,
                  max_depth: int) -> tuple[int, int]:
    """(nodes, links) the workflow has once every subgraph instance is expanded, counted
    without expanding it, so ten nested subgraphs of ten instances each are refused before
    a million nodes are built. A `JobError` names the limit that is exceeded."""
    sizes: dict[str, tuple[int, int]] = {}

    def size(graph: Graph, depth: int, active: frozenset[str]) -> tuple[int, int]:
        if depth > max_depth:
            raise JobError(f"the GUI workflow nests subgraphs more than {max_depth} deep "
                           "(limits.max_depth)", kind=Kind.TOO_LARGE)
        if graph.id in sizes:
            return sizes[graph.id]
        nodes, links = len(graph.nodes), len(graph.links)
        for node in graph.nodes.values():
            inner = workflow.subgraphs.get(node.type)
            if inner is None:
                continue
            if inner.id in active:
                raise JobError(f"the GUI workflow is malformed: subgraph '{inner.name}' "
                               "contains itself", kind=Kind.INVALID)
            sub_nodes, sub_links = size(inner, depth + 1, active | {inner.id})
            nodes, links = nodes + sub_nodes, links + sub_links
            if nodes > max_nodes:
                raise JobError(f"the GUI workflow expands to more than {max_nodes} nodes once "
                               "its subgraphs are unfolded (limits.max_nodes)", kind=Kind.TOO_LARGE)
            if links > max_links:
                raise JobError(f"the GUI workflow expands to more than {max_links} links once "
                               "its subgraphs are unfolded (limits.max_links)", kind=Kind.TOO_LARGE)
        sizes[graph.id] = (nodes, links)
        return nodes, links

    return size(workflow.root, 0, frozenset({workflow.root.id}))
