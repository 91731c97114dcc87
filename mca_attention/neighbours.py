"""What neighbouring nodes attach to the MODEL and the CONDITIONING that reach the MCA Sampler, honoured or refused by
name (the README's "What neighbouring nodes attach ..." tables list every key; ``latents`` does the LATENT's).

The Sampler runs inside ComfyUI's own ``comfy.sample.sample_custom``, which applies every model option and every
conditioning key of the (stacked) prompts to every row of MCA's one batch, as it does for a batch of images. That is
the core sampler's behaviour wherever the option acts on each row alone: weight patches, guidance that only reshapes
each row's prediction, per-row attention and block patches. It is refused here, by the node that put it there, where
acting on the whole batch would mix MCA with another behaviour: guidance that runs extra model calls through MCA's
attention or reduces over the whole batch, patches that change the tokens MCA's attention sees, caches that skip the
steps MCA runs at, an image (ControlNet, inpainting, unCLIP) or a model patch from a conditioning that would steer the
condition and subject rows the targets read, a prompt that switches off part way.
MCA DDIM Invert needs none of this: its walk is one image in ``sample_custom``, which honours all of it.
"""
from __future__ import annotations

import torch

from .adapters import adapter_class
from .adapters.hook import SiteHook
from .prompts import PROMPT_NAMES, target_names

REMOVE = "Remove it from the MODEL path of the MCA Sampler (or connect the Sampler's MODEL from before it)."
EXTRA_CALLS = ("its guidance runs an extra model call of the whole batch through MCA's attention, which rebuilds the "
               "targets there from altered rows")
ONE_IMAGE = ("it reads a per-row value as one number, so it fails on any batch of several images (an MCA batch holds "
             "at least three rows)")
# Where a core node defines the functions or objects it attaches to a MODEL: (module, names or None for any) ->
# (the node, why MCA refuses it, what to do).
REFUSED_PATCHES = {
    ("nodes_sag", None): ("Self-Attention Guidance (SelfAttentionGuidance)",
                          f"{EXTRA_CALLS}, and it records the middle block's self-attention, one of MCA's sites "
                          f"(it takes MCA's place there, or MCA runs it for some rows only)", REMOVE),
    ("nodes_pag", None): ("Perturbed-Attention Guidance (PerturbedAttentionGuidance)",
                          f"{EXTRA_CALLS}; the middle block's perturbed self-attention it sets for that call sits "
                          f"under MCA's own replacement there, so ComfyUI never runs it", REMOVE),
    ("nodes_slg", None): ("Skip Layer Guidance (SkipLayerGuidanceDiT / SkipLayerGuidanceDiTSimple / "
                          "SkipLayerGuidanceSD3)", f"{EXTRA_CALLS}, with blocks skipped", REMOVE),
    ("nodes_perpneg", None): ("Perp-Neg (PerpNeg)", f"{EXTRA_CALLS}, on an empty prompt",
                              "Remove it and put the negative prompt on the Sampler's negative input."),
    ("nodes_mahiro", None): ("Mahiro (Positive-Biased Guidance)",
                             "its guidance weight is one mean over the whole batch, so MCA's condition and subject "
                             "rows (and the other targets) would set each target's guidance",
                             f"{REMOVE} Guidance that acts on each row alone (CFGZeroStar, RescaleCFG, APG, TCFG, "
                             f"FreSca) is honoured"),
    ("nodes_video_model", None): ("VideoLinearCFGGuidance / VideoTriangleCFGGuidance",
                                  "it ramps cfg along the batch as if its rows were video frames, so each MCA row "
                                  "would sample at another cfg", f"{REMOVE} Set the Sampler's cfg instead"),
    ("nodes_lumina2", ("RenormCFG",)): ("RenormCFG", ONE_IMAGE, f"{REMOVE} Set the Sampler's cfg instead"),
    ("nodes_eps", ("TemporalScoreRescaling",)): ("TemporalScoreRescaling", ONE_IMAGE, REMOVE),
    ("nodes_hypertile", None): ("HyperTile", "it cuts self-attention into tiles, so MCA's attention would see tiles "
                                             "instead of each row's whole image", REMOVE),
    ("nodes_tomesd", None): ("ToMe (TomePatchModel)", "it merges self-attention tokens, so MCA's attention would not "
                                                      "see each row's whole image", REMOVE),
    ("nodes_model_downscale", None): ("PatchModelAddDownscale (Kohya Deep Shrink)",
                                      "it shrinks the UNet's features at some steps, where MCA's masks and "
                                      "cross-attention maps are laid out on the latent's grid", REMOVE),
    ("nodes_differential_diffusion", None): ("Differential Diffusion",
                                             "it acts only through a noise mask, which MCA refuses (MCA keeps the "
                                             "condition outside its edit mask itself)",
                                             f"{REMOVE} Connect the region as MCA Attention Patch's edit_mask"),
    ("nodes_easycache", None): ("EasyCache / LazyCache", "it skips model calls and reuses earlier outputs, so MCA's "
                                                         "attention would not run at the steps it skips", REMOVE),
    ("context_windows", None): ("Context Windows (ContextWindowsManual / WanContextWindowsManual)",
                                "it samples windows of the latent apart, so MCA's rows would not see one another's "
                                "whole image", REMOVE),
    ("nodes_model_patch", None): ("a model patch that injects an image (QwenImageDiffsynthControlnet, "
                                  "ZImageFunControlnet, USOStyleReference, SUPIRApply, ...)",
                                  "it would act on every row of MCA's batch, the condition and subject rows the "
                                  "targets read too", REMOVE),
    ("nodes_flux", ("KV_Attn_Input", "FluxKVCache")): ("FluxKVCache", "it caches reference-image keys and values, and "
                                                                      "MCA rows take no reference images", REMOVE),
}
ROPE_KEY = "rope_options"  # ScaleROPE

