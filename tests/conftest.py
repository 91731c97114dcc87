"""Shared fixtures. ComfyUI boots once, before collection, so that every test imports the pack as
``mca_ctrl.<module>``: the very modules ComfyUI loaded (one import path, see testbed/comfy_host.py)."""
from __future__ import annotations

import pytest

import comfy_host
from comfy_server import ComfyServer
import random_models


def pytest_configure(config):
    comfy_host.boot_comfy()


@pytest.fixture(scope="session")
def pack():
    """The pack module as ComfyUI's loader imported it."""
    return comfy_host.boot_comfy()


@pytest.fixture()
def tiny_model(pack):
    """A fresh tiny SD1.5-architecture ModelPatcher (all 16 attention sites)."""
    return random_models.tiny_sd15_model(seed=0)


@pytest.fixture(scope="session")
def random_checkpoint(pack):
    """Path of the cached full-size random SD1.5 checkpoint."""
    return random_models.random_checkpoint()


@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory, random_checkpoint):
    """The real ComfyUI server with the pack and the random checkpoint in its models folder."""
    server = ComfyServer(tmp_path_factory.mktemp("comfy_server"),
                         models={"checkpoints": [random_checkpoint]})
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def random_vega_checkpoint(pack):
    """Path of the cached full-architecture random Segmind Vega (SDXL-family) checkpoint."""
    return random_models.random_vega_checkpoint()


@pytest.fixture(scope="module")
def sd15(pack):
    """A tiny SD1.5 and two 3-step inversions of random latents (subject, condition)."""
    import torch

    from mca_ctrl.mca_attention import invert
    from random_models import tiny_prompt

    model = random_models.tiny_sd15_model()
    sigmas = invert.schedule_sigmas(model, 3, None)
    latents = [torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(s)) for s in (1, 2)]
    subject, condition = (invert.invert_latent(model, latent, tiny_prompt(0), tiny_prompt(0), 1.0, sigmas)
                          for latent in latents)
    return model, subject, condition
