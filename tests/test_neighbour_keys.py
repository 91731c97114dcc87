"""What neighbouring core nodes attach to the MODEL and the prompts that reach the MCA nodes (issue 25, item 2): each
key refused by name through the function the node calls, with the key put there by the real core node of the
running ComfyUI, or honoured so that the result changes as the core sampler's would (README, "What neighbouring
nodes attach ...")."""
from __future__ import annotations

import pytest
import torch

import random_models
from mca_ctrl.mca_attention import engine, invert
from mca_ctrl.mca_attention.comfy_patch import patch_model
from mca_ctrl.mca_attention.schedule import MCASchedule
from mca_ctrl.mca_attention.tasks import PRESETS, Task
from random_models import square_mask, tiny_flux_prompt, tiny_prompt

SUBJECT_MASK, EDIT_MASK = square_mask(64, 16, 48), square_mask(64, 8, 40)
SCHEDULE = MCASchedule(0.0, 0.5, 0.5, 1.0, 0)
CFG = 5.0


def node_defaults(node_class) -> dict:
    """The node's widget defaults (first option of a combo), as a freshly added node holds them."""
    values = {}
    spec = node_class.INPUT_TYPES()
    for section in ("required", "optional"):
        for name, entry in (spec.get(section) or {}).items():
            kind, options = entry[0], (entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {})
            if isinstance(kind, list):
                values[name] = options.get("default", kind[0] if kind else None)
            elif kind == "COMBO":
                values[name] = options.get("default", (options.get("options") or [None])[0])
            elif kind in ("FLOAT", "INT", "BOOLEAN", "STRING") and "default" in options:
                values[name] = options["default"]
    return values


def core_node(node_id: str, **inputs):
    """Run the core node ``node_id`` of the running ComfyUI (V1 or V3) with its defaults and ``inputs``; its outputs."""
    import nodes

    node_class = nodes.NODE_CLASS_MAPPINGS.get(node_id)
    if node_class is None:
        pytest.skip(f"{node_id} is not a node of this ComfyUI")
    values = {**node_defaults(node_class), **inputs}
    if hasattr(node_class, "define_schema"):
        out = node_class.execute(**values)
        return out if isinstance(out, tuple) else out.result if out.result is not None else out.args
    return getattr(node_class(), node_class.FUNCTION)(**values)


def patched(model, move_subject=False):
    return patch_model(model, PRESETS[Task.SWAP], SCHEDULE, SUBJECT_MASK, EDIT_MASK, move_subject=move_subject)


def prompts(target=None, negative=None):
    return (tiny_prompt(1), tiny_prompt(2), target or tiny_prompt(3), negative or tiny_prompt(9))


@pytest.fixture(scope="module")
def baseline(sd15):
    model, subject, condition = sd15
    return engine.mca_sample(patched(model), *prompts(), subject, condition, 0, CFG).rows


def sample(sd15, model, target=None, negative=None, cfg=CFG):
    _, subject, condition = sd15
    return engine.mca_sample(model, *prompts(target, negative), subject, condition, 0, cfg).rows


# --- MODEL: refused by the node that attached it -------------------------------------------------------------------

REFUSED_MODEL_NODES = [
    ("SelfAttentionGuidance", {}, "Self-Attention Guidance"),
    ("PerturbedAttentionGuidance", {}, "Perturbed-Attention Guidance"),
    ("SkipLayerGuidanceDiT", {}, "Skip Layer Guidance"),
    ("SkipLayerGuidanceDiTSimple", {}, "Skip Layer Guidance"),
    ("SkipLayerGuidanceSD3", {}, "Skip Layer Guidance"),
    ("PerpNeg", {"empty_conditioning": tiny_prompt(0)}, "Perp-Neg"),
    ("Mahiro", {}, "Mahiro"),
    ("RenormCFG", {}, "RenormCFG"),
    ("TemporalScoreRescaling", {}, "TemporalScoreRescaling"),
    ("VideoLinearCFGGuidance", {}, "VideoLinearCFGGuidance"),
    ("VideoTriangleCFGGuidance", {}, "VideoTriangleCFGGuidance"),
    ("HyperTile", {"tile_size": 256, "swap_size": 2, "max_depth": 0, "scale_depth": False}, "HyperTile"),
    ("TomePatchModel", {}, "ToMe"),
    ("PatchModelAddDownscale", {}, "Kohya Deep Shrink"),
    ("DifferentialDiffusion", {}, "Differential Diffusion"),
    ("EasyCache", {}, "EasyCache"),
    ("LazyCache", {}, "LazyCache"),
    ("ContextWindowsManual", {}, "Context Windows"),
    ("FluxKVCache", {}, "FluxKVCache"),
]


