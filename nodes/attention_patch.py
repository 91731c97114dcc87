"""MCA Attention Patch: a clone of MODEL whose self-attention runs SAGI and SALQ for the target rows."""
from __future__ import annotations

import logging

from ..mca_attention.adapters import ADAPTERS, REFUSED_FAMILIES, SUPPORTED_FAMILIES, family_list
from ..mca_attention.adapters.base import tell_the_ui
from ..mca_attention.comfy_patch import mca_state, patch_model
from ..mca_attention.resolve import PRESET, ScheduleRequest
from ..mca_attention.schedule import check_order
from ..mca_attention.subject_words import SubjectWords, index_list
from ..mca_attention.sweep import check_values
from ..mca_attention.tasks import PRESETS, Task
from .common import SWEEP, io, schema

SUBJECT_POSITIONS = {"own": False, "edit region": True}  # widget value -> patch_model's move_subject
SITE_COUNTS = "; ".join(f"{name} {count}" for adapter in ADAPTERS for name, count in adapter.SITES.items())
POSITION_FAMILIES = ", ".join(family_list(adapter) for adapter in ADAPTERS if adapter.HAS_POSITIONS)
SEARCH_ALIASES = ["subject swap", "subject addition", "masactrl", "personalize", "inpaint subject",
                  "attention control", "mca-ctrl"]
logger = logging.getLogger(__name__)


def _fraction(name: str, tooltip: str) -> io.Float.Input:
    return io.Float.Input(name, default=PRESET, min=-1.0, max=1.0, step=0.01,
                          tooltip=tooltip + " Fraction of the steps, 0..1; -1 uses the preset's official value.")


