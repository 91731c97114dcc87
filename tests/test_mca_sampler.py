"""The three-row MCA Sampler on the tiny model: plain-sampling parity, pinning, local blend, bad inputs."""
from __future__ import annotations

import pytest
import torch

import mca_ctrl.mca_attention.sampling as loop_module
import mca_ctrl.mca_attention.invert as invert_module
import mca_ctrl.nodes.ddim_invert as invert_node_module
import mca_ctrl.mca_attention.engine as engine_module
import mca_ctrl.nodes.sampler as sampler_module
from mca_ctrl.mca_attention.comfy_patch import patch_model
from mca_ctrl.mca_attention.schedule import MCASchedule
from mca_ctrl.mca_attention.tasks import PRESETS, Task
from random_models import square_mask, tiny_prompt
from prompt_helpers import row_prompts

STEPS = 5
CFG = 5.0
SILENT = MCASchedule(sagi_end=0.0, salq_start=0.0, salq_end=0.0, salq_first_site=9)  # patched, but attention never changes


@pytest.fixture()
def mods(pack):
    return dict(sampler=sampler_module, engine=engine_module, invert=invert_module, invert_node=invert_node_module,
                loop=loop_module)


def with_patch(model, task=Task.SWAP, schedule=SILENT, edit_mask=None):
    edit = square_mask(64, 0, 32) if edit_mask is None else edit_mask
    return patch_model(model, PRESETS[task], schedule, square_mask(64, 16, 48), edit)


def inverted(mods, model, seed, steps=STEPS, size=8):
    latent = torch.randn(1, 4, size, size, generator=torch.Generator().manual_seed(seed))
    sigmas = mods["invert"].schedule_sigmas(model, steps, None)
    return mods["invert"].invert_latent(model, latent, tiny_prompt(0), tiny_prompt(0), 1.0, sigmas)


def prompts():
    return tiny_prompt(1), tiny_prompt(2), tiny_prompt(3), tiny_prompt(9)


def run_sampler(mods, model, subject, condition, blend_mask=None, seed=7, record=None, local_blend=True):
    """The node's own sampling function; ``model`` must be patched (a silent patch stands for "no MCA")."""
    callback = None if record is None else (lambda i, x0, x, total: record.append(x.clone()))
    rows = mods["engine"].mca_sample(model, *prompts(), subject, condition, seed, CFG, None,
                                         blend_mask=blend_mask, local_blend=local_blend,
                                         make_callback=lambda steps: callback).rows
    return rows


