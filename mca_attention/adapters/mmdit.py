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

from ..attention import target_attention
from ..cross_attention_mask import token_attention_map
from ..run import run_step
from ..schedule import MCASchedule, Op
from ..state import OUTSIDE_MCA_SAMPLER, MCAState
from ..tasks import TaskPreset
from .base import ModelAdapter, Site, tell_the_ui

OVERRIDE_KEY = "optimized_attention_override"
PROBE_BLOCK_TYPE = "double"  # generation: the target's attention to the subject words, read in the double blocks


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


class JointAttention:
    """The attention override of one patched MMDiT; chains to the override that was installed before."""

    def __init__(self, state: MCAState, site_index: dict[tuple[str, int], int], patch_size: int, pe_embedder,
                 previous=None):
        self.state = state
        self.site_index = site_index
        self.patch_size = patch_size
        self.pe_embedder = pe_embedder  # the model's RoPE (EmbedND): turns (index, h, w) offsets into rotations
        self.previous = previous

    def __deepcopy__(self, memo):
        return self

    def _ordinary(self, func, args, kwargs):
        if self.previous is not None:
            return self.previous(func, *args, **kwargs)
        return func(*args, **kwargs)

    def __call__(self, func, *args, **kwargs):
        options = kwargs.get("transformer_options") or {}
        current = run_step(options)
        site = self.site_index.get((options.get("block_type"), options.get("block_index")))
        if current is None and self.state.warn_once("outside", OUTSIDE_MCA_SAMPLER):
            tell_the_ui(OUTSIDE_MCA_SAMPLER)
        if current is None or site is None:
            return self._ordinary(func, args, kwargs)
        q, k, v, heads = args[:4]
        cache = self.state.run_cache(current.run)
        shape = current.run.shape
        cond_or_uncond = options["cond_or_uncond"]
        grid = token_grid(current.run.latent_size, self.patch_size)
        text_tokens = q.shape[2] - grid[0] * grid[1]
        if text_tokens < 0:
            raise ValueError(f"MCA found {q.shape[2]} tokens in a {self.state.family} attention call, fewer than "
                             f"the latent's {grid[0]}x{grid[1]} image tokens: the latent given to the MCA Sampler "
                             f"is not the one the model samples.")
        rows_ok = q.shape[0] == shape.rows * len(cond_or_uncond)
        if rows_ok and self.state.edit_mask is None and options.get("block_type") == PROBE_BLOCK_TYPE:
            self._record_subject_map(cache, current, q, k, heads, cond_or_uncond, text_tokens, grid)
        groups = self.state.target_groups(cache, current, site, q.shape[0], len(cond_or_uncond), grid, q.device)
        if not groups:
            return self._ordinary(func, args, kwargs)
        if kwargs.get("mask") is not None:
            raise ValueError("MCA rows cannot take an attention mask from the conditioning: remove the node that "
                             "sets one on the prompts given to the MCA Sampler.")

        everything = self.state.layout(cache, q.shape[0], cond_or_uncond, q.device, shape)
        rebuilt = {target for group in groups for target in group.targets}
        untouched = tuple(target for target in range(shape.targets) if target not in rebuilt)
        plain = everything.keep if not untouched else torch.cat(
            [everything.keep, self.state.layout(cache, q.shape[0], cond_or_uncond, q.device, shape, untouched).target])
        kept = self._ordinary(func, (q[plain], k[plain], v[plain], *args[3:]), kwargs)
        out = kept.new_empty((q.shape[0], *kept.shape[1:]))
        out[plain] = kept
        queries, values = _merged(q), _merged(v)
        for group in groups:
            rows = self.state.layout(cache, q.shape[0], cond_or_uncond, q.device, shape, group.targets)
            keys = _merged(k)
            if group.op is Op.SALQ and self.state.reposition:
                keys[rows.subject, text_tokens:] = _merged(
                    self._subject_moved(cache, current.step, k, rows, text_tokens, grid, group.targets[0]))
            target = target_attention(group.op, queries, keys, values, rows, group.plan, heads,
                                      text_tokens=text_tokens)
            if kwargs.get("skip_output_reshape"):
                target = target.view(target.shape[0], target.shape[1], heads, -1).transpose(1, 2)
            out[rows.target] = target.to(out.dtype)
        return out

    def _subject_moved(self, cache, step, k, rows, text_tokens, grid, target: int) -> torch.Tensor:
        """The subject rows' image keys ``[chunks, heads, tokens, dim]`` moved onto the edit region: RoPE rotations
        add, so turning a key by the rotation of the shift gives the key the subject would have had there."""
        shift = self.state.subject_shift(cache, step, *grid, target)
        rotations = cache.setdefault("rotations", {})
        key = (shift, str(k.device))
        if key not in rotations:  # once per run and shift, not per attention call
            offset = torch.tensor([[[0.0, shift[0], shift[1]]]], device=k.device)
            rotations[key] = self.pe_embedder(offset)  # [1, 1, 1, dim/2, 2, 2]: one rotation for every token
        return rotate(k[rows.subject, :, text_tokens:], rotations[key])

    def _record_subject_map(self, cache, current, q, k, heads, cond_or_uncond, text_tokens, grid) -> None:
        """Generation: each target's image queries' attention to the subject word's text tokens (cond chunk)."""
        if 0 not in cond_or_uncond:
            return
        target = self.state.cond_targets(cache, q.shape[0], cond_or_uncond, current.run.shape, q.device)
        queries = _merged(q[target][:, :, text_tokens:])
        keys = _merged(k[target][:, :, :text_tokens])
        maps = token_attention_map(queries, keys, heads, self.state.subject_tokens)
        cache["cross"].record(current.step, maps, *grid)


# ComfyUI model config class -> the family name users know. Flux.1 Krea and Kontext load as "Flux".
SUPPORTED = {"Flux": "Flux.1", "FluxSchnell": "Flux.1 schnell", "Chroma": "Chroma"}


class MMDiTAdapter(ModelAdapter):
    """Flux.1 and Chroma: 16-channel latent, 2x2 patches, double blocks then single blocks."""

    text_encoder_key = "t5xxl"
    has_positions = True

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

    def preset_first_site(self) -> int:
        return 0

    def preset_schedule(self, preset: TaskPreset) -> MCASchedule:
        """Every site (0 of the sites), the official step fractions, and never a silent zero-step range."""
        first = preset.schedule.salq_first_site
        return replace(preset.schedule, salq_first_site=self.preset_first_site() if first is None else first,
                       min_one_step=True)

    def text_width(self) -> int:
        return int(self.model.get_model_object("diffusion_model").txt_in.in_features)

    def pooled_width(self) -> int | None:
        vector_in = getattr(self.model.get_model_object("diffusion_model"), "vector_in", None)
        return None if vector_in is None else int(vector_in.in_layer.in_features)  # Flux: CLIP-L pooled; Chroma none

    def install(self, patched, state: MCAState) -> None:
        site_index = {site.key: site.index for site in self.sites}
        options = dict(patched.model_options.get("transformer_options", {}))
        pe_embedder = self.model.get_model_object("diffusion_model").pe_embedder
        options[OVERRIDE_KEY] = JointAttention(state, site_index, self.patch_size, pe_embedder,
                                               options.get(OVERRIDE_KEY))
        patched.model_options["transformer_options"] = options
