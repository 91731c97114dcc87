"""The prompts of the MCA batch: one per row, checked against the model and stacked into one conditioning.

Rows whose prompts encode to different token counts share one batch by the family's text rule
(``text.TextFacts``):
- CLIP (UNets, ``repeats_short_prompts``): repeated to a common length, as ComfyUI itself does with its 77-token
  chunks;
- a model that pads prompts itself (Flux.2, ``padded_left_to``): zeros before each row's tokens, as the model
  adds them to a prompt alone, so every row reads what it reads alone, unmasked;
- every other encoder (T5 without padding on Chroma, Qwen2.5-VL): each row's tokens first, then zeros up to the
  longest row (the negative joins that length, so cond and uncond still share a forward). The padding goes
  after the row's own tokens so that token positions (generation's subject word, a text RoPE) stay those of
  the prompt alone, and the attention hooks leave it out of every softmax of that row (``run.TextSpan``): each
  row then computes what it computes with its own prompt alone.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .run import TextSpan
from .state import MCAState
from .text import TextFacts

PER_ROW_OPTIONS = ("pooled_output",)  # stacked per row; every other option must agree across the rows
LABEL_KEY = "mca_label"  # set by MCA Target Prompts on each of its prompts: the text, for the grid labels
# Conditioning that changes the token sequence the attention sees: not meaningful on MCA rows.
SEQUENCE_OPTIONS = {"reference_latents": "reference latents (set by ReferenceLatent, Flux Kontext's nodes or "
                                         "TextEncodeQwenImageEdit(Plus); encode the prompt with CLIP Text Encode)",
                    "attention_mask": "an attention mask on the prompt (from StyleModelApply with strength_type "
                                      "attn_bias, or a text encoder that padded it)",
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


MASK_KEYS = ("attention_mask", "attention_mask_img_shape")  # the prompt's mask, and the image size of a regional one


def plain_options(options: dict, text: TextFacts) -> dict:
    """``options`` without a prompt attention mask that changes nothing: the text encoder's all-ones mask (it padded
    nothing: Qwen2.5-VL, Mistral, Qwen3 give one with every prompt), or any encoder mask a family's model never reads
    (the Flux models attend to every text token). A mask that does something (zeros the model reads, a regional
    mask) stays, and is refused on MCA rows."""
    mask = options.get(MASK_KEYS[0])
    if mask is None or MASK_KEYS[1] in options or (text.reads_prompt_mask and not bool(mask.all())):
        return options
    return {key: value for key, value in options.items() if key != MASK_KEYS[0]}


def check_sequence_options(options: dict, name: str) -> None:
    """Refuse conditioning that changes which tokens or pixels an MCA row's prompt reaches."""
    for key, what in SEQUENCE_OPTIONS.items():
        if options.get(key) is not None:
            raise ValueError(f"{name} carries {what}, which MCA rows do not support (each row takes one plain "
                             f"prompt over the whole image). Connect the text encode output directly.")


def check_prompt_fits(state: MCAState, conditioning: list, name: str) -> None:
    """Refuse a prompt from another text encoder than the model's: text width, pooled output, options."""
    for tensor, options in conditioning:
        check_sequence_options(plain_options(options, state.text), name)
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
    count = target.shape[1]
    outside = [token for token in state.subject_tokens or () if not -count <= token < count]  # < 0: from the end
    if outside:
        raise ValueError(f"the patch's subject token {outside[0]} lies beyond the {name}'s {count} tokens: check "
                         f"token_indices on MCA Attention Patch.")
    expected = state.target_text_cond
    if expected is None:
        return
    same = expected.shape == target.shape and torch.allclose(
        expected.float(), target.detach().float().cpu(), atol=1e-3 * float(expected.abs().max()), rtol=0)
    if not same:
        raise ValueError(f"the target_text on MCA Attention Patch is not the text of the {name} given to MCA "
                         f"Sampler, so the subject word's tokens would point at other words. Type the same text in "
                         f"both (and encode it with the same CLIP); several target prompts need an edit_mask.")


