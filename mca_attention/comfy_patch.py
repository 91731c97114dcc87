"""The one module of ``mca_attention`` that knows ComfyUI: attn1 replacements on a cloned ModelPatcher.

Every SD1.5 self-attention site gets an :class:`MCASiteAttention`. Rows 0 (condition) and 1 (subject)
keep ordinary attention; row 2 (target) gets SAGI, SALQ or ordinary attention by the schedule, the
same in every cond/uncond chunk, whether ComfyUI batches the chunks or runs them one by one.
"""
from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from comfy.ldm.modules import attention as comfy_attention  # looked up per call: ComfyUI may swap it

from .attention import RegionPlan, blend_regions, plan_regions
from .cross_attention_mask import CrossAttentionRecorder, token_attention_map
from .layout import ROWS_PER_CHUNK, row_layout
from .masks import as_single_mask, site_mask
from .schedule import NUM_SD15_LAYERS, MCASchedule, Op, step_at_sigma

STATE_KEY = "mca_ctrl"
logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=None)
def _warn_not_mca_batch(rows: int) -> None:
    logger.warning("MCA attention is inactive in a %d-row batch: it acts on the 3-row batch of the MCA Sampler "
                   "(condition, subject, target). Other samplers run the patched model unchanged.", rows)


@dataclass(frozen=True)
class AttentionSite:
    """One self-attention site: its ``patches_replace`` key and its index in UNet order."""

    block_name: str
    block_number: int
    block_index: int
    layer: int
    transformer: torch.nn.Module = field(compare=False, repr=False)

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.block_name, self.block_number, self.block_index)


def find_attention_sites(diffusion_model: torch.nn.Module) -> list[AttentionSite]:
    """Walk the UNet's input, middle and output blocks for transformer blocks (no hard-coded keys)."""
    groups = [("input", list(diffusion_model.input_blocks))]
    middle = getattr(diffusion_model, "middle_block", None)
    if middle is not None:
        groups.append(("middle", [middle]))
    groups.append(("output", list(diffusion_model.output_blocks)))
    sites: list[AttentionSite] = []
    for block_name, blocks in groups:
        for number, block in enumerate(blocks):
            for module in block:
                for depth, transformer in enumerate(getattr(module, "transformer_blocks", [])):
                    sites.append(AttentionSite(block_name, number, depth, len(sites), transformer))
    return sites


def _checked_mask(mask: torch.Tensor, name: str) -> torch.Tensor:
    single = as_single_mask(mask, name)
    if not bool((single > 0.5).any()):
        raise ValueError(f"{name} is empty (no pixel above 0.5): check the mask node or its threshold")
    return single.detach().to("cpu").clone()


@dataclass
class MCAState:
    """Settings and per-site caches shared by all sites of one patched model.

    Travels in ``transformer_options`` so that the MCA Sampler can read the mode and masks; a
    ComfyUI ``clone()`` (0.3.75 deep-copies model options) keeps sharing this one object.
    The edit mask is either given, or (generation) derived each step from cross-attention.
    """

    schedule: MCASchedule
    subject_mask: torch.Tensor
    edit_mask: torch.Tensor | None
    mode: str = "swap"
    cross: CrossAttentionRecorder | None = None
    trace: list | None = None  # when a list, every call appends (step, layer, op, chunks)
    _plans: dict = field(default_factory=dict, repr=False)

    def __deepcopy__(self, memo):
        return self

    def edit_mask_at(self, run, step: int) -> torch.Tensor | None:
        if self.edit_mask is not None:
            return self.edit_mask
        return self.cross.mask_before(run, step)

    def plan(self, height: int, width: int, device: torch.device, run, step: int) -> RegionPlan | None:
        """Index sets for this site; None while a cross-attention mask is not available yet.

        Built once per site resolution and edit mask (once per run, or once per step when the mask
        comes from cross-attention), not per attention call.
        """
        edit = self.edit_mask_at(run, step)
        if edit is None:
            return None
        key = (height, width, str(device))
        cached = self._plans.get(key)
        if cached is None or cached[0] is not edit:
            plan = plan_regions(site_mask(self.subject_mask, height, width).to(device),
                                site_mask(edit, height, width).to(device))
            cached = self._plans[key] = (edit, plan)
        return cached[1]


