"""The shipped example workflows, defined once and written in UI and API format.

    .venv/bin/python scripts/build_workflows.py           # (re)write example_workflows/*.json, api/*.json, *.jpg
    .venv/bin/python scripts/build_workflows.py --check   # exit 1 if a file is out of date

Starts the embedded ComfyUI once to read ``/object_info`` (widget order, socket types). Then draws the template
browser's thumbnails (example_workflows/<name>.jpg) from the API files (scripts/build_thumbnails.py).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "scripts"), str(REPO / "testbed")]  # the embedded host: /object_info

import comfy_host  # noqa: E402

comfy_host.import_pack_without_host()

from mca_ctrl import model_files  # noqa: E402
import build_thumbnails  # noqa: E402
from workflow_builder import Graph, to_api, to_ui  # noqa: E402

WORKFLOWS = REPO / "example_workflows"
SAM = model_files.SAM.default
DINO = model_files.GROUNDING_DINO.default
STEPS, SEED = 50, 42
# Two rows, read like a page. The first holds what the user brings: the model files and the images with what to
# cut out of them (Models, Masks); the second is the run itself, left to right: the inversions, MCA, and the
# output at the bottom right, where reading ends. So Models stands right above Inversion and MCA, the groups that
# take its CLIP, MODEL and VAE: those wires drop one row instead of crossing two groups, as they did in one row.
# The Note stands right of the Output: the graph opens at 100 % (the Note's 10 px text readable; no graph this
# size fits a window there) on the Note, the Output group and the MCA nodes left of it, clear of the minimap at the
# bottom right. The whole graph still fits a 1920x1080 window at 58-66 % zoom (the fit view), above the frontend's
# low-detail zoom (57 %).
GROUPS = (("Models", "Masks"), ("Inversion", "MCA", "Output"))

# Where each model file the workflows name is published. A loader node lists the files it loads in
# properties.models ({name, url, directory}: the ComfyUI workflow templates' convention), so that the frontend
# can tell a user which files are missing and, in newer versions (1.47 with ComfyUI 0.29), offer to download them.
# The pack itself downloads nothing.
MODEL_URLS = {files: files.url for files in model_files.EXPECTED_MODELS}  # each file's source, in one list
assert all(MODEL_URLS.values()), "every expected model file needs its source"


@dataclass(frozen=True)
class Base:
    """The base model a workflow is made for, as ComfyUI's own template for it loads and samples it: its files,
    native size, sampling settings, file suffix and the note's paragraph about it."""

    files: tuple[model_files.ModelFiles, ...]
    size: int
    steps: int = STEPS
    cfg: float = 7.5
    suffix: str = ""
    clip_type: str = ""  # "": a checkpoint's own CLIP; "flux": DualCLIPLoader; else CLIPLoader of this type
    empty_latent: str = "EmptyLatentImage"  # generation's output size
    shift: float = 0.0  # ModelSamplingAuraFlow after the loader (Qwen-Image's template)
    guidance: float = 0.0  # FluxGuidance on every row prompt (Flux.2's template)
    scheduler: str = ""  # a node giving the sigmas of inversion and sampler (Flux.2: Flux2Scheduler)
    note: str = ""


SDXL_NOTE = ("\n\nSDXL FAMILY: the same MCA nodes serve SDXL base and its distilled variants (SSD-1B, Segmind "
             "Vega, KOALA); put any of them in the checkpoint loader. CLIPTextEncode encodes with SDXL's two text "
             "encoders (each row gets its own pooled output). Layer_LQ (salq_sites) is a fraction of the "
             "model's self-attention sites, so the preset means the same on every family.")

FLUX_NOTE = ("\n\nFLUX.1 / CHROMA: MCA acts in the joint text+image attention of every double and single block "
             "(57 sites), SAGI in the first 10% of the steps and SALQ from 8% on (never an empty range at few "
             "steps). Flux.1 dev is guidance-distilled: cfg 1.0, its guidance (3.5) rides on the prompts; give a "
             "FluxGuidance node, if you add one, to all three row prompts with one value. Schnell: 4 steps. "
             "Chroma: CLIPLoader (t5xxl, type chroma) instead of DualCLIPLoader, cfg about 4 and a real negative. "
             "Latents from ae.safetensors have 16 channels; prompts of any T5 length share the batch (each row "
             "padded after its own tokens, the padding left out of every softmax).")

