"""The user's path on an SDXL-family model: swap through ComfyUI's real executor on a full-architecture random
Segmind Vega checkpoint (SDXL's CLIP-L + CLIP-G, pooled outputs, SDXL latent format), at 64 px and 3 steps.

Same proof as the SD1.5 path (test_pipelines_e2e): outside the edit mask the target is the condition's clean
latent, rows 0 and 1 end at their clean inputs, and inside the target differs from a patch that never fires.
"""
from __future__ import annotations

import pytest

import comfy_host
from test_pipelines_e2e import assert_edit_does_what_mca_must, executor  # noqa: F401  (the module's executor)

pytestmark = pytest.mark.full
STEPS = 3


@pytest.fixture(scope="module", autouse=True)
def one_model_family_in_memory():
    """Vega's UNet and text encoders take about 7 GB in fp32: hold no other model meanwhile, and none after."""
    import comfy.model_management

    comfy.model_management.unload_all_models()
    yield
    comfy.model_management.unload_all_models()


def test_sdxl_family_swap_does_what_mca_must(executor, random_vega_checkpoint):  # noqa: F811
    ran = assert_edit_does_what_mca_must(executor, "swap", random_vega_checkpoint.name, STEPS)
    model, clip = comfy_host.node_output(ran, "ckpt", 0), comfy_host.node_output(ran, "ckpt", 1)
    # CheckpointLoaderSimple took it for what it is: Segmind Vega, an SDXL model with SDXL's two text encoders
    assert type(model.model.model_config).__name__ == "Segmind_Vega"
    assert type(model.model).__name__ == "SDXL" and type(clip.cond_stage_model).__name__ == "SDXLClipModel"
