"""The shipped example workflows: up to date, UI and API agree, and each runs on a real server."""
from __future__ import annotations

import copy
import json
import shutil
import sys
from pathlib import Path

import pytest
from PIL import Image

import comfy_host
import comfy_server
import random_models
from slm_models import write_models
from workflow_graphs import SIZE, SWEEP_TILE, SWEEP_TITLE, shipped_overrides, sweep_grid_size

pytestmark = pytest.mark.full

WORKFLOWS = comfy_host.REPO / "example_workflows"
TASKS = ["mca_generation", "mca_swap", "mca_add", "mca_swap_sdxl", "mca_swap_flux", "mca_generation_flux",
         "mca_swap_sweep", "mca_swap_qwen_image", "mca_swap_flux2", "mca_generation_flux2", "mca_swap_z_image"]
SDXL_TASKS = {"mca_swap_sdxl"}
SWEEP_TASKS = {"mca_swap_sweep"}  # a 2 x 2 schedule grid: 4 targets, saved as one labelled grid
# The DiT graphs as ComfyUI's own templates load and sample them: the model files users have (ComfyUI's template
# names), the text encoder loader's type, the image size, the sampler's cfg.
DIT_TASKS = {
    "mca_swap_flux": ({"flux1-dev.safetensors", "clip_l.safetensors", "t5xxl_fp16.safetensors", "ae.safetensors"},
                      "flux", 1024, 1.0),
    "mca_generation_flux": ({"flux1-dev.safetensors", "clip_l.safetensors", "t5xxl_fp16.safetensors",
                             "ae.safetensors"}, "flux", 1024, 1.0),
    "mca_swap_qwen_image": ({"qwen_image_fp8_e4m3fn.safetensors", "qwen_2.5_vl_7b_fp8_scaled.safetensors",
                             "qwen_image_vae.safetensors"}, "qwen_image", 1328, 4.0),
    "mca_swap_flux2": ({"flux2_dev_fp8mixed.safetensors", "mistral_3_small_flux2_bf16.safetensors",
                        "flux2-vae.safetensors"}, "flux2", 1024, 1.0),
    "mca_generation_flux2": ({"flux2_dev_fp8mixed.safetensors", "mistral_3_small_flux2_bf16.safetensors",
                              "flux2-vae.safetensors"}, "flux2", 1024, 1.0),
    "mca_swap_z_image": ({"z_image_turbo_bf16.safetensors", "qwen_3_4b.safetensors", "ae.safetensors"}, "lumina2",
                         1024, 1.0),
}
# Run headless here: the DiT graphs need a real-architecture text encoder (T5-XXL 4.7 B, Qwen2.5-VL 7 B, Mistral 3
# Small 24 B, Qwen3 4 B parameters), which this machine cannot run (tests/test_flux_file.py and tests/test_qwen_image_file.py
# hold the model side of the user's path; the tiny-model tests the rest).
RUNNABLE_TASKS = [task for task in TASKS if task not in DIT_TASKS]
ROWS = [["Models", "Masks"], ["Inversion", "MCA", "Output"]]  # each row left to right, the rows top to bottom
GROUPS = [group for row in ROWS for group in row]  # the reading order
EXPECTED_GROUP = {"CheckpointLoaderSimple": "Models", "UNETLoader": "Models", "DualCLIPLoader": "Models",
                  "CLIPLoader": "Models", "ModelSamplingAuraFlow": "Models", "Flux2Scheduler": "Inversion",
                  "VAELoader": "Models", "MCA_SAMLoader": "Models", "MCA_GroundingDINOLoader": "Models",
                  "LoadImage": "Masks", "MCA_SLMMask": "Masks", "GrowMask": "Masks", "VAEEncode": "Inversion",
                  "MCA_DDIMInvert": "Inversion", "MCA_AttentionPatch": "MCA", "MCA_Sampler": "MCA",
                  "MCA_ScheduleSweep": "MCA", "VAEDecode": "Output", "MCA_Grid": "Output", "SaveImage": "Output"}
