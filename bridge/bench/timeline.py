"""``turbo-bridge bench --modes timeline``: where an overlapped frame's interval goes, GPU stream by stream.

With ``--overlap on`` three CUDA streams run at once: the render thread's (frame i+1's text encoders
when they are in its graph, and its denoiser), the text stream (a new prompt's text encoders) and the
decode stream (frame i's decode and copy to the host). Whether the time a frame takes beyond its
denoiser is the GPU waiting (for the CPU, or a sync on the critical path) or the streams slowing each
other is what a timeline of every kernel on every stream, beside the render thread's CPU ranges, says.

For each dtype, VAE and size, the renderer (compiled, as the daemon's) is wrapped in an
``OverlappedRenderer`` with its text stream, as ``--overlap on``; for each change (a new prompt, a new
seed every frame) it is warmed up and timed without the profiler as ``bench --overlap on`` times it
(``overlap.timed_overlapped``: the profiler's own cost is the difference), then the same loop runs
under ``torch.profiler`` (CPU and CUDA activities): begin frame i+1, then collect frame i's pixels and
publish them to shared memory, in ``record_function`` ranges "begin", "collect" and "publish". Before
the frames a marker kernel on each stream (between synchronisations, in a range ``stream:ROLE``) says
which of the profiler's stream ids is which. ``timeline_stats.py`` cuts the kernels into frames at
the publications and sums them. On the CPU the profiler sees no device kernels: the rows give the
intervals and the CPU ranges alone and say so.
"""

from __future__ import annotations

import logging
import statistics
import uuid
from collections.abc import Iterator

import torch
from torch.autograd import DeviceType
from torch.profiler import profile, record_function, schedule

from ..outputs.shm import ShmWriter
from ..pipeline.render.overlapped import OverlappedRenderer
from .kernels import activities, profiled_renderer
from .measure import BenchOptions
from .overlap import overlapped_frames, timed_overlapped
from .timeline_stats import MARK, CpuRange, StreamKernel, frame_timelines, stream_roles, timeline_row

log = logging.getLogger(__name__)

CHANGES = ("prompt", "seed")  # what changes every frame: the text stream works for a new prompt only
WARM_FRAMES = 2  # the profiler's warm-up step (CUPTI starting): frames not recorded
RANGES = ("begin", "collect", "publish")  # the render thread's phases, as record_function ranges
STAGE = "stage:"  # the runner's stage ranges (render/runner.py), when profiling turns them on
# CUPTI's synchronisation records, if a profiler reports them as device events: waits, not kernels
SYNCS = ("Event Sync", "Stream Sync", "Stream Wait Event", "Context Sync", "cudaEvent")
NO_KERNELS = {
    "cpu": "profiled on the CPU, whose ops are no device kernels: intervals and CPU ranges alone",
    "cuda": "the profiler reported no device kernels (none inside CUDA graph replays with this torch/CUPTI?): "
            "intervals and CPU ranges alone",
}


def measure_timeline(opts: BenchOptions, device: torch.device, dtype_name: str, vae_name: str) -> Iterator[list[dict]]:
    """The rows of one (dtype, VAE): per size, one row per change (``timeline_stats.timeline_row`` and
    the interval without the profiler); yielded per size, so the caller can save each before the next."""
    renderer = profiled_renderer(opts, device, dtype_name, vae_name)  # as kernels.py's (the profiler set up first)
    # Every frame split into its streams, as a stream's frames are (each begun while the one before decodes). With
    # lone_whole a frame begun with nothing in flight renders in one graph on the render stream: the demo model's
    # frames (microseconds of GPU work) are done before the next begins, so on the card every frame was one graph
    # and the timeline showed no decode stream (test_bench_cpu's timeline test, H100, df2400a).
    overlapped = OverlappedRenderer(renderer, text_stream=True, lone_whole=False)
    guidance = renderer.family.default_guidance
    with ShmWriter(f"tb-timeline-{uuid.uuid4().hex[:8]}", max(opts.sizes), max(opts.sizes)) as shm:
        for size in opts.sizes:
            rows = []
            for change in CHANGES:
                # its warm-up frame compiles and captures (logged); then the frames without the profiler
                intervals = timed_overlapped(overlapped, change, size, "none", opts.frames, shm, guidance).intervals
                kernels, ranges = _profiled(overlapped, change, size, opts.frames, shm, guidance, device)
                row = _row(kernels, ranges, device)
                unprofiled = round(statistics.median(intervals), 4) if intervals else None  # none of one frame
                rows.append({"dtype": dtype_name, "vae": vae_name, "size": size, "change": change,
                             "device": device.type, "unprofiled_interval_ms": unprofiled, **row})
                log.info("timeline %s %s %d new %s: interval %.3f ms (%s unprofiled), GPU busy %s ms, idle %s, "
                         "streams at once %s", dtype_name, vae_name, size, change, row["interval_ms"],
                         rows[-1]["unprofiled_interval_ms"], row["busy_ms"], row["idle_ms"], row["overlap_ms"])
            yield rows
    del overlapped, renderer


