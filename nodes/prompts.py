"""The prompts of the MCA batch: one per row, checked against the model and stacked into one conditioning."""
from __future__ import annotations

import math

import torch

from ..mca_attention.state import MCAState
from .common import single_prompt

PER_ROW_OPTIONS = ("pooled_output",)  # stacked per row; every other option must agree across the rows
LABEL_KEY = "mca_label"  # set by MCA Target Prompts on each of its prompts: the text, for the grid labels
# Conditioning that changes the token sequence the attention sees: not meaningful on MCA rows.
SEQUENCE_OPTIONS = {"reference_latents": "reference latents (Flux Kontext / ReferenceLatent)",
                    "attention_mask": "an attention mask on the prompt",
                    "area": "area conditioning (ConditioningSetArea / ConditioningSetAreaPercentage)",
                    "mask": "mask conditioning (ConditioningSetMask)"}
PROMPT_NAMES = ("condition_prompt", "subject_prompt", "target_prompt", "negative")


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


def stack_rows(prompts: list[tuple[torch.Tensor, dict]], names: list[str], repeat_short: bool = True) -> list:
    """One conditioning entry whose batch holds the row prompts (and pooled outputs) in row order.

    ``repeat_short``: prompts of different lengths are repeated to a common length, as ComfyUI does with
    CLIP's 77-token chunks; otherwise (T5 on Flux / Chroma) they must have the same length.
    """
    options = [{key: value for key, value in o.items() if key != LABEL_KEY} for _, o in prompts]
    for o, name in zip(options, names):
        check_sequence_options(o, name)
    tensors = [p[0] for p in prompts]
    lengths = [t.shape[1] for t in tensors]
    if not repeat_short and len(set(lengths)) > 1:
        listed = ", ".join(dict.fromkeys(f"{name} {length}" for name, length in zip(names, lengths)))
        raise ValueError(f"the row prompts have different token lengths ({listed}): MCA samples the rows as one "
                         f"batch, and this model's text tokens cannot be repeated like CLIP's. Shorten the longer "
                         f"prompts (Flux pads every prompt to 256 T5 tokens, so prompts under that length match).")
    tokens = math.lcm(*lengths)  # as ComfyUI pads long prompts: repeat to a common length
    stacked = torch.cat([t.repeat(1, tokens // t.shape[1], 1) for t in tensors])
    return [[stacked, _row_options(options, names)]]


def row_prompts(condition: list, subject: list, target: list, repeat_short: bool = True) -> list:
    """The official three rows' prompts ``[condition, subject, target]`` stacked (see :func:`stack_rows`)."""
    names = list(PROMPT_NAMES[:3])
    prompts = [single_prompt(c, name) for c, name in zip((condition, subject, target), names)]
    return stack_rows(prompts, names, repeat_short)
