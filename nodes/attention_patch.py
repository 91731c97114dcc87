"""MCA Attention Patch: a clone of MODEL whose self-attention runs SAGI and SALQ for the target row."""
from __future__ import annotations

import logging
from dataclasses import replace

from ..mca_attention.adapters import SUPPORTED_FAMILIES, model_adapter
from ..mca_attention.comfy_patch import mca_state, patch_model
from ..mca_attention.cross_attention_mask import find_token_positions
from ..mca_attention.schedule import MCASchedule
from ..mca_attention.sweep import SITE_INDEX, cell_label, sweep_cells
from ..mca_attention.tasks import PRESETS, Task
from ..mca_attention.unet_sites import site_from_fraction
from .common import CATEGORY

PRESET_DEFAULT = -1.0
SUBJECT_POSITIONS = {"own": False, "edit region": True}  # widget value -> patch_model's reposition
MAX_TEXT_TOKENS = 75  # one 77-token chunk: start token, 75 text tokens, end token
logger = logging.getLogger(__name__)


def _token_ids(clip, text: str, encoder_key: str | None) -> list[int]:
    """The token ids of ``text``'s first chunk, from the text encoder the model attends to.

    ``encoder_key`` names it in ComfyUI's tokenizer output (Flux: ``t5xxl``); None takes the first one
    (the CLIP of a UNet model).
    """
    tokens = clip.tokenize(text)
    chunks = tokens[encoder_key] if encoder_key in tokens else next(iter(tokens.values()))
    return [int(token) for token, *_ in chunks[0]]


def _start_tokens(clip, encoder_key: str | None) -> int:
    """How many tokens come before the text (CLIP: its start token; T5: none), read from the empty prompt."""
    empty, one = _token_ids(clip, "", encoder_key), _token_ids(clip, "a", encoder_key)
    start = 0
    while start < min(len(empty), len(one)) - 1 and one[start] == empty[start]:
        start += 1
    return start


def _text_ids(clip, text: str, encoder_key: str | None) -> list[int]:
    """The text's own tokens: without the start token(s), up to the end token (the empty prompt's next one)."""
    start = _start_tokens(clip, encoder_key)
    end = _token_ids(clip, "", encoder_key)[start]
    body = _token_ids(clip, text, encoder_key)[start:]
    return body[:body.index(end)] if end in body else body


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


def subject_tokens(clip, target_text: str, subject_words: str, token_indices: str,
                   encoder_key: str | None = None) -> list[int]:
    """Token positions of the subject word(s) in the target prompt (generation mode)."""
    has_text = clip is not None and bool(target_text.strip())
    if token_indices.strip():
        if clip is None and encoder_key is not None:
            raise ValueError("token_indices on this model need the clip input, to place them in its "
                             f"{encoder_key} tokens: connect the CLIP that encodes the target prompt.")
        indices = _parse_indices(token_indices, len(_text_ids(clip, target_text, encoder_key)) if has_text else None)
        offset = 0 if clip is None else _start_tokens(clip, encoder_key) - 1  # index 1 = the first text token
        return [index + offset for index in indices]
    if not has_text or not subject_words.strip():
        raise ValueError("generation without an edit_mask needs clip, target_text and subject_words "
                         "(or token_indices), or connect a layout mask as edit_mask.")
    prompt = _token_ids(clip, target_text, encoder_key)
    positions: list[int] = []
    for word in (w.strip() for w in subject_words.split(",") if w.strip()):
        found = find_token_positions(prompt, _text_ids(clip, word, encoder_key))
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


def _widget(name: str, value: float, preset_value):
    """A widget's value, or the preset's for exactly -1 (any other negative is refused)."""
    if value == PRESET_DEFAULT:
        return preset_value
    if value < 0:
        raise ValueError(f"{name} = {value:g}: use a value in 0..1, or exactly -1 for the preset's value.")
    return value


def effective_schedule(base: MCASchedule, num_sites: int, salq_sites: float, salq_first_site: int,
                       **fractions: float) -> MCASchedule:
    """The preset's schedule with each widget that is not -1 put in its place.

    Layer_LQ: ``salq_first_site`` (a raw site index) wins over ``salq_sites`` (a fraction of the
    model's ``num_sites`` sites); with both at -1 the preset decides (None: the model family's site).
    """
    values = {name: _widget(name, value, getattr(base, name)) for name, value in fractions.items()}
    if salq_first_site >= 0:
        first = salq_first_site
    elif salq_first_site != PRESET_DEFAULT:
        raise ValueError(f"salq_first_site = {salq_first_site}: use a site index, or -1 to use salq_sites.")
    else:
        fraction = _widget("salq_sites", salq_sites, None)
        first = base.salq_first_site if fraction is None else site_from_fraction(fraction, num_sites)
    return replace(base, **values, salq_first_site=first)


