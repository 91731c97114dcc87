"""MCA-Ctrl on Flux-style MMDiTs (Flux.1 dev / schnell, Chroma): tiny random models from ComfyUI's own classes.

Every recorded attention call of a real sampling run is checked against the joint formula written in
``dense_reference``; then the nodes' own functions (inversion, patch, sampler) run swap, add and generation.
"""
from __future__ import annotations

import pytest
import torch

import comfy.sample
import comfy.samplers
import random_models
from comfy_host import split_cond_uncond
from dense_reference import check_joint_calls, recording_override
from mca_ctrl.mca_attention.adapters import model_adapter
from mca_ctrl.mca_attention.adapters.mmdit import OVERRIDE_KEY, token_grid
from mca_ctrl.mca_attention.comfy_patch import mca_state, patch_model
from mca_ctrl.mca_attention.layout import CONDITION, SUBJECT, TARGET
from mca_ctrl.mca_attention.run import MCARun
from mca_ctrl.mca_attention.sampling import RowControl, mca_sample_loop
from mca_ctrl.mca_attention.schedule import MCASchedule, Op
from mca_ctrl.mca_attention.tasks import PRESETS, Task
from mca_ctrl.mca_attention.text import TextFacts
from mca_ctrl.mca_attention import subject_words
from mca_ctrl.mca_attention import invert
from mca_ctrl.nodes import attention_patch, sampler
from prompt_helpers import row_prompts as stacked_rows, stacked, tokenizer_clip
from random_models import square_mask, tiny_flux_prompt

T5 = TextFacts(encoder_key="t5xxl")

STEPS = 4
SITES = 5  # the tiny models: 2 double + 3 single blocks
SITE_KEYS = [("double", 0), ("double", 1), ("single", 0), ("single", 1), ("single", 2)]
# 4 steps: SAGI at step 0 (every site), SALQ at steps 1-3 from site 2 (the single blocks) on.
SCHEDULE_KW = dict(sagi_start=0.0, sagi_end=0.25, salq_start=0.25, salq_end=1.0, salq_first_site=2)
SUBJECT_MASK, EDIT_MASK = square_mask(64, 16, 48), square_mask(64, 8, 40)
LATENT = (8, 8)  # 64 px: a 4 x 4 grid of image tokens


def expected_op(step, key):
    site = SITE_KEYS.index(key)
    return Op.SAGI if step == 0 else Op.SALQ if site >= 2 else Op.NONE


@pytest.fixture(params=["flux", "chroma"])
def dit(request, pack):
    """(name, a fresh tiny model, its prompt maker)."""
    if request.param == "flux":
        return "flux", random_models.tiny_flux_model(seed=0), lambda seed: tiny_flux_prompt(seed)
    return "chroma", random_models.tiny_chroma_model(seed=0), lambda seed: tiny_flux_prompt(seed, guidance=None,
                                                                                             pooled=False)


def row_prompts(prompt, seeds=(1, 2, 3)):
    rows = [prompt(seed) for seed in seeds]
    return stacked_rows(*rows, repeat_short=False)


def sample_rows(model, prompt, cfg=1.0, seed=0, run=None, negative_seed=9):
    """The 3-row batch sampled by the MCA loop (nothing pinned), inside ComfyUI's sampler."""
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", STEPS)
    latent = torch.zeros(3, 16, *LATENT)
    noise = comfy.sample.prepare_noise(latent, seed)
    loop = comfy.samplers.KSAMPLER(mca_sample_loop, extra_options={"control": RowControl(), "run": run})
    return comfy.sample.sample_custom(model, noise, cfg, loop, sigmas, row_prompts(prompt), prompt(negative_seed),
                                      latent, disable_pbar=True, seed=seed)


def patched(model, task=Task.SWAP, **schedule_kw):
    return patch_model(model, PRESETS[task], MCASchedule(**(schedule_kw or SCHEDULE_KW)), SUBJECT_MASK, EDIT_MASK)


def grid_of(latent_size):
    return token_grid(latent_size, 2)


# --- sites, presets, refusals --------------------------------------------------------------------------------

def test_sites_are_the_double_then_single_blocks_in_call_order(dit):
    _, model, _ = dit
    adapter = model_adapter(model)
    assert [site.key for site in adapter.sites] == SITE_KEYS
    assert [site.index for site in adapter.sites] == list(range(SITES))
    assert adapter.LATENT.channels == 16 and adapter.min_latent_side == 4


