"""Where one lone frame's time goes (``bench --modes lone``), from the profiler's kernels and CPU ranges.

A lone frame is a call after an idle pause, from the call to its pixels in host memory (a CPU range,
``lone``). Its time splits into: the CPU's work before the GPU's first kernel (tokenizing, noise,
launches), the GPU's span from its first kernel to its last (its busy time and the idle gaps inside:
waits between graphs and streams), and the time after the last kernel (the sync and the copy out of
the pinned buffer). Overlap off and on side by side say which part a lone change's extra time is in.
Pure functions of names, streams and times (microseconds, one clock): no torch.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from .timeline_stats import CpuRange, FrameTimeline, Span, StreamKernel, frame_timelines, timeline_row

LONE = "lone"  # the CPU range of one lone frame's call


@dataclass(frozen=True)
class LoneFrame:
    """One lone frame, microseconds; the GPU's parts None where the profiler saw no kernel."""
    call_us: float
    to_first_kernel_us: float | None
    span_us: float | None  # first kernel's start to last kernel's end
    after_last_kernel_us: float | None
    timeline: FrameTimeline  # over the call: busy, each stream's time, idle gaps and the CPU ranges they fell in

    @property
    def idle_in_span_us(self) -> float | None:
        return None if self.span_us is None else self.span_us - self.timeline.busy_us


def lone_frames(kernels: list[StreamKernel], ranges: list[CpuRange]) -> list[LoneFrame]:
    """One ``LoneFrame`` per ``LONE`` range, in time order; kernels outside every call are left out."""
    frames = []
    inner = [r for r in ranges if r.name != LONE]  # the ranges inside the calls (begin, collect)
    for call in sorted((r for r in ranges if r.name == LONE), key=lambda r: r.start_us):
        lo, hi = call.start_us, call.end_us
        (timeline,) = frame_timelines(kernels, inner, [lo, hi])
        inside: list[Span] = [(max(k.start_us, lo), min(k.end_us, hi)) for k in kernels
                              if k.start_us < hi and k.end_us > lo]
        if not inside:
            frames.append(LoneFrame(hi - lo, None, None, None, timeline))
            continue
        first, last = min(s for s, _ in inside), max(e for _, e in inside)
        frames.append(LoneFrame(hi - lo, first - lo, last - first, hi - last, timeline))
    return frames


def lone_row(frames: list[LoneFrame], roles: dict[int, str]) -> dict:
    """Medians over ``frames`` (each figure on its own: medians of parts need not add up), then the
    timeline's streams, idle time by CPU range and longest gaps over the calls (``timeline_row``)."""
    row = timeline_row([f.timeline for f in frames], roles)
    del row["interval_ms"], row["overlap_ms"]  # the call's time, below; streams at once: not what a lone frame asks
    return {"call_ms": _median_ms([f.call_us for f in frames]),
            "to_first_kernel_ms": _median_ms([f.to_first_kernel_us for f in frames]),
            "span_ms": _median_ms([f.span_us for f in frames]),
            "idle_in_span_ms": _median_ms([f.idle_in_span_us for f in frames]),
            "after_last_kernel_ms": _median_ms([f.after_last_kernel_us for f in frames]), **row}


def _median_ms(values_us: list[float | None]) -> float | None:
    """The median in ms of the values seen (None: no kernel in that frame); None if none was."""
    seen = [v for v in values_us if v is not None]
    return round(statistics.median(seen) / 1e3, 4) if seen else None
