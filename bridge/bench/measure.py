"""The timed loops of ``turbo-bridge bench``: one (dtype, VAE) configuration, and the baseline.

``measure`` loads the pipeline, builds a ``DiffusersRenderer`` as the daemon does and times every
(size, mode, tiling, sinks) run: median, p99 and jitter over N frames, VRAM at each step, and a
per-stage breakdown with a sync around each stage. ``baseline`` times the plain diffusers call a
user would write, in the same process.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import logging
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..core.frame import Frame
from ..outputs.ndi import NdiSender
from ..outputs.record import Recorder
from ..outputs.shm import ShmWriter
from ..pipeline.loading import loader
from ..pipeline.render.overlapped import OverlappedRenderer
from ..pipeline.render.renderer import DiffusersRenderer
from ..pipeline.speed.optimize import Tuning
from . import control as bench_control
from . import style as bench_style
from .frames import OWN_RUNS, PROMPT, frame_params, frame_scene
from .overlap import begun_and_collected, lone_frames, timed_overlapped
from .report import lanes_of

log = logging.getLogger(__name__)
DEFAULT_CACHE_DIR = Path("~/.cache/turbo-bridge").expanduser()  # the CLI passes serve's default


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
    # "on": each mode again as an overlapped stream, decode and text streams (bench/overlap.py); "decode": the
    # decode stream alone, the overlap as it was before the text stream (same run, same graphs: an A/B);
    # "urgent": as on, the text stream at a high CUDA priority; "lanes2".."lanes4": as on, with that many render
    # lanes (serve's --render-lanes) and frames in flight
    overlaps: tuple[str, ...] = ("off",)
    # The VAE decoder's knobs (speed/optimize.Tuning): the frame runs take the first of each; --modes
    # decode times the VAE decode alone for every combination
    vae_compile_modes: tuple[str, ...] = ("default",)
    cudnn_benchmarks: tuple[bool, ...] = (False,)  # Tuning's: frames must not depend on the thread
    vae_channels_lasts: tuple[bool, ...] = (True,)
    fused_text_qkv: bool = True  # Tuning's: the text encoders' Q/K/V as one matrix product per layer
    compile_scope: str = "calls"  # Tuning's: each call compiled whole, or the repeated blocks (speed/regions.py)
    compile_text: bool = True  # Tuning's: the text encoders compiled, or eager inside the frame graphs
    denoiser_mode: str = "default"  # Tuning's: the denoiser's torch.compile mode
    cache_dir: Path = DEFAULT_CACHE_DIR


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
    sinks: str = "shm"
    overlap: str = "off"  # on/decode: the next frame begun while this one decodes (median_ms: between publications)
    latency_ms: float | None = None  # overlap: median from a frame's begin to its publication
    begin_ms: float | None = None  # overlap: median of the render thread's begin_batch (its CPU work per frame)
    lone_ms: float | None = None  # median of a lone frame after an idle pause, call to pixels (overlap.lone_frames)
    sink_ms: dict[str, dict[str, float]] = field(default_factory=dict)  # per sink: median, p99, max publish ms
    stages_ms: dict[str, float] = field(default_factory=dict)
    vram_gb: dict[str, float] = field(default_factory=dict)


def sync(device: torch.device) -> None:
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


def stats(times_ms: list[float]) -> dict[str, float]:
    """Median, p99, jitter (std) and FPS of frame times."""
    ordered = sorted(times_ms)
    median = statistics.median(ordered)
    return {"median_ms": round(median, 3), "p99_ms": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 3),
            "std_ms": round(statistics.pstdev(ordered), 3), "fps": round(1e3 / median, 1)}


def streamed_vram(plain: dict[str, float], now: dict[str, float]) -> dict[str, float]:
    """An overlapped stream's memory: the plain frames' figures, with the device's use and the allocator's peaks
    after the stream (each render lane's graphs have their own memory pool)."""
    after = {"after_frames": now.get("used"), "peak_allocated": now.get("peak_allocated"),
             "peak_reserved": now.get("peak_reserved")}
    return {**plain, **{k: v for k, v in after.items() if v is not None}}


def stream_fps(intervals_ms: list[float]) -> float:
    """Frames per second of a stream from the intervals between its publications: their count over their sum."""
    return round(1e3 * len(intervals_ms) / sum(intervals_ms), 1)


@contextlib.contextmanager
def extra_sinks(names: tuple[str, ...]):
    """The show outputs, started as the daemon starts them (a recording running): [(name, output)]; closed after."""
    made = []
    with contextlib.ExitStack() as stack:
        if "record" in names:
            recorder = Recorder(Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tb-bench-"))))
            made.append(("record", recorder))
        if "ndi" in names:
            made.append(("ndi", NdiSender(f"turbo-bridge-bench-{uuid.uuid4().hex[:6]}")))
        started = []
        try:
            for name, output in made:
                output.start(lambda message, name=name: log.error("%s output: %s", name, message))
                started.append(output)
                if isinstance(output, Recorder):
                    output.start_recording()
            yield made
        finally:
            for output in reversed(started):
                output.close(30.0)
            for name, output in made:
                log.info("%s output: %s", name, output.health())


def free_memory(device: torch.device) -> None:
    """Drop what the last configuration left (models, compiled graphs), so the next one measures alone."""
    gc.collect()
    torch._dynamo.reset()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def baseline(opts: BenchOptions, device: torch.device) -> dict:
    """The plain diffusers call a user would write: the model card's dtype (fp16, fp32 VAE upcast for
    SDXL; bf16 for SANA-Sprint), PIL output."""
    family = loader.model_family(opts.model)
    dtype = loader.DTYPES[family.call_dtype]
    pipe = loader.load_pipeline(opts.model, str(device), dtype, opts.cache_dir)
    size = opts.sizes[0]
    times = []
    for i in range(5 + min(opts.frames, 30)):
        start = time.perf_counter()
        pipe(prompt=f"{PROMPT}, variation {i}", num_inference_steps=1, guidance_scale=family.default_guidance,
             height=size, width=size, generator=torch.Generator("cpu").manual_seed(i), output_type="pil",
             **family.call_kwargs(1))
        sync(device)
        if i >= 5:
            times.append((time.perf_counter() - start) * 1e3)
    upcast = ", fp32 VAE upcast" if pipe.vae.dtype == torch.float32 else ""
    result = {"what": f"plain diffusers call, {family.call_dtype}{upcast}, PIL output, prompt change every call",
              "size": size, **stats(times), "vram_gb": vram_gb(device)}
    del pipe
    free_memory(device)
    return result


def measure(opts: BenchOptions, device: torch.device, dtype_name: str, vae_name: str, shm: ShmWriter,
            lora_runs: list | None = None) -> list[Run]:
    dtype = loader.DTYPES[dtype_name]
    before = vram_gb(device)
    vae = None if vae_name == "full" else loader.load_tiny_vae(vae_name, opts.model, str(device), dtype)
    pipe = loader.load_pipeline(opts.model, str(device), dtype, opts.cache_dir, vae=vae)
    free_memory(device)
    loaded = vram_gb(device)
    nets = bench_control.controlnets(opts.model, pipe.unet.config, str(device), dtype, opts.modes) \
        if bench_control.wanted(opts.modes) or bench_control.wanted_t2i(opts.modes) else None
    style = bench_style.adapter(opts.model, pipe.unet, str(device), dtype) if bench_style.wanted(opts.modes) else None
    renderer = DiffusersRenderer(pipe, str(device), dtype, compile=opts.compile, controlnets=nets, ip_adapter=style,
                                 tuning=frame_tuning(opts))
    overlapped = {mode: OverlappedRenderer(renderer, text_stream=mode != "decode", urgent_text=mode == "urgent",
                                           lanes=lanes_of(mode))
                  for mode in opts.overlaps if mode != "off"}
    runs = []
    lora_runs = [] if lora_runs is None else lora_runs
    for size in opts.sizes:
        start = time.perf_counter()
        # compiles for this size (logged)
        renderer.render(frame_params("prompt", -1, size, guidance=renderer.family.default_guidance))
        first_frame_s = time.perf_counter() - start
        after_first = vram_gb(device)
        if "lora" in opts.modes:
            from .lora import measure_lora_switch

            lora_runs.append({"dtype": dtype_name, "vae": vae_name, "size": size,
                              **measure_lora_switch(renderer, size, opts.frames, opts.cache_dir)})
        modes = [m for m in bench_style.expand(bench_control.expand(opts.modes)) if m != "lora" and m not in OWN_RUNS]
        guidance = renderer.family.default_guidance  # a frame the family's users would render
        for mode, tiling, sink_set in itertools.product(modes, opts.tilings, _sink_sets(opts.sinks)):
            # compiles image-to-image, or another tiling (logged)
            renderer.render(frame_params(mode, -1, size, tiling, guidance), frame_scene(mode, -1, size))
            times, sink_times = [], {}
            with extra_sinks(sink_set) as sinks, bench_style.no_recompile(mode):
                for i in range(opts.frames):
                    scene = frame_scene(mode, i, size)  # the input's copy and hash belong to the front end: not timed
                    params = frame_params(mode, i, size, tiling, guidance)
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
            # the plain frames' render alone (once per mode and tiling: the sinks publish after it)
            lone = None if sink_set else lone_frames(renderer.render, mode, size, tiling, guidance, opts.frames)
            run = Run(dtype_name, vae_name, size, mode, **stats(times), first_frame_s=round(first_frame_s, 2),
                      tiling=tiling, sinks="+".join(("shm", *sink_set)),
                      sink_ms={name: _sink_stats(v) for name, v in sink_times.items()},
                      lone_ms=None if lone is None else round(statistics.median(lone), 3))
            now = vram_gb(device)
            vram = {"before_load": before.get("used"), "loaded": loaded.get("used"),
                    "first_frame": after_first.get("used"), "after_frames": now.get("used"),
                    "peak_allocated": now.get("peak_allocated"), "peak_reserved": now.get("peak_reserved")}
            run.vram_gb = {k: v for k, v in vram.items() if v is not None}  # none on the CPU: nothing measured
            runs.append(run)
            for streams, staged in ({} if sink_set else overlapped).items():
                streamed = timed_overlapped(staged, mode, size, tiling, opts.frames, shm, guidance)
                lone = lone_frames(begun_and_collected(staged), mode, size, tiling, guidance, opts.frames)
                # frames per second over the whole stream: with render lanes frames publish in bursts (two
                # lanes' frames close together, then a gap), and the median interval is the short one
                runs.append(Run(dtype_name, vae_name, size, mode,
                                **{**stats(streamed.intervals), "fps": stream_fps(streamed.intervals)},
                                first_frame_s=None, tiling=tiling, overlap=streams,
                                latency_ms=round(statistics.median(streamed.latencies), 3),
                                begin_ms=round(statistics.median(streamed.begins), 3),
                                lone_ms=round(statistics.median(lone), 3),
                                vram_gb=streamed_vram(run.vram_gb, vram_gb(device))))
                log.info("%s %s %d %s overlapped (%s): %.2f ms between frames (%.1f FPS), latency %.2f ms", dtype_name,
                         vae_name, size, mode, streams, runs[-1].median_ms, runs[-1].fps, runs[-1].latency_ms)
            log.info("%s %s %d %s tiling %s sinks %s: median %.2f ms (%.1f FPS), p99 %.2f, std %.2f %s", dtype_name,
                     vae_name, size, mode, tiling, run.sinks, run.median_ms, run.fps, run.p99_ms, run.std_ms,
                     run.sink_ms or "")
        if runs:
            next(r for r in reversed(runs) if r.overlap == "off").stages_ms = stage_breakdown(renderer, opts, size, shm,
                                                                                          "prompt")
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
    free_memory(device)
    return runs


def frame_tuning(opts: BenchOptions) -> Tuning:
    """The knobs of the frame runs: the first value of each of the decoder's lists, and the text encoders'."""
    return Tuning(opts.vae_compile_modes[0], opts.cudnn_benchmarks[0], opts.vae_channels_lasts[0],
                  fused_text_qkv=opts.fused_text_qkv, compile_scope=opts.compile_scope, compile_text=opts.compile_text,
                  denoiser_mode=opts.denoiser_mode)


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
        params = frame_params(mode, i, size, guidance=renderer.family.default_guidance)
        out = renderer.render(params, frame_scene(mode, 100_000 + i, size))
        start = time.perf_counter()
        shm.publish(Frame(i + 1, i + 1, params, out.pixels, 0.0, time.time_ns()))
        stages = {**out.stages_ms, "publish": (time.perf_counter() - start) * 1e3}
        for name, ms in stages.items():
            per_stage.setdefault(name, []).append(ms)
    renderer.profile = False
    return {name: round(statistics.median(v), 3) for name, v in per_stage.items()}
