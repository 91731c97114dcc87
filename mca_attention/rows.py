"""The MCA Sampler's shared rows: the subject (and swap/add condition) trajectories, blend mask and schedule,
read from the node's inputs and checked against each other and against the patched model."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .adapters import model_source
from .latents import model_latent
from .layout import BatchShape
from .masks import as_single_mask, check_aspect, resize_mask
from .sampling import RowControl
from .state import MCAState
from .trajectory import TRAJECTORY_KEY, Trajectory, check_matches_schedule, check_same_source, read_trajectory


def _latent_batch(latent: dict, model, name: str, allow_batch: bool) -> torch.Tensor:
    samples = model_latent(latent, model, name, known=(TRAJECTORY_KEY,))
    if samples.shape[0] == 0:
        raise ValueError(f"{name}: the latent batch is empty (batch size 0): give it at least one image.")
    if samples.shape[0] != 1 and not allow_batch:
        raise ValueError(f"{name}: MCA takes one {name} image per sampler, got a batch of {samples.shape[0]}. For "
                         f"several targets use MCA Target Prompts or MCA Schedule Sweep; in generation, the "
                         f"condition latent's batch size gives one seed per target.")
    return samples


def sampling_schedule(subject: Trajectory, sigmas: torch.Tensor | None) -> torch.Tensor:
    """The subject's inversion schedule, or an explicit SIGMAS input (then checked against it)."""
    if sigmas is None:
        return subject.sigmas.float()
    sigmas = sigmas.flatten().float().cpu()
    check_matches_schedule(subject, sigmas, "subject", "the SIGMAS input")
    return sigmas


def latent_blend_mask(mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """A MASK resized (nearest) to the latent, as ``[1, 1, h, w]``."""
    return resize_mask(as_single_mask(mask, "blend_mask"), height, width)[None, None]


@dataclass(frozen=True)
class SharedRows:
    """What every pass shares: the pinned subject (and swap/add condition), the blend mask, the schedule."""

    subject: torch.Tensor  # [steps + 1, C, h, w]
    condition: torch.Tensor | None  # the condition's trajectory (swap/add), None in generation
    blend_mask: torch.Tensor | None
    sigmas: torch.Tensor
    seeds: int  # generation: the condition latent's batch size (one seed per target); else 1
    single: torch.Tensor  # one latent of the output's shape (the start noise is drawn in its shape)

    def control(self, shape: BatchShape) -> RowControl:
        """Pins, target start and blend of one pass of ``shape``."""
        control = RowControl(pinned={shape.subject: self.subject}, blend_mask=self.blend_mask, shape=shape)
        if self.condition is not None:
            control.pinned.update({row: self.condition for row in range(shape.conditions)})
            control.target_start = self.condition[0]
        return control


def shared_rows(model, state: MCAState, subject: dict, condition: dict, sigmas: torch.Tensor | None,
                blend_mask: torch.Tensor | None) -> SharedRows:
    """The shared rows and the schedule, after checking the inputs fit together."""
    seeded = not state.preset.needs_condition_image
    subject_samples = _latent_batch(subject, model, "subject", allow_batch=False)
    condition_samples = _latent_batch(condition, model, "condition", allow_batch=seeded)
    if subject_samples.shape[1:] != condition_samples.shape[1:]:
        raise ValueError(
            f"subject latent {tuple(subject_samples.shape[-2:])} and condition latent "
            f"{tuple(condition_samples.shape[-2:])} differ in size: resize both images to the same width and height."
        )
    subject_trajectory = read_trajectory(subject)
    if subject_trajectory is None:
        raise ValueError("the subject LATENT carries no inversion trajectory: connect it from MCA DDIM Invert.")
    source = model_source(model)  # the Sampler's model as it arrives: a ModelSampling node after the patch counts
    check_same_source(subject_trajectory, source, "the subject")
    schedule = sampling_schedule(subject_trajectory, sigmas)
    condition_trajectory = read_trajectory(condition)
    if condition_trajectory is None and state.preset.needs_condition_image:
        raise ValueError(
            f"the {state.preset.task.value} preset needs the condition image inverted: connect the condition LATENT "
            f"from MCA DDIM Invert (a plain VAE Encode carries no trajectory, and the condition image would be "
            f"ignored). For generation from noise, set the patch's preset to generation."
        )
    pinned_condition = None
    if condition_trajectory is not None:
        check_same_source(condition_trajectory, source, "the condition")
        check_matches_schedule(condition_trajectory, schedule, "condition", "the subject")
        if condition_trajectory.latents.shape[1] != 1:
            raise ValueError(f"condition: the inversion holds {condition_trajectory.latents.shape[1]} images; MCA "
                             f"takes one condition image per sampler.")
        pinned_condition = condition_trajectory.row(0)
    height, width = subject_samples.shape[-2:]
    masks = (("subject_mask", state.subject_mask), ("edit_mask", state.edit_mask), ("blend_mask", blend_mask))
    for name, mask in masks:
        if mask is not None:
            check_aspect(as_single_mask(mask, name), height, width, name, f"the {width}x{height} latent")
    blend = None if blend_mask is None else latent_blend_mask(blend_mask, height, width)
    seeds = condition_samples.shape[0] if seeded and pinned_condition is None else 1
    return SharedRows(subject_trajectory.row(0), pinned_condition, blend, schedule, seeds, condition_samples[:1])
