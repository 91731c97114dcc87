"""The MCA sampling engine: the targets of one sampler call planned once, sampled in passes with the condition and
subject rows they share, and assembled into one batch ``[conditions, subject, targets]``.

Drives ComfyUI's own sampler (``comfy.sample.sample_custom``) with the MCA loop (``sampling``); knows no node.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

import comfy.model_management
import comfy.sample
import comfy.samplers

from .adapters import latent_layout
from .adapters.base import tell_the_ui
from .batch import SamplingPass, TargetCell, TargetPlan, pass_rows, plan_targets, target_cells
from .comfy_patch import MCAState, mca_state
from .layout import BatchShape
from .masks import resize_mask
from .neighbours import check_neighbours
from .prompts import PROMPT_NAMES, check_prompt_fits, check_target_prompt, prompt_label, single_prompt, \
    stack_prompts, target_names, target_prompts
from .rows import SharedRows, shared_rows
from .run import MCARun
from .sampling import mca_sample_loop
from .schedule import Op, describe_run, format_table

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
DISTILLED_CFG = ("MCA Sampler: this {family} model is guidance-distilled: it samples at cfg 1 (its guidance rides on "
                 "the prompts: FluxGuidance), and cfg {cfg:g} runs every row twice (twice the time) for a result it "
                 "was not trained for. Set cfg to 1.")


UI_CELLS = 6  # schedule lines shown on the node; the log has every cell's table


def tell(state: MCAState, key: str, message: str, said: list[str]) -> None:
    """``message`` in the log (once per patched model) and in this run's text on the node."""
    state.warn_once(key, message)
    said.append(message)


def warn_alike(state: MCAState, tables: dict, steps: int, said: list[str]) -> None:
    """Say which sweep cells resolve to one step x site table at this step count (their targets are the same)."""
    groups: dict = {}
    for index, table in tables.items():
        groups.setdefault(tuple(map(tuple, table)), []).append(state.labels[index] or f"cell {index + 1}")
    for labels in (labels for labels in groups.values() if len(labels) > 1):
        tell(state, f"alike {steps} {labels}", f"MCA Sampler: the sweep cells {' and '.join(labels)} run SAGI and "
                                              f"SALQ at the same steps and sites at {steps} steps, so their targets "
                                              f"are the same image: use more steps, or values further apart.", said)


def log_schedule(state: MCAState, table: list, label: str, said: list[str], shown: bool = True) -> None:
    """The step x site table and a one-line summary in the log; the summary on the node when ``shown``; a warning
    when neither SAGI nor SALQ runs."""
    summary = describe_run(table)
    cell = f" [{label}]" if label else ""
    logger.info("MCA on %s%s, %d steps x %d sites: %s. One line per step, one character per site (G = SAGI, "
                "L = SALQ, . = ordinary):\n%s", state.family, cell, len(table), state.num_sites, summary,
                format_table(table))
    if shown:
        said.append(f"MCA on {state.family}{cell}, {len(table)} steps x {state.num_sites} sites: {summary}")
    if not any(op is not Op.NONE for row in table for op in row):
        message = (f"MCA Sampler{cell}: no SAGI and no SALQ step runs under this schedule ({summary}): the result "
                   f"is a plain image. Widen the step ranges on MCA Attention Patch or use more steps.")
        logger.warning(message)
        said.append(message)


@dataclass
class MCAOutput:
    """The whole batch ``[conditions, subject, targets]`` (rows), its shape, each target's edit mask and label."""

    rows: torch.Tensor
    shape: BatchShape
    edit_masks: list[torch.Tensor | None]  # each target's, at latent size; None where none was derived
    labels: list[str]
    columns: int = 0  # targets per grid row: the sweep's last axis when the targets are its cells; 0 = none
    factor: int = 8  # image pixels per latent cell (the family's ``LatentLayout.factor``)

    @property
    def targets(self) -> torch.Tensor:
        return self.rows[self.shape.target_rows]

    def edit_mask_images(self) -> torch.Tensor:
        """Each target's edit region as a MASK batch at image size (all zero where there was none)."""
        height, width = (int(side) * self.factor for side in self.rows.shape[-2:])
        return torch.stack([torch.zeros(height, width) if edit is None else resize_mask(edit.float(), height, width)
                            for edit in self.edit_masks])


