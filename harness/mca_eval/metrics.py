"""The paper's metrics for one item, from its saved images (all cosines are raw, in -1..1).

Swap / add (DreamEditBench protocol): DINO and CLIP-I between the subject region of the result (under
the edit mask) and of the subject image (under the subject mask) -> ``_sub``; between the result and
the condition image outside the edit mask -> ``_back`` (regions: see ``regions``). Generation
(DreamBench protocol): DINO and CLIP-I between the whole result and each reference image of the
subject, averaged. Every task: CLIP-T between the result and the target prompt; ImageReward if loaded.
"""
from __future__ import annotations

from pathlib import Path

from mca_eval.models import MetricModels
from mca_eval.regions import background_region, load_mask, load_rgb, subject_region, to_image

EDIT_METRICS = ("dino_sub", "dino_back", "clip_i_sub", "clip_i_back", "clip_t", "image_reward")
GENERATION_METRICS = ("dino", "clip_i", "clip_t", "image_reward")


def metric_names(task: str) -> tuple[str, ...]:
    """The metric columns of a task."""
    return GENERATION_METRICS if task == "generation" else EDIT_METRICS


def cosine(a, b) -> float:
    """Cosine of two embeddings (any shape, flattened)."""
    import torch

    a, b = a.flatten().double(), b.flatten().double()
    return float(torch.dot(a, b) / (a.norm() * b.norm()).clamp_min(1e-12))


def edit_metrics(models: MetricModels, result, subject, condition, subject_mask, edit_mask,
                 prompt: str) -> dict[str, float | None]:
    """Swap/add metrics from float RGB arrays and bool masks (all of the result's size)."""
    regions = [subject_region(result, edit_mask, "edit mask (subject region of the result)"),
               subject_region(subject, subject_mask, "subject mask"),
               background_region(result, edit_mask, "edit mask"),
               background_region(condition, edit_mask, "edit mask")]
    whole = to_image(result)
    dino = models.dino.images(regions)
    clip = models.clip.images([*regions, whole])
    return {"dino_sub": cosine(dino[0], dino[1]), "dino_back": cosine(dino[2], dino[3]),
            "clip_i_sub": cosine(clip[0], clip[1]), "clip_i_back": cosine(clip[2], clip[3]),
            "clip_t": cosine(clip[4], models.clip.texts([prompt])[0]),
            "image_reward": _image_reward(models, prompt, whole)}


def generation_metrics(models: MetricModels, result, references: list, prompt: str) -> dict[str, float | None]:
    """Generation metrics: the result against each reference image (PIL), averaged; CLIP-T; ImageReward."""
    whole = to_image(result)
    dino = models.dino.images([whole, *references])
    clip = models.clip.images([whole, *references])
    count = len(references)
    return {"dino": sum(cosine(dino[0], dino[i]) for i in range(1, count + 1)) / count,
            "clip_i": sum(cosine(clip[0], clip[i]) for i in range(1, count + 1)) / count,
            "clip_t": cosine(clip[0], models.clip.texts([prompt])[0]),
            "image_reward": _image_reward(models, prompt, whole)}


def item_metrics(models: MetricModels, task: str, folder: Path, prompt: str,
                 references: tuple[Path, ...]) -> dict[str, float | None]:
    """Metrics of one item from the images the harness saved in ``folder``."""
    from PIL import Image

    result = load_rgb(folder / "result.png")
    if task == "generation":
        refs = []
        for path in references:
            with Image.open(path) as image:
                refs.append(image.convert("RGB"))
        return generation_metrics(models, result, refs, prompt)
    return edit_metrics(models, result, load_rgb(folder / "subject.png"), load_rgb(folder / "condition.png"),
                        load_mask(folder / "subject_mask.png"), load_mask(folder / "edit_mask.png"), prompt)


def _image_reward(models: MetricModels, prompt: str, image) -> float | None:
    return models.image_reward.score(prompt, image) if models.image_reward is not None else None
