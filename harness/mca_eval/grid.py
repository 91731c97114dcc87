"""The sweep grid: one labelled image, a block per item, the first axis down, the others across.

Each block names its item; the axes are named (``sagi_end ->`` across, the first axis written upwards
at the left) and every row and column prints its value; under each result the chosen metric.
"""
from __future__ import annotations

import itertools
from pathlib import Path

from PIL import Image, ImageDraw

from mca_eval.comfy_api import pack_module
from mca_eval.harness import item_dir
from mca_eval.report import DISPLAY, ItemRow, format_value
from mca_eval.sweep import Axis

tiles = pack_module("drawing.tiles")  # the pack's image helpers, shared with MCA Grid

TITLE, AXIS_TITLE, VALUE_LABEL, METRIC_LABEL = 28, 24, 22, 22
AXIS_STRIP, ROW_LABELS, GAP = 26, 90, 6


def write_grid(rows: list[ItemRow], axes: tuple[Axis, ...], out: Path, metric: str, tile_size: int = 160) -> Path:
    """``sweep_grid.png`` for every item of ``rows`` (grouped by item); returns its path."""
    groups = list(dict.fromkeys(row.group for row in rows))
    blocks = [block([row for row in rows if row.group == group], group, axes, out, metric, tile_size)
              for group in groups]
    width = max(b.width for b in blocks)
    image = Image.new("RGB", (width, sum(b.height for b in blocks)), tiles.BACKGROUND)
    top = 0
    for picture in blocks:
        image.paste(picture, (0, top))
        top += picture.height
    path = Path(out) / "sweep_grid.png"
    image.save(path)
    return path


def block(rows: list[ItemRow], group: str, axes: tuple[Axis, ...], out: Path, metric: str,
          tile_size: int) -> Image.Image:
    """One item's grid."""
    down, across = (axes[0], axes[1:]) if len(axes) > 1 else (None, axes)
    row_values = down.values if down else (None,)
    columns = list(itertools.product(*(axis.values for axis in across)))
    cell_w, cell_h = tile_size + GAP, tile_size + METRIC_LABEL + GAP
    left = AXIS_STRIP + ROW_LABELS
    top = TITLE + AXIS_TITLE + VALUE_LABEL
    title = f"item {group}: {DISPLAY.get(metric, metric)} under each result"
    width = max(left + len(columns) * cell_w + GAP, round(tiles.font(15).getlength(title)) + 2 * GAP)
    image = Image.new("RGB", (width, top + len(row_values) * cell_h + GAP), tiles.BACKGROUND)
    draw = ImageDraw.Draw(image)
    tiles.centred_text(draw, (0, 0, image.width, TITLE), title, 15)
    across_title = ", ".join(axis.name for axis in across) + "  ->"
    tiles.centred_text(draw, (left, TITLE, image.width, TITLE + AXIS_TITLE), across_title, 15)
    for c, combo in enumerate(columns):
        x = left + c * cell_w
        tiles.centred_text(draw, (x, TITLE + AXIS_TITLE, x + tile_size, top), ", ".join(str(v) for v in combo), 14)
    if down is not None:
        image.paste(tiles.vertical_text(down.name + "  ->", len(row_values) * cell_h, AXIS_STRIP, 15), (0, top))
    by_cell = {row.cell: row for row in rows}
    for r, value in enumerate(row_values):
        y = top + r * cell_h
        if down is not None:
            tiles.centred_text(draw, (AXIS_STRIP, y, left, y + tile_size), str(value), 14)
        for c, combo in enumerate(columns):
            cell = (((down.name, value),) if down else ()) + tuple(zip((a.name for a in across), combo))
            row = by_cell.get(cell)
            x = left + c * cell_w
            image.paste(tiles.tile(item_dir(out, row.item) / "result.png" if row else None, tile_size), (x, y))
            text = _metric_text(row, metric)
            tiles.centred_text(draw, (x, y + tile_size, x + tile_size, y + tile_size + METRIC_LABEL), text, 14,
                         colour=tiles.MUTED if row is None or row.status != "ok" else (20, 20, 20))
    return image


def _metric_text(row: ItemRow | None, metric: str) -> str:
    if row is None or row.status == "not generated":
        return "failed (errors.log)" if row is not None else "missing"
    if row.status != "ok":
        return f"{DISPLAY.get(metric, metric)} n/a"
    return f"{DISPLAY.get(metric, metric)} {format_value(row.metrics.get(metric))}"
