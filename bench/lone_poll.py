"""How late a lone batch's poll sees its frames ready: a CPU control for ``--overlap on``'s lone collect.

``OverlappingQueue._collect_lone`` runs on the render thread and asks the batch's ``InFlight.ready`` every
``LONE_POLL_S`` (20 us) until the frames are in host memory. Here a stand-in batch becomes ready a fixed time
after its begin (as a GPU frame would: ``--gpu-ms``), and each row measures, on a real ``RenderThread``, how long
after that moment the poll returned: what a lone change pays for being polled rather than waited for. Rows:
the render thread's timer slack (``render_thread.TIMER_SLACK_NS``, 1 us) and Linux's default (50 us). No GPU:
``cudaEventQuery``'s own cost (about a microsecond) is not in it.

    python bench/lone_poll.py [--frames 300] [--gpu-ms 8]
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import sys
import time

from bridge.core.renderer import NullRenderer
from bridge.engine.overlap_queue import LONE_POLL_S, OverlappingQueue
from bridge.engine.render_thread import TIMER_SLACK_NS, RenderThread

DEFAULT_SLACK_NS = 50_000  # Linux's default timer slack for a thread


class ReadyAt:
    """A begun batch whose frames are ready at ``due`` (``time.perf_counter``)."""

    def __init__(self, due: float):
        self.due = due

    def ready(self) -> bool:
        return time.perf_counter() >= self.due

    def result(self) -> list:
        return []


def late_us(queue: OverlappingQueue, frames: int, gpu_s: float, slack_ns: int) -> list[float]:
    """On the render thread, with its timer slack set to ``slack_ns``: how late each poll saw its batch ready."""
    libc = ctypes.CDLL(None)
    own = libc.prctl(30, 0, 0, 0, 0)  # PR_GET_TIMERSLACK
    libc.prctl(29, slack_ns, 0, 0, 0)  # PR_SET_TIMERSLACK
    try:
        late = []
        for _ in range(frames):
            staged = ReadyAt(time.perf_counter() + gpu_s)
            if not queue._collect_lone(staged, lambda: None):  # the queue's own poll; no job ever arrives here
                raise RuntimeError("a lone batch was handed over with no job arriving")
            late.append((time.perf_counter() - staged.due) * 1e6)
            time.sleep(0.002)  # a pause between lone changes
        return late
    finally:
        libc.prctl(29, own, 0, 0, 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--gpu-ms", type=float, default=8.0, help="from a batch's begin to its frames being ready")
    args = parser.parse_args()
    if not sys.platform.startswith("linux"):
        raise SystemExit("timer slack is Linux's (prctl)")
    queue = OverlappingQueue(NullRenderer(), None, None)
    worker = RenderThread("lone-poll")
    try:
        print(f"poll every {LONE_POLL_S * 1e6:.0f} us, batches ready {args.gpu_ms} ms after their begin, "
              f"{args.frames} each; how late the poll saw them ready, us:")
        for slack in (TIMER_SLACK_NS, DEFAULT_SLACK_NS, TIMER_SLACK_NS, DEFAULT_SLACK_NS):
            late = sorted(worker.submit(late_us, queue, args.frames, args.gpu_ms / 1e3, slack).result())
            print(f"  timer slack {slack / 1e3:g} us: median {statistics.median(late):.1f}, "
                  f"p90 {late[int(0.9 * len(late))]:.1f}, max {late[-1]:.1f}")
    finally:
        worker.shutdown()


if __name__ == "__main__":
    main()