@pytest.mark.parametrize("node_id, inputs, named", REFUSED_MODEL_NODES, ids=[n[0] for n in REFUSED_MODEL_NODES])
@pytest.mark.parametrize("order", ["before the patch", "after the patch"])
def test_model_patches_that_would_mix_with_mca_are_refused_by_node(sd15, node_id, inputs, named, order):
    model, subject, condition = sd15
    if order == "before the patch":
        mca = patched(core_node(node_id, model=model, **inputs)[0])
    else:
        mca = core_node(node_id, model=patched(model), **inputs)[0]
    with pytest.raises(ValueError, match=f"MCA Sampler: the MODEL carries .*{named}.* which MCA cannot honour: .*"
                                         f"(Remove it|Set the Sampler's cfg)"):
        engine.mca_sample(mca, *prompts(), subject, condition, 0, CFG)


def test_a_model_patch_that_injects_an_image_is_refused(sd15):
    """QwenImageDiffsynthControlnet / ZImageFunControlnet attach a patch object of comfy_extras.nodes_model_patch (their
    model files are not cheap to build: the object is placed as those nodes place it)."""
    nodes_model_patch = pytest.importorskip("comfy_extras.nodes_model_patch")
    model, subject, condition = sd15
    mca = patched(model).clone()
    patch = object.__new__(nodes_model_patch.DiffSynthCnetPatch)
    patch.encoded_image = torch.zeros(1)  # what its ``to`` moves when ComfyUI unloads the model
    mca.set_model_double_block_patch(patch)
    with pytest.raises(ValueError, match="a model patch that injects an image .*every row of MCA's batch"):
        engine.mca_sample(mca, *prompts(), subject, condition, 0, CFG)


def test_multigpu_cfg_split_is_refused(sd15):
    """MultiGPU_WorkUnits adds its per-device clones as the patcher's 'multigpu' additional models (none on a one-device
    machine, so they are added as the node adds them)."""
    model, subject, condition = sd15
    mca = patched(model).clone()
    mca.set_additional_models("multigpu", [model.clone()])
    with pytest.raises(ValueError, match=r"MultiGPU CFG Split \(MultiGPU_WorkUnits\)"):
        engine.mca_sample(mca, *prompts(), subject, condition, 0, CFG)


def test_self_attention_replaced_after_the_patch_is_refused(sd15):
    """Another attn1 replacement set after MCA Attention Patch: ComfyUI would call it instead of MCA's (or, at a
    two-part key, never): refused with the site; the same replacement before the patch is chained and runs."""
    model, subject, condition = sd15

    def other_attention(q, k, v, extra_options):
        from comfy.ldm.modules.attention import optimized_attention

        return optimized_attention(q, k, v, extra_options["n_heads"])

    after = patched(model).clone()
    after.set_model_attn1_replace(other_attention, "output", 3, 0)
    with pytest.raises(ValueError, match=r"self-attention at .*\[\('output', 3, 0\)\] is replaced by .*other_attention.* "
                                         r"set after MCA Attention Patch"):
        engine.mca_sample(after, *prompts(), subject, condition, 0, CFG)
    before = model.clone()
    before.set_model_attn1_replace(other_attention, "output", 3, 0)
    assert torch.isfinite(sample(sd15, patched(before))).all()
    from dense_reference import recording  # wraps MCA's own replacements (and calls them): MCA still runs

    calls = []
    assert torch.isfinite(sample(sd15, recording(patched(model), calls))).all() and calls


# --- MODEL: honoured as the core sampler honours it ----------------------------------------------------------------

def write_hypernetwork(folder):
    """A hypernetwork file (the format HypernetworkLoader reads) for every attention width of the tiny UNet."""
    generator = torch.Generator().manual_seed(5)
    state = {}
    for width in (32, 64, 128, 256, 320, 640, 768, 1280):
        layer = {"linear.0.weight": torch.randn(width, width, generator=generator) * 0.5,
                 "linear.0.bias": torch.zeros(width)}
        state[width] = [layer, dict(layer)]
    torch.save(state, folder / "tiny.pt")
    return "tiny.pt"


