"""Subgraphs expanded into one flat set of nodes, and each input traced to what really feeds it.

This follows how ComfyUI's frontend builds a prompt (its `ExecutableNodeDTO`): a node inside
a subgraph instance gets the id `"<instance>:<inner>"` (nested: `"a:b:c"`); a link is followed
through `Reroute`s, into subgraph outputs and out of subgraph inputs; a bypassed node (mode 4)
passes on one of its own inputs (same slot if the types fit, else the first input of exactly
the consumer's type, else the first that fits); a frontend-only node with no input of its own
(a `PrimitiveNode`) ends the trace, because its value was written into its targets' widgets.

A node's slots are the ones its definition gives it, in definition order, each taking its link
from the saved slot of the same name, as the frontend does when it loads a save: saved slots
a definition no longer has are dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hotfolder.errors import JobError, Kind
from hotfolder.workflow.gui2api.detect import VIRTUAL_TYPES
from hotfolder.workflow.gui2api.graph import (
    MODE_BYPASS,
    MODE_MUTED,
    SUBGRAPH_INPUT,
    SUBGRAPH_OUTPUT,
    Graph,
    InputSlot,
    Node,
    Workflow,
)
from hotfolder.workflow.nodeinfo import class_inputs, class_outputs, spec_parts

PRIMITIVE_REPLACE = "Run widget replace on values"
_NOTHING = object()


@dataclass(frozen=True)
class LinkTo:
    """The input is fed by output `slot` of the node with prompt id `node_id`."""

    node_id: str
    slot: int


@dataclass(frozen=True)
class Value:
    """The input takes a value from a subgraph instance's own widget."""

    value: Any


@dataclass(frozen=True)
class Unresolved:
    """Nothing feeds the input (the widget's own value stays, if it has one); `why` says so."""

    why: str


Resolved = LinkTo | Value | Unresolved


@dataclass(eq=False)
class Exec:
    """One node of the flattened graph, with the slots the frontend would give it."""

    id: str
    node: Node
    graph: Graph
    path: tuple[str, ...]  # ids of the subgraph instances it sits in, outermost first
    instance: Exec | None
    inputs: list[InputSlot]
    output_types: list[str]
    subgraph: Graph | None = None  # set on subgraph instances
    in_muted: bool = False  # inside a muted subgraph instance
    in_bypassed: bool = False  # inside a bypassed subgraph instance
    instance_values: dict[int, Any] = field(default_factory=dict)  # subgraph slot -> value

    @property
    def is_virtual(self) -> bool:
        return self.subgraph is not None or self.node.type in VIRTUAL_TYPES

    def label(self) -> str:
        return node_label(self)


def node_label(ex: Exec) -> str:
    """`node 12 'Title' (KSampler)`, plus the subgraph it is in, for messages."""
    title = ex.node.title
    text = f"node {ex.id}"
    if title and title != ex.node.type:
        text += f" '{title}'"
    kind = f"subgraph '{ex.subgraph.name}'" if ex.subgraph is not None else ex.node.type
    text += f" ({kind})"
    if ex.instance is not None:
        text += f" inside subgraph '{ex.graph.name}'"
    return text