QWEN_IMAGE_NOTE = ("\n\nQWEN-IMAGE: MCA acts in the joint text+image attention of all 60 blocks, SAGI in the first "
                   "10% of the steps and SALQ from 8% on. As ComfyUI's Qwen-Image template: 1328 px, 20 steps, cfg 4 "
                   "with a real negative, ModelSamplingAuraFlow shift 3.1 (the inversions use the same MODEL, so the "
                   "same shift). An Edit 2509 / 2511 checkpoint loads in the same loader; encode the prompts with "
                   "CLIP Text Encode (TextEncodeQwenImageEdit's reference latents are refused on MCA rows). Latents "
                   "are 5-D [batch, 16, 1, h, w]; prompts of any length share the batch.")

FLUX2_NOTE = ("\n\nFLUX.2: MCA acts in the joint text+image attention of every double and single block, SAGI in "
              "the first 10% of the steps and SALQ from 8% on. As ComfyUI's Flux.2 template: 1024 px, 20 steps along "
              "Flux2Scheduler's sigmas (given to both inversions and the sampler: they must match), FluxGuidance 4 on "
              "the row prompts, cfg 1 (guidance-distilled: one chunk, the negative unused). Latents have 128 "
              "channels at 1/16; the model pads prompts to 512 tokens itself. ReferenceLatent and Flux KV Cache are "
              "refused on MCA rows.")

Z_IMAGE_NOTE = ("\n\nZ-IMAGE: MCA acts in the joint caption+image attention of its 30 main layers (the 2 + 2 "
                "refiner layers stay ordinary). As ComfyUI's Z-Image Turbo template: 1024 px, 8 steps, cfg 1 (the "
                "negative unused), ModelSamplingAuraFlow shift 3 before the inversions and the patch; the preset runs "
                "SAGI at step 0 and SALQ at steps 1-7. Its VAE is FLUX.1's ae.safetensors (16 channels); prompts of "
                "any length share the batch.")

SD15 = Base((model_files.CHECKPOINT,), 512)
SDXL = Base((model_files.SDXL_CHECKPOINT,), 1024, suffix="_sdxl", note=SDXL_NOTE)
# Flux.1 dev: guidance-distilled (its guidance, 3.5 by default, rides on the prompts; cfg 1 = one chunk), 28 steps.
FLUX = Base((model_files.FLUX_MODEL, model_files.FLUX_CLIP_L, model_files.FLUX_T5, model_files.FLUX_VAE), 1024,
            steps=28, cfg=1.0, suffix="_flux", clip_type="flux", empty_latent="EmptySD3LatentImage", note=FLUX_NOTE)
# Qwen-Image: ComfyUI's template without the Lightning LoRA (1328 px, 20 steps, cfg 4, AuraFlow shift 3.1).
QWEN_IMAGE = Base((model_files.QWEN_IMAGE_MODEL, model_files.QWEN_IMAGE_TEXT, model_files.QWEN_IMAGE_VAE), 1328,
                  steps=20, cfg=4.0, suffix="_qwen_image", clip_type="qwen_image", empty_latent="EmptySD3LatentImage",
                  shift=3.1, note=QWEN_IMAGE_NOTE)
# Flux.2 dev: ComfyUI's text-to-image template (1024 px, Flux2Scheduler 20 steps, FluxGuidance 4, cfg 1).
FLUX2 = Base((model_files.FLUX2_MODEL, model_files.FLUX2_TEXT, model_files.FLUX2_VAE), 1024, steps=20, cfg=1.0,
             suffix="_flux2", clip_type="flux2", empty_latent="EmptyFlux2LatentImage", guidance=4.0,
             scheduler="Flux2Scheduler", note=FLUX2_NOTE)
# Z-Image Turbo: ComfyUI's template (1024 px, 8 steps, cfg 1, AuraFlow shift 3; FLUX.1's VAE).
Z_IMAGE = Base((model_files.Z_IMAGE_MODEL, model_files.Z_IMAGE_TEXT, model_files.FLUX_VAE), 1024, steps=8, cfg=1.0,
               suffix="_z_image", clip_type="lumina2", empty_latent="EmptySD3LatentImage", shift=3.0,
               note=Z_IMAGE_NOTE)


