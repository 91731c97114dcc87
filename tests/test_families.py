"""MCA on every UNet family ComfyUI detects: SD1.x, SD2.x (v-prediction too), SDXL, SSD-1B, Segmind Vega,
KOALA. Tiny random UNets built from ComfyUI's own supported_models classes with the families' real depths."""
from __future__ import annotations

import pytest
import torch

import comfy.samplers
import random_models
from comfy_host import split_cond_uncond
from dense_reference import check_recorded_calls, recording
from mca_ctrl.mca_attention.adapters import model_adapter
from mca_ctrl.mca_attention.comfy_patch import mca_state, patch_model
from mca_ctrl.mca_attention.resolve import ScheduleRequest, resolve_schedules
from mca_ctrl.mca_attention.layout import TARGET
from mca_ctrl.mca_attention.sampling import RowControl, mca_sample_loop
from mca_ctrl.mca_attention.schedule import MCASchedule, Op
from mca_ctrl.mca_attention.tasks import PRESETS, Task
from mca_ctrl.mca_attention.unet_sites import find_attention_sites
from mca_ctrl.mca_attention import invert
from mca_ctrl.nodes import sampler
from prompt_helpers import row_prompts
from random_models import SDXL_FAMILY, square_mask

# family: (self-attention sites, the preset's first SALQ site, that site's key)
FAMILIES = {
    "SD15": (16, 9, ("output", 5, 0)),
    "SD20": (16, 9, ("output", 5, 0)),
    "SDXL": (70, 54, ("output", 2, 0)),
    "SSD1B": (34, 20, ("output", 2, 0)),
    "Segmind_Vega": (15, 10, ("output", 2, 0)),
    "KOALA_700M": (21, 12, ("output", 1, 0)),
}
STEPS = 2  # SAGI at step 0, SALQ at step 1 (schedule_of)
SUBJECT_MASK, EDIT_MASK = square_mask(64, 16, 48), square_mask(64, 8, 40)


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request, pack):
    return request.param, random_models.tiny_family_model(request.param)


def prompt(family_name: str, seed: int) -> list:
    if family_name in SDXL_FAMILY:
        return random_models.tiny_sdxl_prompt(seed)
    return random_models.tiny_prompt(seed)


def rows_and_negative(family_name: str, seeds=(1, 2, 3)):
    return row_prompts(*(prompt(family_name, s) for s in seeds)), prompt(family_name, 9)


def resolved(model, **settings):
    """The swap schedule the patch resolves from these widget values (every other widget at -1)."""
    adapter = model_adapter(model)
    widgets = {**dict.fromkeys(("sagi_start", "sagi_end", "salq_start", "salq_end", "salq_sites", "salq_first_site"),
                               -1.0), **settings}
    schedules, _ = resolve_schedules(adapter.preset_schedule(PRESETS[Task.SWAP]), ScheduleRequest(widgets),
                                     len(adapter.sites), adapter.family)
    return schedules[0]


def schedule_of(model, task=Task.SWAP, **overrides):
    base = PRESETS[task].schedule
    values = dict(sagi_start=0.0, sagi_end=0.5, salq_start=0.5, salq_end=1.0, salq_first_site=base.salq_first_site)
    values.update(overrides)
    return MCASchedule(**values)


def sample_rows(model, family_name, cfg=5.0, seeds=(1, 2, 3)):
    """The 3-row batch sampled by the MCA loop inside ComfyUI's sampler (no pinned rows)."""
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "ddim_uniform", STEPS)
    latent = torch.zeros(3, 4, 8, 8)
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(0))
    positive, negative = rows_and_negative(family_name, seeds)
    loop = comfy.samplers.KSAMPLER(mca_sample_loop, extra_options={"control": RowControl()})
    return comfy.sample.sample_custom(model, noise, cfg, loop, sigmas, positive, negative, latent,
                                      disable_pbar=True, seed=0)


def test_site_counts_and_the_preset_site_of_each_family(family):
    name, model = family
    count, preset_site, preset_key = FAMILIES[name]
    adapter = model_adapter(model)
    sites = adapter.sites
    assert len(sites) == count
    resolved = adapter.preset_schedule(PRESETS[Task.SWAP])
    assert resolved.salq_first_site == preset_site and sites[preset_site].key == preset_key
    assert adapter.preset_schedule(PRESETS[Task.GENERATION]).salq_first_site == 0
    table = resolved.table(50, count)
    for step, row in enumerate(table):  # the official step bounds on every family
        for site, op in enumerate(row):
            assert op is (Op.SAGI if step < 5 else Op.SALQ if site >= preset_site else Op.NONE), (step, site)


