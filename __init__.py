"""MCA-Ctrl for ComfyUI: tuning-free subject generation, swap and addition on Stable Diffusion 1.5."""
from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
