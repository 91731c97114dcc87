"""Grounding DINO (groundingdino-py model code, pure-PyTorch deformable attention): phrase -> boxes."""
from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F

from .bert_compat import bert_config_from_weights, offline_text_encoder
from .configs import config_for

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MAX_LONG_SIDE = 1333
_BUFFERS = ("position_ids", "token_type_ids")


@dataclass
class Detections:
    """Boxes in pixels (x0, y0, x1, y1), their scores and phrases, for one image."""

    boxes: torch.Tensor
    scores: torch.Tensor
    phrases: list[str]
    best_score: float  # highest box score before thresholding (explains "nothing found")


def build_grounding_dino(state_dict: dict, vocab_dir: str, overrides: dict | None = None):
    """A GroundingDINO model with these weights; BERT from config, never from the hub."""
    from groundingdino.models.GroundingDINO.groundingdino import build_groundingdino

    config = config_for(state_dict, overrides)
    swin = config.pop("swin")
    with offline_text_encoder(bert_config_from_weights(state_dict), vocab_dir, swin):
        model = build_groundingdino(SimpleNamespace(**config))
    result = model.load_state_dict(state_dict, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith(_BUFFERS)]
    if missing:
        raise ValueError(f"the Grounding DINO checkpoint lacks {len(missing)} weights (e.g. {missing[:3]}): it is "
                         f"incomplete or made for another configuration")
    return model.eval()


def _preprocess(image_rgb: np.ndarray, size: int) -> torch.Tensor:
    """Shorter side to ``size`` (long side at most 1333), ImageNet-normalised ``[3, h, w]``."""
    height, width = image_rgb.shape[:2]
    scale = min(size / min(height, width), MAX_LONG_SIDE / max(height, width))
    pixels = torch.from_numpy(image_rgb).permute(2, 0, 1).float()[None] / 255.0
    pixels = F.interpolate(pixels, size=(round(height * scale), round(width * scale)), mode="bilinear",
                           align_corners=False, antialias=True)[0]
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (pixels - mean) / std


def caption_for(phrase: str) -> str:
    caption = phrase.lower().strip()
    return caption if caption.endswith(".") else caption + "."


@torch.no_grad()
def detect(model, image_rgb: np.ndarray, phrase: str, box_threshold: float = 0.3, text_threshold: float = 0.25,
           size: int = 800) -> Detections:
    """Boxes whose best token score exceeds ``box_threshold`` (the official SLM defaults 0.3 / 0.25)."""
    from groundingdino.util.utils import get_phrases_from_posmap

    device = next(model.parameters()).device
    caption = caption_for(phrase)
    outputs = model(_preprocess(image_rgb, size)[None].to(device), captions=[caption])
    logits = outputs["pred_logits"].float().cpu().sigmoid()[0]
    boxes = outputs["pred_boxes"].float().cpu()[0]
    scores = logits.max(dim=1).values
    keep = scores > box_threshold
    tokenized = model.tokenizer(caption)
    phrases = [get_phrases_from_posmap(row > text_threshold, tokenized, model.tokenizer).replace(".", "")
               for row in logits[keep]]
    height, width = image_rgb.shape[:2]
    cx, cy, w, h = boxes[keep].unbind(-1)
    xyxy = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1) * torch.tensor(
        [width, height, width, height])
    xyxy = xyxy.clamp(min=0).minimum(torch.tensor([width, height, width, height], dtype=xyxy.dtype))
    return Detections(boxes=xyxy, scores=scores[keep], phrases=phrases,
                      best_score=float(scores.max()) if scores.numel() else 0.0)
