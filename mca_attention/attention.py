"""SALQ and SAGI: the target row's self-attention rebuilt from the subject's and condition's keys.

Tensors are ``[batch, tokens, heads * dim_head]`` (heads merged, as ComfyUI's attn1 replacement
receives them). Masks are ``[tokens]`` or ``[batch, tokens]`` floats in 0..1, already resized to the
site and flattened row-major.

Rules shared by both operations:
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

SUBJECT_THRESHOLD = 0.5
EDIT_THRESHOLD = 0.5


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
        fg_keys=_subset(subject_mask > SUBJECT_THRESHOLD),
        bg_keys=_subset(edit_mask <= EDIT_THRESHOLD),
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


def _per_row_masks(mask: torch.Tensor, batch: int, tokens: int, name: str) -> torch.Tensor:
    if mask.dim() == 1:
        mask = mask.unsqueeze(0)
    if mask.dim() != 2 or mask.shape[-1] != tokens or mask.shape[0] not in (1, batch):
        raise ValueError(
            f"{name} must be [tokens] or [batch, tokens] with tokens={tokens} and batch={batch}, "
            f"got shape {tuple(mask.shape)}"
        )
    return mask.expand(batch, tokens)


def _blend_with_masks(q_fg, k_fg, v_fg, q_bg, k_bg, v_bg, subject_mask, edit_mask, heads):
    batch, tokens, _ = q_fg.shape
    subject = _per_row_masks(subject_mask, batch, k_fg.shape[1], "subject_mask")
    edit = _per_row_masks(edit_mask, batch, tokens, "edit_mask")
    if edit.shape[1] != k_bg.shape[1]:
        raise ValueError("edit_mask must cover the condition keys: queries and keys need the same token count")
    if bool((subject == subject[:1]).all()) and bool((edit == edit[:1]).all()):
        plan = plan_regions(subject[0], edit[0])
        return blend_regions(q_fg, k_fg, v_fg, q_bg, k_bg, v_bg, plan, heads)
    rows = []
    for r in range(batch):
        plan = plan_regions(subject[r], edit[r])
        row = slice(r, r + 1)
        rows.append(blend_regions(q_fg[row], k_fg[row], v_fg[row], q_bg[row], k_bg[row], v_bg[row], plan, heads))
    return torch.cat(rows)


def salq(q_t, k_s, v_s, k_c, v_c, subject_mask, edit_mask, heads: int) -> torch.Tensor:
    """Self-Attention Local Query: target queries over subject fg keys and condition bg keys."""
    return _blend_with_masks(q_t, k_s, v_s, q_t, k_c, v_c, subject_mask, edit_mask, heads)


def sagi(q_s, k_s, v_s, q_c, k_c, v_c, subject_mask, edit_mask, heads: int) -> torch.Tensor:
    """Self-Attention Global Injection: the subject's and condition's own restricted attention."""
    return _blend_with_masks(q_s, k_s, v_s, q_c, k_c, v_c, subject_mask, edit_mask, heads)
