"""Qwen-Image adapter (and the Qwen-Image-Edit 2509 / 2511 checkpoints, which load as the same architecture).

Qwen-Image's 60 blocks each run one joint softmax over ``[text tokens; image tokens]`` (text first), q and k
after RoPE, through ComfyUI's attention override with ``block_type`` "double" and ``block_index`` set by the
model's forward (ComfyUI 0.3.75 and newer): the Flux.1 path's hook serves it unchanged. What differs is data:
a 5-D latent ``[batch, 16, 1, h, w]`` (Wan 2.1 format), no pooled vector, a Qwen2.5-VL text encoder that pads
nothing (rows of other lengths are padded and masked, see ``prompts``), and the attention mask handed to the
attention positionally.
"""
from __future__ import annotations

import torch

from ..text import TextFacts
from .base import LatentLayout, Site
from .mmdit import MMDiTAdapter


class QwenImageAdapter(MMDiTAdapter):
    """Qwen-Image: 60 joint blocks over 2 x 2 patches of a 16-channel 5-D latent."""

    FAMILIES = {"QwenImage": "Qwen-Image"}
    SITES = {"Qwen-Image": "60 (joint blocks)"}
    LATENT = LatentLayout(channels=16, dims=5, patch=2)
    TEXT = TextFacts(encoder_key="qwen25_7b", repeats_short_prompts=False, cuts_prefix=True)
    PRESET_SOURCE = ("the Flux.1 preset carried over: SALQ at every block (KV-Edit, FreeGraftor and Personalize "
                     "Anything compose at every block of a joint-attention DiT), the official step fractions, at "
                     "least one step per non-empty range")

    @staticmethod
    def matches(diffusion_model: torch.nn.Module) -> bool:
        from comfy.ldm.qwen_image.model import QwenImageTransformer2DModel

        return isinstance(diffusion_model, QwenImageTransformer2DModel)

    def find_sites(self) -> list[Site]:
        blocks = self.model.get_model_object("diffusion_model").transformer_blocks
        return [Site(("double", i), i) for i in range(len(blocks))]

    def pooled_width(self) -> int | None:
        return None