@pytest.mark.parametrize("task", list(Task))
def test_the_preset_runs_every_site_and_never_an_empty_range_on_few_steps(dit, task):
    _, model, _ = dit
    schedule = model_adapter(model).preset_schedule(PRESETS[task])
    assert schedule.salq_first_site == 0 and schedule.min_one_step
    for steps in (1, 4, 28):
        sagi, salq = schedule.step_ranges(steps)
        assert len(sagi) >= 1 and len(salq) >= 1, (steps, sagi, salq)
    table = schedule.table(4, SITES)  # Flux.1 schnell's 4 steps: SAGI at step 0, SALQ at steps 1-3, every site
    assert [set(row) for row in table] == [{Op.SAGI}, {Op.SALQ}, {Op.SALQ}, {Op.SALQ}]
    sagi, salq = schedule.step_ranges(50)
    assert (sagi, salq) == (range(0, 5), range(0 if task is Task.GENERATION else 4, 50)), "official at 50 steps"


def test_other_dit_families_and_wrappers_are_refused_by_name(pack):
    fill_like = random_models.tiny_flux_model()
    import comfy.supported_models

    fill_like.model.model_config = comfy.supported_models.FluxInpaint.__new__(comfy.supported_models.FluxInpaint)
    with pytest.raises(ValueError, match=r"does not support Flux.1 Fill yet \(supported: .*Flux.1.*Chroma.*Flux.2"):
        model_adapter(fill_like)
    wrapped = random_models.tiny_flux_model()
    wrapped.add_object_patch("diffusion_model", torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="its diffusion model is a Linear, which no MCA adapter knows"):
        model_adapter(wrapped)


def test_a_latent_of_another_channel_count_is_refused(dit):
    _, model, prompt = dit
    with pytest.raises(ValueError, match="needs a 16-channel latent"):
        invert.invert_latent(model, torch.zeros(1, 4, 8, 8), prompt(1), prompt(1), 1.0,
                                  invert.schedule_sigmas(model, STEPS, None))


def test_prompts_of_different_lengths_are_padded_after_their_own_tokens(pack):
    short, long, negative = tiny_flux_prompt(1, tokens=16), tiny_flux_prompt(2, tokens=24), tiny_flux_prompt(3, 20)
    batch = stacked(short, long, short, negative=negative, repeat_short=False)
    rows = batch.positive[0][0]
    assert rows.shape[1] == 24 and batch.text.length == 24
    assert batch.text.cond == (16, 24, 16) and batch.text.uncond == (20, 20, 20)
    assert torch.equal(rows[0, :16], short[0][0][0]) and not rows[0, 16:].any(), "own tokens first, then zeros"
    assert torch.equal(rows[1], long[0][0][0])
    assert batch.negative[0][0].shape[1] == 24 and torch.equal(batch.negative[0][0][0, :20], negative[0][0][0])
    keys = batch.text.valid_keys([1, 0], torch.device("cpu"))
    assert keys.sum(1).tolist() == [20, 20, 20, 16, 24, 16], "uncond chunk first, as cond_or_uncond orders it"
    same = stacked(short, short, short, negative=negative, repeat_short=False)
    assert same.text is None and same.negative is negative, "equal rows: no padding, the negative untouched"


def test_sequence_changing_conditioning_is_refused(pack):
    short = tiny_flux_prompt(1, tokens=16)
    kontext = tiny_flux_prompt(3)
    kontext[0][1]["reference_latents"] = [torch.zeros(1, 16, 8, 8)]
    with pytest.raises(ValueError, match="target_prompt carries reference latents .*Kontext"):
        stacked_rows(short, short, kontext, repeat_short=False)
    guided = tiny_flux_prompt(4, guidance=2.0)
    with pytest.raises(ValueError, match="differ in 'guidance'"):
        stacked_rows(short, guided, short, repeat_short=False)


# --- the shipped override against the dense joint formula, on the q/k/v a real run hands it -----------------

@pytest.mark.parametrize("cfg, split", [(1.0, False), (3.0, False), (3.0, True)])
def test_patched_override_matches_the_dense_joint_formula_on_recorded_calls(dit, cfg, split, monkeypatch):
    _, model, prompt = dit
    if split:
        split_cond_uncond(monkeypatch)
    calls = []
    sample_rows(recording_override(patched(model), calls, grid_of), prompt, cfg=cfg)
    chunks = 1 if cfg == 1.0 else 2
    assert len(calls) == STEPS * SITES * (chunks if split else 1)
    assert {len(call["cond_or_uncond"]) for call in calls} == {1 if split or cfg == 1.0 else 2}
    assert {call["text_tokens"] for call in calls} == {16} and {call["grid"] for call in calls} == {(4, 4)}
    assert check_joint_calls(calls, expected_op, SUBJECT_MASK, EDIT_MASK) == {Op.SAGI, Op.SALQ, Op.NONE}


