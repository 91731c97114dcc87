"""Mask handling shared by the attention patch and the sampler: one resize rule for every site."""
from __future__ import annotations

import torch
import torch.nn.functional as F

MASK_THRESHOLD = 0.5  # a mask value above this counts as "set" (subject keys, edit region, emptiness checks)


def as_single_mask(mask: torch.Tensor, name: str) -> torch.Tensor:
    """A ComfyUI MASK ``[1, H, W]`` or ``[H, W]`` as a float ``[H, W]`` in 0..1."""
    if mask.dim() == 3:
        if mask.shape[0] != 1:
            raise ValueError(f"{name}: expected one mask, got a batch of {mask.shape[0]}; pick one with a mask/batch node")
        mask = mask[0]
    if mask.dim() != 2:
        raise ValueError(f"{name}: expected a [H, W] mask, got shape {tuple(mask.shape)}")
    return mask.float().clamp(0, 1)


def resize_mask(mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Nearest-neighbour resize of ``[H, W]`` to ``[height, width]`` (the official rule)."""
    if tuple(mask.shape) == (height, width):
        return mask
    return F.interpolate(mask[None, None], size=(height, width), mode="nearest")[0, 0]


def site_mask(mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The mask at an attention site of ``height x width`` tokens, flattened row-major."""
    return resize_mask(mask, height, width).reshape(-1)
