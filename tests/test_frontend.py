"""The UI workflows loaded into the real ComfyUI frontend in headless Chromium, in the 1920x1080 window they are
laid out for: no missing nodes, the model files they name reported missing (the test server has none of them),
the saved view on a readable Note and the Output group, with the test's settings and with the frontend's
defaults (its minimap on), the whole graph fitting the window at a zoom where titles are drawn, screenshots."""
from __future__ import annotations

import importlib.metadata
import json
import os
import shutil

import pytest

import comfy_host
from test_example_workflows import (TASKS, WORKFLOWS, assert_laid_out_in_groups, overlap,  # noqa: F401
                                    server)  # server: a fixture
# LOW_QUALITY_ZOOM: below it the frontend draws no node titles, widgets or slot names (LiteGraph's low-quality
# zoom: the setting LiteGraph.Canvas.MinFontSizeForLOD, 8 px, over LiteGraph.NODE_TEXT_SIZE, 14 px, = 0.571 in
# frontend 1.32.9 at devicePixelRatio 1); checked against the frontend's own value below.
from workflow_builder import (LOW_QUALITY_ZOOM, MARGIN, OPEN_ZOOM, READABLE_PX, SIDEBAR, TOP_BARS, WINDOW, fit_zoom,
                              minimap_box)

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
# The settings the test's page changes: a returning user (no first-run templates dialog over the canvas); no
# minimap, canvas info (fps...) or zoom buttons over the screenshots' corners. The page with the frontend's
# defaults keeps only the first (it is no display setting).
RETURNING_USER = {"Comfy.TutorialCompleted": True}
QUIET_CANVAS = {"Comfy.Minimap.Visible": False, "Comfy.Graph.CanvasInfo": False, "Comfy.Graph.CanvasMenu": False}


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.fail("Chromium is missing: run `apt-get install chromium` (make test's set-up does it as root)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        yield browser
        browser.close()


def open_frontend(browser, server, settings: dict):  # noqa: F811
    """A fresh page of the frontend, its settings stored on the server first (the frontend reads them once, as it
    starts: a page already open keeps its own). A setting stored as null reads as its default."""
    import requests

    requests.post(f"{server.url}/settings", json=settings, timeout=10).raise_for_status()  # merged into the stored
    page = browser.new_context(viewport=VIEWPORT, device_scale_factor=1).new_page()
    page.goto(server.url, wait_until="domcontentloaded", timeout=120_000)
    page.wait_for_function("() => window.app && window.app.graph && window.app.graph._nodes !== undefined",
                           timeout=120_000)
    return page


@pytest.fixture(scope="module")
def page(browser, server):  # noqa: F811
    page = open_frontend(browser, server, {**RETURNING_USER, **QUIET_CANVAS})
    yield page
    page.context.close()


@pytest.fixture(scope="module")
def default_page(browser, server):  # noqa: F811
    """The frontend with its default settings: the minimap (on in a window 1024 px wide or more), the canvas info
    and the zoom buttons shown."""
    page = open_frontend(browser, server, {**RETURNING_USER, **{setting: None for setting in QUIET_CANVAS}})
    yield page
    page.context.close()


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


# The page's geometry, as functions the states below share: the canvas's screen box of a graph box, the side
# toolbar's and top bars' extent, and which sample points of a screen box the canvas shows (a point covered by a
# panel, the minimap or the zoom buttons, or outside the window, is a miss; with ``widgets``, a node's DOM widget
# counts as shown).
GEOMETRY = """
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
    const note = window.app.graph._nodes.find(n => n.type === 'Note');
    const text = note.widgets[0].element;
    // the Note's text as drawn: its font size (px, CSS) times the scale its DOM widget is drawn at
    const textRect = text.getBoundingClientRect();
    const noteFont = parseFloat(getComputedStyle(text).fontSize) * textRect.height / text.offsetHeight;
"""

# What the window shows once a graph is open: the chrome, the view, the screen box of every group title, of the
# Note and of the Save Image node, with their sample points the canvas does not show, the Note's text height and
# font size on screen, the graph's box in graph units and on screen.
VIEW_STATE = """() => {""" + GEOMETRY + """
    const context = document.createElement('canvas').getContext('2d');
    const titles = window.app.graph._groups.map(g => {
        context.font = `${g.font_size}px ${window.LiteGraph.GROUP_FONT}`;
        const width = Math.min(g.size[0], context.measureText(g.title).width + 2 * g.constructor.padding);
        const box = screen([g.pos[0], g.pos[1], width, g.titleHeight]);
        return {title: g.title, box, misses: misses(box, false)};
    });
    const noteBox = screen(Array.from(note.boundingRect));
    const save = window.app.graph._nodes.find(n => n.type === 'SaveImage');
    const saveBox = screen(Array.from(save.boundingRect));
    const output = window.app.graph._groups.find(g => g.title === 'Output');
    const outputBox = screen(Array.from(output._bounding));
    const boxes = window.app.graph._groups.map(g => Array.from(g._bounding))
        .concat(window.app.graph._nodes.map(n => Array.from(n.boundingRect)));
    const left = Math.min(...boxes.map(b => b[0])), top = Math.min(...boxes.map(b => b[1]));
    const graph = [left, top, Math.max(...boxes.map(b => b[0] + b[2])) - left,
                   Math.max(...boxes.map(b => b[1] + b[3])) - top];
    const minimap = shown([...document.querySelectorAll('.minimap-main-container')])
        .map(r => [r.left, r.top, r.width, r.height]);
    return {chrome, scale, lowQuality: canvas.low_quality, threshold: canvas._lowQualityZoomThreshold, titles,
            note: {box: noteBox, misses: misses(noteBox, true), text: [text.scrollHeight, text.clientHeight],
                   font: noteFont},
            save: {box: saveBox, misses: misses(saveBox, false)},
            output: {box: outputBox, misses: misses(outputBox, true)},
            minimap: minimap.length ? minimap[0] : null, graph, graphOnScreen: screen(graph)};
}"""


def inside(box: list[float], chrome: dict) -> bool:
    """Whether a screen box lies in the canvas the chrome leaves (right of the side toolbar, below the top bars)."""
    x, y, w, h = box
    return chrome["left"] <= x and chrome["top"] <= y and x + w <= chrome["width"] and y + h <= chrome["height"]


def assert_opens_on_a_readable_note_and_the_output(state: dict) -> None:
    """The saved view's zoom draws the Note's text READABLE_PX tall or more; the Note, the Output group and its
    Save Image node lie in the canvas, none of their sample points hidden (by a panel, the minimap or the zoom
    buttons), the Note's text within its box."""
    assert state["note"]["font"] >= READABLE_PX - 0.01, f"the Note's text is {state['note']['font']:.1f} px"
    for part in ("note", "output", "save"):
        assert inside(state[part]["box"], state["chrome"]), f"{part} at {state[part]['box']}: {state['chrome']}"
        assert not state[part]["misses"], f"{part} at {state[part]['box']} is hidden: {state[part]['misses']}"
    scroll_height, client_height = state["note"]["text"]
    assert scroll_height <= client_height + 1, f"the Note's text needs {scroll_height} px, it has {client_height}"


@pytest.mark.parametrize("task", TASKS)
def test_saved_view_shows_a_readable_note_and_the_output_group(page, task, tmp_path):
    """The saved view opens at OPEN_ZOOM, where the frontend draws in full detail and the Note's text is readable,
    on the Note and the Output group, their titles shown. (No graph fits the window at that zoom: the docs'
    screenshot shows the whole graph as the fit view draws it.)"""
    workflow, _, _ = load(page, task)
    state = page.evaluate(VIEW_STATE)
    assert state["threshold"] == pytest.approx(LOW_QUALITY_ZOOM), "the frontend's low-detail zoom moved"
    assert state["scale"] == workflow["extra"]["ds"]["scale"] == OPEN_ZOOM and not state["lowQuality"], state["scale"]
    assert state["minimap"] is None, "the test's page shows no minimap"
    assert_opens_on_a_readable_note_and_the_output(state)
    [output] = [title for title in state["titles"] if title["title"] == "Output"]
    assert not output["misses"], f"the Output group's title at {output['box']} is hidden: {output['misses']}"
    screenshot(page, task, show_whole_graph(page)["graphOnScreen"], tmp_path)


@pytest.mark.parametrize("task", TASKS)
def test_saved_view_with_default_settings_shows_the_output_clear_of_the_minimap(default_page, task, tmp_path):
    """With the frontend's default settings the minimap stands at the canvas's bottom right (where the layout
    expects it: workflow_builder.minimap_box) and the canvas info and zoom buttons are shown: the saved view still
    shows the Save Image node, the Output group and the Note clear of the minimap, the Note's text readable."""
    load(default_page, task)
    state = default_page.evaluate(VIEW_STATE)
    assert state["minimap"] is not None, "the frontend's default shows the minimap"
    assert state["minimap"] == pytest.approx(list(minimap_box()), abs=2), "the minimap moved: see workflow_builder"
    assert_opens_on_a_readable_note_and_the_output(state)
    for part in ("save", "output", "note"):
        assert not overlap(state[part]["box"], state["minimap"]), f"the minimap covers {part}: {state[part]['box']}"
    save, minimap = state["save"]["box"], state["minimap"]
    print(f"{task}: zoom {state['scale']}, Note text {state['note']['font']:.1f} px; Save Image at "
          f"{[round(v) for v in save]}, {minimap[0] - save[0] - save[2]:.0f} px left of the minimap "
          f"{[round(v) for v in minimap]}")
    opening_screenshot(default_page, task, tmp_path)


@pytest.mark.parametrize("task", TASKS)
def test_graph_fits_the_window_at_a_zoom_with_titles(page, task):
    """The graph's box fits the canvas a 1920x1080 window leaves (right of the side toolbar, below the top bars)
    at a zoom above the frontend's low-detail zoom: the fit view (the docs' screenshots) shows all of it, titles
    drawn."""
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
    whole = show_whole_graph(page)
    assert not whole["lowQuality"] and inside(whole["graphOnScreen"], chrome), (
        f"the fit view shows the graph at {whole['graphOnScreen']} (zoom {whole['scale']}), the canvas is {chrome}")


def show_whole_graph(page) -> dict:
    """Sets the view to the whole graph at the zoom that fits it (rounded down to whole percent), its top left
    MARGIN px right of the side toolbar and below the top bars, as the saved view did before it opened at a
    readable zoom; returns the view's state."""
    left, top, width, height = page.evaluate(VIEW_STATE)["graph"]
    scale = int(fit_zoom(width, height) * 100) / 100
    page.evaluate("""([scale, x, y]) => {
        const canvas = window.app.canvas;
        canvas.ds.scale = scale;
        canvas.ds.offset[0] = x;
        canvas.ds.offset[1] = y;
        canvas.setDirty(true, true);
    }""", [scale, (SIDEBAR + MARGIN) / scale - left, (TOP_BARS + MARGIN) / scale - top])
    page.wait_for_timeout(500)
    return page.evaluate(VIEW_STATE)


def screenshot(page, task: str, box: list[float], tmp_path) -> None:
    """The whole graph (the fit view), without the frontend's panels; copied to docs/images with
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


OPENING_SCREENSHOTS = {"mca_swap"}  # the saved view in the whole window, default settings: one is enough for docs


def opening_screenshot(page, task: str, tmp_path) -> None:
    """The whole window as the graph opens with the frontend's default settings (<task>_opening.png); copied to
    docs/images for OPENING_SCREENSHOTS with MCA_UPDATE_SCREENSHOTS=1."""
    page.mouse.move(VIEWPORT["width"] // 2, TOP_BARS - 60)  # over the top bars: no hover highlight on the canvas
    page.wait_for_timeout(500)
    shot = tmp_path / f"{task}_opening.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    if os.environ.get("MCA_UPDATE_SCREENSHOTS") and task in OPENING_SCREENSHOTS:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, SCREENSHOTS / shot.name)
    print(f"screenshot: {shot}")