_last_step: tuple = (None, None, None)  # (sigmas, schedule, step) of the last UNet call: one lookup per call


def current_step(extra_options: dict) -> tuple[int, int] | None:
    """``(step, total_steps)`` from the sampler's sigmas, or None outside a sampler run.

    All sites of one UNet call share its ``sigmas`` tensor, so the lookup (a device sync on a GPU) runs
    once per call, not once per site.
    """
    global _last_step
    schedule_sigmas = extra_options.get("sample_sigmas")
    sigmas = extra_options.get("sigmas")
    if schedule_sigmas is None or sigmas is None or schedule_sigmas.numel() < 2:
        return None
    cached_sigmas, cached_schedule, cached_step = _last_step
    if cached_sigmas is not sigmas or cached_schedule is not schedule_sigmas:
        cached_step = step_at_sigma(float(sigmas.flatten()[0]), schedule_sigmas), schedule_sigmas.numel() - 1
        _last_step = (sigmas, schedule_sigmas, cached_step)
    return cached_step


def ordinary_attention(q, k, v, extra_options: dict) -> torch.Tensor:
    """ComfyUI's own self-attention, called exactly as ``CrossAttention.forward`` calls it."""
    return comfy_attention.optimized_attention(
        q, k, v, extra_options["n_heads"], attn_precision=extra_options.get("attn_precision"),
        transformer_options=extra_options,
    )


