"""MCA Attention Patch: a clone of MODEL whose self-attention runs SAGI and SALQ for the target row."""
from __future__ import annotations

from ..mca_attention.comfy_patch import patch_model
from ..mca_attention.cross_attention_mask import find_token_positions
from ..mca_attention.schedule import NUM_SD15_LAYERS, PRESETS, MCASchedule
from .common import CATEGORY

PRESET_DEFAULT = -1.0


def _token_ids(clip, text: str) -> list[int]:
    """The token ids of the first 77-token chunk of ``text`` as this CLIP tokenizes it."""
    chunks = next(iter(clip.tokenize(text).values()))
    return [int(token) for token, _ in chunks[0]]


def _word_ids(clip, word: str) -> list[int]:
    """The word's own tokens: drop the start token and the end token (SD1.5 also pads with it)."""
    body = _token_ids(clip, word)[1:]
    end = body[-1]
    return body[:body.index(end)]


def subject_tokens(clip, target_text: str, subject_words: str, token_indices: str) -> list[int]:
    """Token positions of the subject word(s) in the target prompt (generation mode)."""
    if token_indices.strip():
        try:
            return [int(part) for part in token_indices.replace(" ", "").split(",") if part]
        except ValueError:
            raise ValueError(f"token_indices must be whole numbers separated by commas, got '{token_indices}'") from None
    if clip is None or not target_text.strip() or not subject_words.strip():
        raise ValueError("generation without an edit_mask needs clip, target_text and subject_words "
                         "(or token_indices), or connect a layout mask as edit_mask.")
    prompt = _token_ids(clip, target_text)
    positions: list[int] = []
    for word in (w.strip() for w in subject_words.split(",") if w.strip()):
        found = find_token_positions(prompt, _word_ids(clip, word))
        if not found:
            raise ValueError(f"'{word}' does not occur in the target text '{target_text}'")
        positions.extend(found)
    return sorted(set(positions))


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
            "optional": {
                "edit_mask": ("MASK", {"tooltip": "1 where the subject goes in the condition/target image: the "
                                                  "dilated mask of the object to replace (swap), a drawn region "
                                                  "(add) or a layout mask (generation). Required for swap/add."}),
                "clip": ("CLIP", {"tooltip": "Generation without edit_mask: the CLIP that encodes the target "
                                             "prompt, to find the subject word's tokens."}),
                "target_text": ("STRING", {"multiline": True, "default": "",
                                           "tooltip": "Generation without edit_mask: the target prompt's text."}),
                "subject_words": ("STRING", {"default": "",
                                             "tooltip": "Generation without edit_mask: the subject word(s) in the "
                                                        "target prompt, comma-separated (e.g. 'dog')."}),
                "token_indices": ("STRING", {"default": "",
                                             "tooltip": "Alternative to clip + words: token positions in the target "
                                                        "prompt, comma-separated (1 = first word)."}),
            },
        }

    def patch(self, model, subject_mask, preset, sagi_start, sagi_end, salq_start, salq_end, salq_first_layer,
              edit_mask=None, clip=None, target_text="", subject_words="", token_indices=""):
        base = PRESETS[preset]
        if edit_mask is None and preset != "generation":
            raise ValueError(f"the {preset} preset needs an edit_mask: the region of the condition image where "
                             f"the subject goes (SLM Mask of the object to replace, or a drawn region).")
        tokens = None if edit_mask is not None else subject_tokens(clip, target_text, subject_words, token_indices)

        def pick(value, default):
            return default if value < 0 else value

        schedule = MCASchedule(
            sagi_start=pick(sagi_start, base.sagi_start),
            sagi_end=pick(sagi_end, base.sagi_end),
            salq_start=pick(salq_start, base.salq_start),
            salq_end=pick(salq_end, base.salq_end),
            salq_first_layer=int(pick(salq_first_layer, base.salq_first_layer)),
        )
        return (patch_model(model, schedule, subject_mask, edit_mask, mode=preset, subject_tokens=tokens),)


NODE_CLASS_MAPPINGS = {"MCA_AttentionPatch": MCAAttentionPatch}
NODE_DISPLAY_NAME_MAPPINGS = {"MCA_AttentionPatch": "MCA Attention Patch"}