TITLE_HEIGHT = 30  # LiteGraph draws a node's title bar above its pos
# The loaders of the shipped graphs: the ComfyUI model folder each reads and its file-name widgets.
LOADERS = {"CheckpointLoaderSimple": ("checkpoints", ["ckpt_name"]), "UNETLoader": ("diffusion_models", ["unet_name"]),
           "DualCLIPLoader": ("text_encoders", ["clip_name1", "clip_name2"]), "VAELoader": ("vae", ["vae_name"]),
           "CLIPLoader": ("text_encoders", ["clip_name"]),
           "MCA_SAMLoader": ("sams", ["model_name"]), "MCA_GroundingDINOLoader": ("grounding-dino", ["model_name"])}
MODEL_HOSTS = {"huggingface.co"}  # the hosts the frontend's missing-models list downloads from
sys.path.insert(0, str(comfy_host.REPO / "scripts"))


@pytest.fixture(scope="module")
def server(tmp_path_factory, random_checkpoint, random_vega_checkpoint):
    """A real ComfyUI with the random SD1.5 and Segmind Vega checkpoints, tiny SAM / Grounding DINO and the
    example images."""
    root = tmp_path_factory.mktemp("workflow_server")
    slm = write_models(root / "slm_models")
    server = comfy_server.ComfyServer(root / "comfy", models={
        "checkpoints": [random_checkpoint, random_vega_checkpoint], "sams": [slm["sams"] / "tiny_sam.pth"],
        "grounding-dino": [slm["grounding-dino"] / "tiny_dino.pth", slm["grounding-dino"] / "tiny_dino.json"]})
    for image in (WORKFLOWS / "input").glob("*.png"):
        shutil.copy(image, root / "comfy" / "input" / image.name)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def object_info(tmp_path_factory) -> dict:
    """``/object_info`` of a real ComfyUI with the pack; no models needed (widget order and socket types)."""
    server = comfy_server.ComfyServer(tmp_path_factory.mktemp("object_info_server")).start()
    try:
        return server.get("/object_info")
    finally:
        server.stop()


def meaning(text: str) -> dict:
    """What a workflow file says, leaving out what the host's /object_info decides (socket types, node sizes and
    positions, output sockets): node types, titles and widget values, the links and the inputs they feed, the
    groups. An API file is compared whole."""
    workflow = json.loads(text)
    if "nodes" not in workflow:
        return workflow
    return {"nodes": {node["id"]: (node["type"], node.get("title"), node["widgets_values"],
                                   [(socket["name"], socket["link"]) for socket in node["inputs"]],
                                   node["properties"].get("models"))
                      for node in workflow["nodes"]},
            "links": sorted(link[:5] for link in workflow["links"]),  # id, source, slot, target, slot (no type)
            "groups": [group["title"] for group in workflow["groups"]]}


def assert_workflow_files_current(files: dict) -> None:
    """Each shipped file means what ``build_workflows.render`` writes."""
    for path, text in files.items():
        assert meaning(path.read_text()) == meaning(text), f"{path.name} is stale: run scripts/build_workflows.py"


def test_workflow_files_are_generated_from_their_single_source(object_info):
    import build_workflows

    files = build_workflows.render(object_info)
    assert len(files) == 2 * len(TASKS)
    assert_workflow_files_current(files)


def test_workflow_check_ignores_what_the_host_decides(object_info):
    """A newer ComfyUI describes SaveImage's outputs differently (sockets, sizes): the files still mean the same."""
    import build_workflows

    newer = copy.deepcopy(object_info)
    newer["SaveImage"].update(output=["IMAGE"], output_name=["images"], output_is_list=[False])
    newer["VAEDecode"]["output"] = ["IMAGE_V3"]
    files = build_workflows.render(newer)
    assert_workflow_files_current(files)
    path, text = next(iter(files.items()))
    assert '"mca_example_cat.png"' in text
    with pytest.raises(AssertionError, match="stale"):  # a widget value still counts
        assert_workflow_files_current({path: text.replace('"mca_example_cat.png"', '"other.png"')})


