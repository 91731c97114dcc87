"""Random-weight SD1.5-architecture models and a full-size random checkpoint (no real weights exist here).

ComfyUI leaves weights uninitialised (NaN or garbage), so every builder here initialises from a seed.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

import torch

import comfy_host

CACHE_DIR = Path(os.environ.get("MCA_TEST_CACHE", Path.home() / ".cache" / "mca-ctrl-tests"))
RANDOM_CHECKPOINT = "sd15_random_v2_fp16.safetensors"  # bump when the recipe changes
TINY_CONTEXT_DIM = 32


def init_weights(module: torch.nn.Module, seed: int, std: float = 0.02) -> None:
    """Norm scales to 1, other 1-D parameters (biases) to 0, the rest N(0, std), seeded."""
    norm_types = (torch.nn.GroupNorm, torch.nn.LayerNorm)
    norm_scales = {id(m.weight) for m in module.modules() if isinstance(m, norm_types) and m.weight is not None}
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            if id(param) in norm_scales:
                param.fill_(1.0)
            elif param.dim() <= 1:
                param.zero_()
            else:
                param.copy_(torch.randn(param.shape, generator=generator, dtype=torch.float32).to(param.dtype) * std)


def sd15_unet_config(**overrides) -> dict:
    """ComfyUI's SD1.5 UNet config (as ``model_detection`` builds it), with overrides."""
    config = {
        "in_channels": 4, "out_channels": 4, "model_channels": 320, "num_res_blocks": [2] * 4,
        "channel_mult": [1, 2, 4, 4], "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "transformer_depth_middle": 1,
        "transformer_depth_output": [1] * 9 + [0] * 3, "num_heads": 8, "context_dim": 768,
        "use_spatial_transformer": True, "use_linear_in_transformer": False, "legacy": False,
        "image_size": 32, "adm_in_channels": None, "use_checkpoint": False, "use_temporal_attention": False,
        "use_temporal_resblock": False, "dtype": torch.float32,
    }
    config.update(overrides)
    return config


def sd15_model(seed: int = 0, dtype: torch.dtype = torch.float32, **overrides):
    """A ModelPatcher around a random SD1.5-architecture UNet (full size unless overridden)."""
    comfy_host.boot_comfy()
    import comfy.model_base
    import comfy.model_patcher
    import comfy.supported_models

    config = comfy.supported_models.SD15(sd15_unet_config(dtype=dtype, **overrides))
    config.set_inference_dtype(dtype, None)
    model = comfy.model_base.BaseModel(config, device=torch.device("cpu"))
    init_weights(model.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


def tiny_sd15_model(seed: int = 0, dtype: torch.dtype = torch.float32):
    """All 16 SD1.5 self-attention sites, 32 base channels, 32-d text context: fast on a CPU."""
    return sd15_model(seed, dtype, model_channels=32, context_dim=TINY_CONTEXT_DIM)


def tiny_prompt(seed: int, tokens: int = 77, dim: int = TINY_CONTEXT_DIM) -> list:
    """A CONDITIONING with a random text embedding of the tiny model's context size."""
    generator = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, tokens, dim, generator=generator), {}]]


def square_mask(size: int, start: int, stop: int) -> torch.Tensor:
    """A ComfyUI MASK ``[1, size, size]`` with 1 on the square ``[start:stop, start:stop]``."""
    mask = torch.zeros(1, size, size)
    mask[:, start:stop, start:stop] = 1.0
    return mask


def random_checkpoint() -> Path:
    """A full-size random SD1.5 checkpoint (UNet + CLIP-L + VAE, fp16), built once per machine."""
    path = CACHE_DIR / RANDOM_CHECKPOINT
    if path.exists():
        return path
    comfy_host.boot_comfy()
    import comfy.ldm.models.autoencoder
    import comfy.sd

    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    unet = sd15_model(seed=1, dtype=torch.float16)
    clip = comfy.sd.CLIP(target=unet.model.model_config.clip_target(), model_options={"dtype": torch.float16})
    init_weights(clip.cond_stage_model, seed=2)
    vae_config = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
                  "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}
    vae_model = comfy.ldm.models.autoencoder.AutoencoderKL(ddconfig=vae_config, embed_dim=4)
    init_weights(vae_model, seed=3)
    vae = comfy.sd.VAE(sd=vae_model.state_dict())
    partial = path.with_suffix(f".{os.getpid()}.partial")
    comfy.sd.save_checkpoint(str(partial), unet, clip, vae)
    os.replace(partial, path)
    return path