@dataclass(frozen=True)
class Loaded:
    """The MODEL, CLIP and VAE outputs of a workflow's loaders (and the SIGMAS of a scheduler node, if any)."""

    model: object
    clip: object
    vae: object
    sigmas: dict


def _load(graph: Graph, base: Base) -> Loaded:
    """Load Checkpoint for SD models; Load Diffusion Model + the text encoder loader + Load VAE for the DiTs."""
    if not base.clip_type:
        ckpt = graph.add("CheckpointLoaderSimple", "Models", 0, ckpt_name=base.files[0].default)
        return Loaded(ckpt.out(), ckpt.out(1), ckpt.out(2), {})
    model, *text, vae = base.files
    unet = graph.add("UNETLoader", "Models", 0, "Load Diffusion Model", unet_name=model.default,
                     weight_dtype="default")
    if base.clip_type == "flux":
        clip = graph.add("DualCLIPLoader", "Models", 0, clip_name1=text[0].default, clip_name2=text[1].default,
                         type="flux", device="default")
    else:
        clip = graph.add("CLIPLoader", "Models", 0, clip_name=text[0].default, type=base.clip_type, device="default")
    vae_node = graph.add("VAELoader", "Models", 0, vae_name=vae.default)
    sampling = unet.out()
    if base.shift:
        sampling = graph.add("ModelSamplingAuraFlow", "Models", 1, model=unet.out(), shift=base.shift).out()
    sigmas = {}
    if base.scheduler:
        sigmas = {"sigmas": graph.add(base.scheduler, "Inversion", 0, steps=base.steps, width=base.size,
                                      height=base.size).out()}
    return Loaded(sampling, clip.out(), vae_node.out(), sigmas)


def models_note(base: Base) -> str:
    """The note's first paragraph: which model files go where."""
    models = (*base.files, model_files.SAM, model_files.GROUNDING_DINO)
    return ("MODELS (nothing is downloaded for you)\n" + "".join(f"- models/{m.folder}/{m.describe()}\n" for m in models)
            + "Example images: copy example_workflows/input/*.png into ComfyUI/input (make run does it).\n"
            "Read the groups like a page: Models > Masks, then Inversion > MCA > Output below (press . to see the "
            "whole graph).\n\n")


def _common(graph: Graph, base: Base, subject_image: str, subject_phrase: str):
    """Model loaders, SLM models, the subject image inverted and masked."""
    ckpt = _load(graph, base)
    sam = graph.add("MCA_SAMLoader", "Models", 0, model_name=SAM, device="auto")
    dino = graph.add("MCA_GroundingDINOLoader", "Models", 0, model_name=DINO, device="auto")
    subject = _image(graph, base, subject_image, "Subject image")
    mask = graph.add("MCA_SLMMask", "Masks", 2, "Subject mask", sam_model=sam.out(), grounding_dino_model=dino.out(),
                     image=subject.out(), phrase=subject_phrase, box_threshold=0.3, text_threshold=0.25,
                     dilation=0, if_nothing_found="error", detection_size=800)
    empty = graph.add("CLIPTextEncode", "Inversion", 0, "Inversion prompt (empty)", clip=ckpt.clip, text="")
    if base.guidance:  # invert with the guidance the rows sample with
        empty = graph.add("FluxGuidance", "Inversion", 0, "Inversion guidance", conditioning=empty.out(),
                          guidance=base.guidance)
    inverted = _inverted(graph, base, ckpt, empty, subject, "subject")
    return ckpt, sam, dino, empty, inverted, mask


def _image(graph: Graph, base: Base, name: str, title: str):
    loaded = graph.add("LoadImage", "Masks", 0, title, image=name)
    return graph.add("ImageScale", "Masks", 1, f"{title} {base.size} px", image=loaded.out(),
                     upscale_method="lanczos", width=base.size, height=base.size, crop="center")


