"""Smoke tests of the foundation: the real server loads the pack and runs a plain SD1.5 workflow."""
from __future__ import annotations

import io

import pytest
import requests
from PIL import Image

import comfy_host
import comfy_server
import random_models

pytestmark = pytest.mark.full


def registered_nodes() -> dict:
    """The pack's nodes as ComfyUI registered them (through the pack's comfy_entrypoint)."""
    import nodes

    return {node_id: cls for node_id, cls in nodes.NODE_CLASS_MAPPINGS.items() if node_id.startswith("MCA_")}


def test_pack_loads_in_process_with_prefixed_ids(pack):
    import nodes

    registered = registered_nodes()
    assert set(registered) == {node.GET_SCHEMA().node_id for node in pack.nodes.NODES}, "the pack registers no node"
    for node_id, cls in registered.items():
        assert cls.CATEGORY.startswith("MCA-Ctrl")
        assert node_id in nodes.NODE_DISPLAY_NAME_MAPPINGS


def test_server_lists_every_node_with_its_inputs(comfy_server, pack):
    log = comfy_server.log()
    assert "IMPORT FAILED" not in log or "mca_ctrl" not in log.split("IMPORT FAILED")[1].splitlines()[0], log
    info = comfy_server.get("/object_info")
    for node_id, cls in registered_nodes().items():
        assert node_id in info, f"{node_id} missing from /object_info"
        declared = cls.INPUT_TYPES()
        served = info[node_id]["input"]
        for section in ("required", "optional"):
            assert set(served.get(section, {})) == set(declared.get(section, {})), (node_id, section)
        for name, spec in served["required"].items():
            assert spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"


def plain_txt2img(checkpoint_name: str, size: int = 64, steps: int = 5) -> dict:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint_name}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a photo of a cat"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": ""}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0], "seed": 1,
            "steps": steps, "cfg": 7.0, "sampler_name": "ddim", "scheduler": "ddim_uniform", "denoise": 1.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "smoke"}},
    }


def test_plain_sd15_workflow_writes_a_64px_png(comfy_server):
    entry = comfy_server.run_prompt(plain_txt2img(random_models.RANDOM_CHECKPOINT))
    images = entry["outputs"]["7"]["images"]
    assert len(images) == 1
    image = images[0]
    response = requests.get(comfy_server.url + "/view", params={
        "filename": image["filename"], "subfolder": image["subfolder"], "type": image["type"]}, timeout=30)
    response.raise_for_status()
    png = Image.open(io.BytesIO(response.content))
    assert png.format == "PNG" and png.size == (64, 64)


def test_make_run_serves_comfyui_with_the_pack(tmp_path):
    """The README's run command itself: `make run` on a free port lists the pack's nodes."""
    import os
    import signal
    import subprocess
    import time

    port = comfy_server.free_port()
    log = tmp_path / "make_run.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(["make", "run", f"PORT={port}"], cwd=comfy_host.REPO, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 120
        info = None
        while time.time() < deadline and process.poll() is None:
            try:
                info = requests.get(f"http://127.0.0.1:{port}/object_info/MCA_Sampler", timeout=2).json()
                break
            except requests.RequestException:
                time.sleep(0.5)
        text = log.read_text(errors="replace")
        assert info and "MCA_Sampler" in info, text[-3000:]
        assert "models/sams" in text and "v1-5-pruned-emaonly.safetensors" in text, "model folders not printed"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def test_every_pack_module_exists_once_and_is_imported_as_mca_ctrl(pack):
    import sys
    from pathlib import Path

    import mca_ctrl.mca_attention.attention as attention

    assert attention is sys.modules[f"{pack.__name__}.mca_attention.attention"]
    repo = comfy_host.REPO.resolve()
    runtime = [repo / name for name in ("mca_attention", "nodes", "slm", "drawing")] + [repo / "model_files.py"]
    modules_by_file: dict[Path, set[int]] = {}
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if file and any(Path(file).resolve().is_relative_to(root) for root in runtime):
            modules_by_file.setdefault(Path(file).resolve(), set()).add(id(module))
            assert name.startswith((pack.__name__ + ".", "mca_ctrl.")), f"pack module imported as {name}"
    assert len(modules_by_file) >= 20, "the pack's modules were not all loaded"
    twice = {str(path): len(ids) for path, ids in modules_by_file.items() if len(ids) > 1}
    assert not twice, f"modules loaded twice: {twice}"


def test_nothing_imports_from_tests():
    for folder in ("scripts", "testbed", "harness", "benchmarks"):
        for path in (comfy_host.REPO / folder).rglob("*.py"):
            text = path.read_text()
            assert '"tests"' not in text and "'tests'" not in text, f"{path} reaches into tests/"
