"""Many targets in one pass (issue 17): N target rows against shared condition and subject rows.

Equality with the run of each cell alone is checked on float64 UNets: ComfyUI casts every model output
to float32, and float64 kernels' batch-size rounding (~1e-15) stays below that cast, so a target of a
batched run equals its cell run alone to float32 precision (tolerance 1e-6 of the latent's scale). In
float32 the CPU kernels round differently per batch size (~1e-5 relative per step), which cfg on random
UNet weights amplifies over the steps; that says nothing about the batching, so these tests avoid it.
Flux runs in float32 (newer ComfyUI's RoPE kernel takes no float64), where the rounding stays at ~1e-6
(tolerance 1e-5, see FAMILIES).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import pytest
import torch

import random_models
from comfy_host import split_cond_uncond
from dense_reference import check_joint_calls, check_recorded_calls, recording, recording_override
from random_models import square_mask
from mca_ctrl.mca_attention.adapters.mmdit import token_grid
from mca_ctrl.mca_attention.batch import plan_passes, target_cells
from mca_ctrl.mca_attention.comfy_patch import mca_state, patch_model
from mca_ctrl.mca_attention.layout import BatchShape
from mca_ctrl.mca_attention.schedule import MCASchedule, Op
from mca_ctrl.mca_attention.sweep import parse_axis
from mca_ctrl.mca_attention.tasks import PRESETS, Task
from mca_ctrl.mca_attention import engine
from mca_ctrl.mca_attention import invert
from mca_ctrl.nodes import attention_patch, batch_nodes, sampler
from mca_ctrl.mca_attention.prompts import LABEL_KEY

STEPS = 5
SUBJECT_MASK, EDIT_MASK = square_mask(64, 16, 48), square_mask(64, 8, 40)
# Three cells that differ at every stage: SAGI 1 or 2 steps, SALQ from step 1 or 3, at all or the last sites.
SCHEDULES = [MCASchedule(0.0, 0.2, 0.2, 1.0, 0), MCASchedule(0.0, 0.4, 0.6, 1.0, 0), MCASchedule(0.0, 0.2, 0.4, 0.8, 9)]
TOLERANCE = 1e-6


@dataclass(frozen=True)
class Family:
    name: str
    model: Callable
    prompt: Callable  # seed -> CONDITIONING
    channels: int
    tolerance: float = TOLERANCE  # of the latent's scale
    frames: tuple[int, ...] = ()  # Qwen-Image's 5-D latent: (1,)

    def latent(self, batch: int) -> tuple[int, ...]:
        return (batch, self.channels, *self.frames, 8, 8)


FAMILIES = {
    "sd15": Family("sd15", lambda: random_models.tiny_sd15_model(dtype=torch.float64), random_models.tiny_prompt, 4),
    "sdxl": Family("sdxl", lambda: random_models.tiny_family_model("SDXL", dtype=torch.float64),
                   random_models.tiny_sdxl_prompt, 4),
    # float32: newer ComfyUI's RoPE kernel (comfy_kitchen) takes no float64. Measured on 0.3.75: batched vs alone
    # at most 1.3e-6 of the latent's scale (0 when cond and uncond run split), so 1e-5 bounds the rounding.
    "flux": Family("flux", lambda: random_models.tiny_flux_model(), random_models.tiny_flux_prompt, 16, 1e-5),
    # the prompts the model left-pads to 512 tokens, cfg 1 with guidance as its template (and real CFG too)
    "flux2": Family("flux2", lambda: random_models.tiny_flux2_model(), random_models.tiny_flux2_prompt, 128, 1e-5),
    # the call counter, the refiners, the image pad tokens
    "z_image": Family("z_image", lambda: random_models.tiny_z_image_model(), random_models.tiny_z_image_prompt, 16,
                      1e-5),
    "qwen_image": Family("qwen_image", lambda: random_models.tiny_qwen_image_model(), random_models.tiny_qwen_prompt,
                         16, 1e-5, (1,)),
}


def cell_schedules(family: Family) -> list[MCASchedule]:
    """SCHEDULES with the site index kept inside the family's sites (the tiny DiTs: 3 to 5 sites)."""
    if family.name in ("sd15", "sdxl"):
        return SCHEDULES
    return [MCASchedule(s.sagi_start, s.sagi_end, s.salq_start, s.salq_end, min(s.salq_first_site, 2))
            for s in SCHEDULES]


