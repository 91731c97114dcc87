"""MCA-Ctrl cost against the plain ComfyUI floor, in one process (`make bench`).

Full-size random-weight UNets (fp32 on CPU, fp16 on a GPU): SD1.5, and the SDXL family's smallest
architecture, Segmind Vega (SDXL's 2048-d text context and pooled-text ADM input; for it only the batch-3
sampling ratios are measured). Flux.1 dev's architecture (double then single blocks, RoPE, T5 context of
4096 and 256 tokens, CLIP-L pooled, guidance embedding, cfg 1): at a reduced width and depth on a CPU
(768 wide, 2 + 4 blocks), at full size (3072 wide, 19 + 38 blocks, bf16) on a GPU; batch-3 ratios only. Each figure is the median of --repeats runs after one warm-up; plain
and MCA sampling take their runs in turn, so that a shared machine's changing load falls on both alike. Peak memory: RSS above the phase's start on CPU (sampled every
5 ms), torch.cuda.max_memory_allocated on a GPU. Prints a table and writes JSON.

Schedule cells (``--cells N``, 4 unless 0): N cells of one swap item (N schedules of different SAGI end / SALQ start)
sampled in one pass (one patch holding the N schedules: 2 + N rows a chunk) against N separate runs (a single-schedule
patch each: 3 rows a chunk), at ``--cells-size`` px, taken in turn; the per-cell time ratio is the one pass's time over
the N runs' total, and the one pass's targets are compared with the separate runs' (max abs difference).
``--cells-only`` measures that row alone.
"""
from __future__ import annotations

import argparse
import importlib
import json
import platform
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import psutil
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "testbed"))
import comfy_host  # noqa: E402  (ComfyUI first on sys.path; the pack loaded through ComfyUI as mca_ctrl)
import random_models  # noqa: E402


class PeakMemory:
    """Peak memory of a phase: CUDA allocator peak on a GPU, sampled process RSS on a CPU.

    ``used``: above the phase's start (allocator state makes this noisy on a CPU); ``peak``: the
    absolute figure (process RSS incl. the model's weights, or CUDA bytes allocated).
    """

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            return self
        self.process = psutil.Process()
        self.base = self.peak = self.process.memory_info().rss
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.005)

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated()
            self.used = self.peak - self.base
        else:
            self.running = False
            self.thread.join()
            self.used = self.peak - self.base


def _timed(fn, device: torch.device) -> tuple[float, int, int]:
    """One run of ``fn``: seconds, peak bytes above the start, absolute peak bytes."""
    with PeakMemory(device) as memory:
        started = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
    return seconds, memory.used, memory.peak


def _summary(runs: list[tuple[float, int, int]]) -> dict:
    return {"seconds": statistics.median(run[0] for run in runs), "peak_bytes": max(run[1] for run in runs),
            "peak_total_bytes": max(run[2] for run in runs), "runs_seconds": [round(run[0], 3) for run in runs]}


def measure(fn, repeats: int, device: torch.device) -> dict:
    fn()  # warm-up
    return _summary([_timed(fn, device) for _ in range(repeats)])


def measure_interleaved(fns: dict, repeats: int, device: torch.device) -> dict:
    """Like ``measure`` for each of ``fns``, their runs taken in turn, the order flipped each round (A B, B A,
    ...), so that a change of load on a shared machine, or what a run leaves behind for the next (allocator,
    caches), falls on both sides of a ratio alike."""
    for fn in fns.values():
        fn()  # warm-up
    runs: dict = {name: [] for name in fns}
    for round_ in range(repeats):
        names = list(fns) if round_ % 2 == 0 else list(fns)[::-1]
        for name in names:
            runs[name].append(_timed(fns[name], device))
    return {name: _summary(taken) for name, taken in runs.items()}


@dataclass(frozen=True)
class Family:
    """A UNet family the bench measures: how to build it, its text conditioning, its sizes, what is measured."""

    title: str
    build: Callable[[torch.dtype], object]
    context_dim: int
    pooled_dim: int | None  # SDXL family: the pooled text embedding in its ADM input
    cpu_sizes: tuple[int, ...]
    gpu_sizes: tuple[int, ...]
    ratios_only: bool  # only plain batch-3 vs MCA sampling (no inversion, pipeline or single-forward figures)
    latent_channels: int = 4
    latent_dims: int = 4  # Qwen-Image: 5 ([batch, 16, 1, h, w])
    factor: int = 8  # image pixels per latent cell (Flux.2: 16)
    tokens: int = 77  # text tokens per prompt
    cfg: float = 7.5
    sampler: tuple[str, str] = ("ddim", "ddim_uniform")  # the plain floor's sampler and scheduler
    extra: dict | None = None  # more conditioning options (Flux's guidance)


