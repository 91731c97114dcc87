"""The three-row MCA Sampler on the tiny model: plain-sampling parity, pinning, local blend, bad inputs."""
from __future__ import annotations

import importlib

import pytest
import torch

from mca_testbed import square_mask, tiny_prompt

STEPS = 5
CFG = 5.0


@pytest.fixture()
def mods(pack):
    def load(name):
        return importlib.import_module(f"{pack.__name__}.{name}")

    return dict(sampler=load("nodes.sampler"), invert=load("nodes.ddim_invert"), common=load("nodes.common"),
                loop=load("mca_attention.sampling"))


def inverted(mods, model, seed, steps=STEPS, size=8):
    latent = torch.randn(1, 4, size, size, generator=torch.Generator().manual_seed(seed))
    sigmas = mods["common"].schedule_sigmas(model, steps, None)
    return mods["invert"].invert_latent(model, latent, tiny_prompt(0), tiny_prompt(0), 1.0, sigmas)


def prompts():
    return tiny_prompt(1), tiny_prompt(2), tiny_prompt(3), tiny_prompt(9)


def run_sampler(mods, model, subject, condition, blend_mask=None, seed=7, record=None):
    sigmas = mods["common"].schedule_sigmas(model, STEPS, None)
    callback = None if record is None else (lambda i, x0, x, total: record.append(x.clone()))
    return mods["sampler"].mca_sample(model, *prompts(), subject, condition, seed, CFG, sigmas,
                                      blend_mask=blend_mask, callback=callback)


def test_without_pins_the_target_row_equals_comfyuis_ddim_ksampler(mods, tiny_model):
    import comfy.sample
    import comfy.samplers

    sigmas = mods["common"].schedule_sigmas(tiny_model, STEPS, None)
    single = torch.zeros(1, 4, 8, 8)
    noise = comfy.sample.prepare_noise(single, 11)
    sampler = comfy.samplers.KSAMPLER(mods["loop"].mca_sample_loop, extra_options={"control": mods["loop"].RowControl()})
    condition, subject, target, negative = prompts()
    rows = comfy.sample.sample_custom(tiny_model, noise.repeat(3, 1, 1, 1), CFG, sampler, sigmas,
                                      mods["sampler"].row_prompts(condition, subject, target), negative,
                                      torch.zeros(3, 4, 8, 8), disable_pbar=True, seed=11)
    reference = comfy.sample.sample(tiny_model, noise, STEPS, CFG, "ddim", "ddim_uniform", target, negative, single,
                                    disable_pbar=True, seed=11)
    scale = float(reference.abs().max())
    torch.testing.assert_close(rows[2:3], reference, atol=1e-5 * scale, rtol=0)
    torch.testing.assert_close(rows[0:1], comfy.sample.sample(
        tiny_model, noise, STEPS, CFG, "ddim", "ddim_uniform", condition, negative, single, disable_pbar=True,
        seed=11), atol=1e-5 * scale, rtol=0)


def test_pinned_rows_replay_their_trajectories_at_every_step(mods, tiny_model):
    subject, condition = inverted(mods, tiny_model, 1), inverted(mods, tiny_model, 2)
    states = []
    out = run_sampler(mods, tiny_model, subject, condition, record=states)
    subject_path = subject["mca_trajectory"]["latents"][:, 0]
    condition_path = condition["mca_trajectory"]["latents"][:, 0]
    assert len(states) == STEPS
    for step, x in enumerate(states):
        assert torch.equal(x[1], subject_path[step]), step
        assert torch.equal(x[0], condition_path[step]), step
    assert torch.equal(states[0][2], condition_path[0]), "the target starts from the condition's inverted noise"
    torch.testing.assert_close(out[1:2], subject["mca_trajectory"]["latents"][-1] / 0.18215, atol=1e-5, rtol=1e-5)
    assert torch.isfinite(out).all()


def test_local_blend_keeps_the_condition_outside_the_mask(mods, tiny_model):
    subject, condition = inverted(mods, tiny_model, 1), inverted(mods, tiny_model, 2)
    inside = torch.zeros(8, 8, dtype=torch.bool)
    inside[:4, :4] = True
    states = []
    out = run_sampler(mods, tiny_model, subject, condition, blend_mask=square_mask(64, 0, 32), record=states)
    for step, x in enumerate(states[1:], start=1):
        assert torch.equal(x[2][:, ~inside], x[0][:, ~inside]), step
        assert not torch.allclose(x[2][:, inside], x[0][:, inside]), step
    assert torch.equal(out[2][:, ~inside], out[0][:, ~inside]), "the last step ends on the clean condition"
    assert not torch.allclose(out[2][:, inside], out[0][:, inside])


def test_generation_mode_with_the_patch_runs_from_seeded_noise(mods, tiny_model, pack):
    from mca_attention.comfy_patch import patch_model
    from mca_attention.schedule import PRESETS

    model = patch_model(tiny_model, PRESETS["generation"], square_mask(64, 16, 48), square_mask(64, 8, 40),
                        mode="generation")
    subject = inverted(mods, tiny_model, 1)
    empty = {"samples": torch.zeros(1, 4, 8, 8)}
    states = []
    out = run_sampler(mods, model, subject, empty, record=states)
    assert torch.equal(states[0][0], states[0][2]), "condition and target share the seed noise"
    assert torch.isfinite(out).all() and not torch.allclose(out[0], out[2])


def call_node(mods, model, subject, condition, steps=STEPS):
    node = mods["sampler"].MCASampler()
    return node.sample(model, *prompts(), subject, condition, 0, steps, CFG, True)


def test_bad_inputs_get_clear_errors(mods, tiny_model):
    subject, condition = inverted(mods, tiny_model, 1), inverted(mods, tiny_model, 2)
    with pytest.raises(ValueError, match="differ in size.*same width and height"):
        call_node(mods, tiny_model, subject, inverted(mods, tiny_model, 2, size=16))
    with pytest.raises(ValueError, match="inverted with 5 steps but the sampler uses 10"):
        call_node(mods, tiny_model, subject, condition, steps=10)
    with pytest.raises(ValueError, match="no inversion trajectory.*MCA DDIM Invert"):
        call_node(mods, tiny_model, {"samples": subject["samples"]}, condition)
    with pytest.raises(ValueError, match="SD1.5 latent"):
        call_node(mods, tiny_model, subject, {"samples": torch.zeros(1, 16, 8, 8)})
    with pytest.raises(ValueError, match="one plain prompt per row"):
        node = mods["sampler"].MCASampler()
        two_entries = tiny_prompt(1) + tiny_prompt(2)
        node.sample(tiny_model, two_entries, tiny_prompt(2), tiny_prompt(3), tiny_prompt(9), subject, condition, 0,
                    STEPS, CFG, True)


def test_trajectory_from_another_schedule_is_refused(mods, tiny_model):
    import comfy.samplers

    karras = comfy.samplers.calculate_sigmas(tiny_model.get_model_object("model_sampling"), "karras", STEPS)
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(4))
    subject = mods["invert"].invert_latent(tiny_model, latent, tiny_prompt(0), tiny_prompt(0), 1.0, karras.cpu())
    with pytest.raises(ValueError, match="another noise schedule"):
        call_node(mods, tiny_model, subject, inverted(mods, tiny_model, 2))


def test_cancel_stops_the_sampler(mods, tiny_model):
    import comfy.model_management

    subject, condition = inverted(mods, tiny_model, 1), inverted(mods, tiny_model, 2)
    comfy.model_management.interrupt_current_processing(True)
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            call_node(mods, tiny_model, subject, condition)
    finally:
        comfy.model_management.interrupt_current_processing(False)
