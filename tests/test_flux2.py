"""Flux.2 (issue 22): a tiny random model from ComfyUI's own classes (2 double + 3 single blocks, 4 heads of 16, four
RoPE axes of 4, global modulation, no pooled vector), its 128-channel latent with patch 1, prompts of four lengths
that the model itself left-pads to 512 tokens, every recorded attention call against the dense joint formula, swap,
add and generation through the nodes, flow inversion at shift 2.02, and what MCA rows refuse."""
from __future__ import annotations

import pytest
import torch

import random_models
from dense_reference import check_joint_calls, recording_override
from prompt_helpers import mistral_tokenizer, stacked, tokenizer_clip
from user_path import check_swap_through_the_sampler, inverted_image, recorded_swap
from random_models import has_klein, square_mask, tiny_flux2_model, tiny_flux2_prompt
from mca_ctrl.mca_attention import engine, invert
from mca_ctrl.mca_attention.adapters import model_adapter
from mca_ctrl.mca_attention.adapters.flux2 import TEXT_TOKENS, Flux2Adapter
from mca_ctrl.mca_attention.adapters.mmdit import OVERRIDE_KEY, token_grid
from mca_ctrl.mca_attention.comfy_patch import patch_model
from mca_ctrl.mca_attention.schedule import MCASchedule, Op
from mca_ctrl.mca_attention.subject_words import SubjectWords
from mca_ctrl.mca_attention.tasks import PRESETS, Task

STEPS = 4
SITES = 5  # 2 double + 3 single blocks
SUBJECT_MASK, EDIT_MASK = square_mask(64, 16, 48), square_mask(64, 8, 40)
LATENT = (1, 128, 4, 4)  # 64 px at 1/16: a 4 x 4 grid of image tokens (patch 1)
# SAGI at step 0, SALQ at steps 1-3 from site 1 on: every op at some step and site.
SCHEDULE = MCASchedule(sagi_start=0.0, sagi_end=0.25, salq_start=0.25, salq_end=1.0, salq_first_site=1)
LENGTHS = dict(condition=14, subject=10, target=12, negative=8)
ROPE = ((4, 4, 4, 4), 2000)


def expected_op(step, key):
    site = key[1] if key[0] == "double" else 2 + key[1]
    return SCHEDULE.op_at(step, site, STEPS)


def model_text(model, tokens: torch.Tensor) -> torch.Tensor:
    """The text tokens the diffusion model receives for ``tokens``: ComfyUI's own ``Flux2.extra_conds``."""
    return model.model.extra_conds(cross_attn=tokens, pooled_output=None)["c_crossattn"].cond


def inverted(model, seed: int) -> dict:
    return inverted_image(model, LATENT, tiny_flux2_prompt(0, 6), seed, STEPS)


@pytest.fixture(scope="module")
def flux2(pack):
    model = tiny_flux2_model(seed=0)
    return model, inverted(model, 1), inverted(model, 2)


def prompts(guidance: float | None = 4.0) -> tuple:
    return tuple(tiny_flux2_prompt(seed, LENGTHS[name], guidance)
                 for seed, name in ((1, "condition"), (2, "subject"), (3, "target"), (9, "negative")))


def test_sites_latent_and_text_come_from_the_declarations(flux2):
    model, _, _ = flux2
    adapter = model_adapter(model)
    assert isinstance(adapter, Flux2Adapter) and adapter.family == "Flux.2"
    assert [site.key for site in adapter.sites] == [("double", 0), ("double", 1), ("single", 0), ("single", 1),
                                                    ("single", 2)]
    assert adapter.LATENT.channels == 128 and adapter.LATENT.factor == 16 and adapter.patch_size == 1
    assert adapter.min_latent_side == 2 and adapter.pooled_width() is None
    assert adapter.text_width() == random_models.TINY_CONTEXT_DIM and adapter.TEXT.padded_left_to == TEXT_TOKENS
    flux1 = model_adapter(random_models.tiny_flux_model())
    assert not isinstance(flux1, Flux2Adapter) and flux1.family == "Flux.1", "Flux.1 keeps its own adapter"
    with pytest.raises(ValueError, match="needs a 128-channel latent"):
        invert.invert_latent(model, torch.zeros(1, 16, 8, 8), tiny_flux2_prompt(0), tiny_flux2_prompt(0), 1.0,
                             invert.schedule_sigmas(model, STEPS, None))


