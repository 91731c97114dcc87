"""The one module of ``mca_attention`` that knows ComfyUI: attn1 replacements on a cloned ModelPatcher.

Every self-attention site of the UNet (SD1.x/2.x, SDXL and its distilled variants) gets an
:class:`MCASiteAttention`. Rows 0 (condition) and 1 (subject)
keep ordinary attention; row 2 (target) gets SAGI, SALQ or ordinary attention by the schedule, the
same in every cond/uncond chunk, whether ComfyUI batches the chunks or runs them one by one.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from comfy.ldm.modules import attention as comfy_attention  # looked up per call: ComfyUI may swap it

from .attention import RegionPlan, plan_regions, target_attention
from .cross_attention_mask import CrossAttentionMaps, token_attention_map
from .layout import ROWS_PER_CHUNK, RowLayout, row_layout
from .masks import MASK_THRESHOLD, as_single_mask, site_mask
from .run import MCARun, run_step
from .schedule import MCASchedule, Op
from .tasks import TaskPreset
from .unet_layers import AttentionSite, find_attention_sites, preset_salq_layer

STATE_KEY = "mca_ctrl"
logger = logging.getLogger(__name__)


def min_latent_side(diffusion_model: torch.nn.Module) -> int:
    """The smallest latent side the UNet can take: 2 to the number of its stride-2 downsamplings."""
    from comfy.ldm.modules.diffusionmodules.openaimodel import Downsample

    blocks = getattr(diffusion_model, "input_blocks", None)
    return 1 if blocks is None else 2 ** sum(isinstance(module, Downsample) for module in blocks.modules())


def _checked_mask(mask: torch.Tensor, name: str) -> torch.Tensor:
    single = as_single_mask(mask, name)
    if not bool((single > MASK_THRESHOLD).any()):
        raise ValueError(f"{name} is empty (no pixel above {MASK_THRESHOLD}): check the mask node or its threshold")
    return single.detach().to("cpu").clone()


@dataclass(eq=False)
class MCAState:
    """Settings shared by all sites of one patched model; per-run data lives in the run's cache.

    Travels in ``transformer_options`` so that the MCA Sampler can read the task and masks; a ComfyUI
    ``clone()`` (0.3.75 deep-copies model options) keeps sharing this one object, which holds nothing
    that changes during sampling except the once-only warnings.
    The edit mask is either given, or (generation) derived each step from cross-attention.
    """

    preset: TaskPreset
    schedule: MCASchedule
    num_layers: int
    subject_mask: torch.Tensor
    edit_mask: torch.Tensor | None
    subject_tokens: list[int] | None = None
    target_text_cond: torch.Tensor | None = None  # generation: the encoded text the subject tokens index into
    trace: list | None = None  # when a list, every call appends (step, layer, op, chunks): for tests
    _warned: set = field(default_factory=set, repr=False)

    def __deepcopy__(self, memo):
        return self

    def warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(message)

    def run_cache(self, run: MCARun) -> dict:
        """This model's scratch for one run: the schedule table, index plans, row layouts, maps."""
        cache = run.cache_for(self)
        if not cache:
            cache.update(ops=self.schedule.table(run.total_steps, self.num_layers), plans={}, layouts={},
                         cross=CrossAttentionMaps() if self.edit_mask is None else None)
        return cache

    def edit_mask_at(self, cache: dict, step: int) -> torch.Tensor | None:
        if self.edit_mask is not None:
            return self.edit_mask
        return cache["cross"].mask_before(step)

    def plan(self, cache: dict, step: int, height: int, width: int, device: torch.device) -> RegionPlan | None:
        """Index sets for this site; None while a cross-attention mask is not available yet.

        Built once per site resolution and edit mask (once per run, or once per step when the mask
        comes from cross-attention), not per attention call.
        """
        edit = self.edit_mask_at(cache, step)
        if edit is None:
            return None
        key = (height, width, str(device))
        cached = cache["plans"].get(key)
        if cached is None or cached[0] is not edit:
            plan = plan_regions(site_mask(self.subject_mask, height, width).to(device),
                                site_mask(edit, height, width).to(device))
            cached = cache["plans"][key] = (edit, plan)
        return cached[1]

    def layout(self, cache: dict, total_rows: int, cond_or_uncond: list[int], device: torch.device) -> RowLayout:
        key = (total_rows, tuple(cond_or_uncond), str(device))
        if key not in cache["layouts"]:
            cache["layouts"][key] = row_layout(total_rows, cond_or_uncond, device)
        return cache["layouts"][key]


