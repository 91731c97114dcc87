"""What one patched model knows while it samples: its settings, and the per-run scratch every hook reads.

Shared by every adapter (UNet, MMDiT): the settings travel in ``transformer_options`` so that the MCA
Sampler can read the task and masks; per-run data (schedule table, index plans, row layouts,
cross-attention maps) lives in the run's cache, never in the state or in module globals.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from .attention import RegionPlan, plan_regions
from .cross_attention_mask import CrossAttentionMaps
from .layout import RowLayout, row_layout
from .masks import MASK_THRESHOLD, as_single_mask, centroid, site_mask
from .run import MCARun
from .schedule import MCASchedule
from .tasks import TaskPreset

logger = logging.getLogger(__name__)

OUTSIDE_MCA_SAMPLER = ("An MCA-patched model is being sampled outside the MCA Sampler (e.g. by DDIM Invert or a "
                       "KSampler): MCA attention does nothing there. Only the MCA Sampler runs it.")


def checked_mask(mask: torch.Tensor, name: str) -> torch.Tensor:
    """A MASK as one ``[H, W]`` CPU tensor, refused when no pixel is set."""
    single = as_single_mask(mask, name)
    if not bool((single > MASK_THRESHOLD).any()):
        raise ValueError(f"{name} is empty (no pixel above {MASK_THRESHOLD}): check the mask node or its threshold")
    return single.detach().to("cpu").clone()


@dataclass(eq=False)
class MCAState:
    """Settings shared by all sites of one patched model; per-run data lives in the run's cache.

    A ComfyUI ``clone()`` (0.3.75 deep-copies model options) keeps sharing this one object, which holds
    nothing that changes during sampling except the once-only warnings.
    The edit mask is either given, or (generation) derived each step from cross-attention.
    """

    preset: TaskPreset
    schedule: MCASchedule
    num_sites: int
    family: str
    subject_mask: torch.Tensor
    edit_mask: torch.Tensor | None
    subject_tokens: list[int] | None = None
    target_text_cond: torch.Tensor | None = None  # generation: the encoded text the subject tokens index into
    repeats_short_prompts: bool = True  # the family's text rule (see ``ModelAdapter.repeats_short_prompts``)
    source: dict | None = None  # the model's family, latent format and sampling type (inversions must match)
    text_width: int | None = None  # the width of the text tokens the model reads
    pooled_width: int | None = None  # the pooled text vector it needs: its width, 0 = unknown width, None = none
    reposition: bool = False  # RoPE models: SALQ sees the subject's keys moved onto the edit region
    trace: list | None = None  # when a list, every call appends (step, site, op, chunks): for tests
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

    def warn_inactive_rows(self, rows: int, chunks: int) -> None:
        self.warn_once("rows", f"MCA attention is inactive in a {rows // chunks}-row batch: it needs the MCA "
                               f"Sampler's 3 rows (condition, subject, target).")

    def run_cache(self, run: MCARun) -> dict:
        """This model's scratch for one run: the schedule table, index plans, row layouts, maps."""
        cache = run.cache_for(self)
        if not cache:
            cache.update(ops=self.schedule.table(run.total_steps, self.num_sites), plans={}, layouts={},
                         cross=CrossAttentionMaps() if self.edit_mask is None else None)
        return cache

    def edit_mask_at(self, cache: dict, step: int) -> torch.Tensor | None:
        if self.edit_mask is not None:
            return self.edit_mask
        return cache["cross"].mask_before(step)

    def plan(self, cache: dict, step: int, height: int, width: int, device: torch.device) -> RegionPlan | None:
        """Index sets for a site of ``height x width`` image tokens; None while no edit mask is known yet.

        Built once per site resolution and edit mask (once per run, or once per step when the mask
        comes from cross-attention), not per attention call.
        """
        edit = self.edit_mask_at(cache, step)
        if edit is None:
            return None
        key = (height, width, str(device))
        cached = cache["plans"].get(key)
        if cached is None or cached[0] is not edit:
            plan = plan_regions(site_mask(self.subject_mask, height, width).to(device),
                                site_mask(edit, height, width).to(device))
            cached = cache["plans"][key] = (edit, plan)
        return cached[1]

    def subject_shift(self, cache: dict, step: int, height: int, width: int) -> tuple[float, float]:
        """(rows, columns) from the subject mask's centre to the edit region's, at a ``height x width`` grid."""
        edit = self.edit_mask_at(cache, step)
        key = (height, width)
        cached = cache.setdefault("shifts", {}).get(key)
        if cached is None or cached[0] is not edit:
            subject_centre = centroid(site_mask(self.subject_mask, height, width), height, width)
            edit_centre = centroid(site_mask(edit, height, width), height, width)
            shift = (edit_centre[0] - subject_centre[0], edit_centre[1] - subject_centre[1])
            cached = cache["shifts"][key] = (edit, shift)
        return cached[1]

    def layout(self, cache: dict, total_rows: int, cond_or_uncond: list[int], device: torch.device) -> RowLayout:
        key = (total_rows, tuple(cond_or_uncond), str(device))
        if key not in cache["layouts"]:
            cache["layouts"][key] = row_layout(total_rows, cond_or_uncond, device)
        return cache["layouts"][key]
