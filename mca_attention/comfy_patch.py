"""The one module of ``mca_attention`` that knows ComfyUI: attn1 replacements on a cloned ModelPatcher.

Every SD1.5 self-attention site gets an :class:`MCASiteAttention`. Rows 0 (condition) and 1 (subject)
keep ordinary attention; row 2 (target) gets SAGI, SALQ or ordinary attention by the schedule, the
same in every cond/uncond chunk, whether ComfyUI batches the chunks or runs them one by one.
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from typing import Callable

import torch

from .attention import RegionPlan, blend_regions, plan_regions
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
                for depth, _ in enumerate(getattr(module, "transformer_blocks", [])):
                    sites.append(AttentionSite(block_name, number, depth, len(sites)))
    return sites


def _clone_with_empty_masks_check(mask: torch.Tensor, name: str) -> torch.Tensor:
    single = as_single_mask(mask, name)
    if not bool((single > 0.5).any()):
        raise ValueError(f"{name} is empty (no pixel above 0.5): check the mask node or its threshold")
    return single.detach().to("cpu").clone()


@dataclass
class MCAState:
    """Settings and per-site caches shared by all sites of one patched model.

    Travels in ``transformer_options`` so that the MCA Sampler can read the mode and masks; a
    ComfyUI ``clone()`` (0.3.75 deep-copies model options) keeps sharing this one object.
    """

    schedule: MCASchedule
    subject_mask: torch.Tensor
    edit_mask: torch.Tensor
    mode: str = "swap"
    trace: list | None = None  # when a list, every call appends (step, layer, op, chunks)
    _plans: dict = field(default_factory=dict, repr=False)

    def __deepcopy__(self, memo):
        return self

    def plan(self, height: int, width: int, device: torch.device) -> RegionPlan:
        key = (height, width, str(device))
        plan = self._plans.get(key)
        if plan is None:
            plan = plan_regions(
                site_mask(self.subject_mask, height, width).to(device),
                site_mask(self.edit_mask, height, width).to(device),
            )
            self._plans[key] = plan
        return plan


def current_step(extra_options: dict) -> tuple[int, int] | None:
    """``(step, total_steps)`` from the sampler's sigmas, or None outside a sampler run."""
    schedule_sigmas = extra_options.get("sample_sigmas")
    sigmas = extra_options.get("sigmas")
    if schedule_sigmas is None or sigmas is None or schedule_sigmas.numel() < 2:
        return None
    return step_at_sigma(float(sigmas.flatten()[0]), schedule_sigmas), schedule_sigmas.numel() - 1


def ordinary_attention(q, k, v, extra_options: dict) -> torch.Tensor:
    """ComfyUI's own self-attention, called exactly as ``CrossAttention.forward`` calls it."""
    from comfy.ldm.modules.attention import optimized_attention

    return optimized_attention(
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
        if self.state.trace is not None and step is not None:
            self.state.trace.append((step[0], self.layer, op, chunks))
        if op is Op.NONE:
            return self._ordinary(q, k, v, extra_options)

        rows = row_layout(q.shape[0], extra_options["cond_or_uncond"], q.device)
        height, width = extra_options["activations_shape"][-2:]
        plan = self.state.plan(int(height), int(width), q.device)
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


def patch_model(model, schedule: MCASchedule, subject_mask: torch.Tensor, edit_mask: torch.Tensor,
                mode: str = "swap"):
    """A clone of ``model`` (a ComfyUI ModelPatcher) with MCA attention at all 16 SD1.5 sites."""
    sites = find_attention_sites(model.get_model_object("diffusion_model"))
    if len(sites) != NUM_SD15_LAYERS:
        raise ValueError(
            f"MCA Attention Patch needs a Stable Diffusion 1.5 model (16 self-attention sites); this model "
            f"has {len(sites)}. Load an SD1.5 checkpoint (SDXL, SD2 and others are not supported)."
        )
    latent_channels = getattr(model.model.latent_format, "latent_channels", 4)
    if latent_channels != 4:
        raise ValueError(f"MCA needs an SD1.5 model with 4 latent channels; this one has {latent_channels}.")

    state = MCAState(
        schedule=schedule,
        subject_mask=_clone_with_empty_masks_check(subject_mask, "subject_mask"),
        edit_mask=as_single_mask(edit_mask, "edit_mask").detach().to("cpu").clone(),
        mode=mode,
    )
    patched = model.clone()
    existing = patched.model_options.get("transformer_options", {}).get("patches_replace", {}).get("attn1", {})
    for site in sites:
        previous = existing.get(site.key) or existing.get(site.key[:2])
        patched.set_model_attn1_replace(MCASiteAttention(state, site.layer, previous), *site.key)
    # Copy-on-write: the clone's dict may still be shared with the input model on newer ComfyUI.
    transformer_options = dict(patched.model_options.get("transformer_options", {}))
    transformer_options[STATE_KEY] = state
    patched.model_options["transformer_options"] = transformer_options
    return patched


def mca_state(model) -> MCAState | None:
    """The MCA settings a patched model carries, if any."""
    return model.model_options.get("transformer_options", {}).get(STATE_KEY)
