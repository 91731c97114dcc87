"""API-format graphs of the three MCA tasks, built from stock ComfyUI nodes and the pack's nodes."""
from __future__ import annotations

SIZE = 64
TARGET_TEXT = "a photo of a fox on a sofa"
# example_workflows/mca_swap_sweep.json's 2 x 2 schedule grid, in the sampler's order (the first sweep node's
# setting, sagi_end, changes slowest: the grid's rows), its labels (MCA Sampler's labels output) and grid title.
SWEEP_CELLS = [{"sagi_end": 0.1, "salq_end": 0.8}, {"sagi_end": 0.1, "salq_end": 1.0},
               {"sagi_end": 0.2, "salq_end": 0.8}, {"sagi_end": 0.2, "salq_end": 1.0}]
SWEEP_LABELS = ["sagi_end=0.1, salq_end=0.8", "sagi_end=0.1, salq_end=1", "sagi_end=0.2, salq_end=0.8",
                "sagi_end=0.2, salq_end=1"]
SWEEP_TITLE = "MCA-Ctrl swap: sagi_end x salq_end"
SWEEP_TILE = 256  # MCA Grid's tile_size in the shipped sweep


def shipped_overrides(checkpoint: str) -> dict[str, object]:
    """What a test changes in a shipped API workflow (``Title-or-class.input``: value, as run_workflow's --set):
    the random checkpoint, the tiny SAM and Grounding DINO (testbed/slm_models.py), SIZE px images."""
    return {"CheckpointLoaderSimple.ckpt_name": checkpoint, "MCA_SAMLoader.model_name": "tiny_sam.pth",
            "MCA_GroundingDINOLoader.model_name": "tiny_dino.pth", "ImageScale.width": SIZE,
            "ImageScale.height": SIZE, "MCA_SLMMask.detection_size": SIZE}


def sweep_grid_size(columns: int) -> tuple[int, int]:
    """(width, height) of MCA Grid's picture of the shipped sweep's 4 targets in ``columns`` columns: the grid
    drawn by the same helper (drawing/tiles.py) from blank tiles with the sweep's labels and title."""
    from PIL import Image

    from mca_ctrl.drawing.tiles import labelled_grid

    blank = Image.new("RGB", (SIZE, SIZE))
    return labelled_grid([blank] * len(SWEEP_LABELS), SWEEP_LABELS, columns, SWEEP_TILE, SWEEP_TITLE).size


def _mask(graph: dict, name: str, x: int, y: int, side: int) -> list:
    """A SIZE x SIZE mask with 1 on a side x side square at (x, y), from stock mask nodes."""
    graph[f"{name}_bg"] = {"class_type": "SolidMask", "inputs": {"value": 0.0, "width": SIZE, "height": SIZE}}
    graph[f"{name}_fg"] = {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": side, "height": side}}
    graph[name] = {"class_type": "MaskComposite", "inputs": {
        "destination": [f"{name}_bg", 0], "source": [f"{name}_fg", 0], "x": x, "y": y, "operation": "add"}}
    return [name, 0]


def _text(graph: dict, name: str, text: str) -> list:
    graph[name] = {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1], "text": text}}
    return [name, 0]


def _inverted_image(graph: dict, name: str, color: int, steps: int) -> list:
    graph[f"{name}_image"] = {"class_type": "EmptyImage",
                              "inputs": {"width": SIZE, "height": SIZE, "batch_size": 1, "color": color}}
    graph[f"{name}_latent"] = {"class_type": "VAEEncode", "inputs": {"pixels": [f"{name}_image", 0],
                                                                      "vae": ["ckpt", 2]}}
    graph[f"{name}_inverted"] = {"class_type": "MCA_DDIMInvert", "inputs": {
        "model": ["ckpt", 0], "latent": [f"{name}_latent", 0], "positive": ["empty_prompt", 0],
        "steps": steps, "cfg": 1.0}}
    return [f"{name}_inverted", 0]


def mca_task(task: str, checkpoint: str, steps: int = 3, seed: int = 1) -> dict:
    """generation, swap or add: image(s) -> invert -> patch -> MCA Sampler -> decode -> save."""
    graph: dict = {"ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}}}
    _text(graph, "empty_prompt", "")
    subject = _inverted_image(graph, "subject", 0x996633, steps)
    if task == "generation":
        graph["condition_empty"] = {"class_type": "EmptyLatentImage",
                                    "inputs": {"width": SIZE, "height": SIZE, "batch_size": 1}}
        condition = ["condition_empty", 0]
    else:
        condition = _inverted_image(graph, "condition", 0x336699, steps)
    graph["patch"] = {"class_type": "MCA_AttentionPatch", "inputs": {
        "model": ["ckpt", 0], "subject_mask": _mask(graph, "subject_mask", 16, 16, 32),
        "preset": task, "sagi_start": -1.0, "sagi_end": -1.0, "salq_start": -1.0, "salq_end": -1.0,
        "salq_sites": -1.0, "salq_first_site": -1}}
    if task == "generation":  # the edit region comes from the target's cross-attention to "fox"
        graph["patch"]["inputs"].update(clip=["ckpt", 1], target_text=TARGET_TEXT, subject_words="fox")
    else:
        graph["patch"]["inputs"]["edit_mask"] = (_mask(graph, "edit_mask", 24, 24, 24) if task == "add"
                                                 else _mask(graph, "edit_mask", 8, 8, 40))
    graph["sampler"] = {"class_type": "MCA_Sampler", "inputs": {
        "model": ["patch", 0], "condition_prompt": _text(graph, "condition_prompt", "a photo of a cat"),
        "subject_prompt": _text(graph, "subject_prompt", "a photo of a fox"),
        "target_prompt": _text(graph, "target_prompt", TARGET_TEXT),
        "negative": _text(graph, "negative", ""), "subject": subject, "condition": condition, "seed": seed,
        "cfg": 7.5, "local_blend": True}}
    graph["decode"] = {"class_type": "VAEDecode", "inputs": {"samples": ["sampler", 0], "vae": ["ckpt", 2]}}
    graph["save"] = {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": f"mca_{task}"}}
    return graph