def flux_model(dtype: torch.dtype):
    """Flux.1 dev's architecture: full size on a GPU, 768 wide with 2 double + 4 single blocks on a CPU."""
    full = torch.cuda.is_available()
    width, double, single = (3072, 19, 38) if full else (768, 2, 4)
    return random_models.tiny_flux_model(
        seed=1, context_in_dim=4096, vec_in_dim=768, hidden_size=width, num_heads=width // 128, depth=double,
        depth_single_blocks=single, axes_dim=[16, 56, 56], dtype=torch.bfloat16 if full else dtype)


def qwen_image_model(dtype: torch.dtype):
    """Qwen-Image's architecture: full size on a GPU (60 blocks, bf16), 768 wide with 4 blocks on a CPU."""
    full = torch.cuda.is_available()
    width, blocks = (3072, 60) if full else (768, 4)
    model = random_models.tiny_qwen_image_model(seed=1, blocks=blocks, width=width, context=3584,
                                                dtype=torch.bfloat16 if full else dtype)
    return model


def flux2_model(dtype: torch.dtype):
    """Flux.2 dev's architecture: full size on a GPU (8 + 48 blocks, bf16), 768 wide with 2 double + 4 single
    blocks on a CPU; its Mistral 3 text width 15360."""
    full = torch.cuda.is_available()
    width, double, single = (6144, 8, 48) if full else (768, 2, 4)
    return random_models.tiny_flux2_model(seed=1, double=double, single=single, width=width, context=15360,
                                          dtype=torch.bfloat16 if full else dtype)


def z_image_model(dtype: torch.dtype):
    """Z-Image's architecture: full size on a GPU (3840 wide, 30 layers, bf16), 768 wide with 4 layers (after its
    2 + 2 refiner layers) on a CPU; its Qwen3-4B text width 2560."""
    full = torch.cuda.is_available()
    width, layers = (3840, 30) if full else (768, 4)
    return random_models.tiny_z_image_model(seed=1, layers=layers, width=width, context=2560,
                                            dtype=torch.bfloat16 if full else dtype)


def latent_shape(family: Family, batch: int, side: int) -> tuple[int, ...]:
    """``[batch, channels, h, w]``, or with the frame axis of a 5-D family."""
    return (batch, family.latent_channels, *([1] * (family.latent_dims - 4)), side, side)


FAMILIES = {
    "sd15": Family("SD1.5", lambda dtype: random_models.sd15_model(seed=1, dtype=dtype), 768, None,
                   (64, 128, 256), (64, 128, 256, 512), ratios_only=False),
    "vega": Family("SDXL family (Segmind Vega)", lambda dtype: random_models.vega_model(seed=1, dtype=dtype), 2048,
                   1280, (64,), (1024,), ratios_only=True),
    "flux": Family("Flux.1 dev architecture (CPU: 768 wide, 2+4 blocks; GPU: full size, bf16)", flux_model, 4096,
                   768, (256,), (1024,), ratios_only=True, latent_channels=16, tokens=256, cfg=1.0,
                   sampler=("euler", "simple"), extra={"guidance": 3.5}),
    "qwen_image": Family("Qwen-Image architecture (CPU: 768 wide, 4 blocks; GPU: full size, bf16)", qwen_image_model,
                         3584, None, (256,), (1328,), ratios_only=True, latent_channels=16, latent_dims=5, tokens=64,
                         cfg=4.0, sampler=("euler", "simple"), extra={}),
    # 64 tokens a prompt, which the model pads to 512 (as it pads every real prompt)
    "flux2": Family("Flux.2 dev architecture (CPU: 768 wide, 2+4 blocks; GPU: full size, bf16)", flux2_model, 15360,
                    None, (256,), (1024,), ratios_only=True, latent_channels=128, factor=16, tokens=64, cfg=1.0,
                    sampler=("euler", "simple"), extra={"guidance": 4.0, "pooled_output": None}),
    # the Turbo template's cfg 1; 64 tokens a prompt (two of the model's 32-token blocks)
    "z_image": Family("Z-Image architecture (CPU: 768 wide, 4 layers; GPU: full size, bf16)", z_image_model, 2560,
                      None, (256,), (1024,), ratios_only=True, latent_channels=16, tokens=64, cfg=1.0,
                      sampler=("euler", "simple"), extra={"pooled_output": None}),
}


