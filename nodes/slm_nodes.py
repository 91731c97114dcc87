"""SLM nodes: SAM and Grounding DINO loaders (ComfyUI model folders) and the text -> mask node."""
from __future__ import annotations

import json
import os

import numpy as np
import torch

import comfy.model_management
import comfy.utils
import folder_paths

from contextlib import ExitStack

from ..mca_attention.masks import check_aspect, resize_mask
from ..model_files import GROUNDING_DINO, SAM
from ..slm import build_grounding_dino, build_sam, detect, dilate, load_state_dict, segment_boxes, union
from ..slm.bert_compat import bert_vocab_dir
from ..slm.preview import draw_detections
from .common import CATEGORY, DINO_MODEL, SAM_MODEL, io, schema

SAM_FOLDER, DINO_FOLDER, BERT_FOLDER = SAM.folder, GROUNDING_DINO.folder, "bert-base-uncased"
WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")
SAM_FILES, DINO_FILES = SAM.describe(), GROUNDING_DINO.describe()


def register_model_folders() -> None:
    """Add models/sams, models/grounding-dino, models/bert-base-uncased; keep paths users configured."""
    for name in (SAM_FOLDER, DINO_FOLDER, BERT_FOLDER):
        default = os.path.join(folder_paths.models_dir, name)
        if name not in folder_paths.folder_names_and_paths:
            folder_paths.add_model_folder_path(name, default)
        elif default not in folder_paths.folder_names_and_paths[name][0]:
            folder_paths.folder_names_and_paths[name][0].append(default)


def weight_files(folder: str) -> list[str]:
    names = [n for n in folder_paths.get_filename_list(folder) if n.lower().endswith(WEIGHT_SUFFIXES)]
    return names or [f"(no model in models/{folder})"]


def resolve(folder: str, name: str, expected: str) -> str:
    path = folder_paths.get_full_path(folder, name)
    if path is None:
        raise FileNotFoundError(f"no model file '{name}' in {folder_paths.get_folder_paths(folder)}: put {expected} "
                                f"there (nothing is downloaded automatically).")
    return path


def build_from_file(path: str, kind: str, expected: str, build):
    """``build(state_dict)`` for a weights file; a file of another kind is named and refused."""
    state_dict = load_state_dict(path)
    try:
        return build(state_dict)
    except Exception as error:  # wrong-architecture weights fail deep inside the model constructors
        raise ValueError(f"{path} is not a {kind} checkpoint ({type(error).__name__}: {str(error)[:300]}). "
                         f"Put {expected} there.") from error


class SLMModel:
    """A detector or segmenter kept on the CPU and moved to the compute device only while it runs."""

    def __init__(self, module: torch.nn.Module, device_choice: str, **extra):
        self.module = module
        self.device_choice = device_choice
        self.__dict__.update(extra)

    def device(self) -> torch.device:
        return torch.device("cpu") if self.device_choice == "cpu" else comfy.model_management.get_torch_device()

    def __enter__(self):
        return self.module.to(self.device())

    def __exit__(self, *exc):
        self.module.to(comfy.model_management.unet_offload_device())


def loader_inputs(folder: str, expected: str) -> list:
    return [
        io.Combo.Input("model_name", options=weight_files(folder), tooltip=f"From models/{folder}: {expected}."),
        io.Combo.Input("device", options=["auto", "cpu"], default="auto",
                       tooltip="auto: the GPU while running, offloaded after."),
    ]


class MCASAMLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            node_id="MCA_SAMLoader", display_name="MCA SAM Loader", category=f"{CATEGORY}/SLM",
            search_aliases=["segment anything", "sam loader"],
            description="Loads a segment-anything (SAM) checkpoint from models/sams (vit_b / vit_l / vit_h).",
            inputs=loader_inputs(SAM_FOLDER, SAM_FILES),
            outputs=[SAM_MODEL.Output(tooltip="The SAM model, for MCA SLM Mask's sam_model (it segments inside the "
                                              "boxes DINO finds).")],
        )

    @classmethod
    def execute(cls, model_name, device) -> io.NodeOutput:
        path = resolve(SAM_FOLDER, model_name, SAM_FILES)
        return io.NodeOutput(SLMModel(build_from_file(path, "segment-anything (SAM)", SAM_FILES, build_sam), device))


class MCAGroundingDINOLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            node_id="MCA_GroundingDINOLoader", display_name="MCA Grounding DINO Loader", category=f"{CATEGORY}/SLM",
            search_aliases=["grounding dino", "open-set detector", "text to box"],
            description=("Loads a Grounding DINO checkpoint from models/grounding-dino (SwinT or SwinB, told apart by "
                         "the weights; a .json beside it may override the config). BERT is built offline."),
            inputs=loader_inputs(DINO_FOLDER, DINO_FILES),
            outputs=[DINO_MODEL.Output(tooltip="The Grounding DINO model, for MCA SLM Mask's grounding_dino_model (it "
                                               "finds the phrase's boxes).")],
        )

    @classmethod
    def execute(cls, model_name, device) -> io.NodeOutput:
        path = resolve(DINO_FOLDER, model_name, DINO_FILES)
        sidecar = os.path.splitext(path)[0] + ".json"
        overrides = None
        if os.path.isfile(sidecar):
            with open(sidecar, encoding="utf-8") as file:
                overrides = json.load(file)
        vocab = bert_vocab_dir(folder_paths.get_folder_paths(BERT_FOLDER))
        model = build_from_file(path, "Grounding DINO", DINO_FILES,
                                lambda state_dict: build_grounding_dino(state_dict, vocab, overrides))
        return io.NodeOutput(SLMModel(model, device))


