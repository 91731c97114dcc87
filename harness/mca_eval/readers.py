"""Benchmark readers: the documented manifest (CSV or JSON) and the public DreamBench layout."""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

from mca_eval.items import BenchmarkError, EvalItem, check_item, safe_id

MANIFEST_NAMES = ("manifest.csv", "manifest.json")
DREAMBENCH_FILE = "prompts_and_classes.txt"
PATH_FIELDS = ("subject_image", "subject_mask", "condition_image", "edit_mask")
TEXT_FIELDS = ("subject_phrase", "condition_phrase", "condition_prompt", "subject_prompt", "target_prompt",
               "subject_words")
MANIFEST_FIELDS = ("id", *PATH_FIELDS, *TEXT_FIELDS, "seed", "references")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
LIVE_CLASSES = ("cat", "dog")  # DreamBench's live subjects get the "Live Subject Prompts"
TEMPLATE_LINE = re.compile(r"""^\s*'(?P<template>[^']*)'\.format\(\s*unique_token\s*,\s*class_token\s*\),?\s*$""")


def load_benchmark(path: Path, task: str) -> list[EvalItem]:
    """The items of a manifest file, a folder holding ``manifest.csv``/``.json``, or a DreamBench folder."""
    path = Path(path)
    if path.is_file():
        return read_manifest(path, task)
    if not path.is_dir():
        raise BenchmarkError(f"benchmark {path} does not exist")
    if (path / DREAMBENCH_FILE).is_file() or (path / "dataset" / DREAMBENCH_FILE).is_file():
        if task != "generation":
            raise BenchmarkError(f"{path} is a DreamBench folder (subject generation); use the task 'generation' "
                                 f"or give a swap/add manifest")
        return read_dreambench(path if (path / DREAMBENCH_FILE).is_file() else path / "dataset")
    for name in MANIFEST_NAMES:
        if (path / name).is_file():
            return read_manifest(path / name, task)
    raise BenchmarkError(f"{path} holds neither {' nor '.join(MANIFEST_NAMES)} nor DreamBench's {DREAMBENCH_FILE}; "
                         f"see docs/reproducing.md for the layouts")


def read_manifest(path: Path, task: str) -> list[EvalItem]:
    """Items of a manifest: CSV with a header row, or JSON (a list of objects); paths relative to it."""
    rows = _manifest_rows(path)
    items, seen = [], set()
    for number, row in enumerate(rows, start=1):
        unknown = sorted(set(row) - set(MANIFEST_FIELDS))
        if unknown:
            raise BenchmarkError(f"{path}, item {number}: unknown field(s) {', '.join(unknown)}; "
                                 f"fields are {', '.join(MANIFEST_FIELDS)}")
        item = _item_from_row(row, number, task, path.parent)
        if item.id in seen:
            raise BenchmarkError(f"{path}: item id '{item.id}' occurs twice; ids name the output folders")
        seen.add(item.id)
        items.append(check_item(item))
    if not items:
        raise BenchmarkError(f"{path} lists no items")
    return items


def _manifest_rows(path: Path) -> list[dict]:
    if path.suffix.lower() == ".json":
        try:
            rows = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise BenchmarkError(f"{path} is not valid JSON: {error}") from None
        if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
            raise BenchmarkError(f"{path} must hold a JSON list of objects, one per item")
        return rows
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8") as file:
            return [{key: value for key, value in row.items() if value not in (None, "")}
                    for row in csv.DictReader(file)]
    raise BenchmarkError(f"{path}: a manifest is a .csv or a .json file")


def _item_from_row(row: dict, number: int, task: str, base: Path) -> EvalItem:
    def file(name: str) -> Path | None:
        value = row.get(name)
        return (base / str(value)).resolve() if value else None

    references = row.get("references") or ()
    if isinstance(references, str):
        references = [part for part in references.split(";") if part.strip()]
    seed = row.get("seed")
    try:
        seed = int(seed) if seed not in (None, "") else None
    except (TypeError, ValueError):
        raise BenchmarkError(f"item {number}: seed must be a whole number, got '{seed}'") from None
    if not row.get("subject_image") or not row.get("target_prompt"):
        raise BenchmarkError(f"item {number}: subject_image and target_prompt are required")
    return EvalItem(
        id=safe_id(str(row.get("id") or f"item_{number:04d}")), task=task,
        subject_image=file("subject_image"), subject_mask=file("subject_mask"),
        condition_image=file("condition_image"), edit_mask=file("edit_mask"),
        references=tuple((base / str(ref).strip()).resolve() for ref in references), seed=seed,
        **{name: str(row.get(name, "")) for name in TEXT_FIELDS})


def read_dreambench(folder: Path) -> list[EvalItem]:
    """DreamBench (google/dreambooth ``dataset/``): a folder per subject and ``prompts_and_classes.txt``.

    One item per subject and prompt (30 x 25 = 750). The first image (sorted by name) is the subject
    image, all of the subject's images are the references; the prompt is DreamBench's template without
    the unique token ("a dog in the jungle"), which is also the condition (plain text-to-image) prompt.
    """
    classes, object_prompts, live_prompts = parse_prompts_and_classes(folder / DREAMBENCH_FILE)
    items = []
    for subject, class_name in classes:
        images = sorted(p for p in (folder / subject).glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise BenchmarkError(f"DreamBench subject '{subject}' has no images in {folder / subject}")
        templates = live_prompts if class_name in LIVE_CLASSES else object_prompts
        for index, template in enumerate(templates):
            prompt = " ".join(template.replace("{0}", "").replace("{1}", class_name).split())
            items.append(check_item(EvalItem(
                id=safe_id(f"{subject}_{index:02d}"), task="generation", subject_image=images[0],
                references=tuple(images), subject_phrase=f"the {class_name}", target_prompt=prompt,
                condition_prompt=prompt, subject_prompt=f"a photo of a {class_name}",
                subject_words=",".join(class_name.split()))))
    return items


def parse_prompts_and_classes(path: Path) -> tuple[list[tuple[str, str]], list[str], list[str]]:
    """(subject, class) pairs, object prompt templates, live-subject prompt templates."""
    classes: list[tuple[str, str]] = []
    prompts: dict[str, list[str]] = {"object": [], "live": []}
    section = None
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if stripped.lower().startswith("object prompts"):
            section = "object"
        elif stripped.lower().startswith("live subject prompts"):
            section = "live"
        elif section is None and "," in stripped and stripped != "subject_name,class":
            subject, _, class_name = stripped.partition(",")
            classes.append((subject.strip(), class_name.strip()))
        elif section is not None and (match := TEMPLATE_LINE.match(line)):
            prompts[section].append(match["template"])
    if not classes or not prompts["object"] or not prompts["live"]:
        raise BenchmarkError(f"{path} does not look like DreamBench's {DREAMBENCH_FILE} (needs the class table and "
                             f"the 'Object Prompts' and 'Live Subject Prompts' lists)")
    return classes, prompts["object"], prompts["live"]
