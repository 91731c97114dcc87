"""The MCA attention patch on a tiny SD1.5-architecture model, sampled through ComfyUI by the MCA loop."""
from __future__ import annotations

import logging

import pytest
import torch

import comfy.sample
import comfy.samplers
from comfy_host import split_cond_uncond
from mca_ctrl.mca_attention.comfy_patch import mca_state, patch_model
from mca_ctrl.mca_attention.unet_sites import find_attention_sites
from dense_reference import check_recorded_calls, recording
from mca_ctrl.mca_attention.run import MCARun
from mca_ctrl.mca_attention.sampling import RowControl, mca_sample_loop
from mca_ctrl.mca_attention.schedule import MCASchedule, Op
from mca_ctrl.mca_attention.tasks import PRESETS, Task
from random_models import square_mask, tiny_prompt

STEPS = 5
# 5 steps: SAGI at steps 0-1 (every site), SALQ at steps 2-4 on layers 9-15.
SCHEDULE_KW = dict(sagi_start=0.0, sagi_end=0.4, salq_start=0.4, salq_end=1.0, salq_first_site=9)
EXPECTED_SAGI = {(step, site) for step in (0, 1) for site in range(16)}
EXPECTED_SALQ = {(step, site) for step in (2, 3, 4) for site in range(9, 16)}
SITE_KEYS = [("input", n, 0) for n in (1, 2, 4, 5, 7, 8)] + [("middle", 0, 0)] + [("output", n, 0) for n in range(3, 12)]
SUBJECT_MASK, EDIT_MASK = square_mask(64, 16, 48), square_mask(64, 8, 40)


def row_prompts(seeds=(1, 2, 3)):
    return [[torch.cat([tiny_prompt(s)[0][0] for s in seeds]), {}]]


def sample_rows(model, cfg=7.0, record=None, seed=0, prompts=None, run=None):
    """The 3-row batch sampled by the MCA loop (no pinned rows), inside ComfyUI's sampler."""
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "ddim_uniform", STEPS)
    latent = torch.zeros(3, 4, 8, 8)
    noise = comfy.sample.prepare_noise(latent, seed)
    sampler = comfy.samplers.KSAMPLER(mca_sample_loop, extra_options={"control": RowControl(), "run": run})
    callback = None if record is None else (lambda i, denoised, x, total: record.append(x.clone()))
    return comfy.sample.sample_custom(model, noise, cfg, sampler, sigmas, prompts or row_prompts(), tiny_prompt(9),
                                      latent, callback=callback, disable_pbar=True, seed=seed)


def patched(model, task=Task.SWAP, **schedule_kw):
    return patch_model(model, PRESETS[task], MCASchedule(**(schedule_kw or SCHEDULE_KW)), SUBJECT_MASK, EDIT_MASK)


def fired(trace, op):
    return {(step, site) for step, site, (applied,), _ in trace if applied is Op(op)}


def test_finds_all_16_sites_in_unet_order(tiny_model):
    sites = find_attention_sites(tiny_model.get_model_object("diffusion_model"))
    assert [s.key for s in sites] == SITE_KEYS
    assert [s.index for s in sites] == list(range(16))


# --- the shipped replacement against the dense formula, on the q/k/v a real run hands it -------------------

@pytest.mark.parametrize("split", [False, True])
def test_patched_replacement_matches_the_dense_formula_on_recorded_calls(tiny_model, split, monkeypatch):
    if split:
        split_cond_uncond(monkeypatch)
    calls = []
    sample_rows(recording(patched(tiny_model), calls))
    assert len(calls) == STEPS * 16 * (2 if split else 1)

    def expected_op(step, key):
        site = SITE_KEYS.index(key)
        return Op.SAGI if (step, site) in EXPECTED_SAGI else Op.SALQ if (step, site) in EXPECTED_SALQ else Op.NONE

    assert check_recorded_calls(calls, expected_op, SUBJECT_MASK, EDIT_MASK) == {Op.SAGI, Op.SALQ, Op.NONE}


# --- schedule, rows, runs ----------------------------------------------------------------------------------

def test_never_firing_schedule_equals_the_unpatched_model_exactly(tiny_model):
    plain = sample_rows(tiny_model)
    silent = patched(tiny_model, sagi_end=0.0, salq_start=0.0, salq_end=0.0)
    assert torch.equal(sample_rows(silent), plain)


