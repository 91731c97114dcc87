"""The prompts of the MCA batch: one per row, checked against the model and stacked into one conditioning.

Rows whose prompts encode to different token counts share one batch in one of two ways, by the family's
text rule (``TextFacts.repeats_short_prompts``):
- CLIP (UNets): repeated to a common length, as ComfyUI itself does with its 77-token chunks;
- T5 without padding (Chroma) and every encoder that does not pad: each row's tokens first, then zeros up to
  the longest row (the negative joins that length, so cond and uncond still share a forward). The padding
  goes after the row's own tokens so that token positions (generation's subject word, a text RoPE) stay
  those of the prompt alone, and the attention hooks leave it out of every softmax of that row
  (``run.TextSpan``): each row then computes what it computes with its own prompt alone.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .run import TextSpan
from .state import MCAState

PER_ROW_OPTIONS = ("pooled_output",)  # stacked per row; every other option must agree across the rows
LABEL_KEY = "mca_label"  # set by MCA Target Prompts on each of its prompts: the text, for the grid labels
# Conditioning that changes the token sequence the attention sees: not meaningful on MCA rows.
SEQUENCE_OPTIONS = {"reference_latents": "reference latents (set by ReferenceLatent, Flux Kontext's nodes or "
                                         "TextEncodeQwenImageEdit(Plus); encode the prompt with CLIP Text Encode)",
                    "attention_mask": "an attention mask on the prompt",
                    "area": "area conditioning (ConditioningSetArea / ConditioningSetAreaPercentage)",
                    "mask": "mask conditioning (ConditioningSetMask)"}
PROMPT_NAMES = ("condition_prompt", "subject_prompt", "target_prompt", "negative")


def single_prompt(conditioning: list, name: str) -> tuple[torch.Tensor, dict]:
    """The one ``[1, tokens, dim]`` prompt of a CONDITIONING, with its options."""
    if len(conditioning) != 1:
        raise ValueError(
            f"{name}: MCA needs one plain prompt per row, got a conditioning with {len(conditioning)} entries "
            f"(from Conditioning Combine / area nodes). Connect a CLIP Text Encode output directly."
        )
    tensor, options = conditioning[0]
    if tensor.shape[0] != 1:
        raise ValueError(f"{name}: expected one prompt, got a batch of {tensor.shape[0]}")
    return tensor, options


def _row_options(options: list[dict], names: list[str]) -> dict:
    """The conditioning options of the stacked entry: pooled outputs stacked in row order, the rest shared."""
    merged = dict(options[-1])
    for key in PER_ROW_OPTIONS:
        values = [o.get(key) for o in options]
        if all(v is not None for v in values):
            widths = {name: v.shape[-1] for name, v in zip(names, values)}
            if len(set(widths.values())) > 1:
                listed = ", ".join(f"{name} {width}" for name, width in dict.fromkeys(widths.items()))
                raise ValueError(f"the row prompts' pooled outputs differ in width ({listed}): encode every prompt "
                                 f"with the CLIP of this model.")
            merged[key] = torch.cat([v.reshape(1, -1) for v in values])
        elif any(v is not None for v in values):
            raise ValueError(f"only some row prompts carry '{key}': encode all of them with the same kind of "
                             f"text encode node.")
    for key in set().union(*options) - set(PER_ROW_OPTIONS):
        values = [o.get(key) for o in options]
        if any(not _same(values[-1], value) for value in values):
            differing = ", ".join(dict.fromkeys(f"{name}={value!r}" for name, value in zip(names, values)))
            raise ValueError(f"the row prompts differ in '{key}' ({differing}): MCA samples the rows as one batch, "
                             f"so give the text encode nodes the same {key}.")
    return merged


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and bool(
            torch.equal(a, b))
    return a == b


def check_sequence_options(options: dict, name: str) -> None:
    """Refuse conditioning that changes which tokens or pixels an MCA row's prompt reaches."""
    for key, what in SEQUENCE_OPTIONS.items():
        if options.get(key) is not None:
            raise ValueError(f"{name} carries {what}, which MCA rows do not support (each row takes one plain "
                             f"prompt over the whole image). Connect the text encode output directly.")


