"""Generation, swap and add through ComfyUI's real executor on the full-size random SD1.5 checkpoint."""
from __future__ import annotations

import time

import pytest
import torch
from PIL import Image

import mca_testbed
from workflow_graphs import SIZE, mca_task

pytestmark = pytest.mark.full


@pytest.fixture(scope="module")
def executor(random_checkpoint, tmp_path_factory):
    import folder_paths

    folder_paths.add_model_folder_path("checkpoints", str(random_checkpoint.parent))
    folder_paths.set_output_directory(str(tmp_path_factory.mktemp("e2e_output")))
    return mca_testbed.new_executor()


@pytest.mark.parametrize("task", ["generation", "swap", "add"])
def test_task_runs_end_to_end(executor, task):
    import folder_paths

    started = time.perf_counter()
    ran, server = mca_testbed.execute_prompt(mca_task(task, mca_testbed.RANDOM_CHECKPOINT), executor)
    elapsed = time.perf_counter() - started
    assert mca_testbed.execution_error(ran) is None, mca_testbed.execution_error(ran)
    assert ran.success
    print(f"{task}: {elapsed:.1f} s through the executor")
    target = mca_testbed.node_output(ran, "sampler", 0)["samples"]
    rows = mca_testbed.node_output(ran, "sampler", 1)["samples"]
    assert target.shape == (1, 4, SIZE // 8, SIZE // 8) and rows.shape == (3, 4, SIZE // 8, SIZE // 8)
    assert torch.isfinite(rows).all()
    image = mca_testbed.node_output(ran, "decode", 0)
    assert image.shape == (1, SIZE, SIZE, 3) and torch.isfinite(image).all()
    saved = ran.history_result["outputs"]["save"]["images"][0]
    path = f"{folder_paths.get_output_directory()}/{saved['subfolder']}/{saved['filename']}"
    assert Image.open(path).size == (SIZE, SIZE)


def test_step_mismatch_is_reported_by_the_executor(executor):
    graph = mca_task("swap", mca_testbed.RANDOM_CHECKPOINT)
    graph["sampler"]["inputs"]["steps"] = 4
    ran, server = mca_testbed.execute_prompt(graph, executor)
    message = mca_testbed.execution_error(ran)
    assert message and "inverted with 5 steps but the sampler uses 4" in message


def test_swap_without_edit_mask_is_refused_clearly(executor):
    graph = mca_task("swap", mca_testbed.RANDOM_CHECKPOINT)
    del graph["patch"]["inputs"]["edit_mask"]
    ran, _ = mca_testbed.execute_prompt(graph, executor)
    assert "swap preset needs an edit_mask" in (mca_testbed.execution_error(ran) or "")


def test_generation_subject_word_must_occur_in_the_target_text(executor):
    graph = mca_task("generation", mca_testbed.RANDOM_CHECKPOINT)
    graph["patch"]["inputs"]["subject_words"] = "giraffe"
    ran, _ = mca_testbed.execute_prompt(graph, executor)
    assert "'giraffe' does not occur" in (mca_testbed.execution_error(ran) or "")
