"""A schedule sweep: axes of values for the patch's schedule settings, and the grid of cells they make.

Cells are every combination of the axes' values, the first axis changing slowest (the grid's rows),
the last fastest (its columns); each cell is ``{setting: value}`` and is labelled
``sagi_end=0.05, salq_start=0.1``.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

FRACTIONS = ("sagi_start", "sagi_end", "salq_start", "salq_end", "salq_sites")
SITE_INDEX = "salq_first_site"
SETTINGS = (*FRACTIONS, SITE_INDEX)  # what a sweep may vary: the patch's schedule widgets


@dataclass(frozen=True)
class SweepAxis:
    setting: str
    values: tuple[float, ...]


def parse_axis(setting: str, text: str) -> SweepAxis:
    """``"0.05, 0.1"`` for ``setting``; refused when empty, not numbers, or (site index) not whole numbers."""
    if setting not in SETTINGS:
        raise ValueError(f"a schedule sweep varies one of {', '.join(SETTINGS)}, not '{setting}' (the steps come "
                         f"from MCA DDIM Invert: one step count per pass)")
    parts = [part.strip() for part in text.replace(";", ",").split(",") if part.strip()]
    if not parts:
        raise ValueError(f"the {setting} sweep has no values (0 cells): type them comma-separated, e.g. 0.05, 0.1")
    try:
        values = tuple(float(part) for part in parts)
    except ValueError:
        raise ValueError(f"the {setting} sweep values must be numbers separated by commas, got '{text}'") from None
    if setting == SITE_INDEX and any(value != int(value) for value in values):
        raise ValueError(f"{SITE_INDEX} values are site indices (whole numbers), got '{text}'")
    return SweepAxis(setting, tuple(int(v) for v in values) if setting == SITE_INDEX else values)


def add_axis(axes: tuple[SweepAxis, ...], axis: SweepAxis) -> tuple[SweepAxis, ...]:
    """``axes`` with ``axis`` after them (its values change fastest); a setting swept twice is refused."""
    if any(existing.setting == axis.setting for existing in axes):
        raise ValueError(f"{axis.setting} is already swept by an earlier MCA Schedule Sweep: sweep each setting once")
    return (*axes, axis)


def sweep_cells(axes: tuple[SweepAxis, ...]) -> list[dict[str, float]]:
    """Every combination of the axes' values, first axis slowest; one empty cell without axes."""
    return [dict(zip((axis.setting for axis in axes), combo))
            for combo in itertools.product(*(axis.values for axis in axes))]


def cell_label(cell: dict[str, float]) -> str:
    return ", ".join(f"{setting}={value:g}" for setting, value in cell.items())
