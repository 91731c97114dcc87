"""The generation run: items spread over the ComfyUI servers, resume, per-item error log, progress bar.

Each ``--url`` gets one worker that takes the next job (one ComfyUI prompt) when its server is free, so every
server keeps its own model cache and a faster GPU simply takes more items. A job is one item, or, for a sweep of
the patch's schedule settings, every cell of one benchmark item (one result per cell in one sampler call).
An item is done when its folder holds ``item.json`` (written after all its images); a job whose items are all
done is skipped on the next run, one with some items missing runs again as a whole. A server that
stops answering hands its job back to the others. Before the first item, image files that do not open fail
their item (named by manifest field and path) and sweep values are checked against the server's widgets;
when the run ends (not when it is interrupted), what it uploaded and saved on the servers is removed
(``cleanup``).
"""
from __future__ import annotations

import asyncio
import json
import re
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from mca_eval import comfy_api
from mca_eval.cleanup import ServerFiles, clean_up
from mca_eval.errorlog import ErrorLog
from mca_eval.items import EvalItem
from mca_eval.readers import PATH_FIELDS
from mca_eval.sweep import PATCH_NODE, Axis, benchmark_item, by_item, check_values
from mca_eval.workflow import CAPTURE_PREFIX, PreparedPrompt, prepare

RECORD = "item.json"
METRICS_FILE = "metrics.json"  # written by the metric pass (scoring); removed when its item is made again
OUTPUT_NAME = re.compile(rf"^{CAPTURE_PREFIX}_\d+_\.png$")


class HarnessError(RuntimeError):
    """The run cannot start or go on; the message says what to change."""


@dataclass(frozen=True)
class GenerationSettings:
    """What every item of a run shares."""

    template: dict
    urls: tuple[str, ...]
    overrides: tuple[str, ...] = ()
    steps: int | None = None
    seed: int | None = None
    timeout: float = 3600.0
    prefix: str = "mca_eval"
    sweep: tuple[Axis, ...] = ()
    shared_sweep: tuple[Axis, ...] = ()  # the sweep when one prompt per item makes all its cells, else ()


@dataclass(frozen=True)
class Job:
    """One ComfyUI prompt and the items it makes: one item, or every cell of one item's sweep (in cell order)."""

    items: tuple[EvalItem, ...]
    prepared: PreparedPrompt

    @property
    def ids(self) -> list[str]:
        """The ids of the items it makes."""
        return [item.id for item in self.items]

    @property
    def name(self) -> str:
        """The item, or the benchmark item whose cells the job makes."""
        return self.items[0].id if len(self.items) == 1 else self.items[0].base_id


@dataclass
class GenerationSummary:
    """Item ids by outcome."""

    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    not_run: list[str] = field(default_factory=list)
    cleanup: list[str] = field(default_factory=list)  # one line per server: removed files, or where they stay


def item_dir(out: Path, item_id: str) -> Path:
    """The folder of one item's images, ``item.json`` and ``metrics.json``."""
    return Path(out) / "items" / item_id


def read_record(out: Path, item_id: str) -> dict | None:
    """The item's ``item.json`` (None while the item is not done)."""
    path = item_dir(out, item_id) / RECORD
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def jobs(items: list[EvalItem], settings: GenerationSettings) -> list[Job]:
    """One job per item, or (``settings.shared_sweep``) per benchmark item with all its cells."""
    if not settings.shared_sweep:
        return [Job((item,), _prepare(item, settings)) for item in items]
    return [Job(cells, _prepare(benchmark_item(cells), settings, settings.shared_sweep)) for cells in by_item(items)]


def _prepare(item: EvalItem, settings: GenerationSettings, schedule_sweep: tuple[Axis, ...] = ()) -> PreparedPrompt:
    return prepare(settings.template, item, settings.overrides, settings.steps, settings.seed, settings.prefix,
                   schedule_sweep)