def _profiled(overlapped: OverlappedRenderer, change: str, size: int, frames: int, shm: ShmWriter, guidance: float,
              device: torch.device) -> tuple[list[StreamKernel], list[CpuRange]]:
    """``frames`` steady frames of the overlapped loop under the profiler, after its warm-up step and
    the stream markers: the loop renders two more, the first (begun alone) and the last (collected
    with nothing begun after it), which bound the frames."""
    steps = schedule(wait=0, warmup=1, active=1, repeat=1)
    with profile(activities=activities(device), schedule=steps) as prof:
        overlapped_frames(overlapped, change, size, "none", WARM_FRAMES, shm, guidance, phase=record_function)
        prof.step()
        if device.type == "cuda":
            mark_streams(overlapped, device)
        overlapped_frames(overlapped, change, size, "none", frames + 2, shm, guidance, phase=record_function)
        prof.step()
    return kernels_and_ranges(prof.events())


def mark_streams(overlapped: OverlappedRenderer, device: torch.device) -> None:
    """One small kernel on each stream of the overlap, alone on the GPU, in a range ``stream:ROLE``.
    The decode and text streams are the overlap's own (private attributes: read, never changed); one
    not found is left unnamed (its kernels then go under its stream id)."""
    streams = {"render": torch.cuda.current_stream(device),  # begin_batch queues on this thread's stream
               "decode": getattr(getattr(overlapped, "_decoder", None), "_stream", None),
               "text": getattr(getattr(overlapped, "_text", None), "_stream", None)}
    probe = torch.zeros(1, device=device)
    torch.cuda.synchronize(device)
    for role, stream in streams.items():
        if stream is None:
            log.warning("timeline: no %s stream found on the overlapped renderer: its kernels stay unnamed", role)
            continue
        with record_function(f"{MARK}{role}"):
            with torch.cuda.stream(stream):
                probe.add_(1)
            torch.cuda.synchronize(device)


def kernels_and_ranges(events, names: tuple[str, ...] = RANGES) -> tuple[list[StreamKernel], list[CpuRange]]:
    """The device's kernels, copies and memsets with their streams (``device_resource_id``: for a CUDA
    event the stream id CUPTI gave it, for a CPU event a thread id), and the CPU ranges named in
    ``names``, the stage ranges and the stream markers."""
    kernels, ranges = [], []
    for event in events:
        start, end = event.time_range.start, event.time_range.end
        if event.device_type == DeviceType.CPU:
            if event.name in names or event.name.startswith((STAGE, MARK)):
                ranges.append(CpuRange(event.name, start, end))
        elif event.device_type == DeviceType.CUDA and not event.is_user_annotation \
                and not event.name.startswith("ProfilerStep") and event.name not in SYNCS:
            kernels.append(StreamKernel(event.name, start, end, event.device_resource_id))
    return kernels, ranges


def _row(kernels: list[StreamKernel], ranges: list[CpuRange], device: torch.device) -> dict:
    """The frames between the publications (the first and last frames only bound them), summed."""
    marks = [r for r in ranges if r.name.startswith(MARK)]
    phases = [r for r in ranges if not r.name.startswith(MARK)]
    published = sorted(r.end_us for r in phases if r.name == "publish")
    row = timeline_row(frame_timelines(kernels, phases, published[:-1]), stream_roles(kernels, marks))
    return {**row, "note": None if kernels else NO_KERNELS.get(device.type, NO_KERNELS["cuda"])}
