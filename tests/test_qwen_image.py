"""Qwen-Image (issue 22, part): a tiny random model from ComfyUI's own classes (3 joint blocks, 4 heads of 16, RoPE
axes 4 + 6 + 6), its 5-D latent ``[batch, 16, 1, h, w]``, prompts of four lengths (Qwen2.5-VL pads nothing), every
recorded attention call against the dense joint formula, swap and add through the nodes, flow inversion."""
from __future__ import annotations

import pytest
import torch

import random_models
from dense_reference import check_joint_calls, recording_override
from user_path import check_swap_through_the_sampler, inverted_image, recorded_swap
from random_models import square_mask, tiny_qwen_image_model, tiny_qwen_prompt
from prompt_helpers import tokenizer_clip
from mca_ctrl.mca_attention import engine, invert
from mca_ctrl.mca_attention.adapters import model_adapter
from mca_ctrl.mca_attention.adapters.mmdit import token_grid
from mca_ctrl.mca_attention.adapters.qwen_image import QwenImageAdapter
from mca_ctrl.mca_attention.comfy_patch import patch_model
from mca_ctrl.mca_attention.schedule import MCASchedule, Op
from mca_ctrl.mca_attention.tasks import PRESETS, Task
from mca_ctrl.mca_attention.text import TextFacts

STEPS = 4
BLOCKS = 3
SUBJECT_MASK, EDIT_MASK = square_mask(64, 16, 48), square_mask(64, 8, 40)
LATENT = (1, 16, 1, 8, 8)  # 64 px: a 4 x 4 grid of image tokens
# SAGI at step 0, SALQ at steps 1-3 from block 1 on: every op at some step and site.
SCHEDULE = MCASchedule(sagi_start=0.0, sagi_end=0.25, salq_start=0.25, salq_end=1.0, salq_first_site=1)
LENGTHS = dict(condition=14, subject=10, target=12, negative=8)


def expected_op(step, key):
    return SCHEDULE.op_at(step, key[1], STEPS)


def inverted(model, seed: int) -> dict:
    return inverted_image(model, LATENT, tiny_qwen_prompt(0, 6), seed, STEPS)


@pytest.fixture(scope="module")
def qwen(pack):
    model = tiny_qwen_image_model(seed=0, blocks=BLOCKS)
    return model, inverted(model, 1), inverted(model, 2)


def prompts() -> tuple:
    return (tiny_qwen_prompt(1, LENGTHS["condition"]), tiny_qwen_prompt(2, LENGTHS["subject"]),
            tiny_qwen_prompt(3, LENGTHS["target"]), tiny_qwen_prompt(9, LENGTHS["negative"]))


def test_sites_latent_and_text_come_from_the_declarations(qwen):
    model, _, _ = qwen
    adapter = model_adapter(model)
    assert adapter.family == "Qwen-Image" and [site.key for site in adapter.sites] == [("double", i)
                                                                                     for i in range(BLOCKS)]
    assert adapter.LATENT.dims == 5 and adapter.min_latent_side == 4 and adapter.pooled_width() is None
    assert adapter.text_width() == random_models.TINY_CONTEXT_DIM and not adapter.TEXT.repeats_short_prompts
    with pytest.raises(ValueError, match=r"needs a 16-channel latent \[batch, 16, 1, h, w\]"):
        invert.invert_latent(model, torch.zeros(1, 16, 8, 8), tiny_qwen_prompt(0), tiny_qwen_prompt(0), 1.0,
                             invert.schedule_sigmas(model, STEPS, None))


