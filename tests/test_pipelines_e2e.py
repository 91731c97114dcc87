"""Generation, swap and add through ComfyUI's real executor on the full-size random SD1.5 checkpoint.

The random VAE barely depends on its input, so what MCA must do is asserted on latents: outside the edit
mask the target is the condition's clean latent, inside it the target differs from the same graph with a
patch that never fires, rows 0 and 1 end at their own clean inputs, and generation's edit region follows
the subject word. The shipped sweep workflow (example_workflows/api/mca_swap_sweep.json) makes its 4 targets in
one batch, each equal to the shipped swap workflow run alone with that cell's schedule.
"""
from __future__ import annotations

import json
import shutil
import time
from itertools import combinations

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import comfy_host
import random_models
from slm_models import write_models
from workflow_graphs import SIZE, SWEEP_CELLS, SWEEP_LABELS, mca_task, shipped_overrides, sweep_grid_size

pytestmark = pytest.mark.full
LATENT = SIZE // 8
WORKFLOWS = comfy_host.REPO / "example_workflows"
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


BAD_INPUTS = [  # (task, change, message, when: refused as the prompt is queued, or when it runs)
    ("swap", _vae_encoded_condition, "swap preset needs the condition image inverted: connect the condition LATENT "
                                     "from MCA DDIM Invert", "run"),
    ("add", _unpatched, "MCA Sampler needs the model from MCA Attention Patch", "run"),
    ("generation", _other_target_prompt, "target_text on MCA Attention Patch is not the text of the target_prompt",
     "run"),
    ("swap", _patch(sagi_start=0.5, sagi_end=0.2), "sagi_start (0.5) is after sagi_end (0.2)", "queued"),
    ("swap", _patch(salq_start=0.9, salq_end=0.5), "salq_start (0.9) is after salq_end (0.5)", "queued"),
    ("swap", _patch(sagi_end=-0.5), "sagi_end is a fraction (0..1, or -1 for the preset's value); got -0.5",
     "queued"),
    ("generation", _patch(token_indices="500"), "token_indices [500] are outside 1..8", "run"),
    ("generation", _patch(token_indices="-2, 3"), "token_indices [-2] are outside", "queued"),
    ("generation", _tiny_generation_latent, "needs at least 8x8 (64x64 px)", "run"),
    ("swap", _other_steps, "condition was inverted with 2 steps but the subject has 3", "run"),
    ("swap", lambda g: (g["patch"]["inputs"].pop("edit_mask"), g)[1], "swap preset needs an edit_mask", "run"),
    ("generation", _patch(subject_words="giraffe"), "'giraffe' does not occur", "run"),
]


def refusal(prompt: dict, executor) -> tuple[str, str]:
    """Where a bad prompt is refused (as it is queued, by validation, or when it runs) and the error."""
    try:
        ran, _ = comfy_host.execute_prompt(prompt, executor)
    except AssertionError as error:  # execute_prompt's "prompt did not validate", with ComfyUI's node errors
        return "queued", str(error)
    return "run", comfy_host.execution_error(ran) or ""


def test_bad_inputs_are_refused_clearly_and_the_next_run_succeeds(executor):
    for task, change, message, when in BAD_INPUTS:
        where, error = refusal(change(mca_task(task, random_models.RANDOM_CHECKPOINT)), executor)
        assert (where, message in error) == (when, True), f"{task} / {change}: expected '{message}' {when}, " \
                                                          f"got '{error}' {where}"
    run(executor, mca_task("swap", random_models.RANDOM_CHECKPOINT, seed=5))


# --- the shipped sweep workflow: one batch of 4 targets, each the single run of its cell -------------------------

@pytest.fixture(scope="module")
def shipped(executor, tmp_path_factory):
    """Loads a shipped API workflow for the executor: the random checkpoint, tiny SAM and Grounding DINO, the example
    images (in an input folder of their own, ComfyUI's restored afterwards), SIZE px and ``steps`` steps."""
    import folder_paths
    import run_workflow

    for name, path in write_models(tmp_path_factory.mktemp("e2e_slm")).items():
        folder_paths.add_model_folder_path(name, str(path))
    inputs = tmp_path_factory.mktemp("e2e_input")
    for image in (WORKFLOWS / "input").glob("*.png"):
        shutil.copy(image, inputs / image.name)
    previous = folder_paths.get_input_directory()
    folder_paths.set_input_directory(str(inputs))

    def load(name: str, steps: int) -> dict:
        prompt = json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())
        for target, value in shipped_overrides(random_models.RANDOM_CHECKPOINT).items():
            title, _, input_name = target.rpartition(".")
            run_workflow.set_input(prompt, title, input_name, value)
        for node in prompt.values():
            if node["class_type"] == "MCA_DDIMInvert":
                node["inputs"]["steps"] = steps
        return prompt

    yield load
    folder_paths.set_input_directory(previous)