def plan(items: list[EvalItem], settings: GenerationSettings, out: Path) -> tuple[list[Job], list[str]]:
    """(jobs to run, ids already done). A job is done when all its items are, with its prompt's fingerprint;
    items made with other settings are an error."""
    todo, done, changed = [], [], []
    for job in jobs(items, settings):
        records = [read_record(out, item_id) for item_id in job.ids]
        changed += [item_id for item_id, record in zip(job.ids, records)
                    if record is not None and record.get("fingerprint") != job.prepared.fingerprint]
        if None not in records:
            done += job.ids
        else:
            todo.append(job)
    if changed:
        raise HarnessError(f"{out} holds results of {len(changed)} item(s) made with other settings (workflow, --set, "
                           f"--steps, --seed, sweep, --sweep-per-cell or input files differ), e.g. "
                           f"{', '.join(changed[:3])}. Use a new --out folder, or delete those items' folders under "
                           f"{Path(out) / 'items'} to redo them.")
    return todo, done


def generate(items: list[EvalItem], settings: GenerationSettings, out: Path, errors: ErrorLog,
             progress: bool = True) -> GenerationSummary:
    """Runs every item not done yet; failures go to ``errors`` and the run goes on."""
    todo, done = plan(items, settings, out)
    summary = GenerationSummary(skipped=done)
    if done:
        print(f"{len(done)} item(s) already done in {out}: skipped")
    todo = _drop_unreadable(todo, errors, summary)
    if todo:
        made = {url: ServerFiles(url) for url in settings.urls}
        asyncio.run(_generate_all(todo, settings, out, errors, summary, progress, made))
        removed: set = set()  # servers sharing one ComfyUI folder: what one's cleanup removed is not left on another
        summary.cleanup = [line for files in made.values() if (line := clean_up(files, removed))]
    return summary


def unreadable_image(item: EvalItem, verdicts: dict[Path, str | None]) -> str | None:
    """Why an image file of ``item`` does not open, naming its manifest field and path (None if all open).
    ``verdicts`` caches each file's verdict (sweep cells share files)."""
    for name in PATH_FIELDS:
        path = getattr(item, name)
        if path is None:
            continue
        if path not in verdicts:
            verdicts[path] = _image_problem(path)
        if verdicts[path]:
            return f"{name} {path} {verdicts[path]}"
    return None


def _image_problem(path: Path) -> str | None:
    try:
        with Image.open(path) as image:
            image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        return f"cannot be read as an image ({type(error).__name__}); fix or replace that file of the manifest"
    return None


def _drop_unreadable(todo: list[Job], errors: ErrorLog, summary: GenerationSummary) -> list[Job]:
    """``todo`` without the jobs whose image files do not open (a job's items share them); those fail."""
    kept, verdicts = [], {}
    for job in todo:
        problem = unreadable_image(job.items[0], verdicts)
        if problem is None:
            kept.append(job)
        else:
            summary.failed += job.ids
            print(f"{job.name} failed: {_log(errors, job, '-', problem)}")
    return kept


def _log(errors: ErrorLog, job: Job, where: str, error: BaseException | str) -> str:
    """Logs ``error`` for each item of ``job``; returns the one-line message."""
    return [errors.add(item_id, "generate", where, error) for item_id in job.ids][0]


async def _check_sweep_values(session, url: str, settings: GenerationSettings) -> None:
    """SweepError unless every sweep value suits its widget as ``url``'s /object_info describes it; HarnessError
    when a shared pass is planned and the server's MCA Attention Patch takes no sweep (an older pack)."""
    nodes_titled = comfy_api.run_workflow_module().nodes_titled
    for axis in settings.sweep:
        for class_type in sorted({node["class_type"] for node in nodes_titled(settings.template, axis.title)}):
            check_values(axis, class_type, await comfy_api.input_spec(session, url, class_type, axis.input))
    if settings.shared_sweep and await comfy_api.input_spec(session, url, PATCH_NODE, "sweep") is None:
        raise HarnessError(f"the MCA Attention Patch on {url} has no sweep input (an older MCA-Ctrl pack): update "
                           f"the pack there, or pass --sweep-per-cell (one prompt per sweep cell)")


async def _generate_all(todo: list, settings: GenerationSettings, out: Path, errors: ErrorLog,
                        summary: GenerationSummary, progress: bool, made: dict[str, ServerFiles]) -> None:
    import aiohttp
    from tqdm import tqdm

    async with aiohttp.ClientSession() as session:
        live = []
        for url in settings.urls:
            try:
                await comfy_api.check_server(session, url)
                live.append(url)
            except ConnectionError as error:
                print(f"warning: {error}")
        if not live:
            raise HarnessError(f"none of the servers answers ({', '.join(settings.urls)}): start ComfyUI "
                               f"(make run, one per GPU) and pass each with --url")
        await _check_sweep_values(session, live[0], settings)
        queue = deque(todo)
        with tqdm(total=sum(len(job.items) for job in todo), desc=f"generating on {len(live)} server(s)", unit="item",
                  disable=not progress) as bar:
            await asyncio.gather(*(_worker(session, url, queue, settings, out, errors, summary, bar, made[url])
                                   for url in live))
    for job in queue:
        summary.not_run += job.ids
        _log(errors, job, "-", "not run: no server was left answering")