def prompt(family: Family, seed: int) -> list:
    """A CONDITIONING of random text tokens (and a pooled output where the family takes one)."""
    generator = torch.Generator().manual_seed(seed)
    text = torch.randn(1, family.tokens, family.context_dim, generator=generator)
    options = {} if family.pooled_dim is None else {
        "pooled_output": torch.randn(1, family.pooled_dim, generator=generator)}
    return [[text, {**options, **(family.extra or {})}]]


def batch_prompt(rows: list[list]) -> list:
    """One CONDITIONING entry whose rows are the given prompts (the plain ComfyUI batch-3 floor)."""
    text = torch.cat([row[0][0] for row in rows])
    pooled = [row[0][1]["pooled_output"] for row in rows if row[0][1].get("pooled_output") is not None]
    options = dict(rows[0][0][1])  # a family without pooled text keeps its None
    return [[text, {**options, **({"pooled_output": torch.cat(pooled)} if pooled else {})}]]


def adm_input(family: Family, batch: int, device, dtype) -> torch.Tensor | None:
    """The UNet's ADM input ``y`` (SDXL family: pooled text + six size/crop embeddings), random."""
    if family.pooled_dim is None:
        return None
    return torch.randn(batch, family.pooled_dim + random_models.SDXL_ADM_EXTRA).to(device, dtype)


def runtime() -> tuple[dict, torch.device, torch.dtype]:
    """ComfyUI booted; the pack's modules the bench drives, the device and the dtype it runs in."""
    comfy_host.boot_comfy()
    import comfy.model_management

    device = comfy.model_management.get_torch_device()
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    mods = {name: importlib.import_module(f"mca_ctrl.{name}") for name in
            ("mca_attention.engine", "mca_attention.invert", "mca_attention.comfy_patch",
             "mca_attention.schedule", "mca_attention.tasks", "mca_attention.run", "mca_attention.attention",
             "mca_attention.masks", "mca_attention.adapters")}
    return mods, device, dtype


def build(family: Family, device: torch.device, dtype: torch.dtype):
    """The family's random UNet as a ModelPatcher that loads onto ``device``."""
    model = family.build(dtype)
    if device.type == "cuda":
        import comfy.model_patcher

        model = comfy.model_patcher.ModelPatcher(model.model, load_device=device,
                                                 offload_device=torch.device("cpu"))
    return model


def square(size: int, start: float, stop: float) -> torch.Tensor:
    mask = torch.zeros(1, size, size)
    mask[:, int(size * start):int(size * stop), int(size * start):int(size * stop)] = 1.0
    return mask


def bench_sampling(family: Family, model, mods, device, size: int, steps: int, repeats: int) -> dict:
    import comfy.sample

    latent_size = size // family.factor
    invert, sampler = mods["mca_attention.invert"], mods["mca_attention.engine"]
    swap = mods["mca_attention.tasks"].PRESETS[mods["mca_attention.tasks"].Task.SWAP]
    adapter = mods["mca_attention.adapters"].model_adapter(model)
    patch = mods["mca_attention.comfy_patch"].patch_model(
        model, swap, adapter.preset_schedule(swap), square(size, 0.25, 0.75), square(size, 0.125, 0.625))
    sigmas = invert.schedule_sigmas(model, steps, None)
    empty = prompt(family, 0)
    images = [torch.randn(latent_shape(family, 1, latent_size), generator=torch.Generator().manual_seed(s))
              for s in (1, 2)]
    subject, condition = (invert.invert_latent(model, image, empty, empty, 1.0, sigmas) for image in images)
    rows = [prompt(family, s) for s in (3, 4, 5)]
    negative = prompt(family, 6)
    batch3 = batch_prompt(rows)
    zeros = torch.zeros(latent_shape(family, 3, latent_size))
    noise = comfy.sample.prepare_noise(zeros, 0)

    def plain():
        comfy.sample.sample(model, noise, steps, family.cfg, *family.sampler, batch3, negative, zeros,
                            disable_pbar=True, seed=0)

    def mca():
        sampler.mca_sample(patch, *rows, negative, subject, condition, 0, family.cfg,
                           blend_mask=square(size, 0.125, 0.625))

    def inversions(skip: bool):
        return lambda: [invert.invert_latent(model, image, empty, empty, 7.5, sigmas, skip_identical_uncond=skip)
                        for image in images]

    def swap_pipeline():
        for image in images:
            invert.invert_latent(model, image, empty, empty, 1.0, sigmas)
        mca()

    results = measure_interleaved({"plain_batch3": plain, "mca_sampler": mca}, repeats, device)
    if family.ratios_only:
        return results
    results.update(invert2_skip_cfg=measure(inversions(True), repeats, device),
                   invert2_forced_cfg=measure(inversions(False), repeats, device))
    if size == 64:
        results["swap_pipeline"] = measure(swap_pipeline, repeats, device)
    return results