def _inverted(graph: Graph, base: Base, ckpt: Loaded, empty, pixels, role: str):
    """The image VAE-encoded, then inverted by MCA DDIM Invert (its trajectory rides on the LATENT)."""
    latent = graph.add("VAEEncode", "Inversion", 0, pixels=pixels.out(), vae=ckpt.vae)
    return graph.add("MCA_DDIMInvert", "Inversion", 1, f"Invert {role}", model=ckpt.model, latent=latent.out(),
                     positive=empty.out(), steps=base.steps, cfg=1.0, **ckpt.sigmas)


def _finish(graph: Graph, base: Base, ckpt: Loaded, patched, prompts: dict, subject, condition, task: str,
            grid_title: str = ""):
    """The row prompts, MCA Sampler, VAE Decode and Save Image; with ``grid_title``, the decoded targets (one per
    sweep cell) go through MCA Grid, labelled by the sampler's labels output, before they are saved."""
    encoded = {role: graph.add("CLIPTextEncode", "MCA", 0, f"{role.title()} prompt", clip=ckpt.clip, text=text)
               for role, text in prompts.items()}
    if base.guidance:  # one value on every row prompt (the negative is unused at cfg 1)
        encoded.update({role: graph.add("FluxGuidance", "MCA", 0, f"{role.title()} guidance",
                                        conditioning=encoded[role].out(), guidance=base.guidance)
                        for role in ("condition", "subject", "target")})
    sampler = graph.add("MCA_Sampler", "MCA", 1, model=patched.out(), condition_prompt=encoded["condition"].out(),
                        subject_prompt=encoded["subject"].out(), target_prompt=encoded["target"].out(),
                        negative=encoded["negative"].out(), subject=subject.out(), condition=condition.out(),
                        seed=SEED, cfg=base.cfg, local_blend=True, **ckpt.sigmas)
    images = graph.add("VAEDecode", "Output", 0, samples=sampler.out(), vae=ckpt.vae)
    if grid_title:
        images = graph.add("MCA_Grid", "Output", 0, images=images.out(), labels=sampler.out(3), columns=sampler.out(4),
                           tile_size=256, title=grid_title)
    graph.add("SaveImage", "Output", 0, images=images.out(), filename_prefix=f"mca_{task}{base.suffix}")


def generation(base: Base = SD15) -> Graph:
    graph = Graph(GROUPS)
    ckpt, _, _, _, inverted, mask = _common(graph, base, "mca_example_cat.png", "the cat")
    target_text = "a photo of a cat on the beach"
    condition = graph.add(base.empty_latent, "Inversion", 1, "Output size", width=base.size, height=base.size,
                          batch_size=1)
    patched = graph.add("MCA_AttentionPatch", "MCA", 1, model=ckpt.model, subject_mask=mask.out(),
                        preset="generation", clip=ckpt.clip, target_text=target_text, subject_words="cat")
    _finish(graph, base, ckpt, patched, {"condition": "a photo of a cat", "subject": "a photo of a cat",
                                         "target": target_text, "negative": ""}, inverted, condition, "generation")
    graph.note(models_note(base) + "GENERATION: the cat from the subject image, in a new scene.\n"
               "- Subject mask: SLM finds 'the cat' in the subject image.\n"
               "- MCA Attention Patch (preset generation): the edit region comes from the target's "
               "attention to 'cat' (subject_words; keep target_text equal to the Target prompt), or "
               "connect a drawn layout mask as edit_mask.\n"
               "- Output size: an empty latent stands in for the condition image." + base.note)
    return graph


def _edit(base: Base, condition_image: str, target_text: str, condition_text: str) -> tuple[Graph, tuple, dict]:
    graph = Graph(GROUPS)
    ckpt, sam, dino, empty, inverted, subject_mask = _common(graph, base, "mca_example_cat.png", "the cat")
    condition_pixels = _image(graph, base, condition_image, "Condition image")
    condition = _inverted(graph, base, ckpt, empty, condition_pixels, "condition")
    return graph, (ckpt, sam, dino, inverted, subject_mask, condition_pixels, condition), {
        "condition": condition_text, "subject": "a photo of a cat", "target": target_text, "negative": ""}


