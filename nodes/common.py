"""Shared node constants and input conversions."""
from __future__ import annotations

import torch

import comfy.samplers

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


def check_sd15_latent(samples: torch.Tensor, name: str) -> None:
    """Refuse latents that are not SD1.5's 4-channel ``[batch, 4, h, w]``."""
    if samples.dim() != 4 or samples.shape[1] != 4:
        raise ValueError(
            f"{name}: expected an SD1.5 latent [batch, 4, h, w], got shape {tuple(samples.shape)}. "
            f"Encode the image with an SD1.5 VAE (VAE Encode from the SD1.5 checkpoint)."
        )
