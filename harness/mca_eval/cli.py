"""Command line of mca-eval (``scripts/mca-eval.py``): benchmark -> ComfyUI servers -> metrics -> report.

    .venv/bin/python scripts/mca-eval.py swap  benchmarks/dreameditbench/manifest.csv --out eval/swap \\
        --url http://127.0.0.1:8188 --url http://127.0.0.1:8189
    .venv/bin/python scripts/mca-eval.py generation /data/dreambooth/dataset --out eval/generation \\
        --url http://127.0.0.1:8188
    .venv/bin/python scripts/mca-eval.py swap my_set --out eval/tune --limit 2 \\
        --sweep sagi_end=0.05,0.1,0.2 --sweep salq_end=0.6,0.8,1.0

Rerunning the same command resumes: items whose folder is complete are skipped. See docs/reproducing.md.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from mca_eval.comfy_api import REPO, tool_module
from mca_eval.items import TASKS, BenchmarkError

if TYPE_CHECKING:
    from mca_eval.sweep import Axis

DEFAULT_MODELS = Path(os.environ.get("MCA_EVAL_MODELS") or REPO / "metric_models")


def parser() -> argparse.ArgumentParser:
    """The argument parser."""
    p = argparse.ArgumentParser(prog="mca-eval.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("task", choices=TASKS, help="which shipped workflow (and metrics) to use")
    p.add_argument("benchmark", type=Path, help="manifest .csv/.json, a folder holding one, or a DreamBench folder")
    p.add_argument("--out", type=Path, required=True, help="output folder (rerun with the same one to resume)")
    p.add_argument("--url", action="append", default=[],
                   help="a running ComfyUI; repeat for several (items are spread over them). Default: start one")
    p.add_argument("--workflow", type=Path, help="API workflow (default: example_workflows/api/mca_<task>.json)")
    p.add_argument("--steps", type=int, help="sampler and inversion steps (default: the workflow's, 50)")
    p.add_argument("--seed", type=int, help="sampler seed for items without their own (default: the workflow's)")
    p.add_argument("--set", action="append", default=[], metavar="TITLE.INPUT=VALUE",
                   help="set any node input, e.g. 'CheckpointLoaderSimple.ckpt_name=my_sd15.safetensors'")
    p.add_argument("--sweep", action="append", default=[], metavar="NAME=V1,V2",
                   help="grid over an MCA Attention Patch widget by its input name (sagi_start, sagi_end, "
                        "salq_start, salq_end, salq_sites, salq_first_site: one prompt per item makes its whole "
                        "grid) or any 'Title.input' (one prompt per cell); repeat for more axes")
    p.add_argument("--sweep-per-cell", action="store_true",
                   help="one ComfyUI prompt per sweep cell, even where one prompt per item could make all its "
                        "cells (a sweep of the patch's schedule settings): for a server with an older pack")
    p.add_argument("--sweep-metric", help="metric printed under each grid cell (default: DINO_sub / DINO)")
    p.add_argument("--limit", type=int, help="only the first N items of the benchmark")
    p.add_argument("--dino", type=Path, default=DEFAULT_MODELS / "dino-vits16", help="DINO ViT-S/16 folder")
    p.add_argument("--clip", type=Path, default=DEFAULT_MODELS / "clip-vit-base-patch32",
                   help="CLIP ViT-B/32 (or L/14) folder")
    p.add_argument("--image-reward", type=Path, default=DEFAULT_MODELS / "ImageReward",
                   help="folder with ImageReward.pt and med_config.json (optional metric)")
    p.add_argument("--no-metrics", action="store_true", help="only generate (and write the contact sheet)")
    p.add_argument("--device", default="auto", help="metric models' device: auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--timeout", type=float, default=3600.0,
                   help="seconds one item (one sweep cell) may take on a server")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    """Runs the evaluation; 0 when every item was generated and scored, 1 when some failed, 2 on bad input."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    args = parser().parse_args(argv)
    from mca_eval.harness import HarnessError
    from mca_eval.models import ModelFolderError
    from mca_eval.sweep import SweepError
    from mca_eval.workflow import WorkflowShapeError

    try:
        return evaluate(args)
    except (BenchmarkError, SweepError, WorkflowShapeError, ModelFolderError, HarnessError) as error:
        print(f"mca-eval: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted: rerun the same command to resume (finished items in {args.out} are kept)",
              file=sys.stderr)
        return 130


