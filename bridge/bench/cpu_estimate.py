"""A GPU-sized model on the CPU: how long it would take, said before it starts.

``bench --weights random`` on a machine without CUDA used to spend many minutes in its first
plain diffusers call without a word. Before such a run, one frame's FLOPs are counted on the meta
device (the family's full-size architecture, no weights made: about a second) and this CPU's
matrix-multiply rate is measured in the run's dtypes (a fraction of a second each). Without an
explicit ``--device cpu`` the run is refused with the estimate; with it, the estimate is a warning.
Only the demo models (and ``null``) are small enough for the CPU.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch

from ..core.errors import ConfigError

log = logging.getLogger(__name__)

PROBE_S = 0.2  # matmul probe length per dtype
PROBE_N = 512  # probe matrices are N x N
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def small_enough(model: str) -> bool:
    """The models made to run on a CPU: the demo models (small, random weights) and ``null``."""
    from ..pipeline.loading.demo import is_demo

    return model == "null" or is_demo(model)


@dataclass(frozen=True)
class Work:
    """Frames of one kind in a run: how many, at what size, decoded by which VAE, in which dtype."""

    frames: int
    size: int
    vae: str  # "full" or "tiny"
    dtype: str  # "bf16", "fp16", "fp32"


@dataclass(frozen=True)
class Estimate:
    model: str
    frames: int
    seconds: float
    tflop: dict[tuple[int, str], float]  # per (size, VAE): one frame's TFLOP (text encoders, a UNet step, VAE decode)
    gflops: dict[str, float]  # per dtype: this CPU's measured matmul rate

    def line(self, command: str) -> str:
        per_frame = ", ".join(f"{t:.2f} TFLOP a frame at {size}x{size} {vae} VAE"
                              for (size, vae), t in self.tflop.items())
        rates = ", ".join(f"{g:.1f} GFLOP/s in {d}" for d, g in self.gflops.items())
        return (f"{command} --model {self.model} on the CPU: the full-size architecture needs {per_frame}; "
                f"this CPU did {rates} (a matmul probe just now), so this run's {self.frames} frames would take "
                f"about {_duration(self.seconds)}")


def estimate(model: str, work: list[Work]) -> Estimate:
    """Count one frame's FLOPs per (size, VAE) and measure this CPU's rate per dtype; add up ``work``."""
    tflop = {key: frame_flops(model, *key) / 1e12 for key in dict.fromkeys((w.size, w.vae) for w in work)}
    gflops = {name: matmul_gflops(DTYPES[name]) for name in dict.fromkeys(w.dtype for w in work)}
    seconds = sum(w.frames * tflop[(w.size, w.vae)] * 1e3 / gflops[w.dtype] for w in work)
    return Estimate(model, sum(w.frames for w in work), seconds, tflop, gflops)


def frame_flops(model: str, size: int, vae: str) -> float:
    """FLOPs of one text-to-image frame (text encoders, one UNet step, VAE decode), counted on the meta device."""
    from diffusers.utils import logging as diffusers_logging
    from torch.utils.flop_counter import FlopCounterMode

    from ..pipeline.loading.demo import NAMES, build_components, build_tiny_vae
    from ..pipeline.loading.loader import model_family

    diffusers_logging.set_verbosity_error()  # its dtype-cast notice means nothing on the meta device
    family = model_family(model)
    architecture = NAMES[model].architecture if model in NAMES else family  # random-sdxs: SDXS's own UNet
    parts = build_components(demo=False, device="meta", with_vae=vae == "full", family=architecture)
    decoder = parts["vae"] if vae == "full" else build_tiny_vae(torch.float32, "meta", family)
    unet = parts["unet"]
    ids = torch.zeros((1, 77), dtype=torch.long, device="meta")
    latents = torch.empty((1, unet.config.in_channels, size // 8, size // 8), device="meta")
    context = torch.empty((1, 77, unet.config.cross_attention_dim), device="meta")
    extra = {}
    if unet.config.addition_embed_type == "text_time":  # SDXL's micro-conditioning: pooled text + time ids
        pooled = parts[family.text_encoders[-1]].config.projection_dim
        extra["added_cond_kwargs"] = {"text_embeds": torch.empty((1, pooled), device="meta"),
                                      "time_ids": torch.empty((1, 6), device="meta")}
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        for name in family.text_encoders:
            parts[name](ids)
        unet(latents, torch.tensor([999.0], device="meta"), context, **extra)
        decoder.decode(latents)
    return float(counter.get_total_flops())


def matmul_gflops(dtype: torch.dtype) -> float:
    """This CPU's rate on an N x N matrix multiply in ``dtype`` (best case: real layers run slower)."""
    a, b = torch.randn((PROBE_N, PROBE_N)).to(dtype), torch.randn((PROBE_N, PROBE_N)).to(dtype)
    torch.mm(a, b)
    count, start = 0, time.perf_counter()
    while count < 2 or time.perf_counter() - start < PROBE_S:
        torch.mm(a, b)
        count += 1
    return 2 * PROBE_N**3 * count / (time.perf_counter() - start) / 1e9


