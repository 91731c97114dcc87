"""The adapter interface: what the shared core needs to know about one model architecture.

An adapter finds the model's self-attention sites (in call order), says where the image tokens are in
each attention call, gives the family's presets, and installs its hook on a cloned ModelPatcher,
chaining whatever another pack installed there before. The maths (``attention.target_attention``),
the schedule and the per-run state (``state.MCAState``) are shared by every adapter.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from ..schedule import MCASchedule
from ..tasks import TaskPreset


@dataclass(frozen=True)
class Site:
    """One self-attention site: how the adapter's hook names it, and its index in call order."""

    key: tuple
    index: int


class ModelAdapter(ABC):
    """One architecture (UNet, Flux-style MMDiT, ...) as the core sees it, for one loaded model."""

    #: the conditioning key of the text encoder whose tokens the model attends to (None: the first key)
    text_encoder_key: str | None = None
    #: whether prompts of different token lengths are repeated to a common length (CLIP's 77-token chunks)
    repeats_short_prompts: bool = False
    #: whether keys carry positions (RoPE), so that the subject's can be moved onto the edit region
    has_positions: bool = False

    def __init__(self, model, family: str):
        self.model = model
        self.family = family
        self.sites = self.find_sites()

    @abstractmethod
    def find_sites(self) -> list[Site]:
        """Every self-attention site in the order the model calls them."""

    @property
    def latent_channels(self) -> int:
        return int(getattr(self.model.model.latent_format, "latent_channels", 4))

    @property
    def min_latent_side(self) -> int:
        return self.min_side(self.model.get_model_object("diffusion_model"))

    @staticmethod
    @abstractmethod
    def matches(diffusion_model) -> bool:
        """Whether this adapter knows the architecture of ``diffusion_model``."""

    @staticmethod
    @abstractmethod
    def min_side(diffusion_model) -> int:
        """The smallest latent side the architecture can take with at least one token at every site."""

    @abstractmethod
    def preset_first_site(self) -> int:
        """Layer_LQ for swap/add on this family when the user leaves it to the preset."""

    def preset_schedule(self, preset: TaskPreset) -> MCASchedule:
        """The task's schedule as this family runs it (the official one unless a family says otherwise)."""
        return preset.schedule

    @abstractmethod
    def install(self, patched, state) -> None:
        """Put the MCA hook on every site of ``patched`` (a clone), chaining what was there before."""

    @abstractmethod
    def text_width(self) -> int:
        """The width of the text tokens the model reads (its text encoder's output)."""

    @abstractmethod
    def pooled_width(self) -> int | None:
        """The width of the pooled text vector the model needs, 0 when it needs one of unknown width, None if none."""



def tell_the_ui(message: str) -> None:
    """Show ``message`` on the node that is executing, as ComfyUI's progress text (0.3.75 and newer)."""
    from comfy_execution.utils import get_executing_context
    from server import PromptServer

    context = get_executing_context()
    server = getattr(PromptServer, "instance", None)
    if context is not None and hasattr(server, "send_progress_text"):
        server.send_progress_text(message, context.node_id)

