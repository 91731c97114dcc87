"""The template browser's thumbnails: example_workflows/<name>.jpg beside every example workflow.

    .venv/bin/python scripts/build_thumbnails.py           # (re)write example_workflows/*.jpg
    .venv/bin/python scripts/build_thumbnails.py --check   # exit 1 if a thumbnail is missing or out of date

The ComfyUI frontend lists a custom pack's example_workflows/*.json in its template browser and shows the
same-name .jpg as the card's picture (it fetches /api/workflow_templates/<pack folder>/<name>.jpg; frontend
1.32.9 and 1.47.10 alike). There are no result images to show (no real weights here), so each thumbnail says what
the graph does with what it takes, read from the workflow's API file: the family (from its loaders), the task
(the patch's preset, a schedule sweep), the example input images it loads (subject, condition; an empty latent
for generation), the masks it uses (SLM masks by their phrase, a drawn box where it is one), and the target prompt
in a dashed box that is plainly not a picture. Deterministic: Pillow only, its built-in font, fixed sizes.
scripts/build_workflows.py calls ``write_all`` after writing the workflows.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageChops, ImageDraw, ImageFont

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / "example_workflows"
INPUTS = WORKFLOWS / "input"
SIZE = (512, 512)  # px: the frontend's cards are square (1.32.9: about 254 px, the picture contained)
QUALITY = 85
MAX_BYTES = 60_000
# Pixels may differ by a little between Pillow / libjpeg builds: a thumbnail is current when at most this share of
# its pixels differs by more than DIFFERENT (0-255, in some channel) from what this script draws now (a moved or
# changed label changes thousands of pixels, 1 % and more).
DIFFERENT, TOLERANCE = 48, 0.001

BACKGROUND, PANEL, TEXT, MUTED = (24, 26, 32), (38, 41, 50), (236, 238, 242), (150, 156, 170)
ACCENT = (255, 196, 64)  # arrows, "+"
MASK_COLOR = (64, 200, 255)
# The family as its loaders name it: the text encoder loader's type, else the checkpoint's file name.
CLIP_TYPES = {"flux": "Flux.1", "flux2": "Flux.2", "qwen_image": "Qwen-Image", "lumina2": "Z-Image"}
CHECKPOINTS = {"v1-5-pruned-emaonly.safetensors": "SD1.5", "sd_xl_base_1.0.safetensors": "SDXL"}
FAMILY_COLORS = {"SD1.5": (63, 120, 158), "SDXL": (90, 110, 200), "Flux.1": (170, 70, 160), "Flux.2": (200, 80, 110),
                 "Qwen-Image": (110, 80, 200), "Z-Image": (40, 150, 120)}
TASKS = {"swap": "Subject swap", "add": "Subject addition", "generation": "Subject generation"}


def font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)  # Pillow's built-in Aileron: no system font needed


@dataclass(frozen=True)
class Recipe:
    """What a thumbnail shows, read from an API-format workflow."""

    family: str
    task: str  # the patch's preset: swap, add, generation
    subject_image: str
    subject_phrase: str
    condition_image: str | None  # None: an empty latent (generation)
    condition_size: int
    edit_phrase: str | None  # the SLM edit mask's phrase
    edit_box: tuple[float, float, float, float] | None  # a drawn box mask, as fractions of the canvas: x, y, w, h
    subject_words: str  # generation: the target's words whose attention gives the edit region
    target: str
    sweep: tuple[tuple[str, tuple[str, ...]], ...]  # (setting, values) of each MCA Schedule Sweep, rows first
    size: int  # px, the images' (or the empty latent's) width
    steps: int
    cfg: float


# The input a node passes on, for following a row's image or prompt back to where it is loaded or written.
PASSED_ON = {"MCA_DDIMInvert": "latent", "VAEEncode": "pixels", "ImageScale": "image", "FluxGuidance": "conditioning",
             "GrowMask": "mask"}


class Api:
    """An API-format workflow, followed along its links."""

    def __init__(self, prompt: dict):
        self.prompt = prompt

    def of(self, class_type: str) -> list[dict]:
        return [node for node in self.prompt.values() if node["class_type"] == class_type]

    def source(self, node: dict, name: str) -> dict | None:
        value = node["inputs"].get(name)
        return self.prompt[value[0]] if isinstance(value, list) else None

    def upstream(self, node: dict, name: str, class_types: set[str]) -> dict | None:
        """The first node of ``class_types`` found following ``name`` back, through the nodes that pass an image,
        latent, mask or conditioning on (``PASSED_ON``)."""
        found = self.source(node, name)
        while found is not None and found["class_type"] not in class_types:
            through = PASSED_ON.get(found["class_type"])
            found = self.source(found, through) if through else None
        return found


def recipe(prompt: dict) -> Recipe:
    api = Api(prompt)
    [patch], [sampler] = api.of("MCA_AttentionPatch"), api.of("MCA_Sampler")
    clip_types = [node["inputs"]["type"] for kind in ("CLIPLoader", "DualCLIPLoader") for node in api.of(kind)]
    family = (CLIP_TYPES[clip_types[0]] if clip_types
              else CHECKPOINTS[api.of("CheckpointLoaderSimple")[0]["inputs"]["ckpt_name"]])
    subject = api.upstream(sampler, "subject", {"LoadImage"})
    condition = api.upstream(sampler, "condition", {"LoadImage", "EmptyLatentImage", "EmptySD3LatentImage",
                                                    "EmptyFlux2LatentImage"})
    subject_mask = api.upstream(patch, "subject_mask", {"MCA_SLMMask"})
    edit = api.upstream(patch, "edit_mask", {"MCA_SLMMask", "MaskComposite"})
    edit_box = None
    if edit is not None and edit["class_type"] == "MaskComposite":
        canvas, box = api.source(edit, "destination")["inputs"], api.source(edit, "source")["inputs"]
        edit_box = (edit["inputs"]["x"] / canvas["width"], edit["inputs"]["y"] / canvas["height"],
                    box["width"] / canvas["width"], box["height"] / canvas["height"])
    target = api.upstream(sampler, "target_prompt", {"CLIPTextEncode"})["inputs"]["text"]
    inversion = api.upstream(sampler, "subject", {"MCA_DDIMInvert"})
    scaled = api.upstream(sampler, "subject", {"ImageScale"})
    sweeps, node = [], api.source(patch, "sweep")
    while node is not None:  # the chain runs from the last setting (the grid's columns) back to the first
        sweeps.insert(0, (node["inputs"]["setting"],
                          tuple(value.strip() for value in node["inputs"]["values"].split(","))))
        node = api.source(node, "sweep")
    return Recipe(family=family, task=patch["inputs"]["preset"], subject_image=subject["inputs"]["image"],
                  subject_phrase=subject_mask["inputs"]["phrase"],
                  condition_image=condition["inputs"]["image"] if condition["class_type"] == "LoadImage" else None,
                  condition_size=condition["inputs"].get("width", 0),
                  edit_phrase=edit["inputs"]["phrase"] if edit and edit["class_type"] == "MCA_SLMMask" else None,
                  edit_box=edit_box, subject_words=patch["inputs"].get("subject_words", ""), target=target,
                  sweep=tuple(sweeps), size=scaled["inputs"]["width"], steps=inversion["inputs"]["steps"],
                  cfg=sampler["inputs"]["cfg"])


# Where things stand on the 512 x 512 card (the frontend shows it about 254 px square, so no text under 18 px):
# the family and the pack, the task, the two example images side by side (their masks on them), an arrow down to
# the target prompt in a dashed box, the graph's size, steps and cfg at the bottom.
TILE, TILE_TOP, MARGIN = 188, 110, 20
TILE_X = (MARGIN, SIZE[0] - MARGIN - TILE)
TARGET_BOX = (MARGIN, 382, SIZE[0] - MARGIN, 472)


def _centered(draw: ImageDraw.ImageDraw, center_x: float, y: float, text: str, size: int, fill) -> None:
    face = font(size)
    draw.text((center_x - draw.textlength(text, font=face) / 2, y), text, font=face, fill=fill)


def _dashed_box(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], color, dash: int = 10) -> None:
    left, top, right, bottom = box
    for x in range(left, right, 2 * dash):
        draw.line([(x, top), (min(x + dash, right), top)], fill=color, width=2)
        draw.line([(x, bottom), (min(x + dash, right), bottom)], fill=color, width=2)
    for y in range(top, bottom, 2 * dash):
        draw.line([(left, y), (left, min(y + dash, bottom))], fill=color, width=2)
        draw.line([(right, y), (right, min(y + dash, bottom))], fill=color, width=2)


def _chip(draw: ImageDraw.ImageDraw, x: int, bottom: int, text: str, color) -> None:
    """A label with a mask swatch, standing on ``bottom`` inside a tile."""
    face = font(20)
    width = int(draw.textlength(text, font=face)) + 36
    draw.rounded_rectangle((x, bottom - 32, x + width, bottom), radius=8, fill=(16, 18, 22))
    draw.rectangle((x + 9, bottom - 22, x + 21, bottom - 10), fill=color)
    draw.text((x + 28, bottom - 28), text, font=face, fill=TEXT)


def _photo(card: Image.Image, name: str, x: int) -> None:
    with Image.open(INPUTS / name) as image:
        tile = image.convert("RGB").resize((TILE, TILE), Image.Resampling.LANCZOS)
    card.paste(tile, (x, TILE_TOP))


def _words(draw: ImageDraw.ImageDraw, text: str, highlight: set[str], top: int, size: int) -> None:
    """``text`` centred in the target box, wrapped, its ``highlight`` words in the subject's colour."""
    face, (left, _, right, _) = font(size), TARGET_BOX
    lines, line = [], []
    for word in text.split():
        if line and draw.textlength(" ".join(line + [word]), font=face) > right - left - 24:
            lines.append(line)
            line = []
        line.append(word)
    lines.append(line)
    for index, line in enumerate(lines[:2]):
        x = (left + right) / 2 - draw.textlength(" ".join(line), font=face) / 2
        for word in line:
            bare = word.strip("\u201c\u201d.,")
            draw.text((x, top + index * (size + 6)), word, font=face, fill=ACCENT if bare in highlight else TEXT)
            x += draw.textlength(word + " ", font=face)


