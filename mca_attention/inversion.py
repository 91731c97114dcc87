"""Deterministic inversion in ComfyUI's sigma space: DDIM for eps/v models, its flow-matching twin for CONST.

eps / v-prediction (SD1.x, SD2.x, SDXL: ``x = x0 + sigma * eps``): the official MCA-Ctrl / MasaCtrl inversion predicts the noise at the *next* (noisier) timestep from
the *current* latent, then takes the DDIM step ``x_next = x0_pred + sigma_next * eps``. In sigma space
the current variance-preserving latent ``z = x / sqrt(1 + sigma^2)`` is fed at ``sigma_next`` by
scaling ``x`` to ``x * sqrt(1 + sigma_next^2) / sqrt(1 + sigma_cur^2)``; the step itself is Euler in
sigma. (ComfyUI's FlipSigmas + Euler would evaluate at the current sigma instead.)

Flow matching (Flux, Chroma: ComfyUI's ``CONST``, ``x = (1 - sigma) * x0 + sigma * noise``): the same
rule with the model's input being ``x`` itself, so the current latent is fed unscaled at the next
sigma and the step ``x + v * (sigma_next - sigma)`` uses the velocity ``v = (x - denoised) / sigma``
predicted there (the clean level sigma = 0 has no velocity to read in ComfyUI's denoised form).

The function has the k-diffusion sampler signature so it runs inside ComfyUI's own sampling
machinery (CFG, model patches, devices) as a ``KSAMPLER``, yet it knows no ComfyUI type.
"""
from __future__ import annotations

import torch


@torch.no_grad()
def ddim_inversion_walk(model, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict | None = None,
                        callback=None, disable: bool | None = None, trajectory: list | None = None,
                        flow: bool = False) -> torch.Tensor:
    """Walk ``x`` up the ascending ``sigmas`` (``sigmas[0]`` is the clean level, usually 0).

    ``model(x, sigma, **extra_args)`` returns the denoised prediction. ``trajectory``, when a list,
    receives the latent at every sigma (``len(sigmas)`` tensors, clean first). ``flow`` selects the
    flow-matching parametrisation (no variance-preserving rescale of the fed latent).
    """
    extra_args = {} if extra_args is None else extra_args
    if bool((sigmas[1:] <= sigmas[:-1]).any()):
        raise ValueError("DDIM inversion needs ascending sigmas (clean to noisy)")
    ones = x.new_ones([x.shape[0]])
    if trajectory is not None:
        trajectory.append(x)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x_feed = x if flow else x * ((1 + sigma_next ** 2) / (1 + sigma ** 2)) ** 0.5
        denoised = model(x_feed, sigma_next * ones, **extra_args)
        eps = (x_feed - denoised) / sigma_next
        x = x + eps * (sigma_next - sigma)
        if trajectory is not None:
            trajectory.append(x)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigma_next, "sigma_hat": sigma_next, "denoised": denoised})
    return x
