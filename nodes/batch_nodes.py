"""Nodes for many targets in one pass: a schedule sweep, several target prompts, and the labelled grid."""
from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

from ..drawing.tiles import labelled_grid
from ..mca_attention.sweep import SETTINGS, add_axis, parse_axis
from ..mca_attention.prompts import LABEL_KEY
from .common import SWEEP, io, schema


class MCAScheduleSweep(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            node_id="MCA_ScheduleSweep", display_name="MCA Schedule Sweep",
            search_aliases=["xy plot", "parameter sweep", "schedule grid", "sagi salq sweep"],
            description=("Sweeps one schedule setting of MCA Attention Patch over several values. Chain two (or more) "
                         "for a grid: the first node's values run down the grid's rows, the last node's across its "
                         "columns. Connect the last one to the patch's sweep input: the MCA Sampler then makes one "
                         "target per cell in one batch, sharing the condition and subject rows."),
            inputs=[
                io.Combo.Input("setting", options=list(SETTINGS), default="sagi_end",
                               tooltip="The patch widget to vary (fractions of the steps, salq_sites a fraction of "
                                       "the sites, salq_first_site a site index; -1 = the preset's value)."),
                io.String.Input("values", default="0.05, 0.1, 0.2",
                                tooltip="The values, comma-separated; each one is a column (or, in the first node of "
                                        "a chain, a row) of the grid."),
                SWEEP.Input("sweep", optional=True,
                            tooltip="An earlier MCA Schedule Sweep: its axes come first (rows)."),
            ],
            outputs=[SWEEP.Output(tooltip="The sweep's axes so far; its cells are every combination of their "
                                          "values.")],
        )

    @classmethod
    def validate_inputs(cls, setting=None, values=None) -> bool | str:
        """Checked when the prompt is queued (a linked input arrives only at run time, and is checked then)."""
        if setting is None or values is None:
            return True
        if setting not in SETTINGS:  # this check replaces the host's own check of the list
            return f"MCA Schedule Sweep: setting '{setting}' is not one of {', '.join(SETTINGS)}"
        try:
            parse_axis(setting, values)
        except ValueError as error:
            return f"MCA Schedule Sweep: {error}"
        return True

    @classmethod
    def execute(cls, setting, values, sweep=()) -> io.NodeOutput:
        return io.NodeOutput(add_axis(tuple(sweep), parse_axis(setting, values)))


def prompt_lines(text: str) -> list[str]:
    """The target prompts, one per non-empty line; none is refused."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise ValueError("MCA Target Prompts has no prompt (0 targets): type one target prompt per line.")
    return lines


class MCATargetPrompts(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            node_id="MCA_TargetPrompts", display_name="MCA Target Prompts",
            search_aliases=["prompt list", "batch prompts", "several prompts", "multiple targets"],
            description=("Encodes one target prompt per line, for the MCA Sampler's target_prompt: one target per "
                         "prompt, all in one batch with the shared condition and subject rows. Each prompt's text "
                         "labels its cell in the grid."),
            inputs=[
                io.Clip.Input("clip", tooltip="The model's CLIP (its loader's CLIP output)."),
                io.String.Input("text", multiline=True, default="a photo of a fox\na photo of a corgi",
                                tooltip="One target prompt per line; empty lines are skipped."),
            ],
            outputs=[io.Conditioning.Output(tooltip="One prompt per line (MCA Sampler's target_prompt only: other "
                                                    "samplers would combine them).")],
        )

    @classmethod
    def validate_inputs(cls, text=None) -> bool | str:
        """An empty list is refused when the prompt is queued (a linked text is checked at run time)."""
        if text is not None:
            try:
                prompt_lines(text)
            except ValueError as error:
                return str(error)
        return True

    @classmethod
    def execute(cls, clip, text) -> io.NodeOutput:
        conditioning = []
        for line in prompt_lines(text):
            encoded = clip.encode_from_tokens_scheduled(clip.tokenize(line))
            if len(encoded) != 1:
                raise ValueError(f"'{line}' encodes to {len(encoded)} scheduled prompts (CLIP hooks): MCA takes one "
                                 f"plain prompt per target. Remove the hooks from this CLIP.")
            tensor, options = encoded[0]
            conditioning.append([tensor, {**options, LABEL_KEY: line}])
        return io.NodeOutput(conditioning)


def _pictures(images: torch.Tensor) -> list[Image.Image]:
    pixels = (images.detach().float().clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
    return [Image.fromarray(picture) for picture in pixels]


class MCAGrid(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            node_id="MCA_Grid", display_name="MCA Grid",
            search_aliases=["xy plot", "image grid", "contact sheet", "labelled grid"],
            description=("Draws a batch of images as a labelled grid: the MCA Sampler's targets (decoded) with its "
                         "labels output, one label per image."),
            inputs=[
                io.Image.Input("images", tooltip="The decoded targets (VAE Decode of MCA Sampler's target)."),
                io.String.Input("labels", force_input=True, tooltip="MCA Sampler's labels: one line per image."),
                io.Int.Input("columns", default=0, min=0, max=64,
                             tooltip="Tiles per row: connect MCA Sampler's grid_columns (the last swept setting's "
                                     "value count), or type a number; 0 = a square-ish grid."),
                io.Int.Input("tile_size", default=256, min=64, max=1024, step=32,
                             tooltip="The side of each tile in pixels."),
                io.String.Input("title", optional=True, default="", tooltip="A line above the grid."),
            ],
            outputs=[io.Image.Output(tooltip="One image: the tiles in rows, each with its label under it.")],
        )

    @classmethod
    def execute(cls, images, labels, columns, tile_size, title="") -> io.NodeOutput:
        names = labels.split("\n") if labels else []
        if len(names) != images.shape[0]:
            raise ValueError(f"MCA Grid got {images.shape[0]} images but {len(names)} labels: connect the labels of "
                             f"the MCA Sampler whose targets were decoded.")
        columns = columns or math.ceil(math.sqrt(len(names)))
        grid = labelled_grid(_pictures(images), names, columns, tile_size, title)
        return io.NodeOutput(torch.from_numpy(np.asarray(grid).astype(np.float32) / 255.0)[None])
