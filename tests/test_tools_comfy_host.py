"""testbed/comfy_host helpers against ComfyUI versions whose caches are synchronous (0.3.x) or async (newer)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

import comfy_host


class OutputCache:
    """Stands in for ``executor.caches.outputs``: ``get`` plain, or a coroutine as in newer ComfyUI."""

    def __init__(self, asynchronous: bool):
        self.asynchronous = asynchronous
        self.entries = {"7": SimpleNamespace(outputs=[["latent"], ["mask"]])}

    def get(self, node_id: str):
        if not self.asynchronous:
            return self.entries.get(node_id)

        async def entry():
            return self.entries.get(node_id)

        return entry()


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync-cache", "async-cache"])
def test_node_output_reads_sync_and_async_caches(asynchronous):
    executor = SimpleNamespace(caches=SimpleNamespace(outputs=OutputCache(asynchronous)))
    assert comfy_host.node_output(executor, "7") == "latent"
    assert comfy_host.node_output(executor, "7", 1) == "mask"
