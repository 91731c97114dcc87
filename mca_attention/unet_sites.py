"""The self-attention sites of a ComfyUI UNet, and a way to name sites that means the same on every family.

Sites are found by walking the UNet (``input_blocks``, ``middle_block``, ``output_blocks``, and the
``transformer_blocks`` of every spatial transformer in them): the walk order is ComfyUI's call order.
SD1.x/2.x have 16 sites, SDXL 70, its distilled variants fewer (SSD-1B 34, Segmind Vega 15, KOALA-700M
21, KOALA-1B 30). Layer_LQ is given as a fraction of a model's sites in that order (``resolve.site_from_fraction``);
each family's preset comes from one structural rule (``preset_salq_site``), which on SD1.5 is the
official site 9.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class AttentionSite:
    """One self-attention site: its ``patches_replace`` key, its index in UNet order and its decoder level."""

    block_name: str
    block_number: int
    block_index: int
    index: int
    level: int  # resolution level counted in the walk: a new level after every down- or upsampling
    transformer: torch.nn.Module = field(compare=False, repr=False)

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.block_name, self.block_number, self.block_index)


def _resamples(block: torch.nn.Module) -> bool:
    return any(type(module).__name__ in ("Downsample", "Upsample") for module in block)


def find_attention_sites(diffusion_model: torch.nn.Module) -> list[AttentionSite]:
    """Every self-attention site of a UNet in call order (no hard-coded keys, any depth)."""
    groups = [("input", list(diffusion_model.input_blocks))]
    middle = getattr(diffusion_model, "middle_block", None)
    if middle is not None:
        groups.append(("middle", [middle]))
    groups.append(("output", list(diffusion_model.output_blocks)))
    sites: list[AttentionSite] = []
    level = 0
    for block_name, blocks in groups:
        for number, block in enumerate(blocks):
            if block_name == "input" and _resamples(block):
                level += 1  # an input block that downsamples holds nothing else
                continue
            for module in block:
                for depth, transformer in enumerate(getattr(module, "transformer_blocks", [])):
                    sites.append(AttentionSite(block_name, number, depth, len(sites), level, transformer))
            if block_name == "output" and _resamples(block):
                level += 1  # an output block ends with its upsampling: the next block is a finer level
    return sites


def preset_salq_site(sites: list[AttentionSite]) -> int:
    """SALQ's first site by the official SD1.5 choice, stated structurally.

    On SD1.5, Layer_LQ = 9 is the (only) site of the last spatial transformer of the decoder's coarsest
    attention level (output block 5, 16 x 16 for a 512 px image): SALQ covers that block and every finer
    level. The same rule on another family: the first site of the last decoder block, at the decoder's
    coarsest attention level, that holds attention. (SDXL: site 54 of 70, output block 2, one of the
    three sites MasaCtrl's SDXL script tries (its 'layers'): 44, 54, 64.)
    """
    decoder = [site for site in sites if site.block_name == "output"]
    if not decoder:
        return len(sites)
    coarsest = [site for site in decoder if site.level == decoder[0].level]
    last_block = coarsest[-1].block_number
    return next(site.index for site in coarsest if site.block_number == last_block)

