"""Nodes for many targets in one pass: a schedule sweep, several target prompts, and the labelled grid."""
from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

from ..drawing.tiles import labelled_grid
from ..mca_attention.sweep import SETTINGS, add_axis, parse_axis
from .common import CATEGORY
from ..mca_attention.prompts import LABEL_KEY


class MCAScheduleSweep:
    DESCRIPTION = ("Sweeps one schedule setting of MCA Attention Patch over several values. Chain two (or more) for "
                   "a grid: the first node's values run down the grid's rows, the last node's across its columns. "
                   "Connect the last one to the patch's sweep input: the MCA Sampler then makes one target per cell "
                   "in one batch, sharing the condition and subject rows.")
    CATEGORY = CATEGORY
    FUNCTION = "sweep"
    RETURN_TYPES = ("MCA_SWEEP",)
    OUTPUT_TOOLTIPS = ("The sweep's axes so far; its cells are every combination of their values.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "setting": (list(SETTINGS), {"default": "sagi_end",
                                             "tooltip": "The patch widget to vary (fractions of the steps, "
                                                        "salq_sites a fraction of the sites, salq_first_site a site "
                                                        "index; -1 = the preset's value)."}),
                "values": ("STRING", {"default": "0.05, 0.1, 0.2",
                                      "tooltip": "The values, comma-separated; each one is a column (or, in the "
                                                 "first node of a chain, a row) of the grid."}),
            },
            "optional": {
                "sweep": ("MCA_SWEEP", {"tooltip": "An earlier MCA Schedule Sweep: its axes come first (rows)."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, setting=None, values=None):
        """Checked when the prompt is queued (a linked input arrives only at run time, and is checked then)."""
        if setting is None or values is None:
            return True
        try:
            parse_axis(setting, values)
        except ValueError as error:
            return f"MCA Schedule Sweep: {error}"
        return True

    def sweep(self, setting, values, sweep=()):
        return (add_axis(tuple(sweep), parse_axis(setting, values)),)


class MCATargetPrompts:
    DESCRIPTION = ("Encodes one target prompt per line, for the MCA Sampler's target_prompt: one target per prompt, "
                   "all in one batch with the shared condition and subject rows. Each prompt's text labels its "
                   "cell in the grid.")
    CATEGORY = CATEGORY
    FUNCTION = "encode"
    RETURN_TYPES = ("CONDITIONING",)
    OUTPUT_TOOLTIPS = ("One prompt per line (MCA Sampler's target_prompt only: other samplers would combine them).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "clip": ("CLIP", {"tooltip": "The model's CLIP (its loader's CLIP output)."}),
            "text": ("STRING", {"multiline": True, "default": "a photo of a fox\na photo of a corgi",
                                "tooltip": "One target prompt per line; empty lines are skipped."}),
        }}

    def encode(self, clip, text):
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if not lines:
            raise ValueError("MCA Target Prompts has no prompt (0 targets): type one target prompt per line.")
        conditioning = []
        for line in lines:
            encoded = clip.encode_from_tokens_scheduled(clip.tokenize(line))
            if len(encoded) != 1:
                raise ValueError(f"'{line}' encodes to {len(encoded)} scheduled prompts (CLIP hooks): MCA takes one "
                                 f"plain prompt per target. Remove the hooks from this CLIP.")
            tensor, options = encoded[0]
            conditioning.append([tensor, {**options, LABEL_KEY: line}])
        return (conditioning,)


def _pictures(images: torch.Tensor) -> list[Image.Image]:
    pixels = (images.detach().float().clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
    return [Image.fromarray(picture) for picture in pixels]


class MCAGrid:
    DESCRIPTION = ("Draws a batch of images as a labelled grid: the MCA Sampler's targets (decoded) with its labels "
                   "output, one label per image.")
    CATEGORY = CATEGORY
    FUNCTION = "draw"
    RETURN_TYPES = ("IMAGE",)
    OUTPUT_TOOLTIPS = ("One image: the tiles in rows, each with its label under it.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The decoded targets (VAE Decode of MCA Sampler's target)."}),
                "labels": ("STRING", {"forceInput": True, "tooltip": "MCA Sampler's labels: one line per image."}),
                "columns": ("INT", {"default": 0, "min": 0, "max": 64,
                                    "tooltip": "Tiles per row: connect MCA Sampler's grid_columns (the last swept "
                                               "setting's value count), or type a number; 0 = a square-ish grid."}),
                "tile_size": ("INT", {"default": 256, "min": 64, "max": 1024, "step": 32,
                                      "tooltip": "The side of each tile in pixels."}),
            },
            "optional": {
                "title": ("STRING", {"default": "", "tooltip": "A line above the grid."}),
            },
        }

    def draw(self, images, labels, columns, tile_size, title=""):
        names = labels.split("\n") if labels else []
        if len(names) != images.shape[0]:
            raise ValueError(f"MCA Grid got {images.shape[0]} images but {len(names)} labels: connect the labels of "
                             f"the MCA Sampler whose targets were decoded.")
        columns = columns or math.ceil(math.sqrt(len(names)))
        grid = labelled_grid(_pictures(images), names, columns, tile_size, title)
        return (torch.from_numpy(np.asarray(grid).astype(np.float32) / 255.0)[None],)


NODE_CLASS_MAPPINGS = {"MCA_ScheduleSweep": MCAScheduleSweep, "MCA_TargetPrompts": MCATargetPrompts,
                       "MCA_Grid": MCAGrid}
NODE_DISPLAY_NAME_MAPPINGS = {"MCA_ScheduleSweep": "MCA Schedule Sweep", "MCA_TargetPrompts": "MCA Target Prompts",
                              "MCA_Grid": "MCA Grid"}
