"""The three MCA-Ctrl tasks and what each one implies, held together so that no setting is looked up by name.

A preset fixes the official schedule *and* the task's behaviour: whether the condition row replays a real
image (and so must carry an inversion trajectory), whether an edit mask must be given, and whether the
target is blended back into the condition outside that mask (local blend). A new preset has to state all
of them: there is no default to lose.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .schedule import MCASchedule


class Task(str, Enum):
    SWAP = "swap"
    ADD = "add"
    GENERATION = "generation"


@dataclass(frozen=True)
class TaskPreset:
    task: Task
    schedule: MCASchedule
    needs_condition_image: bool  # the condition LATENT must come from MCA DDIM Invert
    needs_edit_mask: bool  # else the edit region may come from cross-attention to the subject word
    local_blend: bool  # keep the condition image outside the edit mask


# Official defaults (MCA-Ctrl code, 50 steps): SAGI for the first 10%; SALQ from step 4 on at SD1.5's
# sites 9..15 for swap/add (on any family: its preset site, see unet_sites.preset_salq_site), from
# step 0 at every site for generation.
_EDIT_SCHEDULE = MCASchedule(sagi_start=0.0, sagi_end=0.1, salq_start=0.08, salq_end=1.0, salq_first_site=None)
PRESETS: dict[Task, TaskPreset] = {
    Task.SWAP: TaskPreset(Task.SWAP, _EDIT_SCHEDULE, needs_condition_image=True, needs_edit_mask=True,
                          local_blend=True),
    Task.ADD: TaskPreset(Task.ADD, _EDIT_SCHEDULE, needs_condition_image=True, needs_edit_mask=True,
                         local_blend=True),
    Task.GENERATION: TaskPreset(
        Task.GENERATION, MCASchedule(sagi_start=0.0, sagi_end=0.1, salq_start=0.0, salq_end=1.0, salq_first_site=0),
        needs_condition_image=False, needs_edit_mask=False, local_blend=False),
}
