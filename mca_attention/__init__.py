"""MCA-Ctrl attention control on plain tensors (no ComfyUI types outside ``comfy_patch``)."""
from .attention import attend, blend_regions, plan_regions, sagi, salq
from .layout import CONDITION, SUBJECT, TARGET, RowLayout, row_layout
from .masks import resize_mask, site_mask
from .schedule import NUM_SD15_LAYERS, PRESETS, MCASchedule, Op, step_at_sigma

__all__ = [
    "attend", "blend_regions", "plan_regions", "sagi", "salq",
    "CONDITION", "SUBJECT", "TARGET", "RowLayout", "row_layout",
    "resize_mask", "site_mask",
    "NUM_SD15_LAYERS", "PRESETS", "MCASchedule", "Op", "step_at_sigma",
]
