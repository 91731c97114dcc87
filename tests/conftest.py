"""Shared fixtures; the heavy ones (ComfyUI boot, full checkpoint, server) are built lazily, once."""
from __future__ import annotations

import pytest

import mca_testbed


@pytest.fixture(scope="session")
def pack():
    """ComfyUI imported in-process (CPU) with this pack loaded through its own loader."""
    return mca_testbed.boot_comfy()


@pytest.fixture()
def tiny_model(pack):
    """A fresh tiny SD1.5-architecture ModelPatcher (all 16 attention sites)."""
    return mca_testbed.tiny_sd15_model(seed=0)


@pytest.fixture(scope="session")
def random_checkpoint(pack):
    """Path of the cached full-size random SD1.5 checkpoint."""
    return mca_testbed.random_checkpoint()


@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory, random_checkpoint):
    """The real ComfyUI server with the pack and the random checkpoint in its models folder."""
    server = mca_testbed.ComfyServer(tmp_path_factory.mktemp("comfy_server"),
                                     models={"checkpoints": [random_checkpoint]})
    server.start()
    yield server
    server.stop()
