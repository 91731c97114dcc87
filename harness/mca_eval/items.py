"""One benchmark item: the inputs of one workflow run, independent of where they were read from."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

TASKS = ("swap", "add", "generation")


class BenchmarkError(ValueError):
    """The benchmark folder or manifest is not usable; the message says what to change."""


@dataclass(frozen=True)
class EvalItem:
    """Inputs of one run. Empty strings / ``None`` leave the workflow's own value in place.

    ``subject_mask`` / ``edit_mask`` (image files, white = 1) replace the SLM detection of
    ``subject_phrase`` / ``condition_phrase``. ``references`` are the real images of the subject that
    generation metrics compare against (DreamBench: every image of the subject's folder).
    """

    id: str
    task: str
    subject_image: Path
    target_prompt: str
    subject_phrase: str = ""
    subject_mask: Path | None = None
    condition_image: Path | None = None
    condition_phrase: str = ""
    edit_mask: Path | None = None
    condition_prompt: str = ""
    subject_prompt: str = ""
    subject_words: str = ""
    seed: int | None = None
    references: tuple[Path, ...] = ()
    sweep: tuple[tuple[str, object], ...] = field(default=())
    group: str = ""

    @property
    def base_id(self) -> str:
        """The benchmark item's id (a sweep cell's item keeps its item's id here)."""
        return self.group or self.id

    @property
    def reference_images(self) -> tuple[Path, ...]:
        """Images the generation metrics compare the result with (the subject image when none are listed)."""
        return self.references or (self.subject_image,)


def safe_id(text: str) -> str:
    """``text`` as a file-name-safe item id (letters, digits, ``-``, ``_``, ``.`` and ``=``)."""
    cleaned = re.sub(r"[^A-Za-z0-9_.=-]+", "_", text.strip()).strip("_.")
    if not cleaned:
        raise BenchmarkError(f"item id '{text}' has no usable characters; use letters, digits, '-' or '_'")
    return cleaned


def check_item(item: EvalItem) -> EvalItem:
    """``item`` if its files exist and its task has what it needs, else a BenchmarkError naming the gap."""
    if item.task not in TASKS:
        raise BenchmarkError(f"item {item.id}: task must be one of {', '.join(TASKS)}, got '{item.task}'")
    files = [("subject_image", item.subject_image), ("subject_mask", item.subject_mask),
             ("condition_image", item.condition_image), ("edit_mask", item.edit_mask),
             *(("references", path) for path in item.references)]
    for name, path in files:
        if path is not None and not Path(path).is_file():
            raise BenchmarkError(f"item {item.id}: {name} file {path} does not exist")
    if item.task in ("swap", "add") and item.condition_image is None:
        raise BenchmarkError(f"item {item.id}: a {item.task} item needs condition_image")
    if item.task == "add" and item.edit_mask is None:
        raise BenchmarkError(f"item {item.id}: an add item needs edit_mask (an image, white where the subject goes)")
    if item.task == "generation" and (item.condition_image or item.edit_mask):
        raise BenchmarkError(f"item {item.id}: generation items take no condition_image or edit_mask")
    if not item.target_prompt.strip():
        raise BenchmarkError(f"item {item.id}: target_prompt is empty")
    return item
