"""What one patched model knows while it samples: its settings, and the per-run answers every hook reads.

Shared by every adapter: the settings travel in ``transformer_options`` so that the MCA Sampler can read
the task and masks; what a run computes (op table, index plans, row layouts, cross-attention maps, shifts)
lives in the run's typed :class:`~.run.RunCache`, never in the state or in module globals.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from .attention import RegionPlan, plan_regions
from .cross_attention_mask import CrossAttentionMaps
from .layout import BatchShape, RowLayout, row_layout
from .masks import MASK_THRESHOLD, as_single_mask, centroid, site_mask
from .run import MCARun, RunCache, RunStep
from .schedule import MCASchedule, Op
from .tasks import TaskPreset
from .text import TextFacts

logger = logging.getLogger(__name__)

OUTSIDE_MCA_SAMPLER = ("An MCA-patched model is being sampled outside the MCA Sampler (e.g. by DDIM Invert or a "
                       "KSampler): MCA attention does nothing there. Only the MCA Sampler runs it.")


def checked_mask(mask: torch.Tensor, name: str) -> torch.Tensor:
    """A MASK as one ``[H, W]`` CPU tensor, refused when no pixel is set."""
    single = as_single_mask(mask, name)
    if not bool((single > MASK_THRESHOLD).any()):
        raise ValueError(f"{name} is empty (no pixel above {MASK_THRESHOLD}): check the mask node or its threshold")
    return single.detach().to("cpu").clone()


@dataclass(frozen=True)
class TargetGroup:
    """Targets that one attention call rebuilds with the same operation and index plan (one batched call)."""

    op: Op
    plan: RegionPlan
    targets: tuple[int, ...]


@dataclass(eq=False)
class MCAState:
    """Settings shared by all sites of one patched model; per-run data lives in the run's cache.

    A ComfyUI ``clone()`` (0.3.75 deep-copies model options) keeps sharing this one object, which holds
    nothing that changes during sampling except the once-only warnings.
    The edit mask is either given, or (generation) derived each step from cross-attention.
    """

    preset: TaskPreset
    schedules: tuple[MCASchedule, ...]  # one per schedule cell (a sweep's cells; one without a sweep)
    num_sites: int
    family: str
    subject_mask: torch.Tensor
    edit_mask: torch.Tensor | None
    subject_tokens: list[int] | None = None
    target_text_cond: torch.Tensor | None = None  # generation: the encoded text the subject tokens index into
    text: TextFacts = TextFacts(repeats_short_prompts=True)  # the family's text rule (``ModelAdapter.TEXT``)
    distilled: bool = False  # the model samples at cfg 1 (``ModelAdapter.guidance_distilled``)
    text_width: int | None = None  # the width of the text tokens the model reads
    pooled_width: int | None = None  # the pooled text vector it needs: its width, 0 = unknown width, None = none
    move_subject: bool = False  # RoPE models: SALQ sees the subject's keys moved onto the edit region
    labels: tuple[str, ...] = ("",)  # per schedule cell: what it changes, e.g. "sagi_end=0.05" (grid labels)
    grid_columns: int = 0  # the cells per grid row: the last swept setting's value count (0: no sweep)
    trace: list | None = None  # when a list, every call appends (step, site, ops per target, chunks): for tests
    _warned: set = field(default_factory=set, repr=False)

    def __deepcopy__(self, memo):
        return self

    def warn_once(self, key: str, message: str) -> bool:
        """Log ``message`` the first time ``key`` comes up; True when it was logged now."""
        if key in self._warned:
            return False
        self._warned.add(key)
        logger.warning(message)
        return True

    def warn_inactive_rows(self, rows: int, chunks: int, expected: int) -> None:
        self.warn_once("rows", f"MCA attention is inactive in a {rows // chunks}-row batch: it needs the MCA "
                               f"Sampler's {expected} rows (conditions, subject, targets).")

    def tables(self, total_steps: int, cells) -> dict:
        """Each schedule cell's op table ``[step][site]`` for a run of ``total_steps`` steps."""
        if max(cells) >= len(self.schedules):
            raise ValueError(f"the run asks for schedule cell {max(cells)} but the patch holds {len(self.schedules)}")
        return {cell: self.schedules[cell].table(total_steps, self.num_sites) for cell in dict.fromkeys(cells)}

    def run_cache(self, run: MCARun) -> RunCache:
        """This model's cache for one run; ``ops[step][site]`` holds the operation of every target row."""
        return run.cache_for(self, lambda: self._new_cache(run))

    def _new_cache(self, run: MCARun) -> RunCache:
        tables = run.tables if run.tables is not None else self.tables(run.total_steps, run.cells)
        ops = [[tuple(tables[cell][step][site] for cell in run.cells) for site in range(self.num_sites)]
               for step in range(run.total_steps)]
        return RunCache(ops=ops, cross=CrossAttentionMaps() if self.edit_mask is None else None)

    def target_groups(self, cache: RunCache, current: RunStep, site: int, total_rows: int, chunks: int,
                      grid: tuple[int, int], device: torch.device) -> list[TargetGroup]:
        """The target rows one attention call rebuilds, grouped by (operation, plan); empty: ordinary attention.

        A call that does not hold the run's rows (another sampler's batch) rebuilds nothing, with a warning.
        """
        shape = current.run.shape
        ops = cache.ops[current.step][site]
        active = any(op is not Op.NONE for op in ops)
        if active and total_rows != shape.rows * chunks:
            self.warn_inactive_rows(total_rows, chunks, shape.rows)
            active = False
        plans = self.plans(cache, current.step, *grid, device, shape.targets) if active else ()
        groups: dict[tuple, tuple[Op, RegionPlan, list[int]]] = {}
        applied = []
        for target, op in enumerate(ops):
            plan = plans[target] if active and op is not Op.NONE else None
            applied.append(Op.NONE if plan is None else op)
            if plan is not None:
                groups.setdefault((op, id(plan)), (op, plan, []))[2].append(target)
        if self.trace is not None:
            self.trace.append((current.step, site, tuple(applied), chunks))
        return [TargetGroup(op, plan, tuple(targets)) for op, plan, targets in groups.values()]

    def edit_mask_at(self, cache: RunCache, step: int, target: int = 0) -> torch.Tensor | None:
        """Target ``target``'s edit mask at ``step``: the patch's, or (generation) its own from cross-attention."""
        if self.edit_mask is not None:
            return self.edit_mask
        masks = cache.cross.mask_before(step)
        return None if masks is None else masks[target]

    def plans(self, cache: RunCache, step: int, height: int, width: int, device: torch.device,
              targets: int) -> tuple[RegionPlan | None, ...]:
        """Index sets of each target for a site of ``height x width`` tokens; None while no edit mask is known.

        Built once per site resolution and edit mask (once per run, or once per step when the mask
        comes from cross-attention), not per attention call. Targets that share the patch's edit mask
        share one plan object.
        """
        if self.edit_mask is not None:
            return (self._plan(cache, self.edit_mask, (height, width, str(device)), device),) * targets
        return tuple(self._plan(cache, self.edit_mask_at(cache, step, j), (height, width, str(device), j), device)
                     for j in range(targets))

    def _plan(self, cache: RunCache, edit: torch.Tensor | None, key: tuple, device: torch.device) -> RegionPlan | None:
        if edit is None:
            return None
        height, width = key[:2]
        cached = cache.plans.get(key)
        if cached is None or cached[0] is not edit:
            plan = plan_regions(site_mask(self.subject_mask, height, width).to(device),
                                site_mask(edit, height, width).to(device))
            cached = cache.plans[key] = (edit, plan)
        return cached[1]

    def subject_shift(self, cache: RunCache, step: int, height: int, width: int, target: int = 0) -> tuple[float, float]:
        """(rows, columns) from the subject mask's centre to target ``target``'s edit region, on a ``height x width``
        grid."""
        edit = self.edit_mask_at(cache, step, target)
        key = (height, width, target if self.edit_mask is None else 0)
        cached = cache.shifts.get(key)
        if cached is None or cached[0] is not edit:
            subject_centre = centroid(site_mask(self.subject_mask, height, width), height, width)
            edit_centre = centroid(site_mask(edit, height, width), height, width)
            shift = (edit_centre[0] - subject_centre[0], edit_centre[1] - subject_centre[1])
            cached = cache.shifts[key] = (edit, shift)
        return cached[1]

    def layout(self, cache: RunCache, total_rows: int, cond_or_uncond: list[int], device: torch.device,
               shape: BatchShape, targets: tuple[int, ...] | None = None) -> RowLayout:
        """The rows of one call (restricted to ``targets`` when given), built once per run."""
        key = (total_rows, tuple(cond_or_uncond), str(device), targets)
        if key not in cache.layouts:
            cache.layouts[key] = row_layout(total_rows, cond_or_uncond, device, shape, targets)
        return cache.layouts[key]

    def cond_targets(self, cache: RunCache, total_rows: int, cond_or_uncond: list[int], shape: BatchShape,
                     device: torch.device) -> torch.Tensor:
        """The cond chunk's target rows in target order (where generation reads the subject word's map)."""
        rows = self.layout(cache, total_rows, cond_or_uncond, device, shape)
        return rows.target.view(len(cond_or_uncond), shape.targets)[cond_or_uncond.index(0)]
