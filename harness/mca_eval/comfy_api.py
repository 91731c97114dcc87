"""ComfyUI's HTTP API as the harness uses it, built on ``scripts/run_workflow.py`` (queue, progress, errors).

The harness (``harness/mca_eval``) uses the user's tool ``scripts/run_workflow.py`` and, to start a ComfyUI of
its own, the embedded host ``testbed/comfy_server.py``.
"""
from __future__ import annotations

import asyncio
import importlib
import sys
import tempfile
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]
TOOL_FOLDERS = (REPO / "scripts", REPO / "testbed")  # the user's tools, the embedded host


def tool_module(name: str) -> ModuleType:
    """``scripts/<name>.py`` or ``testbed/<name>.py`` imported (their folders are appended to sys.path once)."""
    for folder in TOOL_FOLDERS:
        if str(folder) not in sys.path:
            sys.path.append(str(folder))
    return importlib.import_module(name)


def pack_module(name: str) -> ModuleType:
    """A plain-Python module of the pack (``drawing.tiles``) as ``mca_ctrl.<name>``: in a process where ComfyUI
    loaded the pack, the very module the nodes use; elsewhere the pack's folder without ComfyUI."""
    tool_module("comfy_host").import_pack_without_host()
    return importlib.import_module(f"mca_ctrl.{name}")


def run_workflow_module() -> ModuleType:
    """``scripts/run_workflow.py``: apply_arguments, run, uploader, fetch_image, WorkflowError."""
    return tool_module("run_workflow")


def server_down_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean the server is gone (as opposed to one item failing on it)."""
    return run_workflow_module().connection_errors()


async def check_server(session, url: str) -> None:
    """Raises ConnectionError with a readable message unless ``url`` answers like ComfyUI."""
    try:
        async with session.get(f"{url}/system_stats") as response:
            if response.status != 200:
                raise ConnectionError(f"{url}/system_stats answered {response.status}: is this ComfyUI?")
            await response.json()
    except (OSError, asyncio.TimeoutError) as error:
        raise ConnectionError(f"no ComfyUI answers at {url} ({error}); start it (make run) or fix --url") from None


async def input_spec(session, url: str, class_type: str, name: str) -> list | None:
    """The ``/object_info`` spec of input ``name`` of ``class_type`` (None when the server has no such input)."""
    async with session.get(f"{url}/object_info/{class_type}") as response:
        info = (await response.json()).get(class_type, {}).get("input", {})
    return {**info.get("required", {}), **info.get("optional", {})}.get(name)


async def upload(url: str, uploads: tuple[tuple[str, Path], ...]) -> None:
    """Uploads each (name, path) to ComfyUI's input folder under ``name`` (via run_workflow.uploader)."""
    send = run_workflow_module().uploader(url)
    with tempfile.TemporaryDirectory(prefix="mca_eval_upload_") as folder:
        for name, path in uploads:
            alias = Path(folder) / name
            alias.symlink_to(Path(path).resolve())
            await asyncio.to_thread(send, alias)


async def run_prompt(url: str, prompt: dict, timeout: float, log) -> list[dict]:
    """Queues ``prompt``, reports progress through ``log``, returns the output image records."""
    return await run_workflow_module().run(url, prompt, timeout, log=log)


async def fetch_image(session, url: str, image: dict) -> bytes:
    """The bytes of an output image record ({filename, subfolder, type}) from ``/view``."""
    return await run_workflow_module().fetch_image(session, url, image)
