"""The rows' prompts stacked as the MCA engine stacks them, for tests that drive ComfyUI's sampler directly."""
from __future__ import annotations

from mca_ctrl.mca_attention.prompts import PROMPT_NAMES, StackedPrompts, single_prompt, stack_prompts


def stacked(*conditionings: list, negative: list | None = None, repeat_short: bool = True) -> StackedPrompts:
    """``conditionings`` one per row (``[condition, subject, target]`` for the official batch), stacked by
    ``prompts.stack_prompts`` (the function the engine calls), with ``negative`` when given."""
    names = list(PROMPT_NAMES[:3]) if len(conditionings) == 3 else [f"row {i}" for i in range(len(conditionings))]
    rows = [single_prompt(c, name) for c, name in zip(conditionings, names)]
    return stack_prompts(rows, names, negative or [], repeat_short)


def row_prompts(*conditionings: list, repeat_short: bool = True) -> list:
    """The positive conditioning of ``stacked`` (rows whose prompts need no padding)."""
    return stacked(*conditionings, repeat_short=repeat_short).positive
