"""The MCA attention patch on a tiny SD1.5-architecture model, sampled by ComfyUI itself."""
from __future__ import annotations

import pytest
import torch

import mca_testbed
from mca_testbed import square_mask, tiny_prompt

STEPS = 5
# 5 steps: SAGI at steps 0-1 (every layer), SALQ at steps 2-4 on layers 9-15.
SCHEDULE_KW = dict(sagi_start=0.0, sagi_end=0.4, salq_start=0.4, salq_end=1.0, salq_first_layer=9)
EXPECTED_SAGI = {(step, layer) for step in (0, 1) for layer in range(16)}
EXPECTED_SALQ = {(step, layer) for step in (2, 3, 4) for layer in range(9, 16)}


@pytest.fixture()
def core(pack):
    import comfy.sample
    from mca_attention.comfy_patch import find_attention_sites, mca_state, patch_model
    from mca_attention.schedule import MCASchedule, Op

    return dict(sample=comfy.sample, find_sites=find_attention_sites, patch=patch_model, state=mca_state,
                Schedule=MCASchedule, Op=Op)


def row_prompts():
    return [[torch.cat([tiny_prompt(s)[0][0] for s in (1, 2, 3)]), {}]]


def sample_rows(core, model, cfg=7.0, record=None, seed=0):
    latent = torch.zeros(3, 4, 8, 8)
    noise = core["sample"].prepare_noise(latent, seed)
    callback = None if record is None else (lambda i, denoised, x, total: record.append(x.clone()))
    return core["sample"].sample(model, noise, STEPS, cfg, "ddim", "ddim_uniform", row_prompts(), tiny_prompt(9),
                                 latent, callback=callback, disable_pbar=True, seed=seed)


def patched(core, model, **schedule_kw):
    schedule = core["Schedule"](**(schedule_kw or SCHEDULE_KW))
    return core["patch"](model, schedule, square_mask(64, 16, 48), square_mask(64, 8, 40))


def fired(core, trace, op):
    return {(step, layer) for step, layer, applied, _ in trace if applied is core["Op"](op)}


def test_finds_all_16_sites_in_unet_order(core, tiny_model):
    sites = core["find_sites"](tiny_model.get_model_object("diffusion_model"))
    assert [s.key for s in sites] == (
        [("input", n, 0) for n in (1, 2, 4, 5, 7, 8)] + [("middle", 0, 0)]
        + [("output", n, 0) for n in range(3, 12)])
    assert [s.layer for s in sites] == list(range(16))


def test_never_firing_schedule_equals_the_unpatched_model_exactly(core, tiny_model):
    plain = sample_rows(core, tiny_model)
    silent = patched(core, tiny_model, sagi_end=0.0, salq_start=0.0, salq_end=0.0)
    assert torch.equal(sample_rows(core, silent), plain)


def test_ops_fire_exactly_at_their_step_layer_pairs_and_keep_rows_0_and_1(core, tiny_model):
    plain_steps, mca_steps = [], []
    plain = sample_rows(core, tiny_model, record=plain_steps)
    model = patched(core, tiny_model)
    core["state"](model).trace = []
    out = sample_rows(core, model, record=mca_steps)
    trace = core["state"](model).trace
    assert fired(core, trace, "sagi") == EXPECTED_SAGI
    assert fired(core, trace, "salq") == EXPECTED_SALQ
    assert {(step, layer) for step, layer, _, _ in trace} == {(s, n) for s in range(STEPS) for n in range(16)}
    for before, after in zip(plain_steps, mca_steps):
        torch.testing.assert_close(after[:2], before[:2], atol=1e-6, rtol=0)
    torch.testing.assert_close(out[:2], plain[:2], atol=1e-6, rtol=0)
    assert (out[2] - plain[2]).abs().max() > 1e-3, "the target row should change"
    assert torch.isfinite(out).all()


def test_split_cond_uncond_equals_batched(core, tiny_model, monkeypatch):
    model = patched(core, tiny_model)
    batched = sample_rows(core, model)
    import comfy.model_management

    real_free_memory = comfy.model_management.get_free_memory

    def no_room_for_batching(dev=None, torch_free_too=False):
        # the sampler's batching check sees no free memory; attention kernels still see the real figure
        return real_free_memory(dev, torch_free_too) if torch_free_too else 0

    monkeypatch.setattr(comfy.model_management, "get_free_memory", no_room_for_batching)
    core["state"](model).trace = []
    split = sample_rows(core, model)
    trace = core["state"](model).trace
    core["state"](model).trace = None
    assert {chunks for *_, chunks in trace} == {1}, "ComfyUI should have run cond and uncond separately"
    # batch size changes CPU kernel blocking: the unpatched model differs by ~3e-6 relative too
    torch.testing.assert_close(split, batched, atol=2e-5 * float(batched.abs().max()), rtol=0)


