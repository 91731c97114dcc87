"""Per-item CSV and the Markdown table in the paper's format, with the paper's row beside ours."""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from mca_eval.harness import read_record
from mca_eval.items import EvalItem
from mca_eval.metrics import metric_names
from mca_eval.scoring import read_metrics
from mca_eval.sweep import cell_label

DISPLAY = MappingProxyType({
    "dino_sub": "DINO_sub", "dino_back": "DINO_back", "clip_i_sub": "CLIP-I_sub", "clip_i_back": "CLIP-I_back",
    "dino": "DINO", "clip_i": "CLIP-I", "clip_t": "CLIP-T", "image_reward": "ImageReward"})
# Yang et al., CVPR 2025, SD1.5: subject swap on DreamEditBench, subject generation on DreamBench.
PAPER = MappingProxyType({
    "swap": ("MCA-Ctrl (paper, SD1.5, DreamEditBench)", MappingProxyType(
        {"dino_sub": 0.643, "dino_back": 0.678, "clip_i_sub": 0.811, "clip_i_back": 0.868, "image_reward": 0.321})),
    "generation": ("MCA-Ctrl (paper, SD1.5, DreamBench)", MappingProxyType(
        {"dino": 0.672, "clip_i": 0.844, "clip_t": 0.306, "image_reward": 0.413})),
})
TASK_TITLES = MappingProxyType({"swap": "subject swap", "add": "subject addition", "generation": "subject generation"})


@dataclass(frozen=True)
class ItemRow:
    """One item's outcome: status ``ok``, ``not generated`` or ``no metrics``."""

    item: str
    group: str
    task: str
    cell: tuple
    status: str
    server: str
    seconds: float | None
    metrics: dict


def collect_rows(items: list[EvalItem], out: Path) -> list[ItemRow]:
    """Rows of every item from its folder (``item.json``, ``metrics.json``)."""
    rows = []
    for item in items:
        record, metrics = read_record(out, item.id), read_metrics(out, item.id)
        status = "not generated" if record is None else ("no metrics" if metrics is None else "ok")
        rows.append(ItemRow(item=item.id, group=item.base_id, task=item.task, cell=item.sweep, status=status,
                            server=(record or {}).get("server", ""), seconds=(record or {}).get("seconds"),
                            metrics=metrics or {}))
    return rows


def format_value(value: float | None, digits: int = 3) -> str:
    """``0.643`` / ``n/a``."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def mean(rows: list[ItemRow], name: str) -> float | None:
    """Mean of a metric over the scored rows that have it (None when none has)."""
    values = [row.metrics[name] for row in rows if row.status == "ok" and row.metrics.get(name) is not None]
    return sum(values) / len(values) if values else None


def write_csv(rows: list[ItemRow], path: Path) -> None:
    """One line per item: id, status, server, seconds, swept values, metrics (6 decimals; empty = n/a)."""
    task = rows[0].task if rows else "swap"
    sweep_names = [name for name, _ in rows[0].cell] if rows else []
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["item", "task", "status", "server", "seconds", *sweep_names, *metric_names(task)])
        for row in rows:
            metrics = [format_value(row.metrics.get(name), 6) if row.metrics.get(name) is not None else ""
                       for name in metric_names(task)]
            seconds = "" if row.seconds is None else f"{row.seconds:.3f}"
            writer.writerow([row.item, row.task, row.status, row.server, seconds,
                             *(value for _, value in row.cell), *metrics])


def markdown(rows: list[ItemRow], task: str, image_reward_reason: str = "", note: str = "") -> str:
    """The results table: the paper's row (when the paper has one), then ours, one row per sweep cell."""
    names = metric_names(task)
    lines = [f"# MCA-Ctrl evaluation: {TASK_TITLES.get(task, task)}", ""]
    if note:
        lines += [note, ""]
    lines += ["| method | items | " + " | ".join(DISPLAY[name] for name in names) + " |",
              "|---|---:|" + "---:|" * len(names)]
    if task in PAPER:
        label, values = PAPER[task]
        lines.append(f"| {label} | | " + " | ".join(format_value(values.get(n)).replace("n/a", "—")
                                                   for n in names) + " |")
    cells = list(dict.fromkeys(row.cell for row in rows))
    for cell in cells:
        group = [row for row in rows if row.cell == cell]
        scored = sum(row.status == "ok" for row in group)
        label = "this run" + (f" ({cell_label(cell)})" if cell else "")
        lines.append(f"| {label} | {scored} | " + " | ".join(format_value(mean(group, n)) for n in names) + " |")
    failed = [row for row in rows if row.status != "ok"]
    lines.append("")
    if failed:
        lines.append(f"{len(failed)} item(s) without scores (see errors.log): "
                     + ", ".join(f"{row.item} ({row.status})" for row in failed[:10])
                     + (" ..." if len(failed) > 10 else ""))
    if image_reward_reason and "image_reward" in names:
        lines.append(f"ImageReward n/a: {image_reward_reason}.")
    if task not in PAPER:
        lines.append("The paper reports no numbers for this task.")
    lines.append("Means over the scored items; cosines are raw (CLIP-T 0.306 in the paper's scale). "
                 "Definitions: docs/reproducing.md.")
    return "\n".join(lines) + "\n"
