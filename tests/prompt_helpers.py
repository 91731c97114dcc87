"""Prompts for tests: the rows stacked as the MCA engine stacks them, and a tokenizer-only stand-in for a CLIP."""
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


def tokenizer_clip(tokenizer):
    """A stand-in for the CLIP input that holds ComfyUI's own ``tokenizer`` (an instance) and no weights."""

    class TokenizerOnly:
        def tokenize(self, text):
            return tokenizer.tokenize_with_weights(text)

    clip = TokenizerOnly()
    clip.tokenizer = tokenizer
    return clip
