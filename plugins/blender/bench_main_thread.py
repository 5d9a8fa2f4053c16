"""Main-thread cost per live frame of the Blender extension, in real Blender (the bpy wheel).

    python plugins/blender/bench_main_thread.py            # starts a demo daemon at 512x512
    python plugins/blender/bench_main_thread.py --frames 50 --size 512

Builds and installs the extension from its zip, connects to a real daemon, asks for one new
frame at a time (a new seed) and times every call of ``live.drain`` (the bpy.app.timers
function) that applied a frame: read from shared memory (or take the frame the HTTP thread
fetched) + convert to float RGBA + ``foreach_set`` + ``update``. Idle calls (nothing new) are
timed too. Needs bpy (Python 3.11) and the project installed (``pip install -e .``).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import bpy_harness as harness

REPO_MODULE = "tb_bench"


def measure(live, transport: str, url: str, size: int, frames: int) -> dict[str, list[float]]:
    import bpy

    settings = bpy.context.scene.turbo_bridge
    settings.live = False
    settings.address, settings.transport, settings.width, settings.height = url, transport, size, size
    settings.live = True
    bpy.ops.turbo_bridge.connect()
    session = live.current()
    times: dict[str, list[float]] = {"frame": [], "read": [], "write": [], "idle": []}
    last_seq = None
    seed = 1000
    deadline = time.monotonic() + 60 + frames * 10
    while len(times["frame"]) < frames + 1 and time.monotonic() < deadline:
        started = time.perf_counter()
        live.drain()
        elapsed = (time.perf_counter() - started) * 1e3
        applied = session.applied
        if applied is not None and applied.seq != last_seq:
            if last_seq is not None:  # the first frame also creates the image: not a live frame
                times["frame"].append(elapsed)
                times["read"].append(applied.read_ms)
                times["write"].append(applied.write_ms)
            last_seq = applied.seq
            seed += 1
            settings.seed = seed  # ask for the next frame
        elif session.connected:
            times["idle"].append(elapsed)
        time.sleep(0.002)
    live.disconnect()
    if len(times["frame"]) < frames:
        raise SystemExit(f"only {len(times['frame'])} frames arrived over {transport}; status: {session.status}")
    return times


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[int(0.9 * (len(ordered) - 1))]
    return f"median {statistics.median(ordered):.3f}  p90 {p90:.3f}  max {ordered[-1]:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()

    import bpy
    import numpy

    with harness.demo_session(args.size, REPO_MODULE) as (daemon, live):
        print(f"Blender {bpy.app.version_string} (bpy wheel), Python {platform.python_version()}, "
              f"numpy {numpy.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
        print(f"{args.frames} live frames of {args.size}x{args.size} per transport; ms on the main thread")
        for transport, label in (("AUTO", "shared memory"), ("HTTP", "HTTP")):
            times = measure(live, transport, daemon.url, args.size, args.frames)
            print(f"{label:>13}  drain, frame applied : {summary(times['frame'])}")
            print(f"{'':>13}    read              : {summary(times['read'])}")
            print(f"{'':>13}    convert+foreach_set+update: {summary(times['write'])}")
            print(f"{'':>13}  drain, nothing new  : {summary(times['idle'])}  ({len(times['idle'])} calls)")


if __name__ == "__main__":
    main()
    harness.leave(0)  # bpy 4.2 / 4.5 would crash or hang in the interpreter's own exit
