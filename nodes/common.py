"""What every node shares: the category, the pinned ComfyUI node API (V3 schema) and the pack's own socket types."""
from __future__ import annotations

from dataclasses import fields

from comfy_api.v0_0_2 import io  # a numbered API version, present in ComfyUI 0.3.75 and in the newest source

CATEGORY = "MCA-Ctrl"
SWEEP = io.Custom("MCA_SWEEP")
SAM_MODEL = io.Custom("MCA_SAM_MODEL")
DINO_MODEL = io.Custom("MCA_GROUNDING_DINO_MODEL")
_SCHEMA_FIELDS = {field.name for field in fields(io.Schema)}


def schema(**options) -> io.Schema:
    """A node's V3 schema in the pack's category; ``search_aliases`` reach hosts that know them (newer than 0.3.75,
    whose node search has no aliases)."""
    if "search_aliases" not in _SCHEMA_FIELDS:
        options.pop("search_aliases", None)
    return io.Schema(category=options.pop("category", CATEGORY), **options)
