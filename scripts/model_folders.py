"""Before `make run`: copy the example images into ComfyUI's input folder and print where models go."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

EXAMPLE_INPUTS = Path(__file__).resolve().parents[1] / "example_workflows" / "input"

EXPECTED = {
    "checkpoints": ["v1-5-pruned-emaonly.safetensors  (any Stable Diffusion 1.5 checkpoint)"],
    "sams": ["sam_vit_h_4b8939.pth  (or sam_vit_l_0b3195.pth / sam_vit_b_01ec64.pth, Meta's segment-anything)"],
    "grounding-dino": ["groundingdino_swint_ogc.pth  (or groundingdino_swinb_cogcoor.pth, IDEA-Research)"],
}


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
    for folder, files in EXPECTED.items():
        state = "found" if (models / folder).is_dir() and any((models / folder).iterdir()) else "empty"
        print(f"  {models / folder}  [{state}]")
        for name in files:
            print(f"      {name}")
    print("Then open http://127.0.0.1:8188 and load a workflow from this pack's example_workflows.")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
