"""DDIM inversion: an independent alphas_cumprod reference, reconstruction, and the skip-CFG rule."""
from __future__ import annotations

import pytest
import torch

from random_models import tiny_prompt

SCALE = 0.18215  # SD1.5 latent scale: the model's internal latent is the VAE latent times this


def _invert_module(pack):
    import mca_ctrl.mca_attention.invert

    return mca_ctrl.mca_attention.invert


def scaled_linear_alphas_cumprod() -> torch.Tensor:
    """SD1.5's schedule (scaled-linear betas 0.00085..0.012, 1000 steps) in float32, as diffusers has it."""
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float32) ** 2
    return torch.cumprod(1 - betas, dim=0)


def model_alphas_cumprod(model) -> torch.Tensor:
    """The model's own table (ComfyUI stores sigma = sqrt((1 - a) / a)); agrees with the above to ~1e-5."""
    sigmas = model.get_model_object("model_sampling").sigmas.double()
    return (1 / (1 + sigmas ** 2)).float()


def test_model_schedule_is_sd15_scaled_linear(tiny_model):
    torch.testing.assert_close(model_alphas_cumprod(tiny_model), scaled_linear_alphas_cumprod(), atol=2e-5, rtol=1e-4)


def official_next_step(unet, z, alpha_prev, alpha, timestep, context):
    """One official inversion step in z-space: eps at the *next* timestep from the current latent."""
    eps = unet(z, torch.tensor([float(timestep)]), context=context)
    x0 = (z - (1 - alpha_prev).sqrt() * eps) / alpha_prev.sqrt()
    return alpha.sqrt() * x0 + (1 - alpha).sqrt() * eps


def ddim_uniform_timesteps(steps: int) -> list[int]:
    stride = 1000 // steps
    return [1 + stride * k for k in range(steps)]  # 1, 1 + 1000/N, ... (diffusers' steps_offset=1)


def to_z_space(trajectory: dict) -> list[torch.Tensor]:
    """Our trajectory (sigma space) clean first, as variance-preserving latents z = x / sqrt(1 + sigma^2)."""
    latents, sigmas = trajectory["latents"][:, 0].flip(0), trajectory["sigmas"].flip(0)
    return [x[None] / (1 + s ** 2) ** 0.5 for x, s in zip(latents, sigmas)]


def run_inversion(pack, model, latent, steps, cfg=1.0, negative=None, sigmas=None):
    invert = _invert_module(pack)
    prompt = tiny_prompt(1)
    sigmas = invert.schedule_sigmas(model, steps, sigmas)
    return invert.invert_latent(model, latent, prompt, negative or prompt, cfg, sigmas)


def test_inversion_matches_the_official_rule_step_by_step(pack, tiny_model):
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    steps = 10
    result = run_inversion(pack, tiny_model, latent, steps)
    ours = to_z_space(result["mca_trajectory"])
    alphas = model_alphas_cumprod(tiny_model)
    unet, context = tiny_model.model.diffusion_model, tiny_prompt(1)[0][0]
    levels = [torch.tensor(1.0)] + [alphas[t] for t in ddim_uniform_timesteps(steps)]
    assert len(ours) == steps + 1
    torch.testing.assert_close(ours[0], latent * SCALE, atol=1e-7, rtol=0)
    z = ours[0]
    with torch.no_grad():
        for step, timestep in enumerate(ddim_uniform_timesteps(steps)):
            expected = official_next_step(unet, ours[step], levels[step], levels[step + 1], timestep, context)
            torch.testing.assert_close(ours[step + 1], expected, atol=1e-5, rtol=1e-5, msg=f"step {step}")
            z = official_next_step(unet, z, levels[step], levels[step + 1], timestep, context)
    # whole walk, reference run on its own: float32 round-off through a random UNet stays tiny
    torch.testing.assert_close(ours[-1], z, atol=1e-4, rtol=1e-4)
    sigmas = result["mca_trajectory"]["sigmas"]
    assert sigmas[-1] == 0 and bool((sigmas[:-1] > sigmas[1:]).all())


DATA_STD = 0.5


def gaussian_denoiser(model):
    """The exact eps-predictor for latents ~ N(0, DATA_STD^2): E[eps | x] = sigma * x / (s^2 + sigma^2).

    A random UNet is no denoiser (its eps jumps between neighbouring latents), so it cannot show DDIM's
    invertibility; this model makes the probability-flow ODE exact, leaving only discretisation error.
    """
    def exact_denoiser(apply_model, args):
        # ComfyUI hands the wrapper x (sigma space) and sigma, and expects the denoised x0 back
        x, sigma = args["input"], args["timestep"].view(-1, 1, 1, 1)
        return x * DATA_STD ** 2 / (DATA_STD ** 2 + sigma ** 2)  # x - sigma * E[eps | x]

    exact = model.clone()
    exact.set_model_unet_function_wrapper(exact_denoiser)
    return exact


def reconstruction_error(pack, model, latent, steps):
    import comfy.sample

    inverted = run_inversion(pack, model, latent, steps)
    prompt = tiny_prompt(1)
    rebuilt = comfy.sample.sample(model, torch.zeros_like(latent), steps, 1.0, "ddim", "ddim_uniform", prompt,
                                  prompt, inverted["samples"], disable_pbar=True, seed=0)
    return float((rebuilt - latent).abs().mean() / latent.abs().mean())


def test_inversion_then_comfyui_ddim_reconstructs_better_with_more_steps(pack, tiny_model):
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1)) * DATA_STD / SCALE
    model = gaussian_denoiser(tiny_model)
    errors = {steps: reconstruction_error(pack, model, latent, steps) for steps in (10, 25, 50)}
    print("relative reconstruction error (mean |diff| / mean |latent|):", errors)
    assert errors[50] < errors[25] < errors[10]
    assert errors[50] < 0.05 and errors[50] < errors[10] / 4  # first order: error ~ 1 / steps


def count_unet_rows(model):
    rows = []

    def wrapper(apply_model, args):
        rows.append(args["input"].shape[0])
        return apply_model(args["input"], args["timestep"], **args["c"])

    counted = model.clone()
    counted.set_model_unet_function_wrapper(wrapper)
    return counted, rows


def test_identical_prompts_skip_the_uncond_pass(pack, tiny_model):
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    counted, rows = count_unet_rows(tiny_model)
    skipped = run_inversion(pack, counted, latent, 5, cfg=7.5)
    assert rows == [1] * 5, "identical cond and uncond must run as one row"
    plain = run_inversion(pack, tiny_model, latent, 5, cfg=1.0)
    assert torch.equal(skipped["samples"], plain["samples"])
    rows.clear()
    run_inversion(pack, counted, latent, 5, cfg=7.5, negative=tiny_prompt(5))
    assert rows == [2] * 5, "a real negative prompt keeps CFG"


def test_a_latent_that_is_not_4_channel_is_refused(pack, tiny_model):
    with pytest.raises(ValueError, match="4-channel latent"):
        run_inversion(pack, tiny_model, torch.zeros(1, 16, 8, 8), 5)
