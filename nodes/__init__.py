"""ComfyUI node adapters: inputs, outputs, one call into ``mca_attention`` / ``slm`` each."""
from . import attention_patch, batch_nodes, ddim_invert, sampler, slm_nodes

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
for _module in (attention_patch, batch_nodes, ddim_invert, sampler, slm_nodes):
    NODE_CLASS_MAPPINGS.update(_module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_module.NODE_DISPLAY_NAME_MAPPINGS)
