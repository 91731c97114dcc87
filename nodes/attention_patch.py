"""MCA Attention Patch: a clone of MODEL whose self-attention runs SAGI and SALQ for the target row."""
from __future__ import annotations

import logging

from ..mca_attention.comfy_patch import patch_model
from ..mca_attention.cross_attention_mask import find_token_positions
from ..mca_attention.schedule import NUM_SD15_LAYERS, MCASchedule, format_table
from ..mca_attention.tasks import PRESETS, Task
from .common import CATEGORY

PRESET_DEFAULT = -1.0
MAX_TEXT_TOKENS = 75  # one 77-token chunk: start token, 75 text tokens, end token
logger = logging.getLogger(__name__)


def _token_ids(clip, text: str) -> list[int]:
    """The token ids of the first 77-token chunk of ``text`` as this CLIP tokenizes it."""
    chunks = next(iter(clip.tokenize(text).values()))
    return [int(token) for token, _ in chunks[0]]


def _text_ids(clip, text: str) -> list[int]:
    """The text's own tokens: drop the start token and the end token (SD1.5 also pads with it)."""
    body = _token_ids(clip, text)[1:]
    end = body[-1]
    return body[:body.index(end)]


def _parse_indices(token_indices: str, text_tokens: int | None) -> list[int]:
    try:
        indices = [int(part) for part in token_indices.replace(" ", "").split(",") if part]
    except ValueError:
        raise ValueError(f"token_indices must be whole numbers separated by commas, got '{token_indices}'") from None
    last = MAX_TEXT_TOKENS if text_tokens is None else text_tokens
    wrong = [i for i in indices if not 1 <= i <= last]
    if wrong:
        where = ("the target prompt has" if text_tokens is not None else "a prompt has at most")
        raise ValueError(f"token_indices {wrong} are outside 1..{last}: {where} {last} text tokens "
                         f"(1 = the first word's first token; 0 is the start token and later ones are padding).")
    return sorted(set(indices))


def subject_tokens(clip, target_text: str, subject_words: str, token_indices: str) -> list[int]:
    """Token positions of the subject word(s) in the target prompt (generation mode)."""
    has_text = clip is not None and bool(target_text.strip())
    if token_indices.strip():
        return _parse_indices(token_indices, len(_text_ids(clip, target_text)) if has_text else None)
    if not has_text or not subject_words.strip():
        raise ValueError("generation without an edit_mask needs clip, target_text and subject_words "
                         "(or token_indices), or connect a layout mask as edit_mask.")
    prompt = _token_ids(clip, target_text)
    positions: list[int] = []
    for word in (w.strip() for w in subject_words.split(",") if w.strip()):
        found = find_token_positions(prompt, _text_ids(clip, word))
        if not found:
            raise ValueError(f"'{word}' does not occur in the target text '{target_text}'")
        positions.extend(found)
    return sorted(set(positions))


def encoded_text(clip, text: str):
    """The prompt tensor CLIP Text Encode would make of ``text`` (for the sampler's same-prompt check)."""
    return clip.encode_from_tokens(clip.tokenize(text)).detach().cpu()


def _fraction(tooltip: str) -> dict:
    return {"default": PRESET_DEFAULT, "min": -1.0, "max": 1.0, "step": 0.01,
            "tooltip": tooltip + " Fraction of the steps, 0..1; -1 uses the preset's official value."}


def effective_schedule(base: MCASchedule, **overrides: float) -> MCASchedule:
    """The preset's schedule with each widget that is not -1 put in its place (other negatives refused)."""
    values = {}
    for name, value in overrides.items():
        if value == PRESET_DEFAULT:
            values[name] = getattr(base, name)
        elif value < 0:
            raise ValueError(f"{name} = {value:g}: use a value in 0..1, or exactly -1 for the preset's value.")
        else:
            values[name] = int(value) if name == "salq_first_layer" else value
    return MCASchedule(**values)


class MCAAttentionPatch:
    DESCRIPTION = ("Patches SD1.5 self-attention for MCA-Ctrl: the target row (row 3 of the MCA Sampler batch) "
                   "takes its subject from the subject image (SAGI early, SALQ later) and its background from "
                   "the condition row. Returns a patched clone; the input MODEL is untouched. Acts only inside "
                   "the MCA Sampler.")
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
                "preset": ([task.value for task in Task], {
                    "default": Task.SWAP.value,
                    "tooltip": "The task: swap and add need an edit_mask, an inverted condition image and keep the "
                               "condition outside the mask; generation starts the condition from noise. Sets the "
                               "official schedule; the widgets below override it."}),
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
                                           "tooltip": "Generation without edit_mask: the target prompt's text, "
                                                      "exactly as in the Target prompt's CLIP Text Encode (the "
                                                      "sampler refuses a different prompt)."}),
                "subject_words": ("STRING", {"default": "",
                                             "tooltip": "Generation without edit_mask: the subject word(s) in the "
                                                        "target prompt, comma-separated (e.g. 'dog')."}),
                "token_indices": ("STRING", {"default": "",
                                             "tooltip": "Alternative to subject_words: token positions in the target "
                                                        "prompt, comma-separated (1 = first word's first token)."}),
            },
        }

    def patch(self, model, subject_mask, preset, sagi_start, sagi_end, salq_start, salq_end, salq_first_layer,
              edit_mask=None, clip=None, target_text="", subject_words="", token_indices=""):
        task_preset = PRESETS[Task(preset)]
        schedule = effective_schedule(task_preset.schedule, sagi_start=sagi_start, sagi_end=sagi_end,
                                      salq_start=salq_start, salq_end=salq_end, salq_first_layer=salq_first_layer)
        tokens, text_cond = None, None
        if edit_mask is None and not task_preset.needs_edit_mask:
            tokens = subject_tokens(clip, target_text, subject_words, token_indices)
            if clip is not None and target_text.strip():
                text_cond = encoded_text(clip, target_text)
        patched = patch_model(model, task_preset, schedule, subject_mask, edit_mask, subject_tokens=tokens,
                              target_text_cond=text_cond)
        logger.info("MCA schedule (%s) at 50 steps, layers left to right, G = SAGI, L = SALQ:\n%s",
                    preset, format_table(schedule.table(50, NUM_SD15_LAYERS)))
        return (patched,)


NODE_CLASS_MAPPINGS = {"MCA_AttentionPatch": MCAAttentionPatch}
NODE_DISPLAY_NAME_MAPPINGS = {"MCA_AttentionPatch": "MCA Attention Patch"}
