"""MCA-Ctrl attention control: plain-tensor maths and state; ComfyUI is known only to ``adapters`` and ``comfy_patch``."""
from .attention import attend, blend_regions, plan_regions, target_attention
from .layout import CONDITION, SUBJECT, TARGET, RowLayout, row_layout
from .masks import MASK_THRESHOLD, resize_mask, site_mask
from .run import MCARun, RunStep
from .schedule import MCASchedule, Op
from .tasks import PRESETS, Task, TaskPreset
from .resolve import site_from_fraction
from .unet_sites import AttentionSite, find_attention_sites, preset_salq_site

__all__ = [
    "attend", "blend_regions", "plan_regions", "target_attention",
    "CONDITION", "SUBJECT", "TARGET", "RowLayout", "row_layout",
    "MASK_THRESHOLD", "resize_mask", "site_mask",
    "MCARun", "RunStep",
    "MCASchedule", "Op",
    "PRESETS", "Task", "TaskPreset",
    "AttentionSite", "find_attention_sites", "site_from_fraction", "preset_salq_site",
]
