"""Grounding DINO configurations as data (the official .py configs are never executed)."""
from __future__ import annotations

import copy

_COMMON = {
    "batch_size": 1, "modelname": "groundingdino", "position_embedding": "sine", "pe_temperatureH": 20,
    "pe_temperatureW": 20, "return_interm_indices": [1, 2, 3], "backbone_freeze_keywords": None,
    "enc_layers": 6, "dec_layers": 6, "pre_norm": False, "dim_feedforward": 2048, "hidden_dim": 256,
    "dropout": 0.0, "nheads": 8, "num_queries": 900, "query_dim": 4, "num_patterns": 0,
    "num_feature_levels": 4, "enc_n_points": 4, "dec_n_points": 4, "two_stage_type": "standard",
    "two_stage_bbox_embed_share": False, "two_stage_class_embed_share": False, "transformer_activation": "relu",
    "dec_pred_bbox_embed_share": True, "dn_box_noise_scale": 1.0, "dn_label_noise_ratio": 0.5,
    "dn_label_coef": 1.0, "dn_bbox_coef": 1.0, "embed_init_tgt": True, "dn_labelbook_size": 2000,
    "max_text_len": 256, "text_encoder_type": "bert-base-uncased", "use_text_enhancer": True,
    "use_fusion_layer": True, "use_checkpoint": False, "use_transformer_ckpt": False,
    "use_text_cross_attention": True, "text_dropout": 0.0, "fusion_dropout": 0.0, "fusion_droppath": 0.1,
    "sub_sentence_present": True,
}

CONFIGS = {
    "SwinT_OGC": {**_COMMON, "backbone": "swin_T_224_1k"},
    "SwinB": {**_COMMON, "backbone": "swin_B_384_22k"},
}

SWIN_EMBED_DIM = {96: "SwinT_OGC", 128: "SwinB"}


def config_for(state_dict: dict, overrides: dict | None = None) -> dict:
    """The config matching a checkpoint's Swin width, with optional overrides (a sidecar JSON's)."""
    key = "backbone.0.patch_embed.proj.weight"
    if overrides and "base" in overrides:
        base = overrides["base"]
    elif key in state_dict:
        width = state_dict[key].shape[0]
        if width not in SWIN_EMBED_DIM:
            raise ValueError(f"unknown Grounding DINO backbone (Swin width {width}); expected SwinT (96) or SwinB (128)")
        base = SWIN_EMBED_DIM[width]
    else:
        raise ValueError("not a Grounding DINO checkpoint: no backbone.0.patch_embed weights")
    if base not in CONFIGS:
        raise ValueError(f"unknown Grounding DINO config '{base}', expected one of {sorted(CONFIGS)}")
    config = copy.deepcopy(CONFIGS[base])
    config.update({k: v for k, v in (overrides or {}).items() if k not in ("base", "swin")})
    config["swin"] = (overrides or {}).get("swin")
    return config
