"""One sampling run, named by an explicit token, and the step it is at: what the attention reads per call.

The MCA sampling loop creates an :class:`MCARun` per run and, before every model call, puts
``RunStep(run, step)`` into that call's ``transformer_options``. The attention takes its step from there
(no sigma lookup, no call counting) and keeps what it computes for the run in ``run.cache_for(owner)``
(a :class:`RunCache`): nothing outlives the run, and no two runs (a SIGMAS input reused across queue runs,
two patched models in one graph) can read each other's state.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Callable

import torch

from .cross_attention_mask import CrossAttentionMaps
from .layout import SINGLE, BatchShape
from .schedule import Op

RUN_KEY = "mca_run"
Table = list  # ``table[step][site]``: an Op (see ``MCASchedule.table``)


@dataclass(frozen=True)
class TextSpan:
    """Prompts padded to one length: how many of each row's ``length`` text tokens are its own.

    ``cond`` holds one count per row of the positive chunk, ``uncond`` per row of the negative chunk. The
    padding sits after each row's own tokens (right), and no softmax of that row reaches it.
    """

    length: int
    cond: tuple[int, ...]
    uncond: tuple[int, ...]

    def counts(self, cond_or_uncond: list[int]) -> list[int]:
        """Each row's own token count, in the call's row order."""
        return [n for chunk in cond_or_uncond for n in (self.cond if chunk == 0 else self.uncond)]

    def valid_keys(self, cond_or_uncond: list[int], device: torch.device, tokens: int | None = None,
                   multiple: int = 1) -> torch.Tensor:
        """``[rows of the call, tokens]`` bool: True on each row's own text tokens and, where the model appends
        pad tokens after ``length`` up to ``tokens`` (a multiple of ``multiple``: Z-Image), on as many of them as
        the row's prompt alone would get."""
        counts = torch.tensor(self.counts(cond_or_uncond), device=device)[:, None]
        positions = torch.arange(self.length if tokens is None else tokens, device=device)[None, :]
        own_pads = -(-counts // multiple) * multiple - counts
        return (positions < counts) | ((positions >= self.length) & (positions < self.length + own_pads))


@dataclass(eq=False)
class MCARun:
    """One sampling pass: its steps, its rows, and which of the patch's schedule cells its targets run.

    ``tables`` (cell -> op table), when given, are the tables the sampler already logged; otherwise they are
    built from the patch's schedules once, on the run's first attention call.
    """

    total_steps: int
    latent_size: tuple[int, int] | None = None  # (h, w) of the latent: where a DiT's image tokens are
    shape: BatchShape = SINGLE
    cells: tuple[int, ...] = (0,)  # per target row: the index of its schedule in ``MCAState.schedules``
    tables: dict[int, Table] | None = None
    text: TextSpan | None = None  # None: every row's text is its own (no padding)
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    _caches: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if len(self.cells) != self.shape.targets:
            raise ValueError(f"{len(self.cells)} schedule cells for {self.shape.targets} target rows")

    def cache_for(self, owner, build: Callable[[], RunCache]) -> RunCache:
        """The :class:`RunCache` of one patched model's state for this run, built on first use."""
        if owner not in self._caches:
            self._caches[owner] = build()
        return self._caches[owner]


@dataclass(eq=False)
class RunCache:
    """What one run computes, once, for one patched model (keys say what each entry depends on)."""

    ops: list[list[tuple[Op, ...]]]  # ops[step][site]: the operation of every target row
    cross: CrossAttentionMaps | None  # generation without an edit mask: the subject word's maps
    plans: dict = field(default_factory=dict)  # (h, w, device[, target]) -> (edit mask, RegionPlan)
    layouts: dict = field(default_factory=dict)  # (rows, cond_or_uncond, device, targets) -> RowLayout
    shifts: dict = field(default_factory=dict)  # (h, w, target) -> (edit mask, (rows, columns))
    rotations: dict = field(default_factory=dict)  # (shift, device) -> the RoPE rotation of that shift
    text_keys: dict = field(default_factory=dict)  # (cond_or_uncond, device) -> each row's own text tokens
    padding_masks: dict = field(default_factory=dict)  # (cond_or_uncond, tokens, dtype, device) -> additive mask


@dataclass(frozen=True)
class RunStep:
    run: MCARun
    step: int


def with_run_step(extra_args: dict, run: MCARun, step: int) -> dict:
    """A copy of a sampler's ``extra_args`` whose ``transformer_options`` carry ``RunStep(run, step)``.

    Only the dicts on the way are copied; the model's own options are never mutated.
    """
    model_options = dict(extra_args.get("model_options", {}))
    transformer_options = dict(model_options.get("transformer_options", {}))
    transformer_options[RUN_KEY] = RunStep(run, step)
    model_options["transformer_options"] = transformer_options
    return {**extra_args, "model_options": model_options}


def run_step(transformer_options: dict) -> RunStep | None:
    """The run and step of this model call, or None outside the MCA sampling loop."""
    return transformer_options.get(RUN_KEY)
