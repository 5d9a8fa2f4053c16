"""What the TouchDesigner side costs per frame: the idle poll and a new frame's copy (CPU only).

    python plugins/touchdesigner/bench_frames.py [--size 512] [--seconds 2]

A real segment (bridge.outputs.shm.ShmWriter, as the daemon writes it) and the plugin's
ShmSource: ``changed()`` is what the frame-start callback pays every frame with nothing new;
``take()`` is the tear-free copy with rows flipped to bottom-first, what onCook hands to
copyNumpyArray (TouchDesigner's own upload comes on top and is not measured here).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bridge.core.frame import Frame  # noqa: E402
from bridge.core.params import Params  # noqa: E402
from bridge.outputs.shm import ShmWriter  # noqa: E402
from turbo_bridge_td.sources import ShmSource  # noqa: E402


def per_call_us(action, seconds: float) -> list[float]:
    """Microseconds per call, one sample per batch of 1,000 calls."""
    samples, deadline = [], time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        for _ in range(1000):
            action()
        samples.append((time.perf_counter() - start) * 1e3)
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args(argv)
    name = f"tb-bench-{uuid.uuid4().hex[:8]}"
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (args.size, args.size, 4), np.uint8)
    with ShmWriter(name, 1024, 1024) as writer:
        seq = 0

        def publish():
            nonlocal seq
            seq += 1
            writer.publish(Frame(seq, seq, Params(width=args.size, height=args.size), pixels, 1.0, time.time_ns()))

        publish()
        source = ShmSource(name)
        assert np.array_equal(source.take().pixels, pixels[::-1])
        idle = per_call_us(source.changed, args.seconds)
        takes = []
        deadline = time.perf_counter() + args.seconds
        while time.perf_counter() < deadline:
            publish()
            start = time.perf_counter()
            frame = source.take()
            takes.append((time.perf_counter() - start) * 1e6)
            assert frame is not None
        source.close()
    print(f"idle poll, changed(): median {statistics.median(idle):.3f} us a frame ({len(idle)}k calls)")
    print(f"new frame {args.size}x{args.size} RGBA, take() (copy + flip): median {statistics.median(takes):.0f} us, "
          f"p95 {sorted(takes)[int(len(takes) * 0.95)]:.0f} us ({len(takes)} frames)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