def evaluate(args: argparse.Namespace) -> int:
    """The run behind ``main``."""
    from mca_eval import harness, readers, report, scoring, sweep, workflow
    from mca_eval.contact_sheet import write_contact_sheets
    from mca_eval.errorlog import ErrorLog
    from mca_eval.grid import write_grid
    from mca_eval.metrics import metric_names

    template_path = args.workflow or REPO / "example_workflows" / "api" / f"mca_{args.task}.json"
    template = workflow.load_template(template_path)
    axes = tuple(sweep.parse_axis(spec) for spec in args.sweep)
    workflow.check_sweep(template, axes)
    metric = args.sweep_metric or metric_names(args.task)[0]
    if metric not in metric_names(args.task):
        raise sweep.SweepError(f"--sweep-metric must be one of {', '.join(metric_names(args.task))}")
    items = readers.load_benchmark(args.benchmark, args.task)[:args.limit]
    items = sweep.expand(items, axes)
    models = None if args.no_metrics else _load_models(args)
    args.out.mkdir(parents=True, exist_ok=True)
    errors = ErrorLog(args.out / "errors.log")
    settings = harness.GenerationSettings(template=template, urls=tuple(args.url), overrides=tuple(args.set),
                                          steps=args.steps, seed=args.seed, timeout=args.timeout, sweep=axes,
                                          shared_sweep=_shared_sweep(template, axes, args.sweep_per_cell))
    print(f"{len(items)} item(s) of {args.benchmark} through {template_path.name} -> {args.out}")
    generated = _generate(items, settings, args, errors)
    scored = scoring.score(items, models, args.out, errors, progress=not args.quiet) if models else None
    rows = report.collect_rows(items, args.out)
    report.write_csv(rows, args.out / "results.csv")
    note = f"Benchmark `{args.benchmark}`, workflow `{template_path.name}`" + (
        f", steps {args.steps}" if args.steps else "") + (f", seed {args.seed}" if args.seed is not None else "")
    (args.out / "results.md").write_text(
        report.markdown(rows, args.task, models.image_reward_reason if models else "metrics not computed", note))
    written = write_contact_sheets(rows, args.out)
    if axes:
        written.append(write_grid(rows, axes, args.out, metric))
    _print_summary(generated, scored, rows, args.out, written)
    return 0 if all(row.status == "ok" or (models is None and row.status == "no metrics") for row in rows) else 1


def _shared_sweep(template: dict, axes: tuple[Axis, ...], per_cell: bool) -> tuple[Axis, ...]:
    """``axes`` when one prompt per item can make all their cells, else () with the reason printed."""
    from mca_eval.sweep import cells
    from mca_eval.workflow import shared_pass_refusal

    reason = "--sweep-per-cell" if per_cell else shared_pass_refusal(template, axes)
    if axes and reason:
        print(f"sweep: one prompt per cell ({reason})")
    elif axes:
        print(f"sweep: one prompt per item makes its {len(cells(axes))} cells (MCA Schedule Sweep)")
    return () if reason else axes


def _load_models(args: argparse.Namespace):
    from mca_eval.models import load_metric_models

    device = args.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    return load_metric_models(args.dino, args.clip, args.image_reward, device)


def _generate(items, settings, args: argparse.Namespace, errors):
    """Generation on the given servers, or on one ComfyUI started for the run (its own folders, removed after)."""
    from dataclasses import replace

    from mca_eval.harness import generate

    if settings.urls:
        return generate(items, settings, args.out, errors, progress=not args.quiet)
    server = tool_module("comfy_server").ComfyServer(Path(tempfile.mkdtemp(prefix="mca_eval_comfy_"))).start()
    print(f"started ComfyUI at {server.url} (log: {server.log_path})")
    try:
        summary = generate(items, replace(settings, urls=(server.url,)), args.out, errors, progress=not args.quiet)
    finally:
        server.stop()
    shutil.rmtree(server.root, ignore_errors=True)  # kept (with its log) when the run broke off
    return summary


def _print_summary(generated, scored, rows, out: Path, written: list[Path]) -> None:
    print(f"generated {len(generated.ran)}, skipped {len(generated.skipped)} (already done), "
          f"failed {len(generated.failed)}, not run {len(generated.not_run)}")
    if scored is not None:
        per_item = f", {sum(scored.seconds) / len(scored.seconds):.2f} s per item" if scored.seconds else ""
        print(f"metrics: scored {len(scored.scored)}, kept {len(scored.skipped)}, failed {len(scored.failed)}"
              f"{per_item}")
    if any(row.status != ("ok" if scored is not None else "no metrics") for row in rows):
        print(f"some items failed: see {out / 'errors.log'}")
    for path in [out / "results.csv", out / "results.md", *written]:
        print(f"wrote {path}")
    for line in generated.cleanup:
        print(line)
