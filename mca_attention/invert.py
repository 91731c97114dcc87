"""Inverting an image's latent with a ComfyUI MODEL: the schedule it samples with, and the walk (``inversion``)
run inside ComfyUI's own sampler, recorded as the trajectory the MCA Sampler replays."""
from __future__ import annotations

import torch

import comfy.model_sampling
import comfy.sample
import comfy.samplers

from .adapters import model_source
from .inversion import ddim_inversion_walk
from .latents import check_latent
from .trajectory import TRAJECTORY_KEY, from_inversion

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


def same_prompt(positive: list, negative: list) -> bool:
    """True when CFG would be wasted work: cond and uncond are the very same prompt."""
    if len(positive) != len(negative):
        return False
    return all(p[0].shape == n[0].shape and torch.equal(p[0], n[0]) for p, n in zip(positive, negative))


def invert_latent(model, samples: torch.Tensor, positive: list, negative: list, cfg: float,
                  sigmas: torch.Tensor, callback=None, disable_pbar: bool = True,
                  skip_identical_uncond: bool = True) -> dict:
    """Run the inversion walk inside ComfyUI's sampler machinery; returns a LATENT dict.

    The walk follows the model's own parametrisation (eps / v, or flow matching for CONST models).
    The inverted latent is the walk's last state taken out of the model's latent space: ComfyUI's
    closing ``inverse_noise_scaling`` divides by ``1 - sigma``, which a flow walk ending at sigma 1 cannot.
    """
    check_latent(samples, model, "latent")
    ascending = sigmas.flip(0)
    if skip_identical_uncond and same_prompt(positive, negative):
        cfg = 1.0  # identical cond and uncond: CFG changes nothing, so skip the uncond pass
    states: list[torch.Tensor] = []
    sampler = comfy.samplers.KSAMPLER(ddim_inversion_walk,
                                      extra_options={"trajectory": states, "flow": is_flow_model(model)})
    noise = torch.zeros_like(samples)
    comfy.sample.sample_custom(model, noise, cfg, sampler, ascending, positive, negative, samples,
                               callback=callback, disable_pbar=disable_pbar, seed=0)
    trajectory = from_inversion(states, ascending, model_source(model))
    inverted = model.model.process_latent_out(trajectory.latents[0].float()).to(samples.device)
    return {"samples": inverted, TRAJECTORY_KEY: trajectory.to_dict()}
