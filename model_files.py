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
    # Where ``default`` is published: the example workflows carry it in each loader's properties.models, which
    # ComfyUI's missing-models list offers to download from Hugging Face or Civitai only, and on frontend 1.3x
    # only as .safetensors/.sft (README, "Model files"). Ungated copies are preferred where one is known to be the
    # same file.
    url: str = ""

    def describe(self) -> str:
        """``default`` (or ``a`` / ``b``, source) for messages and the folder report."""
        others = f" (or {' / '.join(self.alternatives)})" if self.alternatives else ""
        return f"{self.default}{others}, {self.source}"


CHECKPOINT = ModelFiles("checkpoints", "v1-5-pruned-emaonly.safetensors", (), "any Stable Diffusion 1.5 checkpoint",
                        url="https://huggingface.co/Comfy-Org/stable-diffusion-v1-5-archive/resolve/main/"
                            "v1-5-pruned-emaonly.safetensors")
SDXL_CHECKPOINT = ModelFiles("checkpoints", "sd_xl_base_1.0.safetensors", (),
                             "any SDXL-family checkpoint: SDXL, SSD-1B, Segmind Vega, KOALA (the SDXL workflow)",
                             url="https://huggingface.co/stabilityai/stable-diffusion-xl-base-1.0/resolve/main/"
                                 "sd_xl_base_1.0.safetensors")
SAM = ModelFiles("sams", "sam_vit_h_4b8939.pth", ("sam_vit_l_0b3195.pth", "sam_vit_b_01ec64.pth"),
                 "Meta's segment-anything release",
                 # Meta's file as mirrored on Hugging Face (the original, dl.fbaipublicfiles.com/segment_anything/
                 # sam_vit_h_4b8939.pth, is on a host no frontend downloads from); a .pth, so frontend 1.4x
                 # downloads it and 1.3x does not. No .safetensors copy with segment-anything's key names is known.
                 url="https://huggingface.co/ybelkada/segment-anything/resolve/main/checkpoints/sam_vit_h_4b8939.pth")
GROUNDING_DINO = ModelFiles("grounding-dino", "groundingdino_swint_ogc.pth", ("groundingdino_swinb_cogcoor.pth",),
                            "IDEA-Research's GroundingDINO release",
                            url="https://huggingface.co/ShilongLiu/GroundingDINO/resolve/main/groundingdino_swint_ogc.pth")
FLUX_MODEL = ModelFiles("diffusion_models", "flux1-dev.safetensors",
                        ("flux1-schnell.safetensors", "flux1-krea-dev.safetensors", "chroma-unlocked-v50.safetensors"),
                        "Black Forest Labs' FLUX.1 release (dev, schnell, Krea) or Chroma (the Flux workflows; "
                        "Chroma takes CLIPLoader type chroma with t5xxl only)",
                        # gated: Hugging Face serves it only to a logged-in user who accepted the FLUX.1 [dev] licence
                        url="https://huggingface.co/black-forest-labs/FLUX.1-dev/resolve/main/flux1-dev.safetensors")
FLUX_CLIP_L = ModelFiles("text_encoders", "clip_l.safetensors", (), "the CLIP-L text encoder of the Flux release",
                         url="https://huggingface.co/comfyanonymous/flux_text_encoders/resolve/main/clip_l.safetensors")
FLUX_T5 = ModelFiles("text_encoders", "t5xxl_fp16.safetensors", ("t5xxl_fp8_e4m3fn.safetensors",),
                     "the T5-XXL text encoder of the Flux release",
                     url="https://huggingface.co/comfyanonymous/flux_text_encoders/resolve/main/t5xxl_fp16.safetensors")
FLUX_VAE = ModelFiles("vae", "ae.safetensors", (), "the FLUX.1 autoencoder",
                      # Comfy-Org's ungated copy of the file in the gated black-forest-labs/FLUX.1-dev repository
                      url="https://huggingface.co/Comfy-Org/Lumina_Image_2.0_Repackaged/resolve/main/split_files/vae/"
                          "ae.safetensors")
