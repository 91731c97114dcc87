"""Test-side references for the attention patch: the paper's rules as plain dense attention, and a recorder
that captures what the shipped attn1 replacements receive and return during a real sampling run."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from mca_ctrl.mca_attention.run import run_step
from mca_ctrl.mca_attention.schedule import Op


def dense_softmax_attention(q, k, v, allowed, heads):
    """Every score computed, disallowed keys at -inf; no allowed key means all keys (the documented fallback)."""
    if not bool(allowed.any()):
        allowed = torch.ones_like(allowed)
    b, n, inner = q.shape
    d = inner // heads
    qh, kh, vh = (t.reshape(t.shape[0], t.shape[1], heads, d).transpose(1, 2).double() for t in (q, k, v))
    scores = (qh @ kh.transpose(-1, -2)) / d ** 0.5
    scores = scores.masked_fill(~allowed.view(1, 1, 1, -1), float("-inf"))
    return (scores.softmax(-1) @ vh).transpose(1, 2).reshape(b, n, inner)


def mask_at(mask, height, width):
    """The [1, H, W] mask at a site, nearest, flattened row-major."""
    return F.interpolate(mask[None].float(), size=(height, width), mode="nearest").flatten()


def dense_expected_output(call: dict, op: Op, subject_mask, edit_mask):
    """What the paper's rules give for one whole recorded attention call (every row)."""
    q, k, v, heads = call["q"], call["k"], call["v"], call["heads"]
    out = dense_softmax_attention(q, k, v, torch.ones(q.shape[1], dtype=torch.bool), heads)
    if op is Op.NONE:
        return out
    subject, edit = mask_at(subject_mask, *call["shape"]), mask_at(edit_mask, *call["shape"])
    weight = edit.double()[None, :, None]
    for chunk in range(len(call["cond_or_uncond"])):
        c, s, t = 3 * chunk, 3 * chunk + 1, 3 * chunk + 2
        fg_query, bg_query = (t, t) if op is Op.SALQ else (s, c)
        fg = dense_softmax_attention(q[fg_query:fg_query + 1], k[s:s + 1], v[s:s + 1], subject > 0.5, heads)
        bg = dense_softmax_attention(q[bg_query:bg_query + 1], k[c:c + 1], v[c:c + 1], edit <= 0.5, heads)
        out[t] = (weight * fg + (1 - weight) * bg)[0]
    return out


def recording(model, calls: list):
    """A clone whose attn1 replacements (the patch's own) also record their inputs and outputs."""
    recorder = model.clone()
    for key, replacement in model.model_options["transformer_options"]["patches_replace"]["attn1"].items():
        def record(q, k, v, extra_options, replacement=replacement, key=key):
            out = replacement(q, k, v, extra_options)
            calls.append(dict(q=q.clone(), k=k.clone(), v=v.clone(), out=out.clone(), key=key,
                              step=run_step(extra_options).step, cond_or_uncond=list(extra_options["cond_or_uncond"]),
                              heads=extra_options["n_heads"], shape=tuple(extra_options["activations_shape"][-2:])))
            return out
        recorder.set_model_attn1_replace(record, *key)
    return recorder


def check_recorded_calls(calls: list, expected_op, subject_mask, edit_mask) -> set:
    """Every recorded output equals the dense formula for its (step, site) op; returns the ops seen."""
    seen = set()
    for call in calls:
        op = expected_op(call["step"], call["key"])
        seen.add(op)
        torch.testing.assert_close(call["out"].double(), dense_expected_output(call, op, subject_mask, edit_mask),
                                   atol=2e-5, rtol=1e-4,
                                   msg=lambda m, call=call, op=op: f"step {call['step']} {call['key']} {op}: {m}")
    return seen
