"""Mask operations of the SLM: union of per-object masks and 3x3 dilation."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def union(masks: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """OR of ``[n, H, W]`` masks (an all-zero ``[H, W]`` mask when there are none)."""
    if masks.shape[0] == 0:
        return torch.zeros(height, width)
    return masks.float().amax(0)


def dilate(mask: torch.Tensor, iterations: int) -> torch.Tensor:
    """Binary dilation of ``[..., H, W]`` with a 3x3 square kernel, ``iterations`` times."""
    if iterations <= 0:
        return mask
    shape = mask.shape
    grown = mask.float().reshape(-1, 1, *shape[-2:])
    for _ in range(iterations):
        grown = F.max_pool2d(grown, kernel_size=3, stride=1, padding=1)
    return grown.reshape(shape)
