"""Safe checkpoint reading: safetensors, or torch.load with weights_only=True. Never executes code.

Every failure names the file and says what it is not; a pickle that torch refuses because it would run
code is reported as such (with torch's reason), not as a corrupt download.
"""
from __future__ import annotations

import os
import pickle

import torch

_TORCH_BOILERPLATE = ("Weights only load failed", "Check the documentation", "Please file an issue", "Re-running")


def _size(path: str) -> str:
    return f"{os.path.getsize(path) / 2**20:.1f} MiB" if os.path.exists(path) else "missing"


def _torch_reason(error: Exception) -> str:
    """The specific lines of torch's weights-only error, without its generic advice."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    specific = [line for line in lines if not line.startswith(_TORCH_BOILERPLATE)]
    return " ".join(specific) or " ".join(lines)


def _refusal(path: str, error: Exception) -> ValueError:
    reason = _torch_reason(error)
    if isinstance(error, pickle.UnpicklingError) and "global" in reason.lower():
        return ValueError(
            f"{path} was not loaded: it is a pickle that contains Python code or objects besides weights, and "
            f"loading it could run that code (torch: {reason}). Use the official release file or a .safetensors "
            f"version of it.")
    return ValueError(
        f"{path} ({_size(path)}) is not a PyTorch weights file: it is truncated, corrupt or another kind of file "
        f"({type(error).__name__}: {reason}). Download it again from its official release.")


def _read(path: str):
    if path.endswith(".safetensors"):
        import safetensors.torch

        try:
            return safetensors.torch.load_file(path, device="cpu")
        except Exception as error:  # safetensors raises its own error types for every kind of bad file
            raise ValueError(
                f"{path} ({_size(path)}) is not a readable .safetensors file: it is truncated, corrupt or another "
                f"kind of file ({type(error).__name__}: {error}). Download it again from its official release."
            ) from error
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # the weights-only unpickler fails on garbage with IndexError, KeyError, ...
        raise _refusal(path, error) from error


def load_state_dict(path: str) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint; unwraps ``{"model": ...}`` / ``{"state_dict": ...}``; clear errors."""
    data = _read(path)
    for key in ("model", "state_dict"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
    if not isinstance(data, dict) or not data or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise ValueError(f"{path} holds no state dict of tensors: it is not a model weights file")
    return data
