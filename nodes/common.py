"""Shared node constants and input conversions."""
from __future__ import annotations

import torch

import comfy.model_sampling
import comfy.samplers

from ..mca_attention.adapters import latent_channels, min_latent_side, model_family

CATEGORY = "MCA-Ctrl"
DEFAULT_SCHEDULER = "ddim_uniform"  # the official DDIM schedule (eps / v-prediction models)
FLOW_SCHEDULER = "simple"  # ComfyUI's own schedule for flow models (Flux, Chroma), shift from the MODEL


def is_flow_model(model) -> bool:
    """True for flow-matching models (ComfyUI's CONST sampling: Flux, Chroma)."""
    return isinstance(model.get_model_object("model_sampling"), comfy.model_sampling.CONST)


def schedule_sigmas(model, steps: int, sigmas: torch.Tensor | None) -> torch.Tensor:
    """The sampling schedule: an explicit SIGMAS input, else the family's default scheduler.

    eps / v models: ``ddim_uniform`` (the official DDIM one); flow models: ``simple`` over the model's
    own (shifted) sigmas, as ComfyUI's Flux and Chroma templates sample.
    """
    if sigmas is not None:
        sigmas = sigmas.flatten().float().cpu()
        if sigmas.numel() < 2:
            raise ValueError("the SIGMAS input needs at least two values (one step)")
        return sigmas
    if steps < 1:
        raise ValueError("steps must be at least 1")
    scheduler = FLOW_SCHEDULER if is_flow_model(model) else DEFAULT_SCHEDULER
    return comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), scheduler, steps).cpu()


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
    """Refuse latents the MCA nodes cannot use: not the model's ``[batch, C, h, w]``, or too small for it."""
    channels = latent_channels(model)
    if samples.dim() != 4 or samples.shape[1] != channels:
        raise ValueError(
            f"{name}: this {model_family(model)} model needs a {channels}-channel latent [batch, {channels}, h, w], got "
            f"shape {tuple(samples.shape)}. Encode the image with the VAE that belongs to the model (VAE Encode)."
        )
    side = min_latent_side(model)
    height, width = samples.shape[-2:]
    if height < side or width < side:
        raise ValueError(
            f"{name}: the latent is {width}x{height} ({width * 8}x{height * 8} px); the model's coarsest level "
            f"needs at least {side}x{side} ({side * 8}x{side * 8} px). Use a larger image."
        )