def ui_to_api(ui: dict, object_info: dict) -> dict:
    """An independent reading of the UI file: links and positional widget values back to API inputs."""
    from workflow_builder import input_specs, is_widget

    links = {link[0]: link for link in ui["links"]}
    prompt = {}
    for node in ui["nodes"]:
        if node["type"] == "Note":
            continue
        inputs = {}
        for socket in node["inputs"]:
            if socket["link"] is not None:
                _, source, slot, *_ = links[socket["link"]]
                inputs[socket["name"]] = [str(source), slot]
        values = iter(node["widgets_values"])
        for name, spec in input_specs(object_info[node["type"]]):
            if not is_widget(spec):
                continue
            value = next(values)
            if len(spec) > 1 and spec[1].get("control_after_generate"):
                next(values)
            if name not in inputs:
                inputs[name] = value
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


@pytest.mark.parametrize("task", TASKS)
def test_ui_and_api_files_agree(object_info, task):
    ui = json.loads((WORKFLOWS / f"{task}.json").read_text())
    api = json.loads((WORKFLOWS / "api" / f"{task}.json").read_text())
    assert ui["version"] == 0.4 and any(node["type"] == "Note" for node in ui["nodes"])
    for node in api.values():
        node.pop("_meta", None)
    assert ui_to_api(ui, object_info) == api


@pytest.mark.parametrize("task", TASKS)
def test_workflows_use_the_model_names_users_have(task):
    api = json.loads((WORKFLOWS / "api" / f"{task}.json").read_text())
    names = {value for node in api.values() for value in node["inputs"].values() if isinstance(value, str)}
    checkpoint = "sd_xl_base_1.0.safetensors" if task in SDXL_TASKS else "v1-5-pruned-emaonly.safetensors"
    size = 1024 if task in SDXL_TASKS else 512
    if task in DIT_TASKS:  # the file names of ComfyUI's templates for the family, sampled as they sample
        checkpoint, clip_type, size, cfg = DIT_TASKS[task]
        assert {clip_type} <= names and all(node["inputs"]["cfg"] == cfg for node in api.values()
                                            if node["class_type"] == "MCA_Sampler")
    assert {*([checkpoint] if isinstance(checkpoint, str) else checkpoint), "sam_vit_h_4b8939.pth",
            "groundingdino_swint_ogc.pth"} <= names
    assert all(node["inputs"]["width"] == size for node in api.values() if node["class_type"] == "ImageScale")


def test_sweep_workflow_is_the_swap_graph_with_a_schedule_grid():
    """mca_swap_sweep: mca_swap's nodes and values, plus two chained MCA Schedule Sweep nodes into the patch's
    sweep input (the first one's setting gives the grid's rows) and MCA Grid between the decode and the save,
    labelled by the sampler's labels output."""
    swap = json.loads((WORKFLOWS / "api" / "mca_swap.json").read_text())
    sweep = json.loads((WORKFLOWS / "api" / "mca_swap_sweep.json").read_text())
    of = {kind: [id_ for id_, node in sweep.items() if node["class_type"] == kind] for kind in
          ("MCA_ScheduleSweep", "MCA_AttentionPatch", "MCA_Sampler", "VAEDecode", "MCA_Grid", "SaveImage")}
    (rows, columns), [patch], [sampler], [decode], [grid], [save] = of.values()
    assert sweep[rows]["inputs"] == {"setting": "sagi_end", "values": "0.1, 0.2"}
    assert sweep[columns]["inputs"] == {"setting": "salq_end", "values": "0.8, 1.0", "sweep": [rows, 0]}
    assert sweep[patch]["inputs"]["sweep"] == [columns, 0]
    assert all(value == -1 for name, value in sweep[patch]["inputs"].items() if name.startswith(("sagi", "salq")))
    assert sweep[decode]["inputs"]["samples"] == [sampler, 0]
    assert sweep[grid]["inputs"] == {"images": [decode, 0], "labels": [sampler, 3], "columns": [sampler, 4],
                                     "tile_size": SWEEP_TILE, "title": SWEEP_TITLE}
    assert sweep[save]["inputs"] == {"images": [grid, 0], "filename_prefix": "mca_swap_sweep"}

    def kept(prompt: dict) -> list:
        """The nodes both graphs hold, in order: type, title, inputs (a link as its source's place in the list)."""
        ids = [id_ for id_, node in prompt.items()
               if node["class_type"] not in ("MCA_ScheduleSweep", "MCA_Grid", "SaveImage")]
        place = {id_: index for index, id_ in enumerate(ids)}

        def value(given):
            return ("link", place[given[0]], given[1]) if isinstance(given, list) else given
        return [(prompt[id_]["class_type"], prompt[id_].get("_meta"),
                 {name: value(given) for name, given in prompt[id_]["inputs"].items() if name != "sweep"})
                for id_ in ids]
    assert kept(sweep) == kept(swap)


