"""scripts/model_folders.py, the banner `make run` prints: real model files only, extra_model_paths.yaml
honoured (as ComfyUI reads it), and the address ComfyUI will listen on."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from comfy_server import REPO

SCRIPT = REPO / "scripts" / "model_folders.py"


def comfy_folder(root: Path) -> Path:
    """A ComfyUI folder as a fresh install has it: models/<folder>/ holding only ComfyUI's placeholders."""
    for folder in ("checkpoints", "sams", "grounding-dino"):
        (root / "models" / folder).mkdir(parents=True)
    (root / "models" / "checkpoints" / "put_checkpoints_here").touch()
    return root


def banner(comfy_dir: Path, *args: str) -> str:
    result = subprocess.run([sys.executable, str(SCRIPT), str(comfy_dir), *args], capture_output=True, text=True,
                            timeout=120, cwd=REPO)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    return result.stdout


def state_of(text: str, folder: Path) -> str:
    """The ``[...]`` state printed on the line that names ``folder``."""
    lines = [line for line in text.splitlines() if str(folder) in line and "[" in line]
    assert lines, f"{folder} is not listed:\n{text}"
    return lines[0].rsplit("[", 1)[1].rstrip("]")


def test_placeholder_files_are_not_models(tmp_path):
    comfy = comfy_folder(tmp_path / "ComfyUI")
    text = banner(comfy)
    assert "found" not in state_of(text, comfy / "models" / "checkpoints"), text
    (comfy / "models" / "checkpoints" / "my_sd15.safetensors").write_bytes(b"weights")
    (comfy / "models" / "checkpoints" / "notes.txt").write_text("not a model")
    assert state_of(banner(comfy), comfy / "models" / "checkpoints") == "found: 1 model file"


def test_extra_model_paths_yaml_is_honoured_without_running_code(tmp_path):
    comfy = comfy_folder(tmp_path / "ComfyUI")
    shared = tmp_path / "shared_models"
    (shared / "segment").mkdir(parents=True)
    (shared / "segment" / "sam_vit_b_01ec64.pth").write_bytes(b"weights")
    (comfy / "extra_model_paths.yaml").write_text(f"mine:\n  base_path: {shared}\n  sams: segment\n")
    text = banner(comfy)
    assert state_of(text, shared / "segment") == "found: 1 model file", text
    assert "found" not in state_of(text, comfy / "models" / "grounding-dino")

    marker = tmp_path / "code_ran"
    (comfy / "extra_model_paths.yaml").write_text(f"evil: !!python/object/apply:os.system ['touch {marker}']\n")
    result = subprocess.run([sys.executable, str(SCRIPT), str(comfy)], capture_output=True, text=True, timeout=120)
    assert not marker.exists(), "the YAML file ran code"
    assert "Traceback" not in result.stderr and "extra_model_paths.yaml" in result.stdout + result.stderr


def test_banner_names_the_host_and_port_comfyui_listens_on(tmp_path):
    comfy = comfy_folder(tmp_path / "ComfyUI")
    assert "open http://127.0.0.1:8190 " in banner(comfy, "--host", "127.0.0.1", "--port", "8190")
    assert "open http://127.0.0.1:9000 " in banner(comfy, "--host", "0.0.0.0", "--port", "9000")
    assert "open http://192.168.1.5:8188 " in banner(comfy, "--host", "192.168.1.5", "--port", "8188")
