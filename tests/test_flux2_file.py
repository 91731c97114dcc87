"""The user's Flux.2 path at full size, without the weights: ComfyUI's own detection on the keys and shapes of the
released architectures, built on the meta device (no memory), then the adapter and the patch node at its preset.

A runnable full-width file is not built here, unlike Flux.1 and Qwen-Image: one double and one single block at
6144 wide with the embedders are 2.29 B parameters (4.6 GB in bf16), and every forward attends over 512 padded
text tokens per row, about 7 TFLOP a step for the three rows: minutes per step on this 2-core CPU. The tiny model
in test_flux2.py runs the same code through the nodes.
"""
from __future__ import annotations

import dataclasses

import pytest
import torch

from mca_ctrl.mca_attention.adapters import model_adapter
from mca_ctrl.mca_attention.adapters.flux2 import Flux2Adapter
from mca_ctrl.mca_attention.comfy_patch import mca_state
from mca_ctrl.mca_attention.schedule import Op
from mca_ctrl.nodes import attention_patch
from random_models import has_klein, square_mask

# The released architectures (Black Forest Labs' FLUX.2 configs): width, double and single blocks, text width.
DEV = dict(hidden_size=6144, depth=8, depth_single_blocks=48, context_in_dim=15360, guidance_embed=True)
KLEIN_4B = dict(hidden_size=3072, depth=5, depth_single_blocks=20, context_in_dim=7680, guidance_embed=False)


def detected(architecture: dict):
    """The MODEL ComfyUI's detection makes of a released file's keys and shapes (meta tensors, the released key
    names: the q/k norms' ``scale``)."""
    import comfy.ldm.flux.model
    import comfy.model_detection
    import comfy.model_patcher
    import comfy.ops

    config = dict(in_channels=128, out_channels=128, vec_in_dim=None, mlp_ratio=3.0,
                  num_heads=architecture["hidden_size"] // 128, axes_dim=[32, 32, 32, 32], theta=2000, patch_size=1,
                  qkv_bias=False, global_modulation=True, mlp_silu_act=True, ops_bias=False, default_ref_method="index",
                  ref_index_scale=10.0, **architecture)
    if "txt_ids_dims" in {field.name for field in dataclasses.fields(comfy.ldm.flux.model.FluxParams)}:
        config["txt_ids_dims"] = [3]
    with torch.device("meta"):
        released = comfy.ldm.flux.model.Flux(image_model="flux2", dtype=torch.bfloat16, device="meta",
                                             operations=comfy.ops.disable_weight_init, **config)
    state = {key[:-len("weight")] + "scale" if key.endswith(("query_norm.weight", "key_norm.weight")) else key: value
             for key, value in released.state_dict().items()}
    model_config = comfy.model_detection.model_config_from_unet(state, "")
    model_config.set_inference_dtype(torch.bfloat16, None)
    model = model_config.get_model(state, device=torch.device("meta"))
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


def architectures() -> list:
    found = [pytest.param(DEV, 56, id="dev")]
    return found + [pytest.param(KLEIN_4B, 25, id="klein 4B", marks=pytest.mark.skipif(
        not has_klein(), reason="this ComfyUI has no Flux.2 klein (0.9.1 and newer do)"))]


@pytest.mark.parametrize("architecture, sites", architectures())
def test_comfyuis_detection_of_the_released_files_gives_the_flux2_adapter(pack, architecture, sites):
    model = detected(architecture)
    assert type(model.model.model_config).__name__ == "Flux2"
    adapter = model_adapter(model)
    assert isinstance(adapter, Flux2Adapter) and adapter.family == "Flux.2" and len(adapter.sites) == sites
    assert adapter.text_width() == architecture["context_in_dim"] and adapter.pooled_width() is None
    if architecture is DEV:
        assert Flux2Adapter.SITES["Flux.2"].startswith(f"{sites} on dev"), "the declared site count is dev's"
    (patched,) = attention_patch.MCAAttentionPatch.execute(model, square_mask(64, 16, 48), "swap", -1.0, -1.0, -1.0,
                                                          -1.0, -1.0, -1, edit_mask=square_mask(64, 8, 40))
    (schedule,) = mca_state(patched).schedules
    steps = 20  # ComfyUI's Flux.2 template
    assert schedule.salq_first_site == 0, "the preset: SALQ at every site"
    assert [schedule.op_at(step, sites - 1, steps) for step in (0, 1, 2, 19)] == [Op.SAGI, Op.SAGI, Op.SALQ, Op.SALQ]
    assert float(model.get_model_object("model_sampling").shift) == pytest.approx(2.02)