def target_names(count: int) -> list[str]:
    """How messages name ``count`` target prompts: "target_prompt" alone, "target prompt 1", ... of several."""
    return [f"target prompt {i + 1}" for i in range(count)] if count > 1 else [PROMPT_NAMES[2]]


def target_prompts(conditioning: list) -> list[tuple[torch.Tensor, dict]]:
    """The target prompts of a CONDITIONING: one plain prompt, or the several of MCA Target Prompts."""
    if len(conditioning) > 1 and all(LABEL_KEY in options for _, options in conditioning):
        return [single_prompt([entry], name) for entry, name in zip(conditioning, target_names(len(conditioning)))]
    if len(conditioning) > 1:
        raise ValueError(f"target_prompt: MCA needs one plain prompt per target, got a conditioning with "
                         f"{len(conditioning)} entries (from Conditioning Combine / area nodes). Connect a CLIP Text "
                         f"Encode output directly, or MCA Target Prompts for several targets.")
    return [single_prompt(conditioning, PROMPT_NAMES[2])]


def prompt_label(options: dict, index: int) -> str:
    return options.get(LABEL_KEY) or f"prompt {index + 1}"


@dataclass(frozen=True)
class StackedPrompts:
    """The batch's prompts: the positive conditioning (one row each), the negative, and the padding (if any)."""

    positive: list
    negative: list
    text: TextSpan | None  # None: every row's text is its own


def _padded(tensor: torch.Tensor, length: int, left: bool = False) -> torch.Tensor:
    zeros = tensor.new_zeros((tensor.shape[0], length - tensor.shape[1], *tensor.shape[2:]))
    return torch.cat([zeros, tensor] if left else [tensor, zeros], 1)


def stack_prompts(prompts: list[tuple[torch.Tensor, dict]], names: list[str], negative: list,
                  text: TextFacts) -> StackedPrompts:
    """One conditioning entry whose batch holds the row prompts (and pooled outputs) in row order, prompts of
    different lengths made one length by the family's ``text`` rule (see the module docstring)."""
    options = [plain_options({key: value for key, value in o.items() if key != LABEL_KEY}, text) for _, o in prompts]
    plain_negative = [[tensor, plain_options(entry_options, text)] for tensor, entry_options in negative]
    if any(plain[1] is not entry[1] for plain, entry in zip(plain_negative, negative)):
        negative = plain_negative
    for o, name in zip(options, names):
        check_sequence_options(o, name)
    tensors = [p[0] for p in prompts]
    lengths = [t.shape[1] for t in tensors]
    merged = _row_options(options, names)
    if text.repeats_short_prompts:
        tokens = math.lcm(*lengths)  # as ComfyUI pads long prompts: repeat to a common length
        stacked = torch.cat([t.repeat(1, tokens // t.shape[1], 1) for t in tensors])
        return StackedPrompts([[stacked, merged]], negative, None)
    if len(set(lengths)) == 1:
        return StackedPrompts([[torch.cat(tensors), merged]], negative, None)
    if text.padded_left_to:  # padded before the tokens as the model pads them: nothing to mask, the negative as it is
        longest = max(zip(lengths, names))
        if longest[0] > text.padded_left_to:
            raise ValueError(f"{longest[1]} encodes to {longest[0]} tokens, more than the {text.padded_left_to} this "
                             f"model pads shorter prompts to, and the rows' prompts differ in length: shorten it to "
                             f"at most {text.padded_left_to} tokens so that every row reads its prompt as it would "
                             f"alone.")
        stacked = torch.cat([_padded(t, longest[0], left=True) for t in tensors])
        return StackedPrompts([[stacked, merged]], negative, None)
    uncond = {entry[0].shape[1] for entry in negative}
    if len(uncond) > 1:
        raise ValueError(f"the negative holds prompts of {len(uncond)} different token lengths: connect one plain "
                         f"text encode output as negative.")
    length = text.common_length([*lengths, *uncond])
    stacked = torch.cat([_padded(t, length) for t in tensors])
    padded_negative = [[_padded(tensor, length), entry_options] for tensor, entry_options in negative]
    span = TextSpan(length, tuple(lengths), tuple(uncond) * len(tensors))
    return StackedPrompts([[stacked, merged]], padded_negative, span)
