"""When SAGI and SALQ run: per (denoising step, self-attention layer), SAGI taking precedence.

Steps count 0..N-1 from the noisiest. Layers are the 16 SD1.5 self-attention sites in UNet order
(down 0-5, middle 6, up 7-15). Step bounds are fractions of the schedule so that a preset survives a
change of step count; they become step indices by ``floor(fraction * N)`` (the official code's
``int(total_steps * fraction)``), so at 50 steps the official integer settings are reproduced exactly.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from enum import Enum

import torch

NUM_SD15_LAYERS = 16


class Op(str, Enum):
    NONE = "none"
    SAGI = "sagi"
    SALQ = "salq"


def fraction_to_step(fraction: float, total_steps: int) -> int:
    """``floor(fraction * total_steps)`` with a tolerance for fractions such as 0.1 * 30."""
    return int(math.floor(fraction * total_steps + 1e-6))


@dataclass(frozen=True)
class MCASchedule:
    """S_GI, E_GI, S_LQ, E_LQ as fractions of the steps; Layer_LQ as a site index."""

    sagi_start: float = 0.0
    sagi_end: float = 0.1
    salq_start: float = 0.08
    salq_end: float = 1.0
    salq_first_layer: int = 9

    def __post_init__(self) -> None:
        for name in ("sagi_start", "sagi_end", "salq_start", "salq_end"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} is a fraction of the steps and must lie in 0..1, got {value}")
        if not 0 <= self.salq_first_layer <= NUM_SD15_LAYERS:
            raise ValueError(f"salq_first_layer must lie in 0..{NUM_SD15_LAYERS}, got {self.salq_first_layer}")

    @functools.lru_cache(maxsize=32)  # noqa: B019  (frozen, hashable settings; asked once per attention call)
    def step_ranges(self, total_steps: int) -> tuple[range, range]:
        """The SAGI and SALQ step ranges for a schedule of ``total_steps`` steps."""
        sagi = range(fraction_to_step(self.sagi_start, total_steps), fraction_to_step(self.sagi_end, total_steps))
        salq = range(fraction_to_step(self.salq_start, total_steps), fraction_to_step(self.salq_end, total_steps))
        return sagi, salq

    def op_at(self, step: int, layer: int, total_steps: int) -> Op:
        """The operation for the target row at ``step`` and ``layer``."""
        sagi, salq = self.step_ranges(total_steps)
        if step in sagi:
            return Op.SAGI
        if step in salq and layer >= self.salq_first_layer:
            return Op.SALQ
        return Op.NONE

    def table(self, total_steps: int, num_layers: int = NUM_SD15_LAYERS) -> list[list[Op]]:
        """``table[step][layer]``: the whole schedule, for inspection and tests."""
        return [[self.op_at(step, layer, total_steps) for layer in range(num_layers)] for step in range(total_steps)]


# Official defaults (MCA-Ctrl code, 50 steps): SAGI for the first 10%; SALQ from step 4 on at layers
# 9..15 for swap/add, from step 0 at every layer for generation.
PRESETS: dict[str, MCASchedule] = {
    "swap": MCASchedule(sagi_start=0.0, sagi_end=0.1, salq_start=0.08, salq_end=1.0, salq_first_layer=9),
    "add": MCASchedule(sagi_start=0.0, sagi_end=0.1, salq_start=0.08, salq_end=1.0, salq_first_layer=9),
    "generation": MCASchedule(sagi_start=0.0, sagi_end=0.1, salq_start=0.0, salq_end=1.0, salq_first_layer=0),
}


def step_at_sigma(sigma: float, schedule_sigmas: torch.Tensor) -> int:
    """The step ``i`` whose interval ``[sigmas[i], sigmas[i+1])`` holds ``sigma``.

    Exact schedule sigmas map to their own index; a solver's intermediate sigma (heun, dpm_2) maps
    to the step it belongs to. Needs no call counting, so split cond/uncond calls agree.
    """
    total_steps = schedule_sigmas.numel() - 1
    at_or_above = int((schedule_sigmas[:-1] >= sigma * (1 - 1e-4)).sum())
    return min(max(at_or_above - 1, 0), max(total_steps - 1, 0))
