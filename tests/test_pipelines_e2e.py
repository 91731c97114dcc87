"""Generation, swap and add through ComfyUI's real executor on the full-size random SD1.5 checkpoint.

The random VAE barely depends on its input, so what MCA must do is asserted on latents: outside the edit
mask the target is the condition's clean latent, inside it the target differs from the same graph with a
patch that never fires, rows 0 and 1 end at their own clean inputs, and generation's edit region follows
the subject word.
"""
from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import comfy_host
import random_models
from workflow_graphs import SIZE, mca_task

pytestmark = pytest.mark.full
LATENT = SIZE // 8
SILENT = {"sagi_start": 0.0, "sagi_end": 0.0, "salq_start": 0.0, "salq_end": 0.0}


@pytest.fixture(scope="module")
def executor(random_checkpoint, tmp_path_factory):
    import folder_paths

    folder_paths.add_model_folder_path("checkpoints", str(random_checkpoint.parent))
    folder_paths.set_output_directory(str(tmp_path_factory.mktemp("e2e_output")))
    return comfy_host.new_executor()


def run(executor, graph: dict):
    ran, _ = comfy_host.execute_prompt(graph, executor)
    assert comfy_host.execution_error(ran) is None, comfy_host.execution_error(ran)
    assert ran.success
    return ran


def output(ran, node: str, index: int = 0):
    return comfy_host.node_output(ran, node, index)


def latent_mask(mask: torch.Tensor) -> torch.Tensor:
    """A [1, H, W] MASK at latent size, nearest, as booleans [h, w] (written here, not the pack's resize)."""
    return F.interpolate(mask[None].float(), size=(LATENT, LATENT), mode="nearest")[0, 0] > 0.5


def silent(graph: dict) -> dict:
    graph["patch"]["inputs"].update(SILENT)
    return graph


@pytest.mark.parametrize("task", ["generation", "swap", "add"])
def test_task_runs_end_to_end(executor, task):
    import folder_paths

    started = time.perf_counter()
    ran = run(executor, mca_task(task, random_models.RANDOM_CHECKPOINT))
    print(f"{task}: {time.perf_counter() - started:.1f} s through the executor")
    target = output(ran, "sampler", 0)["samples"]
    rows = output(ran, "sampler", 1)["samples"]
    assert target.shape == (1, 4, LATENT, LATENT) and rows.shape == (3, 4, LATENT, LATENT)
    assert torch.isfinite(rows).all() and torch.equal(rows[2:3], target)
    image = output(ran, "decode", 0)
    assert image.shape == (1, SIZE, SIZE, 3) and torch.isfinite(image).all()
    saved = ran.history_result["outputs"]["save"]["images"][0]
    path = f"{folder_paths.get_output_directory()}/{saved['subfolder']}/{saved['filename']}"
    assert Image.open(path).size == (SIZE, SIZE)


@pytest.mark.parametrize("task", ["swap", "add"])
def test_swap_and_add_do_what_mca_must(executor, task):
    assert_edit_does_what_mca_must(executor, task, random_models.RANDOM_CHECKPOINT)


