"""The MCA sampling loop: DDIM (eta 0, i.e. Euler in sigma) with pinned rows and local blend.

Rows are [conditions, subject, targets] (see ``layout``; one of each is the official batch). Before
every step a pinned row is overwritten with its inversion latent at that sigma, so it replays its
source image and only lends its keys and values to the targets. After every step each target outside
the blend mask is replaced by its condition's latent at the sigma the target has just reached (so the
last step leaves the background equal to the condition's clean latent).

Every model call carries the run and its step in ``transformer_options`` (see ``run``), which is how
the MCA attention knows where it is.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .layout import SINGLE, BatchShape
from .run import MCARun, with_run_step


@dataclass
class RowControl:
    """What the loop does besides plain sampling. Trajectories are ``[steps + 1, channels, h, w]``."""

    pinned: dict[int, torch.Tensor] = field(default_factory=dict)  # row -> trajectory
    target_start: torch.Tensor | None = None  # every target's start latent (the condition's start noise)
    blend_mask: torch.Tensor | None = None  # [1, 1, h, w] at latent size; 1 keeps the target
    shape: BatchShape = SINGLE


def _blend_source(control: RowControl, x: torch.Tensor, step: int) -> torch.Tensor:
    """Each target's condition latent at ``step`` (its trajectory when pinned, else its row)."""
    rows = control.shape.condition_rows
    return torch.stack([x[row] if row not in control.pinned else control.pinned[row][step].to(x) for row in rows])


@torch.no_grad()
def mca_sample_loop(model, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict | None = None,
                    callback=None, disable: bool | None = None, control: RowControl | None = None,
                    run: MCARun | None = None) -> torch.Tensor:
    """k-diffusion style sampler over the MCA batch ``x`` (``model`` returns the denoised latent).

    ``run`` names this sampling run (a fresh one when None); its step count must match ``sigmas``.
    """
    extra_args = {} if extra_args is None else extra_args
    control = RowControl() if control is None else control
    run = MCARun(total_steps=len(sigmas) - 1) if run is None else run
    if run.total_steps != len(sigmas) - 1:
        raise ValueError(f"the run was made for {run.total_steps} steps but the schedule has {len(sigmas) - 1}")
    if run.shape != control.shape or x.shape[0] != control.shape.rows:
        raise ValueError(f"the batch has {x.shape[0]} rows; the run and the row control expect {control.shape.rows}")
    run.latent_size = (int(x.shape[-2]), int(x.shape[-1]))
    targets = control.shape.target_rows
    x = x.clone()
    if control.target_start is not None:
        x[targets] = control.target_start.to(x)
    ones = x.new_ones([x.shape[0]])
    steps = len(sigmas) - 1
    blend = None if control.blend_mask is None else control.blend_mask[0].to(x)
    for i in range(steps):
        for row, trajectory in control.pinned.items():
            x[row] = trajectory[i].to(x)
        sigma = sigmas[i]
        denoised = model(x, sigma * ones, **with_run_step(extra_args, run, i))
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised})
        x = x + (x - denoised) / sigma * (sigmas[i + 1] - sigma)
        if blend is not None:
            x[targets] = blend * x[targets] + (1 - blend) * _blend_source(control, x, i + 1)
    for row, trajectory in control.pinned.items():
        x[row] = trajectory[steps].to(x)
    return x