def test_ops_fire_exactly_at_their_step_layer_pairs_and_keep_rows_0_and_1(tiny_model):
    plain_steps, mca_steps = [], []
    plain = sample_rows(tiny_model, record=plain_steps)
    model = patched(tiny_model)
    mca_state(model).trace = []
    out = sample_rows(model, record=mca_steps)
    trace = mca_state(model).trace
    assert fired(trace, "sagi") == EXPECTED_SAGI
    assert fired(trace, "salq") == EXPECTED_SALQ
    assert {(step, site) for step, site, _, _ in trace} == {(s, n) for s in range(STEPS) for n in range(16)}
    for before, after in zip(plain_steps, mca_steps):
        torch.testing.assert_close(after[:2], before[:2], atol=1e-6, rtol=0)
    torch.testing.assert_close(out[:2], plain[:2], atol=1e-6, rtol=0)
    assert (out[2] - plain[2]).abs().max() > 1e-3, "the target row should change"
    assert torch.isfinite(out).all()


def test_split_cond_uncond_equals_batched(tiny_model, monkeypatch):
    model = patched(tiny_model)
    batched = sample_rows(model)
    split_cond_uncond(monkeypatch)
    mca_state(model).trace = []
    split = sample_rows(model)
    trace = mca_state(model).trace
    mca_state(model).trace = None
    assert {chunks for *_, chunks in trace} == {1}, "ComfyUI should have run cond and uncond separately"
    # batch size changes CPU kernel blocking: the unpatched model differs by ~3e-6 relative too
    torch.testing.assert_close(split, batched, atol=2e-5 * float(batched.abs().max()), rtol=0)


def test_cfg_1_runs_without_uncond(tiny_model):
    model = patched(tiny_model)
    mca_state(model).trace = []
    out = sample_rows(model, cfg=1.0)
    trace = mca_state(model).trace
    mca_state(model).trace = None
    assert {chunks for *_, chunks in trace} == {1}
    assert fired(trace, "sagi") == EXPECTED_SAGI and fired(trace, "salq") == EXPECTED_SALQ
    assert torch.isfinite(out).all()


def test_outside_the_mca_loop_the_patch_does_nothing_and_says_so(tiny_model, caplog):
    latent = torch.zeros(3, 4, 8, 8)
    noise = comfy.sample.prepare_noise(latent, 0)

    def ksampler(model):
        return comfy.sample.sample(model, noise, STEPS, 7.0, "ddim", "ddim_uniform", row_prompts(), tiny_prompt(9),
                                   latent, disable_pbar=True, seed=0)

    model = patched(tiny_model)
    with caplog.at_level(logging.WARNING):
        out = ksampler(model)
        ksampler(model)
    assert torch.equal(out, ksampler(tiny_model))
    warnings = [r for r in caplog.records if "outside the MCA Sampler" in r.getMessage()]
    assert len(warnings) == 1, "one warning per patched model, not one per call"


def test_input_model_is_untouched(tiny_model):
    before = sample_rows(tiny_model)
    options_before = repr(tiny_model.model_options)
    sample_rows(patched(tiny_model))
    assert repr(tiny_model.model_options) == options_before
    assert "patches_replace" not in tiny_model.model_options.get("transformer_options", {})
    assert torch.equal(sample_rows(tiny_model), before)


def test_the_loop_never_writes_into_the_models_options(tiny_model):
    model = patched(tiny_model)
    options = model.model_options["transformer_options"]
    keys_before = set(options)
    sample_rows(model)
    assert set(model.model_options["transformer_options"]) == keys_before and "mca_run" not in options


def test_composes_with_an_attn2_patch_like_ipadapter(tiny_model):
    from comfy.ldm.modules.attention import optimized_attention

    calls = []

    def halve_cross_attention(q, k, v, extra_options):
        calls.append(extra_options["block"])
        return 0.5 * optimized_attention(q, k, v, extra_options["n_heads"])

    with_adapter = tiny_model.clone()
    for key in SITE_KEYS:
        with_adapter.set_model_attn2_replace(halve_cross_attention, *key)
    mca_only = sample_rows(patched(tiny_model))
    both = patched(with_adapter)
    mca_state(both).trace = []
    out = sample_rows(both)
    assert calls, "the attn2 patch was dropped"
    assert fired(mca_state(both).trace, "salq") == EXPECTED_SALQ
    assert (out - mca_only).abs().max() > 1e-4 and torch.isfinite(out).all()


