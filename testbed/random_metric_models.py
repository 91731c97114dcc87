"""Random-weight metric models for the evaluation harness's tests (no real weights exist here)."""
from __future__ import annotations

from pathlib import Path

from comfy_server import COMFY_DIR, REPO

EXAMPLES = REPO / "example_workflows" / "input"


def write_metric_models(root: Path) -> dict[str, Path]:
    """Random-weight DINO ViT-S/16-shaped (shrunk) and CLIP models saved in Hugging Face layout, offline."""
    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer, ViTConfig, ViTModel

    torch.manual_seed(0)
    ViTModel(ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                       image_size=224, patch_size=16), add_pooling_layer=False).save_pretrained(root / "dino")
    small = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128}
    CLIPModel(CLIPConfig(text_config={**small, "vocab_size": 49408, "max_position_embeddings": 77},
                         vision_config={**small, "image_size": 224, "patch_size": 32},
                         projection_dim=32)).save_pretrained(root / "clip")
    # the real CLIP BPE vocabulary, from the copy ComfyUI ships for SD1.5
    CLIPTokenizer.from_pretrained(str(COMFY_DIR / "comfy" / "sd1_tokenizer")).save_pretrained(root / "clip")
    return {"dino": root / "dino", "clip": root / "clip"}
