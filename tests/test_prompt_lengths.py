"""Prompts of any length (issue 21) on Chroma, whose T5 pads nothing: rows whose prompts encode to different token
counts share one batch, padded after their own tokens, and the padding takes part in no softmax of its row.

Chroma runs in float32 (newer ComfyUI's RoPE kernel takes no float64); batches of other sizes and padded sequences
round differently on the CPU, so rows are compared within ``TOLERANCE`` of the latent's scale (measured in
``test_padding_changes_no_row``: see the README, "Prompts of any length").
"""
from __future__ import annotations

import pytest
import torch

import comfy.sample
import comfy.samplers
import random_models
from comfy_host import split_cond_uncond
from dense_reference import check_joint_calls, recording_override
from random_models import square_mask, tiny_flux_prompt
from prompt_helpers import stacked
from mca_ctrl.mca_attention import engine
from mca_ctrl.mca_attention.adapters.mmdit import token_grid
from mca_ctrl.mca_attention.comfy_patch import mca_state, patch_model
from mca_ctrl.mca_attention.cross_attention_mask import token_attention_map
from mca_ctrl.mca_attention.prompts import LABEL_KEY
from mca_ctrl.mca_attention.sampling import RowControl, mca_sample_loop
from mca_ctrl.mca_attention.schedule import MCASchedule, Op
from mca_ctrl.mca_attention.tasks import PRESETS, Task
from mca_ctrl.mca_attention.text import TextFacts
from mca_ctrl.mca_attention import invert
from mca_ctrl.nodes import sampler

STEPS = 4
SUBJECT_MASK, EDIT_MASK = square_mask(64, 16, 48), square_mask(64, 8, 40)
# SAGI at step 0, SALQ at steps 1-3 from site 2 on: every op at some step and site.
SCHEDULE = MCASchedule(sagi_start=0.0, sagi_end=0.25, salq_start=0.25, salq_end=1.0, salq_first_site=2)
SITE_OF = {("double", 0): 0, ("double", 1): 1, **{("single", i): 2 + i for i in range(3)}}
TOLERANCE = 1e-5  # of the latent's scale
LENGTHS = dict(condition=24, subject=20, target=16, negative=12)  # four different token counts


def prompt(seed: int, tokens: int) -> list:
    return tiny_flux_prompt(seed, tokens=tokens, guidance=None, pooled=False)  # as Chroma's T5 encode gives it


def labelled(*prompts: list) -> list:
    """Several target prompts as MCA Target Prompts gives them."""
    return [[tensor, {**options, LABEL_KEY: f"target {i}"}] for i, p in enumerate(prompts) for tensor, options in p]


def inverted(model, seed: int) -> dict:
    latent = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(seed))
    sigmas = invert.schedule_sigmas(model, STEPS, None)
    return invert.invert_latent(model, latent, prompt(0, 8), prompt(0, 8), 1.0, sigmas)


@pytest.fixture(scope="module")
def chroma(pack):
    model = random_models.tiny_chroma_model(seed=0)
    return model, inverted(model, 1), inverted(model, 2)


def expected_op(step, key):
    return SCHEDULE.op_at(step, SITE_OF[key], STEPS)


