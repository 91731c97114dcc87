"""Masks and the image regions the paper's ``_sub`` and ``_back`` metrics compare.

Subject region (``_sub``): pixels outside the mask set to black, cropped to the mask's bounding box,
padded with black to a square (so the metric model's centre crop keeps the whole subject).
Background (``_back``): the whole image with the edit mask's pixels set to black; the same mask is
applied to the result and to the condition image, so only the background outside the edit is compared.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


class MaskError(ValueError):
    """A mask that cannot define a region (empty, full, or not the image's size)."""


def load_rgb(path: Path) -> np.ndarray:
    """An image file as float32 RGB ``[H, W, 3]`` in 0..1."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def load_mask(path: Path) -> np.ndarray:
    """A mask file (white = 1) as a bool ``[H, W]`` array, thresholded at one half."""
    with Image.open(path) as image:
        return np.asarray(image.convert("L"), dtype=np.float32) / 255.0 > 0.5


def to_image(pixels: np.ndarray) -> Image.Image:
    """float RGB ``[H, W, 3]`` in 0..1 as a PIL image."""
    return Image.fromarray((np.clip(pixels, 0.0, 1.0) * 255.0).round().astype(np.uint8), "RGB")


def check_mask(mask: np.ndarray, image: np.ndarray, name: str) -> np.ndarray:
    """``mask`` as bool if it has the image's size and marks at least one pixel."""
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.shape != image.shape[:2]:
        raise MaskError(f"{name} is {_size(mask)} but its image is {_size(image)}: the mask lies (partly) outside the "
                        f"image; give a mask of exactly the image's size")
    mask = mask > 0.5 if mask.dtype != bool else mask
    if not mask.any():
        raise MaskError(f"{name} is empty (no pixel above 0.5): there is no region to compare; check the phrase "
                        f"or the mask file")
    return mask


def subject_region(image: np.ndarray, mask: np.ndarray, name: str = "subject mask") -> Image.Image:
    """The masked subject: black outside the mask, cropped to its bounding box, padded to a square."""
    mask = check_mask(mask, image, name)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    crop = (image * mask[..., None])[top:bottom, left:right]
    side = max(crop.shape[:2])
    square = np.zeros((side, side, 3), dtype=np.float32)
    y, x = (side - crop.shape[0]) // 2, (side - crop.shape[1]) // 2
    square[y:y + crop.shape[0], x:x + crop.shape[1]] = crop
    return to_image(square)


def background_region(image: np.ndarray, mask: np.ndarray, name: str = "edit mask") -> Image.Image:
    """The image with the masked (edited) pixels set to black."""
    mask = check_mask(mask, image, name)
    if mask.all():
        raise MaskError(f"{name} covers the whole image: no background is left to compare")
    return to_image(image * ~mask[..., None])


def _size(array: np.ndarray) -> str:
    return f"{array.shape[1]}x{array.shape[0]}" if array.ndim >= 2 else f"shape {array.shape}"
