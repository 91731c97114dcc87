"""A small graph DSL that writes one workflow in both ComfyUI formats, so the two can never drift.

API format (``POST /prompt``): ``{id: {"class_type", "inputs"}}``. UI format (drag and drop, the
template browser): nodes with positions, sockets and positional ``widgets_values``, plus a links
table and labelled groups. Which inputs are widgets, and their order, comes from the server's ``/object_info``.

Layout: the groups stand in rows (``Graph.rows``; each row left to right, the rows top to bottom, read like a
page). Each node names its group and a column inside it; a column's nodes stack top to bottom in the order they
were added, and a column taller than its row allows continues in the next one (newspaper style). Each row's
height is chosen so that the whole graph fits a 1920x1080 window at the largest zoom (see ``layout``: the fit
view, and the docs' screenshots). A Note (what to put where) stands right of the last row's last group, the
Output. The saved view (``extra.ds``) opens at the zoom where the Note's text is readable (100 %: no whole graph
fits there) on the last row's end: the Note and the Output group, clear of the frontend's minimap.
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from itertools import combinations, product

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
NODE_WIDTH, NOTE_WIDTH, GAP = 320, 420, 50  # graph units
TITLE_HEIGHT, SLOT_HEIGHT, WIDGET_HEIGHT, MULTILINE_HEIGHT = 30, 22, 24, 90  # LiteGraph's, with some room
TALL_NODES = {"LoadImage": 330, "SaveImage": 300}  # an image preview below the widgets
GROUP_HEADER, GROUP_PAD = 60, 20
NOTE_CHARS, NOTE_LINE = 64, 12  # the frontend's Note: 10 px monospace in a 400 px textarea, about 66 characters
GROUP_COLORS = ("#3f789e", "#b58b2a", "#8A8", "#a1309b", "#b06634", "#88A", "#8AA", "#A88")
# The screen a graph is laid out for and opens on: a 1920x1080 window less the frontend's chrome (frontend 1.32.9,
# measured by tests/test_frontend.py): the side toolbar is 59 px wide; at the top stand the "Nodes 2.0"
# announcement (40 px, until dismissed), the workflow tabs (38 px) and the floating row of breadcrumb and Run
# button (52 px). The zoom buttons at the bottom right (54 px high) may cover the last group's bottom padding.
WINDOW = (1920, 1080)
SIDEBAR, TOP_BARS, MARGIN = 60, 130, 20  # px
VIEW = (WINDOW[0] - SIDEBAR - 2 * MARGIN, WINDOW[1] - TOP_BARS - 2 * MARGIN)  # px the graph may fill
# Below this zoom LiteGraph draws nodes in low quality: no titles, no widgets, no slot names. The frontend
# (1.32.9) computes it as min_font_size_for_lod / (LiteGraph.NODE_TEXT_SIZE * sqrt(devicePixelRatio)): the setting
# "LiteGraph.Canvas.MinFontSizeForLOD" defaults to 8 px, NODE_TEXT_SIZE is 14, so 8 / 14 = 0.571 on a screen of
# devicePixelRatio 1 (the highest threshold; a HiDPI screen draws text down to a lower zoom).
LOW_QUALITY_ZOOM = 8 / 14
# With the frontend's default settings (1.32.9) the minimap is on (Comfy.Minimap.Visible: on in a window at least
# 1024 px wide): a 253 x 200 px box 4 px from the window's right edge and 58 px from its bottom, above the zoom
# buttons' row (measured by tests/test_frontend.py).
MINIMAP, MINIMAP_INSET = (253, 200), (4, 58)  # px: width, height; from the right edge, from the bottom
# Frontend 1.47.10 (ComfyUI 0.29) shows its notices (e.g. "3 errors found" when model files are missing: a box at
# [1548, 94, 368, 121]) in a column at the window's top right, over the canvas: the saved view keeps the Note left
# of it too.
TOASTS = 372  # px from the right edge
# The Note's text: a textarea in the frontend's font size for text widgets (the setting Comfy.TextareaWidget.FontSize,
# 10 px by default), scaled with the canvas. The saved view opens at the zoom that draws it READABLE_PX tall.
NOTE_FONT, READABLE_PX = 10, 10  # px
OPEN_ZOOM = READABLE_PX / NOTE_FONT


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
    models: list[dict] = field(default_factory=list)  # the UI file's properties.models: {name, url, directory}

    def out(self, slot: int = 0) -> Output:
        return Output(self, slot)


@dataclass
class Graph:
    """Nodes in labelled groups, standing in ``rows`` (each a tuple of group titles, left to right; the rows top
    to bottom); ``notes`` become UI-only Note nodes."""

    rows: tuple[tuple[str, ...], ...]
    nodes: list[Node] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def groups(self) -> tuple[str, ...]:
        """Every group in reading order: the first row left to right, then the next."""
        return tuple(group for row in self.rows for group in row)

    def add(self, class_type: str, group: str, column: int, title: str | None = None, /, **inputs) -> Node:
        """A node in ``column`` (0, 1, ...) of ``group``, below the nodes added there before; ``title`` (its UI and
        ``_meta`` title) is positional only, so that a node input named ``title`` (MCA Grid's) is an input."""
        if group not in self.groups:
            raise ValueError(f"unknown group '{group}'; groups: {', '.join(self.groups)}")
        node = Node(len(self.nodes) + 1, class_type, inputs, group, column, title)
        self.nodes.append(node)
        return node

    def note(self, text: str) -> None:
        self.notes.append(text)


def is_widget(spec: list) -> bool:
    """Whether the frontend draws the input as a widget: a widget type, unless ``forceInput`` makes it a socket
    only (as MCA Grid's labels: no widget, no entry in widgets_values)."""
    kind, options = spec[0], spec[1] if len(spec) > 1 else {}
    return (isinstance(kind, list) or kind in WIDGET_TYPES) and not options.get("forceInput")


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
        default = spec[1].get("default") if len(spec) > 1 else None
        value = node.inputs.get(name, default)
        values.append(default if isinstance(value, Output) else value)  # a linked widget keeps its default
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
    """Where everything stands in the UI file: node positions and heights, the group boxes, the notes' top left
    corner (title bar included) and height, the whole graph's size and the zoom at which it fits ``VIEW``."""

    positions: dict[int, list[int]]
    heights: dict[int, int]
    groups: list[dict]
    note_origin: tuple[int, int]
    note_height: int
    width: int
    height: int
    zoom: float


def _columns(graph: Graph) -> dict[str, list[list[Node]]]:
    """Each group's columns, left to right, each a list of nodes top to bottom (the order they were added)."""
    columns: dict[str, dict[int, list[Node]]] = {group: {} for group in graph.groups}
    for node in graph.nodes:
        columns[node.group].setdefault(node.column, []).append(node)
    return {group: [found[column] for column in sorted(found)] for group, found in columns.items()}


def _stack(nodes: list[Node], heights: dict[int, int]) -> int:
    """The height of nodes stacked in one column, title bars and gaps included."""
    return sum(TITLE_HEIGHT + heights[node.id] for node in nodes) + GAP * (len(nodes) - 1)


def _wrap(nodes: list[Node], heights: dict[int, int], budget: int) -> list[list[Node]]:
    """The column cut, in order, into the fewest pieces no taller than ``budget``, the pieces as even as can be
    (a node taller than ``budget`` stands alone)."""
    count = len(nodes)
    for pieces in range(1, count + 1):
        splits = ([nodes[start:end] for start, end in zip((0, *cuts), (*cuts, count))]
                  for cuts in combinations(range(1, count), pieces - 1))
        tallest, best = min(((max(_stack(piece, heights) for piece in split), split) for split in splits),
                            key=lambda found: found[0])
        if tallest <= budget or pieces == count:
            return best
    raise AssertionError("unreachable: one node a piece always fits")


def _row(groups: list[list[list[Node]]], heights: dict[int, int], budget: int) -> list[list[list[Node]]]:
    """Each group of a row as its wrapped columns."""
    return [[piece for column in columns for piece in _wrap(column, heights, budget)] for columns in groups]


def _group_width(columns: list) -> int:
    return 2 * GROUP_PAD + len(columns) * NODE_WIDTH + (len(columns) - 1) * GAP


def note_text_height(text: str) -> int:
    """About how tall the frontend writes ``text`` in a Note (a little more, never less)."""
    lines = sum(max(1, len(textwrap.wrap(line, NOTE_CHARS))) for line in text.split("\n"))
    return lines * NOTE_LINE


def _row_size(row: list[list[list[Node]]], heights: dict[int, int], trail: int, least: int) -> tuple[int, int]:
    """(width, height) of a row of groups, ``trail`` units of notes after it, at least ``least`` tall."""
    width = sum(_group_width(columns) + GAP for columns in row) - GAP + trail
    tallest = max(_stack(piece, heights) for columns in row for piece in columns)
    return width, max(least, GROUP_HEADER + tallest + GROUP_PAD)


def fit_zoom(width: float, height: float) -> float:
    """The largest zoom at which a ``width`` x ``height`` graph fits ``VIEW``."""
    return min(VIEW[0] / width, VIEW[1] / height)


def _score(wrapped: list, width: int, height: int) -> tuple:
    """The larger zoom first (in whole percent, as the saved view has it), then the fewer columns, then the lower
    graph (wide like the window)."""
    return int(fit_zoom(width, height) * 100), -sum(len(group) for row in wrapped for group in row), -height


def layout(graph: Graph, object_info: dict) -> Layout:
    """Each row's groups left to right, the rows top to bottom, the notes right of the last row; the groups of a
    row all as tall as its tallest column.

    Each row gets a height budget (a column taller than it continues in the next column): of every choice of
    budgets (the heights at which some column would wrap differently) that keeps the last row (the Output and the
    notes) within the opening view's height, the one whose graph fits ``VIEW`` at the largest zoom, and of equal
    ones the one with the fewest columns (see ``_score``). Rows too tall push the graph's height past the window,
    rows cut too short widen it: the search finds the balance, per graph.
    """
    heights = {node.id: node_height(node, object_info[node.class_type]) for node in graph.nodes}
    columns = _columns(graph)
    trail = len(graph.notes) * (GAP + NOTE_WIDTH)
    least = max((TITLE_HEIGHT + note_text_height(text) + 2 * GROUP_PAD for text in graph.notes), default=0)
    rows = [[columns[group] for group in row] for row in graph.rows]
    candidates = [sorted({_stack(column[start:end], heights) for group in row for column in group
                          for start in range(len(column)) for end in range(start + 1, len(column) + 1)})
                  for row in rows]
    last = len(rows) - 1
    best = None
    for budgets in product(*candidates):
        wrapped = [_row(row, heights, budget) for row, budget in zip(rows, budgets)]
        sizes = [_row_size(row, heights, *((trail, least) if index == last else (0, 0)))
                 for index, row in enumerate(wrapped)]
        if sizes[last][1] > VIEW[1] / OPEN_ZOOM:  # the opening view would cut the Output or the Note
            continue
        width = max(size[0] for size in sizes)
        height = sum(size[1] + GAP for size in sizes) - GAP
        score = _score(wrapped, width, height)
        if best is None or score > best[0]:
            best = (score, wrapped, sizes, width, height)
    if best is None:
        raise ValueError(f"no layout keeps the last row within {VIEW[1] / OPEN_ZOOM:.0f} units: the opening view "
                         "cannot show the Output and the Note")
    _, wrapped, sizes, width, height = best
    positions, boxes, y = {}, [], 0
    for row, (_, row_height) in zip(wrapped, sizes):
        x = 0
        for group_columns in row:
            title = graph.groups[len(boxes)]
            boxes.append({"id": len(boxes) + 1, "title": title,
                          "bounding": [x, y, _group_width(group_columns), row_height],
                          "color": GROUP_COLORS[len(boxes) % len(GROUP_COLORS)], "font_size": 24, "flags": {}})
            for column_index, piece in enumerate(group_columns):
                top = y + GROUP_HEADER + TITLE_HEIGHT
                for node in piece:
                    positions[node.id] = [x + GROUP_PAD + column_index * (NODE_WIDTH + GAP), top]
                    top += heights[node.id] + TITLE_HEIGHT + GAP
            x += _group_width(group_columns) + GAP
        note_origin = (x, y)  # after the last row's last group
        y += row_height + GAP
    return Layout(positions, heights, boxes, note_origin, sizes[-1][1], width, height, fit_zoom(width, height))


def notes_width(count: int) -> int:
    return count * NOTE_WIDTH + (count - 1) * GAP


def minimap_box() -> tuple[int, int, int, int]:
    """The default minimap's screen box [x, y, w, h] in ``WINDOW`` (frontend 1.32.9)."""
    return (WINDOW[0] - MINIMAP_INSET[0] - MINIMAP[0], WINDOW[1] - MINIMAP_INSET[1] - MINIMAP[1], *MINIMAP)


def open_view(placed: Layout, notes: int = 1) -> dict:
    """The saved view (``extra.ds``): at ``OPEN_ZOOM`` (the Note's text ``READABLE_PX`` tall on screen), the last
    row's top ``MARGIN`` px below the top bars and its notes' right edge ``MARGIN`` px left of the default minimap
    and of the newer frontend's notifications, so that the Note and the Output group beside it are in full view, the
    minimap and the notifications over neither. The whole graph
    still fits the window at a zoom where the frontend draws titles (the fit view, the docs' screenshots)."""
    if placed.zoom < LOW_QUALITY_ZOOM:
        raise ValueError(f"the graph ({placed.width} x {placed.height}) fits the window only at {placed.zoom:.2f} "
                         f"zoom, below the frontend's low-detail zoom {LOW_QUALITY_ZOOM:.3f}: lay it out smaller")
    scale = OPEN_ZOOM
    right = placed.note_origin[0] + notes_width(notes)  # graph units
    screen_right, screen_top = min(minimap_box()[0], WINDOW[0] - TOASTS) - MARGIN, TOP_BARS + MARGIN
    return {"scale": scale, "offset": [round(screen_right / scale - right, 1),
                                       round(screen_top / scale - placed.note_origin[1], 1)]}


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


def _note(text: str, node_id: int, index: int, placed: Layout) -> dict:
    """A Note in the last row, right of its groups, as tall as they are."""
    x, y = placed.note_origin
    return {"id": node_id, "type": "Note", "pos": [x + index * (NOTE_WIDTH + GAP), y + TITLE_HEIGHT],
            "size": [NOTE_WIDTH, placed.note_height - TITLE_HEIGHT], "flags": {}, "order": node_id - 1, "mode": 0,
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
            "properties": {"Node name for S&R": node.class_type, **({"models": node.models} if node.models else {})},
            "widgets_values": _widget_values(node, info),
            **({"title": node.title} if node.title else {}),
        })
    for node_entry, node in zip(nodes, graph.nodes):
        info = object_info[node.class_type]
        node_entry["outputs"] = [
            {"name": name, "type": kind, "links": outgoing.get((node.id, slot), []), "slot_index": slot}
            for slot, (kind, name) in enumerate(zip(info["output"], info["output_name"]))]
    for index, text in enumerate(graph.notes):
        nodes.append(_note(text, len(nodes) + 1, index, placed))
    return {"last_node_id": len(nodes), "last_link_id": len(links), "nodes": nodes, "links": links,
            "groups": placed.groups, "config": {}, "extra": {"ds": open_view(placed, len(graph.notes))},
            "version": 0.4}
