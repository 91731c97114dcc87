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
from mca_ctrl.mca_attention.comfy_patch import mca_state
from mca_ctrl.mca_attention.layout import TARGET
from mca_ctrl.mca_attention.schedule import Op
from mca_ctrl.mca_attention import invert
from mca_ctrl.nodes import attention_patch, sampler
from random_models import flux_prompt, square_mask

LATENT = (8, 8)


@pytest.fixture(scope="module")
def flux_dev(pack):
    """Load Diffusion Model on the cached random file, as a user's graph runs it."""
    import folder_paths
    import nodes

    path = random_models.random_flux_file()
    folder_paths.add_model_folder_path("diffusion_models", str(path.parent))
    (model,) = nodes.UNETLoader().load_unet(path.name, "default")
    return model


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
    subject_mask, edit_mask = square_mask(64, 16, 48), square_mask(64, 8, 40)
    (patched,) = attention_patch.MCAAttentionPatch().patch(flux_dev, subject_mask, "swap", -1.0, -1.0, -1.0, -1.0,
                                                          -1.0, -1, edit_mask=edit_mask)
    state = mca_state(patched)
    state.trace = []
    sigmas = invert.schedule_sigmas(flux_dev, 3, None)
    latents = [torch.randn(1, 16, *LATENT, generator=torch.Generator().manual_seed(s)) for s in (1, 2)]
    subject, condition = (invert.invert_latent(flux_dev, latent, flux_prompt(0), flux_prompt(0), 1.0, sigmas)
                          for latent in latents)
    rows = sampler.mca_sample(patched, flux_prompt(1), flux_prompt(2), flux_prompt(2), flux_prompt(9), subject,
                                 condition, 0, 1.0).rows
    assert torch.isfinite(rows).all()
    assert {op for *_, (op,), _ in state.trace} == {Op.SAGI, Op.SALQ}, "3 steps: SAGI at step 0, SALQ after"
    outside = torch.nn.functional.interpolate(edit_mask[None], size=LATENT, mode="nearest")[0, 0] <= 0.5
    torch.testing.assert_close(rows[TARGET][:, outside], latents[1][0][:, outside], atol=1e-3, rtol=1e-3)
