"""Flux-style MMDiT adapter (Flux.1 dev / schnell / Krea, Chroma): the attention override at every block.

In these models one softmax covers each row's ``[text tokens; image tokens]`` (double blocks: the two
streams concatenated; single blocks: the joint stream). The adapter installs ComfyUI's attention
override (``transformer_options["optimized_attention_override"]``, present in 0.3.75 and in newer
ComfyUI), which receives q/k/v after RoPE as ``[batch, heads, tokens, dim]``, reads the block from
``block_type`` / ``block_index`` (set by the model's forward), and rebuilds only the target row's image
queries with ``attention.target_attention``; every other row and token runs the attention it had,
including an override another pack (e.g. SageAttention) installed before us, which is chained.
"""
from __future__ import annotations

from dataclasses import replace

import torch

from ..cross_attention_mask import token_attention_map
from ..run import RunCache, RunStep, run_step
from ..schedule import MCASchedule, Op
from ..state import MCAState, TargetGroup
from ..tasks import TaskPreset
from ..text import TextFacts
from .base import LatentLayout, ModelAdapter, Site
from .hook import Call, SiteHook, TokenLayout

OVERRIDE_KEY = "optimized_attention_override"
PROBE_BLOCK_TYPE = "double"  # generation: the target's attention to the subject words, read in the double blocks
MASK_REFUSED = ("MCA rows cannot take an attention mask from the conditioning: remove the node that sets one on the "
                "prompts given to the MCA Sampler.")


def _merged(x: torch.Tensor) -> torch.Tensor:
    """``[batch, heads, tokens, dim]`` -> ``[batch, tokens, heads * dim]``."""
    batch, heads, tokens, dim = x.shape
    return x.transpose(1, 2).reshape(batch, tokens, heads * dim)


def rotate(x: torch.Tensor, pe: torch.Tensor) -> torch.Tensor:
    """RoPE's rotation of ``x`` ``[..., dim]`` by ``pe`` (EmbedND's ``[..., dim/2, 2, 2]`` matrices), in float32."""
    pairs = x.float().reshape(*x.shape[:-1], -1, 1, 2)
    out = pe[..., 0] * pairs[..., 0] + pe[..., 1] * pairs[..., 1]
    return out.reshape(x.shape).to(x.dtype)


