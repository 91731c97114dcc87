"""Before `make run`: copy the example images into ComfyUI's input folder and print where models go.

    .venv/bin/python scripts/model_folders.py COMFYUI_FOLDER --host 127.0.0.1 --port 8188

The model folders are ComfyUI's own (``folder_paths``, plus the ComfyUI folder's ``extra_model_paths.yaml`` read
by ComfyUI's loader, which uses safe YAML); only files with a model extension count, not ComfyUI's
``put_*_here`` placeholders. Nothing of ComfyUI starts: its arguments module and ``folder_paths`` are plain.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from types import ModuleType

EXAMPLE_INPUTS = Path(__file__).resolve().parents[1] / "example_workflows" / "input"
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "testbed"))  # the embedded host

import comfy_host  # noqa: E402  (puts ComfyUI on sys.path)

comfy_host.import_pack_without_host()  # runs before ComfyUI starts: read the plain-data module only

from mca_ctrl.model_files import EXPECTED_MODELS  # noqa: E402


def copy_example_inputs(comfy_dir: Path) -> None:
    """The example workflows' images, into ComfyUI/input (never overwriting a file there)."""
    target = comfy_dir / "input"
    target.mkdir(parents=True, exist_ok=True)
    for image in sorted(EXAMPLE_INPUTS.glob("*.png")):
        if not (target / image.name).exists():
            shutil.copyfile(image, target / image.name)


def comfy_folder_paths(comfy_dir: Path) -> tuple[ModuleType, str | None]:
    """ComfyUI's ``folder_paths`` for ``comfy_dir`` with its extra_model_paths.yaml applied, and a warning when
    that file cannot be read."""
    from comfy.cli_args import args  # parsed from an empty command line: nothing else of ComfyUI runs

    args.base_directory = str(comfy_dir)  # as --base-directory: the default folders lie under comfy_dir
    import folder_paths
    import utils.extra_config

    config = comfy_dir / "extra_model_paths.yaml"
    if not config.is_file():
        return folder_paths, None
    try:
        utils.extra_config.load_extra_path_config(str(config))
    except Exception as error:  # noqa: BLE001  (ComfyUI's loader fails in as many ways as a file can be wrong)
        return folder_paths, (f"warning: {config} cannot be read ({type(error).__name__}); ComfyUI reads it at "
                              f"start and will fail the same way: fix or remove it")
    return folder_paths, None


def model_folders(folder_paths: ModuleType, name: str) -> list[Path]:
    """The folders ComfyUI searches for ``name`` (the pack adds ``models/<name>`` to what is configured)."""
    configured = folder_paths.folder_names_and_paths.get(name, ([], set()))[0]
    default = os.path.join(folder_paths.models_dir, name)
    return [Path(path) for path in dict.fromkeys([*configured, default])]


def model_file_count(folder: Path, extensions: set[str]) -> int:
    """Files under ``folder`` (searched as ComfyUI does, subfolders included) with a model extension."""
    if not folder.is_dir():
        return 0
    return sum(1 for path in folder.rglob("*") if path.is_file() and path.suffix.lower() in extensions)


def browser_url(host: str, port: int) -> str:
    """The address to open for a ComfyUI started with ``--listen host --port port``."""
    host = host.split(",")[0].strip()
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def main(argv: list[str] | None = None) -> None:
    """Copies the example images and prints the model folders with what they hold, then the address."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("comfy_dir", nargs="?", default=".", type=Path, help="the ComfyUI folder")
    parser.add_argument("--host", default="127.0.0.1", help="the address ComfyUI listens on (--listen)")
    parser.add_argument("--port", type=int, default=8188, help="the port ComfyUI listens on (--port)")
    args = parser.parse_args(argv)
    comfy_dir = args.comfy_dir.resolve()
    copy_example_inputs(comfy_dir)
    folder_paths, warning = comfy_folder_paths(comfy_dir)
    if warning:
        print(warning)
    print("MCA-Ctrl: put these model files in place (nothing is downloaded for you):")
    for name in dict.fromkeys(expected.folder for expected in EXPECTED_MODELS):
        for folder in model_folders(folder_paths, name):
            count = model_file_count(folder, folder_paths.supported_pt_extensions)
            state = f"found: {count} model file{'s' if count > 1 else ''}" if count else "no model file"
            print(f"  {folder}  [{state}]")
        for expected in EXPECTED_MODELS:
            if expected.folder == name:
                print(f"      {expected.describe()}")
    print(f"Then open {browser_url(args.host, args.port)} and load a workflow from this pack's example_workflows.")


if __name__ == "__main__":
    main()
