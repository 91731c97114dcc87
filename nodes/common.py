"""Shared node constants and input conversions."""
from __future__ import annotations

import torch

import comfy.samplers

from ..mca_attention.comfy_patch import min_latent_side

CATEGORY = "MCA-Ctrl"
DEFAULT_SCHEDULER = "ddim_uniform"


def schedule_sigmas(model, steps: int, sigmas: torch.Tensor | None) -> torch.Tensor:
    """The sampling schedule: an explicit SIGMAS input, else ``ddim_uniform`` (the official DDIM one)."""
    if sigmas is not None:
        sigmas = sigmas.flatten().float().cpu()
        if sigmas.numel() < 2:
            raise ValueError("the SIGMAS input needs at least two values (one step)")
        return sigmas
    if steps < 1:
        raise ValueError("steps must be at least 1")
    model_sampling = model.get_model_object("model_sampling")
    return comfy.samplers.calculate_sigmas(model_sampling, DEFAULT_SCHEDULER, steps).cpu()


def single_prompt(conditioning: list, name: str) -> tuple[torch.Tensor, dict]:
    """The one ``[1, tokens, dim]`` prompt of a CONDITIONING, with its options."""
    if len(conditioning) != 1:
        raise ValueError(
            f"{name}: MCA needs one plain prompt per row, got a conditioning with {len(conditioning)} entries "
            f"(from Conditioning Combine / area nodes). Connect a CLIP Text Encode output directly."
        )
    tensor, options = conditioning[0]
    if tensor.shape[0] != 1:
        raise ValueError(f"{name}: expected one prompt, got a batch of {tensor.shape[0]}")
    return tensor, options


def check_latent(samples: torch.Tensor, model, name: str) -> None:
    """Refuse latents the MCA nodes cannot use: not ``[batch, 4, h, w]``, or smaller than the coarsest site."""
    if samples.dim() != 4 or samples.shape[1] != 4:
        raise ValueError(
            f"{name}: expected a 4-channel latent [batch, 4, h, w], got shape {tuple(samples.shape)}. "
            f"Encode the image with the VAE of the same checkpoint (VAE Encode)."
        )
    side = min_latent_side(model.get_model_object("diffusion_model"))
    height, width = samples.shape[-2:]
    if height < side or width < side:
        raise ValueError(
            f"{name}: the latent is {width}x{height} ({width * 8}x{height * 8} px); the model's coarsest level "
            f"level needs at least {side}x{side} ({side * 8}x{side * 8} px). Use a larger image."
        )