TINY_POOLED_DIM = 32
SDXL_ADM_EXTRA = 6 * 256  # SDXL's ADM: pooled text + six 256-d size/crop embeddings (comfy.model_base.SDXL)
# Depths as ComfyUI's model_detection holds them for each family (channels shrunk by tiny_family_model).
FAMILY_LAYOUTS = {
    "SD15": dict(num_res_blocks=[2] * 4, channel_mult=[1, 2, 4, 4], transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0],
                 transformer_depth_middle=1, transformer_depth_output=[1] * 9 + [0] * 3, use_linear_in_transformer=False),
    "SD20": dict(num_res_blocks=[2] * 4, channel_mult=[1, 2, 4, 4], transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0],
                 transformer_depth_middle=1, transformer_depth_output=[1] * 9 + [0] * 3),
    "SDXL": dict(num_res_blocks=[2, 2, 2], channel_mult=[1, 2, 4], transformer_depth=[0, 0, 2, 2, 10, 10],
                 transformer_depth_middle=10, transformer_depth_output=[0, 0, 0, 2, 2, 2, 10, 10, 10]),
    "SSD1B": dict(num_res_blocks=[2, 2, 2], channel_mult=[1, 2, 4], transformer_depth=[0, 0, 2, 2, 4, 4],
                  transformer_depth_middle=-1, transformer_depth_output=[0, 0, 0, 1, 1, 2, 10, 4, 4]),
    "Segmind_Vega": dict(num_res_blocks=[2, 2, 2], channel_mult=[1, 2, 4], transformer_depth=[0, 0, 1, 1, 2, 2],
                         transformer_depth_middle=-1, transformer_depth_output=[0, 0, 0, 1, 1, 1, 2, 2, 2]),
    "KOALA_700M": dict(num_res_blocks=[1, 1, 1], channel_mult=[1, 2, 4], transformer_depth=[0, 2, 5],
                       transformer_depth_middle=-2, transformer_depth_output=[0, 0, 2, 2, 5, 5]),
}
SDXL_FAMILY = ("SDXL", "SSD1B", "Segmind_Vega", "KOALA_700M")


def tiny_family_model(family: str, seed: int = 0, v_prediction: bool = False, dtype: torch.dtype = torch.float32):
    """A random UNet of a family's real depths from ComfyUI's own ``supported_models`` class, 32 base channels.

    ``dtype`` float64 makes a batch's rows independent of the batch size to float32 precision (ComfyUI casts
    each model output to float32), where float32 CPU kernels round differently per batch size."""
    comfy_host.boot_comfy()
    import comfy.model_base
    import comfy.model_patcher
    import comfy.supported_models

    config = dict(in_channels=4, out_channels=4, model_channels=32, use_spatial_transformer=True, legacy=False,
                  image_size=32, use_checkpoint=False, use_temporal_attention=False, use_temporal_resblock=False,
                  dtype=dtype, context_dim=TINY_CONTEXT_DIM, use_linear_in_transformer=True,
                  num_heads=-1, num_head_channels=8, adm_in_channels=None)
    config.update(FAMILY_LAYOUTS[family])
    if family in SDXL_FAMILY:
        config.update(adm_in_channels=TINY_POOLED_DIM + SDXL_ADM_EXTRA, num_classes="sequential")
    model_config = getattr(comfy.supported_models, family)(config)
    model_config.unet_config.update(num_heads=-1, num_head_channels=8)  # the class forces 64-d heads: shrink them
    model_config.set_inference_dtype(dtype, None)
    model_type = comfy.model_base.ModelType.V_PREDICTION if v_prediction else comfy.model_base.ModelType.EPS
    model_class = comfy.model_base.SDXL if family in SDXL_FAMILY else comfy.model_base.BaseModel
    model = model_class(model_config, model_type=model_type, device=torch.device("cpu"))
    init_weights(model.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


def tiny_sdxl_prompt(seed: int, tokens: int = 77) -> list:
    """A CONDITIONING as SDXL's text encode makes it: text tokens plus a pooled output."""
    generator = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, tokens, TINY_CONTEXT_DIM, generator=generator),
             {"pooled_output": torch.randn(1, TINY_POOLED_DIM, generator=generator)}]]