def inverted(model, family: Family, seed: int) -> dict:
    latent = torch.randn(family.latent(1), generator=torch.Generator().manual_seed(seed))
    sigmas = invert.schedule_sigmas(model, STEPS, None)
    return invert.invert_latent(model, latent, family.prompt(0), family.prompt(0), 1.0, sigmas)


def labelled(prompts: list) -> list:
    """Several prompts as MCA Target Prompts gives them: one entry each, labelled."""
    return [[tensor, {**options, LABEL_KEY: f"prompt {seed}"}] for seed, p in prompts for tensor, options in p]


def patched(model, task: Task, schedules, generation_tokens: bool = False):
    edit = None if generation_tokens else EDIT_MASK
    return patch_model(model, PRESETS[task], schedules, SUBJECT_MASK, edit, labels=[f"cell {i}" for i in
                                                                                   range(len(schedules))]
                       if isinstance(schedules, list) else None, subject=[1, 2] if generation_tokens else None)


@pytest.mark.parametrize("family_name", list(FAMILIES))
@pytest.mark.parametrize("task", [Task.SWAP, Task.GENERATION])
@pytest.mark.parametrize("mode", ["cfg batched", "cfg split", "cfg 1"])
def test_each_target_equals_its_cell_run_alone(pack, monkeypatch, family_name, task, mode):
    """N = 3 targets, each with its own schedule and prompt (swap) or its own schedule and seed (generation, with
    the edit region derived per target from its own cross-attention), in one pass: each equals its cell alone."""
    family = FAMILIES[family_name]
    model = family.model()
    schedules = cell_schedules(family)
    subject = inverted(model, family, 1)
    generation = task is Task.GENERATION
    condition = {"samples": torch.zeros(family.latent(3))} if generation else inverted(model, family, 2)
    targets = [family.prompt(3)] if generation else [family.prompt(s) for s in (3, 4, 5)]
    cfg = 1.0 if mode == "cfg 1" else 5.0
    if mode == "cfg split":
        split_cond_uncond(monkeypatch)
    batched_model = patched(model, task, schedules, generation_tokens=generation)
    state = mca_state(batched_model)
    state.trace = []
    target_prompt = targets[0] if generation else labelled(list(zip((3, 4, 5), targets)))
    batch = sampler.mca_sample(batched_model, family.prompt(1), family.prompt(2), target_prompt, family.prompt(9),
                               subject, condition, 11, cfg)
    assert batch.targets.shape == family.latent(3)
    assert batch.shape == (BatchShape(3, (0, 1, 2)) if generation else BatchShape(1, (0, 0, 0)))
    chunks = {chunks for *_, chunks in state.trace}
    assert chunks == ({2} if mode == "cfg batched" else {1}), f"ComfyUI ran {chunks} chunks per call"
    assert {op for *_, ops, _ in state.trace for op in ops} >= {Op.SAGI, Op.SALQ}
    for j, schedule in enumerate(schedules):
        alone = sampler.mca_sample(patched(model, task, schedule, generation_tokens=generation), family.prompt(1),
                                   family.prompt(2), targets[0 if generation else j], family.prompt(9), subject,
                                   {"samples": condition["samples"][:1]} if generation else condition,
                                   11 + j if generation else 11, cfg)
        scale = float(alone.rows.abs().max())
        torch.testing.assert_close(batch.targets[j], alone.targets[0], atol=family.tolerance * scale, rtol=0,
                                   msg=lambda m, j=j: f"target {j} differs from its cell run alone: {m}")
        if generation:
            torch.testing.assert_close(batch.rows[j], alone.rows[0], atol=family.tolerance * scale, rtol=0)
            torch.testing.assert_close(batch.edit_masks[j], alone.edit_masks[0], atol=10 * family.tolerance, rtol=0,
                                       msg="each target derives its own edit region")
    differences = [float((batch.targets[i] - batch.targets[j]).abs().max()) for i, j in ((0, 1), (1, 2), (0, 2))]
    assert min(differences) > 100 * family.tolerance * float(batch.rows.abs().max()), f"cells too alike: {differences}"


