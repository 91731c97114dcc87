"""The adapter interface: what the shared core needs to know about one model architecture.

A family is data first: each adapter class declares the ComfyUI model configs it serves (with the names
users know), its latent layout, its text facts and where its presets come from; the registry, the refusal
message, the nodes' tooltips and the README's family table are made from (or held equal to) these
declarations. For one loaded model an adapter then finds the self-attention sites (in call order), gives the
family's preset schedule and installs its hook (a :class:`~.hook.SiteHook`) on a cloned ModelPatcher,
chaining whatever another pack installed there before. The maths (``attention.target_attention``), the
schedule and the per-run state are shared by every adapter.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, replace

from ..schedule import MCASchedule
from ..tasks import TaskPreset
from ..text import TextFacts


@dataclass(frozen=True)
class Site:
    """One self-attention site: how the adapter's hook names it, and its index in call order."""

    key: tuple
    index: int


@dataclass(frozen=True)
class LatentLayout:
    """The latent a family samples: ``[batch, channels, h, w]`` (``dims`` 4) or ``[batch, channels, 1, h, w]`` (5)."""

    channels: int
    dims: int = 4
    factor: int = 8  # image pixels per latent cell
    patch: int = 1  # latent cells per image-token side (a DiT's patchify)


class ModelAdapter(ABC):
    """One architecture as the core sees it, for one loaded model."""

    #: the architecture, in messages and "supported: ..." lists
    KIND: str = ""
    #: ComfyUI model config class name -> the family name users know, for every family the adapter serves
    FAMILIES: dict[str, str] = {}
    #: the self-attention sites of each family, for tooltips and the README (the model itself is counted at run time)
    SITES: dict[str, str] = {}
    LATENT: LatentLayout = LatentLayout(4)
    TEXT: TextFacts = TextFacts()
    #: whether keys carry positions (RoPE), so that the subject's can be moved onto the edit region
    HAS_POSITIONS: bool = False
    #: where the swap/add preset comes from (README)
    PRESET_SOURCE: str = ""

    def __init__(self, model, family: str):
        self.model = model
        self.family = family
        self.sites = self.find_sites()
        channels = latent_channels(model)
        if channels != self.LATENT.channels:
            raise ValueError(f"MCA-Ctrl's {self.KIND} path needs a {self.LATENT.channels}-channel latent; this "
                             f"{family} model has {channels}.")

    @property
    def min_latent_side(self) -> int:
        return self.min_side(self.model.get_model_object("diffusion_model"))

    @classmethod
    def serves(cls, config_name: str) -> bool:
        """Whether this adapter runs a model of the ComfyUI config ``config_name`` it ``matches``."""
        return config_name in cls.FAMILIES

    @staticmethod
    @abstractmethod
    def matches(diffusion_model) -> bool:
        """Whether this adapter knows the architecture of ``diffusion_model``."""

    @staticmethod
    @abstractmethod
    def min_side(diffusion_model) -> int:
        """The smallest latent side the architecture can take with at least one token at every site."""

    @abstractmethod
    def find_sites(self) -> list[Site]:
        """Every self-attention site in the order the model calls them."""

    @abstractmethod
    def preset_salq_first_site(self) -> int:
        """Layer_LQ for swap/add on this family when the user leaves it to the preset."""

    def preset_schedule(self, preset: TaskPreset) -> MCASchedule:
        """The task's schedule as this family runs it, Layer_LQ made concrete (the family's site unless the task
        fixes one)."""
        first = preset.schedule.salq_first_site
        return replace(preset.schedule, salq_first_site=self.preset_salq_first_site() if first is None else first)

    @abstractmethod
    def install(self, patched, state) -> None:
        """Put the MCA hook on every site of ``patched`` (a clone), chaining what was there before."""

    @staticmethod
    @abstractmethod
    def hooks(transformer_options: dict) -> dict[str, object]:
        """What sits now where ``install`` puts MCA's hooks, by where it sits (a node after the patch may have put
        something else there)."""

    @abstractmethod
    def text_width(self) -> int:
        """The width of the text tokens the model reads (its text encoder's output)."""

    def guidance_distilled(self) -> bool:
        """Whether the model was distilled to sample at cfg 1 (its guidance, if any, rides on the prompts)."""
        return False

    @abstractmethod
    def pooled_width(self) -> int | None:
        """The width of the pooled text vector the model needs, 0 when it needs one of unknown width, None if none."""


def latent_channels(model) -> int:
    """The channels of the model's latent space (ComfyUI's latent format: 4 on SD/SDXL, 16 on Flux)."""
    return int(getattr(model.model.latent_format, "latent_channels", 4))


def tell_the_ui(message: str) -> None:
    """Show ``message`` on the node that is executing, as ComfyUI's progress text (0.3.75 and newer)."""
    from comfy_execution.utils import get_executing_context
    from server import PromptServer

    context = get_executing_context()
    server = getattr(PromptServer, "instance", None)
    if context is not None and hasattr(server, "send_progress_text"):
        server.send_progress_text(message, context.node_id)
