"""The shipped example workflows, defined once and written in UI and API format.

    .venv/bin/python scripts/build_workflows.py           # (re)write example_workflows/*.json and api/*.json
    .venv/bin/python scripts/build_workflows.py --check   # exit 1 if a file is out of date

Starts the embedded ComfyUI once to read ``/object_info`` (widget order, socket types).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "scripts")]

import comfy_host  # noqa: E402

comfy_host.import_pack_without_host()

from mca_ctrl import model_files  # noqa: E402
from workflow_builder import Graph, to_api, to_ui  # noqa: E402

WORKFLOWS = REPO / "example_workflows"
CHECKPOINT = model_files.CHECKPOINT.default
SAM = model_files.SAM.default
DINO = model_files.GROUNDING_DINO.default
SIZE, STEPS, SEED = 512, 50, 42

MODELS_NOTE = (
    "MODELS (nothing is downloaded for you)\n"
    + "".join(f"- models/{m.folder}/{m.describe()}\n" for m in model_files.EXPECTED_MODELS) +
    "Example images: copy example_workflows/input/*.png into ComfyUI/input (make run does it).\n\n")


def _common(graph: Graph, subject_image: str, subject_phrase: str):
    """Checkpoint, SLM models, the subject image inverted and masked."""
    ckpt = graph.add("CheckpointLoaderSimple", 0, 0, ckpt_name=CHECKPOINT)
    sam = graph.add("MCA_SAMLoader", 0, 1, model_name=SAM, device="auto")
    dino = graph.add("MCA_GroundingDINOLoader", 0, 2, model_name=DINO, device="auto")
    empty = graph.add("CLIPTextEncode", 1, 0, "Inversion prompt (empty)", clip=ckpt.out(1), text="")
    subject = _image(graph, subject_image, 1, 1, "Subject image")
    subject_latent = graph.add("VAEEncode", 2, 1, pixels=subject.out(), vae=ckpt.out(2))
    inverted = graph.add("MCA_DDIMInvert", 3, 2, "Invert subject", model=ckpt.out(), latent=subject_latent.out(),
                         positive=empty.out(), steps=STEPS, cfg=1.0)
    mask = graph.add("MCA_SLMMask", 2, 2, "Subject mask", sam_model=sam.out(), grounding_dino_model=dino.out(),
                     image=subject.out(), phrase=subject_phrase, box_threshold=0.3, text_threshold=0.25,
                     dilation=0, if_nothing_found="error", detection_size=800)
    return ckpt, sam, dino, empty, inverted, mask


def _image(graph: Graph, name: str, column: int, row: int, title: str):
    loaded = graph.add("LoadImage", column - 1 if column else 0, row + 2, title, image=name)
    return graph.add("ImageScale", column, row + 2, f"{title} {SIZE} px", image=loaded.out(),
                     upscale_method="lanczos", width=SIZE, height=SIZE, crop="center")


def _finish(graph: Graph, ckpt, patched, prompts: dict, subject, condition, task: str):
    encoded = {role: graph.add("CLIPTextEncode", 4, row, f"{role.title()} prompt", clip=ckpt.out(1), text=text)
               for row, (role, text) in enumerate(prompts.items())}
    sampler = graph.add("MCA_Sampler", 5, 1, model=patched.out(), condition_prompt=encoded["condition"].out(),
                        subject_prompt=encoded["subject"].out(), target_prompt=encoded["target"].out(),
                        negative=encoded["negative"].out(), subject=subject.out(), condition=condition.out(),
                        seed=SEED, cfg=7.5, local_blend=True)
    decoded = graph.add("VAEDecode", 6, 1, samples=sampler.out(), vae=ckpt.out(2))
    graph.add("SaveImage", 7, 1, images=decoded.out(), filename_prefix=f"mca_{task}")


def generation() -> Graph:
    graph = Graph()
    ckpt, _, _, _, inverted, mask = _common(graph, "mca_example_cat.png", "the cat")
    target_text = "a photo of a cat on the beach"
    condition = graph.add("EmptyLatentImage", 3, 3, "Output size", width=SIZE, height=SIZE, batch_size=1)
    patched = graph.add("MCA_AttentionPatch", 3, 0, model=ckpt.out(), subject_mask=mask.out(), preset="generation",
                        clip=ckpt.out(1), target_text=target_text, subject_words="cat")
    _finish(graph, ckpt, patched, {"condition": "a photo of a cat", "subject": "a photo of a cat",
                                   "target": target_text, "negative": ""}, inverted, condition, "generation")
    graph.note(MODELS_NOTE + "GENERATION: the cat from the subject image, in a new scene.\n"
               "- Subject mask: SLM finds 'the cat' in the subject image.\n"
               "- MCA Attention Patch (preset generation): the edit region comes from the target's "
               "cross-attention to 'cat' (subject_words; keep target_text equal to the Target prompt), or "
               "connect a drawn layout mask as edit_mask.\n"
               "- Steps must be equal on MCA DDIM Invert and MCA Sampler.", 6, 3)
    return graph


def _edit(condition_image: str, target_text: str, condition_text: str) -> tuple[Graph, object, object]:
    graph = Graph()
    ckpt, sam, dino, empty, inverted, subject_mask = _common(graph, "mca_example_cat.png", "the cat")
    condition_pixels = _image(graph, condition_image, 1, 3, "Condition image")
    condition_latent = graph.add("VAEEncode", 2, 4, pixels=condition_pixels.out(), vae=ckpt.out(2))
    condition = graph.add("MCA_DDIMInvert", 3, 4, "Invert condition", model=ckpt.out(),
                          latent=condition_latent.out(), positive=empty.out(), steps=STEPS, cfg=1.0)
    return graph, (ckpt, sam, dino, inverted, subject_mask, condition_pixels, condition), {
        "condition": condition_text, "subject": "a photo of a cat", "target": target_text, "negative": ""}


def swap() -> Graph:
    graph, (ckpt, sam, dino, inverted, subject_mask, pixels, condition), prompts = _edit(
        "mca_example_coffee.png", "a photo of a cat on a saucer", "a photo of a cup on a saucer")
    edit_mask = graph.add("MCA_SLMMask", 2, 5, "Edit mask (object to replace)", sam_model=sam.out(),
                          grounding_dino_model=dino.out(), image=pixels.out(), phrase="the cup", box_threshold=0.3,
                          text_threshold=0.25, dilation=5, if_nothing_found="error", detection_size=800)
    patched = graph.add("MCA_AttentionPatch", 3, 0, model=ckpt.out(), subject_mask=subject_mask.out(),
                        preset="swap", edit_mask=edit_mask.out())  # schedule widgets: -1 = the preset
    _finish(graph, ckpt, patched, prompts, inverted, condition, "swap")
    graph.note(MODELS_NOTE + "SWAP: the cup in the condition image becomes the cat of the subject image.\n"
               "- Edit mask: SLM finds 'the cup', dilated 5 times (3x3), as in the paper's notebook.\n"
               "- MCA Sampler keeps the condition image outside the edit mask (local_blend).\n"
               "- Both inversions use the same steps; the sampler takes its steps from them.", 6, 3)
    return graph


def add() -> Graph:
    graph, (ckpt, _, _, inverted, subject_mask, _, condition), prompts = _edit(
        "mca_example_astronaut.png", "a photo of an astronaut with a cat", "a photo of an astronaut")
    canvas = graph.add("SolidMask", 1, 6, "Empty region canvas", value=0.0, width=SIZE, height=SIZE)
    box = graph.add("SolidMask", 1, 7, "Region box size", value=1.0, width=192, height=192)
    region = graph.add("MaskComposite", 2, 6, "Where to add (box)", destination=canvas.out(), source=box.out(),
                       x=300, y=300, operation="add")
    edit_mask = graph.add("GrowMask", 2, 7, "Edit mask (region dilated)", mask=region.out(), expand=5,
                          tapered_corners=False)
    patched = graph.add("MCA_AttentionPatch", 3, 0, model=ckpt.out(), subject_mask=subject_mask.out(),
                        preset="add", edit_mask=edit_mask.out())
    _finish(graph, ckpt, patched, prompts, inverted, condition, "add")
    graph.note(MODELS_NOTE + "ADD: the cat of the subject image is added inside a box of the condition image.\n"
               "- The box: MaskComposite places a 192 px square at x=300, y=300 (change x, y and the size), "
               "or draw a mask on the condition image (right click > Open in MaskEditor) and connect "
               "LoadImage's MASK to GrowMask's mask input instead.\n"
               "- GrowMask dilates the region by 5 px (3x3 steps) and it becomes the edit mask.", 6, 3)
    return graph


TASKS = {"mca_generation": generation, "mca_swap": swap, "mca_add": add}


def render(object_info: dict) -> dict[Path, str]:
    """Every workflow file's path and exact contents."""
    files = {}
    for name, build in TASKS.items():
        graph = build()
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
    for path in stale:
        print(("out of date: " if args.check else "wrote ") + str(path.relative_to(REPO)))
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
