"""UNet adapter (SD1.x, SD2.x, SDXL and its distilled variants): attn1 replacements at every site.

The condition and subject rows keep ordinary attention; each target row gets SAGI, SALQ or ordinary
attention by its schedule, the same in every cond/uncond chunk, whether ComfyUI batches the chunks or runs
them one by one (the shared body is ``hook.SiteHook``). Generation records the targets' cross-attention
with an attn2 patch.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from comfy.ldm.modules import attention as comfy_attention  # looked up per call: ComfyUI may swap it

from ..cross_attention_mask import token_attention_map
from ..run import run_step
from ..state import MCAState
from ..text import TextFacts
from ..unet_sites import AttentionSite, find_attention_sites, preset_salq_site
from .base import LatentLayout, ModelAdapter
from .hook import Call, SiteHook, TokenLayout


def is_unet(diffusion_model: torch.nn.Module) -> bool:
    return all(hasattr(diffusion_model, name) for name in ("input_blocks", "output_blocks"))


def ordinary_attention(q, k, v, extra_options: dict) -> torch.Tensor:
    """ComfyUI's own self-attention, called exactly as ``CrossAttention.forward`` calls it."""
    return comfy_attention.optimized_attention(
        q, k, v, extra_options["n_heads"], attn_precision=extra_options.get("attn_precision"),
        transformer_options=extra_options,
    )


class MCASiteAttention(SiteHook):
    """attn1 replacement for one site; chains to a replacement another pack installed before us."""

    def __init__(self, state: MCAState, site: int, previous: Callable | None = None):
        super().__init__(state)
        self.index = site
        self.previous = previous

    def ordinary(self, call: Call, rows, text_keys):
        q, k, v = (x if rows is None else x[rows] for x in (call.q, call.k, call.v))
        extra_options = call.native[0]
        if self.previous is not None:
            return self.previous(q, k, v, extra_options)
        return ordinary_attention(q, k, v, extra_options)

    def __call__(self, q, k, v, extra_options):
        height, width = (int(side) for side in extra_options["activations_shape"][-2:])
        call = Call(q, k, v, extra_options["n_heads"], extra_options["cond_or_uncond"],
                    TokenLayout(0, (height, width)), (extra_options,))
        return self.attend(call, run_step(extra_options), self.index)


def _third_level_size(original_shape) -> tuple[int, int]:
    """Latent size after two stride-2 downsamplings (16 x 16 for a 64 x 64 latent)."""
    height, width = int(original_shape[-2]), int(original_shape[-1])
    return math.ceil(math.ceil(height / 2) / 2), math.ceil(math.ceil(width / 2) / 2)


class MCACrossAttentionProbe:
    """attn2_patch (a composable list entry): records the target's cross-attention to the subject words."""

    def __init__(self, state: MCAState, sites: list[AttentionSite]):
        self.state = state
        self.cross_attention = {site.key: site.transformer.attn2 for site in sites}

    def __deepcopy__(self, memo):
        return self

    def __call__(self, n, context, value, extra_options):
        current = run_step(extra_options)
        cond_or_uncond = extra_options.get("cond_or_uncond", [])
        height, width = (int(v) for v in extra_options["activations_shape"][-2:])
        if (current is None or 0 not in cond_or_uncond or n.shape[0] != current.run.shape.rows * len(cond_or_uncond)
                or (height, width) != _third_level_size(extra_options["original_shape"])):
            return n, context, value
        cache = self.state.run_cache(current.run)
        block = extra_options["block"]
        module = self.cross_attention[(block[0], block[1], extra_options.get("block_index", 0))]
        target = self.state.cond_targets(cache, n.shape[0], cond_or_uncond, current.run.shape, n.device)
        q = module.to_q(n[target])
        k = module.to_k(context[target])
        maps = token_attention_map(q, k, extra_options["n_heads"], self.state.subject_tokens)
        cache.cross.record(current.step, maps, height, width)
        return n, context, value


class UNetAdapter(ModelAdapter):
    """Every ComfyUI UNet whose self-attention sits in spatial-transformer blocks, over a 4-channel latent."""

    KIND = "UNet"
    # Tested families; any other UNet of spatial-transformer blocks runs too (``serves``), named by its config.
    FAMILIES = {"SD15": "Stable Diffusion 1.x", "SD20": "Stable Diffusion 2.x", "SDXL": "SDXL", "SSD1B": "SSD-1B",
                "Segmind_Vega": "Segmind Vega", "KOALA_700M": "KOALA-700M", "KOALA_1B": "KOALA-1B"}
    SITES = {"Stable Diffusion 1.x": "16", "Stable Diffusion 2.x": "16", "SDXL": "70", "SSD-1B": "34",
             "Segmind Vega": "15", "KOALA-700M": "21", "KOALA-1B": "30"}
    LATENT = LatentLayout(channels=4)
    TEXT = TextFacts(encoder_key=None, repeats_short_prompts=True)
    PRESET_SOURCE = ("the official Layer_LQ 9 of SD1.5, stated structurally: the last decoder block of the coarsest "
                     "attention level onward")

    @classmethod
    def serves(cls, config_name: str) -> bool:
        return True  # any UNet of spatial-transformer blocks (a fine-tune's own config class included)

    @staticmethod
    def matches(diffusion_model: torch.nn.Module) -> bool:
        return is_unet(diffusion_model)

    def find_sites(self) -> list[AttentionSite]:
        sites = find_attention_sites(self.model.get_model_object("diffusion_model"))
        if not sites:
            raise ValueError(f"this {self.family} model has no self-attention in its UNet: MCA-Ctrl has nothing "
                             f"to control.")
        return sites

    @staticmethod
    def min_side(diffusion_model) -> int:
        """2 to the number of the UNet's stride-2 downsamplings."""
        from comfy.ldm.modules.diffusionmodules.openaimodel import Downsample

        return 2 ** sum(isinstance(module, Downsample) for module in diffusion_model.input_blocks.modules())

    def preset_salq_first_site(self) -> int:
        return preset_salq_site(self.sites)

    def text_width(self) -> int:
        return int(self.sites[0].transformer.attn2.to_k.in_features)

    def pooled_width(self) -> int | None:
        return 0 if getattr(self.model.model, "adm_channels", 0) else None  # SDXL family: pooled text in its ADM

    @staticmethod
    def hooks(transformer_options: dict) -> dict[str, object]:
        replaced = transformer_options.get("patches_replace", {}).get("attn1", {})
        return {f"transformer_options['patches_replace']['attn1'][{key}]": item for key, item in replaced.items()}

    def install(self, patched, state: MCAState) -> None:
        existing = patched.model_options.get("transformer_options", {}).get("patches_replace", {}).get("attn1", {})
        for site in self.sites:
            previous = existing.get(site.key) or existing.get(site.key[:2])
            patched.set_model_attn1_replace(MCASiteAttention(state, site.index, previous), *site.key)
        if state.edit_mask is None:
            patched.set_model_attn2_patch(MCACrossAttentionProbe(state, self.sites))
