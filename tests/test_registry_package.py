"""The Comfy Registry package: what `comfy node pack` / `comfy node publish` would upload, and the pyproject.toml
fields the Registry and ComfyUI's node manager read.

The archive is built the way comfy-cli builds it: the git-tracked files (`git ls-files`) minus the `.comfyignore`
patterns (gitwildmatch). The files are those of the working tree that git tracks or would track (untracked files
that no .gitignore hides count: they are what the next commit publishes), copied into a fresh repository. With
comfy-cli importable, its own packer (`comfy_cli.file_utils.zip_files`) builds the archive; without it, git applies
`.comfyignore` as an exclude file (`git ls-files --cached --ignored --exclude-from`), the same pattern syntax.
"""
from __future__ import annotations

import ast
import re
import shutil
import struct
import subprocess
import zipfile
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

import pytest

REPO = Path(__file__).resolve().parents[1]
RUNTIME_PACKAGES = ("nodes", "mca_attention", "slm", "drawing")
RUNTIME_FILES = ("__init__.py", "model_files.py", "README.md", "LICENSE", "requirements.txt", "pyproject.toml")
SHIPPED_FOLDERS = ("example_workflows", "web")  # every file in them ships (graphs, thumbnails, inputs, help pages)
DEV_ONLY = ("tests/", "benchmarks/", "harness/", "testbed/", "scripts/", "docs/", ".ci/")
DEV_ONLY_FILES = ("Makefile", "requirements-dev.txt", "BENCHMARKS.md")
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".ckpt", ".bin", ".gguf", ".onnx", ".sft")
# The model families the pack serves (README, "Model families and the layer setting"), as the description names them.
FAMILIES = ("SD1.x", "SD2.x", "SDXL", "Flux.1", "Chroma", "Flux.2", "Qwen-Image", "Z-Image")


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True, text=True).stdout


def _tree_files() -> list[str]:
    """The working tree's files that git tracks or would track (untracked, not ignored), deleted ones left out."""
    names = _git(REPO, "ls-files", "--cached", "--others", "--exclude-standard", "-z").split("\0")
    return sorted({name for name in names if name and (REPO / name).is_file()})


def _staged_copy(root: Path) -> Path:
    """A fresh repository holding those files, all added to its index (what `git ls-files` lists there)."""
    root.mkdir()
    for name in _tree_files():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, root / name)
    _git(root, "init", "-q")
    _git(root, "add", "-A")
    return root


def _pack_with_comfy_cli(root: Path, out: Path, monkeypatch) -> dict[str, int]:
    from comfy_cli.file_utils import zip_files
    from comfy_cli.registry.config_parser import extract_node_configuration

    monkeypatch.chdir(root)  # comfy-cli packs the current directory
    config = extract_node_configuration(str(root / "pyproject.toml"))
    zip_files(str(out), includes=config.tool_comfy.includes if config and config.tool_comfy else [])
    with zipfile.ZipFile(out) as archive:
        return {info.filename: info.file_size for info in archive.infolist() if not info.is_dir()}


def _pack_with_git(root: Path) -> dict[str, int]:
    tracked = set(_git(root, "ls-files", "-z").split("\0")) - {""}
    ignore = root / ".comfyignore"
    ignored = set()
    if ignore.is_file():
        ignored = set(_git(root, "ls-files", "--cached", "--ignored", f"--exclude-from={ignore}", "-z").split("\0"))
    return {name: (root / name).stat().st_size for name in sorted(tracked - ignored)}


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> dict[str, int]:
    """The Registry archive's files (path -> bytes)."""
    tmp = tmp_path_factory.mktemp("registry_package")
    root = _staged_copy(tmp / "pack")
    try:
        import comfy_cli.file_utils  # noqa: F401
    except ImportError:
        return _pack_with_git(root)
    with pytest.MonkeyPatch.context() as monkeypatch:
        return _pack_with_comfy_cli(root, tmp / "node.zip", monkeypatch)


@pytest.fixture(scope="module")
def pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def test_comfyignore_exists():
    assert (REPO / ".comfyignore").is_file(), ".comfyignore is missing: the Registry archive would ship the whole tree"


def test_archive_holds_the_runtime_pack(archive):
    tree = _tree_files()
    expected = {name for name in tree if name in RUNTIME_FILES}
    expected |= {name for name in tree if name.startswith(tuple(f"{p}/" for p in RUNTIME_PACKAGES))
                 and name.endswith(".py")}
    expected |= {name for name in tree if name.startswith(tuple(f"{f}/" for f in SHIPPED_FOLDERS))}
    assert set(RUNTIME_FILES) <= expected, f"missing from the repository: {set(RUNTIME_FILES) - expected}"
    assert any(name.startswith("example_workflows/") and name.endswith(".json") for name in expected)
    assert any(name.startswith("example_workflows/input/") for name in expected)
    missing = sorted(expected - set(archive))
    assert not missing, f"left out of the Registry archive: {missing}"


