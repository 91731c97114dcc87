"""The user's path on a full-width random file: the patch node at its preset, and two inverted images."""
from __future__ import annotations

import torch

from mca_ctrl.mca_attention import invert
from mca_ctrl.mca_attention.comfy_patch import mca_state
from mca_ctrl.nodes import attention_patch
from random_models import square_mask

SUBJECT_MASK, EDIT_MASK = square_mask(64, 16, 48), square_mask(64, 8, 40)


def preset_swap(model, latent_shape: tuple, empty: list, steps: int = 3) -> tuple:
    """(patched model, its state with a trace, subject, condition, the condition's latent): MCA Attention Patch with
    every widget at -1 (the family preset), and seeded images of ``latent_shape`` inverted over ``steps`` steps."""
    (patched,) = attention_patch.MCAAttentionPatch().patch(model, SUBJECT_MASK, "swap", -1.0, -1.0, -1.0, -1.0, -1.0,
                                                          -1, edit_mask=EDIT_MASK)
    state = mca_state(patched)
    state.trace = []
    sigmas = invert.schedule_sigmas(model, steps, None)
    latents = [torch.randn(latent_shape, generator=torch.Generator().manual_seed(s)) for s in (1, 2)]
    subject, condition = (invert.invert_latent(model, latent, empty, empty, 1.0, sigmas) for latent in latents)
    return patched, state, subject, condition, latents[1]
