"""After a run: remove what it uploaded to each server's ``input/`` and the images it saved in ``output/``.

ComfyUI has no HTTP call that deletes files, so files are removed only where the server's folders are on this
machine. The folders come from the server's command line (``/system_stats``: ``--input-directory``,
``--output-directory``, ``--base-directory``, the folder of its ``main.py``), else this repo's ComfyUI is tried;
a file is removed only when its content is exactly what the run uploaded or downloaded. ``clean_up`` returns
the line to print: what was removed, or exactly where the files that stay are and why.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from mca_eval.comfy_api import tool_module

KINDS = {"input": "upload(s)", "output": "image(s)"}


@dataclass
class ServerFiles:
    """What a run put on one server: (``input``/``output``, path inside that folder) -> sha256 of the content."""

    url: str
    files: dict[tuple[str, str], str] = field(default_factory=dict)

    def add(self, kind: str, relative: str, content: bytes) -> None:
        """Records a file the run made on the server (``relative`` with ``/`` separators)."""
        self.files[(kind, relative.replace("\\", "/").lstrip("/"))] = hashlib.sha256(content).hexdigest()

    def count(self, kind: str) -> int:
        """How many of the recorded files are in folder ``kind``."""
        return sum(1 for recorded, _ in self.files if recorded == kind)


def server_folders(url: str) -> dict[str, Path]:
    """The server's input and output folders as its command line names them ({} when it does not say)."""
    import requests

    try:
        argv = [str(arg) for arg in requests.get(f"{url}/system_stats", timeout=10).json()["system"]["argv"]]
    except (requests.RequestException, ValueError, KeyError, TypeError):
        return {}

    def flag(name: str) -> str | None:
        for index, arg in enumerate(argv):
            if arg == name and index + 1 < len(argv):
                return argv[index + 1]
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
        return None

    main_folder = Path(argv[0]).parent if argv and Path(argv[0]).is_absolute() else None
    base = flag("--base-directory") or main_folder
    folders = {kind: Path(flag(f"--{kind}-directory") or (Path(base) / kind if base else "")) for kind in KINDS}
    return {kind: path for kind, path in folders.items() if path.is_absolute()}


def clean_up(made: ServerFiles, removed: set | None = None) -> str:
    """Removes the run's files from the server's folders where they are on this machine; returns the line to print
    ("" when the run made nothing there). ``removed``, shared by the run's servers, holds the files already removed
    (two servers on one ComfyUI folder, the multi-GPU set-up): those count as removed, not as left, where the server
    names that folder on its command line (a folder merely guessed may be another machine's)."""
    removed = set() if removed is None else removed
    if not made.files:
        return ""
    named = server_folders(made.url)
    comfy_dir = tool_module("comfy_server").COMFY_DIR
    local = {kind: named.get(kind, comfy_dir / kind) for kind in KINDS}
    shared = {kind: removed if kind in named else set() for kind in KINDS}  # a folder the server itself names
    left = ServerFiles(made.url, {key: digest for key, digest in made.files.items()
                                  if not _remove(local[key[0]], key[1], digest, shared[key[0]])})
    if not left.files:
        return (f"cleaned up {made.url}: removed {made.count('input')} upload(s) from {local['input']} and "
                f"{made.count('output')} image(s) from {local['output']}")
    parts = []
    for kind, what in KINDS.items():
        paths = sorted(relative for recorded, relative in left.files if recorded == kind)
        if paths:
            shown = sorted({path.split("/")[0] + "/" if "/" in path else path for path in paths})
            listing = ", ".join(shown[:3]) + (f" and {len(shown) - 3} more" if len(shown) > 3 else "")
            parts.append(f"{len(paths)} {what} in {named.get(kind, f'its {kind}/ folder')} ({listing})")
    return (f"left on {made.url}: {' and '.join(parts)}: ComfyUI has no HTTP call that deletes files, and these "
            f"are not on this machine; delete them on the server")


def _remove(folder: Path, relative: str, digest: str, removed: set) -> bool:
    """Deletes ``folder/relative`` if it holds exactly the recorded content, then its emptied parent folders; True
    when it is gone now (or was removed earlier in this cleanup, through another server)."""
    path = folder / relative
    if (path, digest) in removed:
        return True
    try:
        if hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            return False
        path.unlink()
    except OSError:
        return False
    removed.add((path, digest))
    for parent in path.parents:
        if parent == folder:
            break
        try:
            parent.rmdir()  # only if empty
        except OSError:
            break
    return True
