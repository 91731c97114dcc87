"""Every input answered, third round (issue 25): sweep values checked when the prompt is queued, sweep cells that
coincide named, a guidance-distilled model at cfg > 1 said to be one, labels that read well, counts in words."""
from __future__ import annotations

import asyncio
import json
import logging
import uuid

import pytest
import torch
from PIL import Image

import comfy_host
import random_models
from mca_ctrl.drawing.tiles import LABEL_LINES, label_lines, labelled_grid
from mca_ctrl.mca_attention import engine, invert
from mca_ctrl.mca_attention.batch import target_cells
from mca_ctrl.mca_attention.comfy_patch import patch_model
from mca_ctrl.mca_attention.schedule import MCASchedule
from mca_ctrl.mca_attention.sweep import parse_axis
from mca_ctrl.mca_attention.tasks import PRESETS, Task
from mca_ctrl.nodes import NODE_CLASS_MAPPINGS, attention_patch, batch_nodes
from random_models import square_mask, tiny_flux_prompt, tiny_prompt

SUBJECT_MASK, EDIT_MASK = square_mask(64, 16, 48), square_mask(64, 8, 40)


@pytest.mark.parametrize("setting, values, message", [
    ("salq_end", "0.8, abc", r"'abc' in '0.8, abc' is not one"),
    ("sagi_end", "0.1,,0.2", "an empty value between two commas"),
    ("sagi_end", ",0.1", "an empty value between two commas"),
    ("sagi_end", "0.1, 0.1", "repeats 0.1: each value makes a cell"),
    ("salq_start", "0.2, 1.5", r"salq_start is a fraction \(0..1, or -1 .*\); the sweep has 1.5"),
    ("salq_sites", "-0.5", "the sweep has -0.5"),
    ("salq_first_site", "2.5, -2", r"a site index .*; the sweep has 2.5, -2"),
    ("sagi_end", " , ", "has no values"),
])
def test_malformed_sweep_values_are_refused_with_the_value_named(pack, setting, values, message):
    with pytest.raises(ValueError, match=message):
        parse_axis(setting, values)
    assert NODE_CLASS_MAPPINGS["MCA_ScheduleSweep"].validate_inputs(setting, values).startswith("MCA Schedule Sweep:")


def test_good_sweep_values_pass_and_a_trailing_comma_is_harmless(pack):
    assert parse_axis("sagi_end", "0.1, 0.2,").values == (0.1, 0.2)
    assert parse_axis("salq_first_site", "-1, 3").values == (-1, 3)
    assert NODE_CLASS_MAPPINGS["MCA_ScheduleSweep"].validate_inputs("sagi_end", "0.05, 0.1") is True
    assert NODE_CLASS_MAPPINGS["MCA_ScheduleSweep"].validate_inputs("sagi_end", None) is True, "a linked input"


def test_comfyuis_prompt_validation_refuses_a_bad_sweep_before_anything_runs(pack):
    """The shipped sweep workflow with ``salq_end = 0.8, abc``: ComfyUI's own validation (what the server runs when a
    prompt is queued) fails on the sweep node, naming it and the value; no node executes."""
    import execution

    prompt = json.loads((comfy_host.REPO / "example_workflows" / "api" / "mca_swap_sweep.json").read_text())
    sweep_id = next(node_id for node_id, node in prompt.items() if node["class_type"] == "MCA_ScheduleSweep"
                    and node["inputs"]["setting"] == "salq_end")
    prompt[sweep_id]["inputs"]["values"] = "0.8, abc"
    valid, error, _, node_errors = asyncio.run(execution.validate_prompt(str(uuid.uuid4()), prompt, None))
    assert not valid
    messages = [e["details"] for e in node_errors[sweep_id]["errors"]]
    assert any("MCA Schedule Sweep: the salq_end sweep values must be numbers" in m and "'abc'" in m for m in messages)