def as_rgb_uint8(image: torch.Tensor) -> np.ndarray:
    """One ComfyUI IMAGE item ``[H, W, C]`` (RGB, RGBA or grayscale) as uint8 RGB."""
    channels = image.shape[-1]
    if channels == 1:
        image = image.repeat(1, 1, 3)
    elif channels >= 3:
        image = image[..., :3]
    else:
        raise ValueError(f"expected an image with 1, 3 or 4 channels, got {channels}")
    return (image.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


class MCASLMMask(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            node_id="MCA_SLMMask", display_name="MCA SLM Mask", category=f"{CATEGORY}/SLM",
            search_aliases=["grounded sam", "text to mask", "segment subject", "subject mask"],
            description=("Subject Localization Module: finds the phrase with Grounding DINO and segments each box "
                         "with SAM. Outputs the union mask per image, every object's mask and a preview with boxes."),
            inputs=[
                SAM_MODEL.Input("sam_model", tooltip="From MCA SAM Loader."),
                DINO_MODEL.Input("grounding_dino_model", tooltip="From MCA Grounding DINO Loader."),
                io.Image.Input("image", tooltip="One image or a batch."),
                io.String.Input("phrase", default="the cat", tooltip="What to find, e.g. 'the cat'."),
                io.Float.Input("box_threshold", default=0.3, min=0.0, max=1.0, step=0.01,
                               tooltip="Keep boxes scoring above this (official: 0.3)."),
                io.Float.Input("text_threshold", default=0.25, min=0.0, max=1.0, step=0.01,
                               tooltip="Token score for the box labels (official: 0.25)."),
                io.Int.Input("dilation", default=0, min=0, max=64,
                             tooltip="3x3 dilation iterations; the swap edit mask uses 5."),
                io.Combo.Input("if_nothing_found", options=["error", "empty mask"],
                               tooltip="For an image without a detection: stop with an error naming the best score, "
                                       "or return an all-zero mask for that image only."),
                io.Mask.Input("region", optional=True,
                              tooltip="Subject addition: use this drawn region instead of detecting (no model runs). "
                                      "A region of another size (same aspect ratio) is resized to the image (nearest "
                                      "neighbour)."),
                io.Int.Input("detection_size", optional=True, default=800, min=64, max=2048, step=8,
                             tooltip="Shorter image side for Grounding DINO (its training size: 800)."),
            ],
            outputs=[
                io.Mask.Output(display_name="mask", tooltip="One mask per image: the union of its objects (dilated)."),
                io.Mask.Output(display_name="object_masks",
                               tooltip="One mask per detected object, in image order (dilated)."),
                io.Image.Output(display_name="preview", tooltip="The image with the detected boxes, labels and "
                                                                "scores."),
            ],
        )

    @classmethod
    def execute(cls, sam_model, grounding_dino_model, image, phrase, box_threshold, text_threshold, dilation,
                if_nothing_found, region=None, detection_size=800) -> io.NodeOutput:
        masks, objects, previews = [], [], []
        progress = comfy.utils.ProgressBar(image.shape[0])
        with ExitStack() as on_device:  # each model moves to the device once per call, not once per image
            dino = sam = None
            if region is None:
                dino = on_device.enter_context(grounding_dino_model)
                sam = on_device.enter_context(sam_model)
            for index, item in enumerate(image):
                comfy.model_management.throw_exception_if_processing_interrupted()
                pixels = as_rgb_uint8(item)
                height, width = pixels.shape[:2]
                if region is not None:
                    found = region_mask(region, index, height, width)
                    previews.append(torch.from_numpy(pixels).float() / 255.0)
                else:
                    detections = detect(dino, pixels, phrase, box_threshold, text_threshold, detection_size)
                    if detections.boxes.shape[0] == 0 and if_nothing_found == "error":
                        raise ValueError(
                            f"nothing found for '{phrase}' in image {index + 1} of {image.shape[0]} (best score "
                            f"{detections.best_score:.2f} <= box_threshold {box_threshold}): lower the threshold, "
                            f"rephrase, draw a region, or set if_nothing_found to 'empty mask'.")
                    found = segment_boxes(sam, pixels, detections.boxes).float()
                    previews.append(draw_detections(pixels, detections))
                found = dilate(found, dilation)
                masks.append(union(found, height, width))
                objects.extend(found)
                progress.update(1)
        object_masks = torch.stack(objects) if objects else torch.zeros(0, *image.shape[1:3])
        return io.NodeOutput(torch.stack(masks), object_masks, torch.stack(previews))


def region_mask(region: torch.Tensor, index: int, height: int, width: int) -> torch.Tensor:
    """The drawn region for image ``index`` (the last one repeats), resized (nearest) to the image: ``[1, H, W]``."""
    mask = region[min(index, region.shape[0] - 1)].float().cpu()
    check_aspect(mask, height, width, "region", f"image {index}")
    return resize_mask(mask, height, width)[None]


register_model_folders()