@pytest.mark.parametrize("mode", ["cfg batched", "cfg split", "cfg 1"])
def test_recorded_calls_match_the_dense_joint_formula_with_prompts_of_four_lengths(qwen, monkeypatch, mode):
    """Every block's call of a real swap run (real CFG at 4 as ComfyUI's template, or cfg 1), the rows padded to 14
    text tokens: each equals the dense formula with each row's padding out of every key set."""
    model, subject, condition = qwen
    calls = recorded_swap(model, SCHEDULE, prompts(), subject, condition, mode, monkeypatch,
                          lambda mca, calls: recording_override(mca, calls, lambda size: token_grid(size, 2)))
    assert calls and {call["text_tokens"] for call in calls} == {14} and {call["grid"] for call in calls} == {(4, 4)}
    assert {len(call["cond_or_uncond"]) for call in calls} == ({2} if mode == "cfg batched" else {1})
    lengths = {0: (LENGTHS["condition"], LENGTHS["subject"], LENGTHS["target"]), 1: (LENGTHS["negative"],) * 3}
    assert check_joint_calls(calls, expected_op, SUBJECT_MASK, EDIT_MASK, lengths=lengths) == {Op.SAGI, Op.SALQ,
                                                                                               Op.NONE}


def test_the_subject_moved_onto_the_edit_region_matches_the_dense_formula(qwen):
    """Qwen-Image's image positions are centred; a shift is relative, so the rotation of the masks' offset moves the
    subject's keys as on Flux.1 (RoPE written out in the test)."""
    model, subject, condition = qwen
    corner = square_mask(64, 0, 32)
    calls: list = []
    moved = patch_model(model, PRESETS[Task.SWAP], SCHEDULE, SUBJECT_MASK, corner, move_subject=True)
    engine.mca_sample(recording_override(moved, calls, lambda size: token_grid(size, 2)), *prompts(), subject,
                      condition, 0, 4.0)
    lengths = {0: (LENGTHS["condition"], LENGTHS["subject"], LENGTHS["target"]), 1: (LENGTHS["negative"],) * 3}
    assert check_joint_calls(calls, expected_op, SUBJECT_MASK, corner, rope=((4, 6, 6), 10000),
                             lengths=lengths) == {Op.SAGI, Op.SALQ, Op.NONE}


@pytest.mark.parametrize("task", [Task.SWAP, Task.ADD])
def test_swap_and_add_keep_the_background_and_change_the_edit_region(qwen, task):
    """Through the MCA Sampler node: the 5-D target equals the condition outside the edit mask and differs inside it
    from the same graph with empty step ranges; the condition and subject rows end at their clean latents."""
    model, subject, condition = qwen
    check_swap_through_the_sampler(model, PRESETS[task], SCHEDULE, prompts(), subject, condition, 4.0,
                                   square_mask(8, 1, 5)[0] < 0.5)


def test_flow_inversion_follows_the_next_sigma_rule_step_by_step(qwen):
    """Each step of the shipped walk equals the rule on Qwen-Image's own velocity at its shift (1.15): the current
    5-D latent fed at the next sigma, ``x_next = x + v * (sigma_next - sigma)``."""
    model, _, _ = qwen
    prompt = tiny_qwen_prompt(0, 6)
    latent = torch.randn(LATENT, generator=torch.Generator().manual_seed(5))
    result = invert.invert_latent(model, latent, prompt, prompt, 1.0, invert.schedule_sigmas(model, STEPS, None))
    states = result["mca_trajectory"]["latents"][:, 0].flip(0)
    sigmas = result["mca_trajectory"]["sigmas"].flip(0)
    assert float(model.get_model_object("model_sampling").shift) == pytest.approx(1.15)
    torch.testing.assert_close(states[0], model.model.process_latent_in(latent)[0], atol=1e-6, rtol=0)
    qwen_model = model.model.diffusion_model
    with torch.no_grad():
        for step in range(STEPS):
            sigma, sigma_next = sigmas[step], sigmas[step + 1]
            velocity = qwen_model(states[step][None], sigma_next.view(1), prompt[0][0])
            expected = states[step] + velocity[0] * (sigma_next - sigma)
            torch.testing.assert_close(states[step + 1], expected, atol=1e-4, rtol=1e-4, msg=f"step {step}")