def resolved(inputs: dict, model) -> dict:
    """``inputs`` with the placeholders of the node tables made: the MODEL (``model``, or model1 of a merge), another
    model, a latent operation."""
    inputs = dict(inputs)
    if inputs.get("model2") == "other":
        inputs.update(model1=model, model2=random_models.tiny_sd15_model(seed=1))
    else:
        inputs["model"] = model
    if inputs.get("operation") == "tonemap":
        inputs["operation"] = core_node("LatentOperationTonemapReinhard", multiplier=0.2)[0]
    return inputs


HONOURED_MODEL_NODES = [
    ("CFGZeroStar", {}),
    ("CFGNorm", {}),
    ("RescaleCFG", {}),
    ("APG", {}),
    ("TCFG", {}),
    ("FreSca", {"freq_cutoff": 1}),
    ("Epsilon Scaling", {"scaling_factor": 1.2}),
    ("LatentApplyOperationCFG", {"operation": "tonemap"}),
    ("FreeU", {}),  # FreeU_V2 too, but its normalisation is 0 / 0 on the tiny UNet's 1 x 1 level (in KSampler too)
    ("NAGuidance", {}),
    ("UNetSelfAttentionMultiply", {"q": 1.5}),
    ("ModelMergeSimple", {"model2": "other", "ratio": 0.5}),  # its MODEL input is model1
    ("HypernetworkLoader", {"hypernetwork_name": "tiny", "strength": 1.0}),
]


@pytest.mark.parametrize("node_id, inputs", HONOURED_MODEL_NODES, ids=[n[0] for n in HONOURED_MODEL_NODES])
def test_model_patches_that_act_on_each_row_are_honoured(sd15, baseline, node_id, inputs, tmp_path):
    """Guidance that reshapes each row's prediction, block and attention patches that act on each row, weight patches:
    ComfyUI applies them to every row, as to every image of a batch; the targets change (the condition and subject
    rows replay their inversion, so they do not)."""
    inputs = resolved(inputs, sd15[0])
    if node_id == "HypernetworkLoader":
        import folder_paths

        folder_paths.add_model_folder_path("hypernetworks", str(tmp_path))
        inputs["hypernetwork_name"] = write_hypernetwork(tmp_path)
    rows = sample(sd15, patched(core_node(node_id, **inputs)[0]))
    targets = slice(2, None)
    assert torch.isfinite(rows).all()
    assert not torch.allclose(rows[targets], baseline[targets], atol=1e-5), f"{node_id} changed nothing"
    assert torch.equal(rows[:2], baseline[:2])


def test_cfg_override_samples_its_range_at_its_cfg(sd15):
    """CFGOverride (a predict_noise wrapper) at cfg 1 over the whole run gives the run at cfg 1."""
    model = sd15[0]
    overridden = patched(core_node("CFGOverride", model=model, cfg=1.0)[0])
    assert torch.equal(sample(sd15, overridden), sample(sd15, patched(model), cfg=1.0))


def test_a_sampling_type_only_on_the_samplers_model_is_refused_by_the_inversions_record(sd15):
    """ModelSamplingDiscrete (v_prediction) on the Sampler's model but not on the inversion's: the trajectory's source
    differs and is refused (put the node before both)."""
    model, subject, condition = sd15
    vpred = core_node("ModelSamplingDiscrete", model=model, sampling="v_prediction", zsnr=False)[0]
    with pytest.raises(ValueError, match="inverted by a Stable Diffusion 1.x model .*EPS sampling.* V_PREDICTION"):
        engine.mca_sample(patched(vpred), *prompts(), subject, condition, 0, CFG)


def test_noise_settings_only_on_the_samplers_model_are_refused(sd15):
    """ModelSamplingDiscrete with zsnr, or Flux's shift, on the Sampler's model only (before or after the patch):
    the rows would be denoised on another noise scale than they were inverted on."""
    model, subject, condition = sd15
    zsnr = core_node("ModelSamplingDiscrete", model=model, sampling="eps", zsnr=True)[0]
    for sampled in (patched(zsnr), core_node("ModelSamplingDiscrete", model=patched(model), sampling="eps",
                                             zsnr=True)[0]):
        with pytest.raises(ValueError, match=r"noise settings at sigmas 0.02917 to 14.61, but the MCA Sampler's "
                                             r"model has sigmas 0.02917 to 4519 \(a ModelSampling node on one path"):
            engine.mca_sample(sampled, *prompts(), subject, condition, 0, CFG)


