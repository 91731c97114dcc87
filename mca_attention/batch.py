"""Many targets in one MCA batch: each target's schedule, prompt and seed, and the passes they run in.

A user asks for several targets with several schedule cells (a sweep), several target prompts and, in
generation, several seeds (the condition latent's batch). Each count is 1 or the same N; target ``j``
takes the ``j``-th of each list that has N entries and the only entry of the others, and in
generation the seed ``seed + j`` (so target ``j`` equals the run of that one cell with seed ``seed + j``).

The targets run in passes (all in one when memory allows): every pass holds the shared rows (the
subject; the condition, or in generation one condition row per seed of its targets) and its targets.
"""
from __future__ import annotations

from dataclasses import dataclass

from .layout import BatchShape


@dataclass(frozen=True)
class TargetCell:
    """One target: the index of its schedule (``MCAState.schedules``) and prompt, its seed, its grid label."""

    schedule: int
    prompt: int
    seed: int
    label: str


def target_cells(seed: int, schedule_labels: list[str], prompt_labels: list[str], seeds: int,
                 seeded: bool) -> list[TargetCell]:
    """The targets asked for; ``seeded``: the seed draws the noise (generation), so each target names it."""
    counts = {("schedule cell", "schedule cells", "(MCA Schedule Sweep)"): len(schedule_labels),
              ("target prompt", "target prompts", "(MCA Target Prompts)"): len(prompt_labels),
              ("seed", "seeds", "(the condition latent's batch size)"): seeds}
    if min(counts.values()) < 1:
        empty = ", ".join(f"{plural} {where}" for (_, plural, where), count in counts.items() if count < 1)
        raise ValueError(f"MCA Sampler got no targets: there are 0 {empty}. Give at least one.")
    total = max(counts.values())
    wrong = {name: count for name, count in counts.items() if count not in (1, total)}
    if wrong:
        listed = ", ".join(f"{count} {one if count == 1 else plural} {where}"
                           for (one, plural, where), count in counts.items())
        raise ValueError(f"MCA Sampler cannot pair {listed}: each must be 1 (shared by every target) or the same "
                         f"number N (one per target).")
    cells = []
    for j in range(total):
        schedule = j if len(schedule_labels) == total else 0
        prompt = j if len(prompt_labels) == total else 0
        cell_seed = seed + j if seeded and seeds == total else seed
        parts = [schedule_labels[schedule],  # "" without a sweep; a one-value sweep names its value
                 prompt_labels[prompt] if len(prompt_labels) > 1 else "",
                 f"seed={cell_seed}" if seeded and seeds > 1 else ""]
        cells.append(TargetCell(schedule, prompt, cell_seed, ", ".join(part for part in parts if part)))
    return cells


@dataclass(frozen=True)
class SamplingPass:
    """The cells (indices into the call's target cells) of one sampler call, its row shape and each condition row's
    seed."""

    cells: tuple[int, ...]
    shape: BatchShape
    condition_seeds: tuple[int, ...]


def plan_passes(cells: list[TargetCell], per_pass: int, seeded: bool) -> list[SamplingPass]:
    """The cells in passes of at most ``per_pass`` targets (the last one shorter when N is not a multiple).

    ``seeded`` (generation): one condition row per distinct seed of the pass's targets; otherwise the one
    condition row every target shares.
    """
    if per_pass < 1:
        raise ValueError(f"targets per pass must be at least 1, got {per_pass}")
    passes = []
    for first in range(0, len(cells), per_pass):
        chosen = tuple(range(first, min(first + per_pass, len(cells))))
        seeds = list(dict.fromkeys(cells[j].seed for j in chosen)) if seeded else [cells[chosen[0]].seed]
        target_condition = tuple(seeds.index(cells[j].seed) if seeded else 0 for j in chosen)
        passes.append(SamplingPass(chosen, BatchShape(len(seeds), target_condition), tuple(seeds)))
    return passes


@dataclass(frozen=True)
class TargetPlan:
    """The targets of one sampler call, planned once: the cells, their passes, and the output's row order
    (``whole``: every target in one pass)."""

    cells: list[TargetCell]
    passes: list[SamplingPass]
    whole: SamplingPass


def plan_targets(cells: list[TargetCell], per_pass: int, seeded: bool) -> TargetPlan:
    """The passes of at most ``per_pass`` targets, and the row order of the assembled output."""
    passes = plan_passes(cells, per_pass, seeded)
    whole = passes[0] if len(passes) == 1 else plan_passes(cells, len(cells), seeded)[0]
    return TargetPlan(cells, passes, whole)


def pass_rows(targets: int, seeded: bool) -> int:
    """The rows of a pass of ``targets`` targets at most: the subject, the condition row(s), the targets."""
    return 1 + (targets if seeded else 1) + targets
