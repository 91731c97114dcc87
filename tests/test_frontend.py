"""The UI workflows loaded into the real ComfyUI frontend in headless Chromium, in the 1920x1080 window they are
laid out for: no missing nodes, the model files they name reported missing (the test server has none of them),
the saved view on the Note and every group at a zoom where titles are drawn, screenshots."""
from __future__ import annotations

import importlib.metadata
import json
import os
import shutil

import pytest

import comfy_host
from test_example_workflows import TASKS, WORKFLOWS, assert_laid_out_in_groups, server  # noqa: F401  (server: fixture)
# LOW_QUALITY_ZOOM: below it the frontend draws no node titles, widgets or slot names (LiteGraph's low-quality
# zoom: the setting LiteGraph.Canvas.MinFontSizeForLOD, 8 px, over LiteGraph.NODE_TEXT_SIZE, 14 px, = 0.571 in
# frontend 1.32.9 at devicePixelRatio 1); checked against the frontend's own value below.
from workflow_builder import LOW_QUALITY_ZOOM, SIDEBAR, TOP_BARS, WINDOW

pytestmark = pytest.mark.full

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = comfy_host.REPO / "docs" / "images"
VIEWPORT = {"width": WINDOW[0], "height": WINDOW[1]}  # the window the graphs are laid out for
MISSING_MODELS_DIALOG = "global-missing-models-warning"  # the aria-labelledby of the frontend's dialog
# Frontends up to 1.3x open that dialog on load (1.32.9 with ComfyUI 0.3.75); 1.47.10 (ComfyUI 0.29) opens none on
# load, so there only "no dialog at all" (no missing-nodes dialog) can be checked.
FRONTEND_VERSION = tuple(int(part) for part in importlib.metadata.version("comfyui-frontend-package").split(".")[:2])
OPENS_MISSING_MODELS_DIALOG = FRONTEND_VERSION < (1, 40)
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-default-apps", "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"]


@pytest.fixture(scope="module")
def page(server, tmp_path_factory):  # noqa: F811
    if not os.path.exists(CHROMIUM):
        pytest.fail("Chromium is missing: run `apt-get install chromium` (make test's set-up does it as root)")
    import requests
    from playwright.sync_api import sync_playwright

    # a returning user: no first-run templates dialog over the canvas; no minimap, canvas info (fps...) or zoom
    # buttons over the screenshots' corners
    for setting, value in {"Comfy.TutorialCompleted": True, "Comfy.Minimap.Visible": False,
                           "Comfy.Graph.CanvasInfo": False, "Comfy.Graph.CanvasMenu": False}.items():
        requests.post(f"{server.url}/settings/{setting}", json=value, timeout=10).raise_for_status()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        context = browser.new_context(viewport=VIEWPORT, device_scale_factor=1)
        page = context.new_page()
        page.goto(server.url, wait_until="domcontentloaded", timeout=120_000)
        page.wait_for_function("() => window.app && window.app.graph && window.app.graph._nodes !== undefined",
                               timeout=120_000)
        yield page
        browser.close()


def visible_dialogs(page) -> list[dict]:
    return page.evaluate("""() => [...document.querySelectorAll('.p-dialog, [role=dialog]')]
        .filter(d => d.offsetParent !== null)
        .map(d => ({label: d.getAttribute('aria-labelledby') || '', text: d.innerText}))""")


def close_dialogs(page) -> None:
    page.evaluate("""() => document.querySelectorAll('.p-dialog .p-dialog-close-button')
        .forEach(button => button.offsetParent !== null && button.click())""")
    page.wait_for_function("() => ![...document.querySelectorAll('.p-dialog')].some(d => d.offsetParent !== null)",
                           timeout=10_000)


def load(page, task: str) -> tuple[dict, list[dict], dict]:
    """Opens the shipped UI file as a user does (its saved view included). Returns the file, the dialogs the
    frontend showed (closed afterwards) and the frontend's graph: types, widget names, group and node boxes."""
    close_dialogs(page)
    workflow = json.loads((WORKFLOWS / f"{task}.json").read_text())
    page.evaluate("async (workflow) => { await window.app.loadGraphData(workflow); }", workflow)
    page.wait_for_timeout(1500)
    dialogs = visible_dialogs(page)
    close_dialogs(page)
    graph = page.evaluate("""() => ({
        types: window.app.graph._nodes.map(n => n.type),
        widgets: Object.fromEntries(window.app.graph._nodes.filter(n => n.type.startsWith('MCA_'))
            .map(n => [n.type, (n.widgets || []).map(w => w.name)])),
        // every node's widget values by widget name, as the frontend read them from widgets_values
        values: window.app.graph._nodes.map(n => [n.id,
            Object.fromEntries((n.widgets || []).map(w => [w.name, w.value]))]),
        // the groups as the frontend holds them, every node's box as the frontend sized it (title bar included)
        groups: window.app.graph._groups.map(g => ({title: g.title, box: Array.from(g._bounding)})),
        nodes: window.app.graph._nodes.map(n => ({type: n.type, box: Array.from(n.boundingRect)}))})""")
    return workflow, dialogs, graph


