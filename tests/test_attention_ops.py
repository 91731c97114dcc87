"""The shipped target attention (SALQ, SAGI) against a dense masked-softmax reference written here;
schedule, tasks, layout."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from mca_ctrl.mca_attention import (PRESETS, MCASchedule, Op, Task, plan_regions, row_layout, site_mask,
                                    target_attention)

TOKENS = 64  # an 8 x 8 site


def dense_attention(q, k, v, allowed: torch.Tensor, heads: int) -> torch.Tensor:
    """Full score matrix, disallowed keys at -inf; an empty key set falls back to all keys."""
    if not bool(allowed.any()):
        allowed = torch.ones_like(allowed)
    b, n, inner = q.shape
    d = inner // heads
    qh, kh, vh = (t.reshape(b, t.shape[1], heads, d).permute(0, 2, 1, 3) for t in (q, k, v))
    scores = (qh @ kh.transpose(-1, -2)) * d ** -0.5
    scores = scores.masked_fill(~allowed.view(1, 1, 1, -1), float("-inf"))
    out = scores.softmax(-1) @ vh
    return out.permute(0, 2, 1, 3).reshape(b, n, inner)


def reference_blend(q_fg, k_fg, v_fg, q_bg, k_bg, v_bg, subject_mask, edit_mask, heads):
    rows = []
    for r in range(q_fg.shape[0]):
        ms = subject_mask if subject_mask.dim() == 1 else subject_mask[r]
        me = edit_mask if edit_mask.dim() == 1 else edit_mask[r]
        row = slice(r, r + 1)
        fg = dense_attention(q_fg[row], k_fg[row], v_fg[row], ms > 0.5, heads)
        bg = dense_attention(q_bg[row], k_bg[row], v_bg[row], me <= 0.5, heads)
        rows.append(me[None, :, None] * fg + (1 - me[None, :, None]) * bg)
    return torch.cat(rows)


def masks(kind: str, generator: torch.Generator) -> torch.Tensor:
    if kind == "zeros":
        return torch.zeros(TOKENS)
    if kind == "ones":
        return torch.ones(TOKENS)
    if kind == "half":
        return (torch.arange(TOKENS) < TOKENS // 2).float()
    if kind == "random":
        return (torch.rand(TOKENS, generator=generator) > 0.5).float()
    return torch.rand(TOKENS, generator=generator)  # soft values


KINDS = ["zeros", "ones", "half", "random", "soft"]


def mca_batch(generator, cond_or_uncond=(1, 0), heads=8, dim_head=8):
    """q, k, v of a whole MCA attention call: one [condition, subject, target] chunk per cond/uncond entry."""
    rows = 3 * len(cond_or_uncond)
    return [torch.randn(rows, TOKENS, heads * dim_head, generator=generator) for _ in range(3)]


def expected_target(op, q, k, v, rows, subject_mask, edit_mask, heads):
    """SALQ: the target's queries; SAGI: the subject's and condition's own queries (the paper's rules)."""
    c, s, t = rows.condition, rows.subject, rows.target
    if op is Op.SALQ:
        return reference_blend(q[t], k[s], v[s], q[t], k[c], v[c], subject_mask, edit_mask, heads)
    return reference_blend(q[s], k[s], v[s], q[c], k[c], v[c], subject_mask, edit_mask, heads)


@pytest.mark.parametrize("heads", [1, 8])
@pytest.mark.parametrize("subject_kind", KINDS)
@pytest.mark.parametrize("edit_kind", KINDS)
def test_target_attention_matches_dense_reference(heads, subject_kind, edit_kind):
    generator = torch.Generator().manual_seed(heads * 100 + KINDS.index(subject_kind) * 10 + KINDS.index(edit_kind))
    q, k, v = mca_batch(generator, heads=heads)
    subject_mask, edit_mask = masks(subject_kind, generator), masks(edit_kind, generator)
    rows = row_layout(q.shape[0], [1, 0])
    plan = plan_regions(subject_mask, edit_mask)
    for op in (Op.SALQ, Op.SAGI):
        out = target_attention(op, q, k, v, rows, plan, heads)
        assert out.shape == (2, TOKENS, q.shape[-1]) and torch.isfinite(out).all()
        torch.testing.assert_close(out, expected_target(op, q, k, v, rows, subject_mask, edit_mask, heads),
                                   atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cond_or_uncond", [[0], [1], [0, 1], [1, 0]])
def test_target_attention_follows_the_chunk_order(cond_or_uncond):
    generator = torch.Generator().manual_seed(len(cond_or_uncond) * 10 + cond_or_uncond[0])
    q, k, v = mca_batch(generator, cond_or_uncond)
    subject_mask, edit_mask = masks("random", generator), masks("soft", generator)
    rows = row_layout(q.shape[0], cond_or_uncond)
    plan = plan_regions(subject_mask, edit_mask)
    for op in (Op.SALQ, Op.SAGI):
        torch.testing.assert_close(target_attention(op, q, k, v, rows, plan, 8),
                                   expected_target(op, q, k, v, rows, subject_mask, edit_mask, 8),
                                   atol=1e-5, rtol=1e-5)


def test_salq_and_sagi_differ_and_ordinary_is_refused():
    generator = torch.Generator().manual_seed(8)
    q, k, v = mca_batch(generator, [0])
    rows = row_layout(3, [0])
    plan = plan_regions(masks("half", generator), masks("soft", generator))
    salq = target_attention(Op.SALQ, q, k, v, rows, plan, 8)
    sagi = target_attention(Op.SAGI, q, k, v, rows, plan, 8)
    assert (salq - sagi).abs().max() > 1e-3
    with pytest.raises(ValueError, match="SALQ or Op.SAGI"):
        target_attention(Op.NONE, q, k, v, rows, plan, 8)


def test_empty_subject_keys_fall_back_to_the_subject_rows_ordinary_attention():
    generator = torch.Generator().manual_seed(3)
    q, k, v = mca_batch(generator, [0])
    rows = row_layout(3, [0])
    plan = plan_regions(torch.zeros(TOKENS), torch.ones(TOKENS))  # everything is foreground, no subject key
    out = target_attention(Op.SALQ, q, k, v, rows, plan, 8)
    assert torch.isfinite(out).all()
    plain = dense_attention(q[2:3], k[1:2], v[1:2], torch.ones(TOKENS, dtype=torch.bool), 8)
    torch.testing.assert_close(out, plain, atol=1e-5, rtol=1e-5)


def test_mask_vanishing_at_a_coarse_site_stays_finite():
    mask = torch.zeros(64, 64)
    mask[10, 10] = 1.0  # one pixel: gone after a nearest resize to 2 x 2
    coarse = site_mask(mask, 2, 2)
    assert coarse.sum() == 0
    generator = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(3, 4, 16, generator=generator) for _ in range(3))
    out = target_attention(Op.SALQ, q, k, v, row_layout(3, [0]), plan_regions(coarse, torch.ones(4)), 2)
    assert torch.isfinite(out).all()


def test_site_mask_is_nearest_and_row_major():
    mask = torch.zeros(4, 4)
    mask[0, 2:] = 1.0  # top-right corner
    assert site_mask(mask, 2, 2).tolist() == [0.0, 1.0, 0.0, 0.0]


def test_swap_preset_at_50_steps_reproduces_the_official_schedule():
    table = replace(PRESETS[Task.SWAP].schedule, salq_first_site=9).table(50, 16)  # SD1.5's preset site: see test_families
    for step in range(50):
        for site in range(16):
            if step < 5:
                expected = Op.SAGI  # E_GI = int(50 * 0.1)
            elif site >= 9:
                expected = Op.SALQ  # S_LQ = 4, but SAGI takes precedence at step 4
            else:
                expected = Op.NONE
            assert table[step][site] is expected, (step, site)


def test_generation_preset_runs_salq_at_every_layer_after_sagi():
    table = PRESETS[Task.GENERATION].schedule.table(20, 16)
    assert all(op is Op.SAGI for op in table[0] + table[1])
    assert all(op is Op.SALQ for row in table[2:] for op in row)


def test_every_task_states_its_blend_and_inputs():
    blends = {task: preset.local_blend for task, preset in PRESETS.items()}
    assert blends == {Task.SWAP: True, Task.ADD: True, Task.GENERATION: False}
    assert all(preset.task is task for task, preset in PRESETS.items())
    assert {t for t, p in PRESETS.items() if p.needs_condition_image} == {Task.SWAP, Task.ADD}
    assert {t for t, p in PRESETS.items() if p.needs_edit_mask} == {Task.SWAP, Task.ADD}
    from mca_ctrl.mca_attention.tasks import TaskPreset

    with pytest.raises(TypeError):  # a preset must say whether it blends: there is no default to lose
        TaskPreset(Task.SWAP, PRESETS[Task.SWAP].schedule, needs_condition_image=True, needs_edit_mask=True)


def test_schedule_fractions_follow_the_step_count():
    schedule = MCASchedule(sagi_start=0.0, sagi_end=0.4, salq_start=0.2, salq_end=0.8, salq_first_site=12)
    sagi_steps, salq_steps = schedule.step_ranges(10)
    assert list(sagi_steps) == [0, 1, 2, 3] and list(salq_steps) == [2, 3, 4, 5, 6, 7]
    assert schedule.op_at(3, 0, 10) is Op.SAGI
    assert schedule.op_at(5, 11, 10) is Op.NONE and schedule.op_at(5, 12, 10) is Op.SALQ
    assert schedule.op_at(8, 15, 10) is Op.NONE
    with pytest.raises(ValueError, match="fraction"):
        MCASchedule(sagi_end=1.5)


@pytest.mark.parametrize("op", ["sagi", "salq"])
def test_schedule_refuses_a_start_after_its_end(op):
    with pytest.raises(ValueError, match=f"{op}_start \\(0.5\\) is after {op}_end \\(0.2\\)"):
        MCASchedule(**{f"{op}_start": 0.5, f"{op}_end": 0.2})
    empty = MCASchedule(**{f"{op}_start": 0.3, f"{op}_end": 0.3}, salq_first_site=0)  # equal: off, allowed
    assert not any(o is Op(op) for row in empty.table(10, 16) for o in row)


def test_schedule_table_prints_one_line_per_step():
    from mca_ctrl.mca_attention.schedule import format_table

    text = format_table(replace(PRESETS[Task.SWAP].schedule, salq_first_site=9).table(10, 16))
    lines = text.splitlines()
    assert len(lines) == 10 and lines[0] == "step 0: " + "G" * 16
    assert lines[9] == "step 9: " + "." * 9 + "L" * 7


def test_row_layout_follows_cond_or_uncond():
    rows = row_layout(6, [1, 0])
    assert rows.condition.tolist() == [0, 3] and rows.subject.tolist() == [1, 4] and rows.target.tolist() == [2, 5]
    assert rows.keep.tolist() == [0, 1, 3, 4]
    assert row_layout(3, [0]).target.tolist() == [2]
    with pytest.raises(ValueError, match="3-row batch"):
        row_layout(4, [1, 0])


def test_cross_attention_map_matches_a_per_head_reference():
    from mca_ctrl.mca_attention.cross_attention_mask import token_attention_map

    generator = torch.Generator().manual_seed(5)
    heads, d = 4, 8
    q, k = torch.randn(2, 16, heads * d, generator=generator), torch.randn(2, 77, heads * d, generator=generator)
    got = token_attention_map(q, k, heads, [3, 4])
    expected = torch.zeros(2, 16)
    for h in range(heads):
        qh, kh = q[..., h * d:(h + 1) * d], k[..., h * d:(h + 1) * d]
        probs = torch.softmax(qh @ kh.transpose(1, 2) / d ** 0.5, dim=-1)
        expected += (probs[..., 3] + probs[..., 4]) / heads
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)


def test_mask_from_maps_normalises_and_sets_the_top_30_percent():
    from mca_ctrl.mca_attention.cross_attention_mask import mask_from_maps

    maps = [torch.arange(10.0), torch.arange(10.0) + 10]
    mask = mask_from_maps(maps, 2, 5).flatten()
    assert mask.shape == (10,)
    assert mask[7:].tolist() == [1.0, 1.0, 1.0]  # top 30% of 10 positions
    torch.testing.assert_close(mask[:7], torch.arange(7.0) / 9)  # min-max normalised, soft below the top


def test_find_token_positions():
    from mca_ctrl.mca_attention.cross_attention_mask import find_token_positions

    assert find_token_positions([49406, 320, 1929, 530, 320, 1929, 49407], [1929]) == [2, 5]
    assert find_token_positions([49406, 320, 11, 12, 49407], [11, 12]) == [2, 3]
    assert find_token_positions([1, 2, 3], [4]) == []
