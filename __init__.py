"""MCA-Ctrl for ComfyUI: tuning-free subject generation, swap and addition on UNet and DiT image models."""
from comfy_api.v0_0_2 import ComfyExtension

from .nodes import NODES, io
from .nodes.old_inputs import accept_old_inputs

WEB_DIRECTORY = "./web"  # the node help pages: web/docs/<node id>.md


class MCAExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return NODES


async def comfy_entrypoint() -> MCAExtension:
    """ComfyUI's entry point for V3 node packs."""
    accept_old_inputs()
    return MCAExtension()
