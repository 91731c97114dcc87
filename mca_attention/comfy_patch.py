"""Patching a ComfyUI MODEL for MCA-Ctrl: pick the architecture's adapter, fix the schedule, install the hook.

The shared per-model settings (``state.MCAState``) travel in the clone's ``transformer_options`` so
that the MCA Sampler can read the task and masks; the input model is never touched.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch

from .adapters import ModelAdapter, model_adapter, model_source
from .schedule import MCASchedule
from .state import MCAState, checked_mask
from .tasks import TaskPreset

STATE_KEY = "mca_ctrl"


def resolve_schedule(schedule: MCASchedule, adapter: ModelAdapter) -> MCASchedule:
    """The schedule with Layer_LQ fixed for this model: the family preset when none was given."""
    first = adapter.preset_first_site() if schedule.salq_first_site is None else schedule.salq_first_site
    sites = len(adapter.sites)
    if first >= sites:
        raise ValueError(f"salq_first_site {first} is beyond this {adapter.family} model's {sites} self-attention "
                         f"sites (0..{sites - 1}), so SALQ would run nowhere; use -1 for the preset or a smaller "
                         f"index.")
    return replace(schedule, salq_first_site=first)


def patch_model(model, preset: TaskPreset, schedule: MCASchedule | Sequence[MCASchedule], subject_mask: torch.Tensor,
                edit_mask: torch.Tensor | None, subject_tokens: list[int] | None = None,
                target_text_cond: torch.Tensor | None = None, reposition: bool = False,
                labels: Sequence[str] | None = None):
    """A clone of ``model`` (a ComfyUI ModelPatcher) with MCA attention at every self-attention site.

    ``schedule``: one schedule, or one per schedule cell of a sweep (``labels`` names each cell);
    ``salq_first_site`` None means the model family's preset site.

    Without ``edit_mask`` (generation) the edit region comes from the target's attention to the text
    tokens at ``subject_tokens`` of the target prompt (``target_text_cond``, when given, is that prompt
    encoded, so that the sampler can check it receives the same prompt).

    ``reposition`` (RoPE models): SALQ sees the subject's image keys moved onto the edit region.
    """
    adapter = model_adapter(model)
    if reposition and not adapter.has_positions:
        raise ValueError(f"subject_position 'edit region' moves RoPE positions, which this {adapter.family} model's "
                         f"attention has none of (only Flux.1 and Chroma have): set subject_position to 'own'.")
    schedules = tuple(resolve_schedule(one, adapter) for one in
                      ((schedule,) if isinstance(schedule, MCASchedule) else schedule))
    labels = tuple(labels) if labels is not None else ("",) * len(schedules)
    if not schedules or len(labels) != len(schedules):
        raise ValueError(f"MCA Attention Patch needs at least one schedule and one label per schedule, got "
                         f"{len(schedules)} schedules and {len(labels)} labels")
    if edit_mask is None and preset.needs_edit_mask:
        raise ValueError(f"the {preset.task.value} preset needs an edit_mask: the region of the condition image "
                         f"where the subject goes (SLM Mask of the object to replace, or a drawn region).")
    if edit_mask is None and not subject_tokens:
        raise ValueError("MCA Attention Patch needs an edit_mask, or (generation) the subject word's token "
                         "positions in the target prompt to derive it from cross-attention.")

    state = MCAState(
        preset=preset,
        schedules=schedules,
        labels=labels,
        num_sites=len(adapter.sites),
        family=adapter.family,
        subject_mask=checked_mask(subject_mask, "subject_mask"),
        edit_mask=None if edit_mask is None else checked_mask(edit_mask, "edit_mask"),
        subject_tokens=None if edit_mask is not None else list(subject_tokens),
        target_text_cond=target_text_cond,
        repeats_short_prompts=adapter.repeats_short_prompts,
        source=model_source(model),
        text_width=adapter.text_width(),
        pooled_width=adapter.pooled_width(),
        reposition=reposition,
    )
    patched = model.clone()
    adapter.install(patched, state)
    # Copy-on-write: the clone's dict may still be shared with the input model on newer ComfyUI.
    transformer_options = dict(patched.model_options.get("transformer_options", {}))
    transformer_options[STATE_KEY] = state
    patched.model_options["transformer_options"] = transformer_options
    return patched


def mca_state(model) -> MCAState | None:
    """The MCA settings a patched model carries, if any."""
    return model.model_options.get("transformer_options", {}).get(STATE_KEY)


__all__ = ["STATE_KEY", "MCAState", "mca_state", "patch_model", "resolve_schedule"]