@pytest.mark.parametrize("mode", ["cfg batched", "cfg split", "cfg 1"])
@pytest.mark.parametrize("task", [Task.SWAP, Task.GENERATION])
def test_recorded_calls_leave_each_rows_padding_out_of_every_softmax(chroma, monkeypatch, task, mode):
    """Condition, subject, target and negative prompts of four lengths: every attention call of a real run equals
    the dense joint formula with each row's padded text keys removed from every key set (ordinary rows, the
    target's text queries, SALQ and SAGI). Generation here with a layout mask (the derived one: below)."""
    model, subject, condition = chroma
    if mode == "cfg split":
        split_cond_uncond(monkeypatch)
    mca = patch_model(model, PRESETS[task], SCHEDULE, SUBJECT_MASK, EDIT_MASK)
    calls: list = []
    cfg = 1.0 if mode == "cfg 1" else 3.0
    start = {"samples": torch.zeros(1, 16, 8, 8)} if task is Task.GENERATION else condition
    engine.mca_sample(recording_override(mca, calls, lambda size: token_grid(size, 2)),
                      prompt(1, LENGTHS["condition"]), prompt(2, LENGTHS["subject"]), prompt(3, LENGTHS["target"]),
                      prompt(9, LENGTHS["negative"]), subject, start, 7, cfg)
    assert {call["text_tokens"] for call in calls} == {24}, "every row padded to the longest prompt"
    expected_chunks = {"cfg batched": {2}, "cfg split": {1}, "cfg 1": {1}}[mode]
    assert {len(call["cond_or_uncond"]) for call in calls} == expected_chunks
    assert {kind for call in calls for kind in call["cond_or_uncond"]} == ({0} if cfg == 1.0 else {0, 1})
    lengths = {0: (LENGTHS["condition"], LENGTHS["subject"], LENGTHS["target"]), 1: (LENGTHS["negative"],) * 3}
    seen = check_joint_calls(calls, expected_op, SUBJECT_MASK, EDIT_MASK, lengths=lengths)
    assert seen == {Op.SAGI, Op.SALQ, Op.NONE}


@pytest.mark.parametrize("mode", ["cfg batched", "cfg split", "cfg 1"])
@pytest.mark.parametrize("task", [Task.SWAP, Task.GENERATION])
def test_padding_changes_no_row(chroma, monkeypatch, task, mode):
    """The rows of a batch that needs no padding (condition, subject and target prompts of 16 tokens, negative of
    12: ComfyUI runs that negative in its own call) equal the same rows when a second target prompt of 28 tokens
    pads every row and the negative to 28 (and cond and uncond share a forward again)."""
    model, subject, condition = chroma
    if mode == "cfg split":
        split_cond_uncond(monkeypatch)
    generation = task is Task.GENERATION
    mca = patch_model(model, PRESETS[task], SCHEDULE, SUBJECT_MASK, EDIT_MASK)  # generation with a layout mask
    state = mca_state(mca)
    cfg = 1.0 if mode == "cfg 1" else 3.0
    start = {"samples": torch.zeros(1, 16, 8, 8)} if generation else condition
    rows = (prompt(1, 16), prompt(2, 16))
    state.trace = []
    alone = engine.mca_sample(mca, *rows, prompt(3, 16), prompt(9, 12), subject, start, 7, cfg)
    plain_chunks = {chunks for *_, chunks in state.trace}
    state.trace = []
    padded = engine.mca_sample(mca, *rows, labelled(prompt(3, 16), prompt(4, 28)), prompt(9, 12), subject, start, 7,
                               cfg)
    padded_chunks = {chunks for *_, chunks in state.trace}
    assert plain_chunks == {1}, "the unpadded batch: the 12-token negative runs in its own call"
    assert padded_chunks == ({2} if mode == "cfg batched" else {1})
    assert {op for *_, ops, _ in state.trace for op in ops} >= {Op.SAGI, Op.SALQ}
    scale = float(alone.rows.abs().max())
    shared = alone.shape.rows  # condition, subject, target 1
    torch.testing.assert_close(padded.rows[:shared], alone.rows, atol=TOLERANCE * scale, rtol=0)
    assert float((padded.rows[shared] - padded.rows[shared - 1]).abs().max()) > 100 * TOLERANCE * scale