def _target(draw: ImageDraw.ImageDraw, plan: Recipe) -> None:
    """The target prompt in a dashed box (no picture: nothing has run); a sweep's grid under it."""
    left, top, right, bottom = TARGET_BOX
    _dashed_box(draw, TARGET_BOX, MUTED)
    label = "target prompt" + (" \u00b7 edit region: \u201c" + plan.subject_words + "\u201d"
                               if plan.task == "generation" and plan.subject_words else "")
    _centered(draw, (left + right) / 2, top + 8, label, 18, MUTED)
    _words(draw, f"\u201c{plan.target}\u201d", {plan.subject_words} if plan.task == "generation" else set(),
           top + 34, 24)
    if plan.sweep:  # one line: the grid's rows (first setting) x its columns (last setting)
        parts = [(f"{len(plan.sweep[0][1])} x {len(plan.sweep[-1][1])} grid:  ", MUTED),
                 (f"{plan.sweep[0][0]} {', '.join(plan.sweep[0][1])}", TEXT), ("  x  ", MUTED),
                 (f"{plan.sweep[-1][0]} {', '.join(plan.sweep[-1][1])}", ACCENT)]
        face = font(18)
        x = (left + right) / 2 - sum(draw.textlength(text, font=face) for text, _ in parts) / 2
        for text, color in parts:
            draw.text((x, top + 64), text, font=face, fill=color)
            x += draw.textlength(text, font=face)