def test_sd15_preset_is_the_official_site_9():
    model = random_models.tiny_sd15_model()
    assert model_adapter(model).preset_schedule(PRESETS[Task.SWAP]).salq_first_site == 9


def test_the_layer_setting_means_the_same_fraction_everywhere(family):
    name, model = family
    count = FAMILIES[name][0]
    schedule = resolved(model, salq_sites=0.5)
    assert schedule.salq_first_site == count // 2
    raw = resolved(model, salq_sites=0.5, salq_first_site=3)
    assert raw.salq_first_site == 3, "the raw site index wins"
    for beyond in (count, count + 1):  # the site count itself is one past the last site: SALQ would run nowhere
        with pytest.raises(ValueError, match=f"beyond this .* model's {count} self-attention sites .*run nowhere"):
            patch_model(model, PRESETS[Task.SWAP], schedule_of(model, salq_first_site=beyond), SUBJECT_MASK,
                        EDIT_MASK)


def test_sd15_fraction_reproduces_the_official_site():
    assert resolved(random_models.tiny_sd15_model(), salq_sites=0.5625).salq_first_site == 9


def test_patch_on_every_site_matches_the_dense_formula_and_keeps_rows_0_and_1(family):
    name, model = family
    count, preset_site, _ = FAMILIES[name]
    patched = patch_model(model, PRESETS[Task.SWAP], schedule_of(model), SUBJECT_MASK, EDIT_MASK)
    state = mca_state(patched)
    state.trace = []
    calls = []
    out = sample_rows(recording(patched, calls), name)
    keys = [site.key for site in find_attention_sites(model.get_model_object("diffusion_model"))]
    assert {call["key"] for call in calls} == set(keys), "every site must be patched"

    def expected_op(step, key):  # SAGI at step 0, SALQ at step 1 from the preset site
        return Op.SAGI if step == 0 else Op.SALQ if keys.index(key) >= preset_site else Op.NONE

    assert check_recorded_calls(calls, expected_op, SUBJECT_MASK, EDIT_MASK) == (
        {Op.SAGI, Op.SALQ, Op.NONE} if preset_site > 0 else {Op.SAGI, Op.SALQ})
    plain = sample_rows(model, name)
    torch.testing.assert_close(out[:2], plain[:2], atol=1e-5, rtol=0)
    assert (out[TARGET] - plain[TARGET]).abs().max() > 1e-4


def test_split_cond_uncond_equals_batched_and_cfg_1_runs(family, monkeypatch):
    name, model = family
    patched = patch_model(model, PRESETS[Task.SWAP], schedule_of(model), SUBJECT_MASK, EDIT_MASK)
    batched = sample_rows(patched, name)
    split_cond_uncond(monkeypatch)
    state = mca_state(patched)
    state.trace = []
    split = sample_rows(patched, name)
    assert {chunks for *_, chunks in state.trace} == {1}, "ComfyUI should have run cond and uncond separately"
    torch.testing.assert_close(split, batched, atol=2e-5 * float(batched.abs().max()), rtol=0)
    monkeypatch.undo()
    state.trace = []
    one = sample_rows(patched, name, cfg=1.0)
    assert {chunks for *_, chunks in state.trace} == {1} and torch.isfinite(one).all()
    assert any(op is Op.SALQ for *_, (op,), _ in state.trace)


@pytest.mark.parametrize("name", ["Segmind_Vega"])  # every SDXL-family model shares comfy.model_base.SDXL's ADM
def test_each_row_gets_its_own_pooled_output(pack, name):
    model = random_models.tiny_family_model(name)
    seen = []

    def capture(apply_model, args):
        seen.append((list(args["cond_or_uncond"]), args["c"]["y"].clone()))
        return apply_model(args["input"], args["timestep"], **args["c"])

    model.set_model_unet_function_wrapper(capture)
    sample_rows(model, name)
    pooled = [prompt(name, s)[0][1]["pooled_output"][0] for s in (1, 2, 3)]
    negative = prompt(name, 9)[0][1]["pooled_output"][0]
    dim = pooled[0].numel()
    for cond_or_uncond, adm in seen:
        for chunk, kind in enumerate(cond_or_uncond):
            rows = adm[3 * chunk:3 * chunk + 3, :dim]
            expected = torch.stack(pooled) if kind == 0 else negative.expand(3, dim)
            torch.testing.assert_close(rows, expected)


def test_rows_with_other_size_options_are_refused(pack):
    rows = [random_models.tiny_sdxl_prompt(s) for s in (1, 2, 3)]
    rows[1][0][1]["width"] = 512
    with pytest.raises(ValueError, match="differ in 'width'.*same width"):
        row_prompts(*rows)


