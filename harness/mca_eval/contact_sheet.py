"""Contact sheet: subject | condition | result per item, masks outlined, metrics beside each row."""
from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

from mca_eval.comfy_api import pack_module
from mca_eval.harness import item_dir
from mca_eval.report import DISPLAY, ItemRow, format_value

tiles = pack_module("drawing.tiles")  # the pack's image helpers, shared with MCA Grid

HEADER = 28
COLUMNS = ("subject (subject mask red)", "condition (edit mask green)", "result (edit mask green)")


def write_contact_sheets(rows: list[ItemRow], out: Path, tile_size: int = 192, rows_per_page: int = 40) -> list[Path]:
    """``contact_sheet.png`` (then ``contact_sheet_2.png``, ... past ``rows_per_page``); returns the paths."""
    paths = []
    for page, start in enumerate(range(0, len(rows), rows_per_page), start=1):
        path = Path(out) / ("contact_sheet.png" if page == 1 else f"contact_sheet_{page}.png")
        sheet(rows[start:start + rows_per_page], out, tile_size).save(path)
        paths.append(path)
    return paths


def sheet(rows: list[ItemRow], out: Path, tile_size: int) -> Image.Image:
    """One page of the contact sheet."""
    text_width = tile_size + 96
    gap = 6
    width = 3 * (tile_size + gap) + text_width + gap
    image = Image.new("RGB", (width, HEADER + len(rows) * (tile_size + gap) + gap), tiles.BACKGROUND)
    draw = ImageDraw.Draw(image)
    for column, title in enumerate((*COLUMNS, "item and metrics")):
        left = gap + column * (tile_size + gap)
        tiles.centred_text(draw, (left, 0, left + (tile_size if column < 3 else text_width), HEADER), title, 12)
    for index, row in enumerate(rows):
        folder = item_dir(out, row.item)
        top = HEADER + index * (tile_size + gap)
        edit = folder / "edit_mask.png"
        pictures = (tiles.tile(folder / "subject.png", tile_size, folder / "subject_mask.png", tiles.SUBJECT_COLOUR),
                    tiles.tile(folder / "condition.png", tile_size, edit, tiles.EDIT_COLOUR),
                    tiles.tile(folder / "result.png", tile_size, edit, tiles.EDIT_COLOUR))
        for column, picture in enumerate(pictures):
            image.paste(picture, (gap + column * (tile_size + gap), top))
        if row.status == "not generated":
            tiles.centred_text(draw, (gap + 2 * (tile_size + gap), top, gap + 3 * tile_size + 2 * gap,
                                      top + tile_size), "not generated: see errors.log", 12)
        elif row.task == "generation":
            tiles.centred_text(draw, (gap + tile_size + gap, top, gap + 2 * tile_size + gap, top + tile_size),
                               "no condition image", 12)
        lines = [row.item, f"status: {row.status}"]
        lines += [f"{DISPLAY[name]}: {format_value(value)}" for name, value in row.metrics.items()]
        image.paste(tiles.text_box(lines, text_width, tile_size, 13), (gap + 3 * (tile_size + gap), top))
    return image
