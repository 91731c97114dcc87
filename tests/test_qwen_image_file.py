"""The user's Qwen-Image path at full width: a random Qwen-Image file loaded by ComfyUI's own Load Diffusion Model.

The text encoder is not part of it (Qwen2.5-VL-7B cannot run on this machine next to the model): the prompts are
random tensors of its real width (3584), of four lengths, as Qwen2.5-VL gives them (it pads nothing).
"""
from __future__ import annotations

import pytest
import torch

import random_models
from mca_ctrl.mca_attention.adapters import model_adapter
from mca_ctrl.mca_attention.schedule import Op
from mca_ctrl.nodes import sampler
from random_models import qwen_prompt
from user_path import EDIT_MASK, preset_swap

LATENT = (1, 16, 1, 8, 8)


@pytest.fixture(scope="module")
def qwen_image(pack):
    """Load Diffusion Model on the cached random file, as a user's graph runs it."""
    return random_models.load_diffusion_model(random_models.random_qwen_image_file())


def test_load_diffusion_model_detects_the_random_file_as_qwen_image(qwen_image):
    import comfy.model_sampling

    assert type(qwen_image.model.model_config).__name__ == "QwenImage"
    assert isinstance(qwen_image.get_model_object("model_sampling"), comfy.model_sampling.CONST)
    adapter = model_adapter(qwen_image)
    assert adapter.family == "Qwen-Image" and [site.key for site in adapter.sites] == [("double", 0)]
    assert adapter.text_width() == random_models.QWEN_CONTEXT_DIM and adapter.LATENT.dims == 5


def test_swap_through_the_nodes_on_the_full_width_model(qwen_image):
    """The patch node with the preset, real CFG (4, the template's), prompts of four lengths: SAGI then SALQ run,
    and the target keeps the condition outside the edit mask."""
    patched, state, subject, condition, clean = preset_swap(qwen_image, LATENT, qwen_prompt(0, 5))
    target, rows, *_ = sampler.MCASampler.execute(patched, qwen_prompt(1, 9), qwen_prompt(2, 7), qwen_prompt(3, 11),
                                                   qwen_prompt(9, 4), subject, condition, 0, 4.0, True)
    assert torch.isfinite(rows["samples"]).all() and target["samples"].shape == LATENT
    assert {op for *_, (op,), _ in state.trace} == {Op.SAGI, Op.SALQ}, "3 steps: SAGI at step 0, SALQ after"
    outside = torch.nn.functional.interpolate(EDIT_MASK[None], size=LATENT[-2:], mode="nearest")[0, 0] <= 0.5
    torch.testing.assert_close(target["samples"][0, :, 0][:, outside], clean[0, :, 0][:, outside], atol=1e-2,
                               rtol=1e-2)