def expected_ops(schedules: list[MCASchedule], site_of) -> Callable:
    return lambda step, key: tuple(s.op_at(step, site_of(key), STEPS) for s in schedules)


def test_each_unet_target_row_runs_its_own_op_per_step_and_site(pack):
    """The dense per-call check extended to N target rows: every recorded call equals the plain dense formula
    with each target's own op (from its own schedule) at that step and site."""
    family = FAMILIES["sd15"]
    model = family.model()
    schedules = cell_schedules(family)
    mca = patched(model, Task.SWAP, schedules)
    calls: list = []
    prompts = labelled([(s, family.prompt(s)) for s in (3, 4, 5)])
    sampler.mca_sample(recording(mca, calls), family.prompt(1), family.prompt(2), prompts, family.prompt(9),
                       inverted(model, family, 1), inverted(model, family, 2), 0, 5.0)
    from mca_ctrl.mca_attention.unet_sites import find_attention_sites

    site_of = {site.key: site.index for site in find_attention_sites(model.get_model_object("diffusion_model"))}
    ops = expected_ops(schedules, lambda key: site_of[key])
    seen = check_recorded_calls(calls, ops, SUBJECT_MASK, EDIT_MASK, BatchShape(1, (0, 0, 0)))
    assert seen == {Op.SAGI, Op.SALQ, Op.NONE}
    assert any(len(set(ops(call["step"], call["key"]))) == 3 for call in calls), "some call mixes all three ops"


def test_each_flux_target_row_runs_its_own_op_per_step_and_site(pack):
    """The joint-attention dense check with N target rows, in generation with two seeds: targets 0 and 2 share
    the condition row of seed 11, target 1 has its own (layout [c11, c12, subject, t0, t1, t2])."""
    family = FAMILIES["flux"]
    model = family.model()
    schedules = cell_schedules(family)
    mca = patched(model, Task.GENERATION, schedules)
    calls: list = []
    patch_size = model.get_model_object("diffusion_model").patch_size
    subject = inverted(model, family, 1)
    shared = {"samples": torch.zeros(1, 16, 8, 8)}
    out = sampler.mca_sample(recording_override(mca, calls, lambda size: token_grid(size, patch_size)),
                             family.prompt(1), family.prompt(2), family.prompt(3), family.prompt(9), subject, shared, 11,
                             1.0)
    assert out.shape == BatchShape(1, (0, 0, 0)), "one seed: the three targets share one condition row"
    index = {("double", 0): 0, ("double", 1): 1, **{("single", i): 2 + i for i in range(3)}}
    seen = check_joint_calls(calls, expected_ops(schedules, lambda key: index[key]), SUBJECT_MASK, EDIT_MASK,
                             shape=out.shape)
    assert seen == {Op.SAGI, Op.SALQ, Op.NONE}


def test_targets_split_into_passes_keep_their_results_and_say_so(pack, caplog):
    """N = 5 in passes of 2 (2 + 2 + 1: the last pass is shorter): every target equals the single pass, and the log
    says the targets were split. Generation: each pass holds only the condition rows of its own seeds."""
    family = FAMILIES["sd15"]
    model = family.model()
    schedules = [*cell_schedules(family), SCHEDULES[0], SCHEDULES[1]]
    mca = patched(model, Task.GENERATION, schedules)
    args = (family.prompt(1), family.prompt(2), family.prompt(3), family.prompt(9), inverted(model, family, 1),
            {"samples": torch.zeros(5, 4, 8, 8)}, 3, 5.0)
    whole = sampler.mca_sample(mca, *args)
    with caplog.at_level(logging.INFO):
        parts = sampler.mca_sample(mca, *args, targets_per_pass=2)
    assert "5 targets in 3 passes of at most 2" in caplog.text
    scale = float(whole.rows.abs().max())
    torch.testing.assert_close(parts.rows, whole.rows, atol=TOLERANCE * scale, rtol=0)
    assert parts.labels == whole.labels == [f"cell {j}, seed={3 + j}" for j in range(5)]
    passes = plan_passes(target_cells(3, [""] * 5, ["p"], 5, seeded=True), 2, seeded=True)
    assert [p.cells for p in passes] == [(0, 1), (2, 3), (4,)]
    assert [p.shape.rows for p in passes] == [5, 5, 3]