def test_subject_words_count_from_the_first_text_token_after_the_chat_template(pack):
    """Qwen-Image's encoder cuts the chat template's prefix from its output: the subject's positions are those in
    the text (the leading-space BPE spelling of a word inside a sentence is found too)."""
    from mca_ctrl.mca_attention.subject_words import SubjectWords

    import comfy.text_encoders.qwen_image

    clip, text = tokenizer_clip(comfy.text_encoders.qwen_image.QwenImageTokenizer()), "a photo of a dog on a sofa"
    ids = [token for token, *_ in clip.tokenize(text)["qwen25_7b"][0]]
    prefix = [token for token, *_ in clip.tokenize("")["qwen25_7b"][0]].index(151644, 1) + 3  # 2nd <|im_start|>user\n
    dog = SubjectWords(clip, text, "dog").tokens(QwenImageAdapter.TEXT)
    spelled = [token for token, *_ in clip.tokenizer.tokenize_with_weights(" dog", llama_template="{}")["qwen25_7b"][0]]
    assert dog == [4] and ids[prefix + 4] == spelled[0], "the 5th text token is ' dog'"
    assert SubjectWords(clip, text, token_indices="1, 2").tokens(QwenImageAdapter.TEXT) == [0, 1]
    assert SubjectWords(clip, text, "sofa").tokens(QwenImageAdapter.TEXT) == [7]
    unet = SubjectWords(None, token_indices="1, 2").tokens(TextFacts())
    assert unet == [1, 2], "a UNet without clip: after CLIP's start"


def test_generation_derives_its_region_from_the_subject_word_and_the_word_moves_it(qwen):
    model, subject, _ = qwen
    empty = {"samples": torch.zeros(LATENT)}
    masks = []
    for tokens in ([2, 3], [8, 9]):
        preset = model_adapter(model).preset_schedule(PRESETS[Task.GENERATION])
        mca = patch_model(model, PRESETS[Task.GENERATION], preset,
                          SUBJECT_MASK, None, subject=tokens)
        out = engine.mca_sample(mca, *prompts(), subject, empty, 7, 4.0)
        edit = out.edit_masks[0]
        assert edit is not None and edit.shape == (4, 4) and torch.isfinite(out.rows).all()
        assert out.rows.shape == (3, *LATENT[1:])
        masks.append(edit)
    assert not torch.equal(*masks), "another subject word must give another region"


def test_an_empty_4d_latent_starts_generation_as_comfyuis_samplers_take_it(qwen):
    """ComfyUI's Qwen-Image template starts from EmptySD3LatentImage ``[batch, 16, h, w]``; its samplers add the frame
    axis to an empty latent, and so does the MCA Sampler: the same rows as from ``[batch, 16, 1, h, w]``."""
    model, subject, _ = qwen
    mca = patch_model(model, PRESETS[Task.GENERATION], SCHEDULE, SUBJECT_MASK, EDIT_MASK)
    five = engine.mca_sample(mca, *prompts(), subject, {"samples": torch.zeros(LATENT)}, 7, 4.0)
    four = engine.mca_sample(mca, *prompts(), subject, {"samples": torch.zeros(1, 16, 8, 8)}, 7, 4.0)
    assert four.rows.shape == five.rows.shape == (3, *LATENT[1:]) and torch.equal(four.rows, five.rows)
    with pytest.raises(ValueError, match=r"needs a 16-channel latent \[batch, 16, 1, h, w\]"):
        engine.mca_sample(mca, *prompts(), subject, {"samples": torch.ones(1, 16, 8, 8)}, 7, 4.0)


def test_the_encoders_attention_mask_counts_only_where_it_masks_something(qwen):
    """CLIP Text Encode puts Qwen2.5-VL's attention mask on every prompt: all ones (nothing padded) it says nothing and
    is dropped; with zeros Qwen-Image would apply it, which MCA rows cannot, so it is refused by name."""
    from prompt_helpers import stacked

    condition, subject, target, negative = prompts()
    batch = stacked(condition, subject, target, negative=negative, text=QwenImageAdapter.TEXT)
    assert "attention_mask" not in batch.positive[0][1] and "attention_mask" not in batch.negative[0][1]
    masked = [[target[0][0], {**target[0][1], "attention_mask": torch.tensor([[1] * 10 + [0] * 2])}]]
    with pytest.raises(ValueError, match="target_prompt carries an attention mask on the prompt"):
        stacked(condition, subject, masked, text=QwenImageAdapter.TEXT)