def thumbnail(plan: Recipe) -> Image.Image:
    card = Image.new("RGB", SIZE, BACKGROUND)
    draw = ImageDraw.Draw(card)
    # header: the family, the pack, the task
    face = font(24)
    pill = int(draw.textlength(plan.family, font=face)) + 32
    draw.rounded_rectangle((MARGIN, 14, MARGIN + pill, 52), radius=19, fill=FAMILY_COLORS[plan.family])
    draw.text((MARGIN + 16, 18), plan.family, font=face, fill=(255, 255, 255))
    draw.text((SIZE[0] - MARGIN - draw.textlength("MCA-Ctrl", font=face), 19), "MCA-Ctrl", font=face, fill=MUTED)
    title = TASKS[plan.task] + (", schedule sweep" if plan.sweep else "")
    draw.text((MARGIN, 58), title, font=font(36 if len(title) < 24 else 32), fill=TEXT)
    draw.rectangle((0, TILE_TOP - 8, SIZE[0], TILE_TOP + TILE + 38), fill=PANEL)
    # the condition: an example image (its edit mask on it), or the empty latent generation starts from
    x = TILE_X[0]
    if plan.condition_image:
        _photo(card, plan.condition_image, x)
        if plan.edit_box:
            bx, by, bw, bh = plan.edit_box
            box = (x + round(bx * TILE), TILE_TOP + round(by * TILE), x + round((bx + bw) * TILE),
                   TILE_TOP + round((by + bh) * TILE))
            overlay = Image.new("RGBA", SIZE, (0, 0, 0, 0))
            ImageDraw.Draw(overlay).rectangle(box, fill=MASK_COLOR + (90,))
            card.paste(Image.alpha_composite(card.convert("RGBA"), overlay).convert("RGB"))
            draw = ImageDraw.Draw(card)
            draw.rectangle(box, outline=MASK_COLOR, width=3)
            _chip(draw, x + 6, TILE_TOP + TILE - 6, "box", MASK_COLOR)
        elif plan.edit_phrase:
            _chip(draw, x + 6, TILE_TOP + TILE - 6, plan.edit_phrase, MASK_COLOR)
        caption = "condition image"
    else:
        _dashed_box(draw, (x, TILE_TOP, x + TILE, TILE_TOP + TILE), MUTED)
        _centered(draw, x + TILE / 2, TILE_TOP + 70, "empty latent", 24, TEXT)
        _centered(draw, x + TILE / 2, TILE_TOP + 104, f"{plan.condition_size} px", 22, MUTED)
        caption = "no condition image"
    _centered(draw, x + TILE / 2, TILE_TOP + TILE + 8, caption, 20, MUTED)
    # the subject and its mask
    x = TILE_X[1]
    _photo(card, plan.subject_image, x)
    _chip(draw, x + 6, TILE_TOP + TILE - 6, plan.subject_phrase, ACCENT)
    _centered(draw, x + TILE / 2, TILE_TOP + TILE + 8, "subject image", 20, MUTED)
    # "+" between them, an arrow down to the target
    center, middle = SIZE[0] // 2, TILE_TOP + TILE // 2
    draw.line([(center - 14, middle), (center + 14, middle)], fill=ACCENT, width=7)
    draw.line([(center, middle - 14), (center, middle + 14)], fill=ACCENT, width=7)
    top, bottom = TILE_TOP + TILE + 44, TARGET_BOX[1] - 4
    draw.line([(center, top), (center, bottom - 12)], fill=ACCENT, width=7)
    draw.polygon([(center, bottom), (center - 14, bottom - 16), (center + 14, bottom - 16)], fill=ACCENT)
    _target(draw, plan)
    _centered(draw, SIZE[0] / 2, 482, f"{plan.size} px  \u00b7  {plan.steps} steps  \u00b7  cfg {plan.cfg:g}  \u00b7  "
              "no training", 20, MUTED)
    return card