def test_the_same_noise_settings_on_both_paths_pass(flux):
    """ModelSamplingFlux before both the inversion and the patch: the trajectory's record matches (the node's
    shift at 64 px is 0.65; the tiny model's own 1.15)."""
    model, *_ = flux
    shifted = core_node("ModelSamplingFlux", model=model, max_shift=1.5, base_shift=0.7, width=64, height=64)[0]
    sigmas = invert.schedule_sigmas(shifted, 2, None)
    latent = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(1))
    inverted = invert.invert_latent(shifted, latent, tiny_flux_prompt(0), tiny_flux_prompt(0), 1.0, sigmas)
    out = engine.mca_sample(patched(shifted), tiny_flux_prompt(1), tiny_flux_prompt(2), tiny_flux_prompt(3),
                            tiny_flux_prompt(9), inverted, inverted, 0, 1.0)
    assert torch.isfinite(out.targets).all()
    with pytest.raises(ValueError, match="at shift 0.65, .*, but the MCA Sampler's model has shift 1.15"):
        engine.mca_sample(patched(model), tiny_flux_prompt(1), tiny_flux_prompt(2), tiny_flux_prompt(3),
                          tiny_flux_prompt(9), inverted, inverted, 0, 1.0)


ROW_WISE_GUIDANCE = [("CFGZeroStar", {}), ("CFGNorm", {}), ("RescaleCFG", {}), ("APG", {}), ("TCFG", {}),
                     ("FreSca", {"freq_cutoff": 1}), ("Epsilon Scaling", {"scaling_factor": 1.2}),
                     ("LatentApplyOperationCFG", {"operation": "tonemap"}), ("CFGNorm", {"pre_cfg": True})]
BATCH_WIDE_GUIDANCE = [("Mahiro", {}), ("VideoLinearCFGGuidance", {}), ("VideoTriangleCFGGuidance", {})]


def guided_row(model, beside: bool) -> torch.Tensor:
    """One row's prediction after ``model``'s guidance functions (CFG at 5), alone or in the middle of three rows."""
    import comfy.samplers

    generator = torch.Generator().manual_seed(3)
    x, cond, uncond = (torch.randn(3, 4, 8, 8, generator=generator) for _ in range(3))
    rows = slice(None) if beside else slice(1, 2)
    x, cond, uncond = x[rows], cond[rows], uncond[rows]

    def calc_cond_batch(model_, conds, x_, timestep, options):
        return [cond, uncond]

    original = comfy.samplers.calc_cond_batch
    comfy.samplers.calc_cond_batch = calc_cond_batch
    try:
        out = comfy.samplers.sampling_function(model.model, x, torch.full((x.shape[0],), 2.0), [], [], 5.0,
                                               model_options=model.model_options)
    finally:
        comfy.samplers.calc_cond_batch = original
    return out[1 if beside else 0]


GUIDANCE_CASES = [(*n, True) for n in ROW_WISE_GUIDANCE] + [(*n, False) for n in BATCH_WIDE_GUIDANCE]


@pytest.mark.parametrize("node_id, inputs, row_wise", GUIDANCE_CASES,
                         ids=[f"{n[0]}{'-pre_cfg' * ('pre_cfg' in n[1])}" for n in GUIDANCE_CASES])
def test_honoured_guidance_acts_on_each_row_alone_and_refused_guidance_does_not(sd15, node_id, inputs, row_wise):
    """Why the guidance functions split as they do: a row's guided prediction from an honoured one is the same alone
    as beside other rows (so a target's guidance does not depend on MCA's other rows); Mahiro's and the video CFG
    ramps' depend on the batch."""
    import nodes

    node_class = nodes.NODE_CLASS_MAPPINGS.get(node_id)
    if node_class is None or not set(inputs) <= set(node_defaults(node_class)) | {"operation"}:
        pytest.skip(f"{node_id} of this ComfyUI has no {set(inputs)} input")
    alone, beside = (guided_row(core_node(node_id, **resolved(inputs, sd15[0]))[0], beside)
                     for beside in (False, True))
    assert torch.allclose(alone, beside, atol=1e-5) is row_wise