def groups_holding(box: list[float], groups: list[dict]) -> list[str]:
    """Titles of the groups whose box holds all of ``box`` ([x, y, w, h], as LiteGraph's bounding)."""
    x, y, w, h = box
    return [group["title"] for group in groups
            if group["box"][0] <= x and x + w <= group["box"][0] + group["box"][2]
            and group["box"][1] <= y and y + h <= group["box"][1] + group["box"][3]]


def overlap(a: list[float], b: list[float]) -> bool:
    """Whether two [x, y, w, h] boxes share some area (touching edges do not count)."""
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def assert_laid_out_in_groups(groups: list[dict], nodes: list[dict]) -> None:
    """The groups stand in ROWS: the groups of a row side by side, tops aligned, left to right; each row below the
    one before; no two groups overlap. The Note stands outside the groups, right of the last row's last group (the
    Output), its top that row's top: the saved view opens on both (see the opening-view tests).
    Every other node lies inside exactly one group's box, the one its kind belongs to, and no two nodes overlap.
    ``groups``: {title, box}; ``nodes``: {type, box}, boxes [x, y, w, h] as LiteGraph's bounding."""
    tops = sorted({round(group["box"][1]) for group in groups})
    rows = [[group for group in sorted(groups, key=lambda g: g["box"][0]) if round(group["box"][1]) == top]
            for top in tops]
    assert [[group["title"] for group in row] for row in rows] == ROWS, "the groups are not in their rows"
    for upper, lower in zip(rows, rows[1:]):
        bottom = max(group["box"][1] + group["box"][3] for group in upper)
        assert bottom <= lower[0]["box"][1], f"row {[g['title'] for g in lower]} overlaps the row above"
    for index, group in enumerate(groups):
        for other in groups[index + 1:]:
            assert not overlap(group["box"], other["box"]), f"{group['title']} overlaps {other['title']}"
    notes = [node for node in nodes if node["type"] == "Note"]
    assert notes, "no Note"
    for note in notes:
        assert not any(overlap(note["box"], group["box"]) for group in groups), "the Note stands outside the groups"
        last = rows[-1][-1]["box"]
        assert note["box"][0] >= last[0] + last[2], "the Note stands right of the last row's last group"
        assert abs(note["box"][1] - last[1]) <= 1, "the Note's top is the last row's"
    for node in nodes:
        if node["type"] == "Note":
            continue
        holding = groups_holding(node["box"], groups)
        assert len(holding) == 1, f"{node['type']} at {node['box']} is in groups {holding}"
        assert holding[0] == EXPECTED_GROUP.get(node["type"], holding[0]), f"{node['type']} is in {holding[0]}"
    for index, node in enumerate(nodes):
        for other in nodes[index + 1:]:
            assert not overlap(node["box"], other["box"]), f"{node['type']} {node['box']} overlaps {other['type']}"


