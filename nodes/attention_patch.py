"""MCA Attention Patch: a clone of MODEL whose self-attention runs SAGI and SALQ for the target row."""
from __future__ import annotations

from ..mca_attention.comfy_patch import patch_model
from ..mca_attention.schedule import NUM_SD15_LAYERS, PRESETS, MCASchedule
from .common import CATEGORY

PRESET_DEFAULT = -1.0


def _fraction(tooltip: str) -> dict:
    return {"default": PRESET_DEFAULT, "min": -1.0, "max": 1.0, "step": 0.01,
            "tooltip": tooltip + " Fraction of the steps, 0..1; -1 uses the preset's official value."}


class MCAAttentionPatch:
    DESCRIPTION = ("Patches SD1.5 self-attention for MCA-Ctrl: the target row (row 3 of the MCA Sampler batch) "
                   "takes its subject from the subject image (SAGI early, SALQ later) and its background from "
                   "the condition row. Returns a patched clone; the input MODEL is untouched.")
    CATEGORY = CATEGORY
    FUNCTION = "patch"
    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = ("A clone of the model with MCA attention at all 16 self-attention sites.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "An SD1.5 model."}),
                "subject_mask": ("MASK", {"tooltip": "1 on the subject inside the subject image (SLM Mask)."}),
                "edit_mask": ("MASK", {"tooltip": "1 where the subject goes in the condition/target image: the "
                                                  "dilated mask of the object to replace (swap), a drawn region "
                                                  "(add) or a layout mask (generation)."}),
                "preset": (list(PRESETS), {"default": "swap",
                                           "tooltip": "Official defaults per task; the widgets below override them."}),
                "sagi_start": ("FLOAT", _fraction("S_GI: first step of Self-Attention Global Injection.")),
                "sagi_end": ("FLOAT", _fraction("E_GI: SAGI stops before this step (official: 10% of the steps).")),
                "salq_start": ("FLOAT", _fraction("S_LQ: first step of Self-Attention Local Query (official swap/add: step 4 of 50).")),
                "salq_end": ("FLOAT", _fraction("E_LQ: SALQ stops before this step (official: the last step).")),
                "salq_first_layer": ("INT", {"default": -1, "min": -1, "max": NUM_SD15_LAYERS,
                                             "tooltip": "Layer_LQ: SALQ runs at self-attention layers from this one "
                                                        "to 15 (down 0-5, mid 6, up 7-15); -1 uses the preset."}),
            },
        }

    def patch(self, model, subject_mask, edit_mask, preset, sagi_start, sagi_end, salq_start, salq_end,
              salq_first_layer):
        base = PRESETS[preset]

        def pick(value, default):
            return default if value < 0 else value

        schedule = MCASchedule(
            sagi_start=pick(sagi_start, base.sagi_start),
            sagi_end=pick(sagi_end, base.sagi_end),
            salq_start=pick(salq_start, base.salq_start),
            salq_end=pick(salq_end, base.salq_end),
            salq_first_layer=int(pick(salq_first_layer, base.salq_first_layer)),
        )
        return (patch_model(model, schedule, subject_mask, edit_mask, mode=preset),)


NODE_CLASS_MAPPINGS = {"MCA_AttentionPatch": MCAAttentionPatch}
NODE_DISPLAY_NAME_MAPPINGS = {"MCA_AttentionPatch": "MCA Attention Patch"}
