"""The node help pages (``web/docs/<NodeId>.md``): one per node, naming every input and output of its node and only
workflow files that ship; and one page served as the frontend fetches it and rendered in the frontend's help panel
in headless Chromium (frontend 1.32.9: ``/extensions/<pack>/docs/<NodeId>/<locale>.md``, then
``/extensions/<pack>/docs/<NodeId>.md``, the pack being the folder under ``custom_nodes``)."""
from __future__ import annotations

import os
import re
import shutil

import pytest

import comfy_host
from mca_ctrl.nodes import NODE_CLASS_MAPPINGS

REPO = comfy_host.REPO
DOCS = REPO / "web" / "docs"
WORKFLOWS = REPO / "example_workflows"
SCREENSHOT = REPO / "docs" / "images" / "help_panel.png"
NODE_IDS = sorted(NODE_CLASS_MAPPINGS)
HELP_NODE = "MCA_AttentionPatch"
WORKFLOW_NAME = re.compile(r"[\w./-]+\.json")


def page_text(node_id: str) -> str:
    return (DOCS / f"{node_id}.md").read_text(encoding="utf-8")


def input_names(node) -> list[str]:
    """Every input a user sees (``INPUT_TYPES()``; a V3 node's hidden inputs are not the user's)."""
    groups = node.INPUT_TYPES()
    return [name for section in ("required", "optional") for name in groups.get(section, {})]


def output_names(node) -> list[str]:
    """The output names the frontend shows: RETURN_NAMES (a V3 node always has them), else the RETURN_TYPES."""
    return list(getattr(node, "RETURN_NAMES", None) or node.RETURN_TYPES)


def title(node_id: str) -> str:
    """The page's first line, ``# <title>``."""
    first = page_text(node_id).splitlines()[0]
    assert first.startswith("# "), f"{node_id}.md must open with a '# ' title, not {first!r}"
    return first[2:].strip()


def mentions(text: str, name: str) -> bool:
    return re.search(rf"(?<![\w]){re.escape(name)}(?![\w])", text) is not None


def test_every_node_has_a_page_and_every_page_a_node():
    assert NODE_IDS, "no nodes found"
    pages = {path.stem for path in DOCS.glob("*.md")}
    assert set(NODE_IDS) - pages == set(), "nodes without a help page"
    assert pages - set(NODE_IDS) == set(), "help pages of no node"


@pytest.mark.parametrize("node_id", NODE_IDS)
def test_the_page_names_every_input_and_output(node_id):
    node, text = NODE_CLASS_MAPPINGS[node_id], page_text(node_id)
    missing = [name for name in input_names(node) if not mentions(text, f"`{name}`")]
    assert not missing, f"web/docs/{node_id}.md does not document the input(s) {missing}"
    missing = [name for name in output_names(node) if not mentions(text, f"`{name}`")]
    assert not missing, f"web/docs/{node_id}.md does not document the output(s) {missing}"


@pytest.mark.parametrize("node_id", NODE_IDS)
def test_the_page_is_short_titled_and_names_only_shipped_workflows(node_id):
    text = page_text(node_id)
    assert len(text.splitlines()) <= 120, f"{node_id}.md is longer than 120 lines"
    assert title(node_id)
    for heading in ("## Inputs", "## Output", "## What it refuses", "## Wiring", "## Example workflows"):
        assert heading in text, f"{node_id}.md has no '{heading}' section"
    named = set(WORKFLOW_NAME.findall(text))
    assert named, f"{node_id}.md names no example workflow"
    for name in named:
        assert name.startswith("example_workflows/") and (REPO / name).is_file(), f"{node_id}.md names {name}"
    # links would be resolved under /extensions/<pack>/docs/ on the server, where the repository is not served
    assert not re.search(r"\]\((?!https?://)[^)]*\)", text), f"{node_id}.md links to a path the server does not serve"
    assert "../shared" not in text and "shared/" not in text


# --- the page in the real frontend ---------------------------------------------------------------------------------

def pack_id(python_module: str) -> str | None:
    """The frontend's ``extractCustomNodeName`` (1.32.9): ``custom_nodes.<pack>[@version]`` -> ``<pack>``."""
    parts = python_module.split(".")
    return parts[1].split("@")[0] if len(parts) >= 2 and parts[0] == "custom_nodes" else None


@pytest.fixture(scope="module")
def help_server(tmp_path_factory):
    """The real ComfyUI with the pack (no models: the help panel needs only the node definitions)."""
    import comfy_server

    server = comfy_server.ComfyServer(tmp_path_factory.mktemp("help_server")).start()
    yield server
    server.stop()


@pytest.mark.full
def test_the_server_serves_the_page_where_the_frontend_fetches_it(help_server):
    import requests

    info = help_server.get(f"/object_info/{HELP_NODE}")[HELP_NODE]
    pack = pack_id(info["python_module"])
    assert pack, f"{HELP_NODE} is not a custom node to the frontend: python_module {info['python_module']}"
    base = f"{help_server.url}/extensions/{pack}/docs/{HELP_NODE}"
    # as the frontend does: the locale's page first (none is written), then the page of every locale
    response = requests.get(f"{base}/en.md", timeout=10)
    if not response.ok:
        response = requests.get(f"{base}.md", timeout=10)
    assert response.ok, (f"{base}.md: {response.status_code}. The pack's __init__.py must set WEB_DIRECTORY = "
                         f'"./web" for ComfyUI to serve web/docs under /extensions/{pack}/')
    assert response.text == page_text(HELP_NODE)