class MCAAttentionPatch(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            node_id="MCA_AttentionPatch", display_name="MCA Attention Patch", search_aliases=SEARCH_ALIASES,
            description=("Patches the model's self-attention for MCA-Ctrl (UNets through their self-attention, DiTs "
                         "through their joint attention): each target row of the MCA Sampler batch takes its subject "
                         "from the subject image (SAGI early, SALQ later) and its background from the condition row. "
                         "Returns a patched clone; the input MODEL is untouched. Acts only inside the MCA Sampler."),
            inputs=[
                io.Model.Input("model", tooltip="Supported: " + SUPPORTED_FAMILIES + ". Not yet: " + REFUSED_FAMILIES
                                                + " (refused with their name)."),
                io.Mask.Input("subject_mask", tooltip="1 on the subject inside the subject image (SLM Mask)."),
                io.Combo.Input("preset", options=[task.value for task in Task], default=Task.SWAP.value,
                               tooltip="The task: swap and add need an edit_mask, an inverted condition image and "
                                       "keep the condition outside the mask; generation starts the condition from "
                                       "noise. Sets the official schedule; the widgets below override it."),
                _fraction("sagi_start", "S_GI: first step of Self-Attention Global Injection."),
                _fraction("sagi_end", "E_GI: SAGI stops before this step (official: 10% of the steps)."),
                _fraction("salq_start", "S_LQ: first step of Self-Attention Local Query (official swap/add: step 4 "
                                        "of 50)."),
                _fraction("salq_end", "E_LQ: SALQ stops before this step (official: the last step)."),
                io.Float.Input("salq_sites", default=PRESET, min=-1.0, max=1.0, step=0.01,
                               tooltip="Layer_LQ on any model: SALQ runs at the self-attention sites from this "
                                       "fraction of the model on (sites in call order: a UNet's encoder, middle, "
                                       "decoder; a DiT's blocks; 0 = every site). -1 uses the preset: every site for "
                                       "generation and on DiTs; for swap/add on a UNet the last decoder block of the "
                                       "coarsest level onward (the official site 9 of 16 on Stable Diffusion 1.x)."),
                io.Int.Input("salq_first_site", default=-1, min=-1, max=1000,
                             tooltip="Advanced: Layer_LQ as a raw site index (overrides salq_sites; -1 = off). Site "
                                     "counts: " + SITE_COUNTS + ". The log shows the schedule table of the model."),
                io.Mask.Input("edit_mask", optional=True,
                              tooltip="1 where the subject goes in the condition/target image: the dilated mask of "
                                      "the object to replace (swap), a drawn region (add) or a layout mask "
                                      "(generation). Required for swap/add."),
                io.Clip.Input("clip", optional=True,
                              tooltip="Generation without edit_mask: the CLIP that encodes the target prompt, to "
                                      "find the subject word's tokens with the model's own tokenizer."),
                io.String.Input("target_text", optional=True, multiline=True, default="",
                                tooltip="Generation without edit_mask: the target prompt's text, exactly as in the "
                                        "Target prompt's CLIP Text Encode (the sampler refuses a different prompt)."),
                io.String.Input("subject_words", optional=True, default="",
                                tooltip="Generation without edit_mask: the subject word(s) in the target prompt, "
                                        "comma-separated (e.g. 'dog')."),
                io.String.Input("token_indices", optional=True, default="",
                                tooltip="Alternative to subject_words: token positions in the target prompt, "
                                        "comma-separated (1 = first word's first token)."),
                SWEEP.Input("sweep", optional=True,
                            tooltip="Optional: the schedule cells of MCA Schedule Sweep. Each cell is this node's "
                                    "schedule with the swept settings replaced; the MCA Sampler makes one target per "
                                    "cell, in one batch."),
                io.Combo.Input("subject_position", optional=True, options=list(SUBJECT_POSITIONS), default="own",
                               tooltip="RoPE models (" + POSITION_FAMILIES + "): 'own' keeps the subject's keys at "
                                       "their positions in the subject image (the paper's rule carried over); 'edit "
                                       "region' moves them onto the edit region for SALQ (the re-positioning of "
                                       "FreeGraftor / Personalize Anything), for a subject that sits elsewhere in its "
                                       "image. Models without positions (UNets): 'own' only."),
            ],
            outputs=[io.Model.Output(tooltip="A clone of the model with MCA attention at every self-attention site.")],
        )

    @classmethod
    def validate_inputs(cls, sagi_start=None, sagi_end=None, salq_start=None, salq_end=None, salq_sites=None,
                        salq_first_site=None, token_indices=None) -> bool | str:
        """The settings that need no model, checked when the prompt is queued (linked inputs arrive as None)."""
        settings = dict(sagi_start=sagi_start, sagi_end=sagi_end, salq_start=salq_start, salq_end=salq_end,
                        salq_sites=salq_sites, salq_first_site=salq_first_site)
        try:
            for name, value in settings.items():
                if value is not None:
                    check_values(name, (value,), "got")
            for op in ("sagi", "salq"):  # a preset value (-1) is known only for the model's family, at run time
                start, end = settings[f"{op}_start"], settings[f"{op}_end"]
                if None not in (start, end) and PRESET not in (start, end):
                    check_order(op, start, end)
            if token_indices:
                index_list(token_indices)
        except ValueError as error:
            return f"MCA Attention Patch: {error}"
        return True

    @classmethod
    def execute(cls, model, subject_mask, preset, sagi_start, sagi_end, salq_start, salq_end, salq_sites,
                salq_first_site, edit_mask=None, clip=None, target_text="", subject_words="", token_indices="",
                subject_position="own", sweep=()) -> io.NodeOutput:
        settings = dict(sagi_start=sagi_start, sagi_end=sagi_end, salq_start=salq_start, salq_end=salq_end,
                        salq_sites=salq_sites, salq_first_site=salq_first_site)
        patched = patch_model(model, PRESETS[Task(preset)], ScheduleRequest(settings, tuple(sweep)), subject_mask,
                              edit_mask, SubjectWords(clip, target_text, subject_words, token_indices),
                              move_subject=SUBJECT_POSITIONS[subject_position])
        state = mca_state(patched)
        cells = len(state.schedules)
        summary = (f"MCA Attention Patch: {state.family} model, {state.num_sites} self-attention sites, {preset} "
                   f"preset, {cells} schedule cell{'s' * (cells != 1)}, SALQ from site "
                   f"{', '.join(map(str, sorted({s.salq_first_site for s in state.schedules})))}")
        logger.info("%s; the MCA Sampler logs the step x site table.", summary)
        tell_the_ui(summary)
        return io.NodeOutput(patched)
