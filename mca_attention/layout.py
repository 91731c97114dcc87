"""Which rows of one attention call are condition, subject and target.

The MCA batch holds three latent rows in this order (the official code's order). ComfyUI stacks one
chunk of those rows per entry of ``cond_or_uncond`` (cond and uncond, or only one of them when it
runs them in separate calls or at cfg 1.0), so the UNet sees ``len(cond_or_uncond) * 3`` rows.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

CONDITION, SUBJECT, TARGET = 0, 1, 2
ROWS_PER_CHUNK = 3


@dataclass(frozen=True)
class RowLayout:
    """Row indices into the ``[chunks * 3, ...]`` attention batch, one entry per chunk."""

    condition: torch.Tensor
    subject: torch.Tensor
    target: torch.Tensor
    keep: torch.Tensor  # condition and subject rows, which keep ordinary attention


def row_layout(total_rows: int, cond_or_uncond: list[int], device: torch.device | None = None) -> RowLayout:
    """Row indices for an attention call of ``total_rows`` rows and the given chunk list."""
    chunks = len(cond_or_uncond)
    if chunks == 0 or total_rows % chunks != 0:
        raise ValueError(f"cannot split {total_rows} attention rows into {chunks} cond/uncond chunks")
    per_chunk = total_rows // chunks
    if per_chunk != ROWS_PER_CHUNK:
        raise ValueError(
            f"MCA attention expects the 3-row batch [condition, subject, target] built by the MCA Sampler, "
            f"but this sampling call has {per_chunk} latent rows. Sample the patched model with the MCA Sampler node."
        )
    base = torch.arange(chunks, device=device) * per_chunk
    keep = torch.stack([base + CONDITION, base + SUBJECT], dim=1).flatten()
    return RowLayout(condition=base + CONDITION, subject=base + SUBJECT, target=base + TARGET, keep=keep)
