"""A preview image with the detected boxes, phrases and scores drawn on it."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw


def draw_detections(image_rgb: np.ndarray, detections) -> torch.Tensor:
    """``[H, W, 3]`` float image in 0..1 with red boxes and labels."""
    canvas = Image.fromarray(image_rgb)
    draw = ImageDraw.Draw(canvas)
    for box, score, phrase in zip(detections.boxes.tolist(), detections.scores.tolist(), detections.phrases):
        draw.rectangle(box, outline=(255, 0, 0), width=max(1, min(canvas.size) // 128))
        draw.text((box[0] + 2, box[1] + 1), f"{phrase} {score:.2f}", fill=(255, 0, 0))
    return torch.from_numpy(np.asarray(canvas, dtype=np.float32) / 255.0)
