"""Generation without a condition image: the edit region from the target's cross-attention.

The official rule: at the sites of the third resolution level (16 x 16 for a 512 px image) record the
target's (cond half) cross-attention probabilities to the subject word's token(s), averaged over heads;
average every recorded map so far, min-max normalise, and set the top 30% of positions to 1 (the rest
keep their soft value). Here the mask used at step ``s`` averages the maps of steps ``< s``, so it does
not depend on the order of calls inside a step (cond/uncond split, site order); at step 0 there is no
mask yet and the target keeps ordinary attention.
"""
from __future__ import annotations

import torch

TOP_FRACTION = 0.3


def token_attention_map(q: torch.Tensor, k: torch.Tensor, heads: int, token_indices: list[int],
                        allowed: torch.Tensor | None = None) -> torch.Tensor:
    """``[b, tokens_q]``: softmax attention of each query to the given text tokens, mean over heads.

    ``allowed`` ``[b, keys]`` (bool): the keys in each row's softmax (its own text, not padding); None: all.
    """
    b, n, inner = q.shape
    d = inner // heads
    qh = q.reshape(b, n, heads, d).transpose(1, 2).float()
    kh = k.reshape(b, k.shape[1], heads, d).transpose(1, 2).float()
    scores = (qh @ kh.transpose(-1, -2)) * d ** -0.5
    if allowed is not None:
        scores = scores.masked_fill(~allowed[:, None, None, :], float("-inf"))
    probs = scores.softmax(-1)
    return probs[..., token_indices].sum(-1).mean(1)


def mask_from_maps(maps: list[torch.Tensor], height: int, width: int) -> torch.Tensor:
    """Average flattened maps, min-max normalise, top 30% to 1: an ``[height, width]`` edit mask."""
    image = torch.stack(maps).mean(0)
    low, high = image.min(), image.max()
    image = (image - low) / (high - low) if high > low else torch.ones_like(image)
    top = torch.topk(image, max(1, int(image.numel() * TOP_FRACTION))).indices
    image[top] = 1.0
    return image.reshape(height, width)


def find_token_positions(prompt_tokens: list[int], word_tokens: list[int]) -> list[int]:
    """Positions of every occurrence of ``word_tokens`` inside ``prompt_tokens``."""
    if not word_tokens:
        return []
    size = len(word_tokens)
    positions: list[int] = []
    for start in range(len(prompt_tokens) - size + 1):
        if prompt_tokens[start:start + size] == word_tokens:
            positions.extend(range(start, start + size))
    return positions


class CrossAttentionMaps:
    """Each target's cross-attention maps of one sampling run, per step (lives in the run's cache).

    A recorded map is ``[targets, image tokens]``: one row per target row of the run, in target order.
    """

    def __init__(self):
        self._maps: dict[int, list[torch.Tensor]] = {}
        self._shape: tuple[int, int] | None = None
        self._masks: dict[int, tuple[torch.Tensor, ...] | None] = {}

    @property
    def shape(self) -> tuple[int, int] | None:
        return self._shape

    def maps_at(self, step: int) -> list[torch.Tensor]:
        return list(self._maps.get(step, []))

    def record(self, step: int, maps: torch.Tensor, height: int, width: int) -> None:
        """``maps`` ``[targets, height * width]``: every target's attention to the subject words at one site."""
        self._shape = (height, width)
        self._maps.setdefault(step, []).append(maps.detach().float().cpu())

    def mask_before(self, step: int) -> tuple[torch.Tensor, ...] | None:
        """Each target's edit mask for ``step`` from the maps of earlier steps, or None at the first step.

        The same tensor objects are returned for the same step (plans are cached by mask identity).
        """
        if step not in self._masks:
            maps = [m for s, ms in self._maps.items() if s < step for m in ms]
            self._masks[step] = (tuple(mask_from_maps([m[j] for m in maps], *self._shape)
                                       for j in range(maps[0].shape[0])) if maps else None)
        return self._masks[step]
