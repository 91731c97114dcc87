"""A small graph DSL that writes one workflow in both ComfyUI formats, so the two can never drift.

API format (``POST /prompt``): ``{id: {"class_type", "inputs"}}``. UI format (drag and drop, the
template browser): nodes with positions, sockets and positional ``widgets_values``, plus a links
table and labelled groups. Which inputs are widgets, and their order, comes from the server's ``/object_info``.

Layout: the graph's groups stand left to right (the reading order); each node names its group and a column
inside it, and the nodes of one column stack top to bottom in the order they were added. A Note (what to put
where) stands left of the first group.
"""
from __future__ import annotations

from dataclasses import dataclass, field

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
NODE_WIDTH, NOTE_WIDTH, GAP = 320, 420, 50  # graph units
TITLE_HEIGHT, SLOT_HEIGHT, WIDGET_HEIGHT, MULTILINE_HEIGHT = 30, 22, 24, 90  # LiteGraph's, with some room
TALL_NODES = {"LoadImage": 330, "SaveImage": 300}  # an image preview below the widgets
GROUP_HEADER, GROUP_PAD = 60, 20
OPEN_SCALE = 0.6  # the zoom a workflow opens at: most of the graph, still above the frontend's low-detail zoom
GROUP_COLORS = ("#3f789e", "#b58b2a", "#8A8", "#a1309b", "#b06634", "#88A", "#8AA", "#A88")


@dataclass(frozen=True)
class Output:
    node: "Node"
    slot: int


@dataclass
class Node:
    id: int
    class_type: str
    inputs: dict
    group: str
    column: int
    title: str | None = None

    def out(self, slot: int = 0) -> Output:
        return Output(self, slot)


@dataclass
class Graph:
    """Nodes in labelled groups (left to right, in ``groups`` order); ``notes`` become UI-only Note nodes."""

    groups: tuple[str, ...]
    nodes: list[Node] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, class_type: str, group: str, column: int, title: str | None = None, **inputs) -> Node:
        """A node in ``column`` (0, 1, ...) of ``group``, below the nodes added there before."""
        if group not in self.groups:
            raise ValueError(f"unknown group '{group}'; groups: {', '.join(self.groups)}")
        node = Node(len(self.nodes) + 1, class_type, inputs, group, column, title)
        self.nodes.append(node)
        return node

    def note(self, text: str) -> None:
        self.notes.append(text)


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


def node_height(node: Node, info: dict) -> int:
    """The node's body height (below its title bar) as the frontend draws it, with a little room."""
    if node.class_type in TALL_NODES:
        return TALL_NODES[node.class_type]
    sockets, widgets = 0, 0
    for _, spec in input_specs(info):
        if not is_widget(spec):
            sockets += 1
            continue
        options = spec[1] if len(spec) > 1 else {}
        widgets += MULTILINE_HEIGHT if options.get("multiline") else WIDGET_HEIGHT
        widgets += WIDGET_HEIGHT if options.get("control_after_generate") else 0
    return max(sockets, len(info["output"]), 1) * SLOT_HEIGHT + widgets + 10


@dataclass
class Layout:
    """Where everything stands in the UI file: node positions and heights, the group boxes, the notes' box."""

    positions: dict[int, list[int]]
    heights: dict[int, int]
    groups: list[dict]
    height: int
    width: int


def _columns(graph: Graph) -> dict[str, dict[int, list[Node]]]:
    """Each group's columns, each a list of nodes top to bottom (the order they were added)."""
    columns: dict[str, dict[int, list[Node]]] = {group: {} for group in graph.groups}
    for node in graph.nodes:
        columns[node.group].setdefault(node.column, []).append(node)
    return columns


def layout(graph: Graph, object_info: dict) -> Layout:
    """Notes at the left, then one box per group, left to right, all as tall as the tallest column."""
    heights = {node.id: node_height(node, object_info[node.class_type]) for node in graph.nodes}
    columns = _columns(graph)
    tallest = max(sum(TITLE_HEIGHT + heights[node.id] + GAP for node in nodes) - GAP
                  for group in columns.values() for nodes in group.values())
    height = GROUP_HEADER + tallest + GROUP_PAD
    x = len(graph.notes) * (NOTE_WIDTH + GAP)
    positions, groups = {}, []
    for index, name in enumerate(graph.groups):
        count = max(columns[name], default=-1) + 1
        width = 2 * GROUP_PAD + count * NODE_WIDTH + (count - 1) * GAP
        groups.append({"id": index + 1, "title": name, "bounding": [x, 0, width, height],
                       "color": GROUP_COLORS[index % len(GROUP_COLORS)], "font_size": 24, "flags": {}})
        for column, nodes in columns[name].items():
            y = GROUP_HEADER + TITLE_HEIGHT
            for node in nodes:
                positions[node.id] = [x + GROUP_PAD + column * (NODE_WIDTH + GAP), y]
                y += heights[node.id] + TITLE_HEIGHT + GAP
        x += width + GAP
    return Layout(positions, heights, groups, height, x - GAP)


def _sockets(node: Node, object_info: dict, links: list, outgoing: dict) -> list[dict]:
    """The node's input sockets (inputs that are not widgets, and widgets fed by a link); adds its links."""
    sockets = []
    for name, spec in input_specs(object_info[node.class_type]):
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
    return sockets


def _note(text: str, node_id: int, index: int, height: int) -> dict:
    return {"id": node_id, "type": "Note", "pos": [index * (NOTE_WIDTH + GAP), TITLE_HEIGHT],
            "size": [NOTE_WIDTH, height - TITLE_HEIGHT], "flags": {}, "order": node_id - 1, "mode": 0,
            "inputs": [], "outputs": [], "properties": {"text": ""}, "widgets_values": [text]}


def to_ui(graph: Graph, object_info: dict) -> dict:
    links, nodes = [], []
    outgoing: dict[tuple[int, int], list[int]] = {}
    placed = layout(graph, object_info)
    for node in graph.nodes:
        info = object_info[node.class_type]
        nodes.append({
            "id": node.id, "type": node.class_type, "pos": placed.positions[node.id],
            "size": [NODE_WIDTH, placed.heights[node.id]], "flags": {}, "order": node.id - 1, "mode": 0,
            "inputs": _sockets(node, object_info, links, outgoing),
            "properties": {"Node name for S&R": node.class_type}, "widgets_values": _widget_values(node, info),
            **({"title": node.title} if node.title else {}),
        })
    for node_entry, node in zip(nodes, graph.nodes):
        info = object_info[node.class_type]
        node_entry["outputs"] = [
            {"name": name, "type": kind, "links": outgoing.get((node.id, slot), []), "slot_index": slot}
            for slot, (kind, name) in enumerate(zip(info["output"], info["output_name"]))]
    for index, text in enumerate(graph.notes):
        nodes.append(_note(text, len(nodes) + 1, index, placed.height))
    return {"last_node_id": len(nodes), "last_link_id": len(links), "nodes": nodes, "links": links,
            "groups": placed.groups, "config": {}, "extra": {"ds": {"scale": OPEN_SCALE, "offset": [20, 80]}},
            "version": 0.4}