def _relative_imports(path: str, source: str):
    """(line, the archive paths any one of which satisfies it) for each relative import in a pack module."""
    package = PurePosixPath(path).parent
    for node in ast.walk(ast.parse(source, filename=path)):
        if not (isinstance(node, ast.ImportFrom) and node.level):
            continue
        base = package
        for _ in range(node.level - 1):
            base = base.parent
        module = "/".join([*base.parts, *(node.module.split(".") if node.module else [])])
        if node.module:
            yield node.lineno, (f"{module}.py", f"{module}/__init__.py")
        else:  # `from . import x`: x is a submodule, or a name the package's __init__ defines
            for alias in node.names:
                prefix = f"{module}/" if module else ""
                yield node.lineno, (f"{prefix}{alias.name}.py", f"{prefix}{alias.name}/__init__.py",
                                    f"{prefix}__init__.py")


def test_every_relative_import_of_the_archive_is_in_it(archive):
    """The runtime's own imports resolve inside the archive (a module left out would break the installed pack)."""
    unresolved = [f"{path}:{line} -> {candidates[0]}"
                  for path in archive if path.endswith(".py")
                  for line, candidates in _relative_imports(path, (REPO / path).read_text(encoding="utf-8"))
                  if not any(candidate in archive for candidate in candidates)]
    assert not unresolved, f"imports of modules the archive lacks: {unresolved}"


def test_archive_leaves_out_development_files(archive):
    shipped_dev = sorted(name for name in archive if name.startswith(DEV_ONLY) or name in DEV_ONLY_FILES)
    assert not shipped_dev, f"development files in the Registry archive: {shipped_dev}"
    weights = sorted(name for name in archive if name.lower().endswith(WEIGHT_SUFFIXES))
    assert not weights, f"model weights in the Registry archive: {weights}"
    large = sorted(f"{name} ({size / 2**20:.1f} MiB)" for name, size in archive.items() if size > 2**20)
    assert not large, f"files over 1 MiB in the Registry archive: {large}"


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", "not a PNG"
    return struct.unpack(">II", data[16:24])


def test_pyproject_registry_fields(pyproject):
    project, comfy = pyproject["project"], pyproject["tool"]["comfy"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"]), project["version"]
    description = project["description"]
    assert "SD1.5" not in description and all(family in description for family in FAMILIES), description
    classifiers = project["classifiers"]
    assert "Operating System :: OS Independent" in classifiers
    # any accelerator classifier makes ComfyUI's manager list the pack as conflicting (see pyproject.toml)
    assert not [c for c in classifiers if c.startswith("Environment ::")], classifiers

    urls = project["urls"]
    repository = urls["Repository"].rstrip("/")
    owner_repo = urlparse(repository).path.strip("/")
    assert urlparse(repository).netloc == "github.com" and owner_repo.count("/") == 1, repository
    for key in ("Documentation", "Issues"):
        assert urls[key].startswith(repository), (key, urls[key])

    icon = urlparse(comfy["Icon"])
    prefix = f"/{owner_repo}/main/"
    assert icon.scheme == "https" and icon.netloc == "raw.githubusercontent.com", comfy["Icon"]
    assert icon.path.startswith(prefix), f"Icon is not a raw URL into {repository} (main): {comfy['Icon']}"
    icon_path = icon.path[len(prefix):]
    assert icon_path in _tree_files(), f"the Icon's file {icon_path} is not in the repository"
    data = (REPO / icon_path).read_bytes()
    width, height = _png_size(data)
    assert width == height <= 400 and len(data) < 50_000, (width, height, len(data))


def test_comfy_cli_reads_the_fields(pyproject):
    """comfy-cli's own parser (when installed) finds the OS, no accelerator, the icon and the three URLs."""
    config_parser = pytest.importorskip("comfy_cli.registry.config_parser")
    config = config_parser.extract_node_configuration(str(REPO / "pyproject.toml"))
    assert config.project.supported_os == ["OS Independent"]
    assert config.project.supported_accelerators == []
    assert config.tool_comfy.icon == pyproject["tool"]["comfy"]["Icon"]
    assert config.project.urls.repository and config.project.urls.documentation and config.project.urls.issues
    assert config.project.supported_comfyui_version == pyproject["tool"]["comfy"]["requires-comfyui"]