def test_subject_moved_onto_the_edit_region_matches_the_dense_formula(dit):
    """subject_position 'edit region': SALQ's subject keys turned by the RoPE rotation of the shift between the
    two masks' centres (RoPE written out in the test); every other row, op and token as before."""
    _, model, prompt = dit
    calls = []
    corner = square_mask(64, 0, 32)  # token rows/columns 0-1 of 4: one token up and left of the subject's centre
    moved = patch_model(model, PRESETS[Task.SWAP], MCASchedule(**SCHEDULE_KW), SUBJECT_MASK, corner, move_subject=True)
    out = sample_rows(recording_override(moved, calls, grid_of), prompt, cfg=3.0)
    params = model.get_model_object("diffusion_model").params
    assert check_joint_calls(calls, expected_op, SUBJECT_MASK, corner,
                             rope=(params.axes_dim, params.theta)) == {Op.SAGI, Op.SALQ, Op.NONE}
    own = sample_rows(patch_model(model, PRESETS[Task.SWAP], MCASchedule(**SCHEDULE_KW), SUBJECT_MASK, corner),
                      prompt, cfg=3.0)
    assert (out[TARGET] - own[TARGET]).abs().max() > 1e-4, "the masks' centres differ: moving must change SALQ"
    torch.testing.assert_close(out[:2], own[:2], atol=1e-5, rtol=0)


def test_moving_the_subject_is_refused_on_a_unet(pack):
    with pytest.raises(ValueError, match="subject_position 'edit region' moves RoPE positions.*set subject_position"):
        patch_model(random_models.tiny_sd15_model(), PRESETS[Task.SWAP], MCASchedule(**SCHEDULE_KW), SUBJECT_MASK,
                    EDIT_MASK, move_subject=True)


def test_never_firing_schedule_equals_the_unpatched_model_exactly(dit):
    _, model, prompt = dit
    silent = patched(model, sagi_end=0.0, salq_start=0.0, salq_end=0.0, salq_first_site=0)
    assert torch.equal(sample_rows(silent, prompt, cfg=3.0), sample_rows(model, prompt, cfg=3.0))


def test_rows_0_and_1_keep_ordinary_attention_and_the_target_changes(dit):
    _, model, prompt = dit
    plain = sample_rows(model, prompt, cfg=3.0)
    out = sample_rows(patched(model), prompt, cfg=3.0)
    torch.testing.assert_close(out[:2], plain[:2], atol=1e-5, rtol=0)
    assert (out[2] - plain[2]).abs().max() > 1e-3 and torch.isfinite(out).all()


def test_split_cond_uncond_equals_batched(dit, monkeypatch):
    _, model, prompt = dit
    batched = sample_rows(patched(model), prompt, cfg=3.0)
    split_cond_uncond(monkeypatch)
    split = sample_rows(patched(model), prompt, cfg=3.0)
    torch.testing.assert_close(split, batched, atol=2e-5 * float(batched.abs().max()), rtol=0)


def test_an_override_installed_before_is_chained_for_the_ordinary_rows(dit):
    """An attention-speed pack's override (SageAttention style) keeps running where MCA leaves rows ordinary."""
    _, model, prompt = dit
    seen = []

    def other_pack(func, *args, **kwargs):
        seen.append(args[0].shape[0])
        return func(*args, **kwargs)

    with_other = model.clone()
    options = dict(with_other.model_options.get("transformer_options", {}))
    options[OVERRIDE_KEY] = other_pack
    with_other.model_options["transformer_options"] = options
    reference = sample_rows(with_other, prompt)
    seen.clear()
    silent = patched(with_other, sagi_end=0.0, salq_start=0.0, salq_end=0.0, salq_first_site=0)
    assert torch.equal(sample_rows(silent, prompt), reference)
    assert seen == [3] * STEPS * SITES, "the other override must see every call of a never-firing patch"
    seen.clear()
    out = sample_rows(patched(with_other), prompt)
    assert 2 in seen, "the condition and subject rows go through the other override while MCA runs"
    torch.testing.assert_close(out[:2], reference[:2], atol=1e-5, rtol=0)
    assert OVERRIDE_KEY not in model.model_options.get("transformer_options", {}), "the input model was touched"


