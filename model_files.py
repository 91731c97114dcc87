"""The model files the pack's workflows expect, by ComfyUI model folder: the one list every message uses.

Plain data (no ComfyUI import), so that `make run`'s folder report and the workflow builder read it too.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelFiles:
    folder: str  # ComfyUI model folder name (models/<folder>)
    default: str  # the file name the example workflows use
    alternatives: tuple[str, ...]
    source: str

    def describe(self) -> str:
        """``default`` (or ``a`` / ``b``, source) for messages and the folder report."""
        others = f" (or {' / '.join(self.alternatives)})" if self.alternatives else ""
        return f"{self.default}{others}, {self.source}"


CHECKPOINT = ModelFiles("checkpoints", "v1-5-pruned-emaonly.safetensors", (), "any Stable Diffusion 1.5 checkpoint")
SDXL_CHECKPOINT = ModelFiles("checkpoints", "sd_xl_base_1.0.safetensors", (),
                             "any SDXL-family checkpoint: SDXL, SSD-1B, Segmind Vega, KOALA (the SDXL workflow)")
SAM = ModelFiles("sams", "sam_vit_h_4b8939.pth", ("sam_vit_l_0b3195.pth", "sam_vit_b_01ec64.pth"),
                 "Meta's segment-anything release")
GROUNDING_DINO = ModelFiles("grounding-dino", "groundingdino_swint_ogc.pth", ("groundingdino_swinb_cogcoor.pth",),
                            "IDEA-Research's GroundingDINO release")
FLUX_MODEL = ModelFiles("diffusion_models", "flux1-dev.safetensors",
                        ("flux1-schnell.safetensors", "flux1-krea-dev.safetensors", "chroma-unlocked-v50.safetensors"),
                        "Black Forest Labs' FLUX.1 release (dev, schnell, Krea) or Chroma (the Flux workflows; "
                        "Chroma takes CLIPLoader type chroma with t5xxl only)")
FLUX_CLIP_L = ModelFiles("text_encoders", "clip_l.safetensors", (), "the CLIP-L text encoder of the Flux release")
FLUX_T5 = ModelFiles("text_encoders", "t5xxl_fp16.safetensors", ("t5xxl_fp8_e4m3fn.safetensors",),
                     "the T5-XXL text encoder of the Flux release")
FLUX_VAE = ModelFiles("vae", "ae.safetensors", (), "the FLUX.1 autoencoder")
EXPECTED_MODELS = (CHECKPOINT, SDXL_CHECKPOINT, FLUX_MODEL, FLUX_CLIP_L, FLUX_T5, FLUX_VAE, SAM, GROUNDING_DINO)
