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


def target_rows(call: dict, shape=None):
    """(condition, subject, target, target index) rows of every chunk and target of a recorded call.

    ``shape`` (``layout.BatchShape``; None = the official 3 rows): ``conditions`` condition rows, the
    subject, then the targets, each reading the condition row ``target_condition[j]``."""
    conditions, target_condition = (1, (0,)) if shape is None else (shape.conditions, shape.target_condition)
    per_chunk = conditions + 1 + len(target_condition)
    for chunk in range(len(call["cond_or_uncond"])):
        base = chunk * per_chunk
        for j, c in enumerate(target_condition):
            yield base + c, base + conditions, base + conditions + 1 + j, j


def _op_of(ops, j: int) -> Op:
    return ops if isinstance(ops, Op) else ops[j]


def dense_expected_output(call: dict, ops, subject_mask, edit_mask, shape=None):
    """What the paper's rules give for one whole recorded attention call (every row).

    ``ops``: one Op for every target, or a tuple with each target's own."""
    q, k, v, heads = call["q"], call["k"], call["v"], call["heads"]
    out = dense_softmax_attention(q, k, v, torch.ones(q.shape[1], dtype=torch.bool), heads)
    subject, edit = mask_at(subject_mask, *call["shape"]), mask_at(edit_mask, *call["shape"])
    weight = edit.double()[None, :, None]
    for c, s, t, j in target_rows(call, shape):
        op = _op_of(ops, j)
        if op is Op.NONE:
            continue
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


def check_recorded_calls(calls: list, expected_op, subject_mask, edit_mask, shape=None) -> set:
    """Every recorded output equals the dense formula for its (step, site) op(s); returns the ops seen."""
    seen = set()
    for call in calls:
        op = expected_op(call["step"], call["key"])
        seen.update({op} if isinstance(op, Op) else set(op))
        torch.testing.assert_close(call["out"].double(),
                                   dense_expected_output(call, op, subject_mask, edit_mask, shape),
                                   atol=2e-5, rtol=1e-4,
                                   msg=lambda m, call=call, op=op: f"step {call['step']} {call['key']} {op}: {m}")
    return seen


# --- joint attention (Flux-style MMDiT): each row's sequence is [text tokens; image tokens] ----------------

def _heads_first_dense(q, k, v, allowed):
    """``[1, H, Lq, d]`` queries over ``[1, H, Lk, d]`` keys where ``allowed`` [Lk]; none allowed -> all."""
    if not bool(allowed.any()):
        allowed = torch.ones_like(allowed)
    scores = (q.double() @ k.double().transpose(-1, -2)) / q.shape[-1] ** 0.5
    scores = scores.masked_fill(~allowed.view(1, 1, 1, -1), float("-inf"))
    return scores.softmax(-1) @ v.double()