def test_sweep_cells_that_run_the_same_table_at_few_steps_are_named(sd15, caplog, monkeypatch):
    """sagi_end 0.1 and 0.3 at 3 steps both run SAGI at step 0 only: the same image twice, said on the node.

    The same to float rounding, not bit for bit: a CPU's matrix kernels may round a row differently by its place
    in the batch (on AVX-512, rows 8 and 9 of a 10-row product differ from rows 0-7 in the last bits), and 3 steps
    at cfg 5 grow that to about 1e-4 here; the third cell differs by about 0.3."""
    import mca_ctrl.mca_attention.engine as engine_module

    told = []
    monkeypatch.setattr(engine_module, "tell_the_ui", told.append)
    model, subject, condition = sd15
    sweep = batch_nodes.MCAScheduleSweep.execute("sagi_end", "0.1, 0.3, 0.8")[0]
    (mca,) = attention_patch.MCAAttentionPatch.execute(model, SUBJECT_MASK, "swap", -1, -1, -1, -1, -1, -1,
                                                      edit_mask=EDIT_MASK, sweep=sweep)
    with caplog.at_level(logging.WARNING):
        out = engine.mca_sample(mca, tiny_prompt(1), tiny_prompt(2), tiny_prompt(3), tiny_prompt(9), subject,
                                condition, 0, 5.0)
    torch.testing.assert_close(out.targets[1], out.targets[0], rtol=0, atol=1e-3)
    assert (out.targets[2] - out.targets[0]).abs().max() > 0.05
    said = [line for m in told for line in m.split("\n") if "sweep cells" in line]
    assert said == ["MCA Sampler: the sweep cells sagi_end=0.1 and sagi_end=0.3 run SAGI and SALQ at the same steps "
                    "and sites at 3 steps, so their targets are the same image: use more steps, or values further "
                    "apart."]
    assert said[0] in caplog.text


def test_a_guidance_distilled_model_at_cfg_above_1_is_said_to_be_one(pack, monkeypatch):
    """Flux.1 dev (guidance embedded) at cfg 4: a warning on the node; at cfg 1, and on Chroma (real CFG), none."""
    import mca_ctrl.mca_attention.engine as engine_module

    told = []
    monkeypatch.setattr(engine_module, "tell_the_ui", told.append)
    for build, prompt, cfg, expected in ((random_models.tiny_flux_model, tiny_flux_prompt, 4.0, 1),
                                         (random_models.tiny_flux_model, tiny_flux_prompt, 1.0, 0),
                                         (random_models.tiny_chroma_model,
                                          lambda s: tiny_flux_prompt(s, guidance=None, pooled=False), 4.0, 0)):
        told.clear()
        model = build()
        latent = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(1))
        sigmas = invert.schedule_sigmas(model, 2, None)
        inverted = invert.invert_latent(model, latent, prompt(0), prompt(0), 1.0, sigmas)
        mca = patch_model(model, PRESETS[Task.SWAP], MCASchedule(0.0, 0.5, 0.5, 1.0, 0), SUBJECT_MASK, EDIT_MASK)
        engine.mca_sample(mca, prompt(1), prompt(2), prompt(3), prompt(9), inverted, inverted, 0, cfg)
        distilled = [m for m in told if "guidance-distilled" in m]
        assert len(distilled) == expected, (build.__name__, cfg, told)
        assert all("twice the time" in m and "Set cfg to 1" in m for m in distilled)


def test_a_one_value_sweep_labels_its_target_and_counts_read_as_words(pack):
    assert [cell.label for cell in target_cells(0, ["sagi_end=0.1"], ["prompt 1"], 1, seeded=False)] == [
        "sagi_end=0.1"]
    assert [cell.label for cell in target_cells(0, [""], ["prompt 1"], 1, seeded=False)] == [""], "no sweep: none"
    with pytest.raises(ValueError, match=r"cannot pair 1 schedule cell \(MCA Schedule Sweep\), 2 target prompts .*"
                                         r"3 seeds"):
        target_cells(0, ["a"], ["p", "q"], 3, seeded=True)


def test_a_long_prompt_label_ends_in_an_ellipsis_and_words_stay_whole(pack):
    """A 2,000-character prompt labels its tile in at most three lines (the full text stays in the labels output),
    and no word is cut at a small tile."""
    words = "a photograph of an extraordinarily photogenic corgi " * 40
    lines = label_lines(words.strip(), 20)
    assert len(lines) == LABEL_LINES and lines[-1].endswith("…")
    assert all(part in words.split() or part == "…" for line in lines for part in line.split())
    tile = Image.new("RGB", (64, 64))
    short = labelled_grid([tile, tile], ["short", "also short"], 2, 128)
    long = labelled_grid([tile, tile], ["short", words], 2, 128)
    assert long.height - short.height == (LABEL_LINES - 1) * 18, "three label lines, not 2,300 px of them"


