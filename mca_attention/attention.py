"""SALQ and SAGI: the target row's self-attention rebuilt from the subject's and condition's keys.

Tensors are ``[batch, tokens, heads * dim_head]`` (heads merged, as ComfyUI's attn1 replacement
receives them). Each row's sequence is ``[text tokens; image tokens]``: a UNet's self-attention has
no text tokens (``text_tokens=0``); a joint (MMDiT) attention puts the row's own text first. Masks
are 1-D ``[image tokens]`` floats in 0..1, already resized to the site and flattened row-major.

Rules shared by both operations (``MASK_THRESHOLD`` = 0.5):
- foreground keys: subject image positions where ``subject_mask > 0.5``;
- background keys: condition image positions where ``edit_mask <= 0.5``;
- joint attention: each key set also holds the text keys of the row whose queries attend (SALQ: the
  target's text; SAGI: the subject's text for the foreground, the condition's for the background),
  as the UNet's rows reach their own text through their own cross-attention;
- output per image query: ``edit_mask * fg + (1 - edit_mask) * bg``; the target's text queries keep
  ordinary attention over the target's own sequence.

Empty key sets: a mask can vanish when it is resized to a coarse site (or be all-one / all-zero).
Attention over an empty set is undefined (the official code's "most negative float" trick turns it
into a uniform average). We fall back to *all* image keys of that source row, i.e. the source row's
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


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
           allowed: torch.Tensor | None = None) -> torch.Tensor:
    """Plain softmax attention on heads-merged tensors ``[b, n, heads*d]``; ``allowed`` ``[b, keys]`` (bool)
    leaves the other keys out of each row's softmax."""
    b, nq, inner = q.shape
    d = inner // heads
    qh = q.view(b, nq, heads, d).transpose(1, 2)
    kh = k.reshape(b, k.shape[1], heads, d).transpose(1, 2)
    vh = v.reshape(b, v.shape[1], heads, d).transpose(1, 2)
    mask = None if allowed is None else allowed[:, None, None, :]
    out = scaled_dot_product_attention(qh, kh, vh, attn_mask=mask)
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


@dataclass(frozen=True)
class KeySource:
    """Where one region's keys and values come from: a row's image tokens, and (joint attention) text tokens."""

    k: torch.Tensor  # [chunks, image tokens, inner]
    v: torch.Tensor
    text_k: torch.Tensor | None = None  # [chunks, text tokens, inner]; None for a UNet's self-attention
    text_v: torch.Tensor | None = None
    text_own: torch.Tensor | None = None  # [chunks, text tokens] bool: the row's own (not padding); None: all

    def pick(self, keys: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The allowed image keys/values, after the text keys/values when there are any, and which of them
        each row may attend (None: all)."""
        k, v = _pick(self.k, keys), _pick(self.v, keys)
        if self.text_k is None:
            return k, v, None
        allowed = None if self.text_own is None else torch.cat(
            [self.text_own, self.text_own.new_ones((k.shape[0], k.shape[1]))], 1)
        return torch.cat([self.text_k, k], 1), torch.cat([self.text_v, v], 1), allowed


def blend_regions(q_fg: torch.Tensor, fg: KeySource, q_bg: torch.Tensor, bg: KeySource, plan: RegionPlan,
                  heads: int) -> torch.Tensor:
    """``edit * attn(q_fg -> fg keys) + (1 - edit) * attn(q_bg -> bg keys)`` for one mask pair."""
    out = None
    regions = ((plan.computes_fg, q_fg, fg, plan.fg_queries, plan.fg_keys, plan.fg_weight),
               (plan.computes_bg, q_bg, bg, plan.bg_queries, plan.bg_keys, plan.bg_weight))
    for active, q, source, queries, keys, weight in regions:
        if not active:
            continue
        k, v, allowed = source.pick(keys)
        part = attend(_pick(q, queries), k, v, heads, allowed) * weight.to(q.dtype)
        if queries is None:
            out = part if out is None else out + part
        else:
            out = q.new_zeros(q.shape) if out is None else out
            out.index_add_(1, queries, part)
    return q_fg.new_zeros(q_fg.shape) if out is None else out


def target_attention(op: Op, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rows: RowLayout,
                     plan: RegionPlan, heads: int, text_tokens: int = 0,
                     text_keys: torch.Tensor | None = None, tail_tokens: int = 0) -> torch.Tensor:
    """The target rows ``[chunks, tokens, heads*d]`` of one attention call under SALQ or SAGI.

    ``q``, ``k``, ``v`` hold the whole MCA batch (every chunk's condition, subject and target rows);
    ``rows`` says which rows are which; the first ``text_tokens`` of every row are its text (joint
    attention), the rest its image tokens, but for ``tail_tokens`` pad tokens after them (Z-Image), which are
    context of their own row like its text. ``text_keys`` ``[batch, text_tokens]`` (bool), when prompts were
    padded to one length, marks each row's own text tokens: padding takes part in no softmax. This is the
    one function every adapter's hook calls.

    - SALQ (Self-Attention Local Query): the *target's* image queries over the subject's foreground
      keys and the condition's background keys (with the target's own text keys in both).
    - SAGI (Self-Attention Global Injection): the subject's own restricted attention inside the edit
      region and the condition's own restricted attention outside it (each with its own text keys).
    """
    c, s, t = rows.condition, rows.subject, rows.target
    length = k.shape[1]
    image = slice(text_tokens, length - tail_tokens)
    context_tokens = text_tokens + tail_tokens

    def context(x: torch.Tensor, row: torch.Tensor) -> torch.Tensor:
        """The row's own context tokens: its text, then the pad tokens after its image (if any)."""
        if tail_tokens == 0:
            return x[row, :text_tokens]
        return torch.cat([x[row, :text_tokens], x[row, length - tail_tokens:]], 1)

    def own_context(row: torch.Tensor) -> torch.Tensor | None:
        if text_keys is None or tail_tokens == 0:
            return None if text_keys is None else text_keys[row]
        return torch.cat([text_keys[row], text_keys.new_ones((len(row), tail_tokens))], 1)

    def source(image_row: torch.Tensor, text_row: torch.Tensor) -> KeySource:
        if context_tokens == 0:
            return KeySource(k[image_row], v[image_row])
        return KeySource(k[image_row, image], v[image_row, image], context(k, text_row), context(v, text_row),
                         own_context(text_row))

    if op is Op.SALQ:
        image_out = blend_regions(q[t, image], source(s, t), q[t, image], source(c, t), plan, heads)
    elif op is Op.SAGI:
        image_out = blend_regions(q[s, image], source(s, s), q[c, image], source(c, c), plan, heads)
    else:
        raise ValueError(f"target_attention needs Op.SALQ or Op.SAGI, got {op}")
    if context_tokens == 0:
        return image_out
    own = None if text_keys is None else torch.cat(
        [text_keys[t], text_keys.new_ones((len(t), length - text_tokens))], 1)
    context_out = attend(context(q, t), k[t], v[t], heads, own)  # the target's context queries: ordinary attention
    if tail_tokens == 0:
        return torch.cat([context_out, image_out], 1)
    return torch.cat([context_out[:, :text_tokens], image_out, context_out[:, text_tokens:]], 1)
