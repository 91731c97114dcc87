"""Print where the MCA-Ctrl workflows expect their model files (`make run` shows this first)."""
from __future__ import annotations

import sys
from pathlib import Path

EXPECTED = {
    "checkpoints": ["v1-5-pruned-emaonly.safetensors  (any Stable Diffusion 1.5 checkpoint)"],
    "sams": ["sam_vit_h_4b8939.pth  (or sam_vit_l_0b3195.pth / sam_vit_b_01ec64.pth, Meta's segment-anything)"],
    "grounding-dino": ["groundingdino_swint_ogc.pth  (or groundingdino_swinb_cogcoor.pth, IDEA-Research)"],
}


def main(comfy_dir: str) -> None:
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
