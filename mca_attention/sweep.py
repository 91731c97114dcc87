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


PRESET = -1  # a value of exactly -1 takes the preset's


def parse_axis(setting: str, text: str) -> SweepAxis:
    """``"0.05, 0.1"`` for ``setting``; refused when empty, not numbers, with an empty entry or a repeated value,
    out of range (fractions: 0..1; site indices: whole numbers from 0; -1 = the preset's value in both)."""
    if setting not in SETTINGS:
        raise ValueError(f"a schedule sweep varies one of {', '.join(SETTINGS)}, not '{setting}' (the steps come "
                         f"from MCA DDIM Invert: one step count per pass)")
    parts = [part.strip() for part in text.replace(";", ",").split(",")]
    if not any(parts):
        raise ValueError(f"the {setting} sweep has no values (0 cells): type them comma-separated, e.g. 0.05, 0.1")
    if not all(parts[1:-1]) or (len(parts) > 1 and not parts[0]):
        raise ValueError(f"the {setting} sweep '{text}' has an empty value between two commas: remove the extra "
                         f"comma (every value makes a cell)")
    parts = [part for part in parts if part]  # a trailing comma is harmless
    try:
        values = tuple(float(part) for part in parts)
    except ValueError:
        wrong = next(part for part in parts if not _is_number(part))
        raise ValueError(f"the {setting} sweep values must be numbers separated by commas: '{wrong}' in '{text}' is "
                         f"not one") from None
    repeated = sorted({value for value in values if values.count(value) > 1})
    if repeated:
        raise ValueError(f"the {setting} sweep repeats {', '.join(f'{v:g}' for v in repeated)}: each value makes a "
                         f"cell, so a repeat only samples the same target twice; remove it")
    check_values(setting, values, "the sweep has")
    return SweepAxis(setting, tuple(int(v) for v in values) if setting == SITE_INDEX else values)


def check_values(setting: str, values: tuple[float, ...], where: str) -> None:
    """Refuse values out of ``setting``'s range: fractions 0..1, site indices whole numbers from 0; -1 (the
    preset's value) in both. ``where`` introduces the wrong values in the message ("the sweep has")."""
    if setting == SITE_INDEX:
        wrong = [value for value in values if value != int(value) or (value < 0 and value != PRESET)]
        rule = f"{SITE_INDEX} is a site index (a whole number from 0, or -1 for the preset's value)"
    else:
        wrong = [value for value in values if not 0 <= value <= 1 and value != PRESET]
        rule = f"{setting} is a fraction (0..1, or -1 for the preset's value)"
    if wrong:
        raise ValueError(f"{rule}; {where} {', '.join(f'{v:g}' for v in wrong)}")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


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
