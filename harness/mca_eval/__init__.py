"""mca-eval: run a benchmark through the shipped MCA-Ctrl API workflows on ComfyUI servers and score it.

Plain Python (no ComfyUI imports). The command line is ``scripts/mca-eval.py``; ``docs/reproducing.md``
describes the benchmark layouts, the metric model folders and the outputs.

Modules, one job each: ``items`` (what one benchmark item is), ``readers`` (manifest and DreamBench
layouts), ``sweep`` (the parameter grid and its cells), ``workflow`` (the API prompt of an item, or of all
an item's cells through MCA Schedule Sweep), ``comfy_api`` (HTTP calls, built on scripts/run_workflow.py),
``harness`` (the generation run: one job per prompt, servers, resume), ``cleanup`` (removing the run's files
from the servers), ``errorlog``, ``regions`` (masks and image regions), ``models`` (metric models from local
folders), ``metrics`` (the paper's scores), ``scoring`` (the metric pass), ``report`` (CSV and Markdown),
``contact_sheet`` and ``grid`` (images, drawn with the pack's drawing/tiles.py), ``cli`` (arguments).
"""
