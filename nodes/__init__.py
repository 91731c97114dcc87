"""ComfyUI node adapters (V3 schema): inputs, outputs, one call into ``mca_attention`` / ``slm`` each."""
from .attention_patch import MCAAttentionPatch
from .batch_nodes import MCAGrid, MCAScheduleSweep, MCATargetPrompts
from .common import io
from .ddim_invert import MCADDIMInvert
from .sampler import MCASampler
from .slm_nodes import MCAGroundingDINOLoader, MCASAMLoader, MCASLMMask

NODES: list[type[io.ComfyNode]] = [MCAAttentionPatch, MCASampler, MCADDIMInvert, MCAScheduleSweep, MCATargetPrompts,
                                   MCAGrid, MCASAMLoader, MCAGroundingDINOLoader, MCASLMMask]
NODE_CLASS_MAPPINGS = {node.GET_SCHEMA().node_id: node for node in NODES}  # by id, for scripts and tests
