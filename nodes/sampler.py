"""MCA Sampler: condition, subject and target sampled as one 3-row batch, one sampler call per step."""
from __future__ import annotations

import logging
import math

import torch

import comfy.sample
import comfy.samplers

from ..mca_attention.adapters.base import tell_the_ui
from ..mca_attention.comfy_patch import MCAState, mca_state
from ..mca_attention.layout import CONDITION, SUBJECT, TARGET
from ..mca_attention.masks import as_single_mask, check_aspect, resize_mask
from ..mca_attention.run import MCARun
from ..mca_attention.schedule import Op, describe_run, format_table
from ..mca_attention.sampling import RowControl, mca_sample_loop
from ..mca_attention.trajectory import Trajectory, check_matches_schedule, check_same_source, read_trajectory
from .common import CATEGORY, check_latent, single_prompt
from .progress import sampling_callback

LATENT_TO_PIXELS = 8
logger = logging.getLogger(__name__)


PER_ROW_OPTIONS = ("pooled_output",)  # stacked per row; every other option must agree across the rows
# Conditioning that changes the token sequence the attention sees: not meaningful on MCA rows.
SEQUENCE_OPTIONS = {"reference_latents": "reference latents (Flux Kontext / ReferenceLatent)",
                    "attention_mask": "an attention mask on the prompt",
                    "area": "area conditioning (ConditioningSetArea / ConditioningSetAreaPercentage)",
                    "mask": "mask conditioning (ConditioningSetMask)"}
PROMPT_NAMES = ("condition_prompt", "subject_prompt", "target_prompt", "negative")


def _row_options(options: list[dict]) -> dict:
    """The conditioning options of the 3-row entry: pooled outputs stacked in row order, the rest shared."""
    merged = dict(options[TARGET])
    for key in PER_ROW_OPTIONS:
        values = [o.get(key) for o in options]
        if all(v is not None for v in values):
            merged[key] = torch.cat([v.reshape(1, -1) for v in values])
        elif any(v is not None for v in values):
            raise ValueError(f"only some row prompts carry '{key}': encode all three with the same kind of "
                             f"text encode node.")
    names = ("condition_prompt", "subject_prompt", "target_prompt")
    for key in set().union(*options) - set(PER_ROW_OPTIONS):
        values = [o.get(key) for o in options]
        if any(not _same(values[TARGET], value) for value in values):
            differing = ", ".join(f"{name}={value!r}" for name, value in zip(names, values))
            raise ValueError(f"the row prompts differ in '{key}' ({differing}): MCA samples the rows as one batch, "
                             f"so give the three text encode nodes the same {key}.")
    return merged


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and bool(
            torch.equal(a, b))
    return a == b


def check_sequence_options(options: dict, name: str) -> None:
    """Refuse conditioning that changes which tokens or pixels an MCA row's prompt reaches."""
    for key, what in SEQUENCE_OPTIONS.items():
        if options.get(key) is not None:
            raise ValueError(f"{name} carries {what}, which MCA rows do not support (each row takes one plain "
                             f"prompt over the whole image). Connect the text encode output directly.")


def check_prompt_fits(state: MCAState, conditioning: list, name: str) -> None:
    """Refuse a prompt from another text encoder than the model's: text width, pooled output, options."""
    for tensor, options in conditioning:
        check_sequence_options(options, name)
        encode = f"encode {name} with the CLIP that belongs to this {state.family} model (its loader's CLIP output)"
        if state.text_width is not None and tensor.shape[-1] != state.text_width:
            raise ValueError(f"{name} holds {tensor.shape[-1]}-wide text tokens but this {state.family} model reads "
                             f"{state.text_width}-wide ones: {encode}.")
        pooled = options.get("pooled_output")
        if state.pooled_width is None:
            continue
        if pooled is None:
            raise ValueError(f"{name} has no pooled text output, which this {state.family} model needs: {encode}.")
        if state.pooled_width and pooled.shape[-1] != state.pooled_width:
            raise ValueError(f"{name} has a {pooled.shape[-1]}-wide pooled output but this {state.family} model "
                             f"needs {state.pooled_width}: {encode}.")


