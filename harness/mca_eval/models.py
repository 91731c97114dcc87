"""Metric models, loaded only from local folders (Hugging Face file layouts); nothing is downloaded.

- DINO ViT-S/16 (``facebook/dino-vits16``): ``config.json`` + ``model.safetensors`` or ``pytorch_model.bin``;
  the embedding is the last layer's CLS token.
- CLIP ViT-B/32 or L/14 (``openai/clip-vit-base-patch32`` / ``-large-patch14``): the same two files plus
  the tokenizer (``vocab.json`` + ``merges.txt``, or ``tokenizer.json``); the embeddings are CLIP's
  projected image and text features.
- ImageReward (optional): the ``ImageReward`` package and ``ImageReward.pt`` + ``med_config.json``.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                "pytorch_model.bin.index.json")
TOKENIZER_FILE_SETS = (("vocab.json", "merges.txt"), ("tokenizer.json",))
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
IMAGE_REWARD_FILES = ("ImageReward.pt", "med_config.json")


class ModelFolderError(FileNotFoundError):
    """A metric model folder is missing files; the message names the folder, the files and the source."""


def require_folder(folder: Path, what: str, source: str, tokenizer: bool = False) -> Path:
    """``folder`` if it holds config.json, weights (and a tokenizer), else a ModelFolderError saying what to put."""
    folder = Path(folder)
    missing = [] if (folder / "config.json").is_file() else ["config.json"]
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        missing.append("model.safetensors (or pytorch_model.bin)")
    if tokenizer and not any(all((folder / n).is_file() for n in names) for names in TOKENIZER_FILE_SETS):
        missing.append("vocab.json + merges.txt (or tokenizer.json)")
    if missing:
        where = "does not exist" if not folder.is_dir() else f"lacks {', '.join(missing)}"
        raise ModelFolderError(
            f"{what} model folder {folder} {where}. Put the files of the Hugging Face repository {source} there "
            f"(config.json, model.safetensors or pytorch_model.bin{', vocab.json, merges.txt' if tokenizer else ''}) "
            f"or pass the folder that has them ({'--dino' if what == 'DINO' else '--clip'}). Nothing is downloaded.")
    return folder


def preprocess(images: list, size: int, resize: int, mean: tuple, std: tuple):
    """PIL images -> normalised ``[N, 3, size, size]``: shorter side to ``resize`` (bicubic), centre crop."""
    import numpy as np
    import torch
    from PIL import Image

    batch = []
    for image in images:
        image = image.convert("RGB")
        scale = resize / min(image.size)
        width, height = max(size, round(image.width * scale)), max(size, round(image.height * scale))
        image = image.resize((width, height), Image.BICUBIC)
        left, top = (width - size) // 2, (height - size) // 2
        pixels = np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.float32) / 255.0
        batch.append(torch.from_numpy(pixels).permute(2, 0, 1))
    tensor = torch.stack(batch)
    return (tensor - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


def _features(output):
    """Transformers 4.x returns the projected features as a tensor; later versions may wrap them."""
    import torch

    if isinstance(output, torch.Tensor):
        return output
    for name in ("image_embeds", "text_embeds", "pooler_output"):
        if getattr(output, name, None) is not None:
            return getattr(output, name)
    raise TypeError(f"unexpected CLIP output {type(output).__name__}")


@dataclass(frozen=True)
class DinoEmbedder:
    """DINO ViT: unit-length CLS embeddings of images."""

    model: object
    size: int
    device: str

    def images(self, images: list):
        import torch

        pixels = preprocess(images, self.size, round(self.size * 256 / 224), IMAGENET_MEAN, IMAGENET_STD)
        with torch.no_grad():
            cls = self.model(pixel_values=pixels.to(self.device)).last_hidden_state[:, 0]
        return torch.nn.functional.normalize(cls.float(), dim=-1).cpu()


@dataclass(frozen=True)
class ClipEmbedder:
    """CLIP: unit-length projected image and text embeddings."""

    model: object
    tokenizer: object
    size: int
    device: str

    def images(self, images: list):
        import torch

        pixels = preprocess(images, self.size, self.size, CLIP_MEAN, CLIP_STD)
        with torch.no_grad():
            features = _features(self.model.get_image_features(pixel_values=pixels.to(self.device)))
        return torch.nn.functional.normalize(features.float(), dim=-1).cpu()

    def texts(self, texts: list[str]):
        import torch

        tokens = self.tokenizer(texts, padding=True, truncation=True, max_length=77, return_tensors="pt")
        with torch.no_grad():
            features = _features(self.model.get_text_features(**{k: v.to(self.device) for k, v in tokens.items()}))
        return torch.nn.functional.normalize(features.float(), dim=-1).cpu()


@dataclass(frozen=True)
class ImageRewardScorer:
    """ImageReward's score of (prompt, image)."""

    model: object

    def score(self, prompt: str, image) -> float:
        import torch

        with torch.no_grad():
            return float(self.model.score(prompt, image))