def rope_rotation(keys, shift, axes_dim, theta):
    """RoPE written out: each (even, odd) pair of axis ``a``'s channels turned by ``shift[a] * theta^(-2i/dim_a)``."""
    out, start = keys.double().clone(), 0
    for axis, dim in enumerate(axes_dim):
        pairs = torch.arange(dim // 2, dtype=torch.float64)
        angle = shift[axis] * theta ** (-2 * pairs / dim)
        even, odd = keys[..., start:start + dim:2].double(), keys[..., start + 1:start + dim:2].double()
        out[..., start:start + dim:2] = even * angle.cos() - odd * angle.sin()
        out[..., start + 1:start + dim:2] = even * angle.sin() + odd * angle.cos()
        start += dim
    return out


def centre(flat, height, width):
    grid = (flat > 0.5).reshape(height, width)
    rows, columns = grid.nonzero(as_tuple=True)
    return rows.double().mean(), columns.double().mean()


def own_text(call: dict, lengths: dict | None, row: int) -> torch.Tensor:
    """``[text]`` bool: the text tokens that are row ``row``'s own prompt (``lengths``: chunk kind (0 cond, 1
    uncond) -> each row's prompt length; None: every text token); with ``call["padded"]`` (the length the prompts
    were padded to, below the call's text) and ``call["multiple"]``, the model's own pad tokens after it, as many as
    the row's prompt alone gets (up to the next multiple of its length)."""
    text = call["text_tokens"]
    if lengths is None:
        return torch.ones(text, dtype=torch.bool)
    per_chunk = len(lengths[0])
    own = lengths[call["cond_or_uncond"][row // per_chunk]][row % per_chunk]
    padded, multiple = call.get("padded", text), call.get("multiple", 1)
    pads = -(-own // multiple) * multiple - own
    positions = torch.arange(text)
    return (positions < own) | ((positions >= padded) & (positions < padded + pads))


def dense_joint_expected(call: dict, ops, subject_mask, edit_mask, rope=None, shape=None, lengths=None):
    """The paper's rules carried over to joint attention, as the issue states them, for one recorded call.

    Output ``[B, L, H*d]``. Every row and the target's text queries: ordinary attention over the row's own
    sequence. With ``lengths`` (prompts padded to one length) a row's padded text keys are in no key set. Target image queries: SALQ over [target text; subject image in subject_mask] and [target text;
    condition image outside edit_mask]; SAGI the subject's / condition's own image queries over [own text;
    own image keys in the same regions]; blended by the edit mask. An empty image key set means all image keys.
    """
    q, k, v, text = call["q"], call["k"], call["v"], call["text_tokens"]
    batch, heads, length, dim = q.shape
    tail = call.get("tail", 0)  # pad tokens after the image grid (Z-Image): context of their own row, like its text
    grid_end = length - tail
    moved = k  # the subject keys SALQ sees: moved onto the edit region when ``rope`` (axes_dim, theta) is given
    if rope is not None:
        grid = call["grid"]
        subject_centre = centre(mask_at(subject_mask, *grid), *grid)
        edit_centre = centre(mask_at(edit_mask, *grid), *grid)
        shift = (0.0, edit_centre[0] - subject_centre[0], edit_centre[1] - subject_centre[1],
                 *(0.0,) * (len(rope[0]) - 3))  # Flux.2's fourth axis (the text's) stays
        moved = k.double().clone()
        for _, s, _, _ in target_rows(call, shape):
            moved[s, :, text:grid_end] = rope_rotation(k[s, :, text:grid_end], shift, *rope)
    image = torch.ones(length - text, dtype=torch.bool)
    out = torch.cat([_heads_first_dense(q[r:r + 1], k[r:r + 1], v[r:r + 1], torch.cat([own_text(call, lengths, r),
                                                                                        image]))
                     for r in range(batch)])
    grid = call["grid"]
    subject, edit = mask_at(subject_mask, *grid), mask_at(edit_mask, *grid)
    weight = edit.double().view(1, 1, -1, 1)
    for c, s, t, j in target_rows(call, shape):
        op = _op_of(ops, j)
        if op is Op.NONE:
            continue
        image_keys = moved if op is Op.SALQ else k

        def region(query_row, text_row, image_row, allowed_image, image_keys=image_keys):
            keys = torch.cat([k[text_row:text_row + 1, :, :text].double(),
                              k[text_row:text_row + 1, :, grid_end:].double(),
                              image_keys[image_row:image_row + 1, :, text:grid_end].double()], 2)
            values = torch.cat([v[text_row:text_row + 1, :, :text], v[text_row:text_row + 1, :, grid_end:],
                                v[image_row:image_row + 1, :, text:grid_end]], 2)
            allowed = allowed_image if bool(allowed_image.any()) else torch.ones_like(allowed_image)
            return _heads_first_dense(q[query_row:query_row + 1, :, text:grid_end], keys, values,
                                      torch.cat([own_text(call, lengths, text_row), torch.ones(tail, dtype=torch.bool),
                                                 allowed]))

        if op is Op.SALQ:
            fg, bg = region(t, t, s, subject > 0.5), region(t, t, c, edit <= 0.5)
        else:
            fg, bg = region(s, s, s, subject > 0.5), region(c, c, c, edit <= 0.5)
        out[t, :, text:grid_end] = (weight * fg + (1 - weight) * bg)[0]
    return out.transpose(1, 2).reshape(batch, length, heads * dim)


def recording_override(model, calls: list, token_grid):
    """A clone whose attention override (the patch's own) also records what it receives and returns."""
    recorder = model.clone()
    options = dict(recorder.model_options["transformer_options"])
    override = options["optimized_attention_override"]

    def record(func, *args, **kwargs):
        out = override(func, *args, **kwargs)
        extra = kwargs["transformer_options"]
        current = run_step(extra)
        q, k, v = args[:3]
        grid = token_grid(current.run.latent_size)
        calls.append(dict(q=q.clone(), k=k.clone(), v=v.clone(), out=out.clone(), step=current.step,
                          key=(extra["block_type"], extra["block_index"]), cond_or_uncond=list(extra["cond_or_uncond"]),
                          grid=grid, text_tokens=q.shape[2] - grid[0] * grid[1]))
        return out

    options["optimized_attention_override"] = record
    recorder.model_options["transformer_options"] = options
    return recorder


def check_joint_calls(calls: list, expected_op, subject_mask, edit_mask, rope=None, shape=None,
                      lengths=None) -> set:
    """Every recorded joint-attention output equals the dense formula for its (step, site) op."""
    seen = set()
    for call in calls:
        op = expected_op(call["step"], call["key"])
        seen.update({op} if isinstance(op, Op) else set(op))
        expected = dense_joint_expected(call, op, subject_mask, edit_mask, rope, shape, lengths)
        torch.testing.assert_close(call["out"].double(), expected,
                                   atol=2e-5, rtol=1e-4,
                                   msg=lambda m, call=call, op=op: f"step {call['step']} {call['key']} {op}: {m}")
    return seen