def test_free_memory_decides_the_targets_per_pass(pack, monkeypatch, caplog):
    """targets_per_pass 0: as many targets as ComfyUI's free-memory estimate fits (rows x memory_required x 1.5)."""
    import comfy.model_management

    family = FAMILIES["sd15"]
    model = family.model()
    mca = patched(model, Task.SWAP, cell_schedules(family) + [SCHEDULES[0]])
    subject, condition = inverted(model, family, 1), inverted(model, family, 2)
    per_row = model.memory_required([1, 4, 8, 8])
    unloaded = mca.model_size() - mca.loaded_size()  # the weights still to load count against the free memory
    fits_two = model.memory_required([4, 4, 8, 8]) * 1.5 + per_row + unloaded  # condition, subject, 2 targets: not 3
    monkeypatch.setattr(comfy.model_management, "get_free_memory",
                        lambda dev=None, torch_free_too=False: (fits_two, fits_two) if torch_free_too else fits_two)
    assert engine.fitting_targets(mca, (1, 4, 8, 8), 4, seeded=False) == 2
    with caplog.at_level(logging.INFO):
        out = sampler.mca_sample(mca, family.prompt(1), family.prompt(2), family.prompt(3), family.prompt(9),
                                 subject, condition, 0, 1.0)
    assert out.targets.shape[0] == 4
    assert "4 targets in 2 passes of at most 2" in caplog.text and "free-memory estimate" in caplog.text


# --- how a user asks for it: the nodes --------------------------------------------------------------------


def test_schedule_sweep_nodes_make_the_patch_cells_in_grid_order(pack):
    model = FAMILIES["sd15"].model()
    sweep = batch_nodes.MCAScheduleSweep.execute("sagi_end", "0.1, 0.2")[0]
    sweep = batch_nodes.MCAScheduleSweep.execute("salq_sites", "-1, 0.5", sweep)[0]
    mca, = attention_patch.MCAAttentionPatch.execute(model, SUBJECT_MASK, "swap", -1, -1, -1, -1, -1, 3,
                                                     edit_mask=EDIT_MASK, sweep=sweep)
    state = mca_state(mca)
    assert state.labels == ("sagi_end=0.1, salq_sites=-1", "sagi_end=0.1, salq_sites=0.5",
                            "sagi_end=0.2, salq_sites=-1", "sagi_end=0.2, salq_sites=0.5")
    assert [s.sagi_end for s in state.schedules] == [0.1, 0.1, 0.2, 0.2]
    # salq_sites -1 is the preset (SD1.5: site 9), 0.5 is site 8; a swept salq_sites wins over the widget's site 3
    assert [s.salq_first_site for s in state.schedules] == [9, 8, 9, 8]
    assert state.grid_columns == 2, "the last swept setting's value count, carried as data"
    plain, = attention_patch.MCAAttentionPatch.execute(model, SUBJECT_MASK, "swap", -1, -1, -1, -1, -1, 3,
                                                       edit_mask=EDIT_MASK)
    assert mca_state(plain).schedules[0].salq_first_site == 3 and mca_state(plain).labels == ("",)
    assert mca_state(plain).grid_columns == 0


