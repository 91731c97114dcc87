"""mca-eval end to end: two real ComfyUI servers on loopback, the random SD1.5 checkpoint, tiny SAM / Grounding
DINO, random-weight metric models. Swap set over both servers (with a failing item), generation set stopped
with Ctrl-C and resumed, and a 2x2 sweep grid in one prompt per item. 64 px, 2 steps and cfg 1 (no uncond
pass) keep items short. How jobs are cut, spread and resumed is checked on ``FakeComfy``, a stand-in server
that answers in no time."""
from __future__ import annotations

import asyncio
import csv
import itertools
import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image, ImageDraw
from PIL.PngImagePlugin import PngInfo

import comfy_server
from comfy_server import REPO, free_port
from random_metric_models import EXAMPLES, write_metric_models

from mca_eval import cleanup, cli, sweep, workflow
from mca_eval.contact_sheet import HEADER
from mca_eval.errorlog import ErrorLog
from mca_eval.grid import AXIS_STRIP, GAP, METRIC_LABEL, ROW_LABELS, TITLE
from mca_eval.items import EvalItem
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


SWEEP = ("--sweep", "sagi_end=0.0,0.5", "--sweep", "salq_start=0.0,0.5")
CELLS = ("sagi_end=0.0__salq_start=0.0", "sagi_end=0.0__salq_start=0.5", "sagi_end=0.5__salq_start=0.0",
         "sagi_end=0.5__salq_start=0.5")  # sweep.cells order: the first --sweep changes slowest


def sweep_chain(prompt: dict) -> list[tuple[str, str]]:
    """(setting, values) of the MCA_ScheduleSweep nodes feeding the prompt's patch, first node first."""
    link = next(node["inputs"] for node in prompt.values() if node["class_type"] == "MCA_AttentionPatch").get("sweep")
    chain = []
    while link:
        node = prompt[link[0]]
        assert node["class_type"] == "MCA_ScheduleSweep", node
        chain.insert(0, (node["inputs"]["setting"], node["inputs"]["values"]))
        link = node["inputs"].get("sweep")
    return chain