# One pass vs separate runs: the same arithmetic on other batch sizes, so float32 rounding differs (and cfg on
# random weights amplifies it); reported against this tolerance, relative to the largest target value, not failed.
CELLS_TOLERANCE = 1e-3


def cell_schedules(base, cells: int) -> list:
    """``cells`` schedules of the swap preset as the family runs it, SAGI ending (and SALQ starting) at
    1/(cells+1), 2/(cells+1), ... of the steps: each cell a different SAGI/SALQ split."""
    from dataclasses import replace

    fractions = [round((i + 1) / (cells + 1), 4) for i in range(cells)]
    return [replace(base, sagi_start=0.0, sagi_end=f, salq_start=f, salq_end=1.0) for f in fractions]


def bench_cells(family: Family, model, mods, device, size: int, steps: int, repeats: int, cells: int) -> dict:
    """N schedule cells of one swap item: one pass (N targets against the shared condition and subject rows)
    vs N separate single-schedule runs, interleaved; the largest difference between their targets; and the floor
    of their ratio: ComfyUI's plain sampler on the same rows (2 + N a chunk once, against 3 a chunk N times)."""
    import comfy.sample

    latent_size = size // family.factor
    invert, sampler = mods["mca_attention.invert"], mods["mca_attention.engine"]
    comfy_patch = mods["mca_attention.comfy_patch"]
    swap = mods["mca_attention.tasks"].PRESETS[mods["mca_attention.tasks"].Task.SWAP]
    adapter = mods["mca_attention.adapters"].model_adapter(model)
    schedules = cell_schedules(adapter.preset_schedule(swap), cells)
    labels = [f"sagi_end=salq_start={s.sagi_end:g}" for s in schedules]
    subject_mask, edit_mask = square(size, 0.25, 0.75), square(size, 0.125, 0.625)
    one_patch = comfy_patch.patch_model(model, swap, schedules, subject_mask, edit_mask, labels=labels)
    separate_patches = [comfy_patch.patch_model(model, swap, s, subject_mask, edit_mask, labels=[label])
                        for s, label in zip(schedules, labels)]
    sigmas = invert.schedule_sigmas(model, steps, None)
    empty = prompt(family, 0)
    images = [torch.randn(latent_shape(family, 1, latent_size), generator=torch.Generator().manual_seed(s))
              for s in (1, 2)]
    subject, condition = (invert.invert_latent(model, image, empty, empty, 1.0, sigmas) for image in images)
    rows = [prompt(family, s) for s in (3, 4, 5)]
    negative = prompt(family, 6)
    outputs: dict = {}

    def sample(patch, per_pass: int):
        return sampler.mca_sample(patch, *rows, negative, subject, condition, 0, family.cfg,
                                  blend_mask=square(size, 0.125, 0.625), targets_per_pass=per_pass)

    def one_pass():
        outputs["one_pass"] = sample(one_patch, cells).targets

    def separate():
        outputs["separate"] = torch.cat([sample(patch, 1).targets for patch in separate_patches])

    def plain(batch: int):
        """ComfyUI's own sampler on the unpatched model, ``batch`` rows a chunk: the floor's forwards."""
        zeros = torch.zeros(latent_shape(family, batch, latent_size))
        text = batch_prompt([prompt(family, 10 + i) for i in range(batch)])
        return lambda: comfy.sample.sample(model, comfy.sample.prepare_noise(zeros, 0), steps, family.cfg,
                                           *family.sampler, text, negative, zeros, disable_pbar=True, seed=0)

    plain_one_pass, plain_row = plain(2 + cells), plain(3)  # the rows of one pass; of one separate run

    def plain_separate():
        for _ in range(cells):
            plain_row()

    results = measure_interleaved({"one_pass": one_pass, "separate": separate, "plain_one_pass": plain_one_pass,
                                   "plain_separate": plain_separate}, repeats, device)
    a, b = outputs["one_pass"].float().cpu(), outputs["separate"].float().cpu()
    difference = (a - b).abs()
    pairs = zip(results["one_pass"]["runs_seconds"], results["separate"]["runs_seconds"])
    floor = results["plain_one_pass"]["seconds"] / results["plain_separate"]["seconds"]
    results.update(cells=cells, size=size, labels=labels, shape=list(a.shape), floor_ratio=round(floor, 3),
                   round_ratios=[round(one / apart, 3) for one, apart in pairs],
                   max_abs_difference=float(difference.max()), max_abs_target=float(b.abs().max()),
                   max_abs_difference_per_cell=[float(d.max()) for d in difference], tolerance=CELLS_TOLERANCE,
                   within_tolerance=bool(difference.max() <= CELLS_TOLERANCE * b.abs().max()))
    return results


