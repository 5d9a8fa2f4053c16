"""``turbo-bridge bench``: the seed article's tables, measured on this machine.

VRAM (before load, loaded, first frame, after N frames, peak), first-frame latency, median
FPS and jitter over N frames, a per-stage breakdown, bf16 vs fp16, sizes, full vs tiny VAE,
what changes every frame (the prompt, the seed, the input image: encoded and rendered
image-to-image, or the seed of an image-to-image frame), and the plain diffusers call as the
baseline in the same run. ``--model random`` (default) builds the full SDXL-Turbo architecture with random
weights: compute does not depend on weight values, so no download is needed.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import tempfile
import json
import logging
import statistics
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..core.frame import Frame
from ..core.params import Params
from ..core.scene import InputImage, Scene
from ..engine.sinks.ndi import NdiSender
from ..engine.sinks.record import Recorder
from ..engine.sinks.shm import ShmWriter
from . import bench_control, bench_style, loader
from .memory_budget import MemoryBudget, OverBudget, out_of_memory
from .optimize import configure_compile_cache
from .renderer import DiffusersRenderer

log = logging.getLogger(__name__)

PROMPT = "a cat on a windowsill, golden hour, film grain"
MODES = ("prompt", "seed", "input", "img2img", "control", "t2i", "lora", "ip-adapter")  # what changes every frame
# (control, t2i: bench_control.py, lora: lora_bench.py, ip-adapter: bench_style.py)
INPUT_STRENGTH = 0.5  # at steps 1: diffusers' steps 2, strength 0.5 (one UNet step)
_variation = itertools.count()  # every prompt-change frame gets a prompt never seen before


@dataclass(frozen=True)
class BenchOptions:
    model: str = "random"
    device: str = "cuda"
    frames: int = 100
    sizes: tuple[int, ...] = (512,)
    dtypes: tuple[str, ...] = ("bf16",)
    vaes: tuple[str, ...] = ("full", "tiny")
    modes: tuple[str, ...] = ("prompt", "seed")  # and "input", "img2img": see MODES
    tilings: tuple[str, ...] = ("none",)  # e.g. ("none", "xy"): seamless tiling on vs off
    sinks: tuple[str, ...] = ()  # "record", "ndi": each run again with these sinks, their publish time measured
    compile: bool = True
    baseline: bool = True
    profile_frames: int = 20
    memory_budget_gb: float | None = None
    precision: str = "default"  # "fp8": the UNet's linear layers in FP8 (fp8.py), deviation from bf16 measured
    cache_dir: Path = Path("~/.cache/turbo-bridge").expanduser()


@dataclass
class Run:
    dtype: str
    vae: str
    size: int
    mode: str
    median_ms: float
    p99_ms: float
    std_ms: float
    fps: float
    first_frame_s: float | None = None
    tiling: str = "none"
    precision: str = "default"  # fp8: the UNet's linear layers in FP8
    sinks: str = "shm"
    sink_ms: dict[str, dict[str, float]] = field(default_factory=dict)  # per sink: median, p99, max publish ms
    stages_ms: dict[str, float] = field(default_factory=dict)
    vram_gb: dict[str, float] = field(default_factory=dict)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def vram_gb(device: torch.device) -> dict[str, float]:
    """Device memory in use (all processes, like nvidia-smi) and this process's allocator figures."""
    if device.type != "cuda":
        return {}
    free, total = torch.cuda.mem_get_info(device)
    return {"used": round((total - free) / 1e9, 3), "allocated": round(torch.cuda.memory_allocated(device) / 1e9, 3),
            "peak_allocated": round(torch.cuda.max_memory_allocated(device) / 1e9, 3),
            "peak_reserved": round(torch.cuda.max_memory_reserved(device) / 1e9, 3)}


def _stats(times_ms: list[float]) -> dict[str, float]:
    ordered = sorted(times_ms)
    median = statistics.median(ordered)
    return {"median_ms": round(median, 3), "p99_ms": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 3),
            "std_ms": round(statistics.pstdev(ordered), 3), "fps": round(1e3 / median, 1)}


def _params(mode: str, i: int, size: int, tiling: str = "none") -> Params:
    if mode in bench_style.RUNS:
        return bench_style.params(mode, i, size, Params(prompt=PROMPT, tiling=tiling))
    if mode in bench_control.RUNS + bench_control.T2I_RUNS:
        return bench_control.params(mode, i, size, Params(prompt=PROMPT, seed=7, tiling=tiling))
    prompt = f"{PROMPT}, variation {next(_variation)}" if mode == "prompt" else PROMPT
    return Params(prompt=prompt, seed=i if mode in ("seed", "img2img") else 7, width=size, height=size,
                  strength=INPUT_STRENGTH, tiling=tiling)


