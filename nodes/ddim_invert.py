"""MCA DDIM Invert: a real image's latent -> its inverted noise plus the whole trajectory."""
from __future__ import annotations

import torch

import comfy.sample
import comfy.samplers

from ..mca_attention.adapters import model_source
from ..mca_attention.inversion import ddim_inversion_walk
from ..mca_attention.trajectory import TRAJECTORY_KEY, from_inversion
from ..mca_attention.latents import check_latent
from .common import CATEGORY, is_flow_model, schedule_sigmas
from .progress import sampling_callback


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


class MCADDIMInvert:
    DESCRIPTION = ("Deterministic inversion of a VAE-encoded image: DDIM (the MCA-Ctrl / MasaCtrl update) for "
                   "SD1.x/SD2.x/SDXL, its flow-matching twin for Flux and Chroma (taken from the MODEL). "
                   "Outputs the inverted noise and carries the latent at every noise level, which the MCA "
                   "Sampler replays to pin the subject and condition rows.")
    CATEGORY = CATEGORY
    FUNCTION = "invert"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("inverted",)
    OUTPUT_TOOLTIPS = ("The inverted noise, with the whole inversion trajectory attached for MCA Sampler.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The model that will sample (unpatched is fine; the MCA patch does not act here). Its "
                                               "sampling type (eps, v or flow) and shift decide the inversion."}),
                "latent": ("LATENT", {"tooltip": "The image encoded with VAE Encode."}),
                "positive": ("CONDITIONING", {"tooltip": "Inversion prompt; an empty prompt is the paper's setting."}),
                "steps": ("INT", {"default": 50, "min": 1, "max": 1000,
                                  "tooltip": "Denoising steps (ddim_uniform schedule; simple for flow models such as Flux and Chroma); "
                                             "the MCA Sampler takes its steps from the subject's inversion. Invert "
                                             "subject and condition with the same steps."}),
                "cfg": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 30.0, "step": 0.1,
                                  "tooltip": "Guidance during inversion; 1.0 reconstructs best. Skipped when the "
                                             "negative equals the prompt (or is not connected)."}),
            },
            "optional": {
                "negative": ("CONDITIONING", {"tooltip": "Only used when cfg != 1 and it differs from the prompt."}),
                "sigmas": ("SIGMAS", {"tooltip": "Optional schedule from any scheduler node (noisiest first); "
                                                 "overrides steps. Give the MCA Sampler the same one."}),
            },
        }

    def invert(self, model, latent, positive, steps, cfg, negative=None, sigmas=None):
        schedule = schedule_sigmas(model, steps, sigmas)
        callback = sampling_callback(model, schedule.numel() - 1)
        result = invert_latent(model, latent["samples"], positive, negative if negative is not None else positive,
                               cfg, schedule, callback=callback, disable_pbar=False)
        return ({**{k: v for k, v in latent.items() if k not in ("samples", "noise_mask")}, **result},)


NODE_CLASS_MAPPINGS = {"MCA_DDIMInvert": MCADDIMInvert}
NODE_DISPLAY_NAME_MAPPINGS = {"MCA_DDIMInvert": "MCA DDIM Invert"}