@pytest.mark.parametrize("key, value, node", [
    ("noise_mask", torch.ones(1, 1, 64, 64), "Set Latent Noise Mask"),
    ("batch_index", [3], "Latent From Batch"),
    ("crop_box", (0, 0, 8, 8), "does not know what to do with"),
])
def test_latent_keys_from_neighbouring_nodes_are_refused_by_name(sd15, key, value, node):
    """A LATENT key the core sampler would act on (a noise mask limits the change to a region; batch indices pick the
    noise) is refused by name on every MCA input that takes a LATENT, with what to use instead; an unknown key too."""
    from mca_ctrl.nodes.ddim_invert import MCADDIMInvert

    model, subject, condition = sd15
    mca = patch_model(model, PRESETS[Task.SWAP], MCASchedule(0.0, 0.5, 0.5, 1.0, 0), SUBJECT_MASK, EDIT_MASK)
    prompts = (tiny_prompt(1), tiny_prompt(2), tiny_prompt(3), tiny_prompt(9))
    with pytest.raises(ValueError, match=f"condition carries .*{node}"):
        engine.mca_sample(mca, *prompts, subject, {**condition, key: value}, 0, 5.0)
    generation = patch_model(model, PRESETS[Task.GENERATION], MCASchedule(0.0, 0.5, 0.5, 1.0, 0), SUBJECT_MASK,
                             EDIT_MASK)
    with pytest.raises(ValueError, match=f"condition carries .*{node}"):
        engine.mca_sample(generation, *prompts, subject, {"samples": torch.zeros(1, 4, 8, 8), key: value}, 0, 5.0)
    with pytest.raises(ValueError, match=f"latent carries .*{node}"):
        MCADDIMInvert.execute(model, {"samples": torch.randn(1, 4, 8, 8), key: value}, tiny_prompt(0), 2, 1.0)


def test_an_empty_latent_of_another_family_is_made_the_models_own_as_comfyui_does(pack):
    """Empty Latent Image (4 channels at 1/8; newer ComfyUI says so in downscale_ratio_spacial) given to a Flux.2
    generation: ComfyUI's samplers turn it into the model's empty latent (128 channels; at 1/16 where the ratio is
    given), and so does the MCA Sampler, instead of refusing it."""
    import comfy.sample

    model = random_models.tiny_flux2_model()
    prompt = random_models.tiny_flux2_prompt
    sigmas = invert.schedule_sigmas(model, 2, None)
    subject = invert.invert_latent(model, torch.randn(1, 128, 4, 4, generator=torch.Generator().manual_seed(1)),
                                   prompt(0), prompt(0), 1.0, sigmas)
    mca = patch_model(model, PRESETS[Task.GENERATION], MCASchedule(0.0, 0.5, 0.5, 1.0, 0), SUBJECT_MASK, EDIT_MASK)
    ratio = "downscale_ratio_spacial" in __import__("inspect").signature(comfy.sample.fix_empty_latent_channels).parameters
    empty = {"samples": torch.zeros(1, 4, 8, 8), **({"downscale_ratio_spacial": 8} if ratio else {})}
    if not ratio:
        empty["samples"] = torch.zeros(1, 4, 4, 4)  # ComfyUI 0.3.75 keeps the size: an 8 px-per-cell 32 px image
    out = engine.mca_sample(mca, prompt(1), prompt(2), prompt(3), prompt(9), subject, empty, 0, 1.0)
    assert out.rows.shape == (3, 128, 4, 4) and torch.isfinite(out.rows).all()


def test_a_model_already_mca_patched_is_refused_by_the_patch(sd15):
    """Two MCA Attention Patch nodes in a row would nest two hooks over one batch (on Z-Image they would count each
    call twice): the second one says so."""
    model, _, _ = sd15
    schedule = MCASchedule(0.0, 0.5, 0.5, 1.0, 0)
    once = patch_model(model, PRESETS[Task.SWAP], schedule, SUBJECT_MASK, EDIT_MASK)
    with pytest.raises(ValueError, match="already patched: connect the model from its loader"):
        patch_model(once, PRESETS[Task.SWAP], schedule, SUBJECT_MASK, EDIT_MASK)


def test_a_big_run_leaves_nothing_of_the_pack_behind(sd15):
    """Issue 25, memory after a big run: after 60 targets in one pass no run object or run cache of the pack is alive
    and the patched model's settings hold no tensor beyond its masks; what the process keeps is the allocator's
    (README, "Memory after a run")."""
    import gc

    from mca_ctrl.mca_attention.comfy_patch import mca_state
    from mca_ctrl.mca_attention.run import MCARun, RunCache

    model, subject, condition = sd15
    schedules = [MCASchedule(0.0, 0.3 + 0.001 * i, 0.3, 1.0, 9) for i in range(60)]
    mca = patch_model(model, PRESETS[Task.SWAP], schedules, SUBJECT_MASK, EDIT_MASK,
                      labels=[f"cell {i}" for i in range(60)])
    out = engine.mca_sample(mca, tiny_prompt(1), tiny_prompt(2), tiny_prompt(3), tiny_prompt(9), subject, condition,
                            0, 5.0, targets_per_pass=60)
    assert out.targets.shape[0] == 60
    del out
    gc.collect()
    alive = [o for o in gc.get_objects() if type(o) in (MCARun, RunCache)]
    assert not alive, f"{len(alive)} run objects survive the run"
    state = mca_state(mca)
    held = {name: value for name, value in vars(state).items() if isinstance(value, torch.Tensor)}
    assert set(held) <= {"subject_mask", "edit_mask", "target_text_cond"}, set(held)
