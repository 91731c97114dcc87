"""The UI workflows loaded into the real ComfyUI frontend in headless Chromium: no missing nodes, screenshots."""
from __future__ import annotations

import json
import os
import shutil

import pytest

import comfy_host
from test_example_workflows import TASKS, WORKFLOWS, assert_laid_out_in_groups, server  # noqa: F401  (server: fixture)

pytestmark = pytest.mark.full

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = comfy_host.REPO / "docs" / "images"
VIEWPORT = {"width": 2600, "height": 1000}  # the graphs are wide: five groups side by side
CANVAS_TOP = 140  # px below the frontend's menus and floating toolbars
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-default-apps", "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"]


@pytest.fixture(scope="module")
def page(server, tmp_path_factory):  # noqa: F811
    if not os.path.exists(CHROMIUM):
        pytest.fail("Chromium is missing: run `apt-get install chromium` (make test's set-up does it as root)")
    import requests
    from playwright.sync_api import sync_playwright

    # a returning user: no first-run templates dialog over the canvas
    requests.post(f"{server.url}/settings/Comfy.TutorialCompleted", json=True, timeout=10).raise_for_status()
    # and no minimap over the screenshots' lower right corner
    requests.post(f"{server.url}/settings/Comfy.Minimap.Visible", json=False, timeout=10).raise_for_status()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        context = browser.new_context(viewport=VIEWPORT)
        page = context.new_page()
        page.goto(server.url, wait_until="domcontentloaded", timeout=120_000)
        page.wait_for_function("() => window.app && window.app.graph && window.app.graph._nodes !== undefined",
                               timeout=120_000)
        yield page
        browser.close()


def visible_dialog_text(page) -> str:
    return page.evaluate("""() => [...document.querySelectorAll('.p-dialog, [role=dialog]')]
        .filter(d => d.offsetParent !== null).map(d => d.innerText).join('\\n---\\n')""")


@pytest.mark.parametrize("task", TASKS)
def test_ui_workflow_loads_without_missing_nodes(page, task, tmp_path):
    page.keyboard.press("Escape")
    workflow = json.loads((WORKFLOWS / f"{task}.json").read_text())
    loaded = page.evaluate("""async (workflow) => {
        await window.app.loadGraphData(workflow);
        const nodes = window.app.graph._nodes;
        return {count: nodes.length, types: nodes.map(n => n.type)};
    }""", workflow)
    page.wait_for_timeout(1500)
    dialogs = visible_dialog_text(page)
    assert "missing" not in dialogs.lower(), dialogs
    assert loaded["count"] == len(workflow["nodes"])
    assert sorted(loaded["types"]) == sorted(node["type"] for node in workflow["nodes"])
    widgets = page.evaluate("""() => Object.fromEntries(window.app.graph._nodes
        .filter(n => n.type.startsWith('MCA_')).map(n => [n.type, (n.widgets || []).map(w => w.name)]))""")
    assert "seed" in widgets["MCA_Sampler"] and "preset" in widgets["MCA_AttentionPatch"], widgets
    # the groups as the frontend holds them, and every node's box as the frontend sized it (title bar included)
    placed = page.evaluate("""() => ({
        groups: window.app.graph._groups.map(g => ({title: g.title, box: Array.from(g._bounding)})),
        nodes: window.app.graph._nodes.map(n => ({type: n.type, box: Array.from(n.boundingRect)}))})""")
    assert_laid_out_in_groups(placed["groups"], placed["nodes"])
    screenshot(page, task, placed, tmp_path)


def screenshot(page, task: str, placed: dict, tmp_path) -> None:
    """The whole graph fitted into the window, full detail; copied to docs/images with MCA_UPDATE_SCREENSHOTS=1."""
    boxes = [group["box"] for group in placed["groups"]] + [node["box"] for node in placed["nodes"]]
    left, top = min(b[0] for b in boxes), min(b[1] for b in boxes)
    width, height = max(b[0] + b[2] for b in boxes) - left, max(b[1] + b[3] for b in boxes) - top
    scale = min((VIEWPORT["width"] - 120) / width, (VIEWPORT["height"] - 2 * CANVAS_TOP) / height)
    page.evaluate("""([scale, x, y]) => { const canvas = window.app.canvas; canvas.min_font_size_for_lod = 0;
                    canvas.ds.scale = scale; canvas.ds.offset = [x, y];
                    window.app.graph.setDirtyCanvas(true, true); }""",
                  [scale, 80 / scale - left, (CANVAS_TOP + 10) / scale - top])
    page.wait_for_timeout(800)
    shot = tmp_path / f"{task}.png"
    page.screenshot(path=str(shot), clip={"x": 60, "y": CANVAS_TOP, "width": width * scale + 40,
                                          "height": height * scale + 40})
    assert shot.stat().st_size > 10_000
    if os.environ.get("MCA_UPDATE_SCREENSHOTS"):
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, SCREENSHOTS / shot.name)
    print(f"screenshot: {shot}")