def test_rows_of_different_lengths_reach_the_model_as_each_prompt_alone(flux2):
    """Flux.2 pads a prompt with zeros before its tokens to 512 (and its text RoPE counts along them), so the rows
    are padded the same way, unmasked: after the model's own ``extra_conds`` each row is its prompt alone."""
    model, _, _ = flux2
    condition, subject, target, negative = prompts()
    batch = stacked(condition, subject, target, negative=negative, text=Flux2Adapter.TEXT)
    assert batch.text is None, "nothing to mask: the model attends to its padding"
    rows = batch.positive[0][0]
    assert rows.shape[1] == max(LENGTHS.values())
    for row, prompt in enumerate((condition, subject, target)):
        alone = model_text(model, prompt[0][0])
        padded = model_text(model, rows[row:row + 1])
        assert alone.shape[1] == TEXT_TOKENS and torch.equal(padded, alone), f"row {row}"
    uncond = model_text(model, batch.negative[0][0])
    assert torch.equal(uncond, model_text(model, negative[0][0]))
    too_long = tiny_flux2_prompt(4, TEXT_TOKENS + 1)
    with pytest.raises(ValueError, match=r"target_prompt encodes to 513 tokens, more than the 512 this model pads"):
        stacked(condition, subject, too_long, text=Flux2Adapter.TEXT)
    long_negative = tiny_flux2_prompt(5, TEXT_TOKENS + 88)
    kept = stacked(condition, subject, target, negative=long_negative, text=Flux2Adapter.TEXT)
    assert kept.negative[0][0] is long_negative[0][0], "the negative keeps its own length (its own forward)"


def test_the_encoders_attention_mask_is_left_out_as_flux2_leaves_it_out(flux2):
    """Flux.2 attends to every text token whatever mask its encoder returns (klein's pads to 512 with zeros): the mask
    is dropped, and the rows sample as the same prompts without one."""
    model, subject, condition = flux2
    rows = prompts()
    klein_like = [[rows[2][0][0], {**rows[2][0][1], "attention_mask": torch.tensor([[1] * 9 + [0] * 3])}]]
    batch = stacked(rows[0], rows[1], klein_like, negative=rows[3], text=Flux2Adapter.TEXT)
    assert "attention_mask" not in batch.positive[0][1] and "attention_mask" not in batch.negative[0][1]
    unmasked = tuple([[tensor, {k: v for k, v in options.items() if k != "attention_mask"}]] for (tensor, options),
                     in rows)
    mca = patch_model(model, PRESETS[Task.SWAP], SCHEDULE, SUBJECT_MASK, EDIT_MASK)
    with_masks = engine.mca_sample(mca, rows[0], rows[1], klein_like, rows[3], subject, condition, 0, 1.0)
    without = engine.mca_sample(mca, *unmasked[:2], [[klein_like[0][0], unmasked[2][0][1]]], unmasked[3], subject,
                                condition, 0, 1.0)
    assert torch.equal(with_masks.rows, without.rows)


@pytest.mark.parametrize("mode", ["cfg 1", "cfg batched", "cfg split"])
def test_recorded_calls_match_the_dense_joint_formula(flux2, monkeypatch, mode):
    """Every block's call of a real swap run (cfg 1 with FluxGuidance as ComfyUI's dev template, or real CFG
    batched and split), prompts of four lengths: each call holds 512 text tokens and equals the dense formula."""
    model, subject, condition = flux2
    calls = recorded_swap(model, SCHEDULE, prompts(), subject, condition, mode, monkeypatch,
                          lambda mca, calls: recording_override(mca, calls, lambda size: token_grid(size, 1)))
    assert len(calls) == STEPS * SITES * (2 if mode == "cfg split" else 1)
    assert {call["text_tokens"] for call in calls} == {TEXT_TOKENS} and {call["grid"] for call in calls} == {(4, 4)}
    assert {len(call["cond_or_uncond"]) for call in calls} == ({2} if mode == "cfg batched" else {1})
    assert check_joint_calls(calls, expected_op, SUBJECT_MASK, EDIT_MASK) == {Op.SAGI, Op.SALQ, Op.NONE}


