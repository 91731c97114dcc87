"""The inversion trajectory that travels along a LATENT wire, and its checks against a schedule.

``latent["mca_trajectory"] = {"latents": [steps + 1, batch, channels, h, w], "sigmas": [steps + 1],
"source": {"family", "latent_format", "sampling", "settings"}}``, in *sampling* order: ``latents[i]`` is the latent at
``sigmas[i]`` (noisiest first, clean last), in the model's internal latent space (SD1.5: VAE latent x
0.18215), which is where samplers work. ``source`` names the model that made it, so that a trajectory
from another latent space (an SDXL inversion on an SD1.5 sampler, say) is refused rather than sampled.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

TRAJECTORY_KEY = "mca_trajectory"


@dataclass(frozen=True)
class Trajectory:
    latents: torch.Tensor
    sigmas: torch.Tensor
    source: dict | None = None  # ``adapters.model_source`` of the model that inverted it

    @property
    def steps(self) -> int:
        return self.sigmas.numel() - 1

    def row(self, index: int = 0) -> torch.Tensor:
        """``[steps + 1, channels, h, w]`` for one batch item."""
        return self.latents[:, index]

    def to_dict(self) -> dict:
        return {"latents": self.latents, "sigmas": self.sigmas, "source": self.source}


def from_inversion(states: list[torch.Tensor], ascending_sigmas: torch.Tensor, source: dict | None = None) -> Trajectory:
    """Turn an inversion walk (clean first) into a trajectory in sampling order."""
    return Trajectory(latents=torch.stack(states[::-1]).cpu(), sigmas=ascending_sigmas.flip(0).cpu(), source=source)


def read_trajectory(latent: dict) -> Trajectory | None:
    """The trajectory a LATENT carries, or None."""
    data = latent.get(TRAJECTORY_KEY)
    if data is None:
        return None
    return Trajectory(latents=data["latents"], sigmas=data["sigmas"], source=data.get("source"))


def check_same_source(trajectory: Trajectory, source: dict, name: str) -> None:
    """Refuse a trajectory that another kind of model inverted (another latent space or sampling type)."""
    made = trajectory.source
    if made is None or made == source:
        return
    if {**made, "settings": None} == {**source, "settings": None}:
        raise ValueError(
            f"{name} was inverted with the model's noise settings at {made['settings']}, but the MCA Sampler's model "
            f"has {source['settings']} (a ModelSampling node on one path only): the rows would be denoised on "
            f"another noise scale than they were inverted on. Put the same ModelSampling node before both MCA DDIM "
            f"Invert and MCA Attention Patch, or before neither.")
    raise ValueError(
        f"{name} was inverted by a {made['family']} model ({made['latent_format']} latents, {made['sampling']} "
        f"sampling) but the MCA Sampler's model is {source['family']} ({source['latent_format']} latents, "
        f"{source['sampling']} sampling): connect MCA DDIM Invert's model input to the same loader as MCA "
        f"Attention Patch's.")


def check_matches_schedule(trajectory: Trajectory, sigmas: torch.Tensor, name: str, other: str) -> None:
    """Refuse a trajectory recorded on another schedule than ``other``'s (other steps, scheduler or model)."""
    sigmas = sigmas.detach().cpu().float()
    if trajectory.steps != sigmas.numel() - 1:
        raise ValueError(
            f"{name} was inverted with {trajectory.steps} steps but {other} has {sigmas.numel() - 1}: give every "
            f"MCA DDIM Invert the same steps (and scheduler or SIGMAS)."
        )
    if not torch.allclose(trajectory.sigmas.float(), sigmas, rtol=1e-4, atol=1e-6):
        raise ValueError(
            f"{name} was inverted on another noise schedule than {other}: give every MCA DDIM Invert the same "
            f"scheduler (or the same SIGMAS input) and the same model."
        )
