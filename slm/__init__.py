"""Subject Localization Module: text -> boxes (Grounding DINO) -> masks (SAM), offline, plain torch/numpy."""
from .checkpoints import load_state_dict
from .grounding_dino import Detections, build_grounding_dino, detect
from .masks import dilate, union
from .sam import build_sam, segment_boxes

__all__ = ["load_state_dict", "Detections", "build_grounding_dino", "detect", "dilate", "union", "build_sam",
           "segment_boxes"]
