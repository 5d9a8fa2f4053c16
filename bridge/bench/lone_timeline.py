"""``turbo-bridge bench --modes lone``: where a lone change's frame spends its time, overlap off against on.

A lone change (one after a pause, as ``latency --rate 20`` sends them) waits for its whole frame:
overlap must not make that longer (issue 27). Here one renderer (compiled, as the daemon's) renders
lone frames, a new prompt and a new seed each after ``LONE_GAP_S`` idle, four ways with the same
graphs:
- ``off``: ``render_batch``, as ``--overlap off`` runs a frame (one graph, one sync);
- ``on``: ``begin_batch`` then its ``result`` at once (nothing in flight: one graph, its copy to the host
  collected after, ``OverlappedRenderer``'s ``lone_whole``);
- ``on-publisher``: the same, the result waited for on a thread of its own, as the daemon's
  publishing thread waits for it (the hand-over between the threads counted);
- ``on-split``: as ``on`` with ``lone_whole`` off, as every single frame was begun before it (runs S13 and
  S14: text, first half and decode graphs on three streams).
Each first unprofiled (the call's median, ms), then under ``torch.profiler`` with the calls in CPU
ranges (``lone``; ``begin`` and ``collect`` inside, ``collect`` seen where it runs on the calling thread:
the profiler records that thread's ranges): ``lone_stats.py`` splits each call into the CPU's
time before the first kernel, the GPU's span (busy, and idle between graphs and streams, with the
CPU ranges it fell in) and the time after the last kernel. On the CPU the profiler sees no device
kernels: the rows give the calls and the CPU ranges alone and say so.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import statistics
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import torch
from torch.profiler import profile, record_function, schedule

from ..core.params import Params
from ..core.scene import Scene
from ..pipeline.render.batch import ChannelRenderer
from ..pipeline.render.overlapped import OverlappedRenderer
from .frames import frame_params
from .kernels import activities, profiled_renderer
from .lone_stats import LONE, lone_frames, lone_row
from .measure import BenchOptions
from .overlap import LONE_GAP_S, lone_count, lone_times
from .timeline import MARK, NO_KERNELS, kernels_and_ranges, mark_streams
from .timeline_stats import stream_roles

log = logging.getLogger(__name__)

VARIANTS = ("off", "on", "on-publisher", "on-split")
WARM_FRAMES = 2  # per variant, before its timed frames: the first compiles and captures (logged)
SEEDS = 30_000  # each pass's seeds from here, apart from every other pass's: a new seed's noise is drawn
PHASES = (LONE, "begin", "collect")
Call = Callable[[Params, Scene], object]


def lone_params(i: int, size: int, guidance: float) -> Params:
    """A lone change as ``latency`` sends it: a prompt never seen before and a new seed."""
    return dataclasses.replace(frame_params("prompt", i, size, guidance=guidance), seed=SEEDS + i)


def measure_lone(opts: BenchOptions, device: torch.device, dtype_name: str, vae_name: str) -> Iterator[list[dict]]:
    """The rows of one (dtype, VAE): per size, one per variant (``lone_stats.lone_row`` and the
    unprofiled median); yielded per size, so the caller can save each before the next."""
    renderer = profiled_renderer(opts, device, dtype_name, vae_name)  # the profiler set up before any capture
    overlapped = OverlappedRenderer(renderer, text_stream=True)  # as serve --overlap on
    split = OverlappedRenderer(renderer, text_stream=True, lone_whole=False)  # its streams, graphs: its own
    plain = ChannelRenderer(renderer)  # as serve --overlap off
    guidance = renderer.family.default_guidance
    frames = lone_count(opts.frames)
    with ThreadPoolExecutor(1, thread_name_prefix="gpu-out") as publisher:
        calls: dict[str, tuple[Call, OverlappedRenderer]] = {  # each variant's call, and whose streams to name
            "off": (lambda params, scene: plain.render_batch([("main", params, scene)]), overlapped),
            "on": (lambda params, scene: _collected(_begun(overlapped, params, scene)), overlapped),
            "on-publisher": (lambda params, scene: publisher.submit(_collected,
                                                                    _begun(overlapped, params, scene)).result(),
                             overlapped),
            "on-split": (lambda params, scene: _collected(_begun(split, params, scene)), split)}
        passes = iter(range(0, 10**6, 1000))  # each pass's first frame index: seeds never repeat
        for size in opts.sizes:
            rows = []
            for variant in VARIANTS:
                call, streams = calls[variant]
                _frames(call, next(passes), WARM_FRAMES, size, guidance, gap_s=0.0)
                unprofiled = _frames(call, next(passes), frames, size, guidance)
                row = _profiled(call, streams, next(passes), frames, size, guidance, device)
                rows.append({"dtype": dtype_name, "vae": vae_name, "size": size, "variant": variant,
                             "device": device.type, "unprofiled_ms": round(statistics.median(unprofiled), 4), **row})
                log.info("lone %s %s %d %s: %.3f ms unprofiled; profiled %s ms, to the first kernel %s, GPU span %s "
                         "(busy %s), after the last %s", dtype_name, vae_name, size, variant, rows[-1]["unprofiled_ms"],
                         row["call_ms"], row["to_first_kernel_ms"], row["span_ms"], row["busy_ms"],
                         row["after_last_kernel_ms"])
            yield rows


def _begun(overlapped: OverlappedRenderer, params: Params, scene: Scene):
    with record_function("begin"):
        return overlapped.begin_batch([("main", params, scene)])


def _collected(staged) -> object:
    with record_function("collect"):
        return staged.result()


def _frames(call: Call, first: int, count: int, size: int, guidance: float, gap_s: float = LONE_GAP_S) -> list[float]:
    """ms from each call to its pixels, ``count`` lone frames each after ``gap_s`` idle, in ``LONE`` ranges."""
    return lone_times(call, ((lone_params(i, size, guidance), Scene()) for i in range(first, first + count)), gap_s,
                      phase=functools.partial(record_function, LONE))


def _profiled(call: Call, overlapped: OverlappedRenderer, first: int, count: int, size: int, guidance: float,
              device: torch.device) -> dict:
    """``count`` lone frames under the profiler, after its warm-up step (a frame) and the stream markers."""
    steps = schedule(wait=0, warmup=1, active=1, repeat=1)
    with profile(activities=activities(device), schedule=steps) as prof:
        _frames(call, first, 1, size, guidance)
        prof.step()
        if device.type == "cuda":
            mark_streams(overlapped, device)
        _frames(call, first + 1, count, size, guidance)
        prof.step()
    kernels, ranges = kernels_and_ranges(prof.events(), PHASES)
    marks = [r for r in ranges if r.name.startswith(MARK)]
    row = lone_row(lone_frames(kernels, [r for r in ranges if not r.name.startswith(MARK)]),
                   stream_roles(kernels, marks))
    return {**row, "note": None if kernels else NO_KERNELS.get(device.type, NO_KERNELS["cuda"])}
