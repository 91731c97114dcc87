"""SAM (segment-anything) built from its state dict alone: vit_b / vit_l / vit_h or any size."""
from __future__ import annotations

import re

import numpy as np
import torch


def _count(state_dict: dict, pattern: str) -> int:
    found = {int(m.group(1)) for key in state_dict if (m := re.match(pattern, key))}
    return max(found) + 1 if found else 0


def sam_architecture(state_dict: dict) -> dict:
    """Every constructor argument of SAM, read off the tensor shapes (no name table, no config file)."""
    try:
        patch = state_dict["image_encoder.patch_embed.proj.weight"]
        embed_dim, patch_size = patch.shape[0], patch.shape[-1]
        grid = state_dict["image_encoder.pos_embed"].shape[1]
        depth = _count(state_dict, r"image_encoder\.blocks\.(\d+)\.")
        head_dim = state_dict["image_encoder.blocks.0.attn.rel_pos_h"].shape[1]
        rel_sizes = [state_dict[f"image_encoder.blocks.{i}.attn.rel_pos_h"].shape[0] for i in range(depth)]
        window = min(rel_sizes)
        out_chans = state_dict["image_encoder.neck.0.weight"].shape[0]
        decoder_mlp = state_dict["mask_decoder.transformer.layers.0.mlp.lin1.weight"].shape[0]
    except KeyError as error:
        raise ValueError(f"not a segment-anything (SAM) checkpoint: missing {error}") from error
    return {
        "embed_dim": embed_dim, "patch_size": patch_size, "img_size": grid * patch_size, "depth": depth,
        "num_heads": embed_dim // head_dim, "window_size": (window + 1) // 2,
        "global_attn_indexes": [i for i, size in enumerate(rel_sizes) if size == 2 * grid - 1 and size != window],
        "mlp_ratio": state_dict["image_encoder.blocks.0.mlp.lin1.weight"].shape[0] / embed_dim,
        "out_chans": out_chans,
        "mask_in_chans": state_dict["prompt_encoder.mask_downscaling.3.weight"].shape[0],
        "decoder_depth": _count(state_dict, r"mask_decoder\.transformer\.layers\.(\d+)\."),
        "decoder_mlp_dim": decoder_mlp,
        "iou_head_depth": _count(state_dict, r"mask_decoder\.iou_prediction_head\.layers\.(\d+)\."),
        "iou_head_hidden_dim": state_dict["mask_decoder.iou_prediction_head.layers.0.weight"].shape[0],
    }


def build_sam(state_dict: dict, decoder_heads: int = 8):
    """A ``segment_anything.Sam`` with these weights (strict: a mismatch is a clear error)."""
    from functools import partial

    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    arch = sam_architecture(state_dict)
    grid = arch["img_size"] // arch["patch_size"]
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=arch["depth"], embed_dim=arch["embed_dim"], img_size=arch["img_size"], mlp_ratio=arch["mlp_ratio"],
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=arch["num_heads"],
            patch_size=arch["patch_size"], qkv_bias=True, use_rel_pos=True,
            global_attn_indexes=arch["global_attn_indexes"], window_size=arch["window_size"],
            out_chans=arch["out_chans"]),
        prompt_encoder=PromptEncoder(embed_dim=arch["out_chans"], image_embedding_size=(grid, grid),
                                     input_image_size=(arch["img_size"], arch["img_size"]),
                                     mask_in_chans=arch["mask_in_chans"]),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=arch["decoder_depth"], embedding_dim=arch["out_chans"],
                                          mlp_dim=arch["decoder_mlp_dim"], num_heads=decoder_heads),
            transformer_dim=arch["out_chans"], iou_head_depth=arch["iou_head_depth"],
            iou_head_hidden_dim=arch["iou_head_hidden_dim"]),
        pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375])
    try:
        sam.load_state_dict(state_dict, strict=True)
    except RuntimeError as error:
        raise ValueError(f"SAM weights do not fit the architecture read from them: {str(error)[:300]}") from error
    return sam.eval()


@torch.no_grad()
def segment_boxes(sam, image_rgb: np.ndarray, boxes_xyxy: torch.Tensor) -> torch.Tensor:
    """``[n, H, W]`` bool masks, one per pixel box (``multimask_output=False``, as the official SLM)."""
    from segment_anything import SamPredictor

    height, width = image_rgb.shape[:2]
    if boxes_xyxy.shape[0] == 0:
        return torch.zeros(0, height, width, dtype=torch.bool)
    predictor = SamPredictor(sam)
    predictor.set_image(image_rgb)
    masks = [torch.from_numpy(predictor.predict(box=box.numpy(), multimask_output=False)[0][0])
             for box in boxes_xyxy.float()]
    return torch.stack(masks)
