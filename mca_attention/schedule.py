"""When SAGI and SALQ run: per (denoising step, self-attention site), SAGI taking precedence.

Steps count 0..N-1 from the noisiest. Sites are the self-attention sites in call order (SD1.5: down
0-5, middle 6, up 7-15; see each adapter for its family). Step bounds are fractions of the schedule so that a
preset survives a change of step count; they become step indices by ``floor(fraction * N)`` (the official code's
``int(total_steps * fraction)``), so at 50 steps the official integer settings are reproduced exactly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum


class Op(str, Enum):
    NONE = "none"
    SAGI = "sagi"
    SALQ = "salq"


def fraction_to_step(fraction: float, total_steps: int) -> int:
    """``floor(fraction * total_steps)`` with a tolerance for fractions such as 0.1 * 30."""
    return int(math.floor(fraction * total_steps + 1e-6))


def check_order(op: str, start: float, end: float) -> None:
    """Refuse a step range that starts after it ends (``op`` is "sagi" or "salq")."""
    if start > end:
        raise ValueError(f"{op}_start ({start:g}) is after {op}_end ({end:g}): {op.upper()} would never run. "
                         f"Set {op}_start <= {op}_end (equal values switch {op.upper()} off).")


@dataclass(frozen=True)
class MCASchedule:
    """S_GI, E_GI, S_LQ, E_LQ as fractions of the steps; Layer_LQ as a site index.

    ``salq_first_site`` None stands for the model family's preset site; a schedule is made concrete for a
    model by ``resolve`` before it runs.
    """

    sagi_start: float = 0.0
    sagi_end: float = 0.1
    salq_start: float = 0.08
    salq_end: float = 1.0
    salq_first_site: int | None = None
    min_one_step: bool = False  # a non-empty fraction range keeps at least one step (few-step models)

    def __post_init__(self) -> None:
        for name in ("sagi_start", "sagi_end", "salq_start", "salq_end"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} is a fraction of the steps and must lie in 0..1, got {value}")
        for op in ("sagi", "salq"):
            check_order(op, getattr(self, f"{op}_start"), getattr(self, f"{op}_end"))
        if self.salq_first_site is not None and self.salq_first_site < 0:
            raise ValueError(f"salq_first_site must be 0 or more, got {self.salq_first_site}")

    def step_ranges(self, total_steps: int) -> tuple[range, range]:
        """The SAGI and SALQ step ranges for a schedule of ``total_steps`` steps."""
        return (self._steps(self.sagi_start, self.sagi_end, total_steps),
                self._steps(self.salq_start, self.salq_end, total_steps))

    def _steps(self, start: float, end: float, total_steps: int) -> range:
        first, stop = fraction_to_step(start, total_steps), fraction_to_step(end, total_steps)
        if self.min_one_step and end > start and stop <= first:
            first = min(first, total_steps - 1)
            stop = first + 1
        return range(first, stop)

    def op_at(self, step: int, site: int, total_steps: int) -> Op:
        """The operation for the target row at ``step`` and ``site``."""
        if self.salq_first_site is None:
            raise ValueError("the schedule's Layer_LQ is the model's preset: resolve it for a model first")
        sagi, salq = self.step_ranges(total_steps)
        if step in sagi:
            return Op.SAGI
        return Op.SALQ if step in salq and site >= self.salq_first_site else Op.NONE

    def table(self, total_steps: int, num_sites: int) -> list[list[Op]]:
        """``table[step][site]``: the whole schedule (built once per sampling run, then only looked up)."""
        return [[self.op_at(step, site, total_steps) for site in range(num_sites)] for step in range(total_steps)]


def describe_run(table: list[list[Op]]) -> str:
    """One line saying which steps and sites ran SAGI and SALQ (or that neither ran at all)."""
    parts = []
    for op, name in ((Op.SAGI, "SAGI"), (Op.SALQ, "SALQ")):
        steps = [step for step, row in enumerate(table) if op in row]
        if not steps:
            parts.append(f"{name}: no step")
            continue
        sites = sorted({site for step in steps for site, cell in enumerate(table[step]) if cell is op})
        parts.append(f"{name}: steps {steps[0]}-{steps[-1]} ({len(steps)} of {len(table)}) at sites "
                     f"{sites[0]}-{sites[-1]}")
    return "; ".join(parts)


def format_table(table: list[list[Op]]) -> str:
    """A printable schedule: one line per step, one character per site (G = SAGI, L = SALQ, . = none)."""
    letters = {Op.SAGI: "G", Op.SALQ: "L", Op.NONE: "."}
    width = len(str(len(table) - 1))
    return "\n".join(f"step {step:>{width}}: {''.join(letters[op] for op in row)}" for step, row in enumerate(table))