def test_schnell_at_four_steps_runs_sagi_and_salq_and_says_so(pack, caplog):
    import logging

    model = random_models.tiny_flux_model(schnell=True)
    (patched_model,) = attention_patch.MCAAttentionPatch.execute(model, SUBJECT_MASK, "swap", -1.0, -1.0, -1.0, -1.0, -1.0, -1, edit_mask=EDIT_MASK)
    state = mca_state(patched_model)
    state.trace = []
    prompt = lambda seed: tiny_flux_prompt(seed, guidance=None)  # noqa: E731
    subject, _ = inverted(patched_model, prompt, 1)
    condition, _ = inverted(patched_model, prompt, 2)
    with caplog.at_level(logging.INFO):
        sampler.mca_sample(patched_model, prompt(1), prompt(2), prompt(2), prompt(9), subject, condition, 0, 1.0)
    ops = {op for *_, (op,), _ in state.trace}
    assert {Op.SAGI, Op.SALQ} <= ops
    assert any("SAGI: steps 0-0 (1 of 4)" in r.getMessage() and "SALQ: steps 1-3 (3 of 4)" in r.getMessage()
               for r in caplog.records)


# --- flow inversion -------------------------------------------------------------------------------------------

DATA_STD = 0.5


def gaussian_flow_denoiser(model):
    """The exact denoiser for latents ~ N(0, s^2) under flow matching x = (1 - sigma) x0 + sigma n."""
    def exact(apply_model, args):
        x, sigma = args["input"], args["timestep"].view(-1, 1, 1, 1)
        a = 1 - sigma
        return x * a * DATA_STD ** 2 / (a ** 2 * DATA_STD ** 2 + sigma ** 2)

    clone = model.clone()
    clone.set_model_unet_function_wrapper(exact)
    return clone


def inverted(model, prompt, seed, steps=STEPS, scale=1.0):
    latent = torch.randn(1, 16, *LATENT, generator=torch.Generator().manual_seed(seed)) * scale
    sigmas = invert.schedule_sigmas(model, steps, None)
    return invert.invert_latent(model, latent, prompt(0), prompt(0), 1.0, sigmas), latent


def test_flow_inversion_follows_the_next_sigma_rule_step_by_step(pack):
    """Each step of the shipped walk equals the rule written out on the model's own velocity: the current latent,
    unscaled, fed at the *next* sigma; ``x_next = x + v * (sigma_next - sigma)``."""
    model = random_models.tiny_flux_model()
    prompt = tiny_flux_prompt(0)
    result, latent = inverted(model, lambda seed: prompt, 1, steps=5)
    states = result["mca_trajectory"]["latents"][:, 0].flip(0)  # clean first
    sigmas = result["mca_trajectory"]["sigmas"].flip(0)
    flux = model.model.diffusion_model
    context, options = prompt[0]
    torch.testing.assert_close(states[0], model.model.process_latent_in(latent)[0], atol=1e-6, rtol=0)
    with torch.no_grad():
        for step in range(5):
            sigma, sigma_next = sigmas[step], sigmas[step + 1]
            velocity = flux(states[step][None], sigma_next.view(1), context, y=options["pooled_output"],
                            guidance=torch.tensor([options["guidance"]]))
            expected = states[step] + velocity[0] * (sigma_next - sigma)
            torch.testing.assert_close(states[step + 1], expected, atol=1e-4, rtol=1e-4, msg=f"step {step}")


def test_flow_inversion_round_trip_with_an_exact_denoiser(pack):
    model = random_models.tiny_flux_model()
    ms = model.get_model_object("model_sampling")
    import comfy.model_sampling

    assert isinstance(ms, comfy.model_sampling.CONST) and ms.shift == pytest.approx(1.15)
    exact = gaussian_flow_denoiser(model)
    latent_format = model.model.latent_format
    errors = {}
    for steps in (10, 25, 50):
        result, latent = inverted(exact, tiny_flux_prompt, 1, steps, DATA_STD / latent_format.scale_factor)
        trajectory = result["mca_trajectory"]
        sigmas = trajectory["sigmas"]
        assert sigmas[0] == pytest.approx(1.0) and sigmas[-1] == 0 and trajectory["latents"].shape[0] == steps + 1
        torch.testing.assert_close(trajectory["latents"][-1], model.model.process_latent_in(latent), atol=1e-6, rtol=0)
        assert torch.isfinite(result["samples"]).all()
        noise = trajectory["latents"][0]  # model space; ComfyUI's noise_scaling at sigma 1 keeps only the noise
        rebuilt = comfy.sample.sample_custom(exact, noise, 1.0, comfy.samplers.sampler_object("euler"), sigmas,
                                             tiny_flux_prompt(0), tiny_flux_prompt(0), torch.zeros_like(latent),
                                             disable_pbar=True, seed=0)
        errors[steps] = float((rebuilt - latent).abs().mean() / latent.abs().mean())
    print("flow round trip, relative error:", errors)
    assert errors[50] < errors[25] < errors[10] and errors[50] < 0.05