def assert_edit_does_what_mca_must(executor, task: str, checkpoint: str, steps: int = 3):
    """Swap/add on ``checkpoint``: local blend outside the edit mask, rows 0/1 replayed, MCA changes the inside.
    Returns the executor after the MCA run."""
    ran = run(executor, mca_task(task, checkpoint, steps))
    rows = output(ran, "sampler", 1)["samples"]
    target = rows[2]
    condition_clean = output(ran, "condition_latent")["samples"][0]
    subject_clean = output(ran, "subject_latent")["samples"][0]
    inside = latent_mask(output(ran, "edit_mask"))
    assert 0 < int(inside.sum()) < inside.numel()
    # outside the edit mask: exactly the condition image (local blend ends on its clean latent)
    torch.testing.assert_close(target[:, ~inside], condition_clean[:, ~inside], atol=1e-4, rtol=1e-4)
    # rows 0 and 1 replay their own inversions and end at their own clean inputs
    torch.testing.assert_close(rows[0], condition_clean, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(rows[1], subject_clean, atol=1e-4, rtol=1e-4)
    # inside: MCA attention changed the target, compared with the same graph whose patch never fires
    plain = output(run(executor, silent(mca_task(task, checkpoint, steps))), "sampler", 1)["samples"][2]
    assert (target[:, inside] - plain[:, inside]).abs().max() > 1e-3
    torch.testing.assert_close(plain[:, ~inside], condition_clean[:, ~inside], atol=1e-4, rtol=1e-4)
    # the edit mask output is the patch's own mask
    assert torch.equal(output(ran, "sampler", 2), output(ran, "edit_mask"))
    return ran


def test_generation_takes_its_edit_region_from_the_subject_word(executor):
    def generation(word: str, **patch_inputs):
        graph = mca_task("generation", random_models.RANDOM_CHECKPOINT)
        graph["patch"]["inputs"].update(subject_words=word, **patch_inputs)
        ran = run(executor, graph)
        return output(ran, "sampler", 1)["samples"], output(ran, "sampler", 2)

    rows, fox_region = generation("fox")
    _, sofa_region = generation("sofa")
    assert fox_region.shape == (1, SIZE, SIZE) and 0 < float(fox_region.mean()) < 1
    assert (fox_region - sofa_region).abs().max() > 0.1, "another word must move the edit region"
    plain, plain_region = generation("fox", **SILENT)
    assert (rows[2] - plain[2]).abs().max() > 1e-3, "MCA attention must change the target"
    torch.testing.assert_close(rows[0], plain[0], atol=1e-5, rtol=1e-5)  # the condition row is never touched


# --- bad inputs: each gets a message that says what to change, and the next valid run still works ----------

def _vae_encoded_condition(graph: dict) -> dict:
    graph["sampler"]["inputs"]["condition"] = ["condition_latent", 0]
    return graph


def _unpatched(graph: dict) -> dict:
    graph["sampler"]["inputs"]["model"] = ["ckpt", 0]
    return graph


def _patch(**inputs):
    def change(graph: dict) -> dict:
        graph["patch"]["inputs"].update(inputs)
        return graph
    return change


def _other_target_prompt(graph: dict) -> dict:
    graph["target_prompt"]["inputs"]["text"] = "a photo of a dog on a sofa"
    return graph


def _tiny_generation_latent(graph: dict) -> dict:
    graph["condition_empty"]["inputs"].update(width=16, height=16)
    return graph


def _other_steps(graph: dict) -> dict:
    graph["condition_inverted"]["inputs"]["steps"] = 2
    return graph


BAD_INPUTS = [
    ("swap", _vae_encoded_condition, "swap preset needs the condition image inverted: connect the condition LATENT "
                                     "from MCA DDIM Invert"),
    ("add", _unpatched, "MCA Sampler needs the model from MCA Attention Patch"),
    ("generation", _other_target_prompt, "target_text on MCA Attention Patch is not the text of the target_prompt"),
    ("swap", _patch(sagi_start=0.5, sagi_end=0.2), "sagi_start (0.5) is after sagi_end (0.2)"),
    ("swap", _patch(salq_start=0.9, salq_end=0.5), "salq_start (0.9) is after salq_end (0.5)"),
    ("swap", _patch(sagi_end=-0.5), "sagi_end = -0.5: use a value in 0..1, or exactly -1"),
    ("generation", _patch(token_indices="500"), "token_indices [500] are outside 1..8"),
    ("generation", _patch(token_indices="-2, 3"), "token_indices [-2] are outside"),
    ("generation", _tiny_generation_latent, "needs at least 8x8 (64x64 px)"),
    ("swap", _other_steps, "condition was inverted with 2 steps but the subject has 3"),
    ("swap", lambda g: (g["patch"]["inputs"].pop("edit_mask"), g)[1], "swap preset needs an edit_mask"),
    ("generation", _patch(subject_words="giraffe"), "'giraffe' does not occur"),
]


def test_bad_inputs_are_refused_clearly_and_the_next_run_succeeds(executor):
    for task, change, message in BAD_INPUTS:
        ran, _ = comfy_host.execute_prompt(change(mca_task(task, random_models.RANDOM_CHECKPOINT)), executor)
        error = comfy_host.execution_error(ran) or ""
        assert message in error, f"{task} / {change}: expected '{message}', got '{error}'"
    run(executor, mca_task("swap", random_models.RANDOM_CHECKPOINT, seed=5))
