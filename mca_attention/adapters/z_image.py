"""Z-Image adapter (Turbo and base; ComfyUI runs it as Lumina 2's ``NextDiT`` with Z-Image settings).

Every forward makes three kinds of attention call through ComfyUI's attention override: the context refiner's
(text only), the noise refiner's (image only), then the main layers', one softmax over each row's
``[caption | image grid | image pad tokens]``. Only the main layers are MCA sites. ComfyUI 0.3.75 names no block on
these calls (newer ComfyUI names the main layers only), so the adapter counts the calls of each forward: a
diffusion-model wrapper, installed on the patched clone only, gives every forward a fresh counter in its
``transformer_options``, and the override reads its call's place from it (checked against ``block_index`` where the
host sets one).

What differs from Flux.1 besides: the caption is padded by the model with a learned token to a multiple of 32 (the
padding is attended, as alone), and the image tokens likewise, *after* the grid: those pad tokens are context tokens
of their own row (``TokenLayout.tail``), neither grid nor subject/condition keys. RoPE: axes (32, 48, 48), image ids
``(caption length + 1, h, w)``.
"""
from __future__ import annotations

import itertools

import torch

from ..run import RunStep, TextSpan
from ..text import TextFacts
from .base import LatentLayout, Site
from .hook import TokenLayout
from .mmdit import OVERRIDE_KEY, JointAttention, MMDiTAdapter, rotate

CALLS_KEY = "mca_attention_calls"  # transformer_options: the counter of one forward's attention calls
WRAPPER_KEY = "mca_ctrl_z_image_calls"
PAD_MULTIPLE = 32  # NextDiT's pad_tokens_multiple on Z-Image


def count_calls(executor, *args, **kwargs):
    """The diffusion model's forward with a fresh call counter in its ``transformer_options`` (a copy)."""
    options = kwargs.get("transformer_options") or {}
    kwargs["transformer_options"] = {**options, CALLS_KEY: itertools.count()}
    return executor(*args, **kwargs)


class ZImageAttention(JointAttention):
    """The attention override of one patched Z-Image: refiner calls ordinary, main layers MCA sites."""

    IMAGE_MULTIPLE = PAD_MULTIPLE

    def __init__(self, state, site_index, patch_size, pe_embedder, previous, refiners: tuple[int, int]):
        super().__init__(state, site_index, patch_size, pe_embedder, previous)
        self.refiners = refiners  # (context refiner layers, noise refiner layers): the calls before the main layers

    def locate(self, options: dict, length: int, current: RunStep | None) -> tuple[int | None, TokenLayout]:
        counter = options.get(CALLS_KEY)
        if counter is None:
            if current is not None:
                raise ValueError("MCA cannot tell Z-Image's main layers from its refiners: the model's forward did "
                                 "not run through the patch's call counter (another node replaced the diffusion "
                                 "model's forward). Apply MCA Attention Patch after that node.")
            return None, TokenLayout(0, (0, 0))
        call = next(counter)
        context, noise = self.refiners
        if current is None:
            return None, TokenLayout(0, (0, 0))
        if call < context:  # caption only
            return None, TokenLayout(length, (0, 0))
        tokens = self.joint_tokens(length, current)
        if call < context + noise:  # image only
            return None, TokenLayout(0, tokens.grid, tokens.tail)
        layer = call - context - noise
        named = options.get("block_index") if options.get("block_type") == "double" else None
        if named is not None and named != layer:
            raise ValueError(f"MCA counted attention call {call} of a Z-Image forward as main layer {layer}, but "
                             f"ComfyUI names it layer {named}: another node adds attention calls to this model. "
                             f"Apply MCA Attention Patch without it.")
        return self.site_index.get(("layer", layer)), tokens

    def probes(self, options: dict) -> bool:
        return True  # one stream: every main layer's image queries read the caption

    def prepared(self, args: tuple, tokens: TokenLayout, current: RunStep | None, cond_or_uncond: list) -> tuple:
        """q and k with each padded row's tokens at the positions they have in its prompt alone (see
        ``as_alone``); unchanged when no prompt was padded."""
        if current is None or current.run.text is None or args[0].shape[0] != len(cond_or_uncond) * len(
                current.run.text.cond):
            return args  # no prompt padded, or not the run's rows (``hook.text_keys`` refuses those clearly)
        cache = self.state.run_cache(current.run)
        key = ("as alone", tokens, tuple(cond_or_uncond), str(args[0].device))
        if key not in cache.rotations:  # once per run, call kind and chunk list
            offsets = as_alone(current.run.text, cond_or_uncond, tokens, self.state.text.model_length)
            ids = torch.zeros((*offsets.shape, len(self.pe_embedder.axes_dim)), device=args[0].device)
            ids[..., 0] = offsets.to(ids.device)
            cache.rotations[key] = self.pe_embedder(ids)  # [rows, 1, tokens, dim/2, 2, 2]
        rotation = cache.rotations[key]
        length = args[0].shape[2]
        context = [part for part in (slice(0, tokens.text), slice(length - tokens.tail, length))
                   if part.stop > part.start]  # the caption and the image's pad tokens: the grid never turns
        turned = []
        for x in args[:2]:
            x = x.clone()
            for part in context:
                x[:, :, part] = rotate(x[:, :, part], rotation[:, :, part])
            turned.append(x)
        return (*turned, *args[2:])


