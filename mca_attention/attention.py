"""SALQ and SAGI: the target row's self-attention rebuilt from the subject's and condition's keys.

Tensors are ``[batch, tokens, heads * dim_head]`` (heads merged, as ComfyUI's attn1 replacement
receives them). Masks are ``[tokens]`` or ``[batch, tokens]`` floats in 0..1, already resized to the
site and flattened row-major.

Rules shared by both operations (``MASK_THRESHOLD`` = 0.5):
- foreground keys: subject positions where ``subject_mask > 0.5``;
- background keys: condition positions where ``edit_mask <= 0.5``;
- output per query position: ``edit_mask * fg + (1 - edit_mask) * bg``.

Empty key sets: a mask can vanish when it is resized to a coarse site (or be all-one / all-zero).
Attention over an empty set is undefined (the official code's "most negative float" trick turns it
into a uniform average). We fall back to *all* keys of that source row, i.e. the source row's
ordinary attention, which keeps the output finite and meaningful.

Only the allowed keys are gathered and only the queries whose blend weight is non-zero are
computed, so no dense ``N x N`` matrix of masked scores is ever built.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn.functional import scaled_dot_product_attention

from .layout import RowLayout
from .masks import MASK_THRESHOLD
from .schedule import Op


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Plain softmax attention on heads-merged tensors ``[b, n, heads*d]``."""
    b, nq, inner = q.shape
    d = inner // heads
    qh = q.view(b, nq, heads, d).transpose(1, 2)
    kh = k.reshape(b, k.shape[1], heads, d).transpose(1, 2)
    vh = v.reshape(b, v.shape[1], heads, d).transpose(1, 2)
    out = scaled_dot_product_attention(qh, kh, vh)
    return out.transpose(1, 2).reshape(b, nq, inner)


@dataclass(frozen=True)
class RegionPlan:
    """Index sets for one mask pair at one site; ``None`` means "all positions"."""

    fg_keys: torch.Tensor | None
    bg_keys: torch.Tensor | None
    fg_queries: torch.Tensor | None
    bg_queries: torch.Tensor | None
    fg_weight: torch.Tensor  # [n_fg_queries, 1]: edit_mask at the foreground queries
    bg_weight: torch.Tensor  # [n_bg_queries, 1]: 1 - edit_mask at the background queries
    computes_fg: bool
    computes_bg: bool


def _subset(selected: torch.Tensor) -> torch.Tensor | None:
    """Indices of the True positions, or None when every position (or, as fallback, none) is True."""
    if bool(selected.all()) or not bool(selected.any()):
        return None
    return selected.nonzero().squeeze(1)


def plan_regions(subject_mask: torch.Tensor, edit_mask: torch.Tensor) -> RegionPlan:
    """Precompute key/query index sets for 1-D masks of one site (done once per site and run)."""
    edit = edit_mask.float()
    fg_queries_sel = edit > 0
    bg_queries_sel = edit < 1
    fg_queries = None if bool(fg_queries_sel.all()) else fg_queries_sel.nonzero().squeeze(1)
    bg_queries = None if bool(bg_queries_sel.all()) else bg_queries_sel.nonzero().squeeze(1)
    fg_weight = edit if fg_queries is None else edit[fg_queries]
    bg_weight = 1 - (edit if bg_queries is None else edit[bg_queries])
    return RegionPlan(
        fg_keys=_subset(subject_mask > MASK_THRESHOLD),
        bg_keys=_subset(edit_mask <= MASK_THRESHOLD),
        fg_queries=fg_queries,
        bg_queries=bg_queries,
        fg_weight=fg_weight.unsqueeze(1),
        bg_weight=bg_weight.unsqueeze(1),
        computes_fg=bool(fg_queries_sel.any()),
        computes_bg=bool(bg_queries_sel.any()),
    )


def _pick(x: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
    return x if index is None else x.index_select(1, index)


def blend_regions(q_fg, k_fg, v_fg, q_bg, k_bg, v_bg, plan: RegionPlan, heads: int) -> torch.Tensor:
    """``edit * attn(q_fg -> fg keys) + (1 - edit) * attn(q_bg -> bg keys)`` for one mask pair."""
    out = None
    regions = ((plan.computes_fg, q_fg, k_fg, v_fg, plan.fg_queries, plan.fg_keys, plan.fg_weight),
               (plan.computes_bg, q_bg, k_bg, v_bg, plan.bg_queries, plan.bg_keys, plan.bg_weight))
    for active, q, k, v, queries, keys, weight in regions:
        if not active:
            continue
        part = attend(_pick(q, queries), _pick(k, keys), _pick(v, keys), heads) * weight.to(q.dtype)
        if queries is None:
            out = part if out is None else out + part
        else:
            out = q.new_zeros(q.shape) if out is None else out
            out.index_add_(1, queries, part)
    return q_fg.new_zeros(q_fg.shape) if out is None else out


def target_attention(op: Op, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rows: RowLayout,
                     plan: RegionPlan, heads: int) -> torch.Tensor:
    """The target rows ``[chunks, tokens, heads*d]`` of one attention call under SALQ or SAGI.

    ``q``, ``k``, ``v`` hold the whole MCA batch (every chunk's condition, subject and target rows);
    ``rows`` says which rows are which. This is the one function the attn1 replacement calls.

    - SALQ (Self-Attention Local Query): the *target's* queries over the subject's foreground keys and
      the condition's background keys.
    - SAGI (Self-Attention Global Injection): the subject's own restricted attention inside the edit
      region and the condition's own restricted attention outside it.
    """
    c, s, t = rows.condition, rows.subject, rows.target
    if op is Op.SALQ:
        return blend_regions(q[t], k[s], v[s], q[t], k[c], v[c], plan, heads)
    if op is Op.SAGI:
        return blend_regions(q[s], k[s], v[s], q[c], k[c], v[c], plan, heads)
    raise ValueError(f"target_attention needs Op.SALQ or Op.SAGI, got {op}")