def test_the_subject_moved_onto_the_edit_region_matches_the_dense_formula(flux2):
    """Four RoPE axes, image ids (0, h, w, 0): the shift turns the subject's keys on the h and w axes only."""
    model, subject, condition = flux2
    corner = square_mask(64, 0, 32)
    calls: list = []
    moved = patch_model(model, PRESETS[Task.SWAP], SCHEDULE, SUBJECT_MASK, corner, move_subject=True)
    engine.mca_sample(recording_override(moved, calls, lambda size: token_grid(size, 1)), *prompts(), subject,
                      condition, 0, 1.0)
    assert check_joint_calls(calls, expected_op, SUBJECT_MASK, corner, rope=ROPE) == {Op.SAGI, Op.SALQ, Op.NONE}


@pytest.mark.parametrize("task", [Task.SWAP, Task.ADD])
def test_swap_and_add_keep_the_background_and_change_the_edit_region(flux2, task):
    """Through the MCA Sampler node at cfg 1: the target equals the condition outside the edit mask and differs
    inside it from the same graph with empty step ranges; the condition and subject rows end at their clean
    latents."""
    model, subject, condition = flux2
    check_swap_through_the_sampler(model, PRESETS[task], SCHEDULE, prompts(), subject, condition, 1.0,
                                   square_mask(4, 0, 3)[0] < 0.5)


def test_flow_inversion_follows_the_next_sigma_rule_along_flux2_schedulers_sigmas(flux2):
    """Each step of the shipped walk, along the sigmas of ComfyUI's own Flux2Scheduler node (given through the
    SIGMAS input), equals the rule on Flux.2's own velocity: ``x_next = x + v * (sigma_next - sigma)``."""
    from comfy_extras.nodes_flux import Flux2Scheduler

    model, _, _ = flux2
    prompt = tiny_flux2_prompt(0, 6)
    latent = torch.randn(LATENT, generator=torch.Generator().manual_seed(5))
    scheduled = Flux2Scheduler.execute(STEPS, 64, 64)[0]
    assert float(model.get_model_object("model_sampling").shift) == pytest.approx(2.02)
    result = invert.invert_latent(model, latent, prompt, prompt, 1.0, invert.schedule_sigmas(model, 50, scheduled))
    states = result["mca_trajectory"]["latents"][:, 0].flip(0)
    sigmas = result["mca_trajectory"]["sigmas"].flip(0)
    torch.testing.assert_close(sigmas, scheduled.flip(0).float())
    torch.testing.assert_close(states[0], model.model.process_latent_in(latent)[0], atol=1e-6, rtol=0)
    context = model_text(model, prompt[0][0])
    with torch.no_grad():
        for step in range(STEPS):
            sigma, sigma_next = sigmas[step], sigmas[step + 1]
            velocity = model.model.diffusion_model(states[step][None], sigma_next.view(1), context,
                                                   guidance=torch.tensor([4.0]))
            expected = states[step] + velocity[0] * (sigma_next - sigma)
            torch.testing.assert_close(states[step + 1], expected, atol=1e-4, rtol=1e-4, msg=f"step {step}")


def test_subject_words_count_from_the_prompts_end_through_the_chat_template(pack):
    """Flux.2 dev's Mistral tokenizer (its own class, a made-up vocabulary) wraps the text in a chat template and the
    model pads before it: the subject's positions count from the end, so they index the 512 padded tokens."""
    clip, text = tokenizer_clip(mistral_tokenizer()), "a photo of a dog on a sofa"
    ids = [token for token, *_ in clip.tokenize(text)["mistral3_24b"][0]]
    dog = SubjectWords(clip, text, "dog").tokens(Flux2Adapter.TEXT)
    word = [token for token, *_ in clip.tokenizer.tokenize_with_weights(" dog", llama_template="{}")["mistral3_24b"][0]]
    assert len(dog) == 1 and dog[0] < 0 and ids[dog[0]] == word[-1], "' dog' counted from the end"
    padded = [0] * (TEXT_TOKENS - len(ids)) + ids
    assert padded[dog[0]] == word[-1], "the same position in the model's padded text"
    assert SubjectWords(clip, text, "sofa").tokens(Flux2Adapter.TEXT) == [-2], "the 'sofa' before [/INST]"
    first = SubjectWords(clip, text, token_indices="1").tokens(Flux2Adapter.TEXT)
    assert ids[first[0]] == ids[ids.index(3) + 1], "index 1 = the first token after [INST]"
    for without in (SubjectWords(clip, "", token_indices="1"), SubjectWords(None, token_indices="5")):
        with pytest.raises(ValueError, match="connect the clip input and type the target prompt's text"):
            without.tokens(Flux2Adapter.TEXT)


