"""MCA Sampler: the targets sampled in one batch with the condition and subject rows they share."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

import comfy.model_management
import comfy.sample
import comfy.samplers

from ..mca_attention.adapters.base import tell_the_ui
from ..mca_attention.comfy_patch import MCAState, mca_state
from ..mca_attention.batch import SamplingPass, TargetCell, pass_rows, plan_passes, target_cells
from ..mca_attention.layout import BatchShape
from ..mca_attention.masks import resize_mask
from ..mca_attention.run import MCARun
from ..mca_attention.schedule import Op, describe_run, format_table
from ..mca_attention.sampling import mca_sample_loop
from .common import CATEGORY, single_prompt
from .prompts import PROMPT_NAMES, check_prompt_fits, prompt_label, stack_rows, target_prompts
from .shared_rows import SharedRows, check_target_prompt, shared_rows
from .progress import sampling_callback

LATENT_TO_PIXELS = 8
logger = logging.getLogger(__name__)


def patched_state(model) -> MCAState:
    """The MCA settings of a patched model; an unpatched one is refused (it would sample a plain image)."""
    state = mca_state(model)
    if state is None:
        raise ValueError("MCA Sampler needs the model from MCA Attention Patch: this MODEL is not patched, so the "
                         "result would be a plain image with no subject transfer. Connect MODEL through MCA "
                         "Attention Patch (LoRA or other model patches may sit before or after it).")
    return state


SEED_UNUSED = ("MCA Sampler: seed {seed} changes nothing in swap/add: the target starts from the inverted condition "
               "image, so every seed gives the same image (only generation draws noise from the seed).")


def log_schedule(state: MCAState, table: list, label: str = "") -> None:
    """The step x site table and a one-line summary in the log; a warning when neither SAGI nor SALQ runs."""
    summary = describe_run(table)
    cell = f" [{label}]" if label else ""
    logger.info("MCA on %s%s, %d steps x %d sites: %s. One line per step, one character per site (G = SAGI, "
                "L = SALQ, . = ordinary):\n%s", state.family, cell, len(table), state.num_sites, summary,
                format_table(table))
    if not any(op is not Op.NONE for row in table for op in row):
        message = (f"MCA Sampler{cell}: no SAGI and no SALQ step runs under this schedule ({summary}): the result "
                   f"is a plain image. Widen the step ranges on MCA Attention Patch or use more steps.")
        logger.warning(message)
        tell_the_ui(message)


@dataclass
class MCAOutput:
    """The whole batch ``[conditions, subject, targets]`` (rows), its shape, each target's edit mask and label."""

    rows: torch.Tensor
    shape: BatchShape
    edit: list[torch.Tensor | None]
    labels: list[str]

    @property
    def targets(self) -> torch.Tensor:
        return self.rows[self.shape.target_rows]


def _pass_noise(single: torch.Tensor, sampling_pass: SamplingPass, cells: list[TargetCell]) -> torch.Tensor:
    """Each row's start noise: a condition row's and a target's from their seed (the subject's is unused)."""
    seeds = [*sampling_pass.condition_seeds, sampling_pass.condition_seeds[0],
             *(cells[j].seed for j in sampling_pass.targets)]
    noise = {s: comfy.sample.prepare_noise(torch.zeros_like(single), s) for s in dict.fromkeys(seeds)}
    return torch.cat([noise[s] for s in seeds])


