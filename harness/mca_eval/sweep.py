"""The parameter grid of ``--sweep name=v1,v2``: axes, cells, and the items of every cell."""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace

from mca_eval.comfy_api import pack_module, run_workflow_module
from mca_eval.items import EvalItem, safe_id

PATCH_NODE = "MCA_AttentionPatch"
SCHEDULE_SETTINGS = pack_module("mca_attention.sweep").SETTINGS  # what MCA Schedule Sweep varies in one pass


class SweepError(ValueError):
    """A --sweep argument is malformed or names no input of the workflow."""


@dataclass(frozen=True)
class Axis:
    """One swept input: ``title`` (node title or class) and ``input`` name, with its values."""

    name: str
    title: str
    input: str
    values: tuple


def parse_axis(spec: str) -> Axis:
    """``sagi_end=0.05,0.1`` (an MCA Attention Patch widget) or ``Title.input=v1,v2`` (any node input); each value
    is read as ``--set`` reads one (scripts/run_workflow.py's parse_value: 0.1, 3, true, else the text)."""
    name, sep, values = spec.partition("=")
    name = name.strip()
    parts = [part.strip() for part in values.split(",") if part.strip()]
    if not sep or not name or not parts:
        raise SweepError(f"--sweep needs 'name=value1,value2,...', got '{spec}'")
    title, _, input_name = name.rpartition(".")
    parse_value = run_workflow_module().parse_value
    return Axis(name=name, title=title or PATCH_NODE, input=input_name, values=tuple(map(parse_value, parts)))


def check_values(axis: Axis, class_type: str, spec: list | None) -> None:
    """SweepError unless every value of ``axis`` suits the widget ``spec`` (the input's ``/object_info`` entry)."""
    if not spec:
        raise SweepError(f"--sweep {axis.name}: the server's {class_type} has no input '{axis.input}'")
    kind, options = spec[0], (spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {})
    choices = kind if isinstance(kind, list) else options.get("options") if kind == "COMBO" else None
    for value in axis.values:
        problem = _value_problem(value, kind, options, choices)
        if problem:
            raise SweepError(f"--sweep {axis.name}: {value!r} {problem} ({class_type}.{axis.input})")


def _value_problem(value, kind, options: dict, choices: list | None) -> str | None:
    """Why ``value`` does not suit a widget of ``kind`` (None when it does), as ComfyUI's validation sees it."""
    if choices is not None:
        shown = ", ".join(map(str, choices[:10])) + (", ..." if len(choices) > 10 else "")
        return None if value in choices else f"is not one of {shown}"
    if kind in ("INT", "FLOAT"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return "is not a number"
        if kind == "INT" and value != int(value):
            return "is not a whole number"
        low, high = options.get("min", -math.inf), options.get("max", math.inf)
        return None if low <= value <= high else f"is outside {low} .. {high}"
    if kind == "BOOLEAN":
        return None if isinstance(value, bool) else "is not true or false"
    if kind == "STRING":
        return None
    return f"cannot be swept: this {kind} input is fed by a link, not a widget"


def cells(axes: tuple[Axis, ...]) -> list[tuple[tuple[str, object], ...]]:
    """Every combination of the axes' values as ((name, value), ...); one empty cell without axes."""
    return [tuple(zip((axis.name for axis in axes), combo)) for combo in itertools.product(*(a.values for a in axes))]


def cell_label(cell: tuple[tuple[str, object], ...], separator: str = ", ") -> str:
    """``sagi_end=0.1, salq_end=0.8`` (empty for the cell of a run without sweep): each value as ``str`` writes it
    (``sagi_end=0.0``, ``preset=swap``), unlike the pack's ``cell_label`` (``:g``, numbers only: ``sagi_end=0``)."""
    return separator.join(f"{name}={value}" for name, value in cell)


def expand(items: list[EvalItem], axes: tuple[Axis, ...]) -> list[EvalItem]:
    """One item per (item, cell); ids get the cell appended (``dog_00__sagi_end=0.1``)."""
    if not axes:
        return items
    return [replace(item, id=safe_id(item.id + "__" + cell_label(cell, "__")), sweep=cell, group=item.id)
            for item in items for cell in cells(axes)]


def by_item(items: list[EvalItem]) -> list[tuple[EvalItem, ...]]:
    """The cells of ``expand``'s items grouped by their benchmark item, in order (an item without sweep alone)."""
    groups: dict[str, list[EvalItem]] = {}
    for item in items:
        groups.setdefault(item.base_id, []).append(item)
    return [tuple(cells) for cells in groups.values()]


def benchmark_item(cells: tuple[EvalItem, ...]) -> EvalItem:
    """The benchmark item that ``expand`` made ``cells`` from."""
    return replace(cells[0], id=cells[0].base_id, sweep=(), group="")
