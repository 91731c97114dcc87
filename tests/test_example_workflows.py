"""The shipped example workflows: up to date, UI and API agree, and each runs on a real server."""
from __future__ import annotations

import json
import shutil
import sys

import pytest
from PIL import Image

import comfy_host
import comfy_server
import random_models
from slm_models import write_models

pytestmark = pytest.mark.full

WORKFLOWS = comfy_host.REPO / "example_workflows"
TASKS = ["mca_generation", "mca_swap", "mca_add"]
sys.path.insert(0, str(comfy_host.REPO / "scripts"))


@pytest.fixture(scope="module")
def server(tmp_path_factory, random_checkpoint):
    """A real ComfyUI with the random SD1.5 checkpoint, tiny SAM / Grounding DINO and the example images."""
    root = tmp_path_factory.mktemp("workflow_server")
    slm = write_models(root / "slm_models")
    server = comfy_server.ComfyServer(root / "comfy", models={
        "checkpoints": [random_checkpoint], "sams": [slm["sams"] / "tiny_sam.pth"],
        "grounding-dino": [slm["grounding-dino"] / "tiny_dino.pth", slm["grounding-dino"] / "tiny_dino.json"]})
    for image in (WORKFLOWS / "input").glob("*.png"):
        shutil.copy(image, root / "comfy" / "input" / image.name)
    server.start()
    yield server
    server.stop()


def test_workflow_files_are_generated_from_their_single_source(server):
    import build_workflows

    files = build_workflows.render(server.get("/object_info"))
    assert len(files) == 2 * len(TASKS)
    for path, text in files.items():
        assert path.read_text() == text, f"{path.name} is stale: run scripts/build_workflows.py"


def ui_to_api(ui: dict, object_info: dict) -> dict:
    """An independent reading of the UI file: links and positional widget values back to API inputs."""
    from workflow_builder import input_specs, is_widget

    links = {link[0]: link for link in ui["links"]}
    prompt = {}
    for node in ui["nodes"]:
        if node["type"] == "Note":
            continue
        inputs = {}
        for socket in node["inputs"]:
            if socket["link"] is not None:
                _, source, slot, *_ = links[socket["link"]]
                inputs[socket["name"]] = [str(source), slot]
        values = iter(node["widgets_values"])
        for name, spec in input_specs(object_info[node["type"]]):
            if not is_widget(spec):
                continue
            value = next(values)
            if len(spec) > 1 and spec[1].get("control_after_generate"):
                next(values)
            if name not in inputs:
                inputs[name] = value
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


@pytest.mark.parametrize("task", TASKS)
def test_ui_and_api_files_agree(server, task):
    ui = json.loads((WORKFLOWS / f"{task}.json").read_text())
    api = json.loads((WORKFLOWS / "api" / f"{task}.json").read_text())
    assert ui["version"] == 0.4 and any(node["type"] == "Note" for node in ui["nodes"])
    for node in api.values():
        node.pop("_meta", None)
    assert ui_to_api(ui, server.get("/object_info")) == api


def test_workflows_use_the_model_names_users_have():
    text = "".join((WORKFLOWS / "api" / f"{task}.json").read_text() for task in TASKS)
    for name in ("v1-5-pruned-emaonly.safetensors", "sam_vit_h_4b8939.pth", "groundingdino_swint_ogc.pth"):
        assert name in text


@pytest.mark.parametrize("task", TASKS)
def test_api_workflow_runs_through_run_workflow(server, task, capsys):
    import run_workflow

    overrides = ["CheckpointLoaderSimple.ckpt_name=" + random_models.RANDOM_CHECKPOINT,
                 "MCA_SAMLoader.model_name=tiny_sam.pth", "MCA_GroundingDINOLoader.model_name=tiny_dino.pth",
                 "ImageScale.width=64", "ImageScale.height=64", "MCA_SLMMask.detection_size=64"]
    if task == "mca_generation":
        overrides += ["EmptyLatentImage.width=64", "EmptyLatentImage.height=64"]
    args = [str(WORKFLOWS / "api" / f"{task}.json"), "--url", server.url, "--steps", "5", "--seed", "3"]
    for item in overrides:
        args += ["--set", item]
    code = run_workflow.main(args)
    printed = capsys.readouterr()
    assert code == 0, printed.err + server.log()[-3000:]
    assert "step 5/5" in printed.out, "progress was not shown"
    names = [line.rsplit("/", 1)[-1] for line in printed.out.splitlines() if line.startswith("output image:")]
    assert len(names) == 1
    matches = list(server.output_dir.rglob(names[0]))
    assert matches and Image.open(matches[0]).size == (64, 64)


def test_run_workflow_prints_comfyui_errors_readably(server, capsys):
    import run_workflow

    code = run_workflow.main([str(WORKFLOWS / "api" / "mca_swap.json"), "--url", server.url,
                              "--set", "CheckpointLoaderSimple.ckpt_name=absent.safetensors"])
    assert code == 1
    err = capsys.readouterr().err
    assert "ComfyUI error" in err and "ckpt_name" in err and "absent.safetensors" in err