# --- swap, add and generation through the nodes' own functions -----------------------------------------------

@pytest.mark.parametrize("task", [Task.SWAP, Task.ADD])
def test_swap_and_add_keep_the_background_and_move_the_subject(dit, task):
    name, model, prompt = dit
    cfg = 1.0 if name == "flux" else 3.0
    subject, _ = inverted(model, prompt, 1)
    condition, clean = inverted(model, prompt, 2)
    args = (prompt(1), prompt(2), prompt(2), prompt(9), subject, condition, 0, cfg)
    mca = patch_model(model, PRESETS[task], model_adapter(model).preset_schedule(PRESETS[task]), SUBJECT_MASK,
                      EDIT_MASK)
    never = patch_model(model, PRESETS[task], MCASchedule(0.0, 0.0, 0.0, 0.0, 0), SUBJECT_MASK, EDIT_MASK)
    out = sampler.mca_sample(mca, *args)
    rows, edit = out.rows, out.edit_masks[0]
    plain = sampler.mca_sample(never, *args).rows
    inside = torch.nn.functional.interpolate(EDIT_MASK[None], size=LATENT, mode="nearest")[0, 0] > 0.5
    torch.testing.assert_close(rows[TARGET][:, ~inside], clean[0][:, ~inside], atol=1e-4, rtol=1e-4)
    assert (rows[TARGET][:, inside] - plain[TARGET][:, inside]).abs().max() > 1e-3
    torch.testing.assert_close(rows[CONDITION], clean[0], atol=1e-4, rtol=0)
    subject_clean = model.model.process_latent_out(subject["mca_trajectory"]["latents"][-1])[0]
    torch.testing.assert_close(rows[SUBJECT], subject_clean, atol=1e-4, rtol=0)
    assert torch.equal(edit, mca_state(mca).edit_mask)


def test_subject_words_are_found_among_the_t5_tokens(pack):
    import comfy.text_encoders.flux

    clip = tokenizer_clip(comfy.text_encoders.flux.FluxTokenizer())
    text = "a photo of a dog on a sofa"
    t5 = [token for token, *_ in clip.tokenize(text)["t5xxl"][0]]
    dog = subject_words.subject_tokens(clip, text, "dog", "", T5)
    sofa = subject_words.subject_tokens(clip, text, "sofa", "", T5)
    word = [token for token, *_ in clip.tokenize("dog")["t5xxl"][0]][:1]
    assert [t5[i] for i in dog] == word and dog != sofa
    assert subject_words.subject_tokens(clip, text, "", "1", T5) == [0], "index 1 = the first text token"
    assert subject_words.subject_tokens(clip, text, "dog", "", TextFacts()) == [5], "CLIP-L: after the start token"


def test_generation_derives_its_region_from_the_subject_word_and_the_word_moves_it(dit):
    _, model, prompt = dit
    subject, _ = inverted(model, prompt, 1)
    empty = {"samples": torch.zeros(1, 16, *LATENT)}
    masks = []
    for tokens in ([2, 3], [10, 11]):
        mca = patch_model(model, PRESETS[Task.GENERATION],
                          model_adapter(model).preset_schedule(PRESETS[Task.GENERATION]), SUBJECT_MASK, None,
                          subject=tokens)
        state = mca_state(mca)
        state.trace = []
        out = sampler.mca_sample(mca, prompt(1), prompt(2), prompt(3), prompt(9), subject, empty, 7, 1.0)
        rows, edit = out.rows, out.edit_masks[0]
        assert edit is not None and edit.shape == (4, 4) and torch.isfinite(rows).all()
        ops = {(step, op) for step, _, (op,), _ in state.trace}
        assert (0, Op.NONE) in ops and (1, Op.SALQ) in ops, "no region before the first step's maps, then SALQ"
        masks.append(edit)
    assert not torch.equal(*masks), "another subject word must give another region"


def test_generation_run_keeps_its_maps_to_itself(dit):
    _, model, prompt = dit
    mca = patch_model(model, PRESETS[Task.GENERATION], MCASchedule(0.0, 0.25, 0.25, 1.0, 0), SUBJECT_MASK, None,
                      subject=[1])
    run = MCARun(total_steps=STEPS)
    sample_rows(mca, prompt, run=run)
    maps = mca_state(mca).run_cache(run).cross
    assert all(len(maps.maps_at(step)) == 2 for step in range(STEPS)), "one map per double block and step"
    assert maps.shape == (4, 4)