def tiny_dit_model(seed: int = 0):
    """A tiny random SD3 (MMDiT) model: a diffusion model without UNet self-attention sites."""
    comfy_host.boot_comfy()
    import comfy.model_base
    import comfy.model_patcher
    import comfy.supported_models

    config = {"in_channels": 16, "patch_size": 2, "out_channels": 16, "depth": 1, "num_patches": 64,
              "pos_embed_max_size": 8, "adm_in_channels": 32, "pos_embed_scaling_factor": None, "dtype": torch.float32,
              "context_embedder_config": {"target": "torch.nn.Linear", "params": {"in_features": 32, "out_features": 64}}}
    model_config = comfy.supported_models.SD3(config)
    model_config.set_inference_dtype(torch.float32, None)
    model = comfy.model_base.SD3(model_config, device=torch.device("cpu"))
    init_weights(model.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


RANDOM_VEGA_CHECKPOINT = "vega_random_v1_fp16.safetensors"  # bump when the recipe changes
SD_VAE_CONFIG = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
                 "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}


def vega_unet_config(dtype: torch.dtype = torch.float32) -> dict:
    """Segmind Vega's full UNet config, as ComfyUI's ``model_detection`` holds it (the smallest SDXL family)."""
    config = dict(FAMILY_LAYOUTS["Segmind_Vega"], in_channels=4, out_channels=4, model_channels=320,
                  use_spatial_transformer=True, legacy=False, image_size=32, use_checkpoint=False,
                  use_temporal_attention=False, use_temporal_resblock=False, use_linear_in_transformer=True,
                  num_classes="sequential", adm_in_channels=2816, context_dim=2048, num_head_channels=64, dtype=dtype)
    return config


def vega_model(seed: int = 0, dtype: torch.dtype = torch.float32):
    """A ModelPatcher around a full-size random Segmind Vega UNet (ComfyUI's ``Segmind_Vega`` class, eps)."""
    comfy_host.boot_comfy()
    import comfy.model_patcher
    import comfy.supported_models

    model_config = comfy.supported_models.Segmind_Vega(vega_unet_config(dtype))
    model_config.set_inference_dtype(dtype, None)
    model = model_config.get_model({}, device=torch.device("cpu"))
    init_weights(model.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


def random_text_encoders(model_patcher, seed: int, dtype: torch.dtype = torch.float16):
    """The text encoder(s) the model's family uses (its ``clip_target``), with random weights."""
    import comfy.sd

    clip = comfy.sd.CLIP(target=model_patcher.model.model_config.clip_target(), model_options={"dtype": dtype})
    init_weights(clip.cond_stage_model, seed=seed)
    return clip


def random_sd_vae(seed: int):
    """A random VAE of the SD1.x / SDXL architecture (both families share it; the scale is the model's)."""
    import comfy.ldm.models.autoencoder
    import comfy.sd

    vae_model = comfy.ldm.models.autoencoder.AutoencoderKL(ddconfig=SD_VAE_CONFIG, embed_dim=4)
    init_weights(vae_model, seed=seed)
    return comfy.sd.VAE(sd=vae_model.state_dict())


def cached_file(name: str, write: Callable[[Path], None]) -> Path:
    """``CACHE_DIR / name``, written once per machine by ``write`` (to a partial file, then renamed)."""
    path = CACHE_DIR / name
    if not path.exists():
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.partial")
        write(partial)
        os.replace(partial, path)
    return path


def _write_vega_checkpoint(path: Path) -> None:
    comfy_host.boot_comfy()
    import comfy.sd

    unet = vega_model(seed=11, dtype=torch.float16)
    comfy.sd.save_checkpoint(str(path), unet, random_text_encoders(unet, seed=12), random_sd_vae(seed=13))


def random_vega_checkpoint() -> Path:
    """A full-architecture random Segmind Vega checkpoint (UNet + CLIP-L + CLIP-G + VAE, fp16, 3.5 GB, about a
    minute to build), built once per machine; ``CheckpointLoaderSimple`` detects it as ``Segmind_Vega``, an
    SDXL-family model (SDXL's text encoders, latent format and ADM input)."""
    return cached_file(RANDOM_VEGA_CHECKPOINT, _write_vega_checkpoint)


TINY_FLUX_WIDTH = 64  # hidden size: 4 heads of 16 (RoPE axes 4 + 6 + 6), as Flux's 24 heads of 128 (16 + 56 + 56)
TINY_FLUX_CONFIG = dict(in_channels=16, out_channels=16, context_in_dim=TINY_CONTEXT_DIM, hidden_size=TINY_FLUX_WIDTH,
                        mlp_ratio=4.0, num_heads=4, depth=2, depth_single_blocks=3, axes_dim=[4, 6, 6], theta=10000,
                        patch_size=2, qkv_bias=True, dtype=torch.float32)


TINY_DIT_STD = 0.1  # at width 64, N(0, 0.02) weights leave the gated attention branch ~1e-4 of the residual


def init_dit_weights(module: torch.nn.Module, seed: int, std: float = TINY_DIT_STD) -> None:
    """``init_weights``, then the RMSNorm scales of the q/k norms (1-D ``scale``) to 1: at 0 every score is 0."""
    init_weights(module, seed, std)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if name.endswith(".scale"):
                param.fill_(1.0)
        for norm in module.modules():  # newer ComfyUI (0.29): the q/k norms are torch RMSNorms with a 1-D weight
            if isinstance(norm, torch.nn.RMSNorm) and norm.weight is not None:
                norm.weight.fill_(1.0)


def with_newer_fields(params_class, config: dict) -> dict:
    """``config`` plus the fields newer ComfyUI (0.29) requires of Flux / Chroma params and fills in on detection
    (``txt_ids_dims`` [], Chroma's ``vec_in_dim`` None); ComfyUI 0.3.75's classes have neither."""

    names = {f.name for f in dataclasses.fields(params_class)}
    newer = {name: value for name, value in (("txt_ids_dims", []), ("vec_in_dim", None)) if name in names}
    return {**newer, **config}


def _patched(model):
    import comfy.model_patcher

    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


def tiny_flux_model(seed: int = 0, schnell: bool = False, **overrides):
    """A random Flux.1 (dev, or schnell: no guidance embedding) from ComfyUI's own classes, shrunk in width
    and depth: double then single blocks, RoPE over (index, h, w), CLIP-pooled vector, 16-channel latent."""
    comfy_host.boot_comfy()
    import comfy.ldm.flux.model
    import comfy.supported_models

    config = with_newer_fields(comfy.ldm.flux.model.FluxParams, {
        **TINY_FLUX_CONFIG, "image_model": "flux", "vec_in_dim": TINY_POOLED_DIM, "guidance_embed": not schnell,
        **overrides})
    model_config = (comfy.supported_models.FluxSchnell if schnell else comfy.supported_models.Flux)(config)
    model_config.set_inference_dtype(config["dtype"], None)
    model = model_config.get_model({}, device=torch.device("cpu"))
    init_dit_weights(model.diffusion_model, seed)
    return _patched(model)


def tiny_chroma_model(seed: int = 0):
    """A random Chroma (Flux's blocks without modulation layers, a distilled-guidance approximator, T5 only)."""
    comfy_host.boot_comfy()
    import comfy.ldm.chroma.model
    import comfy.supported_models

    config = with_newer_fields(comfy.ldm.chroma.model.ChromaParams, dict(
        TINY_FLUX_CONFIG, image_model="chroma", in_channels=64, out_channels=64, in_dim=64, out_dim=TINY_FLUX_WIDTH,
        hidden_dim=64, n_layers=2))
    model_config = comfy.supported_models.Chroma(config)
    model_config.set_inference_dtype(torch.float32, None)
    model = model_config.get_model({}, device=torch.device("cpu"))
    init_dit_weights(model.diffusion_model, seed)
    return _patched(model)


def tiny_qwen_image_model(seed: int = 0, blocks: int = 3, width: int = 64, context: int = TINY_CONTEXT_DIM,
                          dtype: torch.dtype = torch.float32):
    """A random Qwen-Image from ComfyUI's own classes, shrunk in width and depth (by default 4 heads of 16, RoPE axes
    4 + 6 + 6 as the real 16 + 56 + 56 of 128; from ``width`` 768 on, heads of 128 with the real axes); ``blocks``
    joint blocks; 2 x 2 patches of the 16-channel 5-D latent."""
    comfy_host.boot_comfy()
    import comfy.supported_models

    head, axes = (16, (4, 6, 6)) if width < 768 else (128, (16, 56, 56))
    config = dict(image_model="qwen_image", patch_size=2, in_channels=64, out_channels=16, num_layers=blocks,
                  attention_head_dim=head, num_attention_heads=width // head, joint_attention_dim=context,
                  axes_dims_rope=axes)
    model_config = comfy.supported_models.QwenImage(config)
    model_config.set_inference_dtype(dtype, None)
    model = model_config.get_model({}, device=torch.device("cpu"))
    init_dit_weights(model.diffusion_model, seed, std=TINY_DIT_STD if width < 768 else 0.02)
    return _patched(model)


def has_klein() -> bool:
    """Whether this ComfyUI has Flux.2 klein (0.9.1 and newer): its Qwen3 text encoder, and Flux.2's heads read from
    the width on detection."""
    comfy_host.boot_comfy()
    import comfy.text_encoders.flux

    return hasattr(comfy.text_encoders.flux, "KleinTokenizer")


def tiny_flux2_model(seed: int = 0, double: int = 2, single: int = 3, guidance: bool = True,
                     width: int = TINY_FLUX_WIDTH, context: int = TINY_CONTEXT_DIM, dtype: torch.dtype = torch.float32):
    """A random Flux.2 from ComfyUI's own classes, shrunk in width and depth: by default 4 heads of 16 with the four
    RoPE axes 4 x 4 (the real 32 x 4 of 128; from ``width`` 768 on, heads of 128 with the real axes), global
    modulation, no pooled vector, 128-channel latent with patch 1; ``guidance`` the dev model's guidance embedding
    (off: a klein-like model that takes real CFG)."""
    comfy_host.boot_comfy()
    import comfy.ldm.flux.model
    import comfy.supported_models

    head = 16 if width < 768 else 128
    config = dict(image_model="flux2", in_channels=128, out_channels=128, vec_in_dim=None, context_in_dim=context,
                  hidden_size=width, mlp_ratio=3.0, num_heads=width // head, depth=double, depth_single_blocks=single,
                  axes_dim=[head // 4] * 4, theta=2000, patch_size=1, qkv_bias=False, guidance_embed=guidance,
                  global_modulation=True, mlp_silu_act=True, ops_bias=False, default_ref_method="index",
                  ref_index_scale=10.0, dtype=dtype)
    if "txt_ids_dims" in {f.name for f in dataclasses.fields(comfy.ldm.flux.model.FluxParams)}:
        config["txt_ids_dims"] = [3]  # newer ComfyUI: the text's RoPE axis, set on detection
    model_config = comfy.supported_models.Flux2(config)
    model_config.set_inference_dtype(dtype, None)
    model = model_config.get_model({}, device=torch.device("cpu"))
    init_dit_weights(model.diffusion_model, seed, std=TINY_DIT_STD if width < 768 else 0.02)
    return _patched(model)


def tiny_flux2_prompt(seed: int, tokens: int = 12, guidance: float | None = 4.0) -> list:
    """A CONDITIONING as Flux.2's text encode + FluxGuidance make it: the encoder's tokens (no padding) with its
    all-ones attention mask, no pooled."""
    generator = torch.Generator().manual_seed(seed)
    options = {"pooled_output": None, "attention_mask": encoder_mask(tokens)}
    if guidance is not None:
        options["guidance"] = guidance
    return [[torch.randn(1, tokens, TINY_CONTEXT_DIM, generator=generator), options]]


def encoder_mask(tokens: int) -> torch.Tensor:
    """The ``attention_mask`` CLIP Text Encode puts on a prompt from an encoder that returns one (Qwen2.5-VL, Mistral,
    Qwen3): all ones ``[1, tokens]`` when the tokenizer padded nothing."""
    return torch.ones(1, tokens, dtype=torch.long)


TINY_Z_IMAGE_WIDTH = 256  # the least width Z-Image's modulation takes (its time embedding is 256 wide)


def tiny_z_image_model(seed: int = 0, layers: int = 3, width: int = TINY_Z_IMAGE_WIDTH, context: int = TINY_CONTEXT_DIM,
                       dtype: torch.dtype = torch.float32):
    """A random Z-Image from ComfyUI's own classes (Lumina 2's NextDiT with Z-Image's settings), shrunk: ``width`` 256
    in 4 heads of 64 with RoPE axes 16 + 24 + 24 (the real 30 heads of 128 with 32 + 48 + 48), ``layers`` main layers
    after 2 context- and 2 noise-refiner layers, pad tokens to a multiple of 32 (initialised: ComfyUI leaves them
    empty), 16-channel latent in 2 x 2 patches."""
    comfy_host.boot_comfy()
    import comfy.supported_models

    head = width // 4 if width < 768 else 128  # from 768 wide on, heads of 128 with the real axes 32 + 48 + 48
    config = dict(image_model="lumina2", patch_size=2, in_channels=16, dim=width, cap_feat_dim=context,
                  n_layers=layers, qk_norm=True, n_heads=width // head, n_kv_heads=width // head,
                  axes_dims=[head // 4, 3 * head // 8, 3 * head // 8],
                  axes_lens=[1536, 512, 512], rope_theta=256.0, ffn_dim_multiplier=8.0 / 3.0, z_image_modulation=True,
                  time_scale=1000.0, pad_tokens_multiple=32)
    model_config = comfy.supported_models.ZImage(config)
    model_config.set_inference_dtype(dtype, None)
    model = model_config.get_model({}, device=torch.device("cpu"))
    init_dit_weights(model.diffusion_model, seed, std=TINY_DIT_STD if width < 768 else 0.02)
    return _patched(model)


def tiny_z_image_prompt(seed: int, tokens: int = 12) -> list:
    """A CONDITIONING as Z-Image's text encode gives it: Qwen3 hidden states of its own length (the encoder pads
    nothing), its all-ones attention mask, no pooled."""
    generator = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, tokens, TINY_CONTEXT_DIM, generator=generator),
             {"pooled_output": None, "attention_mask": encoder_mask(tokens)}]]


def tiny_qwen_prompt(seed: int, tokens: int = 12) -> list:
    """A CONDITIONING as Qwen-Image's text encode gives it: Qwen2.5-VL hidden states of its own length, no pooled,
    the encoder's all-ones attention mask."""
    generator = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, tokens, TINY_CONTEXT_DIM, generator=generator),
             {"pooled_output": None, "attention_mask": encoder_mask(tokens)}]]