def bench_unet_forward(family: Family, model, mods, device, dtype, size: int, repeats: int) -> dict:
    """One UNet forward of batch 6 (3 rows x cond/uncond): plain, SALQ-step (from the family's preset site)
    and SAGI-step."""
    schedule_module, run_module = mods["mca_attention.schedule"], mods["mca_attention.run"]
    swap = mods["mca_attention.tasks"].PRESETS[mods["mca_attention.tasks"].Task.SWAP]
    run = run_module.MCARun(total_steps=1)
    latent_size = size // family.factor
    unet = model.model.diffusion_model.to(device)
    x = torch.randn(6, 4, latent_size, latent_size).to(device, dtype)
    t = torch.full((6,), 500.0, device=device)
    context = torch.randn(6, 77, family.context_dim).to(device, dtype)
    y = adm_input(family, 6, device, dtype)
    sigmas = torch.tensor([10.0, 5.0, 1.0, 0.0], device=device)
    figures = {}
    for name, schedule in (("plain", None),
                           ("salq_step", schedule_module.MCASchedule(0.0, 0.0, 0.0, 1.0, None)),
                           ("sagi_step", schedule_module.MCASchedule(0.0, 1.0, 0.0, 1.0, None))):
        options = {"cond_or_uncond": [1, 0], "sigmas": sigmas[1:2].repeat(6), "sample_sigmas": sigmas,
                   "original_shape": list(x.shape), run_module.RUN_KEY: run_module.RunStep(run, 0)}
        if schedule is not None:
            patched = mods["mca_attention.comfy_patch"].patch_model(
                model, swap, schedule, square(size, 0.25, 0.75), square(size, 0.125, 0.625))
            options.update(patched.model_options["transformer_options"])
        with torch.inference_mode():
            figures[name] = measure(lambda opts=options: unet(x, t, context=context, y=y, transformer_options=opts),
                                    repeats, device)
    return figures


def dense_site_attention(q_t, k_s, v_s, k_c, v_c, subject_mask, edit_mask, heads):
    """Like the official code: full score matrices with masked logits, then blend."""
    b, n, inner = q_t.shape
    d = inner // heads

    def split(t):
        return t.reshape(b, t.shape[1], heads, d).transpose(1, 2)

    q, ks, vs, kc, vc = map(split, (q_t, k_s, v_s, k_c, v_c))
    low = torch.finfo(q.dtype).min
    fg = ((q @ ks.transpose(-1, -2)) * d ** -0.5).masked_fill(subject_mask.view(1, 1, 1, -1) <= 0.5, low)
    bg = ((q @ kc.transpose(-1, -2)) * d ** -0.5).masked_fill(edit_mask.view(1, 1, 1, -1) > 0.5, low)
    out_fg, out_bg = fg.softmax(-1) @ vs, bg.softmax(-1) @ vc
    weight = edit_mask.view(1, 1, -1, 1)
    return (weight * out_fg + (1 - weight) * out_bg).transpose(1, 2).reshape(b, n, inner)