def mca_sample(model, condition_prompt, subject_prompt, target_prompt, negative, subject: dict, condition: dict,
               seed: int, cfg: float, sigmas: torch.Tensor | None = None, blend_mask=None, local_blend: bool = True,
               make_callback=None, disable_pbar=True, targets_per_pass: int = 0) -> MCAOutput:
    """Sample every target of a patched model with the shared condition and subject rows (see ``batch``).

    The schedule is the subject trajectory's (``sigmas``, when given, must equal it). The blend mask is
    ``blend_mask`` or the patch's edit mask when the task blends and ``local_blend`` is on.
    ``targets_per_pass`` 0 fits as many targets in each pass as ComfyUI's free-memory estimate allows.
    ``make_callback(steps)``, when given, returns the per-step callback (progress, preview, Cancel).
    """
    state = patched_state(model)
    if not (local_blend and state.preset.local_blend):
        blend_mask = None
    elif blend_mask is None:
        blend_mask = state.edit_mask
    shared = shared_rows(model, state, subject, condition, sigmas, blend_mask)
    targets = target_prompts(target_prompt)
    for conditioning, name in zip((condition_prompt, subject_prompt, negative), (PROMPT_NAMES[0], PROMPT_NAMES[1],
                                                                                PROMPT_NAMES[3])):
        check_prompt_fits(state, conditioning, name)
    names = [f"target prompt {i + 1}" if len(targets) > 1 else "target_prompt" for i in range(len(targets))]
    for (tensor, options), name in zip(targets, names):
        check_prompt_fits(state, [[tensor, options]], name)
        if state.edit_mask is None:
            check_target_prompt(state, tensor, name)
    seeded = shared.condition is None
    cells = target_cells(seed, list(state.labels), [prompt_label(o, i) for i, (_, o) in enumerate(targets)],
                         shared.seeds, seeded)
    if not seeded and state.warn_once(f"seed {seed}", SEED_UNUSED.format(seed=seed)):
        tell_the_ui(SEED_UNUSED.format(seed=seed))
    single = condition["samples"][:1]
    per_pass = targets_per_pass or fitting_targets(model, single.shape, len(cells), seeded)
    passes = plan_passes(cells, per_pass, seeded)
    if len(passes) > 1:
        logger.info("MCA Sampler: %d targets in %d passes of at most %d (each pass holds the shared rows again)%s.",
                    len(cells), len(passes), per_pass, "" if targets_per_pass else
                    ": ComfyUI's free-memory estimate does not fit them all in one batch")
    steps = shared.sigmas.numel() - 1
    for index in dict.fromkeys(cell.schedule for cell in cells):
        log_schedule(state, state.schedules[index].table(steps, state.num_sites), state.labels[index])
    callback = None if make_callback is None else make_callback(steps * len(passes))
    request = PassRequest(model, state, shared, cells, targets, names, single_prompt(condition_prompt, PROMPT_NAMES[0]),
                          single_prompt(subject_prompt, PROMPT_NAMES[1]), negative, cfg, single, disable_pbar)
    done = [request.sample(p, _offset(callback, i * steps, steps * len(passes))) for i, p in enumerate(passes)]
    return _assemble(done, cells, seeded)


def _offset(callback, first: int, total: int):
    if callback is None:
        return None
    return lambda step, denoised, x, _steps: callback(first + step, denoised, x, total)


@dataclass(frozen=True)
class PassRequest:
    """What every pass of one sampler call shares: the model, the shared rows, the targets and their prompts."""

    model: object
    state: MCAState
    shared: SharedRows
    cells: list[TargetCell]
    targets: list  # the target prompts, (tensor, options) each
    names: list[str]  # their names in error messages
    condition_prompt: tuple
    subject_prompt: tuple
    negative: list
    cfg: float
    single: torch.Tensor  # one latent of the output size, for the noise
    disable_pbar: bool

    def sample(self, sampling_pass: SamplingPass, callback) -> tuple[SamplingPass, torch.Tensor, list]:
        """One sampler call: the rows of ``sampling_pass`` and each of its targets' edit mask at the end."""
        shape, cells, state = sampling_pass.shape, self.cells, self.state
        run = MCARun(total_steps=self.shared.sigmas.numel() - 1, shape=shape,
                     cells=tuple(cells[j].schedule for j in sampling_pass.targets))
        rows = [self.condition_prompt] * shape.conditions + [self.subject_prompt] + [
            self.targets[cells[j].prompt] for j in sampling_pass.targets]
        row_names = [PROMPT_NAMES[0]] * shape.conditions + [PROMPT_NAMES[1]] + [
            self.names[cells[j].prompt] for j in sampling_pass.targets]
        positive = stack_rows(rows, row_names, repeat_short=state.repeats_short_prompts)
        noise = _pass_noise(self.single, sampling_pass, cells)
        loop = comfy.samplers.KSAMPLER(mca_sample_loop,
                                       extra_options={"control": self.shared.control(shape), "run": run})
        out = comfy.sample.sample_custom(self.model, noise, self.cfg, loop, self.shared.sigmas, positive,
                                         self.negative, torch.zeros_like(noise), callback=callback,
                                         disable_pbar=self.disable_pbar, seed=cells[sampling_pass.targets[0]].seed)
        if state.edit_mask is not None:
            return sampling_pass, out, [state.edit_mask] * shape.targets
        masks = state.run_cache(run)["cross"].mask_before(run.total_steps)
        return sampling_pass, out, [None] * shape.targets if masks is None else list(masks)


def _assemble(done: list, cells: list[TargetCell], seeded: bool) -> MCAOutput:
    """The passes' rows as one batch ``[conditions, subject, targets]`` (shared rows from their first pass)."""
    whole = plan_passes(cells, len(cells), seeded)[0]
    first_pass, first_rows, _ = done[0]
    rows = [None] * whole.shape.rows
    rows[whole.shape.subject] = first_rows[first_pass.shape.subject]
    edits = [None] * len(cells)
    for sampling_pass, out, pass_edits in done:
        for i, condition_seed in enumerate(sampling_pass.condition_seeds):
            row = whole.condition_seeds.index(condition_seed)
            rows[row] = out[i] if rows[row] is None else rows[row]
        for position, j in enumerate(sampling_pass.targets):
            rows[whole.shape.target_row(j)] = out[sampling_pass.shape.target_row(position)]
            edits[j] = pass_edits[position]
    return MCAOutput(torch.stack(rows), whole.shape, edits, [cell.label for cell in cells])


