"""Patching a ComfyUI MODEL for MCA-Ctrl: pick the architecture's adapter (once), resolve the schedules, install
the hook.

The shared per-model settings (``state.MCAState``) travel in the clone's ``transformer_options`` so
that the MCA Sampler can read the task and masks; the input model is never touched.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from .adapters import model_adapter
from .resolve import ScheduleRequest, given_schedules, resolve_schedules
from .schedule import MCASchedule
from .state import MCAState, checked_mask
from .subject_words import SubjectWords
from .tasks import TaskPreset

STATE_KEY = "mca_ctrl"


def patch_model(model, preset: TaskPreset, schedule: ScheduleRequest | MCASchedule | Sequence[MCASchedule],
                subject_mask: torch.Tensor, edit_mask: torch.Tensor | None,
                subject: SubjectWords | list[int] | None = None, move_subject: bool = False,
                labels: Sequence[str] | None = None):
    """A clone of ``model`` (a ComfyUI ModelPatcher) with MCA attention at every self-attention site.

    ``schedule``: what the user set (a :class:`ScheduleRequest`: widgets and sweep, resolved against the
    family's preset), or concrete schedules (one per cell, ``labels`` naming each; ``salq_first_site`` None
    is the family's preset site).

    Without ``edit_mask`` (generation) the edit region comes from the target's attention to the subject's
    tokens: ``subject`` gives them as positions in the target prompt, or as :class:`SubjectWords` read with
    the model's own tokenizer (the encoded target prompt is kept, for the sampler's same-prompt check).

    ``move_subject`` (RoPE models): SALQ sees the subject's image keys moved onto the edit region.
    """
    if mca_state(model) is not None:
        raise ValueError("MCA Attention Patch got a model another MCA Attention Patch already patched: connect the "
                         "model from its loader (one patch per model; MCA Schedule Sweep gives one patch several "
                         "schedules).")
    adapter = model_adapter(model)
    if move_subject and not adapter.HAS_POSITIONS:
        raise ValueError(f"subject_position 'edit region' moves RoPE positions, which this {adapter.family} model's "
                         f"attention has none of: set subject_position to 'own'.")
    sites = len(adapter.sites)
    grid_columns = 0
    if isinstance(schedule, ScheduleRequest):
        schedules, labels = resolve_schedules(adapter.preset_schedule(preset), schedule, sites, adapter.family)
        grid_columns = len(schedule.sweep[-1].values) if schedule.sweep else 0
    else:
        given = (schedule,) if isinstance(schedule, MCASchedule) else tuple(schedule)
        schedules = given_schedules(given, adapter.preset_salq_first_site(), sites, adapter.family)
        labels = tuple(labels) if labels is not None else ("",) * len(schedules)
    if not schedules or len(labels) != len(schedules):
        raise ValueError(f"MCA Attention Patch needs at least one schedule and one label per schedule, got "
                         f"{len(schedules)} schedules and {len(labels)} labels")
    if edit_mask is None and preset.needs_edit_mask:
        raise ValueError(f"the {preset.task.value} preset needs an edit_mask: the region of the condition image "
                         f"where the subject goes (SLM Mask of the object to replace, or a drawn region).")
    tokens, target_text_cond = None, None
    if edit_mask is None:
        if isinstance(subject, SubjectWords):
            tokens = subject.tokens(adapter.TEXT)
            target_text_cond = subject.encoded_target()
        elif subject:
            tokens = list(subject)
        else:
            raise ValueError("MCA Attention Patch needs an edit_mask, or (generation) the subject word's token "
                             "positions in the target prompt to derive it from cross-attention.")

    state = MCAState(
        preset=preset,
        schedules=schedules,
        labels=tuple(labels),
        grid_columns=grid_columns,
        num_sites=sites,
        family=adapter.family,
        subject_mask=checked_mask(subject_mask, "subject_mask"),
        edit_mask=None if edit_mask is None else checked_mask(edit_mask, "edit_mask"),
        subject_tokens=tokens,
        target_text_cond=target_text_cond,
        text=adapter.TEXT,
        distilled=adapter.guidance_distilled(),
        text_width=adapter.text_width(),
        pooled_width=adapter.pooled_width(),
        move_subject=move_subject,
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


__all__ = ["STATE_KEY", "MCAState", "mca_state", "patch_model"]