@pytest.fixture(scope="module")
def object_info(server):  # noqa: F811
    return server.get("/object_info")


@pytest.mark.parametrize("task", TASKS)
def test_ui_workflow_loads_without_missing_nodes(page, object_info, task):
    workflow, dialogs, graph = load(page, task)
    assert len(graph["types"]) == len(workflow["nodes"])
    assert sorted(graph["types"]) == sorted(node["type"] for node in workflow["nodes"])
    assert "seed" in graph["widgets"]["MCA_Sampler"] and "preset" in graph["widgets"]["MCA_AttentionPatch"]
    # the frontend's widgets are the API file's widget inputs, with its values: the positional widgets_values mean
    # what the builder wrote (an input with forceInput, as MCA Grid's labels, is a socket with no widget value; a
    # widget fed by a link, as MCA Grid's columns, takes the link's value)
    api = json.loads((WORKFLOWS / "api" / f"{task}.json").read_text())
    for node_id, values in graph["values"]:
        if str(node_id) not in api:  # the Note
            continue
        node = api[str(node_id)]
        declared = {name for section in object_info[node["class_type"]]["input"].values() for name in section}
        linked = {name for name, value in node["inputs"].items() if isinstance(value, list)}  # fed by a link
        shown = {name: value for name, value in values.items() if name in declared - linked}  # not upload, preview
        assert shown == {name: value for name, value in node["inputs"].items() if not isinstance(value, list)}, \
            f"{node['class_type']} {node_id}: the frontend shows {shown}"
    # the only dialog: the model files the loaders name (properties.models), none of which the test server has
    assert [dialog["label"] for dialog in dialogs] == ([MISSING_MODELS_DIALOG] if OPENS_MISSING_MODELS_DIALOG else []), \
        dialogs
    if OPENS_MISSING_MODELS_DIALOG:
        listed = {line.strip() for line in dialogs[0]["text"].splitlines() if " / " in line}
        assert listed == {f"{model['directory']} / {model['name']}" for node in workflow["nodes"]
                          for model in node["properties"].get("models", [])}, dialogs[0]["text"]
    assert_laid_out_in_groups(graph["groups"], graph["nodes"])


# What the window shows once a graph is open: the side toolbar's and top bars' extent, the saved view, the screen
# box of every group title and of the Note, and which of their sample points the canvas shows (a point covered by
# a panel, or outside the window, is a miss), the Note's text height, the graph's box in graph units and on screen.
VIEW_STATE = """() => {
    const canvas = window.app.canvas, element = canvas.canvas, rect = element.getBoundingClientRect();
    const [offsetX, offsetY] = canvas.ds.offset, scale = canvas.ds.scale;
    const screen = ([x, y, w, h]) => [rect.left + (x + offsetX) * scale, rect.top + (y + offsetY) * scale,
                                      w * scale, h * scale];
    const shown = (els) => els.filter(e => e.offsetParent !== null).map(e => e.getBoundingClientRect());
    const chrome = {
        left: Math.max(0, ...shown([...document.querySelectorAll('.side-tool-bar-container')]).map(r => r.right)),
        top: Math.max(0, ...shown([...document.querySelectorAll(
            '.workflow-tabs-container, .subgraph-breadcrumb, .actionbar-container')]).map(r => r.bottom)),
        width: window.innerWidth, height: window.innerHeight};
    const misses = (box, widgets) => {
        const missed = [];
        for (let i = 0; i <= 4; i++) for (let j = 0; j <= 2; j++) {
            const x = box[0] + 2 + (box[2] - 4) * i / 4, y = box[1] + 2 + (box[3] - 4) * j / 2;
            const hit = document.elementFromPoint(x, y);
            if (hit !== element && !(widgets && hit && hit.closest('.dom-widget')))
                missed.push([Math.round(x), Math.round(y), hit ? `${hit.tagName}.${hit.className}` : 'outside']);
        }
        return missed;
    };
    const context = document.createElement('canvas').getContext('2d');
    const titles = window.app.graph._groups.map(g => {
        context.font = `${g.font_size}px ${window.LiteGraph.GROUP_FONT}`;
        const width = Math.min(g.size[0], context.measureText(g.title).width + 2 * g.constructor.padding);
        const box = screen([g.pos[0], g.pos[1], width, g.titleHeight]);
        return {title: g.title, box, misses: misses(box, false)};
    });
    const note = window.app.graph._nodes.find(n => n.type === 'Note');
    const noteBox = screen(Array.from(note.boundingRect));
    const text = note.widgets[0].element;
    const boxes = window.app.graph._groups.map(g => Array.from(g._bounding))
        .concat(window.app.graph._nodes.map(n => Array.from(n.boundingRect)));
    const left = Math.min(...boxes.map(b => b[0])), top = Math.min(...boxes.map(b => b[1]));
    const graph = [left, top, Math.max(...boxes.map(b => b[0] + b[2])) - left,
                   Math.max(...boxes.map(b => b[1] + b[3])) - top];
    return {chrome, scale, lowQuality: canvas.low_quality, threshold: canvas._lowQualityZoomThreshold, titles,
            note: {box: noteBox, misses: misses(noteBox, true), text: [text.scrollHeight, text.clientHeight]},
            graph, graphOnScreen: screen(graph)};
}"""


