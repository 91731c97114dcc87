"""ComfyUI in-process on this machine, with the pack loaded through ComfyUI's own loader.

One import path: ComfyUI imports the pack under a name made from its folder path; ``boot_comfy`` makes
every module of the pack reachable as ``mca_ctrl.<module>`` too (the very same module objects), so tests,
scripts and benchmarks write ``from mca_ctrl.mca_attention import ...`` and never hold a second copy.
Processes that must not import ComfyUI (the transformers-5 check) use ``import_pack_without_host``.
"""
from __future__ import annotations

import asyncio
import importlib
import os
import pkgutil
import sys
import types
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMFY_DIR = Path(os.environ.get("COMFYUI_PATH") or REPO / ".comfyui" / "ComfyUI").resolve()
PACK_LINK = COMFY_DIR / "custom_nodes" / "mca_ctrl"
PACK_NAME = "mca_ctrl"
PACK_PACKAGES = ("mca_attention", "nodes", "slm", "drawing")  # the node pack itself (tools beside it are not imported)

if str(COMFY_DIR) not in sys.path:
    sys.path.insert(0, str(COMFY_DIR))

_booted: dict = {}


def _alias_pack(loaded: types.ModuleType) -> None:
    """Import every module of the pack under ComfyUI's name, then register each under ``mca_ctrl`` too."""
    root = Path(loaded.__file__).parent
    for info in pkgutil.iter_modules([str(root)]):
        if not info.ispkg or info.name in PACK_PACKAGES:
            importlib.import_module(f"{loaded.__name__}.{info.name}")
    for package in PACK_PACKAGES:
        for info in pkgutil.walk_packages([str(root / package)], prefix=f"{loaded.__name__}.{package}."):
            importlib.import_module(info.name)
    prefix = loaded.__name__ + "."
    for name, module in list(sys.modules.items()):
        if name == loaded.__name__ or name.startswith(prefix):
            sys.modules[PACK_NAME + name[len(loaded.__name__):]] = module


def boot_comfy() -> types.ModuleType:
    """Import ComfyUI with ``--cpu``, load its extra nodes and this pack; returns the pack module."""
    if "pack" in _booted:
        return _booted["pack"]
    if PACK_NAME in sys.modules:
        raise RuntimeError(f"{PACK_NAME} was imported without ComfyUI before boot_comfy(): boot ComfyUI first")
    import comfy.options

    comfy.options.enable_args_parsing()
    saved_argv = sys.argv
    sys.argv = [saved_argv[0], "--cpu"]
    try:
        import comfy.cli_args  # noqa: F401  (parses the arguments once)
    finally:
        sys.argv = saved_argv
    # As main.py does: ComfyUI's `utils` package first, because importing `nodes` puts comfy/ (with its
    # utils.py) at the front of sys.path.
    import utils.extra_config  # noqa: F401
    import nodes

    asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
    if not asyncio.run(nodes.load_custom_node(str(PACK_LINK))):
        raise RuntimeError(f"ComfyUI could not load the pack from {PACK_LINK}")
    pack = sys.modules[str(PACK_LINK).replace(".", "_x_")]
    _alias_pack(pack)
    _booted["pack"] = pack
    return pack


def import_pack_without_host() -> None:
    """Make ``mca_ctrl.slm`` (plain torch) importable in a process that does not load ComfyUI."""
    if PACK_NAME in sys.modules:
        return
    package = types.ModuleType(PACK_NAME)
    package.__path__ = [str(REPO)]
    sys.modules[PACK_NAME] = package


class RecordingServer:
    """The stub PromptServer ComfyUI's executor needs in-process; records what it is sent."""

    def __init__(self):
        self.client_id = None
        self.last_node_id = None
        self.last_prompt_id = None
        self.sockets_metadata = {}
        self.messages: list = []

    def send_sync(self, event, data, sid=None):
        self.messages.append((event, data))

    def queue_updated(self):
        pass


def new_executor():
    """ComfyUI's real PromptExecutor with a recording stub server; it caches outputs across prompts."""
    boot_comfy()
    import execution

    server = RecordingServer()
    executor = execution.PromptExecutor(server, cache_type=execution.CacheType.CLASSIC,
                                        cache_args={"lru": 0, "ram": 0, "ram_inactive": 0})
    return executor, server


def execute_prompt(prompt: dict, executor=None) -> tuple[object, RecordingServer]:
    """Validate and run an API-format prompt through ComfyUI's real executor, in-process."""
    import execution

    executor, server = executor or new_executor()
    server.messages.clear()
    prompt_id = str(uuid.uuid4())
    valid = asyncio.run(execution.validate_prompt(prompt_id, prompt, None))
    if not valid[0]:
        raise AssertionError(f"prompt did not validate: {valid[1]} {valid[3]}")
    executor.execute(prompt, prompt_id, {}, valid[2])
    return executor, server


def node_output(executor, node_id: str, index: int = 0):
    """One output value of an executed node, from the executor's cache (sync in ComfyUI 0.3, async later)."""
    import inspect

    entry = executor.caches.outputs.get(node_id)
    if inspect.isawaitable(entry):  # newer ComfyUI: the cache's get is a coroutine
        entry = asyncio.run(entry)
    outputs = getattr(entry, "outputs", entry)
    return outputs[index][0]


def execution_error(executor) -> str | None:
    """The exception message of an ``execution_error`` status message, if the run failed."""
    for event, data in executor.status_messages:
        if event == "execution_error":
            return data["exception_message"]
    return None


def split_cond_uncond(monkeypatch) -> None:
    """ComfyUI runs cond and uncond in separate calls when its free-memory estimate says the batch won't fit: make
    it say so (``monkeypatch``: pytest's), so that every call holds one chunk."""
    import comfy.model_management

    real = comfy.model_management.get_free_memory
    monkeypatch.setattr(comfy.model_management, "get_free_memory",
                        lambda dev=None, torch_free_too=False: real(dev, torch_free_too) if torch_free_too else 0)
