"""One sampling run, named by an explicit token, and the step it is at: what the attention reads per call.

The MCA sampling loop creates an :class:`MCARun` per run and, before every model call, puts
``RunStep(run, step)`` into that call's ``transformer_options``. The attention takes its step from there
(no sigma lookup, no call counting) and keeps its per-run caches (schedule table, index plans,
cross-attention maps) in ``run.cache_for(owner)``: nothing outlives the run, and no two runs (a SIGMAS
input reused across queue runs, two patched models in one graph) can read each other's state.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from .layout import SINGLE, BatchShape

RUN_KEY = "mca_run"


@dataclass(eq=False)
class MCARun:
    """One sampling pass: its steps, its rows, and which of the patch's schedule cells its targets run."""

    total_steps: int
    latent_size: tuple[int, int] | None = None  # (h, w) of the latent: where a DiT's image tokens are
    shape: BatchShape = SINGLE
    cells: tuple[int, ...] = (0,)  # per target row: the index of its schedule in ``MCAState.schedules``
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    _caches: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if len(self.cells) != self.shape.targets:
            raise ValueError(f"{len(self.cells)} schedule cells for {self.shape.targets} target rows")

    def cache_for(self, owner) -> dict:
        """The scratch dict of one patched model's state for this run."""
        return self._caches.setdefault(owner, {})


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