@pytest.fixture(scope="module")
def flux(pack):
    model = random_models.tiny_flux_model()
    sigmas = invert.schedule_sigmas(model, 2, None)
    latent = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(1))
    inverted = invert.invert_latent(model, latent, tiny_flux_prompt(0), tiny_flux_prompt(0), 1.0, sigmas)
    return model, inverted


def flux_sample(flux, model, target=None):
    _, inverted = flux
    rows = (tiny_flux_prompt(1), tiny_flux_prompt(2), target or tiny_flux_prompt(3), tiny_flux_prompt(9))
    return engine.mca_sample(model, *rows, inverted, inverted, 0, 1.0).rows


def test_scale_rope_is_honoured_unless_the_subject_moves_by_unscaled_positions(flux):
    model, inverted = flux
    scaled = core_node("ScaleROPE", model=model, scale_x=2.0, scale_y=2.0)[0]
    with pytest.raises(ValueError, match=r"ScaleROPE .*subject_position 'edit region'.*Set subject_position to 'own'"):
        flux_sample(flux, patched(scaled, move_subject=True))
    plain = flux_sample(flux, patched(model))
    assert not torch.allclose(flux_sample(flux, patched(scaled))[2:], plain[2:], atol=1e-5)
    identity = core_node("ScaleROPE", model=model)[0]  # the node's defaults move nothing
    assert torch.isfinite(flux_sample(flux, patched(identity, move_subject=True))).all()


def test_attention_overridden_after_the_patch_is_refused_on_a_dit(flux):
    model, _ = flux
    mca = patched(model).clone()
    options = dict(mca.model_options["transformer_options"])
    options["optimized_attention_override"] = lambda func, *args, **kwargs: func(*args, **kwargs)
    mca.model_options["transformer_options"] = options
    with pytest.raises(ValueError, match=r"self-attention at transformer_options\['optimized_attention_override'\] is "
                                         r"replaced by .*set after MCA Attention Patch, so MCA's attention never runs"):
        flux_sample(flux, mca)
    from dense_reference import recording_override  # wraps MCA's override (and calls it): MCA still runs

    calls = []
    assert torch.isfinite(flux_sample(flux, recording_override(patched(model), calls, lambda size: (4, 4)))).all()
    assert calls


# --- CONDITIONING --------------------------------------------------------------------------------------------------

def controlnet_applied(positive, negative):
    """ControlNetApplyAdvanced with a ControlNet object (no weights: the node only copies it and sets the hint)."""
    import comfy.controlnet

    control_net = comfy.controlnet.ControlNet(None)
    control_net.control_model_wrapped = None
    return core_node("ControlNetApplyAdvanced", positive=positive, negative=negative, control_net=control_net,
                     image=torch.zeros(1, 64, 64, 3))


def hooked(conditioning):
    import comfy.hooks

    hooks = comfy.hooks.HookGroup()
    hooks.add(comfy.hooks.WeightHook())
    return core_node("ConditioningSetProperties", cond_NEW=conditioning, hooks=hooks)[0]


def conditioning_with(key, value):
    import node_helpers

    return node_helpers.conditioning_set_values(tiny_prompt(3), {key: value})


REFUSED_CONDITIONING = [
    ("ControlNet on the target", lambda: (controlnet_applied(tiny_prompt(3), tiny_prompt(9))[0], None),
     "target_prompt carries a ControlNet"),
    ("ControlNet on the negative", lambda: (None, controlnet_applied(tiny_prompt(3), tiny_prompt(9))[1]),
     "negative carries a ControlNet"),
    ("hooks", lambda: (hooked(tiny_prompt(3)), None), r"target_prompt carries hooks .*LoraLoaderModelOnly"),
    ("unCLIP", lambda: (core_node("unCLIPConditioning", conditioning=tiny_prompt(3), clip_vision_output=object())[0],
                        None), r"target_prompt carries an unCLIP image embedding \(unCLIPConditioning\)"),
    ("GLIGEN", lambda: (conditioning_with("gligen", ("position", object(), [])), None), "GLIGEN boxes"),
    ("inpainting image", lambda: (conditioning_with("concat_latent_image", torch.zeros(1, 4, 8, 8)), None),
     "InpaintModelConditioning"),
    ("timestep range", lambda: (core_node("ConditioningSetTimestepRange", conditioning=tiny_prompt(3), start=0.0,
                                          end=0.5)[0], None),
     r"target_prompt carries a timestep range \('start_percent' 0 to 'end_percent' 0.5, from "
     r"ConditioningSetTimestepRange"),
]


