"""MCA Sampler: the targets sampled in one batch with the condition and subject rows they share."""
from __future__ import annotations

from ..mca_attention.engine import mca_sample
from .common import io, schema
from .progress import sampling_callback


class MCASampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            node_id="MCA_Sampler", display_name="MCA Sampler",
            search_aliases=["subject swap", "masactrl", "personalize", "inpaint subject", "mca-ctrl sampler"],
            description=("Samples the targets with the MCA-patched model in one batch with the condition and subject "
                         "rows they share. Rows with an inversion trajectory are pinned to it; each target starts "
                         "from the condition's start noise and, in swap/add, is kept equal to the condition outside "
                         "the edit mask (local blend). Several targets: MCA Target Prompts, MCA Schedule Sweep on the "
                         "patch, or (generation) the condition latent's batch size as seeds. The steps and schedule "
                         "are those of the subject's MCA DDIM Invert."),
            inputs=[
                io.Model.Input("model", tooltip="The output of MCA Attention Patch (an unpatched model is refused)."),
                io.Conditioning.Input("condition_prompt",
                                      tooltip="Describes the condition image, e.g. 'a photo of a cat'."),
                io.Conditioning.Input("subject_prompt", tooltip="Describes the subject image, e.g. 'a photo of a fox'."),
                io.Conditioning.Input("target_prompt", tooltip="Describes the result, e.g. 'a photo of a fox'; MCA "
                                                               "Target Prompts gives one target per prompt."),
                io.Conditioning.Input("negative", tooltip="One negative prompt shared by all rows."),
                io.Latent.Input("subject", tooltip="The subject image from MCA DDIM Invert; its steps and schedule "
                                                   "are the sampler's."),
                io.Latent.Input("condition", tooltip="Swap/add: the condition image from MCA DDIM Invert (same "
                                                     "steps). Generation: an Empty Latent Image of the output size; "
                                                     "its batch size gives one seed per target."),
                io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=True,
                             tooltip="Generation: the noise seed of the condition and target rows (target j of a "
                                     "batch takes seed + j). Swap/add: no effect (the target starts from the "
                                     "inverted condition image; the log says so)."),
                io.Float.Input("cfg", default=7.5, min=0.0, max=30.0, step=0.1,
                               tooltip="Classifier-free guidance for all rows (official: 7.5)."),
                io.Boolean.Input("local_blend", default=True,
                                 tooltip="Swap/add: keep the condition image outside the edit mask (uses blend_mask, "
                                         "else the patch's edit mask)."),
                io.Sigmas.Input("sigmas", optional=True,
                                tooltip="Optional; must equal the schedule the subject was inverted with (by default "
                                        "the sampler takes that schedule itself)."),
                io.Mask.Input("blend_mask", optional=True,
                              tooltip="Region the target may change; defaults to the patch's edit mask."),
                io.Int.Input("targets_per_pass", optional=True, default=0, min=0, max=256,
                             tooltip="Most targets per sampler call; 0 = as many as ComfyUI's free-memory estimate "
                                     "fits. Each call holds the shared rows again; the log says when the targets "
                                     "are split."),
            ],
            outputs=[
                io.Latent.Output(display_name="target", tooltip="The targets' latents, one per target in cell order "
                                                                "(one without a batch or sweep)."),
                io.Latent.Output(display_name="all_rows", tooltip="All rows [conditions, subject, targets], to "
                                                                  "inspect."),
                io.Mask.Output(display_name="edit_mask",
                               tooltip="Each target's edit region: the patch's edit mask, or in generation the one "
                                       "derived from the subject word's cross-attention (at image size)."),
                io.String.Output(display_name="labels", tooltip="One label per target (what its cell changes), one "
                                                                "per line: for MCA Grid."),
                io.Int.Output(display_name="grid_columns",
                              tooltip="Targets per grid row for MCA Grid's columns: the last swept setting's value "
                                      "count when the targets are a sweep's cells; 0 otherwise (the grid then "
                                      "chooses a square-ish layout)."),
            ],
        )

    @classmethod
    def execute(cls, model, condition_prompt, subject_prompt, target_prompt, negative, subject, condition, seed,
                cfg, local_blend, sigmas=None, blend_mask=None, targets_per_pass=0) -> io.NodeOutput:
        out = mca_sample(model, condition_prompt, subject_prompt, target_prompt, negative, subject, condition, seed,
                         cfg, sigmas, blend_mask=blend_mask, local_blend=local_blend,
                         make_callback=lambda steps: sampling_callback(model, steps), disable_pbar=False,
                         targets_per_pass=targets_per_pass)
        return io.NodeOutput({"samples": out.targets}, {"samples": out.rows}, out.edit_mask_images(),
                             "\n".join(out.labels), out.columns)
