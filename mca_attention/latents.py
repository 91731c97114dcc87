"""Latents as the model's family declares them (``LatentLayout``): checked once where they enter the MCA nodes."""
from __future__ import annotations

import inspect

import torch

from .adapters import latent_layout, min_latent_side, model_family


def latent_shape_text(channels: int, dims: int) -> str:
    return f"[batch, {channels}, h, w]" if dims == 4 else f"[batch, {channels}, {', '.join(['1'] * (dims - 4))}, h, w]"


# What neighbouring nodes attach to a LATENT besides ``samples``, and what the MCA nodes do with it.
RATIO_KEYS = ("downscale_ratio_spacial", "downscale_ratio_temporal")  # newer Empty Latent Image: honoured
REFUSED_KEYS = {
    "noise_mask": "a noise mask (Set Latent Noise Mask, VAE Encode (for Inpainting), InpaintModelConditioning), "
                  "which would limit the change to a region: MCA keeps the condition outside its edit mask itself. "
                  "Encode with plain VAE Encode and connect the region as MCA Attention Patch's edit_mask",
    "batch_index": "batch indices (Latent From Batch, Repeat Latent Batch, Rebatch Latents), which pick each image's "
                   "noise: MCA draws target j's noise from seed + j. Use the sampler's seed, or a condition batch of "
                   "several images for several seeds",
}


def model_latent(latent: dict, model, name: str, known: tuple[str, ...] = ()) -> torch.Tensor:
    """The ``samples`` of a LATENT as the model samples them, every other key honoured or refused by name: an empty
    latent is made the model's own as ComfyUI's samplers make it (``comfy.sample.fix_empty_latent_channels``:
    channels, the frame axis of a 5-D family, and on newer ComfyUI the size from ``downscale_ratio_spacial``);
    ``known`` are keys the caller reads itself (the inversion trajectory)."""
    for key in latent:
        if key in REFUSED_KEYS:
            raise ValueError(f"{name} carries {REFUSED_KEYS[key]}.")
        if key not in ("samples", *RATIO_KEYS, *known):
            raise ValueError(f"{name} carries '{key}', which another node attached and MCA does not know what to do "
                             f"with: connect the latent straight from VAE Encode, Empty Latent Image or MCA DDIM "
                             f"Invert.")
    samples = latent["samples"]
    if not bool(samples.any()):
        import comfy.sample

        accepted = inspect.signature(comfy.sample.fix_empty_latent_channels).parameters
        ratios = {key: latent[key] for key in RATIO_KEYS if key in latent and key in accepted}
        samples = comfy.sample.fix_empty_latent_channels(model, samples, **ratios)
    check_latent(samples, model, name)
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
