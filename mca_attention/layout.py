"""Which rows of one attention call are conditions, subject and targets.

One cond/uncond chunk of the MCA batch holds ``[condition_1 .. condition_M, subject, target_1 .. target_N]``
(:class:`BatchShape`); with one condition and one target that is the official ``[condition, subject,
target]``. Every target has its own condition row (``target_condition``): swap/add share the one inverted
condition image; generation gives each seed its own condition row, shared by the targets of that seed.
ComfyUI stacks one chunk per entry of ``cond_or_uncond`` (cond and uncond, or only one of them when it
runs them in separate calls or at cfg 1.0), so the model sees ``len(cond_or_uncond) * rows`` rows.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

CONDITION, SUBJECT, TARGET = 0, 1, 2  # the rows of the one-target batch


@dataclass(frozen=True)
class BatchShape:
    """The rows of one chunk: ``conditions`` condition rows, the subject, then one row per target."""

    conditions: int = 1
    target_condition: tuple[int, ...] = (0,)  # per target: the index of its condition row

    def __post_init__(self) -> None:
        if not self.target_condition:
            raise ValueError("an MCA batch needs at least one target row")
        if self.conditions < 1 or any(not 0 <= c < self.conditions for c in self.target_condition):
            raise ValueError(f"target_condition {self.target_condition} must index {self.conditions} condition rows")

    @property
    def targets(self) -> int:
        return len(self.target_condition)

    @property
    def subject(self) -> int:
        return self.conditions

    @property
    def rows(self) -> int:
        return self.conditions + 1 + self.targets

    def target_row(self, target: int) -> int:
        return self.conditions + 1 + target

    @property
    def target_rows(self) -> list[int]:
        return [self.target_row(j) for j in range(self.targets)]

    @property
    def condition_rows(self) -> list[int]:
        """Each target's condition row (``target_condition`` as row indices)."""
        return list(self.target_condition)


SINGLE = BatchShape()


@dataclass(frozen=True)
class RowLayout:
    """Row indices into the ``[chunks * rows, ...]`` attention batch.

    ``condition``, ``subject`` and ``target`` hold one entry per (chunk, target), chunk-major: the
    target row and the condition and subject rows it reads. ``keep`` holds the rows that keep ordinary
    attention (every condition and subject row).
    """

    condition: torch.Tensor
    subject: torch.Tensor
    target: torch.Tensor
    keep: torch.Tensor


def _per_chunk(base: torch.Tensor, rows: list[int]) -> torch.Tensor:
    return (base[:, None] + torch.tensor(rows, device=base.device)[None, :]).flatten()


def row_layout(total_rows: int, cond_or_uncond: list[int], device: torch.device | None = None,
               shape: BatchShape = SINGLE, targets: tuple[int, ...] | None = None) -> RowLayout:
    """Row indices for an attention call of ``total_rows`` rows, the given chunk list and batch shape.

    ``targets`` restricts the layout to those targets (all when None): the rows one operation rebuilds.
    """
    chunks = len(cond_or_uncond)
    if chunks == 0 or total_rows % chunks != 0:
        raise ValueError(f"cannot split {total_rows} attention rows into {chunks} cond/uncond chunks")
    per_chunk = total_rows // chunks
    if per_chunk != shape.rows:
        raise ValueError(
            f"MCA attention expects the {shape.rows}-row batch (conditions, subject, targets) built by the MCA "
            f"Sampler, but this sampling call has {per_chunk} latent rows. Sample the patched model with the MCA "
            f"Sampler node."
        )
    chosen = range(shape.targets) if targets is None else targets
    base = torch.arange(chunks, device=device) * per_chunk
    return RowLayout(condition=_per_chunk(base, [shape.target_condition[j] for j in chosen]),
                     subject=_per_chunk(base, [shape.subject for _ in chosen]),
                     target=_per_chunk(base, [shape.target_row(j) for j in chosen]),
                     keep=_per_chunk(base, list(range(shape.conditions + 1))))
