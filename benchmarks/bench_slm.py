"""Per-call CPU time of the SLM: tiny SAM / Grounding DINO (test recipes) and a full-size random vit_b SAM.

Usage: .venv/bin/python benchmarks/bench_slm.py   (prints one line per measurement; median of 3)
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "testbed"))

import comfy_host  # noqa: E402

comfy_host.import_pack_without_host()  # the SLM is plain torch: no ComfyUI needed

from mca_ctrl.slm import build_grounding_dino, build_sam, detect, segment_boxes  # noqa: E402
from mca_ctrl.slm.bert_compat import bert_vocab_dir  # noqa: E402
from slm_models import TINY_DINO_OVERRIDES, tiny_dino_state, tiny_sam_state  # noqa: E402


def median_seconds(fn, repeats: int = 3) -> float:
    fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    torch.set_grad_enabled(False)
    tiny_image = (np.random.RandomState(0).rand(64, 64, 3) * 255).astype(np.uint8)
    box = torch.tensor([[8.0, 8.0, 40.0, 40.0]])
    dino = build_grounding_dino(tiny_dino_state(), bert_vocab_dir(), TINY_DINO_OVERRIDES)
    sam = build_sam(tiny_sam_state())
    print(f"tiny Grounding DINO detect, 64 px: {median_seconds(lambda: detect(dino, tiny_image, 'a cat', size=64)):.3f} s")
    print(f"tiny SAM one box, 64 px: {median_seconds(lambda: segment_boxes(sam, tiny_image, box)):.3f} s")
    from segment_anything import sam_model_registry

    vit_b = build_sam(sam_model_registry["vit_b"]().state_dict())
    image = (np.random.RandomState(1).rand(512, 512, 3) * 255).astype(np.uint8)
    big_box = torch.tensor([[64.0, 64.0, 320.0, 320.0]])
    print(f"full-size random vit_b SAM one box, 512 px: "
          f"{median_seconds(lambda: segment_boxes(vit_b, image, big_box)):.2f} s "
          f"({torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
