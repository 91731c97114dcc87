"""Prompts for tests: the rows stacked as the MCA engine stacks them, and a tokenizer-only stand-in for a CLIP."""
from __future__ import annotations

import base64
import json

import torch

from mca_ctrl.mca_attention.prompts import PROMPT_NAMES, StackedPrompts, single_prompt, stack_prompts
from mca_ctrl.mca_attention.text import TextFacts


def stacked(*conditionings: list, negative: list | None = None, repeat_short: bool = True,
            text: TextFacts | None = None) -> StackedPrompts:
    """``conditionings`` one per row (``[condition, subject, target]`` for the official batch), stacked by
    ``prompts.stack_prompts`` (the function the engine calls), with ``negative`` when given, by the text rule
    ``text`` (default: CLIP's repetition, or right padding when not ``repeat_short``)."""
    names = list(PROMPT_NAMES[:3]) if len(conditionings) == 3 else [f"row {i}" for i in range(len(conditionings))]
    rows = [single_prompt(c, name) for c, name in zip(conditionings, names)]
    return stack_prompts(rows, names, negative or [], text or TextFacts(repeats_short_prompts=repeat_short))


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


MISTRAL_SPECIALS = ("<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]",
                    "[TOOL_RESULTS]", "[/TOOL_RESULTS]", "[TOOL_CALLS]", "[IMG]", "<pad>", "[IMG_BREAK]", "[IMG_END]",
                    "[PREFIX]", "[MIDDLE]", "[SUFFIX]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[TOOL_CONTENT]")
MISTRAL_WORDS = (b" dog", b" sofa", b" photo", b" of", b" a", b" on", b" cat")


def mistral_tokenizer():
    """Flux.2 dev's own tokenizer class (``Flux2Tokenizer``: Mistral's tekken BPE and chat template) over a small
    made-up tekken vocabulary (every byte, Mistral's control tokens at their ranks, a few whole words), since the
    real one ships inside the text encoder file."""
    from comfy.text_encoders.flux import Flux2Tokenizer

    vocab = [bytes([i]) for i in range(256)] + list(MISTRAL_WORDS)
    data = {"config": {"default_vocab_size": len(MISTRAL_SPECIALS) + len(vocab)},
            "vocab": [{"rank": rank, "token_bytes": base64.b64encode(token).decode()}
                      for rank, token in enumerate(vocab)],
            "special_tokens": [{"rank": rank, "token_str": token, "is_control": True}
                               for rank, token in enumerate(MISTRAL_SPECIALS)]}
    raw = torch.frombuffer(bytearray(json.dumps(data).encode()), dtype=torch.uint8)
    return Flux2Tokenizer(tokenizer_data={"tekken_model": raw})