def tiny_flux_prompt(seed: int, tokens: int = 16, guidance: float | None = 3.5, pooled: bool = True) -> list:
    """A CONDITIONING as Flux's text encode + FluxGuidance make it: T5 tokens, CLIP-L pooled, guidance.

    Chroma's pooled output is None (``pooled=False``), as CLIP Text Encode gives it for a T5-only encoder."""
    generator = torch.Generator().manual_seed(seed)
    options = {"pooled_output": torch.randn(1, TINY_POOLED_DIM, generator=generator) if pooled else None}
    if guidance is not None:
        options["guidance"] = guidance
    return [[torch.randn(1, tokens, TINY_CONTEXT_DIM, generator=generator), options]]


RANDOM_FLUX_FILE = "flux1_random_1x1_v1_fp16.safetensors"  # bump when the recipe changes
FLUX_CONTEXT_DIM, FLUX_POOLED_DIM = 4096, 768  # T5-XXL tokens, CLIP-L pooled: what ComfyUI's detection fixes


def _write_flux_file(path: Path) -> None:
    """Flux.1 dev at full width (hidden 3072, 24 heads, T5 context 4096, guidance embedding) with one double and
    one single block, as ``diffusion_models/`` files hold it (keys without prefix)."""
    comfy_host.boot_comfy()
    import comfy.ldm.flux.model
    import comfy.supported_models
    import comfy.utils

    config = with_newer_fields(comfy.ldm.flux.model.FluxParams, dict(
        image_model="flux", in_channels=16, out_channels=16, vec_in_dim=FLUX_POOLED_DIM,
        context_in_dim=FLUX_CONTEXT_DIM, hidden_size=3072, mlp_ratio=4.0, num_heads=24, depth=1,
        depth_single_blocks=1, axes_dim=[16, 56, 56], theta=10000, patch_size=2, qkv_bias=True,
        guidance_embed=True, dtype=torch.float16))
    model_config = comfy.supported_models.Flux(config)
    model_config.set_inference_dtype(torch.float16, None)
    model = model_config.get_model({}, device=torch.device("cpu"))
    init_dit_weights(model.diffusion_model, seed=21, std=0.02)
    # the released files' key names (newer ComfyUI's RMSNorm calls the q/k norm scale 'weight')
    state = {key[:-len("weight")] + "scale" if key.endswith(("query_norm.weight", "key_norm.weight")) else key: value
             for key, value in model.diffusion_model.state_dict().items()}
    comfy.utils.save_torch_file(state, str(path))


