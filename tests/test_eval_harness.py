"""mca-eval end to end: two real ComfyUI servers on loopback, the random SD1.5 checkpoint, tiny SAM / Grounding
DINO, random-weight metric models. Swap set over both servers (with a failing item), generation set stopped
with Ctrl-C and resumed, and a 2x2 sweep grid. 64 px, 2 steps and cfg 1 (no uncond pass) keep items short."""
from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image, ImageDraw

import comfy_server
from comfy_server import REPO
from random_metric_models import EXAMPLES, write_metric_models

from mca_eval import cleanup, cli, workflow
from mca_eval.contact_sheet import HEADER
from mca_eval.errorlog import ErrorLog
from mca_eval.grid import AXIS_STRIP, GAP, METRIC_LABEL, ROW_LABELS, TITLE
from slm_models import write_models

pytestmark = pytest.mark.full
STEPS = 2


@pytest.fixture(scope="module")
def servers(tmp_path_factory, random_checkpoint):
    """Two real ComfyUI servers with the random checkpoint and the tiny SLM models, started side by side."""
    root = tmp_path_factory.mktemp("eval_servers")
    slm = write_models(root / "slm_models")
    models = {"checkpoints": [random_checkpoint], "sams": [slm["sams"] / "tiny_sam.pth"],
              "grounding-dino": [slm["grounding-dino"] / "tiny_dino.pth", slm["grounding-dino"] / "tiny_dino.json"]}
    pair = [comfy_server.ComfyServer(root / f"comfy_{n}", models=models) for n in range(2)]
    try:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda server: server.start(), pair))
        yield pair
    finally:
        for server in pair:
            server.stop()


@pytest.fixture(scope="module")
def metric_args(tmp_path_factory):
    folders = write_metric_models(tmp_path_factory.mktemp("eval_metric_models"))
    return ["--dino", str(folders["dino"]), "--clip", str(folders["clip"]),
            "--image-reward", str(folders["dino"].parent / "no_image_reward")]


def small_run_args(random_checkpoint: Path, task: str) -> list[str]:
    """The same command a user runs, plus the random/tiny model names, 64 px, 2 steps, cfg 1."""
    args = ["--steps", str(STEPS), "--seed", "3", "--quiet", "--set", "MCA_Sampler.cfg=1.0",
            "--set", f"CheckpointLoaderSimple.ckpt_name={random_checkpoint.name}",
            "--set", "MCA_SAMLoader.model_name=tiny_sam.pth", "--set", "MCA_GroundingDINOLoader.model_name=tiny_dino.pth",
            "--set", "ImageScale.width=64", "--set", "ImageScale.height=64", "--set", "MCA_SLMMask.detection_size=64"]
    if task == "generation":
        args += ["--set", "EmptyLatentImage.width=64", "--set", "EmptyLatentImage.height=64"]
    return args


def box_mask(path: Path, box: tuple[int, int, int, int]) -> str:
    mask = Image.new("L", (512, 512), 0)
    ImageDraw.Draw(mask).rectangle(box, fill=255)
    mask.save(path)
    return path.name


def read_csv(path: Path) -> dict[str, dict]:
    with open(path, newline="") as file:
        return {row["item"]: row for row in csv.DictReader(file)}


def generation_set(folder: Path) -> Path:
    folder.mkdir()
    cat = str(EXAMPLES / "mca_example_cat.png")
    items = [{"id": "cat_beach", "subject_image": cat, "subject_phrase": "the cat", "subject_words": "cat",
              "target_prompt": "a photo of a cat on the beach"},
             {"id": "cat_snow", "subject_image": cat, "subject_phrase": "the cat", "subject_words": "cat",
              "target_prompt": "a cat in the snow",
              "references": [cat, str(EXAMPLES / "mca_example_astronaut.png")]}]
    (folder / "manifest.json").write_text(json.dumps(items))
    return folder