class MCASiteAttention:
    """attn1 replacement for one site; chains to a replacement another pack installed before us."""

    def __init__(self, state: MCAState, layer: int, previous: Callable | None = None):
        self.state = state
        self.layer = layer
        self.previous = previous

    def __deepcopy__(self, memo):
        return self

    def _ordinary(self, q, k, v, extra_options):
        if self.previous is not None:
            return self.previous(q, k, v, extra_options)
        return ordinary_attention(q, k, v, extra_options)

    def __call__(self, q, k, v, extra_options):
        step = current_step(extra_options)
        op = Op.NONE if step is None else self.state.schedule.op_at(step[0], self.layer, step[1])
        chunks = len(extra_options["cond_or_uncond"])
        if op is not Op.NONE and q.shape[0] != ROWS_PER_CHUNK * chunks:
            _warn_not_mca_batch(q.shape[0] // chunks)
            op = Op.NONE
        plan = None
        if op is not Op.NONE:
            height, width = extra_options["activations_shape"][-2:]
            plan = self.state.plan(int(height), int(width), q.device, extra_options["sample_sigmas"], step[0])
            op = op if plan is not None else Op.NONE
        if self.state.trace is not None and step is not None:
            self.state.trace.append((step[0], self.layer, op, chunks))
        if op is Op.NONE:
            return self._ordinary(q, k, v, extra_options)

        rows = row_layout(q.shape[0], extra_options["cond_or_uncond"], q.device)
        heads = extra_options["n_heads"]
        c, s, t = rows.condition, rows.subject, rows.target
        if op is Op.SALQ:
            target = blend_regions(q[t], k[s], v[s], q[t], k[c], v[c], plan, heads)
        else:
            target = blend_regions(q[s], k[s], v[s], q[c], k[c], v[c], plan, heads)

        if self.previous is not None:
            out = self.previous(q, k, v, extra_options).clone()
        else:
            out = torch.empty_like(q)
            out[rows.keep] = ordinary_attention(q[rows.keep], k[rows.keep], v[rows.keep], extra_options)
        out[t] = target.to(out.dtype)
        return out


def _third_level_size(original_shape) -> tuple[int, int]:
    """Latent size after two stride-2 downsamplings (16 x 16 for a 64 x 64 latent)."""
    height, width = int(original_shape[-2]), int(original_shape[-1])
    return math.ceil(math.ceil(height / 2) / 2), math.ceil(math.ceil(width / 2) / 2)


class MCACrossAttentionProbe:
    """attn2_patch (a composable list entry): records the target's cross-attention to the subject words."""

    def __init__(self, state: MCAState, sites: list[AttentionSite]):
        self.state = state
        self.cross_attention = {site.key: site.transformer.attn2 for site in sites}

    def __deepcopy__(self, memo):
        return self

    def __call__(self, n, context, value, extra_options):
        step = current_step(extra_options)
        cond_or_uncond = extra_options.get("cond_or_uncond", [])
        height, width = (int(v) for v in extra_options["activations_shape"][-2:])
        if (step is None or 0 not in cond_or_uncond or n.shape[0] != ROWS_PER_CHUNK * len(cond_or_uncond)
                or (height, width) != _third_level_size(extra_options["original_shape"])):
            return n, context, value
        block = extra_options["block"]
        module = self.cross_attention[(block[0], block[1], extra_options.get("block_index", 0))]
        rows = row_layout(n.shape[0], cond_or_uncond, n.device)
        target = rows.target[[i for i, kind in enumerate(cond_or_uncond) if kind == 0]]
        q = module.to_q(n[target])
        k = module.to_k(context[target])
        flat = token_attention_map(q, k, extra_options["n_heads"], self.state.cross.token_indices).mean(0)
        self.state.cross.record(extra_options["sample_sigmas"], step[0], flat, height, width)
        return n, context, value


def patch_model(model, schedule: MCASchedule, subject_mask: torch.Tensor, edit_mask: torch.Tensor | None,
                mode: str = "swap", subject_tokens: list[int] | None = None):
    """A clone of ``model`` (a ComfyUI ModelPatcher) with MCA attention at all 16 SD1.5 sites.

    Without ``edit_mask`` the edit region comes from the target's cross-attention to the text tokens at
    ``subject_tokens`` (generation mode).
    """
    sites = find_attention_sites(model.get_model_object("diffusion_model"))
    if len(sites) != NUM_SD15_LAYERS:
        raise ValueError(
            f"MCA Attention Patch needs a Stable Diffusion 1.5 model (16 self-attention sites); this model "
            f"has {len(sites)}. Load an SD1.5 checkpoint (SDXL, SD2 and others are not supported)."
        )
    latent_channels = getattr(model.model.latent_format, "latent_channels", 4)
    if latent_channels != 4:
        raise ValueError(f"MCA needs an SD1.5 model with 4 latent channels; this one has {latent_channels}.")
    if edit_mask is None and not subject_tokens:
        raise ValueError("MCA Attention Patch needs an edit_mask, or (generation) the subject word's token "
                         "positions in the target prompt to derive it from cross-attention.")

    state = MCAState(
        schedule=schedule,
        subject_mask=_checked_mask(subject_mask, "subject_mask"),
        edit_mask=None if edit_mask is None else _checked_mask(edit_mask, "edit_mask"),
        mode=mode,
        cross=None if edit_mask is not None else CrossAttentionRecorder(subject_tokens),
    )
    patched = model.clone()
    existing = patched.model_options.get("transformer_options", {}).get("patches_replace", {}).get("attn1", {})
    for site in sites:
        previous = existing.get(site.key) or existing.get(site.key[:2])
        patched.set_model_attn1_replace(MCASiteAttention(state, site.layer, previous), *site.key)
    if state.cross is not None:
        patched.set_model_attn2_patch(MCACrossAttentionProbe(state, sites))
    # Copy-on-write: the clone's dict may still be shared with the input model on newer ComfyUI.
    transformer_options = dict(patched.model_options.get("transformer_options", {}))
    transformer_options[STATE_KEY] = state
    patched.model_options["transformer_options"] = transformer_options
    return patched


def mca_state(model) -> MCAState | None:
    """The MCA settings a patched model carries, if any."""
    return model.model_options.get("transformer_options", {}).get(STATE_KEY)