def test_sweep_2x2_is_one_prompt_per_item_scored_per_cell_in_a_labelled_grid(servers, random_checkpoint, metric_args,
                                                                             tmp_path, capsys):
    bench, out = generation_set(tmp_path / "sweep_set"), tmp_path / "sweep_out"
    command = ["generation", str(bench), "--out", str(out), "--url", servers[0].url, "--url", servers[1].url, *SWEEP,
               *metric_args, *small_run_args(random_checkpoint, "generation")]
    before = [set(server.get("/history")) for server in servers]
    code = cli.main(command)
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "sweep: one prompt per item makes its 4 cells (MCA Schedule Sweep)" in printed
    folders = sorted(path.name for path in (out / "items").iterdir())
    assert folders == [f"{item}__{cell}" for item in ("cat_beach", "cat_snow") for cell in CELLS]
    queued = [[entry["prompt"][2] for key, entry in server.get("/history").items() if key not in seen]
              for server, seen in zip(servers, before)]
    assert [len(prompts) for prompts in queued] == [1, 1], "not one prompt per item, one item per server"
    for prompt in (prompts[0] for prompts in queued):
        patch = next(node["inputs"] for node in prompt.values() if node["class_type"] == "MCA_AttentionPatch")
        assert patch["sagi_end"] == patch["salq_start"] == -1.0, "the swept widgets were set as well"
        assert sweep_chain(prompt) == [("sagi_end", "0.0, 0.5"), ("salq_start", "0.0, 0.5")]
    rows = read_csv(out / "results.csv")
    assert len(rows) == 8 and {row["status"] for row in rows.values()} == {"ok"}
    assert all(-1.0 <= float(row[name]) <= 1.0 for row in rows.values() for name in ("dino", "clip_i", "clip_t"))
    for item in ("cat_beach", "cat_snow"):
        cells = [out / "items" / f"{item}__{cell}" for cell in CELLS]
        assert len({rows[folder.name]["server"] for folder in cells}) == 1, "one item's cells came from two prompts"
        subject, mask = (np.asarray(Image.open(cells[0] / name)) for name in ("subject.png", "subject_mask.png"))
        assert set(np.unique(mask)) == {0, 255} and not np.array_equal(subject, mask), "the captures are mixed up"
        for folder in cells:  # the batch split at the right place: results first, then the shared captures
            result = np.asarray(Image.open(folder / "result.png"))
            assert result.shape == (64, 64, 3) and not np.array_equal(result, subject), "a capture became a result"
            assert [(folder / name).read_bytes() for name in ("subject.png", "subject_mask.png")] == [
                (cells[0] / name).read_bytes() for name in ("subject.png", "subject_mask.png")]
    assert rows["cat_beach__" + CELLS[0]]["server"] != rows["cat_snow__" + CELLS[0]]["server"]
    table = (out / "results.md").read_text()
    assert table.count("| this run (sagi_end=") == 4 and "| this run (sagi_end=0.5, salq_start=0.5) | 2 |" in table
    grid = np.asarray(Image.open(out / "sweep_grid.png").convert("L"))
    cell = 160
    top, left = TITLE + 24 + 22, AXIS_STRIP + ROW_LABELS
    block = top + 2 * (cell + METRIC_LABEL + GAP) + GAP
    assert grid.shape == (2 * block, left + 2 * (cell + GAP) + GAP)
    ink = grid < 128
    assert ink[:TITLE].any() and ink[block:block + TITLE].any(), "a block has no title"
    assert ink[TITLE:TITLE + 24, left:].any(), "no column axis name"
    assert ink[TITLE + 24:top, left:left + cell].any() and ink[TITLE + 24:top, left + cell + GAP:].any(), \
        "column values missing"
    assert ink[top:block, :AXIS_STRIP].any(), "no row axis name"
    assert ink[top:top + cell, AXIS_STRIP:left].any() and ink[top + cell + METRIC_LABEL + GAP:, AXIS_STRIP:left].any()
    for row in range(2):
        for column in range(2):
            y, x = top + row * (cell + METRIC_LABEL + GAP), left + column * (cell + GAP)
            assert grid[y:y + cell, x:x + cell].std() > 1, "a cell has no image"
            assert ink[y + cell:y + cell + METRIC_LABEL, x:x + cell].any(), "a cell has no metric"

    code = cli.main(command)  # resume: every cell is done
    printed = capsys.readouterr().out
    assert code == 0 and "8 item(s) already done" in printed and "generated 0, skipped 8" in printed, printed
    assert [len(server.get("/history")) for server in servers] == [len(seen) + 1 for seen in before]