@dataclass(frozen=True)
class Sweep:
    """A schedule grid: one MCA Schedule Sweep node per (setting, comma-separated values), chained in order into
    the patch's sweep input; the first setting runs down the grid's rows, the last across its columns."""

    axes: tuple[tuple[str, str], ...]

    def title(self, task: str) -> str:
        return f"MCA-Ctrl {task}: " + " x ".join(setting for setting, _ in self.axes)


# 2 x 2 around the swap preset (sagi_end 0.1, salq_end 1.0: the top right cell): SAGI twice as long, and SALQ
# ending at 80 % of the steps. 4 targets: one sampler batch of 6 rows (the condition, the subject, the targets).
SWAP_SWEEP = Sweep((("sagi_end", "0.1, 0.2"), ("salq_end", "0.8, 1.0")))


def _sweep_input(graph: Graph, sweep: Sweep | None) -> dict:
    """The patch's ``sweep`` input: the MCA Schedule Sweep nodes, each fed into the next, above the patch."""
    chained = {}
    axes = sweep.axes if sweep else ()
    for index, (setting, values) in enumerate(axes):
        role = " (grid columns)" if index == len(axes) - 1 else " (grid rows)" if index == 0 else ""
        chained = {"sweep": graph.add("MCA_ScheduleSweep", "MCA", 1, f"Sweep {setting}{role}", setting=setting,
                                      values=values, **chained).out()}
    return chained


def swap(base: Base = SD15, sweep: Sweep | None = None) -> Graph:
    """The swap graph; with ``sweep``, its schedule grid into the patch and the labelled grid saved."""
    task = "swap_sweep" if sweep else "swap"
    graph, (ckpt, sam, dino, inverted, subject_mask, pixels, condition), prompts = _edit(
        base, "mca_example_coffee.png", "a photo of a cat on a saucer", "a photo of a cup on a saucer")
    dilation = 5 * base.size // SD15.size  # the paper's 5 (3x3) at 512 px, the same reach at other sizes
    edit_mask = graph.add("MCA_SLMMask", "Masks", 2, "Edit mask (object to replace)", sam_model=sam.out(),
                          grounding_dino_model=dino.out(), image=pixels.out(), phrase="the cup", box_threshold=0.3,
                          text_threshold=0.25, dilation=dilation, if_nothing_found="error", detection_size=800)
    patched = graph.add("MCA_AttentionPatch", "MCA", 1, model=ckpt.model, subject_mask=subject_mask.out(),
                        preset="swap", edit_mask=edit_mask.out(), **_sweep_input(graph, sweep))
    # schedule widgets: -1 = the preset; a sweep replaces the settings it sweeps, cell by cell
    _finish(graph, base, ckpt, patched, prompts, inverted, condition, task, sweep.title("swap") if sweep else "")
    graph.note(models_note(base) + "SWAP: the cup in the condition image becomes the cat of the subject image.\n"
               f"- Images are scaled to {base.size} px, the model's native size.\n"
               f"- Edit mask: SLM finds 'the cup', dilated {dilation} times (3x3; the paper's notebook uses 5 "
               "at 512 px).\n"
               "- MCA Sampler keeps the condition image outside the edit mask (local_blend).\n"
               "- Both inversions use the same steps; the sampler takes its steps from them."
               + base.note + (sweep_note(sweep) if sweep else ""))
    return graph


def sweep_note(sweep: Sweep) -> str:
    """The note's paragraph on many targets in one run: the sweep, several prompts, seeds, the grid, memory."""
    (rows, row_values), *_, (columns, column_values) = sweep.axes
    cells = math.prod(len(values.split(",")) for _, values in sweep.axes)
    return ("\n\nSWEEPS AND BATCHES: many targets in one sampler batch, sharing the condition and subject rows.\n"
            f"- Schedule grid: MCA Schedule Sweep nodes, chained, into the patch's sweep input. Each varies one "
            f"patch setting over comma-separated values; the first gives the grid's rows ({rows}: {row_values}), "
            f"the last its columns ({columns}: {column_values}): {cells} targets, each the patch's schedule with "
            "the swept settings replaced.\n"
            "- Several target prompts: MCA Target Prompts (one prompt per line) into the sampler's target_prompt.\n"
            "- Several seeds (generation): the condition latent's batch size; target j takes seed + j.\n"
            "- Counts combine one to one, not multiplied: each is 1 or the same N.\n"
            "- MCA Grid draws the decoded targets labelled with the sampler's labels (one per target), with the "
            "sampler's grid_columns (the last swept setting's value count) as its columns.\n"
            "- Memory: targets_per_pass on the sampler, 0 = as many as ComfyUI's free-memory estimate fits; a "
            "lower number splits the targets into passes (each holds the shared rows again).")