def random_flux_file() -> Path:
    """A random Flux.1 dev file for Load Diffusion Model (UNETLoader): full width, 1 double + 1 single block,
    fp16, about 1 GB, built once per machine. ComfyUI's ``model_detection`` fixes Flux's width, heads and context
    and counts the blocks from the keys, so the file is detected as Flux.1 dev."""
    return cached_file(RANDOM_FLUX_FILE, _write_flux_file)


RANDOM_QWEN_IMAGE_FILE = "qwen_image_random_1block_v1_bf16.safetensors"  # bump when the recipe changes
QWEN_CONTEXT_DIM = 3584  # Qwen2.5-VL-7B hidden states: what ComfyUI's Qwen-Image fixes


def _write_qwen_image_file(path: Path) -> None:
    """Qwen-Image at full width (24 heads of 128, RoPE 16/56/56, Qwen2.5-VL context 3584) with one of its 60 blocks,
    bf16, as ``diffusion_models/`` files hold it (keys without prefix)."""
    comfy_host.boot_comfy()
    import comfy.supported_models
    import comfy.utils

    config = dict(image_model="qwen_image", patch_size=2, in_channels=64, out_channels=16, num_layers=1,
                  attention_head_dim=128, num_attention_heads=24, joint_attention_dim=QWEN_CONTEXT_DIM,
                  axes_dims_rope=(16, 56, 56))
    model_config = comfy.supported_models.QwenImage(config)
    model_config.set_inference_dtype(torch.bfloat16, None)
    model = model_config.get_model({}, device=torch.device("cpu"))
    init_dit_weights(model.diffusion_model, seed=22, std=0.02)
    comfy.utils.save_torch_file(model.diffusion_model.state_dict(), str(path))


