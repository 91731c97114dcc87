"""The user's path on a full-width random file: the patch node at its preset, and two inverted images."""
from __future__ import annotations

import torch

from comfy_host import split_cond_uncond
from mca_ctrl.mca_attention import engine, invert
from mca_ctrl.mca_attention.comfy_patch import mca_state, patch_model
from mca_ctrl.mca_attention.schedule import MCASchedule
from mca_ctrl.mca_attention.tasks import PRESETS, Task
from mca_ctrl.nodes import attention_patch, sampler
from random_models import square_mask

SUBJECT_MASK, EDIT_MASK = square_mask(64, 16, 48), square_mask(64, 8, 40)


def preset_swap(model, latent_shape: tuple, empty: list, steps: int = 3) -> tuple:
    """(patched model, its state with a trace, subject, condition, the condition's latent): MCA Attention Patch with
    every widget at -1 (the family preset), and seeded images of ``latent_shape`` inverted over ``steps`` steps."""
    (patched,) = attention_patch.MCAAttentionPatch.execute(model, SUBJECT_MASK, "swap", -1.0, -1.0, -1.0, -1.0, -1.0,
                                                          -1, edit_mask=EDIT_MASK)
    state = mca_state(patched)
    state.trace = []
    sigmas = invert.schedule_sigmas(model, steps, None)
    latents = [torch.randn(latent_shape, generator=torch.Generator().manual_seed(s)) for s in (1, 2)]
    subject, condition = (invert.invert_latent(model, latent, empty, empty, 1.0, sigmas) for latent in latents)
    return patched, state, subject, condition, latents[1]


def inverted_image(model, shape: tuple, empty: list, seed: int, steps: int) -> dict:
    """A seeded random latent of ``shape`` inverted by ``model`` over ``steps`` steps (its default schedule)."""
    latent = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    return invert.invert_latent(model, latent, empty, empty, 1.0, invert.schedule_sigmas(model, steps, None))


def check_swap_through_the_sampler(model, preset, schedule, prompts: tuple, subject: dict, condition: dict,
                                   cfg: float, outside: torch.Tensor) -> None:
    """Through the MCA Sampler node: the target equals the condition outside the edit mask (``outside``, at latent
    size), differs inside it from the same graph with empty step ranges, and rows 0 and 1 end at their clean
    latents. A 5-D latent (Qwen-Image) is read at its one frame."""
    node = sampler.MCASampler
    args = (*prompts, subject, condition, 0, cfg, True)
    target, rows, *_ = node.execute(patch_model(model, preset, schedule, SUBJECT_MASK, EDIT_MASK), *args)
    silent = MCASchedule(sagi_start=0.0, sagi_end=0.0, salq_start=0.0, salq_end=0.0, salq_first_site=0)
    plain, *_ = node.execute(patch_model(model, preset, silent, SUBJECT_MASK, EDIT_MASK), *args)
    assert target["samples"].shape == condition["samples"].shape

    def image(latent):
        return latent[0] if latent.dim() == 4 else latent[0, :, 0]

    torch.testing.assert_close(image(target["samples"])[:, outside], image(rows["samples"])[:, outside])
    inside = ~outside
    assert float((image(target["samples"])[:, inside] - image(plain["samples"])[:, inside]).abs().max()) > 1e-3
    for row, trajectory in ((0, condition), (1, subject)):
        clean = model.model.process_latent_out(trajectory["mca_trajectory"]["latents"][-1].float())
        torch.testing.assert_close(rows["samples"][row], clean[0], atol=1e-4, rtol=0)


def recorded_swap(model, schedule, prompts: tuple, subject: dict, condition: dict, mode: str, monkeypatch,
                  recorder) -> list:
    """The attention calls ``recorder(patched, calls)`` records in one real swap run under ``schedule``: ``mode`` is
    "cfg 1" (one chunk), "cfg batched" (cfg 4, cond and uncond in one call) or "cfg split" (cfg 4, one call each)."""
    if mode == "cfg split":
        split_cond_uncond(monkeypatch)
    calls: list = []
    patched = patch_model(model, PRESETS[Task.SWAP], schedule, SUBJECT_MASK, EDIT_MASK)
    engine.mca_sample(recorder(patched, calls), *prompts, subject, condition, 0, 1.0 if mode == "cfg 1" else 4.0)
    return calls