def test_without_pins_the_target_row_equals_comfyuis_ddim_ksampler(mods, tiny_model):
    import comfy.sample
    import comfy.samplers

    sigmas = mods["invert"].schedule_sigmas(tiny_model, STEPS, None)
    single = torch.zeros(1, 4, 8, 8)
    noise = comfy.sample.prepare_noise(single, 11)
    sampler = comfy.samplers.KSAMPLER(mods["loop"].mca_sample_loop, extra_options={"control": mods["loop"].RowControl()})
    condition, subject, target, negative = prompts()
    rows = comfy.sample.sample_custom(tiny_model, noise.repeat(3, 1, 1, 1), CFG, sampler, sigmas,
                                      row_prompts(condition, subject, target), negative,
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
    out = run_sampler(mods, with_patch(tiny_model), subject, condition, record=states, local_blend=False)
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
    out = run_sampler(mods, with_patch(tiny_model), subject, condition, blend_mask=square_mask(64, 0, 32), record=states)
    for step, x in enumerate(states[1:], start=1):
        assert torch.equal(x[2][:, ~inside], x[0][:, ~inside]), step
        assert not torch.allclose(x[2][:, inside], x[0][:, inside]), step
    assert torch.equal(out[2][:, ~inside], out[0][:, ~inside]), "the last step ends on the clean condition"
    assert not torch.allclose(out[2][:, inside], out[0][:, inside])


def test_generation_mode_with_the_patch_runs_from_seeded_noise(mods, tiny_model, pack):
    model = with_patch(tiny_model, Task.GENERATION, PRESETS[Task.GENERATION].schedule, square_mask(64, 8, 40))
    subject = inverted(mods, tiny_model, 1)
    empty = {"samples": torch.zeros(1, 4, 8, 8)}
    states = []
    out = run_sampler(mods, model, subject, empty, record=states)
    assert torch.equal(states[0][0], states[0][2]), "condition and target share the seed noise"
    assert torch.isfinite(out).all() and not torch.allclose(out[0], out[2])
    outside = torch.ones(8, 8, dtype=torch.bool)
    outside[1:5, 1:5] = False  # the layout mask (8..40 of 64 px) at the 8 x 8 latent
    for x in states[1:] + [out]:  # generation never blends: the layout mask only steers attention
        assert not torch.allclose(x[2][:, outside], x[0][:, outside])


def call_node(mods, model, subject, condition, sigmas=None, prompt_set=None, local_blend=True):
    return mods["sampler"].MCASampler.execute(model, *(prompt_set or prompts()), subject, condition, 0, CFG, local_blend, sigmas=sigmas)


def test_bad_inputs_get_clear_errors(mods, tiny_model):
    subject, condition = inverted(mods, tiny_model, 1), inverted(mods, tiny_model, 2)
    model = with_patch(tiny_model)
    with pytest.raises(ValueError, match="differ in size.*same width and height"):
        call_node(mods, model, subject, inverted(mods, tiny_model, 2, size=16))
    with pytest.raises(ValueError, match="condition was inverted with 4 steps but the subject has 5"):
        call_node(mods, model, subject, inverted(mods, tiny_model, 2, steps=4))
    with pytest.raises(ValueError, match="no inversion trajectory.*MCA DDIM Invert"):
        call_node(mods, model, {"samples": subject["samples"]}, condition)
    with pytest.raises(ValueError, match="4-channel latent"):  # an empty one is made the model's own, as ComfyUI does
        call_node(mods, model, subject, {"samples": torch.ones(1, 16, 8, 8)})
    with pytest.raises(ValueError, match="one plain prompt per row"):
        call_node(mods, model, subject, condition, prompt_set=(tiny_prompt(1) + tiny_prompt(2), *prompts()[1:]))


def test_an_unpatched_model_is_refused(mods, tiny_model):
    subject, condition = inverted(mods, tiny_model, 1), inverted(mods, tiny_model, 2)
    with pytest.raises(ValueError, match="not patched.*plain image.*MCA Attention Patch"):
        call_node(mods, tiny_model, subject, condition)


@pytest.mark.parametrize("task", [Task.SWAP, Task.ADD])
def test_swap_and_add_refuse_a_condition_that_was_not_inverted(mods, tiny_model, task):
    subject = inverted(mods, tiny_model, 1)
    encoded_only = {"samples": torch.randn(1, 4, 8, 8)}  # what VAE Encode gives: no trajectory
    with pytest.raises(ValueError, match=f"the {task.value} preset needs the condition image inverted"):
        call_node(mods, with_patch(tiny_model, task), subject, encoded_only)


def test_the_schedule_comes_from_the_subject_trajectory(mods, tiny_model):
    subject, condition = inverted(mods, tiny_model, 1, steps=3), inverted(mods, tiny_model, 2, steps=3)
    model = with_patch(tiny_model)
    states = []
    run_sampler(mods, model, subject, condition, record=states)
    assert len(states) == 3
    explicit = subject["mca_trajectory"]["sigmas"].clone()
    target, *_ = call_node(mods, model, subject, condition, sigmas=explicit)
    default, *_ = call_node(mods, model, subject, condition)
    assert torch.equal(target["samples"], default["samples"])


def test_trajectory_from_another_schedule_is_refused(mods, tiny_model):
    import comfy.samplers

    karras = comfy.samplers.calculate_sigmas(tiny_model.get_model_object("model_sampling"), "karras", STEPS)
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(4))
    subject = mods["invert"].invert_latent(tiny_model, latent, tiny_prompt(0), tiny_prompt(0), 1.0, karras.cpu())
    with pytest.raises(ValueError, match="condition was inverted on another noise schedule than the subject"):
        call_node(mods, with_patch(tiny_model), subject, inverted(mods, tiny_model, 2))
    subject = inverted(mods, tiny_model, 1)
    with pytest.raises(ValueError, match="subject was inverted on another noise schedule than the SIGMAS input"):
        call_node(mods, with_patch(tiny_model), subject, inverted(mods, tiny_model, 2), sigmas=karras)


@pytest.mark.parametrize("size", [1, 4, 7])
def test_latents_smaller_than_the_coarsest_site_are_refused(mods, tiny_model, size):
    tiny = {"samples": torch.zeros(1, 4, size, size)}
    with pytest.raises(ValueError, match=f"latent is {size}x{size}.*needs at least 8x8 \\(64x64 px\\)") as refused:
        mods["invert_node"].MCADDIMInvert.execute(tiny_model, tiny, tiny_prompt(0), STEPS, 1.0)
    assert "level level" not in str(refused.value)
    subject = inverted(mods, tiny_model, 1)
    with pytest.raises(ValueError, match="needs at least 8x8"):
        call_node(mods, with_patch(tiny_model), subject, tiny)


def test_cancel_stops_the_sampler(mods, tiny_model):
    import comfy.model_management

    subject, condition = inverted(mods, tiny_model, 1), inverted(mods, tiny_model, 2)
    comfy.model_management.interrupt_current_processing(True)
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            call_node(mods, with_patch(tiny_model), subject, condition)
    finally:
        comfy.model_management.interrupt_current_processing(False)
