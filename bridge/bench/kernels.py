"""``turbo-bridge bench --modes kernels``: where a frame's GPU time goes, stage by stage, kernel by kernel.

For each dtype, VAE and size, the renderer (compiled, as the daemon's) renders frames with a new
prompt each, synchronised per stage as the stage table is (``measure.stage_breakdown``), under
``torch.profiler`` (CPU and CUDA activities), after a warm-up. Every stage is a profiler range
``stage:NAME`` (``render/runner.py``) with a sync at each end, so each kernel goes to the stage whose
range it started in; ``kernel_stats.py`` sums the kernels per stage and category.

The daemon's frame replays one whole-frame CUDA graph; the stage table's path replays one graph
per stage, of the same compiled functions. On a compiled CUDA renderer each size runs two paths:
- ``graphs``: the stage table's, each stage replayed as its graph: the daemon's kernels and the
  daemon's gaps between them. Whether the profiler (CUPTI) reports the kernels inside a graph
  replay depends on the torch/CUDA version: stages with a window but no kernels say it did not;
- ``launches``: the same compiled functions called without graphs (``StageRunner.launching``):
  every kernel launched from Python, which any profiler sees; its gaps include the launches and
  the profiler's own overhead, which a replay does not pay.
Eager (the CPU, ``--compile off``) has the ``launches`` path alone; on the CPU the profiler sees no
device kernels, and the rows give the stage windows alone.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import nullcontext

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile, schedule

from ..pipeline.loading import loader
from ..pipeline.render.renderer import DiffusersRenderer
from .frames import frame_params
from .kernel_stats import Kernel, Window, stage_rows
from .measure import BenchOptions, frame_tuning

log = logging.getLogger(__name__)

WARM_FRAMES = 2  # per path, before profiling: the graphs path captures each stage's graph here
STAGE = "stage:"  # the prefix of the runner's stage ranges


def measure_kernels(opts: BenchOptions, device: torch.device, dtype_name: str, vae_name: str) -> Iterator[list[dict]]:
    """The rows of one (dtype, VAE): per size and path, one row per stage (``kernel_stats.stage_rows``);
    yielded per path, so the caller can save each before the next (a cut run keeps them)."""
    renderer = profiled_renderer(opts, device, dtype_name, vae_name)
    paths = ("graphs", "launches") if renderer.runner.graphed else ("launches",)
    for size in opts.sizes:
        # compiles (logged)
        renderer.render(frame_params("prompt", -1, size, guidance=renderer.family.default_guidance))
        for path in paths:
            kernels, windows = _profiled(renderer, size, opts.frames, path, device)
            rows = [{"dtype": dtype_name, "vae": vae_name, "size": size, "path": path, "frames": opts.frames,
                     "device": device.type, **row} for row in stage_rows(kernels, windows, opts.frames)]
            for row in rows:
                log.info("kernels %s %s %d %s %s: window %s ms, busy %.3f, %g kernels/frame", dtype_name, vae_name,
                         size, path, row["stage"], row["window_ms"], row["busy_ms"], row["kernels"])
            yield rows


def profiled_renderer(opts: BenchOptions, device: torch.device, dtype_name: str, vae_name: str) -> DiffusersRenderer:
    """The pipeline loaded and a renderer built as the frame runs' (compiled when ``opts`` say so), after
    the profiler's first session."""
    dtype = loader.DTYPES[dtype_name]
    with profile(activities=activities(device)):  # the profiler (CUPTI) set up before any graph is captured:
        pass  # graphs captured before its first session made their profiled replays fail (pytorch#75504)
    vae = None if vae_name == "full" else loader.load_tiny_vae(vae_name, opts.model, str(device), dtype)
    pipe = loader.load_pipeline(opts.model, str(device), dtype, opts.cache_dir, vae=vae)
    return DiffusersRenderer(pipe, str(device), dtype, compile=opts.compile, tuning=frame_tuning(opts))


def _profiled(renderer: DiffusersRenderer, size: int, frames: int, path: str,
              device: torch.device) -> tuple[list[Kernel], list[Window]]:
    """``frames`` frames of ``path``, a new prompt each, synced per stage, under the profiler."""
    guidance = renderer.family.default_guidance

    def frame() -> None:
        renderer.render(frame_params("prompt", 0, size, guidance=guidance))  # a prompt never seen before

    renderer.profile = True
    try:
        with renderer.runner.launching() if path == "launches" and renderer.runner.graphed else nullcontext():
            for _ in range(WARM_FRAMES):
                frame()
            # The profiler's own warm-up step (CUPTI starting) is a frame of its own, not recorded
            steps = schedule(wait=0, warmup=1, active=frames, repeat=1)
            with profile(activities=activities(device), schedule=steps) as prof:
                for _ in range(frames + 1):
                    frame()
                    prof.step()
    finally:
        renderer.profile = False
    return _kernels_and_windows(prof.events())


def activities(device: torch.device) -> list[ProfilerActivity]:
    return [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])


def _kernels_and_windows(events) -> tuple[list[Kernel], list[Window]]:
    """The device's kernels, copies and memsets, and the stages' CPU ranges, from the profiler's events."""
    kernels, windows = [], []
    for event in events:
        start, end = event.time_range.start, event.time_range.end
        if event.name.startswith(STAGE):
            if event.device_type == DeviceType.CPU:  # its GPU-side copy (a user annotation) is no kernel
                windows.append(Window(event.name.removeprefix(STAGE), start, end))
        elif event.device_type == DeviceType.CUDA and not event.is_user_annotation \
                and not event.name.startswith("ProfilerStep"):
            kernels.append(Kernel(event.name, start, end))
    return kernels, windows