@pytest.mark.skipif(not has_klein(), reason="this ComfyUI has no Flux.2 klein (0.9.1 and newer do)")
def test_klein_subject_words_index_its_tokenizers_own_padding_to_512(pack):
    """Klein's Qwen3 tokenizer pads the chat-templated prompt itself, after its tokens, to 512: counted from the end
    of those 512, the subject's position is its place from the start."""
    import comfy.text_encoders.flux

    tokenizer = comfy.text_encoders.flux.KleinTokenizer()
    clip, text = tokenizer_clip(tokenizer), "a photo of a dog on a sofa"
    ids = [token for token, *_ in clip.tokenize(text)["qwen3_4b"][0]]
    assert len(ids) == TEXT_TOKENS, "klein's tokenizer pads to 512 itself"
    (dog,) = SubjectWords(clip, text, "dog").tokens(Flux2Adapter.TEXT)
    spelled = [token for token, *_ in tokenizer.tokenize_with_weights(" dog", llama_template="{}")["qwen3_4b"][0]]
    assert ids[dog] == spelled[0]
    assert 0 < TEXT_TOKENS + dog < 20, "near the start of the 512 tokens: after the template's first tokens"


def test_generation_derives_its_region_from_the_subject_word_and_the_word_moves_it(flux2):
    model, subject, _ = flux2
    empty = {"samples": torch.zeros(LATENT)}
    masks = []
    for tokens in ([-3, -2], [-9, -8]):
        mca = patch_model(model, PRESETS[Task.GENERATION],
                          model_adapter(model).preset_schedule(PRESETS[Task.GENERATION]), SUBJECT_MASK, None,
                          subject=tokens)
        out = engine.mca_sample(mca, *prompts(), subject, empty, 7, 1.0)
        edit = out.edit_masks[0]
        assert edit is not None and edit.shape == (4, 4) and torch.isfinite(out.rows).all()
        masks.append(edit)
    assert not torch.equal(*masks), "another subject word must give another region"


def test_reference_latents_and_cached_reference_keys_are_refused_on_mca_rows(flux2):
    """A reference image (ReferenceLatent, Flux.2's edit templates) is refused by name; so are keys longer than the
    queries, which newer ComfyUI's Flux KV Cache node makes (here: an override installed after MCA's that adds keys)."""
    model, subject, condition = flux2
    condition_prompt, subject_prompt, target, negative = prompts()
    with_reference = [[target[0][0], {**target[0][1], "reference_latents": [torch.zeros(1, 128, 4, 4)]}]]
    mca = patch_model(model, PRESETS[Task.SWAP], SCHEDULE, SUBJECT_MASK, EDIT_MASK)
    with pytest.raises(ValueError, match="target_prompt carries reference latents .*ReferenceLatent"):
        engine.mca_sample(mca, condition_prompt, subject_prompt, with_reference, negative, subject, condition, 0, 1.0)
    cached = mca.clone()
    options = dict(cached.model_options["transformer_options"])
    ours = options[OVERRIDE_KEY]

    def cached_reference_keys(func, q, k, v, *args, **kwargs):
        extra = torch.zeros(k.shape[0], k.shape[1], 3, k.shape[3], dtype=k.dtype)
        return ours(func, q, torch.cat([k, extra], 2), torch.cat([v, extra], 2), *args, **kwargs)

    options[OVERRIDE_KEY] = cached_reference_keys
    cached.model_options["transformer_options"] = options
    with pytest.raises(ValueError, match="Flux KV Cache"):
        engine.mca_sample(cached, *prompts(), subject, condition, 0, 1.0)