def encode(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=QUALITY, optimize=True)
    return out.getvalue()


def workflows() -> list[Path]:
    """The UI workflows the template browser lists (each has its API twin in api/)."""
    return sorted(WORKFLOWS.glob("*.json"))


def render(path: Path) -> bytes:
    """The thumbnail of one UI workflow, drawn from its API file."""
    plan = recipe(json.loads((path.parent / "api" / path.name).read_text()))
    data = encode(thumbnail(plan))
    if len(data) >= MAX_BYTES:
        raise ValueError(f"{path.stem}.jpg would be {len(data)} bytes, over {MAX_BYTES}")
    return data


def difference(a: bytes, b: bytes) -> float:
    """The share of pixels in which two JPEGs differ by more than DIFFERENT; 1.0 when their sizes differ."""
    first, second = (Image.open(io.BytesIO(data)).convert("RGB") for data in (a, b))
    if first.size != second.size:
        return 1.0
    channels = ImageChops.difference(first, second).split()
    largest = ImageChops.lighter(ImageChops.lighter(channels[0], channels[1]), channels[2])
    histogram = largest.histogram()
    return sum(histogram[DIFFERENT + 1:]) / (first.size[0] * first.size[1])


def stale() -> list[Path]:
    """The thumbnails missing, or drawn differently from what ``render`` draws now."""
    found = []
    for path in workflows():
        jpg = path.with_suffix(".jpg")
        if not jpg.exists() or difference(jpg.read_bytes(), render(path)) > TOLERANCE:
            found.append(jpg)
    return found


def write_all() -> list[Path]:
    """Writes every stale thumbnail; returns them."""
    written = stale()
    for jpg in written:
        jpg.write_bytes(render(jpg.with_suffix(".json")))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check that the thumbnails are up to date")
    args = parser.parse_args(argv)
    paths = stale() if args.check else write_all()
    for path in paths:
        print(("out of date: " if args.check else "wrote ") + str(path.relative_to(REPO)))
    return 1 if args.check and paths else 0


if __name__ == "__main__":
    sys.exit(main())