# Conditioning keys (on any prompt, the negative included) -> (the nodes that set them, why, what to do).
ALL_ROWS = ("MCA samples its rows as one batch, so it would act on the condition and subject rows too, whose "
            "features the targets read")
REFUSED_CONDITIONING = {
    "control": ("a ControlNet (Apply ControlNet, ControlNetApplyAdvanced, ControlNetApplySD3, "
                "ControlNetInpaintingAliMamaApply)", ALL_ROWS,
                "Connect the text encode output directly: in swap and add the condition image already holds the "
                "layout; in generation MCA Attention Patch's edit_mask places the subject."),
    "gligen": ("GLIGEN boxes (GLIGENTextBoxApply)", ALL_ROWS,
               "Connect the text encode output directly; in generation MCA Attention Patch's edit_mask places the "
               "subject."),
    "hooks": ("hooks (Set CLIP Hooks, Cond Set Props, Cond Pair Set Props and the other hook nodes)",
              "hooks switch weights per prompt, and MCA's rows share one model call",
              "Put the LoRA on the MODEL instead (LoraLoaderModelOnly), so that every row reads the same weights."),
    "concat_latent_image": ("an image for an inpainting or InstructPix2Pix model (InpaintModelConditioning, "
                            "InstructPixToPixConditioning)", ALL_ROWS,
                            "Use a plain model with CLIP Text Encode: MCA Attention Patch's edit_mask limits the "
                            "change."),
    "concat_mask": ("an inpainting mask (InpaintModelConditioning)", ALL_ROWS,
                    "Use a plain model with CLIP Text Encode: MCA Attention Patch's edit_mask limits the change."),
    "concat_image": ("an image for the SD x4 upscaler (SD_4XUpscale_Conditioning)", ALL_ROWS,
                     "Connect the text encode output directly."),
    "unclip_conditioning": ("an unCLIP image embedding (unCLIPConditioning)", ALL_ROWS,
                            "Connect the text encode output directly."),
}
REFUSED_CONDITIONING["control_apply_to_uncond"] = REFUSED_CONDITIONING["control"]
# On a row's prompt only: the negative is passed to ComfyUI as it is, which honours a range there as it always does.
TIMESTEP_RANGE_KEYS = (("start_percent", "end_percent"), ("clip_start_percent", "clip_end_percent"))


def origin(item) -> tuple[str, str]:
    """The module (its last name) and the qualified name of a function or object a node attached."""
    target = getattr(item, "func", item)  # functools.partial
    module = getattr(target, "__module__", None) or type(target).__module__ or ""
    name = getattr(target, "__qualname__", None) or type(target).__qualname__
    return module.replace("\\", ".").replace("/", ".").rsplit(".", 1)[-1], name


def _attached(value, where: str, depth: int = 0):
    """Every function or object inside ``value`` (dicts, lists, tuples), with where it sits."""
    if isinstance(value, dict) and depth < 6:
        for key, item in value.items():
            yield from _attached(item, f"{where}[{key!r}]", depth + 1)
    elif isinstance(value, (list, tuple)) and depth < 6:
        for item in value:
            yield from _attached(item, where, depth + 1)
    elif value is not None and not isinstance(value, (str, bytes, int, float, bool, torch.Tensor, torch.dtype,
                                                      torch.device)):
        yield value, where


def model_attachments(model):
    """What nodes attached to ``model``'s model options (a ModelPatcher's patches, replacements, guidance functions,
    caches, context windows). The refused core nodes that also add the patcher's wrappers (EasyCache, LazyCache,
    Context Windows) put an object here too; the wrappers of honoured ones (CFG Override, TorchCompileModel) stay."""
    yield from _attached(model.model_options, "model_options")


def refused_patch(item) -> tuple[str, str, str] | None:
    module, name = origin(item)
    for (refused_module, names), reason in REFUSED_PATCHES.items():
        if module == refused_module and (names is None or name.split(".")[0] in names):
            return reason
    return None