class Flat:
    """All nodes of a workflow, subgraphs expanded, in the save's execution order."""

    def __init__(self, workflow: Workflow, object_info: Mapping[str, Any]) -> None:
        self.workflow = workflow
        self.object_info = object_info
        self.execs: dict[str, Exec] = {}
        self._expand(workflow.root, (), None, set())
        # what the editor's PrimitiveNodes write into their targets' widgets before a prompt
        # is built: (target node id, widget name) -> value
        self.written = self._primitive_values()

    def _expand(self, graph: Graph, path: tuple[str, ...], instance: Exec | None,
                active: set[str]) -> None:
        for node_id in graph.order:
            node = graph.nodes[node_id]
            subgraph = self.workflow.subgraphs.get(node.type)
            ex = Exec(id=":".join((*path, node.id)), node=node, graph=graph, path=path,
                      instance=instance, inputs=[], output_types=[], subgraph=subgraph,
                      in_muted=bool(instance and (instance.in_muted
                                                  or instance.node.mode == MODE_MUTED)),
                      in_bypassed=bool(instance and (instance.in_bypassed
                                                     or instance.node.mode == MODE_BYPASS)))
            self._slots(ex)
            self.execs[ex.id] = ex
            if subgraph is not None:
                if subgraph.id in active:
                    raise JobError(f"the GUI workflow is malformed: subgraph '{subgraph.name}' "
                                   "contains itself", kind=Kind.INVALID)
                ex.instance_values = _instance_values(node, subgraph)
                self._expand(subgraph, (*path, node.id), ex, active | {subgraph.id})

    def _slots(self, ex: Exec) -> None:
        node, info = ex.node, self.object_info.get(ex.node.type)
        if ex.subgraph is not None:
            saved = {s.name: s for s in node.inputs}
            ex.inputs = [saved.get(io.name, InputSlot(io.name, io.type, None, None))
                         for io in ex.subgraph.inputs]
            ex.output_types = [io.type for io in ex.subgraph.outputs]
        elif node.type in VIRTUAL_TYPES or not isinstance(info, Mapping):
            ex.inputs = list(node.inputs)
            ex.output_types = [o.type for o in node.outputs]
        else:
            saved = {s.name: s for s in node.inputs}  # the last of a name wins, as in a Map
            ex.inputs = []
            for name, kind in definition_inputs(self.object_info, node.type):
                slot = saved.get(name)
                ex.inputs.append(InputSlot(name, kind, slot.link if slot else None,
                                           slot.widget if slot else None))
            ex.output_types = [t if isinstance(t, str) else "COMBO"
                               for t in class_outputs(self.object_info, node.type) or []]

    def _primitive_values(self) -> dict[tuple[str, str], Any]:
        """Like the frontend, whatever the primitive's mode."""
        values: dict[tuple[str, str], Any] = {}
        for ex in self.execs.values():
            node = ex.node
            stored = node.widgets_values
            if node.type != "PrimitiveNode" or not node.outputs or not isinstance(stored, list) \
                    or not stored:
                continue
            value = stored[0]
            if node.properties.get(PRIMITIVE_REPLACE) and isinstance(value, str) and "%" in value:
                raise JobError(f"cannot convert the GUI workflow: {ex.label()} has "
                               f"\"{PRIMITIVE_REPLACE}\" switched on, and hotfolder does not do "
                               "the editor's %date% and %node.widget% replacements",
                               kind=Kind.CONVERSION)
            for link_id in node.outputs[0].links:
                link = ex.graph.links.get(link_id)
                target = ex.graph.nodes.get(link.target_id) if link else None
                if link is None or target is None or link.target_slot >= len(target.inputs):
                    continue
                widget = target.inputs[link.target_slot].widget
                if widget is not None:
                    values[(":".join((*ex.path, target.id)), widget)] = value
        return values

    # -- tracing ------------------------------------------------------------------------------

    def resolve_input(self, ex: Exec, slot: int, kind: str | None = None,
                      seen: set[tuple[str, str, int]] | None = None) -> Resolved:
        seen = _visit(seen, ex, "in", slot)
        if slot >= len(ex.inputs):
            return Unresolved(f"{ex.label()} has no input {slot}")
        item = ex.inputs[slot]
        if item.link is None:
            return Unresolved("it is not connected")
        link = ex.graph.links.get(item.link)
        if link is None:
            return Unresolved(f"its link {item.link} is missing from the file")
        if ex.instance is not None and link.origin_id == SUBGRAPH_INPUT:
            return self._from_instance(ex.instance, link.origin_slot, seen)
        source = ex.graph.nodes.get(link.origin_id)
        if source is None:
            return Unresolved(f"it is linked to node {link.origin_id}, which is not in the file")
        origin = self.execs[":".join((*ex.path, source.id))]
        return self.resolve_output(origin, link.origin_slot, kind or item.type, seen)

    def _from_instance(self, instance: Exec, slot: int,
                       seen: set[tuple[str, str, int]]) -> Resolved:
        """An inner link from the subgraph's input `slot`: whatever feeds the instance there."""
        if slot >= len(instance.inputs):
            return Unresolved(f"{instance.label()} has no input {slot}")
        if instance.inputs[slot].link is None:
            if slot in instance.instance_values:
                return Value(instance.instance_values[slot])
            return Unresolved(f"input '{instance.inputs[slot].name}' of {instance.label()} is "
                              "not connected")
        found = self.resolve_input(instance, slot, None, seen)
        written = self.written.get((instance.id, instance.inputs[slot].widget or ""), _NOTHING)
        # a primitive linked to the instance wrote into its widget, which feeds the inside
        return Value(written) if isinstance(found, Unresolved) and written is not _NOTHING \
            else found

    def resolve_output(self, ex: Exec, slot: int, kind: str,
                       seen: set[tuple[str, str, int]]) -> Resolved:
        seen = _visit(seen, ex, "out", slot)
        if ex.node.mode == MODE_BYPASS:
            index = self._bypass_input(ex, slot, kind)
            if index < 0:
                return Unresolved(f"it is fed by {ex.label()}, which is bypassed and has no "
                                  f"{kind} input to pass on")
            found = self.resolve_input(ex, index, None, seen)
            if isinstance(found, Unresolved):
                return Unresolved(f"it is fed by {ex.label()}, which is bypassed, and that "
                                  f"node's input '{ex.inputs[index].name}' which it would pass "
                                  f"on has no source ({found.why})")
            return found
        if ex.subgraph is not None:
            if ex.node.mode == MODE_MUTED or ex.in_muted:
                return LinkTo(ex.id, slot)  # not emitted: the input is removed, as for any mute
            inner = next((link for link in ex.subgraph.links.values()
                          if link.target_id == SUBGRAPH_OUTPUT and link.target_slot == slot),
                         None)
            if inner is None:
                return Unresolved(f"output {slot} of {ex.label()} is not connected inside it")
            if inner.origin_id == SUBGRAPH_INPUT:
                return self._from_instance(ex, inner.origin_slot, seen)
            origin = self.execs.get(f"{ex.id}:{inner.origin_id}")
            if origin is None:
                return Unresolved(f"output {slot} of {ex.label()} comes from node "
                                  f"{inner.origin_id}, which is not in the subgraph")
            return self.resolve_output(origin, inner.origin_slot, kind, seen)
        if ex.node.type in VIRTUAL_TYPES:
            if slot < len(ex.inputs):
                return self.resolve_input(ex, slot, kind, seen)
            return Unresolved(f"it is fed by {ex.label()}, which only exists in the editor")
        return LinkTo(ex.id, slot)

    def _bypass_input(self, ex: Exec, slot: int, kind: str) -> int:
        """The input a bypassed node passes to a consumer of type `kind` at output `slot`."""
        out_type = ex.output_types[slot] if slot < len(ex.output_types) else "*"
        if slot < len(ex.inputs):
            own = ex.inputs[slot].type
            if types_match(own, out_type) and types_match(own, kind):
                return slot
        for i, item in enumerate(ex.inputs):
            if item.type == kind:
                return i
        for i, item in enumerate(ex.inputs):
            if types_match(item.type, out_type) and types_match(item.type, kind):
                return i
        return -1