async def _worker(session, url: str, queue: deque, settings: GenerationSettings, out: Path, errors: ErrorLog,
                  summary: GenerationSummary, bar, made: ServerFiles) -> None:
    down = comfy_api.server_down_errors()
    while queue:
        job = queue.popleft()
        started = time.perf_counter()
        try:
            # upload names are content hashes: a file goes to each server once
            uploads = tuple(upload for upload in job.prepared.uploads if ("input", upload[0]) not in made.files)
            await comfy_api.upload(url, uploads)
            for name, path in uploads:
                made.add("input", name, Path(path).read_bytes())
            prompt, subfolder = job.prepared.submission()
            images = await comfy_api.run_prompt(
                url, prompt, settings.timeout * job.prepared.cells,
                log=lambda message, url=url: bar.set_postfix_str(f"{url.split('//')[-1]} {message.strip()}"))
            await _save_outputs(session, url, images, job, subfolder, out, made)
        except down as error:
            queue.appendleft(job)
            message = _log(errors, job, url, f"server stopped answering ({error}); it takes no more items, the "
                                             f"others go on")
            bar.write(f"{job.name}: {message}")
            return
        except Exception as error:  # one job's failure must not stop the run: it is logged and skipped
            summary.failed += job.ids
            bar.write(f"{job.name} failed on {url}: {_log(errors, job, url, error)}")
        else:
            seconds = time.perf_counter() - started
            for item in job.items:
                _write_record(out, item, job.prepared, url, seconds)
            summary.ran += job.ids
        bar.update(len(job.items))


async def _save_outputs(session, url: str, images: list[dict], job: Job, subfolder: str, out: Path,
                        made: ServerFiles) -> None:
    """Writes each item's ``<role>.png``: its own result (the batch's results are in ``job.items`` order) and the
    captures the items share; records the server's copies in ``made``. An item made again loses its old
    ``item.json`` and ``metrics.json`` first."""
    prepared = job.prepared
    batch = [image for image in images if image.get("subfolder", "").replace("\\", "/") == subfolder
             and OUTPUT_NAME.match(image.get("filename", ""))]
    if len(batch) != len(prepared.batch_roles):
        raise comfy_api.run_workflow_module().WorkflowError(
            f"ComfyUI returned {len(batch)} image(s) for {job.name}, expected {len(prepared.batch_roles)} "
            f"({prepared.cells} result(s), then {', '.join(prepared.roles[1:]) or 'nothing'}); is the result a "
            f"batch of one image per sweep cell?")
    contents = []
    for image in batch:
        contents.append(await comfy_api.fetch_image(session, url, image))
        if image.get("type", "output") == "output":
            made.add("output", f"{image['subfolder']}/{image['filename']}", contents[-1])
    captures = contents[prepared.cells:]
    for item, result in zip(job.items, contents):
        folder = item_dir(out, item.id)
        for stale in (RECORD, METRICS_FILE):
            (folder / stale).unlink(missing_ok=True)
        folder.mkdir(parents=True, exist_ok=True)
        for role, content in zip(prepared.roles, (result, *captures)):
            (folder / f"{role}.png").write_bytes(content)


def _write_record(out: Path, item: EvalItem, prepared: PreparedPrompt, url: str, seconds: float) -> None:
    """``item.json``: the item is done. ``seconds`` is the prompt's; an item made with others gets its share."""
    record = {"id": item.id, "task": item.task, "server": url, "seconds": round(seconds / prepared.cells, 3),
              "fingerprint": prepared.fingerprint, "target_prompt": item.target_prompt,
              "sweep": [[name, value] for name, value in item.sweep], "roles": list(prepared.roles),
              "prompt_cells": prepared.cells, "prompt_seconds": round(seconds, 3),
              "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    path = item_dir(out, item.id) / RECORD
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(record, indent=1))
    partial.replace(path)