def _pass_noise(single: torch.Tensor, sampling_pass: SamplingPass, cells: list[TargetCell]) -> torch.Tensor:
    """Each row's start noise: a condition row's and a target's from their seed (the subject's is unused)."""
    seeds = [*sampling_pass.condition_seeds, sampling_pass.condition_seeds[0],
             *(cells[j].seed for j in sampling_pass.cells)]
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
    check_neighbours(model, state, condition_prompt, subject_prompt, target_prompt, negative)
    if not (local_blend and state.preset.local_blend):
        blend_mask = None
    elif blend_mask is None:
        blend_mask = state.edit_mask
    shared = shared_rows(model, state, subject, condition, sigmas, blend_mask)
    prompts = target_prompts(target_prompt)
    for conditioning, name in zip((condition_prompt, subject_prompt, negative), (PROMPT_NAMES[0], PROMPT_NAMES[1],
                                                                                PROMPT_NAMES[3])):
        check_prompt_fits(state, conditioning, name)
    names = target_names(len(prompts))
    for (tensor, options), name in zip(prompts, names):
        check_prompt_fits(state, [[tensor, options]], name)
        if state.edit_mask is None:
            check_target_prompt(state, tensor, name)
    seeded = shared.condition is None
    cells = target_cells(seed, list(state.labels), [prompt_label(o, i) for i, (_, o) in enumerate(prompts)],
                         shared.seeds, seeded)
    said: list[str] = []  # this run's text on the node: the schedule, the pass split, the warnings
    steps = shared.sigmas.numel() - 1
    tables = state.tables(steps, [cell.schedule for cell in cells])
    for position, (index, table) in enumerate(tables.items()):
        log_schedule(state, table, state.labels[index], said, shown=position < UI_CELLS)
    if len(tables) > UI_CELLS:
        hidden = len(tables) - UI_CELLS
        said.append(f"MCA on ... {hidden} more cell{'s' * (hidden != 1)}: every table is in the log")
    if not seeded:
        tell(state, f"seed {seed}", SEED_UNUSED.format(seed=seed), said)
    if cfg > 1 and state.distilled:
        tell(state, f"cfg {cfg}", DISTILLED_CFG.format(family=state.family, cfg=cfg), said)
    single = shared.single
    per_pass = targets_per_pass or fitting_targets(model, single.shape, len(cells), seeded)
    plan = plan_targets(cells, per_pass, seeded)
    if len(plan.passes) == 1:
        said.append(f"MCA Sampler: {len(cells)} target{'s' * (len(cells) != 1)} in one pass")
    else:
        said.append(f"MCA Sampler: {len(cells)} targets in {len(plan.passes)} passes of at most {per_pass} (each pass "
                    f"holds the shared rows again)" + ("" if targets_per_pass else ": ComfyUI's free-memory estimate "
                                                       "does not fit them all in one batch"))
        logger.info("%s.", said[-1])
    warn_alike(state, tables, steps, said)
    tell_the_ui("\n".join(said))
    callback = None if make_callback is None else make_callback(steps * len(plan.passes))
    request = PassRequest(model, state, shared, cells, tables, prompts, names,
                          single_prompt(condition_prompt, PROMPT_NAMES[0]),
                          single_prompt(subject_prompt, PROMPT_NAMES[1]), negative, cfg, single, disable_pbar)
    done = [request.sample(p, _offset(callback, i * steps, steps * len(plan.passes)))
            for i, p in enumerate(plan.passes)]
    swept = len(state.schedules) > 1 and len(cells) == len(state.schedules)  # the targets are the sweep's cells
    return _assemble(done, plan, state.grid_columns if swept else 0, latent_layout(model).factor)


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
    tables: dict  # schedule cell -> its op table (built once per sampler call)
    prompts: list  # the target prompts, (tensor, options) each
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
        rows = [self.condition_prompt] * shape.conditions + [self.subject_prompt] + [
            self.prompts[cells[j].prompt] for j in sampling_pass.cells]
        row_names = [PROMPT_NAMES[0]] * shape.conditions + [PROMPT_NAMES[1]] + [
            self.names[cells[j].prompt] for j in sampling_pass.cells]
        prompts = stack_prompts(rows, row_names, self.negative, state.text)
        run = MCARun(total_steps=self.shared.sigmas.numel() - 1, shape=shape,
                     cells=tuple(cells[j].schedule for j in sampling_pass.cells), tables=self.tables,
                     text=prompts.text)
        noise = _pass_noise(self.single, sampling_pass, cells)
        loop = comfy.samplers.KSAMPLER(mca_sample_loop,
                                       extra_options={"control": self.shared.control(shape), "run": run})
        out = comfy.sample.sample_custom(self.model, noise, self.cfg, loop, self.shared.sigmas, prompts.positive,
                                         prompts.negative, torch.zeros_like(noise), callback=callback,
                                         disable_pbar=self.disable_pbar, seed=cells[sampling_pass.cells[0]].seed)
        if state.edit_mask is not None:
            return sampling_pass, out, [state.edit_mask] * shape.targets
        masks = state.run_cache(run).cross.mask_before(run.total_steps)
        return sampling_pass, out, [None] * shape.targets if masks is None else list(masks)


def _assemble(done: list, plan: TargetPlan, columns: int, factor: int) -> MCAOutput:
    """The passes' rows as one batch ``[conditions, subject, targets]`` (shared rows from their first pass)."""
    whole, cells = plan.whole, plan.cells
    first_pass, first_rows, _ = done[0]
    rows = [None] * whole.shape.rows
    rows[whole.shape.subject] = first_rows[first_pass.shape.subject]
    edits = [None] * len(cells)
    for sampling_pass, out, pass_edits in done:
        for i, condition_seed in enumerate(sampling_pass.condition_seeds):
            row = whole.condition_seeds.index(condition_seed)
            rows[row] = out[i] if rows[row] is None else rows[row]
        for position, j in enumerate(sampling_pass.cells):
            rows[whole.shape.target_row(j)] = out[sampling_pass.shape.target_row(position)]
            edits[j] = pass_edits[position]
    return MCAOutput(torch.stack(rows), whole.shape, edits, [cell.label for cell in cells], columns, factor)


def fitting_targets(model, latent_shape, most: int, seeded: bool) -> int:
    """The most targets (up to ``most``) whose pass fits ComfyUI's free-memory estimate, at least 1.

    As ComfyUI batches cond and uncond: a pass fits when its rows' ``memory_required`` x 1.5 is below the
    free memory of the model's device, counting the weights still to be loaded.
    """
    device = model.load_device
    free = comfy.model_management.get_free_memory(device) - max(0, model.model_size() - model.loaded_size())
    for count in range(most, 0, -1):
        shape = [pass_rows(count, seeded), *latent_shape[1:]]
        if model.memory_required(shape) * 1.5 < free:
            return count
    return 1
