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


def check_aspect(mask: torch.Tensor, height: int, width: int, name: str, target: str) -> None:
    """Refuse a ``[H, W]`` mask whose aspect ratio is not the ``height x width`` it is resized to.

    The same aspect at another size is fine (nearest resize); another aspect would stretch the mask off
    the object it was drawn on. One pixel of the target's grid is the tolerance.
    """
    mask_height, mask_width = mask.shape[-2:]
    if abs(mask_width * height - width * mask_height) > min(mask_height, mask_width):
        raise ValueError(f"{name} is {mask_width}x{mask_height} but {target} is {width}x{height}, another aspect "
                         f"ratio: resizing would stretch the mask off its object. Make the mask on the same image "
                         f"(or one of the same aspect ratio).")


def centroid(flat_mask: torch.Tensor, height: int, width: int) -> tuple[float, float]:
    """The (row, column) centre of a flattened ``height x width`` mask's set positions (the grid's centre if none)."""
    grid = flat_mask.reshape(height, width) > MASK_THRESHOLD
    if not bool(grid.any()):
        return (height - 1) / 2, (width - 1) / 2
    rows, columns = grid.nonzero(as_tuple=True)
    return float(rows.float().mean()), float(columns.float().mean())
