"""How a family's prompts reach attention: the facts the prompt stacking and generation's subject words need."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TextFacts:
    """How the family's prompts reach attention.

    ``encoder_key``: the tokenizer output whose tokens the model attends to (None: the first one).
    ``repeats_short_prompts``: rows of different lengths are repeated to a common length (CLIP's 77-token
    chunks, as ComfyUI does); otherwise they are padded after their own tokens and the padding is masked out.
    The tokens before the text (CLIP's start token, none on T5, a chat template's prefix) are read from the
    tokenizer itself; ``cuts_prefix`` says the encoder leaves them out of its output (Qwen-Image's template).
    ``padded_left_to``: the model itself puts zeros before a shorter prompt's tokens up to this length and attends
    to them (Flux.2: 512), so rows are padded the same way, unmasked, and token positions count from the end.
    ``reads_prompt_mask``: the model applies the ``attention_mask`` its text encoder puts on a prompt (Qwen-Image,
    Z-Image: when it holds zeros); the Flux models attend to every text token whatever the encoder says.
    ``pads_to_multiple``: the model appends learned pad tokens after the text up to a multiple of this many tokens
    (Z-Image: 32), which every row attends to, as alone.
    """

    encoder_key: str | None = None
    repeats_short_prompts: bool = False
    cuts_prefix: bool = False  # the encoder drops the tokens before the text (a chat template) from its output
    padded_left_to: int = 0  # the model left-pads every prompt with zeros to this many tokens (0: it pads nothing)
    reads_prompt_mask: bool = True
    pads_to_multiple: int = 1  # the model appends its own pad tokens up to a multiple of this (Z-Image: 32)

    def model_length(self, length: int) -> int:
        """How many text tokens the model's attention sees for a prompt of ``length`` tokens."""
        return -(-length // self.pads_to_multiple) * self.pads_to_multiple

    def common_length(self, lengths: list[int]) -> int:
        """The length rows of ``lengths`` tokens are padded to: the longest, and where the model appends pad tokens,
        far enough before a multiple that it appends at least as many as any row's prompt gets alone."""
        needed = max(self.model_length(n) - n for n in lengths)
        length = max(lengths)
        while self.model_length(length) - length < needed:
            length += 1
        return length