def test_chains_to_an_existing_attn1_replacement(tiny_model):
    from comfy.ldm.modules.attention import optimized_attention

    calls = []

    def other_pack(q, k, v, extra_options):
        calls.append(1)
        return optimized_attention(q, k, v, extra_options["n_heads"])

    with_other = tiny_model.clone()
    for key in SITE_KEYS:
        with_other.set_model_attn1_replace(other_pack, *key)
    reference = sample_rows(with_other)
    calls.clear()
    silent = patched(with_other, sagi_end=0.0, salq_start=0.0, salq_end=0.0)
    assert torch.equal(sample_rows(silent), reference)
    assert calls, "the other pack's attn1 replacement was not called"
    out = sample_rows(patched(with_other))
    torch.testing.assert_close(out[:2], reference[:2], atol=1e-6, rtol=0)


def test_refuses_an_empty_subject_mask(tiny_model):
    with pytest.raises(ValueError, match="subject_mask is empty"):
        patch_model(tiny_model, PRESETS[Task.SWAP], MCASchedule(**SCHEDULE_KW), torch.zeros(1, 64, 64), EDIT_MASK)


def test_refuses_an_empty_edit_mask(tiny_model):
    with pytest.raises(ValueError, match="edit_mask is empty"):
        patch_model(tiny_model, PRESETS[Task.SWAP], MCASchedule(**SCHEDULE_KW), SUBJECT_MASK, torch.zeros(1, 64, 64))


# --- generation: the edit region from cross-attention, per run ------------------------------------------------

def generation_model(model, tokens=(2, 3)):
    return patch_model(model, PRESETS[Task.GENERATION], MCASchedule(**SCHEDULE_KW), SUBJECT_MASK, None,
                       subject=list(tokens))


def test_generation_derives_the_edit_mask_from_cross_attention(tiny_model):
    from mca_ctrl.mca_attention.cross_attention_mask import mask_from_maps

    model = generation_model(tiny_model)
    state = mca_state(model)
    state.trace = []
    run = MCARun(total_steps=STEPS)
    rows = sample_rows(model, run=run)
    maps = state.run_cache(run).cross
    # maps come from the 2 x 2 sites (third level of an 8 x 8 latent): 5 of them per step, cond half only
    assert all(len(maps.maps_at(step)) == 5 for step in range(STEPS)) and maps.shape == (2, 2)
    assert all(m.shape == (1, 4) for m in maps.maps_at(0)), "one map row per target"
    expected = mask_from_maps([m[0] for s in (0, 1, 2) for m in maps.maps_at(s)], 2, 2)
    (mask,) = maps.mask_before(3)
    assert torch.equal(mask, expected)
    assert maps.mask_before(0) is None
    ops = {(step, site): op for step, site, (op,), _ in state.trace}
    assert all(ops[(0, site)] is Op.NONE for site in range(16)), "no mask before the first step's maps"
    assert all(ops[(1, site)] is Op.SAGI for site in range(16))
    assert fired(state.trace, "salq") == EXPECTED_SALQ
    assert torch.isfinite(rows).all()


def test_each_run_starts_afresh_even_with_the_same_sigmas_tensor(tiny_model, monkeypatch):
    """A SIGMAS output cached across queue runs is the same tensor object each time: runs must not mix."""
    shared_sigmas = comfy.samplers.calculate_sigmas(tiny_model.get_model_object("model_sampling"), "ddim_uniform",
                                                    STEPS)
    monkeypatch.setattr(comfy.samplers, "calculate_sigmas", lambda *args, **kwargs: shared_sigmas)
    model = generation_model(tiny_model)
    first = sample_rows(model, prompts=row_prompts((1, 2, 3)))
    second = sample_rows(model, prompts=row_prompts((4, 5, 6)))
    fresh_second = sample_rows(generation_model(tiny_model), prompts=row_prompts((4, 5, 6)))
    assert torch.equal(second, fresh_second), "the second run read the first run's attention maps"
    assert torch.equal(sample_rows(model, prompts=row_prompts((1, 2, 3))), first)


def test_two_models_sharing_one_patch_keep_their_runs_apart(tiny_model):
    """A LoRA-style clone of a patched model shares its settings; its runs are still its own."""
    model = generation_model(tiny_model)
    clone = model.clone()
    assert mca_state(clone) is mca_state(model)
    alone = sample_rows(generation_model(tiny_model), prompts=row_prompts((4, 5, 6)))
    sample_rows(model, prompts=row_prompts((1, 2, 3)))
    assert torch.equal(sample_rows(clone, prompts=row_prompts((4, 5, 6))), alone)
