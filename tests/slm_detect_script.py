"""Run Grounding DINO detection on fixed images in a fresh process; prints the transformers version and boxes.

Used to compare transformers 4.5x (the venv) with 5.x (PYTHONPATH=.venv/transformers5).
"""
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "testbed"))

import comfy_host  # noqa: E402

comfy_host.import_pack_without_host()  # this process checks the SLM under another transformers: no ComfyUI

import transformers  # noqa: E402

from mca_ctrl.slm import build_grounding_dino, detect, load_state_dict  # noqa: E402
from mca_ctrl.slm.bert_compat import bert_vocab_dir  # noqa: E402

checkpoint, phrase = sys.argv[1], sys.argv[2]
overrides = json.loads(Path(checkpoint).with_suffix(".json").read_text())
model = build_grounding_dino(load_state_dict(checkpoint), bert_vocab_dir(), overrides)
results = []
for seed in (0, 1):
    image = (np.random.RandomState(seed).rand(64, 64, 3) * 255).astype(np.uint8)
    found = detect(model, image, phrase, box_threshold=0.0, text_threshold=0.25, size=64)
    results.append({"boxes": found.boxes.tolist(), "scores": found.scores.tolist()})
print(json.dumps({"transformers": transformers.__version__, "results": results}))
