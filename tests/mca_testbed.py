"""Test bed: ComfyUI in-process on the CPU, random-weight SD1.5 models, a real server, the executor.

Import order matters: ComfyUI's folder goes first on ``sys.path`` (its ``nodes.py`` must win over the
pack's ``nodes/`` package) and the repository last, so ``from mca_attention import ...`` works too.
"""
from __future__ import annotations

import asyncio
import os
import sys
import uuid
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
COMFY_DIR = Path(os.environ.get("COMFYUI_PATH") or REPO / ".comfyui" / "ComfyUI").resolve()
PACK_LINK = COMFY_DIR / "custom_nodes" / "mca_ctrl"
CACHE_DIR = Path(os.environ.get("MCA_TEST_CACHE", Path.home() / ".cache" / "mca-ctrl-tests"))
RANDOM_CHECKPOINT = "sd15_random_v2_fp16.safetensors"  # bump when the recipe changes

if str(COMFY_DIR) not in sys.path:
    sys.path.insert(0, str(COMFY_DIR))
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))
sys.path.insert(1, str(REPO / "scripts"))

from comfy_server import ComfyServer, free_port  # noqa: E402,F401  (re-exported for the tests)

_booted: dict = {}


def boot_comfy():
    """Import ComfyUI with ``--cpu``, load its extra nodes and this pack; returns the pack module."""
    if "pack" in _booted:
        return _booted["pack"]
    import comfy.options

    comfy.options.enable_args_parsing()
    saved_argv = sys.argv
    sys.argv = [saved_argv[0], "--cpu"]
    try:
        import comfy.cli_args  # noqa: F401  (parses the arguments once)
    finally:
        sys.argv = saved_argv
    # As main.py does: ComfyUI's `utils` package first, because importing `nodes` puts comfy/ (with its
    # utils.py) at the front of sys.path.
    import utils.extra_config  # noqa: F401
    import nodes

    asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
    if not asyncio.run(nodes.load_custom_node(str(PACK_LINK))):
        raise RuntimeError(f"ComfyUI could not load the pack from {PACK_LINK}")
    _booted["pack"] = sys.modules[str(PACK_LINK).replace(".", "_x_")]
    return _booted["pack"]


def init_weights(module: torch.nn.Module, seed: int, std: float = 0.02) -> None:
    """ComfyUI leaves weights empty: norm scales to 1, other 1-D (biases) to 0, the rest N(0, std), seeded."""
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
    import comfy.model_base
    import comfy.model_patcher
    import comfy.supported_models

    config = comfy.supported_models.SD15(sd15_unet_config(dtype=dtype, **overrides))
    config.set_inference_dtype(dtype, None)
    model = comfy.model_base.BaseModel(config, device=torch.device("cpu"))
    init_weights(model.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


TINY_CONTEXT_DIM = 32


def tiny_sd15_model(seed: int = 0):
    """All 16 SD1.5 self-attention sites, 32 base channels, 32-d text context: fast on a CPU."""
    return sd15_model(seed, model_channels=32, context_dim=TINY_CONTEXT_DIM)


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
    boot_comfy()
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


class RecordingServer:
    """The stub PromptServer ComfyUI's executor needs in-process; records what it is sent."""

    def __init__(self):
        self.client_id = None
        self.last_node_id = None
        self.last_prompt_id = None
        self.sockets_metadata = {}
        self.messages: list = []

    def send_sync(self, event, data, sid=None):
        self.messages.append((event, data))

    def queue_updated(self):
        pass


def new_executor():
    """ComfyUI's real PromptExecutor with a recording stub server; it caches outputs across prompts."""
    boot_comfy()
    import execution

    server = RecordingServer()
    executor = execution.PromptExecutor(server, cache_type=execution.CacheType.CLASSIC,
                                        cache_args={"lru": 0, "ram": 0, "ram_inactive": 0})
    return executor, server


def execute_prompt(prompt: dict, executor=None) -> tuple[object, RecordingServer]:
    """Validate and run an API-format prompt through ComfyUI's real executor, in-process."""
    import execution

    executor, server = executor or new_executor()
    server.messages.clear()
    prompt_id = str(uuid.uuid4())
    valid = asyncio.run(execution.validate_prompt(prompt_id, prompt, None))
    if not valid[0]:
        raise AssertionError(f"prompt did not validate: {valid[1]} {valid[3]}")
    executor.execute(prompt, prompt_id, {}, valid[2])
    return executor, server


def node_output(executor, node_id: str, index: int = 0):
    """One output value of an executed node, from the executor's cache."""
    entry = executor.caches.outputs.get(node_id)
    outputs = getattr(entry, "outputs", entry)
    return outputs[index][0]


def execution_error(executor) -> str | None:
    """The exception message of an ``execution_error`` status message, if the run failed."""
    for event, data in executor.status_messages:
        if event == "execution_error":
            return data["exception_message"]
    return None
