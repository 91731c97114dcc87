"""Latents as the model's family declares them (``LatentLayout``): checked once where they enter the MCA nodes."""
from __future__ import annotations

import torch

from .adapters import latent_layout, min_latent_side, model_family


def latent_shape_text(channels: int, dims: int) -> str:
    return f"[batch, {channels}, h, w]" if dims == 4 else f"[batch, {channels}, {', '.join(['1'] * (dims - 4))}, h, w]"


def as_model_latent(samples: torch.Tensor, model) -> torch.Tensor:
    """An empty latent as ComfyUI's own samplers take it: a 4-D one (Empty Latent Image, EmptySD3LatentImage) for a
    family whose latent is 5-D (Qwen-Image) gains its frame axis, as ``comfy.sample.fix_empty_latent_channels``
    does. Anything else is returned as it is (and checked by ``check_latent``)."""
    if latent_layout(model).dims == 5 and samples.dim() == 4 and not bool(samples.any()):
        return samples.unsqueeze(2)
    return samples


def check_latent(samples: torch.Tensor, model, name: str) -> None:
    """Refuse latents the MCA nodes cannot use: not the model's declared layout, or too small for it."""
    layout = latent_layout(model)
    if samples.dim() != layout.dims or samples.shape[1] != layout.channels:
        raise ValueError(
            f"{name}: this {model_family(model)} model needs a {layout.channels}-channel latent "
            f"{latent_shape_text(layout.channels, layout.dims)}, got shape {tuple(samples.shape)}. Encode the image "
            f"with the VAE that belongs to the model (VAE Encode)."
        )
    side = min_latent_side(model)
    height, width = samples.shape[-2:]
    if height < side or width < side:
        factor = layout.factor
        raise ValueError(
            f"{name}: the latent is {width}x{height} ({width * factor}x{height * factor} px); the model's coarsest "
            f"level needs at least {side}x{side} ({side * factor}x{side * factor} px). Use a larger image."
        )
