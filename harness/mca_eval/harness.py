"""The generation run: items spread over the ComfyUI servers, resume, per-item error log, progress bar.

Each ``--url`` gets one worker that takes the next item when its server is free, so every server keeps
its own model cache and a faster GPU simply takes more items. An item is done when its folder holds
``item.json`` (written after all its images); such items are skipped on the next run. A server that
stops answering hands its item back to the others. Before the first item, image files that do not open fail
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
from mca_eval.sweep import Axis, check_values
from mca_eval.workflow import CAPTURE_PREFIX, PreparedPrompt, prepare

RECORD = "item.json"
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


def plan(items: list[EvalItem], settings: GenerationSettings, out: Path) -> tuple[list, list[str]]:
    """(items to run with their prompts, ids already done). Done items made with other settings are an error."""
    todo, done, changed = [], [], []
    for item in items:
        prepared = prepare(settings.template, item, settings.overrides, settings.steps, settings.seed, settings.prefix)
        record = read_record(out, item.id)
        if record is None:
            todo.append((item, prepared))
        elif record.get("fingerprint") == prepared.fingerprint:
            done.append(item.id)
        else:
            changed.append(item.id)
    if changed:
        raise HarnessError(f"{out} holds results of {len(changed)} item(s) made with other settings (workflow, --set, "
                           f"--steps, --seed, sweep or input files differ), e.g. {', '.join(changed[:3])}. Use a new "
                           f"--out folder, or delete those items' folders under {Path(out) / 'items'} to redo them.")
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
        summary.cleanup = [line for files in made.values() if (line := clean_up(files))]
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


def _drop_unreadable(todo: list, errors: ErrorLog, summary: GenerationSummary) -> list:
    """``todo`` without the items whose image files do not open; those are logged as failed."""
    kept, verdicts = [], {}
    for item, prepared in todo:
        problem = unreadable_image(item, verdicts)
        if problem is None:
            kept.append((item, prepared))
        else:
            summary.failed.append(item.id)
            print(f"{item.id} failed: {errors.add(item.id, 'generate', '-', problem)}")
    return kept


async def _check_sweep_values(session, url: str, settings: GenerationSettings) -> None:
    """SweepError unless every sweep value suits its widget as ``url``'s /object_info describes it."""
    nodes_titled = comfy_api.run_workflow_module().nodes_titled
    for axis in settings.sweep:
        for class_type in sorted({node["class_type"] for node in nodes_titled(settings.template, axis.title)}):
            check_values(axis, class_type, await comfy_api.input_spec(session, url, class_type, axis.input))


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
        with tqdm(total=len(todo), desc=f"generating on {len(live)} server(s)", unit="item",
                  disable=not progress) as bar:
            await asyncio.gather(*(_worker(session, url, queue, settings, out, errors, summary, bar, made[url])
                                   for url in live))
    for item, _ in queue:
        summary.not_run.append(item.id)
        errors.add(item.id, "generate", "-", "not run: no server was left answering")


async def _worker(session, url: str, queue: deque, settings: GenerationSettings, out: Path, errors: ErrorLog,
                  summary: GenerationSummary, bar, made: ServerFiles) -> None:
    down = comfy_api.server_down_errors()
    while queue:
        item, prepared = queue.popleft()
        started = time.perf_counter()
        try:
            # upload names are content hashes: a file goes to each server once
            uploads = tuple(upload for upload in prepared.uploads if ("input", upload[0]) not in made.files)
            await comfy_api.upload(url, uploads)
            for name, path in uploads:
                made.add("input", name, Path(path).read_bytes())
            images = await comfy_api.run_prompt(
                url, prepared.prompt, settings.timeout,
                log=lambda message, url=url: bar.set_postfix_str(f"{url.split('//')[-1]} {message.strip()}"))
            await _save_outputs(session, url, images, prepared, item_dir(out, item.id), made)
        except down as error:
            queue.appendleft((item, prepared))
            message = errors.add(item.id, "generate", url, f"server stopped answering ({error}); it takes no more "
                                                            f"items, the others go on")
            bar.write(f"{item.id}: {message}")
            return
        except Exception as error:  # one item's failure must not stop the run: it is logged and skipped
            summary.failed.append(item.id)
            bar.write(f"{item.id} failed on {url}: {errors.add(item.id, 'generate', url, error)}")
        else:
            _write_record(out, item, prepared, url, time.perf_counter() - started)
            summary.ran.append(item.id)
        bar.update(1)


async def _save_outputs(session, url: str, images: list[dict], prepared: PreparedPrompt, folder: Path,
                        made: ServerFiles) -> None:
    """Writes ``<role>.png`` for each image of the captured batch (batch order = ``prepared.roles``); records the
    server's copies in ``made``."""
    batch = [image for image in images if image.get("subfolder", "").replace("\\", "/") == prepared.subfolder
             and OUTPUT_NAME.match(image.get("filename", ""))]
    if len(batch) != len(prepared.roles):
        raise comfy_api.run_workflow_module().WorkflowError(
            f"ComfyUI returned {len(batch)} image(s) for this item, expected {len(prepared.roles)} "
            f"({', '.join(prepared.roles)}); is the result a batch of one image?")
    folder.mkdir(parents=True, exist_ok=True)
    for role, image in zip(prepared.roles, batch):
        content = await comfy_api.fetch_image(session, url, image)
        (folder / f"{role}.png").write_bytes(content)
        if image.get("type", "output") == "output":
            made.add("output", f"{image['subfolder']}/{image['filename']}", content)


def _write_record(out: Path, item: EvalItem, prepared: PreparedPrompt, url: str, seconds: float) -> None:
    record = {"id": item.id, "task": item.task, "server": url, "seconds": round(seconds, 3),
              "fingerprint": prepared.fingerprint, "target_prompt": item.target_prompt,
              "sweep": [[name, value] for name, value in item.sweep], "roles": list(prepared.roles),
              "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    path = item_dir(out, item.id) / RECORD
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(record, indent=1))
    partial.replace(path)
