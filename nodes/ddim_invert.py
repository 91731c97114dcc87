"""MCA DDIM Invert: a real image's latent -> its inverted noise plus the whole trajectory."""
from __future__ import annotations

from ..mca_attention.invert import invert_latent, schedule_sigmas
from ..mca_attention.latents import model_latent
from .common import io, schema
from .progress import sampling_callback


class MCADDIMInvert(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            node_id="MCA_DDIMInvert", display_name="MCA DDIM Invert",
            search_aliases=["ddim inversion", "flow inversion", "invert image", "image to noise"],
            description=("Deterministic inversion of a VAE-encoded image: DDIM (the MCA-Ctrl / MasaCtrl update) for "
                         "eps / v models (the UNets), its flow-matching twin for flow models (the DiTs; taken from "
                         "the MODEL). Outputs the inverted noise and carries the latent at every noise level, which "
                         "the MCA Sampler replays to pin the subject and condition rows."),
            inputs=[
                io.Model.Input("model", tooltip="The model that will sample (unpatched is fine; the MCA patch does "
                                                "not act here). Its sampling type (eps, v or flow) and shift decide "
                                                "the inversion."),
                io.Latent.Input("latent", tooltip="The image encoded with VAE Encode."),
                io.Conditioning.Input("positive", tooltip="Inversion prompt; an empty prompt is the paper's setting."),
                io.Int.Input("steps", default=50, min=1, max=1000,
                             tooltip="Denoising steps (ddim_uniform schedule; simple for flow models, the DiTs); the "
                                     "MCA Sampler takes its steps from the subject's inversion. Invert subject and "
                                     "condition with the same steps."),
                io.Float.Input("cfg", default=1.0, min=0.0, max=30.0, step=0.1,
                               tooltip="Guidance during inversion; 1.0 reconstructs best. Skipped when the negative "
                                       "equals the prompt (or is not connected)."),
                io.Conditioning.Input("negative", optional=True,
                                      tooltip="Only used when cfg != 1 and it differs from the prompt."),
                io.Sigmas.Input("sigmas", optional=True,
                                tooltip="Optional schedule from any scheduler node (noisiest first); overrides steps. "
                                        "Give the MCA Sampler the same one."),
            ],
            outputs=[io.Latent.Output(display_name="inverted", tooltip="The inverted noise, with the whole inversion "
                                                                       "trajectory attached for MCA Sampler.")],
        )

    @classmethod
    def execute(cls, model, latent, positive, steps, cfg, negative=None, sigmas=None) -> io.NodeOutput:
        schedule = schedule_sigmas(model, steps, sigmas)
        callback = sampling_callback(model, schedule.numel() - 1)
        result = invert_latent(model, model_latent(latent, model, "latent"), positive,
                               negative if negative is not None else positive, cfg, schedule, callback=callback,
                               disable_pbar=False)
        return io.NodeOutput(result)
