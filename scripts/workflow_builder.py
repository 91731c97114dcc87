"""A small graph DSL that writes one workflow in both ComfyUI formats, so the two can never drift.

API format (``POST /prompt``): ``{id: {"class_type", "inputs"}}``. UI format (drag and drop, the
template browser): nodes with positions, sockets and positional ``widgets_values``, plus a links
table. Which inputs are widgets, and their order, comes from the server's ``/object_info``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
COLUMN_WIDTH, ROW_HEIGHT = 380, 300


@dataclass(frozen=True)
class Output:
    node: "Node"
    slot: int


@dataclass
class Node:
    id: int
    class_type: str
    inputs: dict
    column: int
    row: int
    title: str | None = None

    def out(self, slot: int = 0) -> Output:
        return Output(self, slot)


@dataclass
class Graph:
    """Nodes in layout columns; ``notes`` become UI-only Note nodes (not part of the API prompt)."""

    nodes: list[Node] = field(default_factory=list)
    notes: list[tuple[str, int, int]] = field(default_factory=list)

    def add(self, class_type: str, column: int, row: int, title: str | None = None, **inputs) -> Node:
        node = Node(len(self.nodes) + 1, class_type, inputs, column, row, title)
        self.nodes.append(node)
        return node

    def note(self, text: str, column: int, row: int) -> None:
        self.notes.append((text, column, row))


def is_widget(spec: list) -> bool:
    kind = spec[0]
    return isinstance(kind, list) or kind in WIDGET_TYPES


def input_specs(info: dict) -> list[tuple[str, list]]:
    """(name, spec) of a node's inputs in declaration order, required first."""
    specs = []
    for section in ("required", "optional"):
        declared = info["input"].get(section, {})
        order = info.get("input_order", {}).get(section, list(declared))
        specs.extend((name, declared[name]) for name in order)
    return specs


def to_api(graph: Graph, object_info: dict) -> dict:
    """The prompt the frontend would queue: every widget's value (defaults included) and every link."""
    prompt = {}
    for node in graph.nodes:
        inputs = {}
        for name, spec in input_specs(object_info[node.class_type]):
            value = node.inputs.get(name, spec[1].get("default") if is_widget(spec) and len(spec) > 1 else None)
            if isinstance(value, Output):
                inputs[name] = [str(value.node.id), value.slot]
            elif value is not None or name in node.inputs:
                inputs[name] = value
        prompt[str(node.id)] = {"class_type": node.class_type, "inputs": inputs}
        if node.title:
            prompt[str(node.id)]["_meta"] = {"title": node.title}
    return prompt


def _widget_values(node: Node, info: dict) -> list:
    values = []
    for name, spec in input_specs(info):
        if not is_widget(spec):
            continue
        value = node.inputs.get(name, spec[1].get("default") if len(spec) > 1 else None)
        values.append(None if isinstance(value, Output) else value)
        if len(spec) > 1 and spec[1].get("control_after_generate"):
            values.append("fixed")
    return values


def to_ui(graph: Graph, object_info: dict) -> dict:
    links, nodes = [], []
    outgoing: dict[tuple[int, int], list[int]] = {}
    for node in graph.nodes:
        info = object_info[node.class_type]
        sockets = []
        for name, spec in input_specs(info):
            value = node.inputs.get(name)
            if is_widget(spec) and not isinstance(value, Output):
                continue
            entry = {"name": name, "type": "COMBO" if isinstance(spec[0], list) else spec[0], "link": None}
            if is_widget(spec):
                entry["widget"] = {"name": name}
            if isinstance(value, Output):
                link_id = len(links) + 1
                source_type = object_info[value.node.class_type]["output"][value.slot]
                links.append([link_id, value.node.id, value.slot, node.id, len(sockets), source_type])
                outgoing.setdefault((value.node.id, value.slot), []).append(link_id)
                entry["link"] = link_id
            sockets.append(entry)
        nodes.append({
            "id": node.id, "type": node.class_type, "pos": [node.column * COLUMN_WIDTH, node.row * ROW_HEIGHT],
            "size": [320, 180], "flags": {}, "order": node.id - 1, "mode": 0, "inputs": sockets,
            "properties": {"Node name for S&R": node.class_type}, "widgets_values": _widget_values(node, info),
            **({"title": node.title} if node.title else {}),
        })
    for node_entry, node in zip(nodes, graph.nodes):
        info = object_info[node.class_type]
        node_entry["outputs"] = [
            {"name": name, "type": kind, "links": outgoing.get((node.id, slot), []), "slot_index": slot}
            for slot, (kind, name) in enumerate(zip(info["output"], info["output_name"]))]
    for index, (text, column, row) in enumerate(graph.notes):
        nodes.append({"id": len(graph.nodes) + index + 1, "type": "Note",
                      "pos": [column * COLUMN_WIDTH, row * ROW_HEIGHT], "size": [420, 300], "flags": {},
                      "order": len(nodes), "mode": 0, "inputs": [], "outputs": [],
                      "properties": {"text": ""}, "widgets_values": [text]})
    return {"last_node_id": len(nodes), "last_link_id": len(links), "nodes": nodes, "links": links,
            "groups": [], "config": {}, "extra": {"ds": {"scale": 0.7, "offset": [40, 40]}}, "version": 0.4}
