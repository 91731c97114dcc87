"""The nodes on ComfyUI's V3 schema: registered through comfy_entrypoint on the pinned API, the interface the
shipped workflows were saved with, refusals at queue time, old API workflows, what runs shown on the node."""
from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import pytest
import requests
import torch

import random_models
from random_models import square_mask, tiny_prompt
from test_example_workflows import WORKFLOWS, server  # noqa: F401  (server: fixture)
from test_inputs_round2 import ProgressTextRecorder
from workflow_graphs import shipped_overrides

from mca_ctrl.nodes import NODE_CLASS_MAPPINGS, NODES, old_inputs

DATA = Path(__file__).parent / "data"
SUBJECT_MASK, EDIT_MASK = square_mask(64, 16, 48), square_mask(64, 8, 40)
# The V1 interface of every node as the shipped workflows were saved with it (before the move to V3): types,
# widget options, order, outputs, tooltips, descriptions, display names.
FOLDER_LISTS = {"model_name"}
INTERFACE = json.loads((DATA / "node_interface.json").read_text(encoding="utf-8"))


def test_the_pack_registers_v3_nodes_through_comfy_entrypoint(pack):
    from comfy_api.v0_0_2 import io

    assert hasattr(pack, "comfy_entrypoint") and not hasattr(pack, "NODE_CLASS_MAPPINGS"), \
        "ComfyUI takes NODE_CLASS_MAPPINGS first: the V3 entry point would not be used"
    assert all(issubclass(node, io.ComfyNode) for node in NODES)
    import nodes

    assert all(nodes.NODE_CLASS_MAPPINGS[node_id] is cls for node_id, cls in NODE_CLASS_MAPPINGS.items())
    assert pack.WEB_DIRECTORY == "./web"


@pytest.mark.parametrize("node_id", sorted(INTERFACE))
def test_each_node_keeps_the_interface_the_workflows_were_saved_with(node_id):
    import nodes

    before, node = INTERFACE[node_id], NODE_CLASS_MAPPINGS[node_id]
    assert nodes.NODE_DISPLAY_NAME_MAPPINGS[node_id] == before["display"]
    assert (node.DESCRIPTION, node.CATEGORY) == (before["description"], before["category"])
    assert list(node.RETURN_TYPES) == before["return_types"]
    assert list(node.RETURN_NAMES or node.RETURN_TYPES) == before["return_names"]
    assert list(node.OUTPUT_TOOLTIPS) == before["output_tooltips"]
    declared = node.INPUT_TYPES()
    for section in ("required", "optional"):
        saved, now = before["input"].get(section, {}), declared.get(section, {})
        assert list(now) == list(saved), (section, "the widget order is what a saved workflow's values follow")
        for name, (kind, *options) in saved.items():
            now_kind, now_options = now[name]
            if name in FOLDER_LISTS:  # the files in a model folder, as the folder holds them now
                assert now_kind == "COMBO", name
            elif isinstance(kind, list):  # a V1 list is a V3 COMBO with the same options
                assert (now_kind, now_options["options"]) == ("COMBO", kind), name
            else:
                assert now_kind == kind, name
            for key, value in (options[0] if options else {}).items():
                assert now_options.get(key) == value, (name, key)


def queue(server, prompt: dict) -> requests.Response:  # noqa: F811
    return requests.post(server.url + "/prompt", json={"prompt": prompt}, timeout=30)


def shipped(task: str) -> dict:
    return json.loads((WORKFLOWS / "api" / f"{task}.json").read_text(encoding="utf-8"))


def node_of(prompt: dict, kind: str) -> str:
    return next(key for key, node in prompt.items() if node["class_type"] == kind)


@pytest.mark.parametrize("task, kind, inputs, said", [
    ("mca_swap", "MCA_AttentionPatch", {"sagi_end": 1.5}, "sagi_end is a fraction (0..1, or -1"),
    ("mca_swap", "MCA_AttentionPatch", {"salq_start": -0.5}, "salq_start is a fraction"),
    ("mca_swap", "MCA_AttentionPatch", {"salq_first_site": -3}, "salq_first_site is a site index"),
    ("mca_swap", "MCA_AttentionPatch", {"salq_start": 0.9, "salq_end": 0.5}, "salq_start (0.9) is after salq_end"),
    ("mca_generation", "MCA_AttentionPatch", {"token_indices": "2, dog"}, "token_indices must be whole numbers"),
    ("mca_generation", "MCA_AttentionPatch", {"token_indices": "0"}, "outside 1.."),
    ("mca_swap_sweep", "MCA_ScheduleSweep", {"values": "0.8, abc"}, "'abc' in '0.8, abc' is not one"),
    ("mca_swap_sweep", "MCA_ScheduleSweep", {"setting": "steps"}, "is not one of sagi_start"),
])
def test_settings_that_need_no_model_are_refused_when_queued(server, task, kind, inputs, said):  # noqa: F811
    """The UI marks the node before any model loads (ComfyUI's node_errors), naming the node and the value."""
    prompt = shipped(task)
    key = node_of(prompt, kind)
    prompt[key]["inputs"].update(inputs)
    response = queue(server, prompt)
    assert response.status_code == 400, response.text
    errors = response.json()["node_errors"][key]["errors"]
    assert any(said in error["details"] for error in errors), errors
    assert all(error["type"] == "custom_validation_failed" for error in errors)