def add() -> Graph:
    graph, (ckpt, _, _, inverted, subject_mask, _, condition), prompts = _edit(
        SD15, "mca_example_astronaut.png", "a photo of an astronaut with a cat", "a photo of an astronaut")
    canvas = graph.add("SolidMask", "Masks", 0, "Empty region canvas", value=0.0, width=SD15.size, height=SD15.size)
    box = graph.add("SolidMask", "Masks", 0, "Region box size", value=1.0, width=192, height=192)
    region = graph.add("MaskComposite", "Masks", 1, "Where to add (box)", destination=canvas.out(), source=box.out(),
                       x=300, y=300, operation="add")
    edit_mask = graph.add("GrowMask", "Masks", 1, "Edit mask (region dilated)", mask=region.out(), expand=5,
                          tapered_corners=False)
    patched = graph.add("MCA_AttentionPatch", "MCA", 1, model=ckpt.model, subject_mask=subject_mask.out(),
                        preset="add", edit_mask=edit_mask.out())
    _finish(graph, SD15, ckpt, patched, prompts, inverted, condition, "add")
    graph.note(models_note(SD15) + "ADD: the cat of the subject image is added inside a box of the condition image.\n"
               "- The box: MaskComposite places a 192 px square at x=300, y=300 (change x, y and the size), "
               "or draw a mask on the condition image (right click > Open in MaskEditor) and connect "
               "LoadImage's MASK to GrowMask's mask input instead.\n"
               "- GrowMask dilates the region by 5 px (3x3 steps) and it becomes the edit mask.")
    return graph


def with_model_sources(graph: Graph) -> Graph:
    """Every loader node lists the model files its widgets name (``properties.models`` in the UI file)."""
    by_name = {files.default: files for files in MODEL_URLS}
    for node in graph.nodes:
        node.models = [{"name": value, "url": MODEL_URLS[by_name[value]], "directory": by_name[value].folder}
                       for value in node.inputs.values() if isinstance(value, str) and value in by_name]
    return graph


TASKS = {"mca_generation": generation, "mca_swap": swap, "mca_add": add, "mca_swap_sdxl": partial(swap, SDXL),
         "mca_swap_flux": partial(swap, FLUX), "mca_generation_flux": partial(generation, FLUX),
         "mca_swap_sweep": partial(swap, sweep=SWAP_SWEEP), "mca_swap_qwen_image": partial(swap, QWEN_IMAGE),
         "mca_swap_flux2": partial(swap, FLUX2), "mca_generation_flux2": partial(generation, FLUX2),
         "mca_swap_z_image": partial(swap, Z_IMAGE)}


def render(object_info: dict) -> dict[Path, str]:
    """Every workflow file's path and exact contents."""
    files = {}
    for name, build in TASKS.items():
        graph = with_model_sources(build())
        files[WORKFLOWS / f"{name}.json"] = json.dumps(to_ui(graph, object_info), indent=2) + "\n"
        files[WORKFLOWS / "api" / f"{name}.json"] = json.dumps(to_api(graph, object_info), indent=2) + "\n"
    return files


def fetch_object_info() -> dict:
    import tempfile

    import comfy_server

    with tempfile.TemporaryDirectory() as root:
        server = comfy_server.ComfyServer(Path(root)).start()
        try:
            return server.get("/object_info")
        finally:
            server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="only check that the files are up to date")
    args = parser.parse_args()
    stale = []
    for path, text in render(fetch_object_info()).items():
        if path.exists() and path.read_text() == text:
            continue
        stale.append(path)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    stale += build_thumbnails.stale() if args.check else build_thumbnails.write_all()
    for path in stale:
        print(("out of date: " if args.check else "wrote ") + str(path.relative_to(REPO)))
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