def guard(command: str, model: str, requested: str | None, work: list[Work]) -> None:
    """On the CPU: refuse a GPU-sized run unless ``--device cpu`` was asked for (then warn), with the estimate."""
    if small_enough(model):
        return
    found = estimate(model, work)
    if requested is None:
        raise ConfigError(f"{found.line(command)}. Try the command with --model demo (small, random weights), or pass "
                          "--device cpu to run it anyway")
    log.warning("%s (--device cpu: running it anyway)", found.line(command))


def bench_work(opts) -> list[Work]:
    """The frames ``turbo-bridge bench`` renders with ``opts`` (``measure.BenchOptions``)."""
    from . import control as bench_control
    from . import style as bench_style
    from .frames import OWN_RUNS
    from .kernels import WARM_FRAMES
    from .lone_timeline import VARIANTS as LONE_VARIANTS
    from .lone_timeline import WARM_FRAMES as LONE_WARM
    from .overlap import lone_count
    from .timeline import CHANGES as TIMELINE_CHANGES
    from .timeline import WARM_FRAMES as TIMELINE_WARM

    work = [Work(5 + min(opts.frames, 30), opts.sizes[0], "full", "fp16")] if opts.baseline else []
    configs = [(dtype, "full" if vae == "full" else "tiny", size)  # a --vae folder: a tiny decoder
               for dtype in opts.dtypes for vae in opts.vaes for size in opts.sizes]
    if "kernels" in opts.modes:  # per size: the first frame, the warm-up, the profiler's own and the frames
        work += [Work(1 + WARM_FRAMES + 1 + opts.frames, size, vae, dtype) for dtype, vae, size in configs]
    if "timeline" in opts.modes:  # per size and change: a warm-up and the frames unprofiled, then profiled after
        # the profiler's warm-up frames, with a frame before and after (bench/timeline.py)
        per_size = len(TIMELINE_CHANGES) * (1 + opts.frames + TIMELINE_WARM + opts.frames + 2)
        work += [Work(per_size, size, vae, dtype) for dtype, vae, size in configs]
    if "lone" in opts.modes:  # per size and variant: the warm-up frames, the lone frames unprofiled, then the
        # profiler's warm-up frame and the lone frames profiled (bench/lone_timeline.py)
        per_size = len(LONE_VARIANTS) * (LONE_WARM + 2 * lone_count(opts.frames) + 1)
        work += [Work(per_size, size, vae, dtype) for dtype, vae, size in configs]
    if all(m in OWN_RUNS for m in opts.modes):  # no frame runs (bench/run.py)
        return work
    modes = [m for m in bench_style.expand(bench_control.expand(opts.modes)) if m != "lora" and m not in OWN_RUNS]
    # each mode and tiling: a warm-up and the frames, again with the sinks, and again overlapped (--overlap on);
    # lone frames after the plain frames and after each overlapped stream (bench/overlap.py)
    overlapped = sum(mode != "off" for mode in opts.overlaps)
    runs = (2 if opts.sinks else 1) + overlapped
    lone = lone_count(opts.frames) * (1 + overlapped)
    per_size = 1 + len(modes) * len(opts.tilings) * ((opts.frames + 1) * runs + lone) + opts.profile_frames
    work += [Work(per_size, size, vae, dtype) for dtype, vae, size in configs]
    return work


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