def row_prompts(condition: list, subject: list, target: list, repeat_short: bool = True) -> list:
    """One conditioning entry whose batch holds the three row prompts (and pooled outputs) in row order.

    ``repeat_short``: prompts of different lengths are repeated to a common length, as ComfyUI does with
    CLIP's 77-token chunks; otherwise (T5 on Flux / Chroma) they must have the same length.
    """
    names = PROMPT_NAMES[:3]
    prompts = [single_prompt(c, name) for c, name in zip((condition, subject, target), names)]
    for (_, options), name in zip(prompts, names):
        check_sequence_options(options, name)
    tensors = [p[0] for p in prompts]
    lengths = [t.shape[1] for t in tensors]
    if not repeat_short and len(set(lengths)) > 1:
        listed = ", ".join(f"{name} {length}" for name, length in zip(names, lengths))
        raise ValueError(f"the row prompts have different token lengths ({listed}): MCA samples the rows as one "
                         f"batch, and this model's text tokens cannot be repeated like CLIP's. Shorten the longer "
                         f"prompts (Flux pads every prompt to 256 T5 tokens, so prompts under that length match).")
    tokens = math.lcm(*lengths)  # as ComfyUI pads long prompts: repeat to a common length
    stacked = torch.cat([t.repeat(1, tokens // t.shape[1], 1) for t in tensors])
    return [[stacked, _row_options([p[1] for p in prompts])]]


def patched_state(model) -> MCAState:
    """The MCA settings of a patched model; an unpatched one is refused (it would sample a plain image)."""
    state = mca_state(model)
    if state is None:
        raise ValueError("MCA Sampler needs the model from MCA Attention Patch: this MODEL is not patched, so the "
                         "result would be a plain image with no subject transfer. Connect MODEL through MCA "
                         "Attention Patch (LoRA or other model patches may sit before or after it).")
    return state


def _single_item(latent: dict, model, name: str) -> torch.Tensor:
    samples = latent["samples"]
    check_latent(samples, model, name)
    if samples.shape[0] != 1:
        raise ValueError(f"{name}: MCA works on one image per row, got a batch of {samples.shape[0]}")
    return samples


def sampling_schedule(subject: Trajectory, sigmas: torch.Tensor | None) -> torch.Tensor:
    """The subject's inversion schedule, or an explicit SIGMAS input (then checked against it)."""
    if sigmas is None:
        return subject.sigmas.float()
    sigmas = sigmas.flatten().float().cpu()
    check_matches_schedule(subject, sigmas, "subject", "the SIGMAS input")
    return sigmas


def latent_blend_mask(mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """A MASK resized (nearest) to the latent, as ``[1, 1, h, w]``."""
    return resize_mask(as_single_mask(mask, "blend_mask"), height, width)[None, None]


def build_row_control(model, state: MCAState, subject: dict, condition: dict, sigmas: torch.Tensor | None,
                      blend_mask: torch.Tensor | None) -> tuple[RowControl, torch.Tensor]:
    """Pins, target start and blend for the loop, and the schedule, after checking the inputs fit together."""
    subject_samples = _single_item(subject, model, "subject")
    condition_samples = _single_item(condition, model, "condition")
    if subject_samples.shape != condition_samples.shape:
        raise ValueError(
            f"subject latent {tuple(subject_samples.shape[2:])} and condition latent "
            f"{tuple(condition_samples.shape[2:])} differ in size: resize both images to the same width and height."
        )
    subject_trajectory = read_trajectory(subject)
    if subject_trajectory is None:
        raise ValueError("the subject LATENT carries no inversion trajectory: connect it from MCA DDIM Invert.")
    check_same_source(subject_trajectory, state.source, "the subject")
    schedule = sampling_schedule(subject_trajectory, sigmas)
    control = RowControl(pinned={SUBJECT: subject_trajectory.row(0)})
    condition_trajectory = read_trajectory(condition)
    if condition_trajectory is None and state.preset.needs_condition_image:
        raise ValueError(
            f"the {state.preset.task.value} preset needs the condition image inverted: connect the condition LATENT "
            f"from MCA DDIM Invert (a plain VAE Encode carries no trajectory, and the condition image would be "
            f"ignored). For generation from noise, set the patch's preset to generation."
        )
    if condition_trajectory is not None:
        check_same_source(condition_trajectory, state.source, "the condition")
        check_matches_schedule(condition_trajectory, schedule, "condition", "the subject")
        control.pinned[CONDITION] = condition_trajectory.row(0)
        control.target_start = control.pinned[CONDITION][0]
    height, width = subject_samples.shape[2:]
    masks = (("subject_mask", state.subject_mask), ("edit_mask", state.edit_mask), ("blend_mask", blend_mask))
    for name, mask in masks:
        if mask is not None:
            check_aspect(as_single_mask(mask, name), height, width, name, f"the {width}x{height} latent")
    if blend_mask is not None:
        control.blend_mask = latent_blend_mask(blend_mask, height, width)
    return control, schedule


def check_target_prompt(state: MCAState, target_prompt: list) -> None:
    """Generation: the subject tokens must index the very prompt the target row receives."""
    target, _ = single_prompt(target_prompt, "target_prompt")
    if state.subject_tokens and max(state.subject_tokens) >= target.shape[1]:
        raise ValueError(f"the patch's subject token {max(state.subject_tokens)} lies beyond the target prompt's "
                         f"{target.shape[1]} tokens: check token_indices on MCA Attention Patch.")
    expected = state.target_text_cond
    if expected is None:
        return
    same = expected.shape == target.shape and torch.allclose(
        expected.float(), target.detach().float().cpu(), atol=1e-3 * float(expected.abs().max()), rtol=0)
    if not same:
        raise ValueError("the target_text on MCA Attention Patch is not the text of the target_prompt given to MCA "
                         "Sampler, so the subject word's tokens would point at other words. Type the same text in "
                         "both (and encode it with the same CLIP).")


SEED_UNUSED = ("MCA Sampler: seed {seed} changes nothing in swap/add: the target starts from the inverted condition "
               "image, so every seed gives the same image (only generation draws noise from the seed).")


def log_schedule(state: MCAState, table: list) -> None:
    """The step x site table and a one-line summary in the log; a warning when neither SAGI nor SALQ runs."""
    summary = describe_run(table)
    logger.info("MCA on %s, %d steps x %d sites: %s. One line per step, one character per site (G = SAGI, "
                "L = SALQ, . = ordinary):\n%s", state.family, len(table), state.num_sites, summary, format_table(table))
    if not any(op is not Op.NONE for row in table for op in row):
        message = (f"MCA Sampler: no SAGI and no SALQ step runs under this schedule ({summary}): the result is a "
                   f"plain image. Widen the step ranges on MCA Attention Patch or use more steps.")
        logger.warning(message)
        tell_the_ui(message)


def mca_sample(model, condition_prompt, subject_prompt, target_prompt, negative, subject: dict, condition: dict,
               seed: int, cfg: float, sigmas: torch.Tensor | None = None, blend_mask=None, local_blend: bool = True,
               make_callback=None, disable_pbar=True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Sample the 3-row batch of a patched model; returns the ``[3, C, h, w]`` rows and the edit mask used.

    The schedule is the subject trajectory's (``sigmas``, when given, must equal it). The blend mask is
    ``blend_mask`` or the patch's edit mask when the task blends and ``local_blend`` is on.
    ``make_callback(steps)``, when given, returns the per-step callback (progress, preview, Cancel).
    """
    state = patched_state(model)
    if not (local_blend and state.preset.local_blend):
        blend_mask = None
    elif blend_mask is None:
        blend_mask = state.edit_mask
    control, schedule = build_row_control(model, state, subject, condition, sigmas, blend_mask)
    if state.edit_mask is None:
        check_target_prompt(state, target_prompt)
    for conditioning, name in zip((condition_prompt, subject_prompt, target_prompt, negative), PROMPT_NAMES):
        check_prompt_fits(state, conditioning, name)
    if state.preset.needs_condition_image and state.warn_once(f"seed {seed}", SEED_UNUSED.format(seed=seed)):
        tell_the_ui(SEED_UNUSED.format(seed=seed))
    positive = row_prompts(condition_prompt, subject_prompt, target_prompt,
                           repeat_short=state.repeats_short_prompts)
    run = MCARun(total_steps=schedule.numel() - 1)
    log_schedule(state, state.run_cache(run)["ops"])
    single = condition["samples"]
    noise = comfy.sample.prepare_noise(torch.zeros_like(single), seed).repeat(3, 1, 1, 1)
    sampler = comfy.samplers.KSAMPLER(mca_sample_loop, extra_options={"control": control, "run": run})
    callback = None if make_callback is None else make_callback(run.total_steps)
    rows = comfy.sample.sample_custom(model, noise, cfg, sampler, schedule, positive, negative,
                                      torch.zeros_like(noise), callback=callback, disable_pbar=disable_pbar,
                                      seed=seed)
    edit = state.edit_mask
    if edit is None:
        edit = state.run_cache(run)["cross"].mask_before(run.total_steps)
    return rows, edit


def edit_mask_output(edit: torch.Tensor | None, latent_height: int, latent_width: int) -> torch.Tensor:
    """The edit region as a MASK at image size (all zero when there was none)."""
    height, width = latent_height * LATENT_TO_PIXELS, latent_width * LATENT_TO_PIXELS
    if edit is None:
        return torch.zeros(1, height, width)
    return resize_mask(edit.float(), height, width)[None]


class MCASampler:
    DESCRIPTION = ("Samples condition, subject and target as one 3-row batch with the MCA-patched model. Rows with "
                   "an inversion trajectory are pinned to it; the target starts from the condition's start noise "
                   "and, in swap/add, is kept equal to the condition outside the edit mask (local blend). The "
                   "steps and schedule are those of the subject's MCA DDIM Invert.")
    CATEGORY = CATEGORY
    FUNCTION = "sample"
    RETURN_TYPES = ("LATENT", "LATENT", "MASK")
    RETURN_NAMES = ("target", "all_rows", "edit_mask")
    OUTPUT_TOOLTIPS = ("The generated image's latent.", "All three rows [condition, subject, target], to inspect.",
                       "The edit region MCA used: the patch's edit mask, or in generation the one derived from "
                       "the subject word's cross-attention (at image size).")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The output of MCA Attention Patch (an unpatched model is refused)."}),
                "condition_prompt": ("CONDITIONING", {"tooltip": "Describes the condition image, e.g. 'a photo of a cat'."}),
                "subject_prompt": ("CONDITIONING", {"tooltip": "Describes the subject image, e.g. 'a photo of a fox'."}),
                "target_prompt": ("CONDITIONING", {"tooltip": "Describes the result, e.g. 'a photo of a fox'."}),
                "negative": ("CONDITIONING", {"tooltip": "One negative prompt shared by all three rows."}),
                "subject": ("LATENT", {"tooltip": "The subject image from MCA DDIM Invert; its steps and schedule "
                                                  "are the sampler's."}),
                "condition": ("LATENT", {"tooltip": "Swap/add: the condition image from MCA DDIM Invert (same steps). "
                                                    "Generation: an Empty Latent Image of the output size."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xffffffffffffffff, "control_after_generate": True,
                                 "tooltip": "Generation: the noise seed of the condition and target rows. Swap/add: "
                                            "no effect (the target starts from the inverted condition image, so "
                                            "'increment' regenerates the same image; the log says so)."}),
                "cfg": ("FLOAT", {"default": 7.5, "min": 0.0, "max": 30.0, "step": 0.1,
                                  "tooltip": "Classifier-free guidance for all rows (official: 7.5)."}),
                "local_blend": ("BOOLEAN", {"default": True,
                                            "tooltip": "Swap/add: keep the condition image outside the edit mask "
                                                       "(uses blend_mask, else the patch's edit mask)."}),
            },
            "optional": {
                "sigmas": ("SIGMAS", {"tooltip": "Optional; must equal the schedule the subject was inverted with "
                                                 "(by default the sampler takes that schedule itself)."}),
                "blend_mask": ("MASK", {"tooltip": "Region the target may change; defaults to the patch's edit mask."}),
            },
        }

    def sample(self, model, condition_prompt, subject_prompt, target_prompt, negative, subject, condition, seed,
               cfg, local_blend, sigmas=None, blend_mask=None):
        rows, edit = mca_sample(model, condition_prompt, subject_prompt, target_prompt, negative, subject, condition,
                                seed, cfg, sigmas, blend_mask=blend_mask, local_blend=local_blend,
                                make_callback=lambda steps: sampling_callback(model, steps), disable_pbar=False)
        return {"samples": rows[TARGET:TARGET + 1]}, {"samples": rows}, edit_mask_output(edit, *rows.shape[-2:])


NODE_CLASS_MAPPINGS = {"MCA_Sampler": MCASampler}
NODE_DISPLAY_NAME_MAPPINGS = {"MCA_Sampler": "MCA Sampler"}