def token_grid(latent_size: tuple[int, int], patch_size: int) -> tuple[int, int]:
    """The image-token grid of a latent, as the model patchifies it (padding up to the patch size)."""
    height, width = latent_size
    return (height + patch_size // 2) // patch_size, (width + patch_size // 2) // patch_size


def _image(tokens: TokenLayout) -> slice:
    """Where a call's image grid sits in each row's tokens."""
    return slice(tokens.text, tokens.text + tokens.grid[0] * tokens.grid[1])


def _given_mask(args: tuple, kwargs: dict):
    """The attention mask a call carries: positional (Qwen-Image, Lumina: the fifth argument) or ``mask=``."""
    return args[4] if len(args) > 4 else kwargs.get("mask")


def _with_mask(args: tuple, kwargs: dict, mask: torch.Tensor) -> tuple[tuple, dict]:
    """The call's arguments with ``mask`` in the slot the model passes it in."""
    if len(args) > 4:
        return (*args[:4], mask, *args[5:]), kwargs
    return args, {**kwargs, "mask": mask}


class JointAttention(SiteHook):
    """The attention override of one patched MMDiT; chains to the override that was installed before."""

    IMAGE_MULTIPLE = 1  # the model pads its image tokens to a multiple of this (Z-Image: 32)

    def __init__(self, state: MCAState, site_index: dict[tuple[str, int], int], patch_size: int, pe_embedder,
                 previous=None):
        super().__init__(state)
        self.site_index = site_index
        self.patch_size = patch_size
        self.pe_embedder = pe_embedder  # the model's RoPE (EmbedND): turns (index, h, w) offsets into rotations
        self.previous = previous

    def ordinary(self, call: Call, rows, text_keys):
        func, args, kwargs = call.native
        if rows is not None:
            args = (call.q[rows], call.k[rows], call.v[rows], *args[3:])
        if text_keys is not None:
            if _given_mask(args, kwargs) is not None:
                raise ValueError(MASK_REFUSED)
            mask = call.padding if rows is None else call.padding[rows]  # built once per run (hook.padding_mask)
            args, kwargs = _with_mask(args, kwargs, mask)
        if self.previous is not None:
            return self.previous(func, *args, **kwargs)
        return func(*args, **kwargs)

    def merged(self, x: torch.Tensor) -> torch.Tensor:
        return _merged(x)

    def shaped(self, call: Call, out: torch.Tensor) -> torch.Tensor:
        if call.native[2].get("skip_output_reshape"):
            return out.view(out.shape[0], out.shape[1], call.heads, -1).transpose(1, 2)
        return out

    def before_rebuild(self, call: Call) -> None:
        if _given_mask(*call.native[1:]) is not None:
            raise ValueError(MASK_REFUSED)

    def __call__(self, func, *args, **kwargs):
        options = kwargs.get("transformer_options") or {}
        current = run_step(options)
        q, k, v, heads = args[:4]
        if current is not None and k.shape[2] != q.shape[2]:
            raise ValueError(f"MCA found {k.shape[2]} keys for {q.shape[2]} queries in a {self.state.family} "
                             f"attention call: keys cached from a reference image (ComfyUI's Flux KV Cache node) "
                             f"or another pack's extra tokens, which MCA rows cannot share. Remove that node from "
                             f"the MODEL given to MCA Attention Patch.")
        site, tokens = self.locate(options, q.shape[2], current)
        cond_or_uncond = list(options.get("cond_or_uncond", []))
        args = self.prepared(args, tokens, current, cond_or_uncond)
        call = Call(*args[:4], cond_or_uncond, tokens, (func, args, kwargs))
        return self.attend(call, current, site)

    def prepared(self, args: tuple, tokens: TokenLayout, current: RunStep | None, cond_or_uncond: list) -> tuple:
        """The call's arguments as every row's attention should see them (Z-Image moves padded rows' positions)."""
        return args

    def locate(self, options: dict, length: int, current: RunStep | None) -> tuple[int | None, TokenLayout]:
        """The call's site (None: not one) and its tokens: Flux-style blocks name themselves (``block_type`` /
        ``block_index``), and every call is a joint one."""
        site = self.site_index.get((options.get("block_type"), options.get("block_index")))
        return site, TokenLayout(0, (0, 0)) if current is None else self.joint_tokens(length, current)

    def joint_tokens(self, length: int, current: RunStep) -> TokenLayout:
        """``[text; image grid; pad tokens up to a multiple of IMAGE_MULTIPLE]`` of a joint call of ``length``."""
        grid = token_grid(current.run.latent_size, self.patch_size)
        image = grid[0] * grid[1]
        padded = -(-image // self.IMAGE_MULTIPLE) * self.IMAGE_MULTIPLE
        tokens = TokenLayout(length - padded, grid, padded - image)
        if tokens.text < 0:
            raise ValueError(f"MCA found {length} tokens in a {self.state.family} attention call, fewer than the "
                             f"latent's {grid[0]}x{grid[1]} image tokens: the latent given to the MCA Sampler is not "
                             f"the one the model samples.")
        return tokens

    def probes(self, options: dict) -> bool:
        """Whether generation reads the subject word's maps at this site (Flux: the double blocks)."""
        return options.get("block_type") == PROBE_BLOCK_TYPE

    def group_keys(self, call: Call, cache: RunCache, current: RunStep, group: TargetGroup, rows) -> torch.Tensor:
        keys = _merged(call.k)
        if group.op is Op.SALQ and self.state.move_subject:
            keys = keys.clone()  # the merged keys can be a view of the model's own k (Z-Image's layout)
            image = _image(call.tokens)
            keys[rows.subject, image] = _merged(self._subject_moved(cache, current.step, call.k, rows, image,
                                                                    call.tokens.grid, group.targets[0]))
        return keys

    def _subject_moved(self, cache: RunCache, step, k, rows, image: slice, grid, target: int) -> torch.Tensor:
        """The subject rows' image keys ``[chunks, heads, tokens, dim]`` moved onto the edit region: RoPE rotations
        add, so turning a key by the rotation of the shift gives the key the subject would have had there."""
        shift = self.state.subject_shift(cache, step, *grid, target)
        key = (shift, str(k.device))
        if key not in cache.rotations:  # once per run and shift, not per attention call
            offset = torch.zeros((1, 1, len(self.pe_embedder.axes_dim)), device=k.device)  # (index, h, w[, text])
            offset[..., 1], offset[..., 2] = shift[0], shift[1]
            cache.rotations[key] = self.pe_embedder(offset)  # [1, 1, 1, dim/2, 2, 2]: one rotation for every token
        return rotate(k[rows.subject, :, image], cache.rotations[key])

    def observe(self, call: Call, cache: RunCache, current: RunStep, text_keys) -> None:
        """Generation: each target's image queries' attention to the subject word's text tokens (cond chunk)."""
        options = call.native[2].get("transformer_options") or {}
        if self.state.edit_mask is not None or not self.probes(options) or 0 not in call.cond_or_uncond:
            return
        text, grid = call.tokens.text, call.tokens.grid
        target = self.state.cond_targets(cache, call.q.shape[0], call.cond_or_uncond, current.run.shape,
                                         call.q.device)
        queries = _merged(call.q[target][:, :, _image(call.tokens)])
        keys = _merged(call.k[target][:, :, :text])
        maps = token_attention_map(queries, keys, call.heads, self.state.subject_tokens,
                                   None if text_keys is None else text_keys[target])
        cache.cross.record(current.step, maps, *grid)


class MMDiTAdapter(ModelAdapter):
    """Flux.1 and Chroma: 16-channel latent, 2x2 patches, double blocks then single blocks."""

    KIND = "MMDiT"
    # Flux.1 Krea and Kontext load as "Flux".
    FAMILIES = {"Flux": "Flux.1", "FluxSchnell": "Flux.1 schnell", "Chroma": "Chroma"}
    SITES = {"Flux.1": "57 (19 double + 38 single blocks)", "Flux.1 schnell": "57 (19 double + 38 single blocks)",
             "Chroma": "57 (19 double + 38 single blocks)"}
    LATENT = LatentLayout(channels=16, patch=2)
    TEXT = TextFacts(encoder_key="t5xxl", repeats_short_prompts=False, reads_prompt_mask=False)
    HAS_POSITIONS = True
    PRESET_SOURCE = ("SALQ at every site (the paper's generation setting; FreeGraftor and Personalize Anything act on "
                     "every block), the official step fractions, at least one step per non-empty range")

    @staticmethod
    def matches(diffusion_model: torch.nn.Module) -> bool:
        from comfy.ldm.chroma.model import Chroma
        from comfy.ldm.flux.model import Flux

        return isinstance(diffusion_model, (Flux, Chroma))

    def find_sites(self) -> list[Site]:
        diffusion_model = self.model.get_model_object("diffusion_model")
        double = [Site(("double", i), i) for i in range(len(diffusion_model.double_blocks))]
        single = [Site(("single", i), len(double) + i) for i in range(len(diffusion_model.single_blocks))]
        return double + single

    @property
    def patch_size(self) -> int:
        return int(self.model.get_model_object("diffusion_model").patch_size)

    @staticmethod
    def min_side(diffusion_model) -> int:
        """Two tokens a side: 2 x 2 patches."""
        return 2 * int(diffusion_model.patch_size)

    def preset_salq_first_site(self) -> int:
        return 0

    def preset_schedule(self, preset: TaskPreset) -> MCASchedule:
        """Every site (0 of the sites), the official step fractions, and never a silent zero-step range."""
        return replace(super().preset_schedule(preset), min_one_step=True)

    def text_width(self) -> int:
        return int(self.model.get_model_object("diffusion_model").txt_in.in_features)

    def guidance_distilled(self) -> bool:
        """Flux.1 dev and Flux.2 dev embed their guidance (FluxGuidance); schnell is distilled to 4 steps at cfg 1."""
        params = getattr(self.model.get_model_object("diffusion_model"), "params", None)
        return bool(getattr(params, "guidance_embed", False)) or self.family == "Flux.1 schnell"

    def pooled_width(self) -> int | None:
        vector_in = getattr(self.model.get_model_object("diffusion_model"), "vector_in", None)
        return None if vector_in is None else int(vector_in.in_layer.in_features)  # Flux: CLIP-L pooled; Chroma none

    @staticmethod
    def hooks(transformer_options: dict) -> dict[str, object]:
        return {f"transformer_options['{OVERRIDE_KEY}']": transformer_options.get(OVERRIDE_KEY)}

    def install(self, patched, state: MCAState) -> None:
        site_index = {site.key: site.index for site in self.sites}
        options = dict(patched.model_options.get("transformer_options", {}))
        pe_embedder = self.model.get_model_object("diffusion_model").pe_embedder
        options[OVERRIDE_KEY] = JointAttention(state, site_index, self.patch_size, pe_embedder,
                                               options.get(OVERRIDE_KEY))
        patched.model_options["transformer_options"] = options
