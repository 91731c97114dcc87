"""Z-Image (issue 23): a tiny random model from ComfyUI's own classes (Lumina 2's NextDiT with Z-Image's settings:
256 wide, 4 heads of 64, 2 + 2 refiner layers, 3 main layers, pad tokens to a multiple of 32), every recorded
attention call of a real run (refiner calls ordinary, main-layer calls against the dense joint formula with the
image pad tokens as context), swap / add / generation through the nodes, flow inversion at shift 3, the call
counter found on both hosts without touching the unpatched model, and what "a row as if alone" means here."""
from __future__ import annotations

import pytest
import torch

import random_models
from dense_reference import check_joint_calls, rope_rotation
from prompt_helpers import tokenizer_clip
from user_path import check_swap_through_the_sampler, inverted_image, recorded_swap
from random_models import square_mask, tiny_z_image_model, tiny_z_image_prompt
from mca_ctrl.mca_attention import engine, invert
from mca_ctrl.mca_attention.adapters import model_adapter
from mca_ctrl.mca_attention.adapters.mmdit import OVERRIDE_KEY
from mca_ctrl.mca_attention.adapters.z_image import CALLS_KEY, WRAPPER_KEY, ZImageAdapter
from mca_ctrl.mca_attention.comfy_patch import mca_state, patch_model
from mca_ctrl.mca_attention.run import run_step
from mca_ctrl.mca_attention.schedule import MCASchedule, Op
from mca_ctrl.mca_attention.subject_words import SubjectWords
from mca_ctrl.mca_attention.tasks import PRESETS, Task

STEPS = 4
LAYERS = 3
REFINERS = (2, 2)  # context refiner, noise refiner: the calls before the main layers of every forward
SUBJECT_MASK, EDIT_MASK = square_mask(64, 16, 48), square_mask(64, 8, 40)
LATENT = (1, 16, 8, 8)  # 64 px: a 4 x 4 grid of image tokens (2 x 2 patches), padded by the model to 32
GRID, IMAGE_TOKENS = (4, 4), 32
SCHEDULE = MCASchedule(sagi_start=0.0, sagi_end=0.25, salq_start=0.25, salq_end=1.0, salq_first_site=1)
LENGTHS = dict(condition=14, subject=10, target=12, negative=8)
# Alone, the 8-token negative gets 24 of the model's pad tokens (up to 32): the rows are padded to 33, so that the
# model appends 31 (up to 64) and each row reads as many as alone.
PADDED, CAPTION = 33, 64
AXES, THETA = (16, 24, 24), 256


