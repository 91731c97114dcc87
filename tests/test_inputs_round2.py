"""Bad or mixed inputs, second round: each one is refused (or flagged) with a message that says what to change,
and the next valid run still succeeds. Node level: the functions the nodes call."""
from __future__ import annotations

import logging

import pytest
import torch

import random_models
from mca_ctrl.mca_attention.comfy_patch import patch_model
from mca_ctrl.mca_attention.schedule import MCASchedule
from mca_ctrl.mca_attention.tasks import PRESETS, Task
from mca_ctrl.mca_attention import invert
from mca_ctrl.nodes import sampler
from random_models import square_mask, tiny_prompt, tiny_sdxl_prompt

STEPS = 3
SUBJECT_MASK, EDIT_MASK = square_mask(64, 16, 48), square_mask(64, 8, 40)


def inverted(model, prompt, seed, channels=4):
    latent = torch.randn(1, channels, 8, 8, generator=torch.Generator().manual_seed(seed))
    return invert.invert_latent(model, latent, prompt, prompt, 1.0, invert.schedule_sigmas(model, STEPS, None))


def patched(model, task=Task.SWAP, subject_mask=SUBJECT_MASK, schedule=None):
    return patch_model(model, PRESETS[task], schedule or MCASchedule(0.0, 0.34, 0.34, 1.0, 0), subject_mask, EDIT_MASK)


@pytest.fixture()
def sd15(pack):
    model = random_models.tiny_sd15_model()
    return model, inverted(model, tiny_prompt(0), 1), inverted(model, tiny_prompt(0), 2)


def sample(model, subject, condition, prompts=None, seed=0):
    prompts = prompts or (tiny_prompt(1), tiny_prompt(2), tiny_prompt(3), tiny_prompt(9))
    rows = sampler.mca_sample(model, *prompts, subject, condition, seed, 5.0).rows
    return rows


def test_inversions_from_another_model_family_are_refused_both_ways(sd15):
    model, subject, condition = sd15
    sdxl = random_models.tiny_family_model("SDXL")
    sdxl_subject = inverted(sdxl, tiny_sdxl_prompt(0), 1)
    source = sdxl_subject["mca_trajectory"]["source"]
    assert {**source, "settings": None} == {"family": "SDXL", "latent_format": "SDXL", "sampling": "EPS",
                                            "settings": None} and source["settings"].startswith("sigmas 0.02")
    with pytest.raises(ValueError, match="the subject was inverted by a SDXL model .*SDXL latents.* but the MCA "
                                         "Sampler's model is Stable Diffusion 1.x .*same loader"):
        sample(patched(model), sdxl_subject, condition)
    sd15_condition = condition
    with pytest.raises(ValueError, match="the condition was inverted by a Stable Diffusion 1.x model"):
        rows = [tiny_sdxl_prompt(s) for s in (1, 2, 3, 9)]
        sampler.mca_sample(patched(sdxl), *rows, sdxl_subject, sd15_condition, 0, 5.0)
    assert torch.isfinite(sample(patched(model), subject, condition)).all()


def test_prompts_from_another_text_encoder_name_the_prompt_and_the_encoder(sd15):
    model, subject, condition = sd15
    wide = tiny_prompt(3, dim=48)
    with pytest.raises(ValueError, match="target_prompt holds 48-wide text tokens but this Stable Diffusion 1.x model "
                                         "reads 32-wide ones: encode target_prompt with the CLIP"):
        sample(patched(model), subject, condition, (tiny_prompt(1), tiny_prompt(2), wide, tiny_prompt(9)))
    with pytest.raises(ValueError, match="negative holds 48-wide"):
        sample(patched(model), subject, condition, (tiny_prompt(1), tiny_prompt(2), tiny_prompt(3), wide))
    sdxl = random_models.tiny_family_model("SDXL")
    sdxl_subject, sdxl_condition = (inverted(sdxl, tiny_sdxl_prompt(0), seed) for seed in (1, 2))
    rows = [tiny_sdxl_prompt(s) for s in (1, 2, 3, 9)]
    rows[1] = tiny_prompt(2)  # an SD1.5-style encode: no pooled output
    with pytest.raises(ValueError, match="subject_prompt has no pooled text output, which this SDXL model needs"):
        sampler.mca_sample(patched(sdxl), *rows, sdxl_subject, sdxl_condition, 0, 5.0)
    flux = random_models.tiny_flux_model()
    flux_rows = [random_models.tiny_flux_prompt(s) for s in (1, 2, 3, 9)]
    flux_rows[2][0][1]["pooled_output"] = torch.zeros(1, 7)
    flux_subject, flux_condition = (inverted(flux, random_models.tiny_flux_prompt(0), s, 16) for s in (1, 2))
    with pytest.raises(ValueError, match="target_prompt has a 7-wide pooled output but this Flux.1 model needs 32"):
        sampler.mca_sample(patched(flux), *flux_rows, flux_subject, flux_condition, 0, 1.0)
    assert torch.isfinite(sample(patched(model), subject, condition)).all()