def widen_the_panel(page, right: int = 720) -> None:
    """For the screenshot: the announcement banner closed, the side panel dragged wider (a user can do both)."""
    page.evaluate("""() => [...document.querySelectorAll('button')]
        .filter(b => b.querySelector('i[class*="lucide--x"]') && b.closest('.bg-gradient-to-r'))
        .forEach(b => b.click())""")
    gutters = [box for box in (g.bounding_box() for g in page.locator(".p-splitter-gutter").all())
               if box and box["width"] > 0 and box["height"] > 0]
    if gutters:
        box = gutters[0]
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        page.mouse.move(x, y)
        page.mouse.down()
        page.mouse.move(right, y, steps=10)
        page.mouse.up()
    page.wait_for_timeout(500)


@pytest.mark.full
def test_the_help_panel_renders_the_page(help_server, tmp_path):
    """Selects an MCA Attention Patch on the canvas and clicks the selection toolbox's info button, as a user does:
    the help page opens, rendered from the Markdown file (not the node's description, which the frontend shows when
    the file is missing). Frontend 1.32.9 opens it in the node library side bar, 1.47.10 in the Info tab of the
    right-side properties panel; both render it in ``.node-help-content``."""
    import requests

    from test_frontend import CHROMIUM, CHROMIUM_FLAGS

    if not os.path.exists(CHROMIUM):
        pytest.fail("Chromium is missing: run `apt-get install chromium` (make test's set-up does it as root)")
    from playwright.sync_api import sync_playwright

    for setting, value in {"Comfy.TutorialCompleted": True, "Comfy.Minimap.Visible": False,
                           "Comfy.Graph.CanvasInfo": False, "Comfy.Canvas.SelectionToolbox": True}.items():
        requests.post(f"{help_server.url}/settings/{setting}", json=value, timeout=10).raise_for_status()
    heading = title(HELP_NODE)
    sections = re.findall(r"^## (.+)$", page_text(HELP_NODE), flags=re.M)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        try:
            page = browser.new_context(viewport={"width": 1600, "height": 1000}, device_scale_factor=1).new_page()
            page.goto(help_server.url, wait_until="domcontentloaded", timeout=120_000)
            # Wait until the frontend listens to the canvas selection: the selection toolbox shows its buttons
            # (the info button among them) from the canvas store's selection, which LGraphCanvas.onSelectionChange
            # updates. Frontend 1.32.9 installs that hook as it sets window.app; 1.47.10 sets window.app first and
            # installs the hook only after loading the startup workflow (initializeWorkflow, the saved tabs), so a
            # node selected as soon as window.app exists gets a toolbox with only its "more options" button.
            page.wait_for_function("""() => window.app && window.app.graph && window.LiteGraph
                && typeof window.app.canvas?.onSelectionChange === 'function'""", timeout=120_000)
            page.evaluate("""(type) => {
                window.app.graph.clear();
                const node = window.LiteGraph.createNode(type);
                node.pos = [960, 220];  // right of the help panel once it is widened
                window.app.graph.add(node);
                window.app.canvas.ds.offset = [0, 0];
                window.app.canvas.ds.scale = 1;
                window.app.canvas.selectNode(node);
                window.app.canvas.setDirty(true, true);
            }""", HELP_NODE)
            info = page.locator("[data-testid=info-button]")
            info.first.wait_for(state="visible", timeout=30_000)
            info.first.click()
            content = page.locator(".node-help-content")
            content.first.wait_for(state="visible", timeout=30_000)
            page.wait_for_function("""([heading, section]) => {
                const element = document.querySelector('.node-help-content');
                return element && [...element.querySelectorAll('h1')].some(h => h.innerText.trim() === heading)
                    && [...element.querySelectorAll('h2')].some(h => h.innerText.trim() === section);
            }""", arg=[heading, sections[-1]], timeout=30_000)
            rendered = content.first.evaluate("""(element) => ({
                h1: [...element.querySelectorAll('h1')].map(h => h.innerText.trim()),
                h2: [...element.querySelectorAll('h2')].map(h => h.innerText.trim()),
                names: [...element.querySelectorAll('li code, td code')].map(c => c.innerText.trim()),
                diagrams: [...element.querySelectorAll('pre code')].map(c => c.innerText)})""")
            assert rendered["h1"] == [heading] and rendered["h2"] == sections, rendered
            node = NODE_CLASS_MAPPINGS[HELP_NODE]
            missing = set(input_names(node) + output_names(node)) - set(rendered["names"])
            assert not missing, f"the panel does not show the inputs / outputs {missing}"
            assert any("MCA Sampler" in code for code in rendered["diagrams"]), "the wiring diagram is no code block"
            widen_the_panel(page)
            page.mouse.move(5, 995)
            page.wait_for_timeout(500)
            shot = tmp_path / "help_panel.png"
            page.screenshot(path=str(shot))
            assert shot.stat().st_size > 10_000
        finally:
            browser.close()
    if os.environ.get("MCA_UPDATE_SCREENSHOTS"):
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, SCREENSHOT)
    print(f"screenshot: {shot}")
