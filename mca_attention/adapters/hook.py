"""The one hook body every adapter shares: run lookup, target groups, ordinary rows, target rows, write-back.

An adapter's hook (a subclass of :class:`SiteHook`) supplies what differs between architectures:
- ``ordinary(rows, text_keys)``: its attention as it was before MCA (chained to whatever another pack
  installed), for the given rows of the call (None: all), each row's padded text keys masked out;
- ``merged(x)``: q/k/v as ``[batch, tokens, heads * dim]`` and ``shaped(out)``: the output as the call returns it;
- ``observe(...)``: what it records before the targets are rebuilt (an MMDiT's subject-word maps);
- ``group_keys(...)``: the keys a target group reads (an MMDiT may move the subject's onto the edit region).
The token layout of a call (text first, then the image grid) comes in a :class:`TokenLayout`.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ..attention import target_attention
from ..run import RunCache, RunStep
from ..state import OUTSIDE_MCA_SAMPLER, MCAState, TargetGroup
from ..text import TextFacts
from .base import tell_the_ui


@dataclass(frozen=True)
class TokenLayout:
    """The tokens of every row of one call: ``text`` text tokens first (0 for a UNet's self-attention), then
    the image grid of ``grid`` (rows, columns) tokens, then ``tail`` pad tokens (Z-Image pads the image tokens to a
    multiple of 32): context tokens of their own row, like its text."""

    text: int
    grid: tuple[int, int]
    tail: int = 0


@dataclass(frozen=True)
class Call:
    """One attention call: q/k/v as the hook received them, and what the adapter needs to run it unchanged."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    heads: int
    cond_or_uncond: list[int]
    tokens: TokenLayout
    native: tuple = ()  # the adapter's own call arguments (the MMDiT override's func, args, kwargs)
    padding: torch.Tensor | None = None  # set by ``attend`` when prompts were padded: ``padding_mask``'s value


def padding_mask(cache: RunCache, call: Call, keys: torch.Tensor) -> torch.Tensor:
    """The additive ``[rows, 1, 1, tokens]`` mask of a padded call (-inf on each row's padded text keys), once per
    run, chunk list, length, dtype and device."""
    key = (tuple(call.cond_or_uncond), call.q.shape[2], call.q.dtype, str(call.q.device))
    if key not in cache.padding_masks:
        allowed = torch.cat([keys, keys.new_ones((keys.shape[0], call.q.shape[2] - keys.shape[1]))], 1)
        mask = torch.zeros(allowed.shape, dtype=call.q.dtype, device=call.q.device)
        cache.padding_masks[key] = mask.masked_fill(~allowed, float("-inf"))[:, None, None, :]
    return cache.padding_masks[key]


def text_keys(cache: RunCache, current: RunStep, call: Call, text: TextFacts) -> torch.Tensor | None:
    """``[rows, text tokens]`` bool, True on each row's own text tokens (and on the pad tokens the model appends,
    ``text.pads_to_multiple``); None when no row's prompt was padded."""
    span = current.run.text
    if span is None or call.tokens.text == 0:
        return None
    rows = len(call.cond_or_uncond) * len(span.cond)
    if call.tokens.text != text.model_length(span.length) or call.q.shape[0] != rows:
        raise ValueError(f"MCA padded the prompts of {rows} rows to {span.length} text tokens, but an attention "
                         f"call holds {call.q.shape[0]} rows of {call.tokens.text}: a node between the MCA Sampler "
                         f"and the model changed the batch or the prompts' length.")
    cond_or_uncond, device = call.cond_or_uncond, call.q.device
    key = (tuple(cond_or_uncond), str(device))
    if key not in cache.text_keys:
        cache.text_keys[key] = span.valid_keys(cond_or_uncond, device, call.tokens.text, text.pads_to_multiple)
    return cache.text_keys[key]


class SiteHook:
    """The shared body of an adapter's attention hook; see the module docstring for what a subclass supplies."""

    def __init__(self, state: MCAState):
        self.state = state

    def __deepcopy__(self, memo):
        return self

    def ordinary(self, call: Call, rows: torch.Tensor | None, text_keys: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def merged(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def shaped(self, call: Call, out: torch.Tensor) -> torch.Tensor:
        return out

    def observe(self, call: Call, cache: RunCache, current: RunStep, text_keys: torch.Tensor | None) -> None:
        """Called on every call of a known site that holds the run's rows, before the targets are rebuilt."""

    def group_keys(self, call: Call, cache: RunCache, current: RunStep, group: TargetGroup, rows) -> torch.Tensor:
        """The keys ``[batch, tokens, heads * dim]`` one target group reads."""
        return self.merged(call.k)

    def before_rebuild(self, call: Call) -> None:
        """A last check before target rows are rebuilt (refuse what the call carries that MCA cannot honour)."""

    def attend(self, call: Call, current: RunStep | None, site: int | None) -> torch.Tensor:
        """One attention call: ordinary attention, with the targets of active groups rebuilt by SALQ / SAGI."""
        state = self.state
        if current is None:
            if state.warn_once("outside", OUTSIDE_MCA_SAMPLER):
                tell_the_ui(OUTSIDE_MCA_SAMPLER)
            return self.ordinary(call, None, None)
        q, cond_or_uncond = call.q, call.cond_or_uncond
        cache = state.run_cache(current.run)
        keys = text_keys(cache, current, call, state.text)
        if keys is not None:
            call = replace(call, padding=padding_mask(cache, call, keys))
        if site is None:
            return self.ordinary(call, None, keys)
        batch, shape, chunks = q.shape[0], current.run.shape, len(cond_or_uncond)
        if batch == shape.rows * chunks:
            self.observe(call, cache, current, keys)
        groups = state.target_groups(cache, current, site, batch, chunks, call.tokens.grid, q.device)
        if not groups:
            return self.ordinary(call, None, keys)
        self.before_rebuild(call)
        everything = state.layout(cache, batch, cond_or_uncond, q.device, shape)
        rebuilt = {target for group in groups for target in group.targets}
        untouched = tuple(target for target in range(shape.targets) if target not in rebuilt)
        plain = everything.keep if not untouched else torch.cat(
            [everything.keep, state.layout(cache, batch, cond_or_uncond, q.device, shape, untouched).target])
        kept = self.ordinary(call, plain, None if keys is None else keys[plain])
        out = kept.new_empty((batch, *kept.shape[1:]))
        out[plain] = kept
        queries, values = self.merged(q), self.merged(call.v)
        for group in groups:
            rows = state.layout(cache, batch, cond_or_uncond, q.device, shape, group.targets)
            target = target_attention(group.op, queries, self.group_keys(call, cache, current, group, rows), values,
                                      rows, group.plan, call.heads, text_tokens=call.tokens.text, text_keys=keys,
                                      tail_tokens=call.tokens.tail)
            out[rows.target] = self.shaped(call, target).to(out.dtype)
        return out