@dataclass(frozen=True)
class MetricModels:
    """The loaded models; ``image_reward`` is None with ``image_reward_reason`` saying why."""

    dino: DinoEmbedder
    clip: ClipEmbedder
    image_reward: ImageRewardScorer | None
    image_reward_reason: str = ""


def load_dino(folder: Path, device: str) -> DinoEmbedder:
    """DINO ViT-S/16 from ``folder`` (transformers ViTModel, local files only)."""
    from transformers import ViTModel

    folder = require_folder(folder, "DINO", "facebook/dino-vits16")
    model = ViTModel.from_pretrained(str(folder), local_files_only=True, add_pooling_layer=False)
    return DinoEmbedder(model=model.to(device).eval(), size=int(model.config.image_size), device=device)


def load_clip(folder: Path, device: str) -> ClipEmbedder:
    """CLIP from ``folder`` (transformers CLIPModel and its tokenizer, local files only)."""
    from transformers import CLIPModel, CLIPTokenizer, CLIPTokenizerFast

    folder = require_folder(folder, "CLIP", "openai/clip-vit-base-patch32 (or openai/clip-vit-large-patch14)",
                            tokenizer=True)
    model = CLIPModel.from_pretrained(str(folder), local_files_only=True)
    tokenizer_class = CLIPTokenizerFast if (folder / "tokenizer.json").is_file() else CLIPTokenizer
    tokenizer = tokenizer_class.from_pretrained(str(folder), local_files_only=True)
    return ClipEmbedder(model=model.to(device).eval(), tokenizer=tokenizer,
                        size=int(model.config.vision_config.image_size), device=device)


def load_image_reward(folder: Path | None, device: str) -> tuple[ImageRewardScorer | None, str]:
    """(scorer, "") when the ImageReward package and its weights are present, else (None, the reason)."""
    if importlib.util.find_spec("ImageReward") is None:
        return None, "the ImageReward package is not installed (pip install image-reward)"
    if folder is None:
        return None, "no ImageReward folder given (--image-reward)"
    missing = [name for name in IMAGE_REWARD_FILES if not (Path(folder) / name).is_file()]
    if missing:
        return None, f"{folder} lacks {', '.join(missing)} (from the Hugging Face repository THUDM/ImageReward)"
    try:
        import torch
        from ImageReward.ImageReward import ImageReward

        model = ImageReward(med_config=str(Path(folder) / "med_config.json"), device=device)
        state = torch.load(Path(folder) / "ImageReward.pt", map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=False)
        return ImageRewardScorer(model=model.to(device).eval()), ""
    except Exception as error:  # a broken optional metric must leave the others running
        return None, f"ImageReward did not load from {folder}: {type(error).__name__}: {error}"


def load_metric_models(dino: Path, clip: Path, image_reward: Path | None, device: str = "cpu") -> MetricModels:
    """All metric models; DINO and CLIP are required, ImageReward is optional."""
    scorer, reason = load_image_reward(image_reward, device)
    return MetricModels(dino=load_dino(dino, device), clip=load_clip(clip, device), image_reward=scorer,
                        image_reward_reason=reason)
