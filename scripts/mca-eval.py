"""mca-eval: run a benchmark through the shipped MCA-Ctrl workflows on ComfyUI servers and score it.

    .venv/bin/python scripts/mca-eval.py swap path/to/manifest.csv --out eval/swap --url http://127.0.0.1:8188
    .venv/bin/python scripts/mca-eval.py generation path/to/dreambooth/dataset --out eval/generation

`--help` lists every option; docs/reproducing.md has the benchmark layouts and the metric model folders.
The code is the package harness/mca_eval/.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "harness"))

from mca_eval.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
