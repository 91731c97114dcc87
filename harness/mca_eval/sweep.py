"""The parameter grid of ``--sweep name=v1,v2``: axes, cells, and the items of every cell."""
from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, replace

from mca_eval.items import EvalItem, safe_id

PATCH_NODE = "MCA_AttentionPatch"
# what MCA Schedule Sweep varies in one pass (the pack's mca_attention/sweep.py SETTINGS)
SCHEDULE_SETTINGS = ("sagi_start", "sagi_end", "salq_start", "salq_end", "salq_sites", "salq_first_site")


class SweepError(ValueError):
    """A --sweep argument is malformed or names no input of the workflow."""


@dataclass(frozen=True)
class Axis:
    """One swept input: ``title`` (node title or class) and ``input`` name, with its values."""

    name: str
    title: str
    input: str
    values: tuple


def parse_value(text: str):
    """A JSON scalar when ``text`` is one (0.1, 3, true), else the text itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_axis(spec: str) -> Axis:
    """``sagi_end=0.05,0.1`` (an MCA Attention Patch widget) or ``Title.input=v1,v2`` (any node input)."""
    name, sep, values = spec.partition("=")
    name = name.strip()
    parts = [part.strip() for part in values.split(",") if part.strip()]
    if not sep or not name or not parts:
        raise SweepError(f"--sweep needs 'name=value1,value2,...', got '{spec}'")
    title, _, input_name = name.rpartition(".")
    return Axis(name=name, title=title or PATCH_NODE, input=input_name, values=tuple(parse_value(p) for p in parts))


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


def cell_label(cell: tuple[tuple[str, object], ...]) -> str:
    """``sagi_end=0.1, salq_end=0.8`` (empty for the cell of a run without sweep)."""
    return ", ".join(f"{name}={value}" for name, value in cell)


def expand(items: list[EvalItem], axes: tuple[Axis, ...]) -> list[EvalItem]:
    """One item per (item, cell); ids get the cell appended (``dog_00__sagi_end=0.1``)."""
    if not axes:
        return items
    return [replace(item, id=safe_id(item.id + "__" + "__".join(f"{n}={v}" for n, v in cell)), sweep=cell,
                    group=item.id)
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