def ui_boxes(ui: dict) -> tuple[list[dict], list[dict]]:
    """The groups and nodes of a UI file as {title, box} and {type, box} (a node's box includes its title bar)."""
    groups = [{"title": group["title"], "box": group["bounding"]} for group in ui["groups"]]
    nodes = [{"type": node["type"], "box": [node["pos"][0], node["pos"][1] - TITLE_HEIGHT, node["size"][0],
                                            node["size"][1] + TITLE_HEIGHT]} for node in ui["nodes"]]
    return groups, nodes


def bounding_box(boxes: list[list[float]]) -> list[float]:
    left, top = min(box[0] for box in boxes), min(box[1] for box in boxes)
    return [left, top, max(box[0] + box[2] for box in boxes) - left, max(box[1] + box[3] for box in boxes) - top]


@pytest.mark.parametrize("task", TASKS)
def test_ui_workflow_reads_in_rows_of_labelled_groups(task):
    ui = json.loads((WORKFLOWS / f"{task}.json").read_text())
    assert_laid_out_in_groups(*ui_boxes(ui))
    assert all(set(group) >= {"id", "title", "bounding", "color", "font_size", "flags"} for group in ui["groups"])


def on_screen(box: list[float], ds: dict) -> list[float]:
    """A graph box [x, y, w, h] where the saved view ``ds`` draws it (px from the canvas's top left)."""
    scale, (offset_x, offset_y) = ds["scale"], ds["offset"]
    return [(box[0] + offset_x) * scale, (box[1] + offset_y) * scale, box[2] * scale, box[3] * scale]


@pytest.mark.parametrize("task", TASKS)
def test_ui_workflow_opens_on_the_note_and_the_output_at_a_readable_zoom(task):
    """The saved view (extra.ds) opens at the zoom where the Note's text is READABLE_PX tall (its font is the
    frontend's default textarea font size, 10 px) on the Note and the Output group (the Save Image node): both in
    full view in a 1920x1080 window (right of the side toolbar, below the top bars) and clear of the minimap the
    frontend shows by default at the bottom right. No graph fits the window at that zoom; the whole graph still
    fits it at a zoom where the frontend draws titles (the fit view). The frontend test checks the same in the
    real frontend, with its default settings."""
    from workflow_builder import (LOW_QUALITY_ZOOM, MARGIN, NOTE_FONT, READABLE_PX, SIDEBAR, TOP_BARS, WINDOW,
                                  fit_zoom, minimap_box)

    ui = json.loads((WORKFLOWS / f"{task}.json").read_text())
    groups, nodes = ui_boxes(ui)
    ds = ui["extra"]["ds"]
    assert NOTE_FONT * ds["scale"] >= READABLE_PX
    shown = {"Note": [node["box"] for node in nodes if node["type"] == "Note"],
             "Output group": [group["box"] for group in groups if group["title"] == "Output"],
             "Save Image": [node["box"] for node in nodes if node["type"] == "SaveImage"]}
    assert all(len(boxes) == 1 for boxes in shown.values()), shown
    for what, [box] in shown.items():
        x, y, w, h = on_screen(box, ds)
        assert SIDEBAR + MARGIN - 1 <= x and x + w <= WINDOW[0] - MARGIN, f"{what} at x {x:.0f}..{x + w:.0f}"
        assert TOP_BARS + MARGIN - 1 <= y and y + h <= WINDOW[1] - MARGIN, f"{what} at y {y:.0f}..{y + h:.0f}"
        assert not overlap([x, y, w, h], list(minimap_box())), f"the minimap {minimap_box()} covers {what}"
    _, _, width, height = bounding_box([item["box"] for item in groups + nodes])
    assert fit_zoom(width, height) >= LOW_QUALITY_ZOOM, f"{width} x {height} fits the window only below titles"


