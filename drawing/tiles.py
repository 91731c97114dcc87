"""Small image helpers shared by the harness (contact sheet, sweep grid) and the MCA Grid node: fonts, tiles,
mask outlines, text, and the labelled grid of a batch. Plain Pillow: no ComfyUI, no harness imports."""
from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageOps

BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)
MUTED = (120, 120, 120)
SUBJECT_COLOUR = (230, 40, 40)
EDIT_COLOUR = (30, 200, 60)
LABEL_LINES = 3  # a tile's label at most: a longer one ends in an ellipsis (the full text stays in the labels)


def font(size: int = 14) -> ImageFont.ImageFont:
    """Pillow's bundled font at ``size`` (a bitmap fallback where FreeType is missing)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):
        return ImageFont.load_default()


def tile(path: Path | None, size: int, mask: Path | None = None, colour: tuple = EDIT_COLOUR) -> Image.Image:
    """The image at ``path`` scaled to fit a ``size`` square (grey when absent), with ``mask`` outlined."""
    if path is None or not Path(path).is_file():
        return fitted(None, size)
    with Image.open(path) as opened:
        image = opened.convert("RGB")
    if mask is not None and Path(mask).is_file():
        image = outline(ImageOps.contain(image, (size, size), Image.LANCZOS), Path(mask), colour)
    return fitted(image, size)


def fitted(image: Image.Image | None, size: int) -> Image.Image:
    """``image`` scaled to fit a ``size`` square and centred on grey (all grey when None)."""
    canvas = Image.new("RGB", (size, size), (235, 235, 235))
    if image is None:
        return canvas
    image = ImageOps.contain(image.convert("RGB"), (size, size), Image.LANCZOS)
    canvas.paste(image, ((size - image.width) // 2, (size - image.height) // 2))
    return canvas


def outline(image: Image.Image, mask_path: Path, colour: tuple, width: int = 3) -> Image.Image:
    """``image`` with the border of the mask (white = 1, resized to the image) drawn ``width`` pixels wide."""
    with Image.open(mask_path) as opened:
        mask = opened.convert("L").resize(image.size, Image.NEAREST)
    binary = mask.point(lambda value: 255 if value > 127 else 0)
    grown = np.asarray(binary.filter(ImageFilter.MaxFilter(width)))
    shrunk = np.asarray(binary.filter(ImageFilter.MinFilter(width)))
    pixels = np.asarray(image.convert("RGB")).copy()
    pixels[grown != shrunk] = colour
    return Image.fromarray(pixels)


def text_box(lines: list[str], width: int, height: int, size: int = 14, colour: tuple = INK) -> Image.Image:
    """Lines wrapped to ``width``, top-left aligned, on white."""
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw, face = ImageDraw.Draw(canvas), font(size)
    chars = max(8, int(width / (size * 0.55)))
    y = 4
    for line in lines:
        for part in textwrap.wrap(line, chars, break_long_words=False, break_on_hyphens=False) or [""]:
            draw.text((6, y), part, fill=colour, font=face)
            y += size + 4
    return canvas


def centred_text(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], text: str, size: int = 14,
                 colour: tuple = INK) -> None:
    """``text`` centred in ``box`` (left, top, right, bottom)."""
    face = font(size)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=face)
    x = box[0] + (box[2] - box[0] - (right - left)) // 2
    y = box[1] + (box[3] - box[1] - (bottom - top)) // 2
    draw.text((x, y), text, fill=colour, font=face)


def vertical_text(text: str, height: int, width: int, size: int = 16) -> Image.Image:
    """``text`` rotated by 90 degrees (reading upwards), centred in a ``width`` x ``height`` strip."""
    strip = Image.new("RGB", (height, width), BACKGROUND)
    centred_text(ImageDraw.Draw(strip), (0, 0, height, width), text, size)
    return strip.rotate(90, expand=True)


def label_lines(label: str, chars: int, most: int = LABEL_LINES) -> list[str]:
    """``label`` wrapped at word boundaries into lines of about ``chars``, at most ``most`` of them (the last one
    shortened with an ellipsis when the label is longer)."""
    lines = textwrap.wrap(label, chars, break_long_words=False, break_on_hyphens=False)
    if len(lines) <= most:
        return lines
    kept = lines[:most]
    kept[-1] = textwrap.shorten(" ".join(lines[most - 1:]), chars, placeholder=" …")
    return kept


def labelled_grid(images: list[Image.Image], labels: list[str], columns: int, tile_size: int,
                  title: str = "", size: int = 14) -> Image.Image:
    """The images in rows of ``columns`` tiles, each with its label under it (wrapped at words, at most
    ``LABEL_LINES`` lines), and ``title`` on top."""
    columns = max(1, min(columns, len(images)))
    rows = -(-len(images) // columns)
    chars = max(8, int(tile_size / (size * 0.55)))
    wrapped = [label_lines(label, chars) for label in labels]
    most_lines = max((len(lines) for lines in wrapped), default=0)
    label_height = most_lines * (size + 4) + 6 if most_lines else 0
    title_height = size + 16 if title else 0
    gap = 6
    width, height = columns * (tile_size + gap) + gap, title_height + rows * (tile_size + label_height + gap) + gap
    grid = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(grid)
    if title:
        centred_text(draw, (0, 0, width, title_height), title, size + 2)
    for index, image in enumerate(images):
        x = gap + (index % columns) * (tile_size + gap)
        y = title_height + gap + (index // columns) * (tile_size + label_height + gap)
        grid.paste(fitted(image, tile_size), (x, y))
        if label_height:
            grid.paste(text_box(wrapped[index], tile_size, label_height, size), (x, y + tile_size))
    return grid