class FakeComfy:
    """A stand-in ComfyUI on loopback that answers the harness's calls at once: the real nodes' input specs,
    uploads, and for each prompt its SaveImage batch: one result per cell of the prompt's MCA Schedule Sweep
    chain (one without), then one image per capture. A result carries the patch settings and inversion steps it
    was made with, as JSON in its PNG text ``made``. ``prompts`` keeps what was queued; ``missing`` holds
    (class, input) pairs its nodes lack, like a server with an older pack."""

    def __init__(self, root: Path):
        self.root, self.port = root, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.prompts: list[dict] = []
        self.history: dict[str, dict] = {}
        self.sockets: dict = {}
        self.missing: set[tuple[str, str]] = set()
        for folder in ("input", "output"):
            (root / folder).mkdir(parents=True, exist_ok=True)

    def __enter__(self) -> "FakeComfy":
        from aiohttp import web

        app = web.Application()
        app.add_routes([web.get("/system_stats", self.stats), web.get("/object_info/{name}", self.object_info),
                        web.post("/upload/image", self.upload), web.get("/ws", self.socket),
                        web.post("/prompt", self.prompt), web.get("/history/{id}", self.entry),
                        web.get("/view", self.view)])
        self.runner, self.loop, ready = web.AppRunner(app), asyncio.new_event_loop(), threading.Event()

        def serve():
            self.loop.run_until_complete(self.runner.setup())
            self.loop.run_until_complete(web.TCPSite(self.runner, "127.0.0.1", self.port).start())
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()
        assert ready.wait(30), "the fake server did not start"
        return self

    def __exit__(self, *error) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)

    async def stats(self, request):
        from aiohttp import web

        return web.json_response({"system": {"argv": ["main.py", "--input-directory", str(self.root / "input"),
                                                      "--output-directory", str(self.root / "output")]}})

    async def object_info(self, request):
        from aiohttp import web
        import nodes  # ComfyUI's, booted by conftest: the real nodes' INPUT_TYPES

        name = request.match_info["name"]
        spec = json.loads(json.dumps(nodes.NODE_CLASS_MAPPINGS[name].INPUT_TYPES(), default=str))
        for inputs in spec.values():  # required, optional
            for dropped in {input_name for class_type, input_name in self.missing if class_type == name}:
                inputs.pop(dropped, None)
        return web.json_response({name: {"input": spec}})

    async def upload(self, request):
        from aiohttp import web

        image = (await request.post())["image"]
        (self.root / "input" / image.filename).write_bytes(image.file.read())
        return web.json_response({"name": image.filename})

    async def socket(self, request):
        from aiohttp import web

        socket = web.WebSocketResponse()
        await socket.prepare(request)
        self.sockets[request.query["clientId"]] = socket
        async for _ in socket:
            pass
        return socket

    async def prompt(self, request):
        from aiohttp import web

        body = await request.json()
        prompt_id = str(len(self.prompts))
        self.prompts.append(body["prompt"])
        self.history[prompt_id] = {"outputs": self.outputs(body["prompt"])}
        await self.sockets[body["client_id"]].send_json({"type": "execution_success", "data": {"prompt_id": prompt_id}})
        return web.json_response({"prompt_id": prompt_id, "node_errors": {}})

    async def entry(self, request):
        from aiohttp import web

        prompt_id = request.match_info["id"]
        return web.json_response({prompt_id: self.history[prompt_id]} if prompt_id in self.history else {})

    async def view(self, request):
        from aiohttp import web

        query = request.query
        return web.Response(body=(self.root / "output" / query["subfolder"] / query["filename"]).read_bytes())

    def outputs(self, prompt: dict) -> dict:
        [(save_id, save)] = [(key, node) for key, node in prompt.items() if node["class_type"] == "SaveImage"]
        captures, head = 0, save["inputs"]["images"]
        while prompt[head[0]]["class_type"] == "ImageBatch":
            captures, head = captures + 1, prompt[head[0]]["inputs"]["image1"]
        patch = next(node["inputs"] for node in prompt.values() if node["class_type"] == "MCA_AttentionPatch")
        widgets = {name: patch[name] for name in sweep.SCHEDULE_SETTINGS}
        widgets["steps"] = next(node["inputs"]["steps"] for node in prompt.values()
                                if node["class_type"] == "MCA_DDIMInvert")
        axes = [(setting, [float(value) for value in values.split(",")]) for setting, values in sweep_chain(prompt)]
        made = [{**widgets, **dict(zip([setting for setting, _ in axes], combo))}
                for combo in itertools.product(*(values for _, values in axes))]  # the pack's order: first slowest
        subfolder, _, name = save["inputs"]["filename_prefix"].rpartition("/")
        images = []
        for index, text in enumerate([json.dumps(cell) for cell in made] + ["capture"] * captures):
            info, filename = PngInfo(), f"{name}_{index + 1:05}_.png"
            info.add_text("made", text)
            (self.root / "output" / subfolder).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (64, 64), (40 * index % 256, 90, 200)).save(self.root / "output" / subfolder / filename,
                                                                        pnginfo=info)
            images.append({"filename": filename, "subfolder": subfolder, "type": "output"})
        return {save_id: {"images": images}}


def made_with(folder: Path) -> dict:
    """The settings the fake server made ``folder``'s result with."""
    with Image.open(folder / "result.png") as image:
        return json.loads(image.text["made"])


def fake_run(urls: list[str], bench: Path, out: Path, *extra: str) -> list[str]:
    """mca-eval generation on fake servers, no metrics."""
    return ["generation", str(bench), "--out", str(out), *(arg for url in urls for arg in ("--url", url)),
            "--no-metrics", "--quiet", "--steps", "2", *extra]


