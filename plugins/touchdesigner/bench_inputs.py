"""What Send Input costs TouchDesigner's main thread per frame, with an HD Input TOP (stand-in TD).

    python plugins/touchdesigner/bench_inputs.py [--size 1920x1080] [--frame 512x512] [--seconds 5]

Builds the network with the setup script inside ``tests/support/td_standin`` (TouchDesigner has
no Linux build), feeds the Input TOP a new image every frame ("camera") or none ("still"), runs
frames at 60 per second and times the plugin's ``frame_start`` of Send Input on the main thread.
From that time it takes out what the stand-in spends playing TouchDesigner itself (the Select and
Fit TOPs' cooks, which TD runs on the GPU, and the download ``numpyArray`` hands back): the rest
is the plugin's own cost, in wall time and in the main thread's CPU time (wall time also counts
waiting for a CPU: on a busy machine that is most of it, which the run with an idle uploader
thread shows). For comparison, "before" times what the previous version did on the main thread
with a new image: compare the full TOP's float32 download with the last one, convert it to 8
bits (the same numpy calls, on the same image). No daemon is needed: the segment is written,
nobody attaches it.

What the stand-in can tell: the plugin's own Python work on the main thread, and that the pixel
work moved off it. What it cannot: TouchDesigner's cost of ``fit.cook()`` (GPU), of returning a
delayed download (a copy out of a mapped buffer, frame-sized here), or of its parameter reads.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
for folder in (HERE, REPO, REPO / "tests" / "support"):
    sys.path.insert(0, str(folder))

import td_standin  # noqa: E402  (tests/support: the stand-in TouchDesigner)
from turbo_bridge_td import session as tb_session  # noqa: E402
from turbo_bridge_td import upload  # noqa: E402
from turbo_bridge_td.upload import as_rgba  # noqa: E402

from bridge.client import to_rgba8  # noqa: E402

FRAME_S = 1 / 60


def size(text: str) -> tuple[int, int]:
    width, height = (int(v) for v in text.lower().split("x"))
    return width, height


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def now() -> tuple[float, float]:
    """(wall clock, this thread's CPU time) in seconds."""
    return time.perf_counter(), time.thread_time()


class Clock:
    """Accumulates the wall and CPU time spent in wrapped calls (the stand-in's own work); a
    wrapped call made inside another (a download cooks the TOP first) counts once."""

    def __init__(self):
        self.wall = self.cpu = 0.0
        self._depth = 0

    def wrap(self, obj, name: str) -> None:
        inner = getattr(obj, name)

        def timed(*args, **kwargs):
            self._depth += 1
            wall, cpu = now()
            try:
                return inner(*args, **kwargs)
            finally:
                self._depth -= 1
                if self._depth == 0:
                    end_wall, end_cpu = now()
                    self.wall += end_wall - wall
                    self.cpu += end_cpu - cpu

        setattr(obj, name, timed)


def network(frame: tuple[int, int]):
    td = td_standin.TouchDesigner()
    setup = (HERE / "setup_network.py").read_text()
    td.textport(setup, TB_PLUGIN_DIR=str(HERE), TB_SHM_NAME="tb-bench-none", TB_PORTS=(1, 1, free_udp_port()))
    td.start()
    comp = td.project.op("turbo_bridge")
    comp.par.Live = False  # nothing to send: no daemon
    comp.par.Width, comp.par.Height = frame
    return td, comp


def measure(images: list[np.ndarray], frame: tuple[int, int], seconds: float, new_each_frame: bool) -> dict:
    td, comp = network(frame)
    video = td.project.create(td_standin.OP_TYPES["moviefileinTOP"], "camera")
    video.play(images[0])
    comp.par.Inputtop, comp.par.Sendinput = video, True
    sender = tb_session.session_for(comp).input
    standin = Clock()
    for name in ("input_select", "input_fit"):
        for method in ("cook", "numpyArray"):
            standin.wrap(comp.op(name), method)
    own, own_cpu, total = [], [], []
    inner = sender.frame_start

    def timed_frame_start(*args):
        wall_before, cpu_before = standin.wall, standin.cpu
        wall, cpu = now()
        inner(*args)
        end_wall, end_cpu = now()
        total.append((end_wall - wall) * 1000)
        own.append((end_wall - wall - (standin.wall - wall_before)) * 1000)
        own_cpu.append((end_cpu - cpu - (standin.cpu - cpu_before)) * 1000)

    sender.frame_start = timed_frame_start
    frames, deadline, tick = 0, time.perf_counter() + seconds, time.perf_counter()
    while time.perf_counter() < deadline:
        if new_each_frame:
            video.play(images[frames % len(images)])
        td.run_frame()
        frames += 1
        tick += FRAME_S
        time.sleep(max(0.0, tick - time.perf_counter()))
    uploader = sender.uploader
    written = uploader.written if uploader is not None else 0
    td.exit()
    if uploader is not None:
        uploader.join(10)
    return {"frames": frames, "own": own[5:], "own_cpu": own_cpu[5:], "total": total[5:], "written": written}


def idle_uploader(uploader) -> None:
    """An uploader thread that takes the images and does nothing with them: the camera run with it
    shows how much of the main thread's wall time is the machine's own scheduling, not our thread."""
    while uploader._next() is not None:
        uploader.taken += 1


def before(images: list[np.ndarray], repeats: int) -> tuple[list[float], list[float]]:
    """The previous version's main-thread work for a new image: compare, then convert (ms)."""
    compare, convert = [], []
    last = np.asarray(images[-1], np.float32) / 255
    for i in range(repeats):
        image = as_rgba(np.asarray(images[i % len(images)], np.float32) / 255)  # what numpyArray returned
        start = time.perf_counter()
        np.array_equal(image, last)
        middle = time.perf_counter()
        to_rgba8(image, flip=True)
        last = image.copy()
        end = time.perf_counter()
        compare.append((middle - start) * 1000)
        convert.append((end - middle) * 1000)
    return compare, convert


def line(label: str, values: list[float]) -> str:
    ordered = sorted(values)
    return (f"{label}: median {statistics.median(ordered):.3f} ms, p95 {ordered[int(len(ordered) * 0.95)]:.3f} ms, "
            f"max {ordered[-1]:.3f} ms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=size, default=(1920, 1080), help="the Input TOP (default 1920x1080)")
    parser.add_argument("--frame", type=size, default=(512, 512), help="the daemon's frame: Width x Height")
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    width, height = args.size
    images = [rng.integers(0, 256, (height, width, 4), np.uint8) for _ in range(4)]
    camera = measure(images, args.frame, args.seconds, new_each_frame=True)
    still = measure(images, args.frame, args.seconds, new_each_frame=False)
    working = upload.Uploader._run
    upload.Uploader._run = idle_uploader
    try:
        idle = measure(images, args.frame, args.seconds, new_each_frame=True)
    finally:
        upload.Uploader._run = working
    compare, convert = before(images, 10)
    print(f"Input TOP {width}x{height} RGBA, frame {args.frame[0]}x{args.frame[1]}, 60 frames a second; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(line("camera (a new image every frame), plugin's own main-thread time, wall", camera["own"]))
    print(line("  the same in main-thread CPU time (no waits for the CPU or the GIL)", camera["own_cpu"]))
    print(line("  wall, with the stand-in's TD work (Select/Fit cooks, download)", camera["total"]))
    print(f"  uploader thread wrote {camera['written']} of {camera['frames']} frames' images")
    print(line("  wall, the same camera with an uploader thread that does nothing", idle["own"]))
    print(line("still (no new image), plugin's own main-thread time, wall", still["own"]))
    print(line("  the same in main-thread CPU time", still["own_cpu"]))
    print(line("before, main thread per new image: float32 compare", compare))
    print(line("before, main thread per new image: conversion to 8 bits", convert))
    return 0


if __name__ == "__main__":
    sys.exit(main())
