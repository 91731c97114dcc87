"""scripts/run_workflow.py as a user meets it: one readable line for a wrong --url or input file, and the
printed output path is a file that exists on this machine."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import comfy_server
from comfy_server import REPO, free_port

SCRIPT = REPO / "scripts" / "run_workflow.py"
WORKFLOW = REPO / "example_workflows" / "api" / "mca_swap.json"
CAT = REPO / "example_workflows" / "input" / "mca_example_cat.png"


def run_script(*args, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """The only line of stderr, after checking the exit status and that no traceback was printed."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("upload", [False, True], ids=["no-upload", "with-subject"])
def test_url_where_nothing_listens_prints_one_line(upload):
    url = f"http://127.0.0.1:{free_port()}"
    line = one_line_error(run_script(WORKFLOW, "--url", url, *(["--subject", CAT] if upload else [])))
    assert url in line and "--url" in line and "make run" in line


@pytest.mark.parametrize("option", ["workflow", "--subject", "--condition"])
def test_missing_input_file_prints_one_line(option, tmp_path):
    missing = tmp_path / "no_such_file.png"
    args = [WORKFLOW, "--url", f"http://127.0.0.1:{free_port()}", "--subject", CAT, "--condition", CAT]
    if option == "workflow":
        args[0] = missing
    else:
        args[args.index(option) + 1] = missing
    line = one_line_error(run_script(*args))
    assert str(missing) in line and option in line


def test_workflow_that_is_not_json_prints_one_line(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    line = one_line_error(run_script(broken, "--url", f"http://127.0.0.1:{free_port()}"))
    assert str(broken) in line and "API-format" in line


@pytest.fixture(scope="module")
def bare_server(tmp_path_factory):
    """A real ComfyUI with the pack and no models (enough for LoadImage -> SaveImage)."""
    server = comfy_server.ComfyServer(tmp_path_factory.mktemp("run_workflow_server")).start()
    yield server
    server.stop()


def test_printed_output_path_is_the_saved_image(bare_server, tmp_path, capsys):
    import run_workflow

    workflow = tmp_path / "copy_image.json"
    workflow.write_text(json.dumps({
        "1": {"class_type": "LoadImage", "inputs": {"image": "absent.png"}, "_meta": {"title": "Subject image"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "tools/copy"}}}))
    out = tmp_path / "results"
    code = run_workflow.main([str(workflow), "--url", bare_server.url, "--subject", str(CAT), "--out", str(out)])
    printed = capsys.readouterr()
    assert code == 0, printed.err + bare_server.log()[-3000:]
    paths = [Path(line.split(": ", 1)[1]) for line in printed.out.splitlines() if line.startswith("output image: ")]
    assert len(paths) == 1 and paths[0].is_absolute() and paths[0].is_file(), printed.out
    assert paths[0].parent == out / "tools"
    with Image.open(paths[0]) as saved, Image.open(CAT) as subject:
        assert saved.size == subject.size
    on_server = bare_server.output_dir / "tools" / paths[0].name
    assert on_server.read_bytes() == paths[0].read_bytes()