def as_alone(span: TextSpan, cond_or_uncond: list, tokens: TokenLayout, model_length) -> torch.Tensor:
    """``[rows, tokens]``: how far each token's position on the caption axis must turn for its row to read what it
    reads alone, when prompts of different lengths were padded to ``span.length`` (S) and the model padded that to
    P (``model_length``). A row of L tokens alone has P_L = ``model_length(L)``: its tokens, then P_L - L pad tokens
    at positions L + 1..P_L, then its image at P_L + 1 and the image's pad tokens at 0. In the batch it reads its
    tokens and the first P_L - L of the model's pad tokens (``TextSpan.valid_keys``), which sit at S + 1.., and its
    image sits at P + 1. So in every call the pad tokens it reads turn by L - S, and in the joint calls its caption
    and the image's pad tokens turn by P - P_L more: every relative position is then the one alone (RoPE rotations
    add). The image grid never turns, so rows attending each other's images (SALQ, SAGI) keep relative 0."""
    text, image = tokens.text, tokens.grid[0] * tokens.grid[1]
    caption = model_length(span.length)
    counts = span.counts(cond_or_uncond)
    offsets = torch.zeros(len(counts), text + image + tokens.tail)
    positions = torch.arange(text)
    for row, count in enumerate(counts):
        alone = model_length(count)
        joint = caption - alone if image else 0  # the image is P + 1 in the batch, P_L + 1 alone
        if text:  # the caption (context refiner and joint calls)
            pads = (positions >= span.length) & (positions < span.length + alone - count)
            offsets[row, :text][positions < count] = joint
            offsets[row, :text][pads] = count - span.length + joint
        if image:  # the image's own pad tokens (noise refiner and joint calls)
            offsets[row, text + image:] = caption - alone
    return offsets


class ZImageAdapter(MMDiTAdapter):
    """Z-Image: 30 joint layers over 2 x 2 patches of a 16-channel latent, caption first."""

    KIND = "DiT"
    FAMILIES = {"ZImage": "Z-Image"}
    SITES = {"Z-Image": "30 (main layers; the 2 + 2 refiner layers are not sites)"}
    LATENT = LatentLayout(channels=16, patch=2)
    # Qwen3-4B, chat template kept whole, no padding by the encoder; the model pads the caption to a multiple of 32
    TEXT = TextFacts(encoder_key="qwen3_4b", pads_to_multiple=PAD_MULTIPLE)
    PRESET_SOURCE = ("the Flux.1 preset carried over (a joint softmax over caption and image in every layer): SALQ at "
                     "every main layer, the official step fractions, at least one step per non-empty range, so "
                     "that the Turbo model's 8 steps run SAGI at step 0 and SALQ at steps 1-7")

    @staticmethod
    def matches(diffusion_model: torch.nn.Module) -> bool:
        from comfy.ldm.lumina.model import NextDiT

        return isinstance(diffusion_model, NextDiT)

    def find_sites(self) -> list[Site]:
        layers = self.model.get_model_object("diffusion_model").layers
        return [Site(("layer", i), i) for i in range(len(layers))]

    def text_width(self) -> int:
        return int(self.model.get_model_object("diffusion_model").cap_embedder[1].in_features)

    def pooled_width(self) -> int | None:
        return None

    def install(self, patched, state) -> None:
        import comfy.patcher_extension

        diffusion_model = self.model.get_model_object("diffusion_model")
        site_index = {site.key: site.index for site in self.sites}
        options = dict(patched.model_options.get("transformer_options", {}))
        refiners = (len(diffusion_model.context_refiner), len(diffusion_model.noise_refiner))
        options[OVERRIDE_KEY] = ZImageAttention(state, site_index, self.patch_size, diffusion_model.rope_embedder,
                                                options.get(OVERRIDE_KEY), refiners)
        patched.model_options["transformer_options"] = options
        patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY, count_calls)
