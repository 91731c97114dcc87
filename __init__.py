"""MCA-Ctrl for ComfyUI: tuning-free subject generation, swap and addition on UNet and DiT image models."""
from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