def alone(count: int) -> int:
    """The caption length of a prompt of ``count`` tokens alone: the model pads it to a multiple of 32."""
    return -(-count // 32) * 32


def expected_op(step, key):
    return SCHEDULE.op_at(step, key[1], STEPS)


def inverted(model, seed: int) -> dict:
    return inverted_image(model, LATENT, tiny_z_image_prompt(0, 6), seed, STEPS)


@pytest.fixture(scope="module")
def z_image(pack):
    model = tiny_z_image_model(seed=0, layers=LAYERS)
    return model, inverted(model, 1), inverted(model, 2)


def prompts(lengths: dict = LENGTHS) -> tuple:
    return tuple(tiny_z_image_prompt(seed, lengths[name])
                 for seed, name in ((1, "condition"), (2, "subject"), (3, "target"), (9, "negative")))


def recording(model, calls: list):
    """A clone whose attention override (the patch's own) also records every call, with its place in its forward
    counted here independently: each forward's ``transformer_options`` holds a new counter object."""
    recorder = model.clone()
    options = dict(recorder.model_options["transformer_options"])
    override = options[OVERRIDE_KEY]
    forwards: list = []

    def record(func, *args, **kwargs):
        extra = kwargs["transformer_options"]
        if not forwards or forwards[-1][0] is not extra[CALLS_KEY]:
            forwards.append([extra[CALLS_KEY], 0])
        index = forwards[-1][1]
        forwards[-1][1] += 1
        out = override(func, *args, **kwargs)
        q, k, v = args[:3]
        current = run_step(extra)
        calls.append(dict(q=q.clone(), k=k.clone(), v=v.clone(), out=out.clone(), mask=args[4], index=index,
                          step=current.step, cond_or_uncond=list(extra["cond_or_uncond"]), grid=GRID,
                          block=(extra.get("block_type"), extra.get("block_index"))))
        return out

    options[OVERRIDE_KEY] = record
    recorder.model_options["transformer_options"] = options
    return recorder


def as_alone(call: dict, text: int, tail: int) -> dict:
    """``call`` with each row's q and k turned to the positions its tokens have in its prompt alone, RoPE written out
    here: alone, a row of n tokens reads its tokens at 1..n, then alone(n) - n pad tokens, its image at alone(n) + 1
    and the image's pad tokens at 0; in the batch its pad tokens are the model's first ones at PADDED + 1.. and its
    image sits at CAPTION + 1. The image grid stays: rows reading each other's images keep relative position 0."""
    q, k = call["q"].double().clone(), call["k"].double().clone()
    length = q.shape[2]
    image = length - text - tail
    for row, count in enumerate(row_lengths(call)):
        joint = CAPTION - alone(count) if image else 0
        groups = [(slice(0, count), joint), (slice(PADDED, PADDED + alone(count) - count), count - PADDED + joint)]
        groups = (groups if text else []) + ([(slice(length - tail, length), CAPTION - alone(count))] if image else [])
        for where, shift in groups:
            for x in (q, k):
                x[row, :, where] = rope_rotation(x[row, :, where], (shift, 0.0, 0.0), AXES, THETA)
    return dict(call, q=q, k=k)


def main_layer_calls(calls: list) -> list:
    """The main layers' calls, laid out for the dense formula: caption, grid, image pad tokens (``tail``), each row
    at its positions alone."""
    text, tail = CAPTION, IMAGE_TOKENS - GRID[0] * GRID[1]
    return [dict(as_alone(call, text, tail), key=("layer", call["index"] - sum(REFINERS)), text_tokens=text,
                 tail=tail, padded=PADDED, multiple=32)
            for call in calls if call["index"] >= sum(REFINERS)]


def test_sites_latent_and_text_come_from_the_declarations(z_image):
    model, _, _ = z_image
    adapter = model_adapter(model)
    assert isinstance(adapter, ZImageAdapter) and adapter.family == "Z-Image" and adapter.KIND == "DiT"
    assert [site.key for site in adapter.sites] == [("layer", i) for i in range(LAYERS)], "main layers only"
    assert adapter.LATENT.channels == 16 and adapter.min_latent_side == 4 and adapter.pooled_width() is None
    assert adapter.text_width() == random_models.TINY_CONTEXT_DIM and adapter.TEXT.pads_to_multiple == 32
    assert float(model.get_model_object("model_sampling").shift) == pytest.approx(3.0)


def test_patching_leaves_the_model_it_was_given_and_other_clones_untouched(z_image):
    """The call counter is a wrapper on the patched clone's own options: the MODEL given to the patch keeps no
    override and no wrapper, samples exactly as before, and two patched clones keep their own schedules."""
    import comfy.patcher_extension

    model, subject, condition = z_image
    kind = comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL
    first = patch_model(model, PRESETS[Task.SWAP], SCHEDULE, SUBJECT_MASK, EDIT_MASK)
    other = MCASchedule(sagi_start=0.0, sagi_end=0.5, salq_start=0.5, salq_end=1.0, salq_first_site=0)
    second = patch_model(model, PRESETS[Task.SWAP], other, SUBJECT_MASK, EDIT_MASK)
    assert OVERRIDE_KEY not in model.model_options.get("transformer_options", {})
    assert WRAPPER_KEY not in model.wrappers.get(kind, {}) and WRAPPER_KEY in first.wrappers[kind]
    assert mca_state(first).schedules != mca_state(second).schedules
    rows = engine.mca_sample(first, *prompts(), subject, condition, 0, 1.0).targets
    again = engine.mca_sample(second, *prompts(), subject, condition, 0, 1.0).targets
    assert not torch.equal(rows, again), "each clone runs its own schedule"
    assert torch.equal(engine.mca_sample(first, *prompts(), subject, condition, 0, 1.0).targets, rows)


@pytest.mark.parametrize("mode", ["cfg 1", "cfg batched", "cfg split"])
def test_recorded_calls_refiners_ordinary_and_main_layers_the_dense_joint_formula(z_image, monkeypatch, mode):
    """Every call of a real swap run with prompts of four lengths (padded to 33, by the model to 64): the first two
    of each forward are caption-only and the next two image-only (ordinary attention at each row's positions alone,
    its zero padding and the pads it would not have alone masked), the main layers equal the dense formula with the
    16 image pad tokens as each row's context."""
    model, subject, condition = z_image
    calls = recorded_swap(model, SCHEDULE, prompts(), subject, condition, mode, monkeypatch,
                          recording)
    forwards = STEPS * (2 if mode == "cfg split" else 1)
    assert len(calls) == forwards * (sum(REFINERS) + LAYERS)
    lengths = {call["index"]: call["q"].shape[2] for call in calls}
    assert lengths == {0: CAPTION, 1: CAPTION, 2: IMAGE_TOKENS, 3: IMAGE_TOKENS,
                       **{4 + i: CAPTION + IMAGE_TOKENS for i in range(LAYERS)}}
    for call in calls:
        if call["block"][0] == "double":  # newer ComfyUI names the main layers: the counter agrees
            assert call["index"] == sum(REFINERS) + call["block"][1]
        if call["index"] < sum(REFINERS):
            positions = torch.arange(call["q"].shape[2])
            own = torch.ones(call["q"].shape[0], call["q"].shape[2], dtype=torch.bool)
            caption = call["index"] < REFINERS[0]
            if caption:  # each row's zero padding left out, as many of the model's pads read as alone
                own = torch.stack([(positions < n) | ((positions >= PADDED) & (positions < PADDED + alone(n) - n))
                                   for n in row_lengths(call)])
            placed = as_alone(call, CAPTION if caption else 0, 0 if caption else IMAGE_TOKENS - GRID[0] * GRID[1])
            expected = torch.nn.functional.scaled_dot_product_attention(
                placed["q"], placed["k"], call["v"].double(), attn_mask=own[:, None, None, :])
            torch.testing.assert_close(call["out"].double(), expected.transpose(1, 2).flatten(2), atol=2e-5,
                                       rtol=1e-4, msg=f"refiner call {call['index']}")
    assert {len(call["cond_or_uncond"]) for call in calls} == ({2} if mode == "cfg batched" else {1})
    row_counts = {0: (LENGTHS["condition"], LENGTHS["subject"], LENGTHS["target"]), 1: (LENGTHS["negative"],) * 3}
    assert check_joint_calls(main_layer_calls(calls), expected_op, SUBJECT_MASK, EDIT_MASK,
                             lengths=row_counts) == {Op.SAGI, Op.SALQ, Op.NONE}


def row_lengths(call: dict) -> list[int]:
    """Each row's own prompt length in a recorded call (the condition, subject and target rows of each chunk)."""
    per_chunk = {0: (LENGTHS["condition"], LENGTHS["subject"], LENGTHS["target"]), 1: (LENGTHS["negative"],) * 3}
    return [n for chunk in call["cond_or_uncond"] for n in per_chunk[chunk]]


def test_the_subject_moved_onto_the_edit_region_matches_the_dense_formula(z_image):
    """RoPE axes 16 + 24 + 24, image ids (caption + 1, h, w): the shift turns the subject's grid keys on h and w,
    never its pad tokens."""
    model, subject, condition = z_image
    corner = square_mask(64, 0, 32)
    calls: list = []
    moved = patch_model(model, PRESETS[Task.SWAP], SCHEDULE, SUBJECT_MASK, corner, move_subject=True)
    engine.mca_sample(recording(moved, calls), *prompts(), subject, condition, 0, 1.0)
    row_counts = {0: (LENGTHS["condition"], LENGTHS["subject"], LENGTHS["target"]), 1: (LENGTHS["negative"],) * 3}
    assert check_joint_calls(main_layer_calls(calls), expected_op, SUBJECT_MASK, corner, rope=(AXES, THETA),
                             lengths=row_counts) == {Op.SAGI, Op.SALQ, Op.NONE}


@pytest.mark.parametrize("task", [Task.SWAP, Task.ADD])
def test_swap_and_add_keep_the_background_and_change_the_edit_region(z_image, task):
    """Through the MCA Sampler node at cfg 1 (the Turbo template's): the target equals the condition outside the edit
    mask and differs inside it from the same graph with empty step ranges; rows 0 and 1 end at their clean latents."""
    model, subject, condition = z_image
    check_swap_through_the_sampler(model, PRESETS[task], SCHEDULE, prompts(), subject, condition, 1.0,
                                   square_mask(8, 1, 5)[0] < 0.5)


def test_the_turbo_preset_at_8_steps_runs_sagi_and_salq(z_image):
    model, _, _ = z_image
    schedule = model_adapter(model).preset_schedule(PRESETS[Task.SWAP])
    ops = {schedule.op_at(step, site, 8) for step in range(8) for site in range(LAYERS)}
    assert schedule.salq_first_site == 0 and ops == {Op.SAGI, Op.SALQ}
    assert schedule.op_at(0, 0, 8) is Op.SAGI and all(schedule.op_at(step, 0, 8) is Op.SALQ for step in range(1, 8))


def test_flow_inversion_follows_the_next_sigma_rule_on_the_models_own_prediction(z_image):
    """Each step equals the rule on Z-Image's velocity as ComfyUI computes it (the model takes ``t = 1 - timestep`` and
    returns the negated prediction; ``apply_model`` turns it into the denoised latent), shift 3."""
    model, _, _ = z_image
    prompt = tiny_z_image_prompt(0, 6)
    latent = torch.randn(LATENT, generator=torch.Generator().manual_seed(5))
    result = invert.invert_latent(model, latent, prompt, prompt, 1.0, invert.schedule_sigmas(model, STEPS, None))
    states = result["mca_trajectory"]["latents"][:, 0].flip(0)
    sigmas = result["mca_trajectory"]["sigmas"].flip(0)
    torch.testing.assert_close(states[0], model.model.process_latent_in(latent)[0], atol=1e-6, rtol=0)
    with torch.no_grad():
        for step in range(STEPS):
            sigma, sigma_next = sigmas[step], sigmas[step + 1]
            x = states[step][None]
            denoised = model.model.apply_model(x, sigma_next.view(1), c_crossattn=prompt[0][0], num_tokens=6)
            velocity = (x - denoised) / sigma_next
            expected = states[step] + velocity[0] * (sigma_next - sigma)
            torch.testing.assert_close(states[step + 1], expected, atol=1e-4, rtol=1e-4, msg=f"step {step}")


def test_subject_words_count_from_the_first_token_of_qwen3s_whole_chat_template(pack):
    """Z-Image's encoder keeps the chat template whole: positions count from its first token."""
    import comfy.text_encoders.z_image

    clip, text = tokenizer_clip(comfy.text_encoders.z_image.ZImageTokenizer()), "a photo of a dog on a sofa"
    ids = [token for token, *_ in clip.tokenize(text)["qwen3_4b"][0]]
    (dog,) = SubjectWords(clip, text, "dog").tokens(ZImageAdapter.TEXT)
    spelled = [token for token, *_ in clip.tokenizer.tokenize_with_weights(" dog", llama_template="{}")["qwen3_4b"][0]]
    assert ids[dog] == spelled[0] and dog > 3, "after the template's '<|im_start|>user\\n'"
    (first,) = SubjectWords(clip, text, token_indices="1").tokens(ZImageAdapter.TEXT)
    assert first == dog - 4, "index 1 = the first word ('a'): 'a photo of a dog' puts ' dog' 4 tokens later"


def test_generation_derives_its_region_from_the_subject_word_and_the_word_moves_it(z_image):
    model, subject, _ = z_image
    empty = {"samples": torch.zeros(LATENT)}
    masks = []
    for tokens in ([2, 3], [9, 10]):
        mca = patch_model(model, PRESETS[Task.GENERATION],
                          model_adapter(model).preset_schedule(PRESETS[Task.GENERATION]), SUBJECT_MASK, None,
                          subject=tokens)
        out = engine.mca_sample(mca, *prompts(), subject, empty, 7, 1.0)
        edit = out.edit_masks[0]
        assert edit is not None and edit.shape == GRID and torch.isfinite(out.rows).all()
        masks.append(edit)
    assert not torch.equal(*masks), "another subject word must give another region"


@pytest.mark.parametrize("condition_tokens", [13, 14, 20, 32, 40])
def test_a_padded_row_reads_what_it_reads_alone(z_image, condition_tokens):
    """What "as if alone" means on Z-Image, and that it holds: every row of a forward shares one caption length,
    padded by the model with its pad token to a multiple of 32, and the image's RoPE index follows it. A 12-token
    row alone reads its tokens, 20 pad tokens, and its image at position 33. In a batch with a longer prompt it
    reads its tokens, as many of the model's pad tokens (the others and MCA's zeros masked), and every position it
    would have alone (its caption and pads turned on the caption axis; rotations add). Measured: generation's target
    row (12 tokens, never rebuilt by a silent schedule) beside a longer condition prompt, against the same row where
    no prompt is longer (its prompt as alone: rows do not mix): float32 rounding only."""
    model, subject, _ = z_image
    silent = MCASchedule(sagi_start=0.0, sagi_end=0.0, salq_start=0.0, salq_end=0.0, salq_first_site=0)
    mca = patch_model(model, PRESETS[Task.GENERATION], silent, SUBJECT_MASK, EDIT_MASK)
    empty, negative, target = {"samples": torch.zeros(LATENT)}, tiny_z_image_prompt(9, 12), tiny_z_image_prompt(3, 12)
    padded = engine.mca_sample(mca, tiny_z_image_prompt(1, condition_tokens), tiny_z_image_prompt(2, 12), target,
                               negative, subject, empty, 7, 1.0)
    alone = engine.mca_sample(mca, tiny_z_image_prompt(1, 12), tiny_z_image_prompt(2, 12), target, negative, subject,
                              empty, 7, 1.0)
    difference = float((padded.targets[0] - alone.targets[0]).abs().max() / alone.targets[0].abs().max())
    print(f"longest prompt {condition_tokens} tokens: the 12-token row vs alone, max |diff| / max |x| = "
          f"{difference:.2e}")
    assert difference < 1e-5


def test_an_override_installed_before_runs_every_refiner_call_and_the_ordinary_rows(z_image):
    """Another pack's attention override (SageAttention style) installed before the patch keeps running: on every
    refiner call, and on the condition and subject rows of the main layers while MCA rebuilds the target."""
    model, subject, condition = z_image
    seen: list = []

    def other_pack(func, *args, **kwargs):
        seen.append((args[0].shape[0], args[0].shape[2]))
        return func(*args, **kwargs)

    with_other = model.clone()
    options = dict(with_other.model_options.get("transformer_options", {}))
    options[OVERRIDE_KEY] = other_pack
    with_other.model_options["transformer_options"] = options
    mca = patch_model(with_other, PRESETS[Task.SWAP], SCHEDULE, SUBJECT_MASK, EDIT_MASK)
    engine.mca_sample(mca, *prompts(), subject, condition, 0, 1.0)
    assert len(seen) == STEPS * (sum(REFINERS) + LAYERS), "every call reaches the other pack's override"
    assert (3, CAPTION) in seen and (3, IMAGE_TOKENS) in seen, "the refiners' calls, all three rows"
    assert (2, CAPTION + IMAGE_TOKENS) in seen, "a main layer rebuilding the target: the ordinary rows only"
    assert OVERRIDE_KEY not in model.model_options.get("transformer_options", {}), "the input model was touched"