def ordinary_attention(q, k, v, extra_options: dict) -> torch.Tensor:
    """ComfyUI's own self-attention, called exactly as ``CrossAttention.forward`` calls it."""
    return comfy_attention.optimized_attention(
        q, k, v, extra_options["n_heads"], attn_precision=extra_options.get("attn_precision"),
        transformer_options=extra_options,
    )


OUTSIDE_MCA_SAMPLER = ("An MCA-patched model is being sampled outside the MCA Sampler (e.g. by DDIM Invert or a "
                       "KSampler): MCA attention does nothing there. Only the MCA Sampler runs it.")


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
        current = run_step(extra_options)
        if current is None:
            self.state.warn_once("outside", OUTSIDE_MCA_SAMPLER)
            return self._ordinary(q, k, v, extra_options)
        cache = self.state.run_cache(current.run)
        op = cache["ops"][current.step][self.layer]
        cond_or_uncond = extra_options["cond_or_uncond"]
        if op is not Op.NONE and q.shape[0] != ROWS_PER_CHUNK * len(cond_or_uncond):
            self.state.warn_once("rows", f"MCA attention is inactive in a {q.shape[0] // len(cond_or_uncond)}-row "
                                         f"batch: it needs the MCA Sampler's 3 rows (condition, subject, target).")
            op = Op.NONE
        plan = None
        if op is not Op.NONE:
            height, width = extra_options["activations_shape"][-2:]
            plan = self.state.plan(cache, current.step, int(height), int(width), q.device)
            op = op if plan is not None else Op.NONE
        if self.state.trace is not None:
            self.state.trace.append((current.step, self.layer, op, len(cond_or_uncond)))
        if op is Op.NONE:
            return self._ordinary(q, k, v, extra_options)

        rows = self.state.layout(cache, q.shape[0], cond_or_uncond, q.device)
        target = target_attention(op, q, k, v, rows, plan, extra_options["n_heads"])
        if self.previous is not None:
            out = self.previous(q, k, v, extra_options).clone()
        else:
            out = torch.empty_like(q)
            out[rows.keep] = ordinary_attention(q[rows.keep], k[rows.keep], v[rows.keep], extra_options)
        out[rows.target] = target.to(out.dtype)
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
        current = run_step(extra_options)
        cond_or_uncond = extra_options.get("cond_or_uncond", [])
        height, width = (int(v) for v in extra_options["activations_shape"][-2:])
        if (current is None or 0 not in cond_or_uncond or n.shape[0] != ROWS_PER_CHUNK * len(cond_or_uncond)
                or (height, width) != _third_level_size(extra_options["original_shape"])):
            return n, context, value
        cache = self.state.run_cache(current.run)
        block = extra_options["block"]
        module = self.cross_attention[(block[0], block[1], extra_options.get("block_index", 0))]
        rows = self.state.layout(cache, n.shape[0], cond_or_uncond, n.device)
        target = rows.target[[i for i, kind in enumerate(cond_or_uncond) if kind == 0]]
        q = module.to_q(n[target])
        k = module.to_k(context[target])
        flat = token_attention_map(q, k, extra_options["n_heads"], self.state.subject_tokens).mean(0)
        cache["cross"].record(current.step, flat, height, width)
        return n, context, value


FAMILY_NAMES = {
    "SD15": "Stable Diffusion 1.x", "SD20": "Stable Diffusion 2.x", "SD21UnclipL": "Stable Diffusion 2.1 unCLIP",
    "SD21UnclipH": "Stable Diffusion 2.1 unCLIP", "SDXL": "SDXL", "SDXLRefiner": "SDXL Refiner", "SSD1B": "SSD-1B",
    "Segmind_Vega": "Segmind Vega", "KOALA_700M": "KOALA-700M", "KOALA_1B": "KOALA-1B", "SD3": "Stable Diffusion 3",
    "Flux": "Flux", "AuraFlow": "AuraFlow", "HunyuanDiT": "Hunyuan-DiT", "PixArtAlpha": "PixArt", "PixArtSigma": "PixArt",
}


