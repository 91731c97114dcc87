"""Shared node constants and the sampling schedule the nodes default to."""
from __future__ import annotations

import torch

import comfy.model_sampling
import comfy.samplers


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