def test_swap_set_runs_over_two_servers_logs_a_failing_item_and_draws_the_contact_sheet(
        servers, random_checkpoint, metric_args, tmp_path, capsys):
    bench = tmp_path / "swap_set"
    bench.mkdir()
    (bench / "manifest.csv").write_text(
        "id,subject_image,subject_phrase,subject_mask,condition_image,edit_mask,condition_prompt,subject_prompt,"
        "target_prompt,seed\n"
        f"cat_to_cup,{EXAMPLES / 'mca_example_cat.png'},the cat,,{EXAMPLES / 'mca_example_coffee.png'},"
        f"{box_mask(bench / 'cup.png', (120, 150, 400, 420))},a photo of a cup,a photo of a cat,a cat on a saucer,\n"
        f"astronaut_to_cup,{EXAMPLES / 'mca_example_astronaut.png'},,{box_mask(bench / 'astro.png', (150, 60, 360, 330))},"
        f"{EXAMPLES / 'mca_example_coffee.png'},cup.png,a photo of a cup,a photo of an astronaut,"
        "an astronaut on a saucer,5\n"
        f"broken,broken.png,the cat,,{EXAMPLES / 'mca_example_coffee.png'},cup.png,,,a cat,\n")
    (bench / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "swap_out"
    started = time.perf_counter()
    code = cli.main(["swap", str(bench), "--out", str(out), "--url", servers[0].url, "--url", servers[1].url,
                     *metric_args, *small_run_args(random_checkpoint, "swap")])
    printed = capsys.readouterr().out
    print(f"swap set: {time.perf_counter() - started:.1f} s\n{printed}")
    assert code == 1, printed  # one item failed, the others were scored
    rows = read_csv(out / "results.csv")
    assert rows["broken"]["status"] == "not generated"
    errors = (out / "errors.log").read_text()
    assert f"broken\tgenerate\t-\tsubject_image {bench / 'broken.png'} cannot be read as an image" in errors
    good = [rows["cat_to_cup"], rows["astronaut_to_cup"]]
    assert [row["status"] for row in good] == ["ok", "ok"], errors
    assert {row["server"] for row in good} == {servers[0].url, servers[1].url}, "items were not spread over both"
    for row in good:
        for name in ("dino_sub", "dino_back", "clip_i_sub", "clip_i_back", "clip_t"):
            assert -1.0 <= float(row[name]) <= 1.0
        assert row["image_reward"] == ""
        folder = out / "items" / row["item"]
        assert Image.open(folder / "result.png").size == (64, 64)
        assert Image.open(folder / "edit_mask.png").size == (64, 64)
    table = (out / "results.md").read_text()
    assert "| MCA-Ctrl (paper, SD1.5, DreamEditBench) | | 0.643 | 0.678 | 0.811 | 0.868 | — | 0.321 |" in table
    assert "| this run | 2 |" in table and "ImageReward n/a" in table
    sheet = np.asarray(Image.open(out / "contact_sheet.png").convert("RGB"))
    assert sheet.shape[0] == HEADER + 3 * (192 + 6) + 6
    green = np.all(sheet == (30, 200, 60), axis=-1)
    red = np.all(sheet == (230, 40, 40), axis=-1)
    assert green[HEADER:HEADER + 2 * 198].sum() > 200 and red[HEADER + 198:HEADER + 2 * 198].sum() > 100, \
        "the edit and subject masks are not outlined"


def test_generation_set_resumes_after_ctrl_c(servers, random_checkpoint, metric_args, tmp_path, capsys):
    bench, out = generation_set(tmp_path / "generation_set"), tmp_path / "generation_out"
    command = [sys.executable, str(REPO / "scripts" / "mca-eval.py"), "generation", str(bench), "--out", str(out),
               "--url", servers[0].url, *metric_args, *small_run_args(random_checkpoint, "generation")]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    first = out / "items" / "cat_beach" / "item.json"
    deadline = time.time() + 240
    while not first.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)  # Ctrl-C while the second item runs
    stdout, stderr = process.communicate(timeout=60)
    requests.post(servers[0].url + "/interrupt", timeout=10)  # the server would finish the orphaned prompt
    assert process.returncode == 130, stdout + stderr
    assert "interrupted: rerun the same command to resume" in stderr
    assert first.exists() and not (out / "items" / "cat_snow" / "item.json").exists()
    first_result = (out / "items" / "cat_beach" / "result.png").stat().st_mtime_ns

    code = cli.main(["generation", str(bench), "--out", str(out), "--url", servers[1].url, "--url", servers[0].url,
                     *metric_args, *small_run_args(random_checkpoint, "generation")])
    captured = capsys.readouterr()
    printed = captured.out
    assert code == 0, printed + captured.err
    assert "1 item(s) already done" in printed and "generated 1, skipped 1 (already done)" in printed
    assert (out / "items" / "cat_beach" / "result.png").stat().st_mtime_ns == first_result
    rows = read_csv(out / "results.csv")
    assert rows["cat_beach"]["server"] == servers[0].url and rows["cat_snow"]["server"] == servers[1].url
    for row in rows.values():
        assert row["status"] == "ok" and all(-1.0 <= float(row[n]) <= 1.0 for n in ("dino", "clip_i", "clip_t"))
    assert "| MCA-Ctrl (paper, SD1.5, DreamBench) | | 0.672 | 0.844 | 0.306 | 0.413 |" in (out / "results.md").read_text()
    code = cli.main(["generation", str(bench), "--out", str(out), "--url", servers[0].url, *metric_args,
                     *small_run_args(random_checkpoint, "generation"), "--steps", "3"])
    assert code == 2 and "made with other settings" in capsys.readouterr().err