def definition_inputs(object_info: Mapping[str, Any], class_type: str) -> list[tuple[str, str]]:
    """(name, type) of a class's inputs in the frontend's order: required, then optional, each
    in `input_order` when the server sends it. A combo's type is "COMBO"."""
    sections = class_inputs(object_info, class_type)
    info = object_info.get(class_type)
    order = info.get("input_order") if isinstance(info, Mapping) else None
    found: list[tuple[str, str]] = []
    for section in ("required", "optional"):
        specs = sections.get(section, {})
        names = order.get(section) if isinstance(order, Mapping) else None
        for name in [n for n in names if n in specs] if isinstance(names, list) else specs:
            kind, _ = spec_parts(specs[name])
            found.append((name, kind if isinstance(kind, str) else "COMBO"))
    return found


def types_match(a: str, b: str) -> bool:
    """litegraph's isValidConnection: "*" or "" match anything, "A,B" lists match on overlap,
    case-insensitively."""
    if a in ("", "*") or b in ("", "*") or a == b:
        return True
    first, second = a.lower(), b.lower()
    if "," not in first and "," not in second:
        return first == second
    return any(types_match(x, y) for x in first.split(",") for y in second.split(","))


def _visit(seen: set[tuple[str, str, int]] | None, ex: Exec, side: str,
           slot: int) -> set[tuple[str, str, int]]:
    seen = set() if seen is None else seen
    key = (ex.id, side, slot)
    if key in seen:
        raise JobError(f"cannot convert the GUI workflow: its links run in a circle through "
                       f"{ex.label()}", kind=Kind.CONVERSION)
    seen.add(key)
    return seen


def _instance_values(node: Node, subgraph: Graph) -> dict[int, Any]:
    """Values a subgraph instance keeps for its own widgets, by subgraph input slot.

    Saves from before widget promotion by reference ("proxyWidgets") store one value per
    subgraph input that feeds a widget inside, in slot order; newer saves store none and the
    inner widgets hold the values. When the count does not fit, the inner values are used.
    """
    stored = node.widgets_values
    if not isinstance(stored, list) or not stored:
        return {}
    fed = [k for k in range(len(subgraph.inputs)) if _feeds_widget(subgraph, k)]
    return dict(zip(fed, stored, strict=True)) if len(fed) == len(stored) else {}


def _feeds_widget(subgraph: Graph, slot: int) -> bool:
    for link in subgraph.links.values():
        if link.origin_id == SUBGRAPH_INPUT and link.origin_slot == slot:
            target = subgraph.nodes.get(link.target_id)
            if target is None or link.target_slot >= len(target.inputs):
                return False
            return target.inputs[link.target_slot].widget is not None
    return False