def test_patch_sweep_is_one_prompt_per_item_spread_over_servers_and_a_partly_done_item_runs_again(tmp_path, capsys):
    bench, out = generation_set(tmp_path / "set"), tmp_path / "out"
    with FakeComfy(tmp_path / "fake_0") as first, FakeComfy(tmp_path / "fake_1") as second:
        assert cli.main(fake_run([first.url, second.url], bench, out, *SWEEP)) == 0, capsys.readouterr()
        assert [len(first.prompts), len(second.prompts)] == [1, 1], "not one prompt per item, one item per server"
        assert all(sweep_chain(prompt) == [("sagi_end", "0.0, 0.5"), ("salq_start", "0.0, 0.5")]
                   for prompt in first.prompts + second.prompts)
        folders = {item: [out / "items" / f"{item}__{cell}" for cell in CELLS] for item in ("cat_beach", "cat_snow")}
        for cells in folders.values():
            records = [json.loads((folder / "item.json").read_text()) for folder in cells]
            for folder, record in zip(cells, records):
                settings = made_with(folder)  # each folder holds the result of its own cell, not a neighbour's
                assert (settings["sagi_end"], settings["salq_start"]) == tuple(value for _, value in record["sweep"])
                assert (folder / "subject.png").read_bytes() == (cells[0] / "subject.png").read_bytes()
            assert len({(record["fingerprint"], record["server"]) for record in records}) == 1
            assert [record["prompt_cells"] for record in records] == [4] * 4
        assert {json.loads((folders[item][0] / "item.json").read_text())["server"] for item in folders} == {
            first.url, second.url}
        assert (out / "sweep_grid.png").is_file() and len(read_csv(out / "results.csv")) == 8
        capsys.readouterr()

        kept = {folder: (folder / "result.png").stat().st_mtime_ns for folder in folders["cat_beach"]}
        (folders["cat_snow"][2] / "item.json").unlink()  # cat_snow is partly done, its other cells are scored
        (folders["cat_snow"][0] / "metrics.json").write_text('{"dino": 0.5}')
        assert cli.main(fake_run([first.url, second.url], bench, out, *SWEEP)) == 0
        printed = capsys.readouterr().out
        assert "4 item(s) already done" in printed and "generated 4, skipped 4 (already done)" in printed, printed
        rerun = first.prompts[1:] + second.prompts[1:]
        assert len(rerun) == 1 and "/cat_snow/" in json.dumps(rerun[0]), "not one prompt for the partly done item"
        assert all((folder / "item.json").is_file() for folder in folders["cat_snow"])
        assert not (folders["cat_snow"][0] / "metrics.json").exists(), "a remade cell kept its old metrics"
        assert {folder: (folder / "result.png").stat().st_mtime_ns for folder in folders["cat_beach"]} == kept

        record = folders["cat_beach"][1] / "item.json"
        record.write_text(json.dumps({**json.loads(record.read_text()), "fingerprint": "other"}))
        assert cli.main(fake_run([first.url], bench, out, *SWEEP)) == 2
        assert "1 item(s) made with other settings" in capsys.readouterr().err and len(first.prompts) == 2


@pytest.mark.parametrize("extra, reason", [
    (("--sweep", "MCA_DDIMInvert.steps=1,2", "--sweep", "sagi_end=0.0,0.5"),
     "MCA_DDIMInvert.steps cannot share a pass: each step count needs its own inversion"),
    (("--sweep", "sagi_end=0.0,0.5", "--sweep", "preset=generation,swap"),
     "preset cannot share a pass: MCA Schedule Sweep varies only the MCA Attention Patch's sagi_start"),
    (("--sweep-per-cell", "--sweep", "sagi_end=0.0,0.5", "--sweep", "salq_start=0.0,0.5"), "--sweep-per-cell")],
    ids=["steps", "preset", "flag"])
def test_sweep_of_another_input_falls_back_to_one_prompt_per_cell(tmp_path, capsys, extra, reason):
    bench, out = generation_set(tmp_path / "set"), tmp_path / "out"
    with FakeComfy(tmp_path / "fake") as server:
        code = cli.main(fake_run([server.url], bench, out, "--limit", "1", *extra))
        printed = capsys.readouterr().out
        assert code == 0, printed
        assert f"sweep: one prompt per cell ({reason}" in printed
        assert len(server.prompts) == 4 and not any(sweep_chain(prompt) for prompt in server.prompts)
    for folder in (out / "items").iterdir():
        record = json.loads((folder / "item.json").read_text())
        made = made_with(folder)
        assert record["prompt_cells"] == 1
        assert all(made[name.rpartition(".")[2]] == value for name, value in record["sweep"] if name != "preset")