def random_qwen_image_file() -> Path:
    """A random Qwen-Image file for Load Diffusion Model: full width, 1 block, bf16, about 0.76 GB, built once per
    machine. ComfyUI's detection reads the input width from ``img_in`` and counts the blocks, so it loads as
    Qwen-Image."""
    return cached_file(RANDOM_QWEN_IMAGE_FILE, _write_qwen_image_file)


def qwen_prompt(seed: int, tokens: int) -> list:
    """A CONDITIONING of Qwen-Image's real width (Qwen2.5-VL 3584) and ``tokens`` tokens."""
    generator = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, tokens, QWEN_CONTEXT_DIM, generator=generator),
             {"pooled_output": None, "attention_mask": encoder_mask(tokens)}]]


def load_diffusion_model(path: Path):
    """The MODEL that ComfyUI's own Load Diffusion Model node (UNETLoader) makes of ``path``, as a user's graph runs it."""
    comfy_host.boot_comfy()
    import folder_paths
    import nodes

    folder_paths.add_model_folder_path("diffusion_models", str(path.parent))
    (model,) = nodes.UNETLoader().load_unet(path.name, "default")
    return model


def flux_prompt(seed: int, tokens: int = 8, guidance: float = 3.5) -> list:
    """A CONDITIONING of Flux.1's real widths (T5-XXL tokens, CLIP-L pooled), random, with its guidance."""
    generator = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, tokens, FLUX_CONTEXT_DIM, generator=generator) * 0.1,
             {"pooled_output": torch.randn(1, FLUX_POOLED_DIM, generator=generator) * 0.1, "guidance": guidance}]]
