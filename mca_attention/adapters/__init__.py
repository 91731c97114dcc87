"""The registry: every adapter class defined in a module of this package (one module per architecture), each
declaring the families it serves; ``model_adapter`` picks the one for a loaded model or refuses the model by name.

Adding a family = one adapter module and its tests (see the README's "Adding a model family"): this file finds
the module by itself, and every list of families users see is made here from the adapters' declarations.
"""
from __future__ import annotations

import importlib
import pkgutil

from .base import LatentLayout, ModelAdapter, Site, latent_channels

SHARED_MODULES = ("base", "hook")  # the interface and the hook body, not architectures


def _discovered() -> tuple[type[ModelAdapter], ...]:
    """The adapter classes (those that declare families) of this package's modules: an architecture before the
    families built on it (its subclasses), then in module-name order."""
    found = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda info: info.name):
        if info.name in SHARED_MODULES:
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        found += [value for value in vars(module).values() if isinstance(value, type)
                  and issubclass(value, ModelAdapter) and value.__module__ == module.__name__ and value.FAMILIES]
    return tuple(sorted(found, key=lambda adapter: (len(adapter.__mro__), adapter.__module__)))


ADAPTERS: tuple[type[ModelAdapter], ...] = _discovered()

# Families ComfyUI detects: config class -> the name users know. Those no adapter declares are refused by name.
DETECTED = {"SD3": "Stable Diffusion 3", "AuraFlow": "AuraFlow", "HunyuanDiT": "Hunyuan-DiT",
            "HunyuanImage21": "HunyuanImage 2.1", "PixArtAlpha": "PixArt", "PixArtSigma": "PixArt", "Flux2": "Flux.2",
            "FluxInpaint": "Flux.1 Fill", "ChromaRadiance": "Chroma Radiance", "QwenImage": "Qwen-Image",
            "Lumina2": "Lumina 2", "ZImage": "Z-Image", "HiDream": "HiDream"}
DECLARED = {config: name for adapter in ADAPTERS for config, name in adapter.FAMILIES.items()}
REFUSED = {config: name for config, name in DETECTED.items() if config not in DECLARED}
FAMILY_NAMES = {**REFUSED, **DECLARED}


def family_list(adapter: type[ModelAdapter]) -> str:
    return ", ".join(dict.fromkeys(adapter.FAMILIES.values()))


def _by_kind() -> dict[str, list[str]]:
    kinds: dict[str, list[str]] = {}
    for adapter in ADAPTERS:
        kinds.setdefault(adapter.KIND, []).extend(dict.fromkeys(adapter.FAMILIES.values()))
    return kinds


SUPPORTED_FAMILIES = "; ".join(f"{', '.join(names)} ({kind}s)" for kind, names in _by_kind().items())
REFUSED_FAMILIES = ", ".join(dict.fromkeys(REFUSED.values()))


def model_family(model) -> str:
    """A readable name of the model's family (ComfyUI's detected model config)."""
    name = type(model.model.model_config).__name__
    return FAMILY_NAMES.get(name, name)


def adapter_class(model) -> type[ModelAdapter] | None:
    """The adapter class whose architecture ``model``'s diffusion model has and that serves its family (Flux.2 runs
    Flux.1's classes: its config decides), else the first whose architecture matches (to refuse the family by name),
    or None."""
    diffusion_model = model.get_model_object("diffusion_model")
    config = type(model.model.model_config).__name__
    matching = [adapter for adapter in ADAPTERS if adapter.matches(diffusion_model)]
    return next((adapter for adapter in matching if adapter.serves(config)), matching[0] if matching else None)


def latent_layout(model) -> LatentLayout:
    """The latent ``model`` samples: its adapter's declaration, or 4-D with the latent format's channels."""
    adapter = adapter_class(model)
    return adapter.LATENT if adapter is not None else LatentLayout(latent_channels(model))


def min_latent_side(model) -> int:
    """The smallest latent side ``model`` takes: its adapter's rule, or 1 for a diffusion model none knows."""
    adapter = adapter_class(model)
    return 1 if adapter is None else adapter.min_side(model.get_model_object("diffusion_model"))


def model_source(model) -> dict:
    """What an inversion made with ``model`` records: its family, latent format, sampling type and noise settings."""
    import comfy.model_sampling

    sampling = model.get_model_object("model_sampling")
    kind = next((name for name in ("CONST", "V_PREDICTION", "EPS")
                 if isinstance(sampling, getattr(comfy.model_sampling, name))), type(sampling).__name__)
    return {"family": model_family(model), "latent_format": type(model.model.latent_format).__name__,
            "sampling": kind, "settings": sampling_settings(sampling)}


def sampling_settings(sampling) -> str:
    """A model's noise settings as ModelSampling nodes change them: shift, multiplier and the sigma range."""
    parts = [f"{name} {float(getattr(sampling, name)):g}" for name in ("shift", "multiplier") if hasattr(sampling, name)]
    return ", ".join([*parts, f"sigmas {float(sampling.sigma_min):.4g} to {float(sampling.sigma_max):.4g}"])


def model_adapter(model) -> ModelAdapter:
    """The adapter for ``model`` (a ComfyUI ModelPatcher), or a ValueError that names the family."""
    family = model_family(model)
    adapter = adapter_class(model)
    if adapter is None:
        diffusion_model = model.get_model_object("diffusion_model")
        raise ValueError(f"MCA-Ctrl cannot patch this {family} model: its diffusion model is a "
                         f"{type(diffusion_model).__name__}, which no MCA adapter knows (supported: "
                         f"{SUPPORTED_FAMILIES}).")
    if not adapter.serves(type(model.model.model_config).__name__):
        raise ValueError(f"MCA-Ctrl does not support {family} yet (supported: {SUPPORTED_FAMILIES}).")
    return adapter(model, family)


__all__ = ["ADAPTERS", "FAMILY_NAMES", "REFUSED", "REFUSED_FAMILIES", "SUPPORTED_FAMILIES", "LatentLayout",
           "ModelAdapter", "Site", "adapter_class", "latent_channels", "latent_layout", "min_latent_side",
           "model_adapter", "model_family", "model_source"]