@pytest.mark.parametrize("case, build, message", REFUSED_CONDITIONING, ids=[c[0] for c in REFUSED_CONDITIONING])
def test_conditioning_that_would_act_on_every_row_is_refused_by_node(sd15, case, build, message):
    model, subject, condition = sd15
    target, negative = build()
    with pytest.raises(ValueError, match=message):
        engine.mca_sample(patched(model), *prompts(target, negative), subject, condition, 0, CFG)


def test_a_timestep_range_on_the_negative_is_honoured(sd15, baseline):
    """The negative goes to ComfyUI as it is: a second negative whose range covers no step changes nothing, as in
    the core sampler (ignoring the range would average it in at every step)."""
    never = core_node("ConditioningSetTimestepRange", conditioning=tiny_prompt(8), start=1.0, end=1.0)[0]
    negative = core_node("ConditioningCombine", conditioning_1=tiny_prompt(9), conditioning_2=never)[0]
    assert torch.equal(sample(sd15, patched(sd15[0]), negative=negative), baseline)


def test_flux_guidance_is_honoured(flux):
    model, _ = flux
    other = [core_node("FluxGuidance", conditioning=p, guidance=1.5)[0]
             for p in (tiny_flux_prompt(1), tiny_flux_prompt(2), tiny_flux_prompt(3), tiny_flux_prompt(9))]
    _, inverted = flux
    mca = patched(model)
    low = engine.mca_sample(mca, *other, inverted, inverted, 0, 1.0).rows
    assert not torch.allclose(low[2:], flux_sample(flux, mca)[2:], atol=1e-5)


def test_sdxl_size_conditioning_is_honoured_and_must_agree_across_rows(pack):
    """CLIPTextEncodeSDXL's size keys go to SDXL's ADM input of every row, as in the core sampler; rows that differ in
    them cannot share the one conditioning MCA samples with, and are refused by the key."""
    from random_models import tiny_sdxl_prompt

    model = random_models.tiny_family_model("SDXL")
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    inverted = invert.invert_latent(model, latent, tiny_sdxl_prompt(0), tiny_sdxl_prompt(0), 1.0,
                                    invert.schedule_sigmas(model, 2, None))
    size = {"width": 2048, "height": 2048, "crop_w": 0, "crop_h": 0, "target_width": 2048, "target_height": 2048}

    def sized(seed):
        prompt = tiny_sdxl_prompt(seed)
        prompt[0][1].update(size)
        return prompt

    mca = patched(model)
    plain = engine.mca_sample(mca, *(tiny_sdxl_prompt(s) for s in (1, 2, 3, 9)), inverted, inverted, 0, CFG).rows
    large = engine.mca_sample(mca, *(sized(s) for s in (1, 2, 3, 9)), inverted, inverted, 0, CFG).rows
    assert not torch.allclose(large[2:], plain[2:], atol=1e-5)
    with pytest.raises(ValueError, match="the row prompts differ in '(width|height|crop_w|crop_h|target_width|"
                                         "target_height)'"):
        engine.mca_sample(mca, tiny_sdxl_prompt(1), tiny_sdxl_prompt(2), sized(3), tiny_sdxl_prompt(9), inverted,
                          inverted, 0, CFG)


# --- MCA DDIM Invert: one image in ComfyUI's sampler, which honours all of it ---------------------------------------

def test_the_inversion_honours_model_patches_and_prompt_keys(sd15):
    model = sd15[0]
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    sigmas = invert.schedule_sigmas(model, 3, None)

    def inverted(with_model, positive):
        return invert.invert_latent(with_model, latent, positive, tiny_prompt(9), 3.0, sigmas)["samples"]

    plain = inverted(model, tiny_prompt(0))
    assert not torch.allclose(inverted(core_node("RescaleCFG", model=model)[0], tiny_prompt(0)), plain, atol=1e-5)
    late = core_node("ConditioningSetTimestepRange", conditioning=tiny_prompt(0), start=0.5, end=1.0)[0]
    assert not torch.allclose(inverted(model, late), plain, atol=1e-5)
