"""The one schedule resolver: what the user set (widgets, sweep cells, -1 = preset) and the family's preset
become the run's concrete schedules.

Layer_LQ has one name, ``salq_first_site`` (a site index in call order); ``salq_sites`` says it as a fraction
of the model's sites. A raw ``salq_first_site`` wins over ``salq_sites`` unless a sweep varies ``salq_sites``
alone; with both at -1 the family's preset decides (its adapter's ``preset_schedule``).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from .schedule import MCASchedule
from .sweep import SITE_INDEX, SweepAxis, cell_label, sweep_cells

PRESET = -1.0  # a widget at exactly -1 takes the preset's value
STEP_SETTINGS = ("sagi_start", "sagi_end", "salq_start", "salq_end")


@dataclass(frozen=True)
class ScheduleRequest:
    """The schedule as the user asked for it: the patch's widget values and the sweep's axes (cells)."""

    settings: Mapping[str, float]  # every name of ``sweep.SETTINGS``; exactly -1 = the preset's value
    sweep: tuple[SweepAxis, ...] = ()


def site_from_fraction(fraction: float, num_sites: int) -> int:
    """The first site of "the sites from this fraction of the model on": ``floor(fraction * N)``."""
    return int(math.floor(fraction * num_sites + 1e-6))


def _value(name: str, value: float, preset_value):
    """A widget's value, or the preset's for exactly -1 (any other negative is refused)."""
    if value == PRESET:
        return preset_value
    if value < 0:
        raise ValueError(f"{name} = {value:g}: use a value in 0..1, or exactly -1 for the preset's value.")
    return value


def _first_site(values: Mapping[str, float], preset_first: int, num_sites: int) -> int:
    first = values[SITE_INDEX]
    if first >= 0:
        return int(first)
    if first != PRESET:
        raise ValueError(f"{SITE_INDEX} = {first:g}: use a site index, or -1 to use salq_sites.")
    fraction = _value("salq_sites", values["salq_sites"], None)
    return preset_first if fraction is None else site_from_fraction(fraction, num_sites)


def checked(schedule: MCASchedule, num_sites: int, family: str) -> MCASchedule:
    """``schedule`` if its Layer_LQ lies among the model's sites; refused otherwise."""
    if schedule.salq_first_site is None or schedule.salq_first_site >= num_sites:
        raise ValueError(f"salq_first_site {schedule.salq_first_site} is beyond this {family} model's {num_sites} "
                         f"self-attention sites (0..{num_sites - 1}), so SALQ would run nowhere; use -1 for the preset "
                         f"or a smaller index.")
    return schedule


def resolve_schedules(preset: MCASchedule, request: ScheduleRequest, num_sites: int,
                      family: str) -> tuple[tuple[MCASchedule, ...], tuple[str, ...]]:
    """One concrete schedule and one label per sweep cell (one cell without a sweep).

    ``preset`` is the task's schedule as the family runs it (Layer_LQ concrete); each setting that is not -1
    replaces the preset's value, a swept value the widget's.
    """
    schedules, labels = [], []
    for cell in sweep_cells(request.sweep):
        values = {**request.settings, **cell}
        if SITE_INDEX not in cell and "salq_sites" in cell:
            values[SITE_INDEX] = PRESET  # a swept salq_sites wins over the widget's site index
        try:
            steps = {name: _value(name, values[name], getattr(preset, name)) for name in STEP_SETTINGS}
            first = _first_site(values, preset.salq_first_site, num_sites)
            schedules.append(checked(replace(preset, **steps, salq_first_site=first), num_sites, family))
        except ValueError as error:
            raise ValueError(f"sweep cell {cell_label(cell)}: {error}" if cell else str(error)) from None
        labels.append(cell_label(cell))
    return tuple(schedules), tuple(labels)


def given_schedules(schedules: Sequence[MCASchedule], preset_first: int, num_sites: int,
                    family: str) -> tuple[MCASchedule, ...]:
    """Schedules given as objects (scripts, tests): Layer_LQ None takes the family's preset site."""
    return tuple(checked(s if s.salq_first_site is not None else replace(s, salq_first_site=preset_first),
                         num_sites, family) for s in schedules)

