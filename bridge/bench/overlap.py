"""``turbo-bridge bench --overlap off,on``: frames of a stream of changes, overlapped.

The renderer runs as the daemon's overlapping queue drives it: frame i+1 is begun (its text
encoders and UNet queued) before frame i's pixels are collected and published, so frame i's VAE
decode runs beside frame i+1's UNet. Per frame: the interval between two publications (what a
stream of changes gets: frames per second) and its latency from begin to publication (what one
change waits while others stream). With render lanes frames publish in bursts: the bench reads the
frames per second from the intervals' sum (``measure.stream_fps``), not from their median.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

from ..core.frame import Frame
from ..core.params import Params
from ..core.renderer import MAX_IN_FLIGHT
from ..core.scene import Scene
from ..outputs.shm import ShmWriter
from .frames import frame_params, frame_scene


@dataclass(frozen=True)
class StreamTimes:
    """An overlapped stream's times, ms: between publications, each frame's begin to its publication, and
    the render thread's ``begin_batch`` per frame (its CPU work per frame in the daemon: at 150 frames a
    second it has 6.7 ms)."""

    intervals: list[float]
    latencies: list[float]
    begins: list[float]


def timed_overlapped(overlapped, mode: str, size: int, tiling: str, frames: int,
                     shm: ShmWriter, guidance: float = 0.0) -> StreamTimes:
    """The times of ``frames`` frames of the overlapped loop, after an untimed warm-up frame."""
    # untimed, as the plain runs' warm-up frame: compiles and captures the cut graphs and the decode's
    overlapped.begin_batch([("main", frame_params(mode, -1, size, tiling, guidance),
                             frame_scene(mode, -1, size))]).result()
    times = overlapped_frames(overlapped, mode, size, tiling, frames, shm, guidance)
    return StreamTimes([(b.published - a.published) * 1e3 for a, b in zip(times, times[1:])],
                       [(t.published - t.begun) * 1e3 for t in times], [(t.queued - t.begun) * 1e3 for t in times])


LONE_FRAMES = 30  # lone frames a row times (after its stream): a second or two
LONE_GAP_S = 0.05  # idle before each: a change after a pause, as ``latency --rate 20`` spaces them
LONE_SEEDS = 20_000  # their seeds from here: not the stream's, whose noise the renderer keeps


def lone_count(frames: int) -> int:
    """The lone frames a row of ``frames`` frames times: as many, at most ``LONE_FRAMES``."""
    return min(frames, LONE_FRAMES)


def lone_frames(render: Callable[[Params, Scene], object], mode: str, size: int, tiling: str, guidance: float,
                frames: int = LONE_FRAMES, gap_s: float = LONE_GAP_S) -> list[float]:
    """ms from the call to its pixels in host memory, for ``lone_count(frames)`` frames of ``mode`` each after
    ``gap_s`` idle: what a lone change waits for its render, overlap off (``render``: the renderer's ``render``)
    against on (``begun_and_collected``), in one process with the same compiled graphs."""
    return lone_times(render, ((frame_params(mode, i, size, tiling, guidance), frame_scene(mode, i, size))
                               for i in range(LONE_SEEDS, LONE_SEEDS + lone_count(frames))), gap_s)


def lone_times(render: Callable[[Params, Scene], object], frames: Iterable[tuple[Params, Scene]],
               gap_s: float = LONE_GAP_S, phase: Callable[[], AbstractContextManager] = nullcontext) -> list[float]:
    """ms from each ``render(params, scene)`` call to its return, each after ``gap_s`` idle, inside ``phase()``
    (the lone mode's profiler range)."""
    times = []
    for params, scene in frames:
        time.sleep(gap_s)
        start = time.perf_counter()
        with phase():
            render(params, scene)
        times.append((time.perf_counter() - start) * 1e3)
    return times


def begun_and_collected(overlapped) -> Callable[[Params, Scene], object]:
    """One frame through the overlapped renderer alone: begun, then its result at once."""
    return lambda params, scene: overlapped.begin_batch([("main", params, scene)]).result()


@dataclass(frozen=True)
class FrameTimes:
    """One frame of the loop, ``time.perf_counter`` seconds: begun, its ``begin_batch`` returned, published."""

    begun: float
    queued: float
    published: float


def overlapped_frames(overlapped, mode: str, size: int, tiling: str, frames: int, shm: ShmWriter,
                      guidance: float = 0.0, phase: Callable[[str], AbstractContextManager] = nullcontext
                      ) -> list[FrameTimes]:
    """The overlapping queue's loop: frame i+1 begun, then frame i collected and published (with render
    lanes, up to as many frames in flight as lanes: ``OverlappingQueue``'s ``max_in_flight``); each
    frame's times. ``phase(name)``: a context around each "begin", "collect" and "publish" (the
    timeline's profiler ranges)."""
    times: list[FrameTimes] = []
    depth = max(MAX_IN_FLIGHT, overlapped.lanes)
    in_flight: deque = deque()  # (frame index, params, begun at, queued at, InFlight)

    def publish(index, params, begun_at, queued_at, staged) -> None:
        with phase("collect"):
            out = staged.result()[0]
        with phase("publish"):
            shm.publish(Frame(index + 1, index + 1, params, out.pixels, 0.0, time.time_ns()))
        times.append(FrameTimes(begun_at, queued_at, time.perf_counter()))

    for i in range(frames):
        params, scene = frame_params(mode, i, size, tiling, guidance), frame_scene(mode, i, size)
        begun_at = time.perf_counter()
        with phase("begin"):
            staged = overlapped.begin_batch([("main", params, scene)])
        in_flight.append((i, params, begun_at, time.perf_counter(), staged))
        if len(in_flight) >= depth:
            publish(*in_flight.popleft())
    while in_flight:
        publish(*in_flight.popleft())
    return times