class MCAAttentionPatch:
    DESCRIPTION = ("Patches the model's self-attention for MCA-Ctrl (SD1.x, SD2.x, SDXL, SSD-1B, Segmind Vega, "
                   "KOALA; Flux.1 and Chroma through their joint attention): the target row (row 3 of the MCA Sampler batch) "
                   "takes its subject from the subject image (SAGI early, SALQ later) and its background from "
                   "the condition row. Returns a patched clone; the input MODEL is untouched. Acts only inside "
                   "the MCA Sampler.")
    CATEGORY = CATEGORY
    FUNCTION = "patch"
    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = ("A clone of the model with MCA attention at every self-attention site.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "Supported: " + SUPPORTED_FAMILIES + ". Other DiTs (SD3, "
                                               "Flux.2, Qwen-Image, Z-Image) are refused with their name."}),
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
                    "default": PRESET_DEFAULT, "min": -1.0, "max": 1.0, "step": 0.01,
                    "tooltip": "Layer_LQ on any model: SALQ runs at the self-attention sites from this fraction of "
                               "the model on (sites in call order: UNet encoder, middle, decoder; Flux/Chroma double "
                               "then single blocks; 0 = every site). -1 uses the preset: every site for generation "
                               "and on Flux/Chroma; for swap/add on a UNet the last decoder block of the coarsest "
                               "level onward (SD1.5: site 9 of 16, the official value; SDXL: 54 of 70)."}),
                "salq_first_site": ("INT", {
                    "default": -1, "min": -1, "max": 1000,
                    "tooltip": "Advanced: Layer_LQ as a raw site index (overrides salq_sites; -1 = off). Site "
                               "counts: SD1.x/SD2.x 16, SDXL 70, SSD-1B 34, KOALA-1B 30, KOALA-700M 21, Segmind "
                               "Vega 15, Flux.1 and Chroma 57 (19 double + 38 single blocks). The log shows the "
                               "schedule table of the model."}),
            },
            "optional": {
                "edit_mask": ("MASK", {"tooltip": "1 where the subject goes in the condition/target image: the "
                                                  "dilated mask of the object to replace (swap), a drawn region "
                                                  "(add) or a layout mask (generation). Required for swap/add."}),
                "clip": ("CLIP", {"tooltip": "Generation without edit_mask: the CLIP that encodes the target "
                                             "prompt, to find the subject word's tokens (Flux/Chroma: its T5 tokens)."}),
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
                    "tooltip": "Flux/Chroma (RoPE): 'own' keeps the subject's keys at their positions in the subject "
                               "image (the paper's rule carried over); 'edit region' moves them onto the edit "
                               "region for SALQ (the re-positioning of FreeGraftor / Personalize Anything), for a "
                               "subject that sits elsewhere in its image. UNets have no positions: 'own' only."}),
            },
        }

    def patch(self, model, subject_mask, preset, sagi_start, sagi_end, salq_start, salq_end, salq_sites,
              salq_first_site, edit_mask=None, clip=None, target_text="", subject_words="", token_indices="",
              subject_position="own", sweep=()):
        task_preset = PRESETS[Task(preset)]
        adapter = model_adapter(model)
        sites = adapter.sites
        widgets = dict(sagi_start=sagi_start, sagi_end=sagi_end, salq_start=salq_start, salq_end=salq_end,
                       salq_sites=salq_sites, salq_first_site=salq_first_site)
        cells = sweep_cells(tuple(sweep))
        schedules = []
        for cell in cells:
            values = {**widgets, **cell}
            if SITE_INDEX not in cell and "salq_sites" in cell:
                values[SITE_INDEX] = PRESET_DEFAULT  # a swept salq_sites wins over the widget's site index
            try:
                schedules.append(effective_schedule(adapter.preset_schedule(task_preset), len(sites),
                                                    values.pop("salq_sites"), int(values.pop(SITE_INDEX)), **values))
            except ValueError as error:
                raise ValueError(f"sweep cell {cell_label(cell)}: {error}" if cell else str(error)) from None
        tokens, text_cond = None, None
        if edit_mask is None and not task_preset.needs_edit_mask:
            tokens = subject_tokens(clip, target_text, subject_words, token_indices, adapter.text_encoder_key)
            if clip is not None and target_text.strip():
                text_cond = encoded_text(clip, target_text)
        patched = patch_model(model, task_preset, schedules, subject_mask, edit_mask, subject_tokens=tokens,
                              target_text_cond=text_cond, reposition=SUBJECT_POSITIONS[subject_position],
                              labels=[cell_label(cell) for cell in cells])
        first = sorted({one.salq_first_site for one in mca_state(patched).schedules})  # resolved by patch_model
        logger.info("MCA Attention Patch: %s model, %d self-attention sites, %s preset, %d schedule cell(s), SALQ "
                    "from site %s; the MCA Sampler logs the step x site table.", adapter.family, len(sites), preset,
                    len(cells), ", ".join(map(str, first)))
        return (patched,)


NODE_CLASS_MAPPINGS = {"MCA_AttentionPatch": MCAAttentionPatch}
NODE_DISPLAY_NAME_MAPPINGS = {"MCA_AttentionPatch": "MCA Attention Patch"}