QWEN_IMAGE_MODEL = ModelFiles("diffusion_models", "qwen_image_fp8_e4m3fn.safetensors",
                              ("qwen_image_2512_fp8_e4m3fn.safetensors", "qwen_image_edit_2509_fp8_e4m3fn.safetensors",
                               "qwen_image_edit_2511_bf16.safetensors"),
                              "Comfy-Org's Qwen-Image repackaging (Qwen-Image, or an Edit 2509 / 2511 checkpoint)",
                              url="https://huggingface.co/Comfy-Org/Qwen-Image_ComfyUI/resolve/main/split_files/"
                                  "diffusion_models/qwen_image_fp8_e4m3fn.safetensors")
QWEN_IMAGE_TEXT = ModelFiles("text_encoders", "qwen_2.5_vl_7b_fp8_scaled.safetensors", (),
                             "the Qwen2.5-VL 7B text encoder of Comfy-Org's Qwen-Image repackaging (CLIPLoader type "
                             "qwen_image)",
                             url="https://huggingface.co/Comfy-Org/Qwen-Image_ComfyUI/resolve/main/split_files/"
                                 "text_encoders/qwen_2.5_vl_7b_fp8_scaled.safetensors")
QWEN_IMAGE_VAE = ModelFiles("vae", "qwen_image_vae.safetensors", (), "the Qwen-Image autoencoder",
                            url="https://huggingface.co/Comfy-Org/Qwen-Image_ComfyUI/resolve/main/split_files/vae/"
                                "qwen_image_vae.safetensors")
FLUX2_MODEL = ModelFiles("diffusion_models", "flux2_dev_fp8mixed.safetensors", ("flux2-dev.safetensors",),
                         "Comfy-Org's FLUX.2 dev repackaging (or Black Forest Labs' FLUX.2 dev release)",
                         url="https://huggingface.co/Comfy-Org/flux2-dev/resolve/main/split_files/diffusion_models/"
                             "flux2_dev_fp8mixed.safetensors")
FLUX2_TEXT = ModelFiles("text_encoders", "mistral_3_small_flux2_bf16.safetensors",
                        ("mistral_3_small_flux2_fp8.safetensors",),
                        "the Mistral 3 Small text encoder of Comfy-Org's FLUX.2 dev repackaging (CLIPLoader type flux2)",
                        url="https://huggingface.co/Comfy-Org/flux2-dev/resolve/main/split_files/text_encoders/"
                            "mistral_3_small_flux2_bf16.safetensors")
FLUX2_VAE = ModelFiles("vae", "flux2-vae.safetensors", (), "the FLUX.2 autoencoder",
                       url="https://huggingface.co/Comfy-Org/flux2-dev/resolve/main/split_files/vae/flux2-vae.safetensors")
Z_IMAGE_MODEL = ModelFiles("diffusion_models", "z_image_turbo_bf16.safetensors", ("z_image_bf16.safetensors",),
                           "Comfy-Org's Z-Image Turbo repackaging (or Z-Image base); its VAE is FLUX.1's ae.safetensors",
                           url="https://huggingface.co/Comfy-Org/z_image_turbo/resolve/main/split_files/"
                               "diffusion_models/z_image_turbo_bf16.safetensors")
Z_IMAGE_TEXT = ModelFiles("text_encoders", "qwen_3_4b.safetensors", ("qwen_3_4b_fp8_mixed.safetensors",),
                          "the Qwen3-4B text encoder of Comfy-Org's Z-Image repackaging (CLIPLoader type lumina2)",
                          url="https://huggingface.co/Comfy-Org/z_image_turbo/resolve/main/split_files/text_encoders/"
                              "qwen_3_4b.safetensors")
EXPECTED_MODELS = (CHECKPOINT, SDXL_CHECKPOINT, FLUX_MODEL, FLUX_CLIP_L, FLUX_T5, FLUX_VAE, QWEN_IMAGE_MODEL,
                   QWEN_IMAGE_TEXT, QWEN_IMAGE_VAE, FLUX2_MODEL, FLUX2_TEXT, FLUX2_VAE, Z_IMAGE_MODEL, Z_IMAGE_TEXT, SAM,
                   GROUNDING_DINO)