def test_sweep_2x2_renders_a_labelled_grid(servers, random_checkpoint, metric_args, tmp_path, capsys):
    bench, out = generation_set(tmp_path / "sweep_set"), tmp_path / "sweep_out"
    code = cli.main(["generation", str(bench), "--out", str(out), "--limit", "1", "--url", servers[0].url,
                     "--url", servers[1].url, "--sweep", "sagi_end=0.0,0.5", "--sweep", "salq_start=0.0,0.5",
                     *metric_args, *small_run_args(random_checkpoint, "generation")])
    printed = capsys.readouterr().out
    assert code == 0, printed
    folders = sorted(path.name for path in (out / "items").iterdir())
    assert folders == ["cat_beach__sagi_end=0.0__salq_start=0.0", "cat_beach__sagi_end=0.0__salq_start=0.5",
                       "cat_beach__sagi_end=0.5__salq_start=0.0", "cat_beach__sagi_end=0.5__salq_start=0.5"]
    sent = {}  # what reached the servers: each cell's prompt carries its own patch values
    for server in servers:
        for entry in server.get("/history").values():
            prompt = entry["prompt"][2]
            patch = next(node["inputs"] for node in prompt.values() if node["class_type"] == "MCA_AttentionPatch")
            for node in prompt.values():
                if node["class_type"] == "SaveImage" and "__sagi_end=" in node["inputs"]["filename_prefix"]:
                    sent[node["inputs"]["filename_prefix"].split("/")[-2]] = (patch["sagi_end"], patch["salq_start"])
    assert sent == {folder: (float(folder.split("=")[1][:3]), float(folder.split("=")[2])) for folder in folders}
    assert len({row["server"] for row in read_csv(out / "results.csv").values()}) == 2
    table = (out / "results.md").read_text()
    assert table.count("| this run (sagi_end=") == 4 and "| this run (sagi_end=0.5, salq_start=0.5) | 1 |" in table
    grid = np.asarray(Image.open(out / "sweep_grid.png").convert("L"))
    cell = 160
    top, left = TITLE + 24 + 22, AXIS_STRIP + ROW_LABELS
    assert grid.shape == (top + 2 * (cell + METRIC_LABEL + GAP) + GAP, left + 2 * (cell + GAP) + GAP)
    ink = grid < 128
    assert ink[:TITLE].any(), "no title"
    assert ink[TITLE:TITLE + 24, left:].any(), "no column axis name"
    assert ink[TITLE + 24:top, left:left + cell].any() and ink[TITLE + 24:top, left + cell + GAP:].any(), \
        "column values missing"
    assert ink[top:, :AXIS_STRIP].any(), "no row axis name"
    assert ink[top:top + cell, AXIS_STRIP:left].any() and ink[top + cell + METRIC_LABEL + GAP:, AXIS_STRIP:left].any()
    for row in range(2):
        for column in range(2):
            y, x = top + row * (cell + METRIC_LABEL + GAP), left + column * (cell + GAP)
            assert grid[y:y + cell, x:x + cell].std() > 1, "a cell has no image"
            assert ink[y + cell:y + cell + METRIC_LABEL, x:x + cell].any(), "a cell has no metric"