def test_a_padded_condition_row_equals_its_prompt_sampled_alone(chroma):
    """Generation: the condition row keeps ordinary attention, so with its 24-token prompt padded to the target's
    30 it equals the plain model sampling that prompt alone (no MCA, no padding) from the same noise."""
    model, subject, _ = chroma
    mca = patch_model(model, PRESETS[Task.GENERATION], SCHEDULE, SUBJECT_MASK, EDIT_MASK)
    cfg, seed = 3.0, 7
    out = engine.mca_sample(mca, prompt(1, 24), prompt(2, 20), prompt(3, 30), prompt(9, 12), subject,
                            {"samples": torch.zeros(1, 16, 8, 8)}, seed, cfg)
    noise = comfy.sample.prepare_noise(torch.zeros(1, 16, 8, 8), seed).repeat(3, 1, 1, 1)
    loop = comfy.samplers.KSAMPLER(mca_sample_loop, extra_options={"control": RowControl()})
    alone = comfy.sample.sample_custom(model, noise, cfg, loop, subject["mca_trajectory"]["sigmas"].float(),
                                       stacked(prompt(1, 24), prompt(1, 24), prompt(1, 24)).positive, prompt(9, 12),
                                       torch.zeros_like(noise), disable_pbar=True, seed=seed)
    scale = float(alone.abs().max())
    torch.testing.assert_close(out.rows[0], alone[0], atol=TOLERANCE * scale, rtol=0)


def test_the_subject_word_map_leaves_padding_out(pack):
    """Generation's probe: each target's attention to the subject words over its own text keys only."""
    generator = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 6, 8, generator=generator), torch.randn(2, 10, 8, generator=generator)
    own = torch.tensor([[True] * 7 + [False] * 3, [True] * 10])
    padded = token_attention_map(q, k, 2, [1, 2], own)
    for row, length in enumerate((7, 10)):
        alone = token_attention_map(q[row:row + 1], k[row:row + 1, :length], 2, [1, 2])
        torch.testing.assert_close(padded[row:row + 1], alone)


@pytest.mark.parametrize("task", [Task.SWAP, Task.ADD, Task.GENERATION])
def test_chroma_runs_every_task_with_prompts_of_different_lengths_through_the_nodes(chroma, task):
    """The MCA Sampler node with four prompt lengths: swap and add keep the condition outside the edit mask and
    change the target inside it; generation derives its region from the subject word's tokens."""
    model, subject, condition = chroma
    generation = task is Task.GENERATION
    mca = patch_model(model, PRESETS[task], SCHEDULE, SUBJECT_MASK, None if generation else EDIT_MASK,
                      subject=[1, 2] if generation else None)
    start = {"samples": torch.zeros(1, 16, 8, 8)} if generation else condition
    target, rows, edit, *_ = sampler.MCASampler.execute(
        mca, prompt(1, 24), prompt(2, 20), prompt(3, 16), prompt(9, 12), subject, start, 7, 3.0, True)
    assert target["samples"].shape == (1, 16, 8, 8) and bool(torch.isfinite(rows["samples"]).all())
    if generation:
        assert float(edit.max()) == 1.0 and float(edit.min()) < 1.0, "a region derived from the subject word"
        return
    outside = square_mask(8, 1, 5)[0] < 0.5  # the latent cells outside the edit mask (8..40 px of 64)
    torch.testing.assert_close(target["samples"][0][:, outside], rows["samples"][0][:, outside])
    assert float((target["samples"][0] - rows["samples"][0]).abs().max()) > 1e-3, "the target differs inside"


def test_a_call_whose_batch_or_text_length_is_not_the_padded_one_is_refused(pack):
    """A node between the sampler and the model that changes the rows or the prompts' length is named, never
    masked wrongly."""
    from mca_ctrl.mca_attention.adapters.hook import Call, TokenLayout, text_keys
    from mca_ctrl.mca_attention.run import MCARun, RunCache, RunStep, TextSpan

    run = MCARun(total_steps=1, text=TextSpan(24, (24, 20, 16), (12, 12, 12)))
    current, cache = RunStep(run, 0), RunCache(ops=[], cross=None)

    def call(rows, text):
        q = torch.zeros(rows, 2, text + 16, 4)
        return Call(q, q, q, 2, [1, 0], TokenLayout(text, (4, 4)))

    t5 = TextFacts(repeats_short_prompts=False)
    assert text_keys(cache, current, call(6, 24), t5).sum(1).tolist() == [12, 12, 12, 24, 20, 16]
    for rows, text in ((6, 30), (4, 24)):
        with pytest.raises(ValueError, match="changed the batch or the prompts' length"):
            text_keys(cache, current, call(rows, text), t5)