def node_of(prompt: dict, class_type: str) -> str:
    """The id of the one node of ``class_type``."""
    [found] = [node_id for node_id, node in prompt.items() if node["class_type"] == class_type]
    return found


# 5 steps: the fewest at which the 4 cells all differ (SAGI in steps [0, floor(sagi_end * 5)): none at 0.1, step 0
# at 0.2; SALQ up to step 3 at salq_end 0.8, up to 4 at 1.0), at the shipped cfg 7.5.
SWEEP_STEPS = 5
# Batched vs single: the same computation in a batch of 6 rows instead of 3, so only float32 rounding differs
# (CPU kernels split a batch differently), amplified by 5 steps of random weights. Measured on this CPU: at most
# 5.9e-4 (targets up to 74 in magnitude); the closest two cells (salq_end 0.8 vs 1.0: SALQ in the last step or
# not) differ by 0.086, the others by 13.7. The bound is 8x the measured error and the cells must stay 4 bounds
# apart, so a target within it of one single run is that run's and no other cell's.
BATCH_TOLERANCE = 5e-3
CELL_GAP = 4 * BATCH_TOLERANCE


def test_shipped_sweep_is_its_cells_in_one_batch(executor, shipped):
    """mca_swap_sweep.json: 4 targets labelled with the 4 cells in order, all different, in a 2 x 2 grid; the two
    anti-diagonal cells (0, 1 and 1, 0: a transposed or shifted order would swap them) are the target of
    mca_swap.json run alone with that cell's values on the patch's widgets (the per-cell equality of every
    target is test_many_targets' job, on float64 models)."""
    import folder_paths

    started = time.perf_counter()
    sweep = shipped("mca_swap_sweep", SWEEP_STEPS)
    ran = run(executor, sweep)
    sampler = node_of(sweep, "MCA_Sampler")
    targets, rows = output(ran, sampler, 0)["samples"], output(ran, sampler, 1)["samples"]
    assert targets.shape == (4, 4, LATENT, LATENT) and torch.isfinite(targets).all()
    assert rows.shape == (6, 4, LATENT, LATENT) and torch.equal(rows[2:], targets)  # condition, subject, targets
    assert output(ran, sampler, 3).split("\n") == SWEEP_LABELS
    assert output(ran, sampler, 2).shape == (4, SIZE, SIZE)  # one edit mask per target
    width, height = sweep_grid_size(2)
    assert 2 * 256 < width < 3 * 256 and 2 * 256 < height < 3 * 256  # 2 tiles of 256 px across, 2 down
    assert output(ran, node_of(sweep, "MCA_Grid")).shape == (1, height, width, 3)
    [saved] = ran.history_result["outputs"][node_of(sweep, "SaveImage")]["images"]
    assert Image.open(f"{folder_paths.get_output_directory()}/{saved['subfolder']}/{saved['filename']}").size == (
        width, height)
    batched = time.perf_counter() - started
    # the schedules differ, so do the targets: every pair of cells, by at least CELL_GAP
    gaps = {(a, b): float((targets[a] - targets[b]).abs().max()) for a, b in combinations(range(4), 2)}
    singles = []
    for index, cell in ((1, SWEEP_CELLS[1]), (2, SWEEP_CELLS[2])):
        alone = shipped("mca_swap", SWEEP_STEPS)
        alone[node_of(alone, "MCA_AttentionPatch")]["inputs"].update(cell)
        single = output(run(executor, alone), node_of(alone, "MCA_Sampler"))["samples"]
        assert single.shape == (1, 4, LATENT, LATENT)
        singles.append(float((targets[index] - single[0]).abs().max()))
    print(f"sweep: batched run {batched:.1f} s, 2 single runs {time.perf_counter() - started - batched:.1f} s; "
          f"max |batched - single| per cell {['%.2e' % d for d in singles]}, max |cell a - cell b| "
          f"{ {pair: round(gap, 4) for pair, gap in gaps.items()} }, |target| max {float(targets.abs().max()):.2f}")
    assert min(gaps.values()) > CELL_GAP, gaps
    assert max(singles) < BATCH_TOLERANCE, singles
