"""What the GPU did between two publications of an overlapped stream (``bench --modes timeline``).

Per frame (from one publication to the next): the interval, the GPU's busy time (some kernel running
on any stream), its idle rest and the CPU ranges that idle time fell in, each stream's busy time, the
time it ran alone, its kernels by category, and the time two or more streams ran at once. Over the
frames: the medians, and the longest idle gaps. Pure functions of names, streams and times
(microseconds, one clock for CPU ranges and kernels, as torch's profiler gives them): no torch.
"""

from __future__ import annotations

import bisect
import statistics
from collections import defaultdict
from dataclasses import dataclass

from .kernel_stats import CATEGORIES, category

MARK = "stream:"  # the CPU ranges around the marker kernels that name the streams (timeline.py)
NO_RANGE = "(no range)"  # idle while the CPU was in none of the ranges given (e.g. the loop's own code)
GAPS = 8  # the longest idle gaps listed
# Idle time by the length of its gap: a few microseconds between two kernels is the GPU's own
# launch latency (inside a graph too); a long gap is the GPU waiting for the CPU or a sync.
GAP_SIZES = ((10.0, "under_10us"), (100.0, "10_to_100us"), (float("inf"), "100us_and_over"))
Span = tuple[float, float]


@dataclass(frozen=True)
class StreamKernel:
    """One kernel's (or copy's, memset's) run on the GPU, and the stream it ran on."""
    name: str
    start_us: float
    end_us: float
    stream: int


@dataclass(frozen=True)
class CpuRange:
    """A profiler range on the CPU (``record_function``): what the render thread was doing."""
    name: str
    start_us: float
    end_us: float


@dataclass(frozen=True)
class Gap:
    """An idle span of the GPU (no kernel on any stream) and the CPU ranges it overlapped, most first."""
    start_us: float
    end_us: float
    during: tuple[str, ...]

    @property
    def us(self) -> float:
        return self.end_us - self.start_us


@dataclass(frozen=True)
class FrameTimeline:
    """One frame, from one publication to the next; times in microseconds."""
    start_us: float
    interval_us: float
    busy_us: float
    overlap_us: float  # two or more streams busy at once
    stream_busy_us: dict[int, float]
    stream_alone_us: dict[int, float]  # this stream busy, no other
    stream_kernels: dict[int, int]  # kernels that started in this frame
    stream_categories_us: dict[int, dict[str, float]]
    gaps: tuple[Gap, ...]  # in time order
    idle_in_us: dict[str, float]  # per range name (and NO_RANGE): idle time while the CPU was in it
    ranges_us: dict[str, float]  # per range name: the CPU's time in it

    @property
    def idle_us(self) -> float:
        return self.interval_us - self.busy_us


def merged(spans: list[Span]) -> list[Span]:
    """The union of ``spans`` as sorted, disjoint spans (touching ones joined)."""
    out: list[list[float]] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return [(start, end) for start, end in out]


def common_us(a: list[Span], b: list[Span]) -> float:
    """The length of the intersection of two ``merged`` lists."""
    total, i, j = 0.0, 0, 0
    while i < len(a) and j < len(b):
        total += max(0.0, min(a[i][1], b[j][1]) - max(a[i][0], b[j][0]))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return total


def _clipped(spans: list[Span], lo: float, hi: float) -> list[Span]:
    return [(max(s, lo), min(e, hi)) for s, e in spans if s < hi and e > lo]


def _sweep(streams: dict[int, list[Span]], lo: float, hi: float):
    """Over [lo, hi] and each stream's merged spans: (busy, overlap, alone per stream, idle gaps)."""
    events = sorted((t, kind, stream) for stream, spans in streams.items()
                    for s, e in spans for t, kind in ((s, 1), (e, -1)))
    active: set[int] = set()
    busy = overlap = 0.0
    alone: dict[int, float] = defaultdict(float)
    gaps: list[Span] = []
    at = lo
    for t, kind, stream in events + [(hi, 0, -1)]:
        if t > at:
            if not active:
                gaps.append((at, t))
            else:
                busy += t - at
                if len(active) > 1:
                    overlap += t - at
                else:
                    alone[next(iter(active))] += t - at
            at = t
        if kind == 1:
            active.add(stream)
        elif kind == -1:
            active.discard(stream)
    return busy, overlap, dict(alone), merged(gaps)


def frame_timelines(kernels: list[StreamKernel], ranges: list[CpuRange],
                    boundaries: list[float]) -> list[FrameTimeline]:
    """One ``FrameTimeline`` per pair of consecutive ``boundaries`` (publication times); a kernel or
    range across a boundary counts in each frame for its part there."""
    ordered = sorted(kernels, key=lambda k: k.start_us)
    starts = [k.start_us for k in ordered]
    longest = max((k.end_us - k.start_us for k in ordered), default=0.0)
    names = sorted({r.name for r in ranges})
    by_name = {name: merged([(r.start_us, r.end_us) for r in ranges if r.name == name]) for name in names}
    frames = []
    for lo, hi in zip(boundaries, boundaries[1:]):
        mine = ordered[bisect.bisect_left(starts, lo - longest):bisect.bisect_left(starts, hi)]
        mine = [k for k in mine if k.end_us > lo]
        spans: dict[int, list[Span]] = defaultdict(list)
        kinds: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        counts: dict[int, int] = defaultdict(int)
        for k in mine:
            start, end = max(k.start_us, lo), min(k.end_us, hi)
            counts[k.stream] += k.start_us >= lo
            if end > start:  # a span of no length would open a stream in the sweep and never close it
                spans[k.stream].append((start, end))
                kinds[k.stream][category(k.name)] += end - start
        streams = {stream: merged(s) for stream, s in spans.items()}
        busy, overlap, alone, gaps = _sweep(streams, lo, hi)
        inside = {name: _clipped(spans_, lo, hi) for name, spans_ in by_name.items()}
        idle_in = {name: common_us(gaps, s) for name, s in inside.items()}
        idle_in[NO_RANGE] = (hi - lo - busy) - common_us(gaps, merged([s for v in inside.values() for s in v]))
        frames.append(FrameTimeline(
            lo, hi - lo, busy, overlap, {s: sum(e - b for b, e in v) for s, v in streams.items()}, alone,
            dict(counts), {s: dict(v) for s, v in kinds.items()}, tuple(_gap(g, inside) for g in gaps), idle_in,
            {name: sum(e - b for b, e in s) for name, s in inside.items()}))
    return frames


