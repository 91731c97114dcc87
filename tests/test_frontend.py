"""The UI workflows loaded into the real ComfyUI frontend in headless Chromium: no missing nodes, screenshots."""
from __future__ import annotations

import json
import os
import shutil

import pytest

import comfy_host
from test_example_workflows import TASKS, WORKFLOWS, server  # noqa: F401  (the module's server fixture)

pytestmark = pytest.mark.full

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = comfy_host.REPO / "docs" / "images"
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
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        context = browser.new_context(viewport={"width": 2100, "height": 1750})
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
    page.evaluate("""() => { const canvas = window.app.canvas; canvas.ds.scale = 0.65; canvas.ds.offset = [90, 170];
                            window.app.graph.setDirtyCanvas(true, true); }""")
    page.wait_for_timeout(500)
    shot = tmp_path / f"{task}.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    if os.environ.get("MCA_UPDATE_SCREENSHOTS"):
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, SCREENSHOTS / shot.name)
    print(f"screenshot: {shot}")