def test_an_empty_target_prompt_list_is_refused_when_queued(server):  # noqa: F811
    prompt = shipped("mca_swap")
    prompt["prompts"] = {"class_type": "MCA_TargetPrompts",
                         "inputs": {"clip": prompt[node_of(prompt, "MCA_Sampler")]["inputs"]["target_prompt"],
                                    "text": " \n \n"}}
    prompt[node_of(prompt, "MCA_Sampler")]["inputs"]["target_prompt"] = ["prompts", 0]
    prompt["prompts"]["inputs"]["clip"] = [node_of(prompt, "CheckpointLoaderSimple"), 1]
    response = queue(server, prompt)
    assert response.status_code == 400, response.text
    assert "has no prompt (0 targets)" in json.dumps(response.json()["node_errors"]["prompts"])


def test_valid_settings_pass_queue_validation():
    patch, sweep = NODE_CLASS_MAPPINGS["MCA_AttentionPatch"], NODE_CLASS_MAPPINGS["MCA_ScheduleSweep"]
    assert patch.validate_inputs(sagi_start=-1.0, sagi_end=0.1, salq_start=0.0, salq_end=1.0, salq_sites=0.5,
                                 salq_first_site=9, token_indices="2, 3") is True
    assert patch.validate_inputs() is True, "linked inputs arrive as None and are checked at run time"
    assert patch.validate_inputs(salq_start=-1.0, salq_end=0.05) is True, "the preset's start is the family's"
    assert patch.validate_inputs(token_indices="300") is True, "the prompt's length is known only at run time"
    assert sweep.validate_inputs("sagi_end", "0.05, 0.1") is True


def test_old_input_names_are_read_as_todays():
    prompt = {"1": {"class_type": "MCA_AttentionPatch", "inputs": {"salq_first_layer": 9, "sagi_end": 0.1}},
              "2": {"class_type": "MCA_AttentionPatch", "inputs": {"salq_layers": 0.5, "salq_first_site": -1}},
              "3": {"class_type": "MCA_AttentionPatch", "inputs": {"salq_sites": 0.25, "salq_first_site": -1}},
              "4": {"class_type": "MCA_SAMLoader", "inputs": {"model_name": "sam.pth"}},
              "5": {"class_type": "KSampler", "inputs": {"salq_layers": 1}}}
    today = copy.deepcopy(prompt["3"])
    changed = old_inputs.read_old_inputs(prompt)
    assert prompt["1"]["inputs"] == {"salq_first_site": 9, "sagi_end": 0.1, "salq_sites": -1.0}
    assert prompt["2"]["inputs"] == {"salq_sites": 0.5, "salq_first_site": -1}
    assert prompt["3"] == today and prompt["5"]["inputs"] == {"salq_layers": 1}, "today's and other packs' nodes"
    assert prompt["4"]["inputs"]["device"] == "auto"
    assert len(changed) == 4 and "node 2 (MCA_AttentionPatch): salq_layers read as salq_sites" in changed


@pytest.mark.parametrize("saved, site", [("mca_swap_salq_layers", 8), ("mca_swap_salq_first_layer", 11)])
def test_an_api_workflow_saved_before_a_rename_runs(server, saved, site, tmp_path, capsys):  # noqa: F811
    """Saved with salq_layers = 0.5 (site 8 of 16) or salq_first_layer = 11: it runs, with that site."""
    import run_workflow

    args = [str(DATA / "old_workflows" / f"{saved}.json"), "--url", server.url, "--steps", "3", "--out",
            str(tmp_path)]
    for target, value in shipped_overrides(random_models.RANDOM_CHECKPOINT).items():
        args += ["--set", f"{target}={value}"]
    assert run_workflow.main(args) == 0, capsys.readouterr().err + server.log()[-3000:]
    log = server.log()
    assert "an older workflow" in log and f"SALQ from site {site}" in log.split("an older workflow")[-1], log[-3000:]


