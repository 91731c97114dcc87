"""One adapter per architecture; ``model_adapter`` picks the one for a loaded model or refuses it by name.

Adding a family = one adapter module (sites, image-token span, hook, presets) and its tests, plus one
entry in ``ADAPTERS``.
"""
from __future__ import annotations

from .base import ModelAdapter, Site
from .mmdit import SUPPORTED as MMDIT_SUPPORTED
from .mmdit import MMDiTAdapter
from .unet import UNetAdapter

ADAPTERS = (UNetAdapter, MMDiTAdapter)

FAMILY_NAMES = {
    "SD15": "Stable Diffusion 1.x", "SD20": "Stable Diffusion 2.x", "SD21UnclipL": "Stable Diffusion 2.1 unCLIP",
    "SD21UnclipH": "Stable Diffusion 2.1 unCLIP", "SDXL": "SDXL", "SDXLRefiner": "SDXL Refiner", "SSD1B": "SSD-1B",
    "Segmind_Vega": "Segmind Vega", "KOALA_700M": "KOALA-700M", "KOALA_1B": "KOALA-1B", "SD3": "Stable Diffusion 3",
    "AuraFlow": "AuraFlow", "HunyuanDiT": "Hunyuan-DiT", "PixArtAlpha": "PixArt", "PixArtSigma": "PixArt",
    "Flux2": "Flux.2", "FluxInpaint": "Flux.1 Fill", "ChromaRadiance": "Chroma Radiance", "QwenImage": "Qwen-Image",
    "Lumina2": "Lumina 2 / Z-Image", "ZImage": "Z-Image", "HiDream": "HiDream", **MMDIT_SUPPORTED,
}
SUPPORTED_FAMILIES = ("SD1.x, SD2.x, SDXL, SSD-1B, Segmind Vega, KOALA (UNets); "
                      + ", ".join(dict.fromkeys(MMDIT_SUPPORTED.values())) + " (MMDiTs)")


def model_family(model) -> str:
    """A readable name of the model's family (ComfyUI's detected model config)."""
    name = type(model.model.model_config).__name__
    return FAMILY_NAMES.get(name, name)


def min_latent_side(model) -> int:
    """The smallest latent side ``model`` takes: its adapter's rule, or 1 for a diffusion model none knows."""
    diffusion_model = model.get_model_object("diffusion_model")
    return next((adapter.min_side(diffusion_model) for adapter in ADAPTERS if adapter.matches(diffusion_model)), 1)


def latent_channels(model) -> int:
    """The channels of the model's latent space (ComfyUI's latent format: 4 on SD/SDXL, 16 on Flux)."""
    return int(getattr(model.model.latent_format, "latent_channels", 4))


def model_source(model) -> dict:
    """What an inversion made with ``model`` records: its family, latent format and sampling type."""
    import comfy.model_sampling

    sampling = model.get_model_object("model_sampling")
    kind = next((name for name in ("CONST", "V_PREDICTION", "EPS")
                 if isinstance(sampling, getattr(comfy.model_sampling, name))), type(sampling).__name__)
    return {"family": model_family(model), "latent_format": type(model.model.latent_format).__name__,
            "sampling": kind}


def model_adapter(model) -> ModelAdapter:
    """The adapter for ``model`` (a ComfyUI ModelPatcher), or a ValueError that names the family."""
    diffusion_model = model.get_model_object("diffusion_model")
    family = model_family(model)
    config_name = type(model.model.model_config).__name__
    if MMDiTAdapter.matches(diffusion_model):
        if config_name not in MMDIT_SUPPORTED:
            raise ValueError(f"MCA-Ctrl does not support {family} yet (supported: {SUPPORTED_FAMILIES}).")
        return MMDiTAdapter(model, family)
    if UNetAdapter.matches(diffusion_model):
        return UNetAdapter(model, family)
    raise ValueError(f"MCA-Ctrl cannot patch this {family} model: its diffusion model is a "
                     f"{type(diffusion_model).__name__}, which no MCA adapter knows (supported: {SUPPORTED_FAMILIES}).")


__all__ = ["ADAPTERS", "ModelAdapter", "Site", "latent_channels", "min_latent_side", "model_adapter", "model_family",
           "model_source", "SUPPORTED_FAMILIES"]