@pytest.mark.parametrize("task", TASKS)
def test_saved_view_shows_the_note_and_every_group_title(page, task, tmp_path):
    workflow, _, _ = load(page, task)
    state = page.evaluate(VIEW_STATE)
    assert state["threshold"] == pytest.approx(LOW_QUALITY_ZOOM), "the frontend's low-detail zoom moved"
    assert state["scale"] == workflow["extra"]["ds"]["scale"] and not state["lowQuality"], state["scale"]
    assert sorted(title["title"] for title in state["titles"]) == sorted(group["title"] for group in workflow["groups"])
    for title in state["titles"]:
        assert not title["misses"], f"group title {title['title']} at {title['box']} is hidden: {title['misses']}"
    assert not state["note"]["misses"], f"the Note at {state['note']['box']} is hidden: {state['note']['misses']}"
    scroll_height, client_height = state["note"]["text"]
    assert scroll_height <= client_height + 1, f"the Note's text needs {scroll_height} px, it has {client_height}"
    screenshot(page, task, state["graphOnScreen"], tmp_path)


@pytest.mark.parametrize("task", TASKS)
def test_graph_fits_the_window_at_a_zoom_with_titles(page, task):
    """The graph's box fits the canvas a 1920x1080 window leaves (right of the side toolbar, below the top bars)
    at a zoom above the frontend's low-detail zoom, and the saved view shows all of it."""
    load(page, task)
    state = page.evaluate(VIEW_STATE)
    chrome = state["chrome"]
    assert [chrome["width"], chrome["height"]] == list(WINDOW)
    # the layout's assumptions about the frontend's chrome (workflow_builder) hold
    assert 0 < chrome["left"] <= SIDEBAR and 0 < chrome["top"] <= TOP_BARS, chrome
    _, _, width, height = state["graph"]
    fit = min((chrome["width"] - chrome["left"]) / width, (chrome["height"] - chrome["top"]) / height)
    print(f"{task}: {width:.0f} x {height:.0f} units, fits 1920x1080 at {fit:.3f} zoom, opens at {state['scale']}")
    assert fit >= LOW_QUALITY_ZOOM, f"{width} x {height} fits the window only at {fit:.3f} zoom"
    x, y, w, h = state["graphOnScreen"]
    assert chrome["left"] <= x and chrome["top"] <= y and x + w <= chrome["width"] and y + h <= chrome["height"], (
        f"the saved view shows the graph at {state['graphOnScreen']}, the canvas is {chrome}")


def screenshot(page, task: str, box: list[float], tmp_path) -> None:
    """The graph as it opens (its saved view), without the frontend's panels; copied to docs/images with
    MCA_UPDATE_SCREENSHOTS=1."""
    x, y, w, h = box
    page.mouse.move(VIEWPORT["width"] - 5, TOP_BARS + 5)  # on the empty canvas: no hover highlight, no tooltip
    page.wait_for_timeout(500)
    shot = tmp_path / f"{task}.png"
    page.screenshot(path=str(shot), clip={"x": x - 10, "y": y - 10, "width": w + 20, "height": h + 20})
    assert shot.stat().st_size > 10_000
    if os.environ.get("MCA_UPDATE_SCREENSHOTS"):
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, SCREENSHOTS / shot.name)
    print(f"screenshot: {shot}")