def test_a_dit_model_is_refused_with_its_family_name(pack):
    with pytest.raises(ValueError, match="cannot patch this Stable Diffusion 3 model: its diffusion model is a "
                                         ".*MMDIT.*supported: (?=.*Stable Diffusion 1.x)(?=.*Flux.1)(?=.*Chroma)"):
        model_adapter(random_models.tiny_dit_model())


def inverted(model, seed, steps=STEPS, scale=1.0):
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(seed)) * scale
    sigmas = invert.schedule_sigmas(model, steps, None)
    name = type(model.model.model_config).__name__
    empty = prompt(name, 0)
    return invert.invert_latent(model, latent, empty, empty, 1.0, sigmas), latent


@pytest.mark.parametrize("task", list(Task))
def test_swap_add_and_generation_run_on_every_family(family, task):
    name, model = family
    edit = None if task is Task.GENERATION else EDIT_MASK
    patched = patch_model(model, PRESETS[task], schedule_of(model, task), SUBJECT_MASK, edit,
                          subject=[2, 3] if edit is None else None)
    subject, _ = inverted(model, 1)
    condition, clean = ({"samples": torch.zeros(1, 4, 8, 8)}, None) if task is Task.GENERATION else inverted(model, 2)
    out = sampler.mca_sample(patched, prompt(name, 1), prompt(name, 2), prompt(name, 3), prompt(name, 9),
                             subject, condition, 0, 5.0)
    rows, edit_used = out.rows, out.edit_masks[0]
    assert rows.shape == (3, 4, 8, 8) and torch.isfinite(rows).all()
    assert edit_used is not None and edit_used.dim() == 2
    if task is not Task.GENERATION:  # local blend: outside the edit mask, the condition image
        outside = torch.nn.functional.interpolate(EDIT_MASK[None], size=(8, 8), mode="nearest")[0, 0] <= 0.5
        torch.testing.assert_close(rows[TARGET][:, outside], clean[0][:, outside], atol=1e-4, rtol=1e-4)


class ExactVPrediction(torch.nn.Module):
    """A diffusion model whose v-prediction is exact for latents ~ N(0, s^2) (s = DATA_STD, model space).

    ComfyUI feeds ``x / sqrt(sigma^2 + 1)`` and a discrete timestep, and turns v into x0 with its own
    v-prediction ``model_sampling``: so this checks the pack's inversion and sampler through that path.
    """

    def __init__(self, model_sampling, data_std: float):
        super().__init__()
        self.model_sampling = model_sampling
        self.data_std = data_std
        self.dtype = torch.float32  # ComfyUI reads the diffusion model's dtype

    def forward(self, x, timesteps=None, **kwargs):
        sigma = self.model_sampling.sigma(timesteps).view(-1, 1, 1, 1).to(x)
        x_sigma = x * (sigma ** 2 + 1).sqrt()
        x0 = x_sigma * self.data_std ** 2 / (self.data_std ** 2 + sigma ** 2)
        return (x_sigma / (sigma ** 2 + 1) - x0) * (sigma ** 2 + 1).sqrt() / sigma


def test_sd2_v_prediction_inversion_and_sampler_round_trip(pack):
    model = random_models.tiny_family_model("SD20", v_prediction=True)
    import comfy.model_sampling

    assert isinstance(model.get_model_object("model_sampling"), comfy.model_sampling.V_PREDICTION)
    silent = patch_model(model, PRESETS[Task.SWAP], schedule_of(model, sagi_end=0.0, salq_start=0.0, salq_end=0.0),
                         SUBJECT_MASK, EDIT_MASK)
    data_std, scale = 0.5, 0.18215  # latents of std 0.5 in model space
    silent.add_object_patch("diffusion_model", ExactVPrediction(model.get_model_object("model_sampling"), data_std))
    errors = {}
    for steps in (10, 25, 50):
        condition, latent = inverted(silent, 2, steps, data_std / scale)
        subject, _ = inverted(silent, 1, steps, data_std / scale)
        rows = sampler.mca_sample(silent, prompt("SD20", 1), prompt("SD20", 2), prompt("SD20", 1),
                                     prompt("SD20", 9), subject, condition, 0, 1.0, local_blend=False).rows
        errors[steps] = float((rows[TARGET] - latent[0]).abs().mean() / latent.abs().mean())
    print("v-prediction round trip, relative error:", errors)
    assert errors[50] < errors[25] < errors[10] and errors[50] < 0.05
