"""Tiny random SAM and Grounding DINO checkpoints (recipes from the environment notes), saved as files."""
from __future__ import annotations

import json
from pathlib import Path

import torch

import comfy_host

comfy_host.import_pack_without_host()

TINY_DINO_OVERRIDES = {
    "base": "SwinT_OGC", "enc_layers": 1, "dec_layers": 1, "dim_feedforward": 256, "num_queries": 20,
    "enc_n_points": 2, "dec_n_points": 2,
    "swin": {"embed_dim": 16, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 2, 4], "window_size": 7},
}
DETECTION_SIZE = 64


def tiny_sam_state(seed: int = 0) -> dict:
    from functools import partial

    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    torch.manual_seed(seed)
    sam = Sam(
        image_encoder=ImageEncoderViT(depth=2, embed_dim=32, img_size=64, patch_size=8, num_heads=2, window_size=4,
                                      global_attn_indexes=[1], out_chans=32, use_rel_pos=True, mlp_ratio=2,
                                      qkv_bias=True, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6)),
        prompt_encoder=PromptEncoder(embed_dim=32, image_embedding_size=(8, 8), input_image_size=(64, 64),
                                     mask_in_chans=4),
        mask_decoder=MaskDecoder(num_multimask_outputs=3, transformer=TwoWayTransformer(
            depth=1, embedding_dim=32, mlp_dim=64, num_heads=8), transformer_dim=32, iou_head_depth=2,
            iou_head_hidden_dim=32))
    return sam.state_dict()


def tiny_dino_state(seed: int = 0) -> dict:
    from types import SimpleNamespace

    from groundingdino.models.GroundingDINO.groundingdino import build_groundingdino
    from transformers import BertConfig

    from mca_ctrl.slm.bert_compat import bert_vocab_dir, offline_text_encoder
    from mca_ctrl.slm.configs import config_for

    torch.manual_seed(seed)
    config = config_for({}, TINY_DINO_OVERRIDES)
    swin = config.pop("swin")
    bert = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=1, intermediate_size=64)
    with offline_text_encoder(bert, bert_vocab_dir(), swin):
        model = build_groundingdino(SimpleNamespace(**config))
    with torch.no_grad():  # soften the contrastive logits (decoder output . text) so scores vary by image
        model.transformer.decoder.norm.weight.mul_(0.02)
    return model.state_dict()


def write_models(root: Path) -> dict[str, Path]:
    """models/sams/tiny_sam.pth, models/grounding-dino/tiny_dino.pth (+ .json config overrides)."""
    sams, dino = root / "sams", root / "grounding-dino"
    sams.mkdir(parents=True, exist_ok=True)
    dino.mkdir(parents=True, exist_ok=True)
    torch.save(tiny_sam_state(), sams / "tiny_sam.pth")
    torch.save({"model": tiny_dino_state()}, dino / "tiny_dino.pth")
    (dino / "tiny_dino.json").write_text(json.dumps(TINY_DINO_OVERRIDES))
    return {"sams": sams, "grounding-dino": dino}
