"""The template browser's thumbnails: every example workflow has its .jpg beside it (the frontend's card picture),
drawn by scripts/build_thumbnails.py from the workflow and up to date; the real frontend lists the pack's templates
with them."""
from __future__ import annotations

import io
import json
import os
import shutil

import pytest
from PIL import Image

import build_thumbnails
import comfy_host
from test_example_workflows import TASKS, WORKFLOWS, server  # noqa: F401  (server: fixture)
from test_frontend import browser, page  # noqa: F401  (fixtures: the frontend with the test's settings)

SCREENSHOT = comfy_host.REPO / "docs" / "images" / "template_browser.png"
PACK = comfy_host.PACK_LINK.name  # the custom_nodes folder: the frontend's name for the pack's templates
# What each thumbnail must say, from the workflow's file name: its family label and the patch's preset.
FAMILIES = {"": "SD1.5", "_sdxl": "SDXL", "_flux": "Flux.1", "_flux2": "Flux.2", "_qwen_image": "Qwen-Image",
            "_z_image": "Z-Image", "_sweep": "SD1.5"}


def test_every_workflow_has_its_thumbnail():
    """Each example_workflows/*.json (the template browser lists every one: ComfyUI globs them) is a UI workflow
    with its API twin and a same-name JPEG of the expected size, under the size limit; no thumbnail without one."""
    listed = sorted(path.stem for path in WORKFLOWS.glob("*.json"))
    assert listed == sorted(TASKS), "example_workflows/ holds a .json that is no example workflow"
    for name in listed:
        assert "nodes" in json.loads((WORKFLOWS / f"{name}.json").read_text()), f"{name}.json is no UI workflow"
        assert (WORKFLOWS / "api" / f"{name}.json").exists()
        jpg = WORKFLOWS / f"{name}.jpg"
        assert jpg.exists(), f"{jpg.name} is missing: run scripts/build_thumbnails.py"
        data = jpg.read_bytes()
        assert len(data) < build_thumbnails.MAX_BYTES, f"{jpg.name} is {len(data)} bytes"
        with Image.open(io.BytesIO(data)) as image:
            assert image.format == "JPEG" and image.size == build_thumbnails.SIZE and image.mode == "RGB"
            image.load()
    assert sorted(path.stem for path in WORKFLOWS.glob("*.jpg")) == listed, "a thumbnail without its workflow"


def test_thumbnails_are_what_the_script_draws():
    """The shipped thumbnails are current: redrawn from the workflows they match (scripts/build_workflows.py and
    scripts/build_thumbnails.py write them)."""
    assert build_thumbnails.stale() == [], "run scripts/build_thumbnails.py"


@pytest.mark.parametrize("task", TASKS)
def test_thumbnail_says_the_family_and_task(task):
    """The labels a thumbnail draws, read from the API file, match what the workflow is (its file name): the
    family, the task, the images it loads, a sweep only in the sweep graph, a box mask only in the add graph."""
    plan = build_thumbnails.recipe(json.loads((WORKFLOWS / "api" / f"{task}.json").read_text()))
    _, kind, *rest = task.split("_", 2)
    assert plan.family == FAMILIES["_" + rest[0] if rest else ""]
    assert plan.task == kind
    assert plan.subject_image == "mca_example_cat.png" and plan.subject_phrase == "the cat"
    assert bool(plan.sweep) == (task == "mca_swap_sweep")
    assert (plan.edit_box is not None) == (kind == "add") and (plan.edit_phrase is not None) == (kind == "swap")
    assert (plan.condition_image is None) == (kind == "generation")
    for image in (plan.subject_image, plan.condition_image):
        assert image is None or (build_thumbnails.INPUTS / image).exists()


@pytest.mark.full
def test_template_browser_shows_the_pack_templates_with_thumbnails(page, tmp_path):  # noqa: F811
    """The frontend's template browser (Templates, then the pack under Extensions) lists every example workflow,
    titled by its file name (the frontend has no other title for a custom pack's template: 1.32.9 and 1.47.10),
    each card's picture the workflow's .jpg as served by ComfyUI, loaded."""
    served = {}
    page.on("response", lambda response: served.__setitem__(response.url.rsplit("/", 1)[-1], response.status)
            if f"/workflow_templates/{PACK}/" in response.url else None)
    page.evaluate("() => window.app.extensionManager.command.execute('Comfy.BrowseTemplates')")
    page.get_by_text(PACK, exact=True).first.click()
    page.wait_for_function("(count) => document.querySelectorAll('[role=dialog] h3').length >= count", arg=len(TASKS),
                           timeout=30_000)
    cards = []
    for task in TASKS:  # one card at a time in view: the frontend loads a picture as its card scrolls in
        card = page.evaluate("""(name) => {
            const title = [...document.querySelectorAll('[role=dialog] h3')].find(h => h.innerText.trim() === name);
            if (!title) return null;
            title.scrollIntoView({block: 'center'});  // the card renders its picture once in view
            return {title: title.innerText.trim(), description: title.nextElementSibling?.innerText.trim()};
        }""", task)
        assert card, f"the template browser lists no {task}"
        card["image"] = page.wait_for_function("""(name) => {
            const title = [...document.querySelectorAll('[role=dialog] h3')].find(h => h.innerText.trim() === name);
            // the card: the widest element around the title that holds no other title (so never a neighbour's image)
            let card = title;
            while (card.parentElement && card.parentElement.querySelectorAll('h3').length === 1) card = card.parentElement;
            // its picture once loaded (the frontend adds the <img> when the card is in view, a skeleton before)
            const images = [...card.querySelectorAll('img')];
            if (images.some(i => i.src.includes('default-template'))) return 'the placeholder: the picture failed';
            const image = images[0];
            return image && image.complete && image.naturalWidth > 0 ? [image.naturalWidth, image.naturalHeight] : null;
        }""", arg=task, timeout=30_000).json_value()
        cards.append(card)
    print(cards)
    for task, card in zip(TASKS, cards):
        assert card["image"] == list(build_thumbnails.SIZE), f"{task}: the card shows {card['image']}"
        assert card["description"] == task.replace("_", " "), card  # the frontend's description: the name again
        assert served.get(f"{task}.jpg") == 200, f"{task}.jpg was not served: {served}"
    shown = page.evaluate("""() => [...document.querySelectorAll('[role=dialog] h3')].map(h => h.innerText.trim())""")
    assert set(TASKS) <= set(shown)
    page.evaluate("() => document.querySelector('[role=dialog] h3').scrollIntoView({block: 'end'})")
    page.mouse.move(5, 5)
    page.wait_for_timeout(800)
    shot = tmp_path / "template_browser.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    if os.environ.get("MCA_UPDATE_SCREENSHOTS"):
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, SCREENSHOT)
    print(f"screenshot: {shot}")
    page.keyboard.press("Escape")