def test_the_sampler_hands_the_grid_its_columns(pack):
    """A 3 x 2 sweep: the sampler's grid_columns output is 2 and MCA Grid lays the 6 targets in rows of 2; several
    target prompts without a sweep give 0 (the grid chooses)."""
    family = FAMILIES["sd15"]
    model = family.model()
    sweep = batch_nodes.MCAScheduleSweep.execute("sagi_end", "0.2, 0.4, 0.6")[0]
    sweep = batch_nodes.MCAScheduleSweep.execute("salq_end", "0.8, 1.0", sweep)[0]
    mca, = attention_patch.MCAAttentionPatch.execute(model, SUBJECT_MASK, "swap", -1, -1, -1, -1, -1, -1,
                                                     edit_mask=EDIT_MASK, sweep=sweep)
    subject, condition = inverted(model, family, 1), inverted(model, family, 2)
    target, _, _, labels, columns = sampler.MCASampler.execute(mca, family.prompt(1), family.prompt(2),
                                                                family.prompt(3), family.prompt(9), subject, condition,
                                                                0, 1.0, True)
    assert columns == 2 and len(labels.split("\n")) == 6
    grid, = batch_nodes.MCAGrid.execute(torch.rand(6, 32, 32, 3), labels, columns, 64)
    assert grid.shape[2] == 2 * (64 + 6) + 6, "2 tiles a row"
    plain, = attention_patch.MCAAttentionPatch.execute(model, SUBJECT_MASK, "swap", -1, -1, -1, -1, -1, -1,
                                                       edit_mask=EDIT_MASK)
    *_, columns = sampler.MCASampler.execute(plain, family.prompt(1), family.prompt(2),
                                              labelled([(3, family.prompt(3)), (4, family.prompt(4))]),
                                              family.prompt(9), subject, condition, 0, 1.0, True)
    assert columns == 0


def test_grid_node_draws_one_labelled_tile_per_target(pack):
    images = torch.rand(4, 32, 48, 3)
    labels = "sagi_end=0.1, salq_end=0.8\nsagi_end=0.1, salq_end=1\nsagi_end=0.2, salq_end=0.8\nsagi_end=0.2, salq_end=1"
    grid, = batch_nodes.MCAGrid.execute(images, labels, 0, 64, "title")
    assert grid.shape[0] == 1 and grid.shape[3] == 3
    assert grid.shape[2] == 2 * (64 + 6) + 6, "columns 0: a square-ish grid, 2 x 2 for 4 tiles"
    assert grid.shape[1] > 2 * 64 and float(grid.std()) > 0.05
    three, = batch_nodes.MCAGrid.execute(images[:3], "a\nb\nc", 3, 64)
    assert three.shape[2] == 3 * 70 + 6
    with pytest.raises(ValueError, match="4 images but 3 labels"):
        batch_nodes.MCAGrid.execute(images, "a\nb\nc", 0, 64)


class FakeClip:
    """Records what MCA Target Prompts asks of a CLIP (tokenize, then encode as CLIP Text Encode does)."""

    def tokenize(self, text):
        return {"l": [[(len(text), 1.0)]]}

    def encode_from_tokens_scheduled(self, tokens):
        width = tokens["l"][0][0][0]
        return [[torch.full((1, 2, 4), float(width)), {"pooled_output": torch.full((1, 3), float(width))}]]


def test_target_prompts_node_gives_one_labelled_prompt_per_line(pack):
    conditioning, = batch_nodes.MCATargetPrompts.execute(FakeClip(), "a fox\n\n  a corgi dog \n")
    assert [options[LABEL_KEY] for _, options in conditioning] == ["a fox", "a corgi dog"]
    assert [float(tensor[0, 0, 0]) for tensor, _ in conditioning] == [5.0, 11.0]
    with pytest.raises(ValueError, match="0 targets"):
        batch_nodes.MCATargetPrompts.execute(FakeClip(), " \n ")


# --- bad input --------------------------------------------------------------------------------------------