def model_family(model) -> str:
    """A readable name of the model's family (ComfyUI's detected model config)."""
    name = type(model.model.model_config).__name__
    return FAMILY_NAMES.get(name, name)


def check_model(model) -> list[AttentionSite]:
    """The model's self-attention sites, after refusing models MCA cannot run on (with the family's name)."""
    diffusion_model = model.get_model_object("diffusion_model")
    family = model_family(model)
    if not all(hasattr(diffusion_model, name) for name in ("input_blocks", "output_blocks")):
        raise ValueError(
            f"MCA-Ctrl needs a UNet whose self-attention sits in transformer blocks (SD1.x, SD2.x, SDXL, SSD-1B, "
            f"Segmind Vega, KOALA); this {family} model is a {type(diffusion_model).__name__}, which has none. "
            f"Load one of those checkpoints.")
    sites = find_attention_sites(diffusion_model)
    if not sites:
        raise ValueError(f"this {family} model has no self-attention in its UNet: MCA-Ctrl has nothing to control.")
    latent_channels = getattr(model.model.latent_format, "latent_channels", 4)
    if latent_channels != 4:
        raise ValueError(f"MCA-Ctrl needs a model with a 4-channel latent; this {family} model has {latent_channels}.")
    return sites


def resolve_schedule(schedule: MCASchedule, sites: list[AttentionSite]) -> MCASchedule:
    """The schedule with Layer_LQ fixed for this model: the family preset when none was given."""
    first = preset_salq_layer(sites) if schedule.salq_first_layer is None else schedule.salq_first_layer
    if first > len(sites):
        raise ValueError(f"salq_first_site {first} is beyond this model's {len(sites)} self-attention sites "
                         f"(0..{len(sites) - 1}); use -1 for the preset or a smaller index.")
    return schedule.with_first_layer(first)


def patch_model(model, preset: TaskPreset, schedule: MCASchedule, subject_mask: torch.Tensor,
                edit_mask: torch.Tensor | None, subject_tokens: list[int] | None = None,
                target_text_cond: torch.Tensor | None = None):
    """A clone of ``model`` (a ComfyUI ModelPatcher) with MCA attention at every self-attention site.

    ``schedule.salq_first_layer`` None means the model family's preset site (``preset_salq_layer``).

    Without ``edit_mask`` (generation) the edit region comes from the target's cross-attention to the
    text tokens at ``subject_tokens`` of the target prompt (``target_text_cond``, when given, is that
    prompt encoded, so that the sampler can check it receives the same prompt).
    """
    sites = check_model(model)
    schedule = resolve_schedule(schedule, sites)
    if edit_mask is None and preset.needs_edit_mask:
        raise ValueError(f"the {preset.task.value} preset needs an edit_mask: the region of the condition image "
                         f"where the subject goes (SLM Mask of the object to replace, or a drawn region).")
    if edit_mask is None and not subject_tokens:
        raise ValueError("MCA Attention Patch needs an edit_mask, or (generation) the subject word's token "
                         "positions in the target prompt to derive it from cross-attention.")

    state = MCAState(
        preset=preset,
        schedule=schedule,
        num_layers=len(sites),
        subject_mask=_checked_mask(subject_mask, "subject_mask"),
        edit_mask=None if edit_mask is None else _checked_mask(edit_mask, "edit_mask"),
        subject_tokens=None if edit_mask is not None else list(subject_tokens),
        target_text_cond=target_text_cond,
    )
    patched = model.clone()
    existing = patched.model_options.get("transformer_options", {}).get("patches_replace", {}).get("attn1", {})
    for site in sites:
        previous = existing.get(site.key) or existing.get(site.key[:2])
        patched.set_model_attn1_replace(MCASiteAttention(state, site.layer, previous), *site.key)
    if state.edit_mask is None:
        patched.set_model_attn2_patch(MCACrossAttentionProbe(state, sites))
    # Copy-on-write: the clone's dict may still be shared with the input model on newer ComfyUI.
    transformer_options = dict(patched.model_options.get("transformer_options", {}))
    transformer_options[STATE_KEY] = state
    patched.model_options["transformer_options"] = transformer_options
    return patched


def mca_state(model) -> MCAState | None:
    """The MCA settings a patched model carries, if any."""
    return model.model_options.get("transformer_options", {}).get(STATE_KEY)