def bench_site(variant: str, repeats: int) -> dict:
    """One SALQ call at a 64 x 64-token site (512 px image), batch 2 (cond and uncond): time and memory."""
    comfy_host.import_pack_without_host()  # plain torch: this fresh process needs no ComfyUI
    attention = importlib.import_module("mca_ctrl.mca_attention.attention")
    masks = importlib.import_module("mca_ctrl.mca_attention.masks")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    generator = torch.Generator().manual_seed(0)
    q_t, k_s, v_s, k_c, v_c = (torch.randn(2, 4096, 320, generator=generator).to(device, dtype) for _ in range(5))
    subject = masks.site_mask(square(512, 0.25, 0.75)[0], 64, 64).to(device)
    edit = masks.site_mask(square(512, 0.125, 0.625)[0], 64, 64).to(device)
    if variant == "ours":
        plan = attention.plan_regions(subject, edit)
        subject_keys, condition_keys = attention.KeySource(k_s, v_s), attention.KeySource(k_c, v_c)
        fn = lambda: attention.blend_regions(q_t, subject_keys, q_t, condition_keys, plan, 8)  # noqa: E731
    else:
        fn = lambda: dense_site_attention(q_t, k_s, v_s, k_c, v_c, subject, edit, 8)  # noqa: E731
    with torch.inference_mode():
        return measure(fn, repeats, device)


