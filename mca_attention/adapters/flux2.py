"""Flux.2 adapter (dev; klein on ComfyUI 0.9.1 and newer, which loads as the same config).

Flux.2 runs Flux.1's code path (double blocks, then single blocks, one softmax over ``[text; image]`` each,
text first, block keys set by the forward), so the Flux.1 hook serves it. What differs is data: a 128-channel
latent at 1/16 with patch 1, four RoPE axes (image ids ``(0, h, w, 0)``, text ids ``(0, 0, 0, i)``), no pooled
vector, and text the model itself left-pads with zeros to 512 tokens and attends to whole: rows of different
lengths are padded the same way (``TextFacts.padded_left_to``), so each reads what it reads alone.
"""
from __future__ import annotations

import torch

from ..text import TextFacts
from .base import LatentLayout
from .mmdit import MMDiTAdapter

TEXT_TOKENS = 512  # model_base.Flux2.extra_conds pads shorter prompts (before their tokens) to this length


class Flux2Adapter(MMDiTAdapter):
    """Flux.2: double then single blocks over a 128-channel latent, one token per latent cell."""

    FAMILIES = {"Flux2": "Flux.2"}
    SITES = {"Flux.2": "56 on dev (8 double + 48 single blocks); klein: its file's blocks"}
    LATENT = LatentLayout(channels=128, factor=16, patch=1)
    # Mistral 3 (dev) or Qwen3 (klein): one encoder, whose attention mask the model does not read
    TEXT = TextFacts(encoder_key=None, padded_left_to=TEXT_TOKENS, reads_prompt_mask=False)
    PRESET_SOURCE = ("the Flux.1 preset carried over (same blocks, same joint softmax): SALQ at every block, the "
                     "official step fractions, at least one step per non-empty range")

    @staticmethod
    def matches(diffusion_model: torch.nn.Module) -> bool:
        from comfy.ldm.flux.model import Flux

        return isinstance(diffusion_model, Flux) and bool(getattr(diffusion_model.params, "global_modulation", False))
