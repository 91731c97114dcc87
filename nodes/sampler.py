"""MCA Sampler: condition, subject and target sampled as one 3-row batch, one sampler call per step."""
from __future__ import annotations

import math

import torch

import comfy.sample
import comfy.samplers

from ..mca_attention.comfy_patch import mca_state
from ..mca_attention.layout import CONDITION, SUBJECT
from ..mca_attention.masks import as_single_mask, resize_mask
from ..mca_attention.sampling import RowControl, mca_sample_loop
from ..mca_attention.trajectory import Trajectory, check_matches_schedule, read_trajectory
from .common import CATEGORY, check_sd15_latent, schedule_sigmas, single_prompt
from .progress import sampling_callback

BLEND_MODES = ("swap", "add")


def row_prompts(condition: list, subject: list, target: list) -> list:
    """One conditioning entry whose batch holds the three row prompts in row order."""
    prompts = [single_prompt(c, name) for c, name in
               ((condition, "condition_prompt"), (subject, "subject_prompt"), (target, "target_prompt"))]
    tensors = [p[0] for p in prompts]
    tokens = math.lcm(*(t.shape[1] for t in tensors))  # as ComfyUI pads long prompts: repeat to a common length
    stacked = torch.cat([t.repeat(1, tokens // t.shape[1], 1) for t in tensors])
    return [[stacked, dict(prompts[2][1])]]


def _single_item(latent: dict, name: str) -> torch.Tensor:
    samples = latent["samples"]
    check_sd15_latent(samples, name)
    if samples.shape[0] != 1:
        raise ValueError(f"{name}: MCA works on one image per row, got a batch of {samples.shape[0]}")
    return samples


def _pinned_row(trajectory: Trajectory, sigmas: torch.Tensor, name: str) -> torch.Tensor:
    check_matches_schedule(trajectory, sigmas, name)
    return trajectory.row(0)


def latent_blend_mask(mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """A MASK resized (nearest) to the latent, as ``[1, 1, h, w]``."""
    return resize_mask(as_single_mask(mask, "blend_mask"), height, width)[None, None]


def build_row_control(subject: dict, condition: dict, sigmas: torch.Tensor,
                      blend_mask: torch.Tensor | None) -> RowControl:
    """Pins, target start and blend for the loop, after checking that the inputs fit together."""
    subject_samples = _single_item(subject, "subject")
    condition_samples = _single_item(condition, "condition")
    if subject_samples.shape != condition_samples.shape:
        raise ValueError(
            f"subject latent {tuple(subject_samples.shape[2:])} and condition latent "
            f"{tuple(condition_samples.shape[2:])} differ in size: resize both images to the same width and height."
        )
    subject_trajectory = read_trajectory(subject, "subject")
    if subject_trajectory is None:
        raise ValueError("the subject LATENT carries no inversion trajectory: connect it from MCA DDIM Invert.")
    control = RowControl(pinned={SUBJECT: _pinned_row(subject_trajectory, sigmas, "subject")})
    condition_trajectory = read_trajectory(condition, "condition")
    if condition_trajectory is not None:
        control.pinned[CONDITION] = _pinned_row(condition_trajectory, sigmas, "condition")
        control.target_start = control.pinned[CONDITION][0]
    if blend_mask is not None:
        control.blend_mask = latent_blend_mask(blend_mask, *subject_samples.shape[2:])
    return control


def mca_sample(model, condition_prompt, subject_prompt, target_prompt, negative, subject: dict, condition: dict,
               seed: int, cfg: float, sigmas: torch.Tensor, blend_mask=None, callback=None, disable_pbar=True):
    """Sample the 3-row batch; returns the ``[3, 4, h, w]`` latent rows."""
    control = build_row_control(subject, condition, sigmas, blend_mask)
    single = condition["samples"]
    noise = comfy.sample.prepare_noise(torch.zeros_like(single), seed).repeat(3, 1, 1, 1)
    sampler = comfy.samplers.KSAMPLER(mca_sample_loop, extra_options={"control": control})
    positive = row_prompts(condition_prompt, subject_prompt, target_prompt)
    return comfy.sample.sample_custom(model, noise, cfg, sampler, sigmas, positive, negative,
                                      torch.zeros_like(noise), callback=callback, disable_pbar=disable_pbar,
                                      seed=seed)


class MCASampler:
    DESCRIPTION = ("Samples condition, subject and target as one 3-row batch. Rows with an inversion trajectory "
                   "are pinned to it; the target starts from the condition's start noise and, outside the blend "
                   "mask, is replaced by the condition (local blend). Use with MCA Attention Patch.")
    CATEGORY = CATEGORY
    FUNCTION = "sample"
    RETURN_TYPES = ("LATENT", "LATENT")
    RETURN_NAMES = ("target", "all_rows")
    OUTPUT_TOOLTIPS = ("The generated image's latent.", "All three rows [condition, subject, target], to inspect.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "Normally the output of MCA Attention Patch."}),
                "condition_prompt": ("CONDITIONING", {"tooltip": "Describes the condition image, e.g. 'a photo of a cat'."}),
                "subject_prompt": ("CONDITIONING", {"tooltip": "Describes the subject image, e.g. 'a photo of a fox'."}),
                "target_prompt": ("CONDITIONING", {"tooltip": "Describes the result, e.g. 'a photo of a fox'."}),
                "negative": ("CONDITIONING", {"tooltip": "One negative prompt shared by all three rows."}),
                "subject": ("LATENT", {"tooltip": "The subject image from MCA DDIM Invert."}),
                "condition": ("LATENT", {"tooltip": "Swap/add: the condition image from MCA DDIM Invert. "
                                                    "Generation: an Empty Latent Image of the output size."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xffffffffffffffff, "control_after_generate": True,
                                 "tooltip": "Noise seed for the condition and target rows (generation)."}),
                "steps": ("INT", {"default": 50, "min": 1, "max": 1000,
                                  "tooltip": "Must equal the steps of MCA DDIM Invert (ddim_uniform schedule)."}),
                "cfg": ("FLOAT", {"default": 7.5, "min": 0.0, "max": 30.0, "step": 0.1,
                                  "tooltip": "Classifier-free guidance for all rows (official: 7.5)."}),
                "local_blend": ("BOOLEAN", {"default": True,
                                            "tooltip": "Swap/add: keep the condition image outside the edit mask "
                                                       "(uses blend_mask, else the patch's edit mask)."}),
            },
            "optional": {
                "sigmas": ("SIGMAS", {"tooltip": "Optional schedule; overrides steps. Must match the inversion's."}),
                "blend_mask": ("MASK", {"tooltip": "Region the target may change; defaults to the patch's edit mask."}),
            },
        }

    def sample(self, model, condition_prompt, subject_prompt, target_prompt, negative, subject, condition, seed,
               steps, cfg, local_blend, sigmas=None, blend_mask=None):
        schedule = schedule_sigmas(model, steps, sigmas)
        state = mca_state(model)
        if local_blend and blend_mask is None and state is not None and state.mode in BLEND_MODES:
            blend_mask = state.edit_mask
        if not local_blend:
            blend_mask = None
        callback = sampling_callback(model, schedule.numel() - 1)
        rows = mca_sample(model, condition_prompt, subject_prompt, target_prompt, negative, subject, condition,
                          seed, cfg, schedule, blend_mask=blend_mask, callback=callback, disable_pbar=False)
        return {"samples": rows[2:3]}, {"samples": rows}


NODE_CLASS_MAPPINGS = {"MCA_Sampler": MCASampler}
NODE_DISPLAY_NAME_MAPPINGS = {"MCA_Sampler": "MCA Sampler"}