def test_a_mask_of_another_aspect_ratio_is_refused_with_both_sizes(sd15):
    model, subject, condition = sd15
    stretched = torch.zeros(1, 96, 64)
    stretched[:, 24:72, 16:48] = 1.0
    with pytest.raises(ValueError, match="subject_mask is 64x96 but the 8x8 latent is 8x8, another aspect ratio"):
        sample(patched(model, subject_mask=stretched), subject, condition)
    with pytest.raises(ValueError, match="blend_mask is 64x96"):
        sampler.mca_sample(patched(model), tiny_prompt(1), tiny_prompt(2), tiny_prompt(3), tiny_prompt(9), subject,
                           condition, 0, 5.0, blend_mask=stretched)
    same_aspect = torch.nn.functional.interpolate(SUBJECT_MASK[None], size=(128, 128), mode="nearest")[0]
    assert torch.isfinite(sample(patched(model, subject_mask=same_aspect), subject, condition)).all()


def test_a_region_of_another_aspect_ratio_is_refused_by_slm_mask(pack):
    from mca_ctrl.nodes.slm_nodes import region_mask

    with pytest.raises(ValueError, match="region is 64x96 but image 0 is 64x64"):
        region_mask(torch.ones(1, 96, 64), 0, 64, 64)
    assert region_mask(torch.ones(1, 128, 128), 0, 64, 64).shape == (1, 64, 64)


@pytest.mark.parametrize("option, node", [({"area": (8, 8, 0, 0), "strength": 1.0, "set_area_to_bounds": False},
                                            "ConditioningSetArea"),
                                           ({"mask": torch.ones(1, 8, 8), "set_area_to_bounds": False,
                                             "mask_strength": 1.0}, "ConditioningSetMask")])
def test_area_and_mask_conditioning_are_refused_by_node_kind(sd15, option, node):
    model, subject, condition = sd15
    target = tiny_prompt(3)
    target[0][1].update(option)
    with pytest.raises(ValueError, match=f"target_prompt carries .*{node}.*MCA rows do not support"):
        sample(patched(model), subject, condition, (tiny_prompt(1), tiny_prompt(2), target, tiny_prompt(9)))
    assert torch.isfinite(sample(patched(model), subject, condition)).all()


def test_the_seed_is_said_to_change_nothing_in_swap(sd15, caplog):
    model, subject, condition = sd15
    mca = patched(model)
    with caplog.at_level(logging.WARNING):
        first = sample(mca, subject, condition, seed=1)
        second = sample(mca, subject, condition, seed=2)
    assert torch.equal(first, second)
    said = [r.getMessage() for r in caplog.records if "changes nothing in swap/add" in r.getMessage()]
    assert len(said) == 2 and "seed 2" in said[1], said


def test_a_schedule_under_which_nothing_runs_warns(sd15, caplog):
    model, subject, condition = sd15
    silent = patched(model, schedule=MCASchedule(0.0, 0.0, 0.0, 0.0, 0))
    with caplog.at_level(logging.WARNING):
        sample(silent, subject, condition)
    assert any("no SAGI and no SALQ step runs" in r.getMessage() and "plain image" in r.getMessage()
               for r in caplog.records)


class ProgressTextRecorder:
    def __init__(self):
        self.texts = []

    def send_progress_text(self, text, node_id, sid=None):
        self.texts.append((node_id, text))


def test_a_ksampler_given_the_patched_model_tells_the_ui(sd15, monkeypatch):
    import comfy.sample
    import server
    from comfy_execution.utils import CurrentNodeContext

    model, _, _ = sd15
    recorder = ProgressTextRecorder()
    monkeypatch.setattr(server.PromptServer, "instance", recorder, raising=False)
    latent = torch.zeros(1, 4, 8, 8)
    with CurrentNodeContext("prompt", "12"):
        comfy.sample.sample(patched(model), latent, 2, 5.0, "ddim", "ddim_uniform", tiny_prompt(1), tiny_prompt(9),
                            latent, disable_pbar=True, seed=0)
    assert len(recorder.texts) == 1 and recorder.texts[0][0] == "12"
    assert "outside the MCA Sampler" in recorder.texts[0][1]