def check_model_options(model, state) -> None:
    """Refuse, by the node that attached it, what the MCA Sampler's MODEL carries that would mix with MCA."""
    for item, where in model_attachments(model):
        refused = refused_patch(item)
        if refused is not None:
            node, why, instead = refused
            raise ValueError(f"MCA Sampler: the MODEL carries {node} (in {where}), which MCA cannot honour: {why}. "
                             f"{instead}")
    transformer_options = model.model_options.get("transformer_options", {})
    if getattr(model, "additional_models", {}).get("multigpu"):
        raise ValueError("MCA Sampler: the MODEL carries MultiGPU CFG Split (MultiGPU_WorkUnits), which would run the "
                         "cond and uncond halves of MCA's batch at once in threads on several GPUs; MCA's per-run "
                         f"state is made for one model call at a time. {REMOVE}")
    rope = transformer_options.get(ROPE_KEY) or {}
    moved = any(value != (1.0 if key.startswith("scale_") else 0.0) for key, value in rope.items()
                if key.startswith(("scale_", "shift_")))
    if state.move_subject and moved:
        raise ValueError("MCA Sampler: the MODEL carries ScaleROPE (transformer_options['rope_options']) and MCA "
                         "Attention Patch moves the subject onto the edit region (subject_position 'edit region'), "
                         "which turns the subject's keys by unscaled RoPE positions. Set subject_position to 'own' "
                         "(ScaleROPE is then honoured), or remove ScaleROPE.")
    _check_mca_in_place(model, transformer_options)


def calls_mca(item, depth: int = 0) -> bool:
    """Whether ``item`` is one of MCA's hooks or holds one it calls (a wrapper another node put around MCA's:
    in its closure, its default arguments, ``__wrapped__``, a partial's function or an object's attributes)."""
    if isinstance(item, SiteHook):
        return True
    if depth > 2 or item is None or isinstance(item, (str, bytes, int, float, bool, torch.Tensor, type)):
        return False
    held = [getattr(item, name, None) for name in ("__wrapped__", "func", "__self__")]
    held += list(getattr(item, "__defaults__", None) or ())
    for cell in getattr(item, "__closure__", None) or ():
        try:
            held.append(cell.cell_contents)
        except ValueError:  # an empty cell
            pass
    if not callable(getattr(item, "__code__", None)) and hasattr(item, "__dict__"):
        held += list(vars(item).values())
    return any(calls_mca(inner, depth + 1) for inner in held if inner is not item)


def _check_mca_in_place(model, transformer_options: dict) -> None:
    """Refuse self-attention that a node after MCA Attention Patch put in place of MCA's without calling MCA's
    (ComfyUI calls only what sits there, so MCA's attention would not run)."""
    adapter = adapter_class(model)
    for where, item in ({} if adapter is None else adapter.hooks(transformer_options)).items():
        if not calls_mca(item):
            raise ValueError(f"MCA Sampler: self-attention at {where} is replaced by {'.'.join(origin(item))}, set "
                             f"after MCA Attention Patch, so MCA's attention never runs there. Connect that node "
                             f"before MCA Attention Patch (MCA then runs it for the rows it does not rebuild), or "
                             f"remove it.")


def check_prompt_options(conditioning: list, name: str, row: bool) -> None:
    """Refuse, by the node that set it, a conditioning key that would act on every row of MCA's batch (any prompt),
    or a timestep range on a row's prompt."""
    for _, options in conditioning:
        for key, (node, why, instead) in REFUSED_CONDITIONING.items():
            if options.get(key) is not None and options.get(key) is not False:
                raise ValueError(f"{name} carries {node} ('{key}'), which MCA cannot honour: {why}. {instead}")
        for start, end in TIMESTEP_RANGE_KEYS:
            if row and (start in options or end in options):
                raise ValueError(f"{name} carries a timestep range ('{start}' {options.get(start, 0.0):g} to '{end}' "
                                 f"{options.get(end, 1.0):g}, from ConditioningSetTimestepRange or a scheduled CLIP "
                                 f"hook), but each MCA row reads its prompt at every step. Connect the text encode "
                                 f"output directly (a timestep range on the negative is honoured).")


def check_neighbours(model, state, condition_prompt: list, subject_prompt: list, target_prompt: list,
                     negative: list) -> None:
    """What neighbouring nodes attached to the MCA Sampler's MODEL and prompts, honoured or refused by name."""
    check_model_options(model, state)
    targets = [[entry] for entry in target_prompt]
    for conditioning, name in [(condition_prompt, PROMPT_NAMES[0]), (subject_prompt, PROMPT_NAMES[1]),
                               *zip(targets, target_names(len(targets)))]:
        check_prompt_options(conditioning, name, row=True)
    check_prompt_options(negative, PROMPT_NAMES[3], row=False)
