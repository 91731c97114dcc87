"""The user's Flux path at full width: a random Flux.1 dev file loaded by ComfyUI's own Load Diffusion Model node.

Text encoders are not part of it: a real-architecture T5-XXL (4.7 B parameters) cannot run on this machine's
2 cores and 24 GiB next to the model, so the prompts are random tensors of Flux's real widths (T5 4096,
CLIP-L pooled 768) and the Flux graphs' text side is checked by the frontend and workflow-file tests.
"""
from __future__ import annotations

import pytest
import torch

import random_models
from mca_ctrl.mca_attention.adapters import model_adapter
from mca_ctrl.mca_attention.layout import TARGET
from mca_ctrl.mca_attention.schedule import Op
from mca_ctrl.nodes import sampler
from random_models import flux_prompt
from user_path import EDIT_MASK, preset_swap

LATENT = (8, 8)


@pytest.fixture(scope="module")
def flux_dev(pack):
    """Load Diffusion Model on the cached random file, as a user's graph runs it."""
    return random_models.load_diffusion_model(random_models.random_flux_file())


def test_load_diffusion_model_detects_the_random_file_as_flux_dev(flux_dev):
    import comfy.model_sampling

    assert type(flux_dev.model.model_config).__name__ == "Flux"
    unet_config = flux_dev.model.model_config.unet_config
    assert (unet_config["hidden_size"], unet_config["num_heads"], unet_config["context_in_dim"]) == (3072, 24, 4096)
    assert (unet_config["depth"], unet_config["depth_single_blocks"], unet_config["guidance_embed"]) == (1, 1, True)
    assert isinstance(flux_dev.get_model_object("model_sampling"), comfy.model_sampling.CONST)
    adapter = model_adapter(flux_dev)
    assert [site.key for site in adapter.sites] == [("double", 0), ("single", 0)] and adapter.LATENT.channels == 16


def test_swap_through_the_nodes_on_the_full_width_model(flux_dev):
    patched, state, subject, condition, clean = preset_swap(flux_dev, (1, 16, *LATENT), flux_prompt(0))
    rows = sampler.mca_sample(patched, flux_prompt(1), flux_prompt(2), flux_prompt(2), flux_prompt(9), subject,
                              condition, 0, 1.0).rows
    assert torch.isfinite(rows).all()
    assert {op for *_, (op,), _ in state.trace} == {Op.SAGI, Op.SALQ}, "3 steps: SAGI at step 0, SALQ after"
    outside = torch.nn.functional.interpolate(EDIT_MASK[None], size=LATENT, mode="nearest")[0, 0] <= 0.5
    torch.testing.assert_close(rows[TARGET][:, outside], clean[0][:, outside], atol=1e-3, rtol=1e-3)