@pytest.mark.parametrize("task", TASKS)
def test_loader_nodes_name_their_model_sources(object_info, task):
    """Every loader node carries the templates' model metadata (properties.models: name, url, directory) for
    each model file its widgets name: the file name, the ComfyUI folder the loader reads, a public URL of it."""
    from urllib.parse import urlparse

    from mca_ctrl import model_files

    ui = json.loads((WORKFLOWS / f"{task}.json").read_text())
    inputs = ui_to_api(ui, object_info)
    folders = {files.default: files.folder for files in model_files.EXPECTED_MODELS}
    loaders = [node for node in ui["nodes"] if node["type"] in LOADERS]
    assert {node["type"] for node in ui["nodes"] if "Loader" in node["type"]} <= set(LOADERS), "a loader unknown here"
    assert len(loaders) == (5 if task in DIT_TASKS else 3)  # DiTs: model, text encoder(s), VAE; + SAM, DINO
    for node in loaders:
        folder, widgets = LOADERS[node["type"]]
        names = [inputs[str(node["id"])]["inputs"][widget] for widget in widgets]
        models = node["properties"].get("models")
        assert models and [model["name"] for model in models] == names, f"{node['type']}: {models}"
        for model in models:
            assert set(model) == {"name", "url", "directory"}
            assert model["directory"] == folder == folders[model["name"]], model
            url = urlparse(model["url"])
            assert url.scheme == "https" and url.netloc in MODEL_HOSTS, model["url"]
            assert url.path.rsplit("/", 1)[-1] == model["name"] and not url.query, model["url"]
    for node in ui["nodes"]:
        if node["type"] not in LOADERS:
            assert "models" not in node["properties"], node["type"]


@pytest.mark.parametrize("task", RUNNABLE_TASKS)
def test_api_workflow_runs_through_run_workflow(server, task, capsys, tmp_path):
    import run_workflow

    sdxl = task in SDXL_TASKS
    steps = 2 if sdxl else 5  # Vega's UNet and CLIP-G are the slow ones on a CPU; test_sdxl_pipeline runs 3
    checkpoint = random_models.RANDOM_VEGA_CHECKPOINT if sdxl else random_models.RANDOM_CHECKPOINT
    overrides = [f"{target}={value}" for target, value in shipped_overrides(checkpoint).items()]
    if task == "mca_generation":
        overrides += [f"EmptyLatentImage.width={SIZE}", f"EmptyLatentImage.height={SIZE}"]
    args = [str(WORKFLOWS / "api" / f"{task}.json"), "--url", server.url, "--steps", str(steps), "--seed", "3",
            "--out", str(tmp_path)]
    for item in overrides:
        args += ["--set", item]
    code = run_workflow.main(args)
    printed = capsys.readouterr()
    assert code == 0, printed.err + server.log()[-3000:]
    assert f"step {steps}/{steps}" in printed.out, "progress was not shown"
    paths = [Path(line.split(": ", 1)[1]) for line in printed.out.splitlines() if line.startswith("output image: ")]
    assert len(paths) == 1 and paths[0].parent == tmp_path
    # a sweep saves one picture: its targets in a labelled grid, 2 x 2 (tests/test_pipelines_e2e.py checks more)
    assert Image.open(paths[0]).size == (sweep_grid_size(2) if task in SWEEP_TASKS else (SIZE, SIZE))
    assert (server.output_dir / paths[0].name).read_bytes() == paths[0].read_bytes()


def test_run_workflow_prints_comfyui_errors_readably(server, capsys):
    import run_workflow

    code = run_workflow.main([str(WORKFLOWS / "api" / "mca_swap.json"), "--url", server.url,
                              "--set", "CheckpointLoaderSimple.ckpt_name=absent.safetensors"])
    assert code == 1
    err = capsys.readouterr().err
    assert "ComfyUI error" in err and "ckpt_name" in err and "absent.safetensors" in err
