"""Before `make run`: copy the example images into ComfyUI's input folder and print where models go."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

EXAMPLE_INPUTS = Path(__file__).resolve().parents[1] / "example_workflows" / "input"
sys.path.insert(0, str(Path(__file__).resolve().parent))

import comfy_host  # noqa: E402

comfy_host.import_pack_without_host()  # runs before ComfyUI starts: read the plain-data module only

from mca_ctrl.model_files import EXPECTED_MODELS  # noqa: E402


def copy_example_inputs(comfy_dir: Path) -> None:
    """The example workflows' images, into ComfyUI/input (never overwriting a file there)."""
    target = comfy_dir / "input"
    target.mkdir(parents=True, exist_ok=True)
    for image in sorted(EXAMPLE_INPUTS.glob("*.png")):
        if not (target / image.name).exists():
            shutil.copyfile(image, target / image.name)


def main(comfy_dir: str) -> None:
    copy_example_inputs(Path(comfy_dir).resolve())
    models = Path(comfy_dir).resolve() / "models"
    print("MCA-Ctrl: put these model files in place (nothing is downloaded for you):")
    for expected in EXPECTED_MODELS:
        folder = models / expected.folder
        state = "found" if folder.is_dir() and any(folder.iterdir()) else "empty"
        print(f"  {folder}  [{state}]")
        print(f"      {expected.describe()}")
    print("Then open http://127.0.0.1:8188 and load a workflow from this pack's example_workflows.")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