def test_bad_batches_get_clear_errors(pack):
    family = FAMILIES["sd15"]
    model = family.model()
    subject, condition = inverted(model, family, 1), inverted(model, family, 2)
    three = patched(model, Task.SWAP, cell_schedules(family))
    two_prompts = labelled([(3, family.prompt(3)), (4, family.prompt(4))])
    with pytest.raises(ValueError, match="cannot pair 3 schedule cells .*2 target prompts"):
        sampler.mca_sample(three, family.prompt(1), family.prompt(2), two_prompts, family.prompt(9), subject,
                           condition, 0, 1.0)
    generation = patched(model, Task.GENERATION, cell_schedules(family))
    with pytest.raises(ValueError, match="batch is empty"):
        sampler.mca_sample(generation, family.prompt(1), family.prompt(2), family.prompt(3), family.prompt(9),
                           subject, {"samples": torch.zeros(0, 4, 8, 8)}, 0, 1.0)
    with pytest.raises(ValueError, match="one condition image per sampler"):
        sampler.mca_sample(three, family.prompt(1), family.prompt(2), family.prompt(3), family.prompt(9), subject,
                           {**condition, "samples": condition["samples"].repeat(2, 1, 1, 1)}, 0, 1.0)
    with pytest.raises(ValueError, match="no targets: there are 0 target prompts"):
        target_cells(0, ["a"], [], 1, seeded=False)
    with pytest.raises(ValueError, match="sweep has no values"):
        parse_axis("sagi_end", " , ")
    with pytest.raises(ValueError, match="not 'steps'.*one step count per pass"):
        parse_axis("steps", "10, 20")
    with pytest.raises(ValueError, match="already swept"):
        batch_nodes.MCAScheduleSweep.execute("sagi_end", "0.3", batch_nodes.MCAScheduleSweep.execute("sagi_end",
                                                                                                     "0.1")[0])
    with pytest.raises(ValueError, match=r"sagi_end is a fraction \(0..1, or -1 for the preset's value\); the sweep "
                                         r"has 1.5"):
        batch_nodes.MCAScheduleSweep.execute("sagi_end", "1.5")
    with pytest.raises(ValueError, match=r"sweep cell sagi_end=0.9: sagi_start \(0.95\) is after sagi_end \(0.9\)"):
        attention_patch.MCAAttentionPatch.execute(model, SUBJECT_MASK, "swap", 0.95, -1, -1, -1, -1, -1,
                                                  edit_mask=EDIT_MASK,
                                                  sweep=batch_nodes.MCAScheduleSweep.execute("sagi_end", "0.9")[0])


def test_target_prompts_of_other_pooled_widths_are_refused(pack):
    family = FAMILIES["sdxl"]
    model = family.model()
    mca = patched(model, Task.SWAP, cell_schedules(family)[:2])
    narrow = [[family.prompt(4)[0][0], {"pooled_output": torch.zeros(1, 8)}]]
    with pytest.raises(ValueError, match=r"pooled outputs differ in width \(.*target prompt 1 \d+, target prompt 2 8"):
        sampler.mca_sample(mca, family.prompt(1), family.prompt(2), labelled([(3, family.prompt(3)), (4, narrow)]),
                           family.prompt(9), inverted(model, family, 1), inverted(model, family, 2), 0, 1.0)


def test_t5_target_prompts_of_other_lengths_each_equal_their_cell_alone(pack):
    """Target prompts of 16 and 24 T5 tokens in one batch (every row padded to 24, the padding masked out): each
    target equals its cell run alone (target 1's alone needs no padding at all)."""
    family = FAMILIES["flux"]
    model = family.model()
    schedules = cell_schedules(family)[:2]
    longer = random_models.tiny_flux_prompt(4, tokens=24)
    subject, condition = inverted(model, family, 1), inverted(model, family, 2)
    batch = sampler.mca_sample(patched(model, Task.SWAP, schedules), family.prompt(1), family.prompt(2),
                               labelled([(3, family.prompt(3)), (4, longer)]), family.prompt(9), subject, condition, 0,
                               5.0)
    for j, target in enumerate((family.prompt(3), longer)):
        alone = sampler.mca_sample(patched(model, Task.SWAP, schedules[j]), family.prompt(1), family.prompt(2), target,
                                   family.prompt(9), subject, condition, 0, 5.0)
        scale = float(alone.rows.abs().max())
        torch.testing.assert_close(batch.targets[j], alone.targets[0], atol=family.tolerance * scale, rtol=0)


def test_a_cell_that_runs_no_mca_is_named_in_the_warning(pack, caplog):
    family = FAMILIES["sd15"]
    model = family.model()
    mca = patched(model, Task.SWAP, [SCHEDULES[0], MCASchedule(0.0, 0.0, 0.0, 0.0, 0)])
    with caplog.at_level(logging.WARNING):
        sampler.mca_sample(mca, family.prompt(1), family.prompt(2), family.prompt(3), family.prompt(9),
                           inverted(model, family, 1), inverted(model, family, 2), 0, 1.0)
    warnings = [r.getMessage() for r in caplog.records if "no SAGI and no SALQ" in r.getMessage()]
    assert len(warnings) == 1 and "[cell 1]" in warnings[0]
