"""Safe checkpoint reading: safetensors, or torch.load with weights_only=True. Never executes code."""
from __future__ import annotations

import os
import pickle
import zipfile

import torch


def load_state_dict(path: str) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint; unwraps ``{"model": ...}`` / ``{"state_dict": ...}``; clear errors."""
    try:
        if path.endswith(".safetensors"):
            import safetensors.torch

            data = safetensors.torch.load_file(path, device="cpu")
        else:
            data = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, pickle.UnpicklingError) as error:
        size = os.path.getsize(path) if os.path.exists(path) else 0
        raise ValueError(
            f"cannot read the checkpoint {path} ({size / 2**20:.1f} MiB): it is truncated, corrupt or not a "
            f"weights file ({type(error).__name__}: {str(error)[:200]}). Download it again."
        ) from error
    for key in ("model", "state_dict"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise ValueError(f"{path} holds no state dict of tensors")
    return data