def test_a_server_whose_patch_takes_no_sweep_is_refused_before_the_first_item(tmp_path, capsys):
    bench, out = generation_set(tmp_path / "set"), tmp_path / "out"
    with FakeComfy(tmp_path / "fake") as server:
        server.missing.add(("MCA_AttentionPatch", "sweep"))
        code = cli.main(fake_run([server.url], bench, out, *SWEEP))
        err = capsys.readouterr().err
        assert code == 2 and "has no sweep input (an older MCA-Ctrl pack)" in err and "--sweep-per-cell" in err, err
        assert not server.prompts


def test_schedule_settings_are_the_ones_the_pack_sweeps(pack):
    from mca_ctrl.mca_attention.sweep import SETTINGS

    assert sweep.SCHEDULE_SETTINGS is SETTINGS, "not the module ComfyUI loaded the pack's nodes with"


def test_sweep_values_are_read_as_set_reads_them_and_labelled_as_typed():
    """Values as run_workflow's parse_value reads ``--set``'s; labels, ids and folders keep ``str``'s form
    (``sagi_end=0.0``), not the pack's ``cell_label`` (``:g``: ``sagi_end=0``, numbers only)."""
    axis = sweep.parse_axis("Title.input=0.0, 0.10, 3, true, swap")
    assert [(type(value), value) for value in axis.values] == [(float, 0.0), (float, 0.1), (int, 3), (bool, True),
                                                                (str, "swap")]
    cell = (("sagi_end", 0.0), ("Title.input", "swap"))
    assert sweep.cell_label(cell) == "sagi_end=0.0, Title.input=swap" and sweep.cell_label(()) == ""
    dog = EvalItem(id="dog", task="generation", subject_image=Path("dog.png"), target_prompt="a dog")
    expanded = sweep.expand([dog], (sweep.parse_axis("sagi_end=0.0,1"),))
    assert [item.id for item in expanded] == ["dog__sagi_end=0.0", "dog__sagi_end=1"]


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


def test_an_item_redone_on_the_server_that_made_it_is_saved_and_fetched_again(servers, random_checkpoint, tmp_path,
                                                                              capsys):
    """Issue 25: delete one item's folder and run again on the same server. ComfyUI serves the identical prompt from
    its cache; the harness must still get the item's images (they were cleaned up after the first run)."""
    bench = one_item_set(tmp_path / "redo_set", "cat.png", id="redo_cat")
    shutil.copy(EXAMPLES / "mca_example_cat.png", bench / "cat.png")
    server, out = servers[0], tmp_path / "redo_out"
    args = ["generation", str(bench), "--out", str(out), "--url", server.url, "--no-metrics",
            *small_run_args(random_checkpoint, "generation")]
    assert cli.main(args) == 0, capsys.readouterr()
    first = np.asarray(Image.open(out / "items" / "redo_cat" / "result.png"))
    shutil.rmtree(out / "items" / "redo_cat")
    code = cli.main(args)
    printed = capsys.readouterr()
    assert code == 0 and "404" not in printed.out + printed.err, printed.out + printed.err
    again = np.asarray(Image.open(out / "items" / "redo_cat" / "result.png"))
    assert np.array_equal(again, first), "the same prompt, the same pixels (the PNG's metadata names the folder)"
    assert printed.out.strip().splitlines()[-1].startswith(f"cleaned up {server.url}"), printed.out


def test_two_servers_on_one_folder_report_what_the_other_removed_as_removed(servers):
    """Issue 25: the multi-GPU set-up (two servers, one ComfyUI clone): the second server's cleanup must not say that
    files the first one's removed were left on it."""
    server = servers[0]
    name = "mca_eval_shared_folder_check.png"
    (server.root / "input" / name).write_bytes(b"shared")
    first, second = cleanup.ServerFiles(server.url), cleanup.ServerFiles(server.url)
    for made in (first, second):
        made.add("input", name, b"shared")
    removed: set = set()
    lines = [cleanup.clean_up(made, removed) for made in (first, second)]
    assert not (server.root / "input" / name).exists()
    assert all(line.startswith(f"cleaned up {server.url}: removed 1 upload(s)") for line in lines), lines