def site_in_subprocess(variant: str, repeats: int) -> dict:
    """Each variant in a fresh process, so that one's allocations do not hide the other's peak."""
    out = subprocess.run([sys.executable, __file__, "--site", variant, "--repeats", str(repeats)],
                         capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_family(family: Family, mods: dict, device: torch.device, dtype: torch.dtype, args) -> dict:
    """Every figure of one family at each of its sizes."""
    model = build(family, device, dtype)
    sizes = args.sizes or (family.gpu_sizes if device.type == "cuda" else family.cpu_sizes)
    report = {"title": family.title, "sizes": {}}
    if args.cells:
        report["cells"] = bench_cells(family, model, mods, device, args.cells_size, args.steps, args.repeats,
                                      args.cells)
        print(f"-- {family.title}: {args.cells} schedule cells at {args.cells_size} px done", flush=True)
    if args.cells_only:
        return report
    for size in sizes:
        figures = bench_sampling(family, model, mods, device, size, args.steps, args.repeats)
        if not family.ratios_only:
            figures["unet_forward_batch6"] = bench_unet_forward(family, model, mods, device, dtype, size, args.repeats)
        report["sizes"][size] = figures
        print(f"-- {family.title}: {size} px done", flush=True)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--families", nargs="+", choices=list(FAMILIES), default=list(FAMILIES))
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="image sizes in px (every family)")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None,
                        help="default benchmarks/results/bench_mca.json (bench_cells.json with --cells-only)")
    parser.add_argument("--cells", type=int, default=4,
                        help="schedule cells of one swap item, one pass vs separate runs (0: not measured)")
    parser.add_argument("--cells-size", type=int, default=64, help="image size in px of the schedule-cell row")
    parser.add_argument("--cells-only", action="store_true", help="measure the schedule-cell row alone")
    parser.add_argument("--site", choices=["ours", "dense"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.json = args.json or REPO / "benchmarks" / "results" / (
        "bench_cells.json" if args.cells_only else "bench_mca.json")
    if args.site:
        print(json.dumps(bench_site(args.site, args.repeats)))
        return

    mods, device, dtype = runtime()
    on_gpu = device.type == "cuda"
    args.steps = args.steps or (50 if on_gpu else 5)
    report = {"machine": f"{platform.processor() or platform.machine()}, {psutil.cpu_count()} cores, "
                         f"{torch.cuda.get_device_name() if on_gpu else 'CPU'}",
              "torch": torch.__version__, "dtype": str(dtype), "steps": args.steps, "repeats": args.repeats,
              "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                       cwd=REPO).stdout.strip(),
              "families": {}}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    for name in args.families:  # the JSON after each family, so that a run cut short keeps what it measured
        report["families"][name] = bench_family(FAMILIES[name], mods, device, dtype, args)
        args.json.write_text(json.dumps(report, indent=2))
    if not args.cells_only:
        report["site_64x64"] = {variant: site_in_subprocess(variant, args.repeats) for variant in ("ours", "dense")}
    args.json.write_text(json.dumps(report, indent=2))
    print_table(report)


def _ratio_columns(f: dict) -> str:
    """Plain batch-3 and MCA sampling: seconds, time ratio, peak memory ratio, deltas above the start."""
    mib = 1024 ** 2
    plain, mca = f["plain_batch3"], f["mca_sampler"]
    return (f"{plain['seconds']:>10.2f} {mca['seconds']:>8.2f} {mca['seconds'] / plain['seconds']:>6.3f} "
            f"{mca['peak_total_bytes'] / plain['peak_total_bytes']:>9.3f} "
            f"{plain['peak_bytes'] / mib:>5.0f}/{mca['peak_bytes'] / mib:<5.0f}")


def _other_columns(f: dict) -> str:
    """Inversion skip-CFG vs forced CFG, and single batch-6 UNet forwards (where measured)."""
    if "invert2_skip_cfg" not in f:
        return ""
    skip, forced, fwd = f["invert2_skip_cfg"]["seconds"], f["invert2_forced_cfg"]["seconds"], f["unet_forward_batch6"]
    return (f" {skip:>10.2f} {forced:>9.2f} {skip / forced:>6.3f} "
            f"{fwd['plain']['seconds']:>9.3f} {fwd['salq_step']['seconds']:>9.3f} {fwd['sagi_step']['seconds']:>9.3f}")


def print_cells(report: dict) -> None:
    """The schedule-cell row of each family: one pass vs N separate runs."""
    rows = [(family["title"], family["cells"]) for family in report["families"].values() if "cells" in family]
    if not rows:
        return
    mib = 1024 ** 2
    print("schedule cells of one swap item: one pass vs separate runs; per-cell ratio = one pass / separate total; "
          "peak: process RSS (CPU) / CUDA allocated (GPU) MiB, absolute (above the phase's start)")
    print(f"{'family':<28} {'px':>4} {'N':>2} {'one pass s':>10} {'separate s':>10} {'ratio':>6} {'floor':>6} "
          f"{'rounds':>11} "
          f"{'peak one pass':>15} {'peak separate':>15} {'max |diff|':>10} {'max |x|':>8} within")
    for title, c in rows:
        one, sep = c["one_pass"], c["separate"]
        print(f"{title[:28]:<28} {c['size']:>4} {c['cells']:>2} {one['seconds']:>10.2f} {sep['seconds']:>10.2f} "
              f"{one['seconds'] / sep['seconds']:>6.3f} {c.get('floor_ratio', float('nan')):>6.3f} "
              f"{min(c['round_ratios']):>5.3f}-{max(c['round_ratios']):<5.3f} "
              f"{one['peak_total_bytes'] / mib:>7.0f} ({one['peak_bytes'] / mib:>4.0f}) "
              f"{sep['peak_total_bytes'] / mib:>7.0f} ({sep['peak_bytes'] / mib:>4.0f}) "
              f"{c['max_abs_difference']:>10.2e} {c['max_abs_target']:>8.2f} "
              f"{'yes' if c['within_tolerance'] else 'NO'} ({c['tolerance']:g} x max |x|)")


def print_table(report: dict) -> None:
    mib = 1024 ** 2
    print(f"\nmachine: {report['machine']}  torch {report['torch']}  {report['dtype']}  "
          f"steps {report['steps']}  median of {report['repeats']}  commit {report['commit']}")
    print_cells(report)
    if "site_64x64" not in report:
        return
    print("mem ratio: peak process RSS (CPU) / CUDA bytes allocated (GPU), MCA over plain; "
          "delta MiB: peak above the phase's start")
    print(f"{'size':>5} {'plain b3 s':>10} {'MCA s':>8} {'ratio':>6} {'mem ratio':>9} {'delta MiB':>11} "
          f"{'inv skip s':>10} {'inv cfg s':>9} {'ratio':>6} {'fwd plain':>9} {'fwd SALQ':>9} {'fwd SAGI':>9}")
    for family in report["families"].values():
        print(family["title"])
        for size, f in family["sizes"].items():
            print(f"{size:>5} {_ratio_columns(f)}{_other_columns(f)}")
            if "swap_pipeline" in f:
                print(f"      swap pipeline (2 inversions + MCA sampling): {f['swap_pipeline']['seconds']:.2f} s "
                      f"vs plain batch-3 sampling {f['plain_batch3']['seconds']:.2f} s")
    site = report["site_64x64"]
    print(f"site 64x64 tokens, SALQ: ours {site['ours']['seconds'] * 1000:.1f} ms / "
          f"{site['ours']['peak_bytes'] / mib:.0f} MiB; dense {site['dense']['seconds'] * 1000:.1f} ms / "
          f"{site['dense']['peak_bytes'] / mib:.0f} MiB")


if __name__ == "__main__":
    main()
