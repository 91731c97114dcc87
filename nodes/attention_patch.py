"""MCA Attention Patch: a clone of MODEL whose self-attention runs SAGI and SALQ for the target rows."""
from __future__ import annotations

import logging

from ..mca_attention.adapters import ADAPTERS, REFUSED_FAMILIES, SUPPORTED_FAMILIES, family_list
from ..mca_attention.comfy_patch import mca_state, patch_model
from ..mca_attention.resolve import PRESET, ScheduleRequest
from ..mca_attention.subject_words import SubjectWords
from ..mca_attention.tasks import PRESETS, Task
from .common import CATEGORY

SUBJECT_POSITIONS = {"own": False, "edit region": True}  # widget value -> patch_model's move_subject
SITE_COUNTS = "; ".join(f"{name} {count}" for adapter in ADAPTERS for name, count in adapter.SITES.items())
POSITION_FAMILIES = ", ".join(family_list(adapter) for adapter in ADAPTERS if adapter.HAS_POSITIONS)
logger = logging.getLogger(__name__)


def _fraction(tooltip: str) -> dict:
    return {"default": PRESET, "min": -1.0, "max": 1.0, "step": 0.01,
            "tooltip": tooltip + " Fraction of the steps, 0..1; -1 uses the preset's official value."}


class MCAAttentionPatch:
    DESCRIPTION = ("Patches the model's self-attention for MCA-Ctrl (UNets through their self-attention, DiTs through "
                   "their joint attention): each target row of the MCA Sampler batch takes its subject from the "
                   "subject image (SAGI early, SALQ later) and its background from the condition row. Returns a "
                   "patched clone; the input MODEL is untouched. Acts only inside the MCA Sampler.")
    CATEGORY = CATEGORY
    FUNCTION = "patch"
    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = ("A clone of the model with MCA attention at every self-attention site.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "Supported: " + SUPPORTED_FAMILIES + ". Not yet: " + REFUSED_FAMILIES
                                               + " (refused with their name)."}),
                "subject_mask": ("MASK", {"tooltip": "1 on the subject inside the subject image (SLM Mask)."}),
                "preset": ([task.value for task in Task], {
                    "default": Task.SWAP.value,
                    "tooltip": "The task: swap and add need an edit_mask, an inverted condition image and keep the "
                               "condition outside the mask; generation starts the condition from noise. Sets the "
                               "official schedule; the widgets below override it."}),
                "sagi_start": ("FLOAT", _fraction("S_GI: first step of Self-Attention Global Injection.")),
                "sagi_end": ("FLOAT", _fraction("E_GI: SAGI stops before this step (official: 10% of the steps).")),
                "salq_start": ("FLOAT", _fraction("S_LQ: first step of Self-Attention Local Query (official swap/add: step 4 of 50).")),
                "salq_end": ("FLOAT", _fraction("E_LQ: SALQ stops before this step (official: the last step).")),
                "salq_sites": ("FLOAT", {
                    "default": PRESET, "min": -1.0, "max": 1.0, "step": 0.01,
                    "tooltip": "Layer_LQ on any model: SALQ runs at the self-attention sites from this fraction of "
                               "the model on (sites in call order: a UNet's encoder, middle, decoder; a DiT's blocks; "
                               "0 = every site). -1 uses the preset: every site for generation and on DiTs; for "
                               "swap/add on a UNet the last decoder block of the coarsest level onward (the official "
                               "site 9 of 16 on Stable Diffusion 1.x)."}),
                "salq_first_site": ("INT", {
                    "default": -1, "min": -1, "max": 1000,
                    "tooltip": "Advanced: Layer_LQ as a raw site index (overrides salq_sites; -1 = off). Site "
                               "counts: " + SITE_COUNTS + ". The log shows the schedule table of the model."}),
            },
            "optional": {
                "edit_mask": ("MASK", {"tooltip": "1 where the subject goes in the condition/target image: the "
                                                  "dilated mask of the object to replace (swap), a drawn region "
                                                  "(add) or a layout mask (generation). Required for swap/add."}),
                "clip": ("CLIP", {"tooltip": "Generation without edit_mask: the CLIP that encodes the target "
                                             "prompt, to find the subject word's tokens with the model's own "
                                             "tokenizer."}),
                "target_text": ("STRING", {"multiline": True, "default": "",
                                           "tooltip": "Generation without edit_mask: the target prompt's text, "
                                                      "exactly as in the Target prompt's CLIP Text Encode (the "
                                                      "sampler refuses a different prompt)."}),
                "subject_words": ("STRING", {"default": "",
                                             "tooltip": "Generation without edit_mask: the subject word(s) in the "
                                                        "target prompt, comma-separated (e.g. 'dog')."}),
                "token_indices": ("STRING", {"default": "",
                                             "tooltip": "Alternative to subject_words: token positions in the target "
                                                        "prompt, comma-separated (1 = first word's first token)."}),
                "sweep": ("MCA_SWEEP", {"tooltip": "Optional: the schedule cells of MCA Schedule Sweep. Each cell is "
                                                   "this node's schedule with the swept settings replaced; the MCA "
                                                   "Sampler makes one target per cell, in one batch."}),
                "subject_position": (list(SUBJECT_POSITIONS), {
                    "default": "own",
                    "tooltip": "RoPE models (" + POSITION_FAMILIES + "): 'own' keeps the subject's keys at their "
                               "positions in the subject image (the paper's rule carried over); 'edit region' moves "
                               "them onto the edit region for SALQ (the re-positioning of FreeGraftor / Personalize "
                               "Anything), for a subject that sits elsewhere in its image. Models without positions "
                               "(UNets): 'own' only."}),
            },
        }

    def patch(self, model, subject_mask, preset, sagi_start, sagi_end, salq_start, salq_end, salq_sites,
              salq_first_site, edit_mask=None, clip=None, target_text="", subject_words="", token_indices="",
              subject_position="own", sweep=()):
        settings = dict(sagi_start=sagi_start, sagi_end=sagi_end, salq_start=salq_start, salq_end=salq_end,
                        salq_sites=salq_sites, salq_first_site=salq_first_site)
        patched = patch_model(model, PRESETS[Task(preset)], ScheduleRequest(settings, tuple(sweep)), subject_mask,
                              edit_mask, SubjectWords(clip, target_text, subject_words, token_indices),
                              move_subject=SUBJECT_POSITIONS[subject_position])
        state = mca_state(patched)
        logger.info("MCA Attention Patch: %s model, %d self-attention sites, %s preset, %d schedule cell(s), SALQ "
                    "from site %s; the MCA Sampler logs the step x site table.", state.family, state.num_sites, preset,
                    len(state.schedules), ", ".join(map(str, sorted({s.salq_first_site for s in state.schedules}))))
        return (patched,)


NODE_CLASS_MAPPINGS = {"MCA_AttentionPatch": MCAAttentionPatch}
NODE_DISPLAY_NAME_MAPPINGS = {"MCA_AttentionPatch": "MCA Attention Patch"}