@contextlib.contextmanager
def extra_sinks(names: tuple[str, ...]):
    """The show-output sinks, started as the daemon starts them: [(name, sink)]; stopped after."""
    made, closers = [], []
    with contextlib.ExitStack() as stack:
        if "record" in names:
            recorder = Recorder(Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tb-bench-"))))
            recorder.start()
            closers.append(recorder.close)
            made.append(("record", recorder))
        if "ndi" in names:
            sender = NdiSender(f"turbo-bridge-bench-{uuid.uuid4().hex[:6]}")
            sender.start()
            closers.append(sender.close)
            made.append(("ndi", sender))
        try:
            yield made
        finally:
            for close in closers:
                close()
            for name, sink in made:
                log.info("%s sink: %s", name, sink.state() if name == "record" else sink.health())


def _scene(mode: str, i: int, size: int) -> Scene:
    """Image-to-image modes: the same input ("img2img"), or new content every frame ("input")."""
    if mode in bench_control.RUNS + bench_control.T2I_RUNS:
        return bench_control.scene(mode, i, size)
    if mode in bench_style.RUNS:
        return bench_style.scene(mode, i, size)
    if mode not in ("input", "img2img"):
        return Scene()
    pixels = np.random.default_rng(0).integers(0, 256, (size, size, 4), np.uint8)
    if mode == "input":
        pixels[0, 0, :3] = (i & 0xFF, (i >> 8) & 0xFF, 1)  # a new digest: the VAE encoder runs
    return Scene(InputImage.from_pixels(pixels, "bench"))


def _free(device: torch.device) -> None:
    gc.collect()
    torch._dynamo.reset()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def baseline(opts: BenchOptions, device: torch.device) -> dict:
    """The plain diffusers call a user would write: fp16, fp32 VAE upcast, PIL output."""
    pipe = loader.load_pipeline(opts.model, str(device), torch.float16, opts.cache_dir)
    size = opts.sizes[0]
    times = []
    for i in range(5 + min(opts.frames, 30)):
        start = time.perf_counter()
        pipe(prompt=f"{PROMPT}, variation {i}", num_inference_steps=1, guidance_scale=0.0, height=size, width=size,
             generator=torch.Generator("cpu").manual_seed(i), output_type="pil")
        _sync(device)
        if i >= 5:
            times.append((time.perf_counter() - start) * 1e3)
    upcast = ", fp32 VAE upcast" if pipe.vae.dtype == torch.float32 else ""
    result = {"what": f"plain diffusers call, fp16{upcast}, PIL output, prompt change every call",
              "size": size, **_stats(times), "vram_gb": vram_gb(device)}
    del pipe
    _free(device)
    return result


def measure(opts: BenchOptions, device: torch.device, dtype_name: str, vae_name: str, shm: ShmWriter,
            lora_runs: list | None = None, fp8_runs: list | None = None) -> list[Run]:
    dtype = loader.DTYPES[dtype_name]
    before = vram_gb(device)
    vae = None if vae_name == "full" else loader.load_tiny_vae(vae_name, opts.model, str(device), dtype)
    pipe = loader.load_pipeline(opts.model, str(device), dtype, opts.cache_dir, vae=vae)
    if opts.precision == "fp8" and fp8_runs is not None:
        from .fp8 import deviation_from_bf16

        fp8_runs.append({"dtype": dtype_name, "vae": vae_name,
                         **deviation_from_bf16(pipe, str(device), dtype, opts.sizes[0])})
        log.info("fp8 vs %s on the same weights: %s", dtype_name, fp8_runs[-1])
        del pipe  # quantised in place, eager; the timed renderer quantises after fusing QKV
        _free(device)
        pipe = loader.load_pipeline(opts.model, str(device), dtype, opts.cache_dir, vae=vae)  # the same weights
    _free(device)
    loaded = vram_gb(device)
    nets = bench_control.controlnets(opts.model, pipe.unet.config, str(device), dtype, opts.modes) \
        if bench_control.wanted(opts.modes) or bench_control.wanted_t2i(opts.modes) else None
    style = bench_style.adapter(opts.model, pipe.unet, str(device), dtype) if bench_style.wanted(opts.modes) else None
    renderer = DiffusersRenderer(pipe, str(device), dtype, compile=opts.compile, controlnets=nets, ip_adapter=style,
                                 precision=opts.precision)
    runs = []
    lora_runs = [] if lora_runs is None else lora_runs
    for size in opts.sizes:
        start = time.perf_counter()
        renderer.render(_params("prompt", -1, size))  # compiles for this size (logged)
        first_frame_s = time.perf_counter() - start
        after_first = vram_gb(device)
        if "lora" in opts.modes:
            from .lora_bench import measure_lora_switch

            lora_runs.append({"dtype": dtype_name, "vae": vae_name, "size": size,
                              **measure_lora_switch(renderer, size, opts.frames, opts.cache_dir)})
        modes = [m for m in bench_style.expand(bench_control.expand(opts.modes)) if m != "lora"]
        for mode, tiling, sink_set in itertools.product(modes, opts.tilings, _sink_sets(opts.sinks)):
            # compiles image-to-image, or another tiling (logged)
            renderer.render(_params(mode, -1, size, tiling), _scene(mode, -1, size))
            times, sink_times = [], {}
            with extra_sinks(sink_set) as sinks, bench_style.no_recompile(mode):
                for i in range(opts.frames):
                    scene = _scene(mode, i, size)  # the input's copy and hash belong to the front end: not timed
                    params = _params(mode, i, size, tiling)
                    start = time.perf_counter()
                    out = renderer.render(params, scene)
                    frame = Frame(i + 1, i + 1, params, out.pixels, 0.0, time.time_ns())
                    shm.publish(frame)
                    end = time.perf_counter()
                    for name, sink in sinks:  # on the render thread, as in the daemon: timed on their own too
                        sink.publish(frame)
                        sink_times.setdefault(name, []).append((time.perf_counter() - end) * 1e3)
                        end = time.perf_counter()
                    times.append((end - start) * 1e3)
            run = Run(dtype_name, vae_name, size, mode, **_stats(times), first_frame_s=round(first_frame_s, 2),
                      tiling=tiling, precision=opts.precision, sinks="+".join(("shm", *sink_set)),
                      sink_ms={name: _sink_stats(v) for name, v in sink_times.items()})
            now = vram_gb(device)
            run.vram_gb = {"before_load": before.get("used"), "loaded": loaded.get("used"),
                           "first_frame": after_first.get("used"), "after_frames": now.get("used"),
                           "peak_allocated": now.get("peak_allocated"), "peak_reserved": now.get("peak_reserved")}
            runs.append(run)
            log.info("%s %s %d %s tiling %s sinks %s: median %.2f ms (%.1f FPS), p99 %.2f, std %.2f %s", dtype_name,
                     vae_name, size, mode, tiling, run.sinks, run.median_ms, run.fps, run.p99_ms, run.std_ms,
                     run.sink_ms or "")
        if runs:
            runs[-1].stages_ms = stage_breakdown(renderer, opts, size, shm, "prompt")
        if "input" in opts.modes:
            next(r for r in runs if r.size == size and r.mode == "input").stages_ms = \
                stage_breakdown(renderer, opts, size, shm, "input")
        if bench_control.wanted(opts.modes):
            next(r for r in runs if r.size == size and r.mode == "control_prompt").stages_ms = \
                stage_breakdown(renderer, opts, size, shm, "control_prompt")
        if bench_control.wanted_t2i(opts.modes):
            next(r for r in runs if r.size == size and r.mode == "t2i_prompt").stages_ms = \
                stage_breakdown(renderer, opts, size, shm, "t2i_prompt")
        if bench_style.wanted(opts.modes):
            next(r for r in runs if r.size == size and r.mode == "style_new").stages_ms = \
                stage_breakdown(renderer, opts, size, shm, "style_new")
    del renderer, pipe, vae, nets, style
    _free(device)
    return runs


def _sink_sets(sinks: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Without the extra sinks, then (when asked) with them: the frame time they add."""
    return [()] + ([sinks] if sinks else [])


def _sink_stats(times_ms: list[float]) -> dict[str, float]:
    ordered = sorted(times_ms)
    return {"median": round(statistics.median(ordered), 4),
            "p99": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 4), "max": round(ordered[-1], 4)}


def stage_breakdown(renderer: DiffusersRenderer, opts: BenchOptions, size: int, shm: ShmWriter,
                    mode: str) -> dict[str, float]:
    """Median per stage with a sync around each (``mode`` changes every frame), plus publishing."""
    renderer.profile = True
    per_stage: dict[str, list[float]] = {}
    for i in range(opts.profile_frames):
        out = renderer.render(_params(mode, i, size), _scene(mode, 100_000 + i, size))
        start = time.perf_counter()
        shm.publish(Frame(i + 1, i + 1, _params(mode, i, size), out.pixels, 0.0, time.time_ns()))
        stages = {**out.stages_ms, "publish": (time.perf_counter() - start) * 1e3}
        for name, ms in stages.items():
            per_stage.setdefault(name, []).append(ms)
    renderer.profile = False
    return {name: round(statistics.median(v), 3) for name, v in per_stage.items()}


def run_bench(opts: BenchOptions, json_path: Path | None) -> dict:
    device = torch.device(opts.device)
    if opts.compile:
        configure_compile_cache(opts.cache_dir)
    budget = MemoryBudget.apply(opts.memory_budget_gb, device) if opts.memory_budget_gb is not None else None
    report: dict = {"machine": machine(device), "options": {k: (str(v) if isinstance(v, Path) else v)
                                                              for k, v in asdict(opts).items()}, "runs": []}

    def save() -> None:
        if json_path:
            json_path.write_text(json.dumps(report, indent=2))

    if opts.baseline:
        try:
            report["baseline"] = baseline(opts, device)
            log.info("baseline: median %.2f ms", report["baseline"]["median_ms"])
        except Exception as exc:  # the plain call not fitting the budget is a finding, not the end
            if budget is None or not out_of_memory(exc):
                raise
            report["baseline_error"] = str(budget.over("the plain diffusers call, the baseline", exc))
            log.warning("%s", report["baseline_error"])
            _free(device)
        save()
        if bench_control.wanted(opts.modes):
            report["control_baseline"] = bench_control.baseline(opts, device, _stats, _sync, PROMPT)
            _free(device)
            log.info("ControlNet baseline: median %.2f ms", report["control_baseline"]["median_ms"])
            save()
        if bench_control.wanted_t2i(opts.modes):
            report["t2i_baseline"] = bench_control.baseline_t2i(opts, device, _stats, _sync, PROMPT)
            _free(device)
            log.info("T2I-Adapter baseline: median %.2f ms", report["t2i_baseline"]["median_ms"])
            save()
    with ShmWriter(f"tb-bench-{uuid.uuid4().hex[:8]}", max(opts.sizes), max(opts.sizes)) as shm:
        for dtype_name in opts.dtypes:
            for vae_name in opts.vaes:
                try:
                    runs = measure(opts, device, dtype_name, vae_name, shm, report.setdefault("lora", []),
                                   report.setdefault("fp8_deviation", []))
                except Exception as exc:
                    if budget is None or not out_of_memory(exc):
                        raise
                    error = budget.over(f"{dtype_name}, {vae_name} VAE, sizes {opts.sizes}, modes {opts.modes}", exc)
                    report["memory_budget"] = {**budget.verdict(report["runs"]), "fits": False, "error": str(error)}
                    save()
                    raise error from None
                report["runs"] += [asdict(r) for r in runs]
                if bench_style.wanted(opts.modes):
                    report.setdefault("ip_adapter", []).extend(bench_style.summary(runs))
                if budget is not None:
                    report["memory_budget"] = budget.verdict(report["runs"])
                save()
    if budget is not None and not report["memory_budget"]["fits"]:
        raise OverBudget(f"every run finished under the allocator's cap, but the device had "
                         f"{report['memory_budget']['peak_in_use_gb']} GB in use (CUDA context included): more than "
                         f"the {opts.memory_budget_gb:g} GB budget. Figures in {json_path}")
    return report


def machine(device: torch.device) -> dict:
    info = {"torch": torch.__version__, "device": str(device)}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(card=props.name, memory_gb=round(props.total_memory / 1e9, 1), cuda=torch.version.cuda)
    return info


def format_report(report: dict) -> str:
    lines = [f"machine: {report['machine']}"]
    budget = report.get("memory_budget")
    if budget:
        lines.append(f"memory budget {budget['budget_gb']:g} GB (allocator capped at {budget['allocator_cap_gb']} GB "
                     f"of the card's {budget['card_gb']:g} GB, {budget['context_gb']} GB CUDA context): "
                     f"{'fits' if budget['fits'] else 'does NOT fit'}; peak allocated "
                     f"{budget['peak_allocated_gb']} GB, reserved {budget['peak_reserved_gb']} GB, device in use "
                     f"{budget['peak_in_use_gb']} GB (CUDA context included)")
    if report.get("baseline_error"):
        lines.append(f"baseline: {report['baseline_error']}")
    base = report.get("baseline")
    if base:
        lines.append(f"baseline ({base['what']}): median {base['median_ms']:.2f} ms = {base['fps']:.1f} FPS")
    for key, label in (("control_baseline", "ControlNet"), ("t2i_baseline", "T2I-Adapter")):
        control = report.get(key)
        if control:
            lines.append(f"{label} baseline ({control['what']}): median {control['median_ms']:.2f} ms = "
                         f"{control['fps']:.1f} FPS")
    lines.append("| dtype | VAE | size | change/frame | tiling | sinks | median ms | FPS | p99 ms | std ms "
                 "| x baseline "
                 "| first frame s | VRAM GB used (loaded / after) |")
    lines.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in report["runs"]:
        ratio = f"{base['median_ms'] / r['median_ms']:.1f}" if base and base["size"] == r["size"] else "-"
        dtype = r["dtype"] + (" + fp8 UNet" if r.get("precision") == "fp8" else "")
        lines.append(f"| {dtype} | {r['vae']} | {r['size']} | {r['mode']} | {r.get('tiling', 'none')} | "
                     f"{r.get('sinks', 'shm')} | {r['median_ms']:.2f} | {r['fps']:.1f} | "
                     f"{r['p99_ms']:.2f} | {r['std_ms']:.2f} | {ratio} | {r['first_frame_s']} | "
                     f"{r['vram_gb'].get('loaded')} / {r['vram_gb'].get('after_frames')} (peak alloc {r['vram_gb'].get('peak_allocated')}) |")
    for r in report.get("fp8_deviation", []):
        lines.append(f"fp8 UNet linears vs {r['dtype']} on the same weights ({r['vae']} VAE, {r['size']}, eager, "
                     f"{r['frames']} frames): mean |diff| {r['mean_abs']:.2f} of 255, max {r['max_abs']}, "
                     f"PSNR {r['psnr_db']:.1f} dB")
    for r in report.get("lora", []):
        lines.append(f"LoRA ({r['dtype']}, {r['vae']} VAE, {r['what']}): base {r['base_ms']:.2f} ms, folded "
                     f"{r['folded_ms']:.2f} ms ({r['folded_vs_base_pct']:+.2f}%), switching frame "
                     f"{r['switch_frame_ms']:.2f} ms (+{r['switch_extra_ms']:.2f}, p99 {r['switch_p99_ms']:.2f}), "
                     f"weight moved every frame {r['reweight_frame_ms']:.2f} ms (+{r['reweight_extra_ms']:.2f}), "
                     f"no recompile; fold alone {r.get('fold_ms')} ms, first fold's frame "
                     f"{r.get('first_fold_frame_ms')} ms, first switch's frame {r.get('first_switch_frame_ms')} ms, "
                     f"slowest switch {r.get('switch_max_ms')} ms, stalled switches (frame, ms) {r.get('switch_slow')}")
    for r in report.get("ip_adapter", []):
        extras = ", ".join(f"{k.removesuffix('_extra_ms')} {v:+.2f}" for k, v in r.items() if k.endswith("_extra_ms"))
        lines.append(f"IP-Adapter ({r['dtype']}, {r['vae']} VAE, {r['size']}, new seed every frame): adapter off "
                     f"{r.get('style_off_ms', float('nan')):.2f} ms; ms added per frame: {extras}; no recompile")
    for r in report["runs"]:
        for name, ms in r.get("sink_ms", {}).items():
            lines.append(f"render-thread cost of the {name} sink ({r['vae']} VAE, {r['size']}, {r['mode']}, tiling "
                         f"{r.get('tiling', 'none')}): median {ms['median']:.3f} ms, p99 {ms['p99']:.3f}, "
                         f"max {ms['max']:.3f}")
    for r in report["runs"]:
        if r["stages_ms"]:
            stages = ", ".join(f"{k} {v:.2f}" for k, v in r["stages_ms"].items())
            what = {"input": "new input", "control_prompt": "one ControlNet, prompt change",
                    "t2i_prompt": "one T2I-Adapter, prompt change",
                    "style_new": "IP-Adapter, new style image"}.get(r["mode"],
                                                                                                  "prompt change")
            lines.append(f"stages ms ({r['dtype']}, {r['vae']} VAE, {r['size']}, {what}, synced per stage): {stages}")
    return "\n".join(lines)
