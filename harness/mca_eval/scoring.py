"""The metric pass: ``metrics.json`` for every generated item that has none yet (resume), errors logged."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from mca_eval.errorlog import ErrorLog
from mca_eval.harness import METRICS_FILE, item_dir, read_record
from mca_eval.items import EvalItem
from mca_eval.metrics import item_metrics
from mca_eval.models import MetricModels


@dataclass
class ScoreSummary:
    """Item ids by outcome of the metric pass."""

    scored: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)


def read_metrics(out: Path, item_id: str) -> dict | None:
    """The item's ``metrics.json`` (None when it has none)."""
    try:
        return json.loads((item_dir(out, item_id) / METRICS_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def score(items: list[EvalItem], models: MetricModels, out: Path, errors: ErrorLog,
          progress: bool = True) -> ScoreSummary:
    """Scores every generated, unscored item."""
    from tqdm import tqdm

    summary = ScoreSummary()
    todo = [item for item in items if read_record(out, item.id) is not None]
    for item in tqdm(todo, desc="metrics", unit="item", disable=not progress):
        path = item_dir(out, item.id) / METRICS_FILE
        if path.exists():
            summary.skipped.append(item.id)
            continue
        started = time.perf_counter()
        try:
            values = item_metrics(models, item.task, item_dir(out, item.id), item.target_prompt,
                                  item.reference_images)
        except Exception as error:  # one item's failure (an empty mask, a broken file) must not stop the pass
            summary.failed.append(item.id)
            errors.add(item.id, "metrics", str(item_dir(out, item.id)), error)
            continue
        summary.seconds.append(time.perf_counter() - started)
        path.write_text(json.dumps(values, indent=1))
        summary.scored.append(item.id)
    return summary