def one_item_set(folder: Path, subject: str, **fields) -> Path:
    """A generation manifest of one item whose subject image is ``folder / subject``."""
    folder.mkdir(exist_ok=True)
    item = {"id": "item", "subject_image": subject, "subject_phrase": "the cat", "subject_words": "cat",
            "target_prompt": "a cat on the beach", **fields}
    (folder / "manifest.json").write_text(json.dumps([item]))
    return folder


def test_non_image_input_is_named_by_its_manifest_field_and_path(servers, random_checkpoint, tmp_path, capsys):
    bench = one_item_set(tmp_path / "broken_set", "not_an_image.png", id="broken")
    (bench / "not_an_image.png").write_bytes(b"not an image")
    out = tmp_path / "broken_out"
    code = cli.main(["generation", str(bench), "--out", str(out), "--url", servers[0].url, "--no-metrics",
                     *small_run_args(random_checkpoint, "generation")])
    printed = capsys.readouterr()
    assert code == 1, printed.out + printed.err
    [entry] = ErrorLog(out / "errors.log").entries()
    assert entry["item"] == "broken" and entry["stage"] == "generate", entry
    assert "subject_image" in entry["message"] and str(bench / "not_an_image.png") in entry["message"], entry
    assert "mca_eval_" not in entry["message"], "the error names the server's upload, not the manifest's file"


@pytest.mark.parametrize("sweep, problem", [("sagi_end=abc", "'abc' is not a number"),
                                            ("sagi_end=2.5", "2.5 is outside -1.0 .. 1.0"),
                                            ("preset=bogus", "'bogus' is not one of")])
def test_sweep_values_are_checked_against_the_widget_before_the_first_item(servers, random_checkpoint, tmp_path,
                                                                          capsys, sweep, problem):
    bench, out = generation_set(tmp_path / "sweep_check_set"), tmp_path / "sweep_check_out"
    queued = len(servers[0].get("/history"))
    code = cli.main(["generation", str(bench), "--out", str(out), "--url", servers[0].url, "--no-metrics",
                     "--sweep", sweep, *small_run_args(random_checkpoint, "generation")])
    err = capsys.readouterr().err
    assert code == 2, err
    [line] = err.strip().splitlines()
    assert line.startswith(f"mca-eval: --sweep {sweep.split('=')[0]}: {problem}"), line
    assert len(servers[0].get("/history")) == queued and not (out / "items").exists(), "an item ran first"


def test_run_removes_its_uploads_and_outputs_from_the_server(servers, random_checkpoint, tmp_path, capsys):
    bench = one_item_set(tmp_path / "cleanup_set", "cat.png", id="cleanup_cat")
    with Image.open(EXAMPLES / "mca_example_cat.png") as image:
        image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(bench / "cat.png")  # an upload no other test makes
    server, out = servers[1], tmp_path / "cleanup_out"
    code = cli.main(["generation", str(bench), "--out", str(out), "--url", server.url, "--no-metrics",
                     *small_run_args(random_checkpoint, "generation")])
    printed = capsys.readouterr()
    assert code == 0, printed.out + printed.err
    assert Image.open(out / "items" / "cleanup_cat" / "result.png").size == (64, 64)
    assert not (server.root / "input" / workflow.upload_name(bench / "cat.png")).exists(), "the upload stayed"
    assert not (server.output_dir / "mca_eval" / "cleanup_cat").exists(), "the item's outputs stayed"
    last = printed.out.strip().splitlines()[-1]
    assert last.startswith(f"cleaned up {server.url}: removed 1 upload(s)"), printed.out


def test_files_left_on_a_server_are_named_in_the_last_line(servers):
    made = cleanup.ServerFiles(servers[0].url)
    made.add("input", "mca_eval_0123456789abcdef0123.png", b"elsewhere")
    made.add("output", "mca_eval/item/mca_eval_00001_.png", b"elsewhere")
    line = cleanup.clean_up(made)  # the server's folders are named on its command line, the files are not there
    root = servers[0].root
    assert line.startswith(f"left on {servers[0].url}: 1 upload(s) in {root / 'input'} "
                           f"(mca_eval_0123456789abcdef0123.png) and 1 image(s) in {root / 'output'} (mca_eval/)"), line
    assert "ComfyUI has no HTTP call that deletes files" in line