def test_the_schedule_and_the_pass_split_reach_the_node(pack, monkeypatch):
    """The run's step ranges per cell and the pass split, in one progress text on the MCA Sampler node."""
    import server as comfy_server_module
    from comfy_execution.utils import CurrentNodeContext

    from mca_ctrl.mca_attention import engine, invert

    recorder = ProgressTextRecorder()
    monkeypatch.setattr(comfy_server_module.PromptServer, "instance", recorder, raising=False)
    model = random_models.tiny_sd15_model(seed=0)
    sigmas = invert.schedule_sigmas(model, 4, None)
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    inverted = invert.invert_latent(model, latent, tiny_prompt(0), tiny_prompt(0), 1.0, sigmas)
    sweep = NODE_CLASS_MAPPINGS["MCA_ScheduleSweep"].execute("sagi_end", "0.25, 0.5")[0]
    with CurrentNodeContext("prompt", "7"):
        (mca,) = NODE_CLASS_MAPPINGS["MCA_AttentionPatch"].execute(model, SUBJECT_MASK, "swap", -1, -1, -1, -1, -1,
                                                                   -1, edit_mask=EDIT_MASK, sweep=sweep)
    with CurrentNodeContext("prompt", "8"):
        NODE_CLASS_MAPPINGS["MCA_Sampler"].execute(mca, tiny_prompt(1), tiny_prompt(2), tiny_prompt(3),
                                                   tiny_prompt(9), inverted, inverted, 0, 5.0, True,
                                                   targets_per_pass=1)
    assert recorder.texts[0][0] == "7" and "Stable Diffusion 1.x model, 16 self-attention sites, swap preset, 2 schedule cells" \
        in recorder.texts[0][1]
    node, text = recorder.texts[-1]
    lines = text.split("\n")
    assert node == "8" and lines[:2] == [
        "MCA on Stable Diffusion 1.x [sagi_end=0.25], 4 steps x 16 sites: SAGI: steps 0-0 (1 of 4) at sites 0-15; SALQ: steps 1-3 "
        "(3 of 4) at sites 9-15",
        "MCA on Stable Diffusion 1.x [sagi_end=0.5], 4 steps x 16 sites: SAGI: steps 0-1 (2 of 4) at sites 0-15; SALQ: steps 2-3 "
        "(2 of 4) at sites 9-15"], text
    assert "2 targets in 2 passes of at most 1" in text and "seed 0 changes nothing" in text
    monkeypatch.setattr(engine, "UI_CELLS", 1)  # more cells than the node shows: the rest are counted
    with CurrentNodeContext("prompt", "8"):
        NODE_CLASS_MAPPINGS["MCA_Sampler"].execute(mca, tiny_prompt(1), tiny_prompt(2), tiny_prompt(3),
                                                   tiny_prompt(9), inverted, inverted, 0, 5.0, True)
    lines = recorder.texts[-1][1].split("\n")
    assert lines[0].startswith("MCA on Stable Diffusion 1.x [sagi_end=0.25]") and lines[1] == \
        "MCA on ... 1 more cell: every table is in the log" and "2 targets in one pass" in lines[-1], lines


def test_slm_mask_reports_progress_per_image_and_honours_cancel(pack, monkeypatch):
    """A drawn region for 3 images: the progress bar moves once per image; a Cancel stops it at the next image."""
    import comfy.model_management
    import comfy.utils

    node = NODE_CLASS_MAPPINGS["MCA_SLMMask"]
    images = torch.rand(3, 16, 16, 3)
    region = torch.zeros(1, 16, 16)
    region[:, 4:10, 4:10] = 1
    seen = []
    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK", lambda value, total, preview, node_id=None:
                        seen.append((value, total)))
    mask, objects, preview = node.execute(None, None, images, "x", 0.3, 0.25, 0, "error", region=region)
    assert mask.shape == (3, 16, 16) and torch.equal(mask[2], region[0])
    # one update per image; newer ComfyUI sends the first and the last at once and throttles those between
    assert seen[0] == (1, 3) and seen[-1] == (3, 3) and seen == sorted(set(seen)) and len(seen) >= 2
    comfy.model_management.interrupt_current_processing(True)
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            node.execute(None, None, images, "x", 0.3, 0.25, 0, "error", region=region)
    finally:
        comfy.model_management.interrupt_current_processing(False)
    logging.getLogger(__name__).info("SLM progress %s", seen)