def _gap(span: Span, ranges: dict[str, list[Span]]) -> Gap:
    shares = {name: common_us([span], spans) for name, spans in ranges.items()}
    return Gap(*span, tuple(name for name, us in sorted(shares.items(), key=lambda item: -item[1]) if us > 0))


def stream_roles(kernels: list[StreamKernel], ranges: list[CpuRange]) -> dict[int, str]:
    """Which stream each marker ran on: a range ``stream:ROLE`` (synchronised at its end) holds the
    kernels launched on the stream ROLE names; a stream two markers ran on gets both ("render+text")."""
    roles: dict[int, list[str]] = defaultdict(list)
    for mark in (r for r in ranges if r.name.startswith(MARK)):
        ran = {k.stream for k in kernels if mark.start_us <= k.start_us <= mark.end_us}
        if len(ran) == 1:  # none: this profiler saw no kernel; several: not a marker's alone
            roles[ran.pop()].append(mark.name.removeprefix(MARK))
    return {stream: "+".join(names) for stream, names in roles.items()}


def stream_name(stream: int, roles: dict[int, str]) -> str:
    return f"{roles[stream]} (stream {stream})" if stream in roles else f"stream {stream}"


def timeline_row(frames: list[FrameTimeline], roles: dict[int, str]) -> dict:
    """Medians over ``frames`` (each figure on its own: the medians of parts need not add up), the
    streams by busy time, and the ``GAPS`` longest idle gaps. Without a kernel in any frame the GPU
    figures are None (nothing seen is nothing measured), the interval and CPU ranges still given."""
    seen = sum(sum(f.stream_kernels.values()) for f in frames)
    row = {"frames": len(frames), "kernels": statistics.median([sum(f.stream_kernels.values()) for f in frames])
           if frames else 0,
           "interval_ms": _median_ms([f.interval_us for f in frames]),
           "cpu_ranges_ms": {name: _median_ms([f.ranges_us.get(name, 0.0) for f in frames])
                             for name in _keys(f.ranges_us for f in frames)}}
    if not seen:
        return {**row, "busy_ms": None, "idle_ms": None, "overlap_ms": None, "longest_gap_us": None,
                "idle_by_gap_ms": None, "idle_in_ms": None, "streams": [], "gaps": []}
    streams = [{"stream": s, "name": stream_name(s, roles),
                "busy_ms": _median_ms([f.stream_busy_us.get(s, 0.0) for f in frames]),
                "alone_ms": _median_ms([f.stream_alone_us.get(s, 0.0) for f in frames]),
                "kernels": statistics.median([f.stream_kernels.get(s, 0) for f in frames]),
                "categories": {c: _median_ms([f.stream_categories_us.get(s, {}).get(c, 0.0) for f in frames])
                               for c in CATEGORIES if any(c in f.stream_categories_us.get(s, {}) for f in frames)}}
               for s in _keys(f.stream_busy_us for f in frames)]
    return {**row, "busy_ms": _median_ms([f.busy_us for f in frames]),
            "idle_ms": _median_ms([f.idle_us for f in frames]),
            "overlap_ms": _median_ms([f.overlap_us for f in frames]),
            "longest_gap_us": round(statistics.median([max((g.us for g in f.gaps), default=0.0) for f in frames]), 1),
            "idle_by_gap_ms": {label: _median_ms([_idle_in_gaps(f, label) for f in frames]) for _, label in GAP_SIZES},
            "idle_in_ms": {name: _median_ms([f.idle_in_us.get(name, 0.0) for f in frames])
                           for name in _keys(f.idle_in_us for f in frames)},
            "streams": sorted(streams, key=lambda s: -s["busy_ms"]), "gaps": longest_gaps(frames)}


def longest_gaps(frames: list[FrameTimeline], count: int = GAPS) -> list[dict]:
    """The ``count`` longest idle gaps of all frames: the frame (index in ``frames``), where in it
    (microseconds after its start), how long, and the CPU ranges it overlapped, longest share first."""
    found = sorted(((g.us, i, g) for i, f in enumerate(frames) for g in f.gaps), key=lambda x: (-x[0], x[1]))[:count]
    return [{"frame": i, "at_us": round(g.start_us - frames[i].start_us, 1), "us": round(g.us, 1),
             "during": list(g.during)} for _, i, g in found]


def _idle_in_gaps(frame: FrameTimeline, label: str) -> float:
    low = 0.0
    for high, name in GAP_SIZES:
        if name == label:
            return sum(g.us for g in frame.gaps if low <= g.us < high)
        low = high
    raise KeyError(label)


def _keys(dicts) -> list:
    """The keys of several dicts, in the order first seen."""
    return list(dict.fromkeys(key for d in dicts for key in d))


def _median_ms(values_us: list[float]) -> float:
    return round(statistics.median(values_us) / 1e3, 4) if values_us else 0.0