def fitting_targets(model, latent_shape, targets: int, seeded: bool) -> int:
    """The most targets (up to ``targets``) whose pass fits ComfyUI's free-memory estimate, at least 1.

    As ComfyUI batches cond and uncond: a pass fits when its rows' ``memory_required`` x 1.5 is below the
    free memory of the model's device, counting the weights still to be loaded.
    """
    device = model.load_device
    free = comfy.model_management.get_free_memory(device) - max(0, model.model_size() - model.loaded_size())
    for count in range(targets, 0, -1):
        shape = [pass_rows(count, seeded), *latent_shape[1:]]
        if model.memory_required(shape) * 1.5 < free:
            return count
    return 1


def edit_mask_output(edits: list[torch.Tensor | None], latent_height: int, latent_width: int) -> torch.Tensor:
    """Each target's edit region as a MASK batch at image size (all zero where there was none)."""
    height, width = latent_height * LATENT_TO_PIXELS, latent_width * LATENT_TO_PIXELS
    return torch.stack([torch.zeros(height, width) if edit is None else resize_mask(edit.float(), height, width)
                        for edit in edits])


class MCASampler:
    DESCRIPTION = ("Samples the targets with the MCA-patched model in one batch with the condition and subject rows "
                   "they share. Rows with an inversion trajectory are pinned to it; each target starts from the "
                   "condition's start noise and, in swap/add, is kept equal to the condition outside the edit mask "
                   "(local blend). Several targets: MCA Target Prompts, MCA Schedule Sweep on the patch, or (generation) "
                   "the condition latent's batch size as seeds. The steps and schedule are those of the subject's MCA "
                   "DDIM Invert.")
    CATEGORY = CATEGORY
    FUNCTION = "sample"
    RETURN_TYPES = ("LATENT", "LATENT", "MASK", "STRING")
    RETURN_NAMES = ("target", "all_rows", "edit_mask", "labels")
    OUTPUT_TOOLTIPS = ("The targets' latents, one per target in cell order (one without a batch or sweep).",
                       "All rows [conditions, subject, targets], to inspect.",
                       "Each target's edit region: the patch's edit mask, or in generation the one derived from "
                       "the subject word's cross-attention (at image size).",
                       "One label per target (what its cell changes), one per line: for MCA Grid.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The output of MCA Attention Patch (an unpatched model is refused)."}),
                "condition_prompt": ("CONDITIONING", {"tooltip": "Describes the condition image, e.g. 'a photo of a cat'."}),
                "subject_prompt": ("CONDITIONING", {"tooltip": "Describes the subject image, e.g. 'a photo of a fox'."}),
                "target_prompt": ("CONDITIONING", {"tooltip": "Describes the result, e.g. 'a photo of a fox'; MCA "
                                                              "Target Prompts gives one target per prompt."}),
                "negative": ("CONDITIONING", {"tooltip": "One negative prompt shared by all rows."}),
                "subject": ("LATENT", {"tooltip": "The subject image from MCA DDIM Invert; its steps and schedule "
                                                  "are the sampler's."}),
                "condition": ("LATENT", {"tooltip": "Swap/add: the condition image from MCA DDIM Invert (same steps). "
                                                    "Generation: an Empty Latent Image of the output size; its batch "
                                                    "size gives one seed per target."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xffffffffffffffff, "control_after_generate": True,
                                 "tooltip": "Generation: the noise seed of the condition and target rows (target j "
                                            "of a batch takes seed + j). Swap/add: no effect (the target starts from "
                                            "the inverted condition image; the log says so)."}),
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
                "targets_per_pass": ("INT", {"default": 0, "min": 0, "max": 256,
                                             "tooltip": "Most targets per sampler call; 0 = as many as ComfyUI's "
                                                        "free-memory estimate fits. Each call holds the shared rows "
                                                        "again; the log says when the targets are split."}),
            },
        }

    def sample(self, model, condition_prompt, subject_prompt, target_prompt, negative, subject, condition, seed,
               cfg, local_blend, sigmas=None, blend_mask=None, targets_per_pass=0):
        out = mca_sample(model, condition_prompt, subject_prompt, target_prompt, negative, subject, condition, seed,
                         cfg, sigmas, blend_mask=blend_mask, local_blend=local_blend,
                         make_callback=lambda steps: sampling_callback(model, steps), disable_pbar=False,
                         targets_per_pass=targets_per_pass)
        return ({"samples": out.targets}, {"samples": out.rows}, edit_mask_output(out.edit, *out.rows.shape[-2:]),
                "\n".join(out.labels))


NODE_CLASS_MAPPINGS = {"MCA_Sampler": MCASampler}
NODE_DISPLAY_NAME_MAPPINGS = {"MCA_Sampler": "MCA Sampler"}