def check_prompt_fits(state: MCAState, conditioning: list, name: str) -> None:
    """Refuse a prompt from another text encoder than the model's: text width, pooled output, options."""
    for tensor, options in conditioning:
        check_sequence_options(options, name)
        encode = f"encode {name} with the CLIP that belongs to this {state.family} model (its loader's CLIP output)"
        if state.text_width is not None and tensor.shape[-1] != state.text_width:
            raise ValueError(f"{name} holds {tensor.shape[-1]}-wide text tokens but this {state.family} model reads "
                             f"{state.text_width}-wide ones: {encode}.")
        pooled = options.get("pooled_output")
        if state.pooled_width is None:
            continue
        if pooled is None:
            raise ValueError(f"{name} has no pooled text output, which this {state.family} model needs: {encode}.")
        if state.pooled_width and pooled.shape[-1] != state.pooled_width:
            raise ValueError(f"{name} has a {pooled.shape[-1]}-wide pooled output but this {state.family} model "
                             f"needs {state.pooled_width}: {encode}.")


def check_target_prompt(state: MCAState, target: torch.Tensor, name: str = "target_prompt") -> None:
    """Generation: the subject tokens must index the very prompt the target row receives."""
    if state.subject_tokens and max(state.subject_tokens) >= target.shape[1]:
        raise ValueError(f"the patch's subject token {max(state.subject_tokens)} lies beyond the {name}'s "
                         f"{target.shape[1]} tokens: check token_indices on MCA Attention Patch.")
    expected = state.target_text_cond
    if expected is None:
        return
    same = expected.shape == target.shape and torch.allclose(
        expected.float(), target.detach().float().cpu(), atol=1e-3 * float(expected.abs().max()), rtol=0)
    if not same:
        raise ValueError(f"the target_text on MCA Attention Patch is not the text of the {name} given to MCA "
                         f"Sampler, so the subject word's tokens would point at other words. Type the same text in "
                         f"both (and encode it with the same CLIP); several target prompts need an edit_mask.")


def target_prompts(conditioning: list) -> list[tuple[torch.Tensor, dict]]:
    """The target prompts of a CONDITIONING: one plain prompt, or the several of MCA Target Prompts."""
    if len(conditioning) > 1 and all(LABEL_KEY in options for _, options in conditioning):
        return [single_prompt([entry], f"target prompt {i + 1}") for i, entry in enumerate(conditioning)]
    if len(conditioning) > 1:
        raise ValueError(f"target_prompt: MCA needs one plain prompt per target, got a conditioning with "
                         f"{len(conditioning)} entries (from Conditioning Combine / area nodes). Connect a CLIP Text "
                         f"Encode output directly, or MCA Target Prompts for several targets.")
    return [single_prompt(conditioning, "target_prompt")]


def prompt_label(options: dict, index: int) -> str:
    return options.get(LABEL_KEY) or f"prompt {index + 1}"


@dataclass(frozen=True)
class StackedPrompts:
    """The batch's prompts: the positive conditioning (one row each), the negative, and the padding (if any)."""

    positive: list
    negative: list
    text: TextSpan | None  # None: every row's text is its own


def _padded(tensor: torch.Tensor, length: int) -> torch.Tensor:
    return torch.cat([tensor, tensor.new_zeros((tensor.shape[0], length - tensor.shape[1], *tensor.shape[2:]))], 1)


def stack_prompts(prompts: list[tuple[torch.Tensor, dict]], names: list[str], negative: list,
                  repeat_short: bool = True) -> StackedPrompts:
    """One conditioning entry whose batch holds the row prompts (and pooled outputs) in row order.

    ``repeat_short``: prompts of different lengths are repeated to a common length (CLIP); otherwise they are
    padded after their own tokens to the longest, the negative with them (see the module docstring).
    """
    options = [{key: value for key, value in o.items() if key != LABEL_KEY} for _, o in prompts]
    for o, name in zip(options, names):
        check_sequence_options(o, name)
    tensors = [p[0] for p in prompts]
    lengths = [t.shape[1] for t in tensors]
    merged = _row_options(options, names)
    if repeat_short:
        tokens = math.lcm(*lengths)  # as ComfyUI pads long prompts: repeat to a common length
        stacked = torch.cat([t.repeat(1, tokens // t.shape[1], 1) for t in tensors])
        return StackedPrompts([[stacked, merged]], negative, None)
    if len(set(lengths)) == 1:
        return StackedPrompts([[torch.cat(tensors), merged]], negative, None)
    uncond = {entry[0].shape[1] for entry in negative}
    if len(uncond) > 1:
        raise ValueError(f"the negative holds prompts of {len(uncond)} different token lengths: connect one plain "
                         f"text encode output as negative.")
    length = max(*lengths, *uncond)
    stacked = torch.cat([_padded(t, length) for t in tensors])
    padded_negative = [[_padded(tensor, length), entry_options] for tensor, entry_options in negative]
    span = TextSpan(length, tuple(lengths), tuple(uncond) * len(tensors))
    return StackedPrompts([[stacked, merged]], padded_negative, span)