def test_cfg_1_runs_without_uncond(core, tiny_model):
    model = patched(core, tiny_model)
    core["state"](model).trace = []
    out = sample_rows(core, model, cfg=1.0)
    trace = core["state"](model).trace
    core["state"](model).trace = None
    assert {chunks for *_, chunks in trace} == {1}
    assert fired(core, trace, "sagi") == EXPECTED_SAGI and fired(core, trace, "salq") == EXPECTED_SALQ
    assert torch.isfinite(out).all()


def test_input_model_is_untouched(core, tiny_model):
    before = sample_rows(core, tiny_model)
    options_before = repr(tiny_model.model_options)
    sample_rows(core, patched(core, tiny_model))
    assert repr(tiny_model.model_options) == options_before
    assert "patches_replace" not in tiny_model.model_options.get("transformer_options", {})
    assert torch.equal(sample_rows(core, tiny_model), before)


def _all_keys(core, model):
    return [s.key for s in core["find_sites"](model.get_model_object("diffusion_model"))]


def test_composes_with_an_attn2_patch_like_ipadapter(core, tiny_model):
    from comfy.ldm.modules.attention import optimized_attention

    calls = []

    def halve_cross_attention(q, k, v, extra_options):
        calls.append(extra_options["block"])
        return 0.5 * optimized_attention(q, k, v, extra_options["n_heads"])

    with_adapter = tiny_model.clone()
    for key in _all_keys(core, tiny_model):
        with_adapter.set_model_attn2_replace(halve_cross_attention, *key)
    mca_only = sample_rows(core, patched(core, tiny_model))
    both = patched(core, with_adapter)
    core["state"](both).trace = []
    out = sample_rows(core, both)
    assert calls, "the attn2 patch was dropped"
    assert fired(core, core["state"](both).trace, "salq") == EXPECTED_SALQ
    assert (out - mca_only).abs().max() > 1e-4 and torch.isfinite(out).all()


def test_chains_to_an_existing_attn1_replacement(core, tiny_model):
    from comfy.ldm.modules.attention import optimized_attention

    calls = []

    def other_pack(q, k, v, extra_options):
        calls.append(1)
        return optimized_attention(q, k, v, extra_options["n_heads"])

    with_other = tiny_model.clone()
    for key in _all_keys(core, tiny_model):
        with_other.set_model_attn1_replace(other_pack, *key)
    reference = sample_rows(core, with_other)
    calls.clear()
    silent = patched(core, with_other, sagi_end=0.0, salq_start=0.0, salq_end=0.0)
    assert torch.equal(sample_rows(core, silent), reference)
    assert calls, "the other pack's attn1 replacement was not called"
    out = sample_rows(core, patched(core, with_other))
    torch.testing.assert_close(out[:2], reference[:2], atol=1e-6, rtol=0)


def test_refuses_a_model_that_is_not_sd15(core, pack):
    not_sd15 = mca_testbed.sd15_model(model_channels=32, context_dim=32, transformer_depth=[0, 0, 1, 1, 1, 1, 0, 0])
    with pytest.raises(ValueError, match="Stable Diffusion 1.5"):
        patched(core, not_sd15)


def test_refuses_an_empty_subject_mask(core, tiny_model):
    schedule = core["Schedule"](**SCHEDULE_KW)
    with pytest.raises(ValueError, match="subject_mask is empty"):
        core["patch"](tiny_model, schedule, torch.zeros(1, 64, 64), square_mask(64, 8, 40))


def test_generation_derives_the_edit_mask_from_cross_attention(core, tiny_model):
    from mca_attention.cross_attention_mask import mask_from_maps

    model = core["patch"](tiny_model, core["Schedule"](**SCHEDULE_KW), square_mask(64, 16, 48), None,
                          mode="generation", subject_tokens=[2, 3])
    state = core["state"](model)
    state.trace = []
    rows = sample_rows(core, model)
    recorder = state.cross
    # maps come from the 2 x 2 sites (third level of an 8 x 8 latent): 5 of them per step, cond half only
    assert sorted(recorder._maps) == list(range(STEPS)) and all(len(m) == 5 for m in recorder._maps.values())
    assert recorder._shape == (2, 2)
    run = recorder._run
    expected = mask_from_maps([m for s in (0, 1, 2) for m in recorder._maps[s]], 2, 2)
    assert torch.equal(recorder.mask_before(run, 3), expected)
    assert recorder.mask_before(run, 0) is None
    ops = {(step, layer): op for step, layer, op, _ in state.trace}
    assert all(ops[(0, layer)] is core["Op"].NONE for layer in range(16)), "no mask before the first step's maps"
    assert all(ops[(1, layer)] is core["Op"].SAGI for layer in range(16))
    assert fired(core, state.trace, "salq") == EXPECTED_SALQ
    assert torch.isfinite(rows).all()


def test_refuses_an_empty_edit_mask(core, tiny_model):
    schedule = core["Schedule"](**SCHEDULE_KW)
    with pytest.raises(ValueError, match="edit_mask is empty"):
        core["patch"](tiny_model, schedule, square_mask(64, 16, 48), torch.zeros(1, 64, 64))
