"""``turbo-bridge latency --stream``: a stream of changes that does not wait for frames.

The sender sends a change (a new prompt, a seed used as a tag; with ``seeds_only``, the seed alone,
the prompt unchanged: ``--stream-seeds``) over OSC at a steady ``--rate``,
as a slider or a sequencer does, whatever the frames do; an independent reader thread watches the
shared-memory segment and notes every frame published (its params version and seed). With
changes coming faster than frames, latest-wins renders the newest change each time the render
thread is free, and ``--overlap on`` lets the next frame start while one decodes. Reported: frames
per second while the stream runs, and for each frame the time from sending the change it shows to
its publication (p50, p90).
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass

from ..client import OscSender, ShmReader

TAG = 20_000_000  # seeds of the stream's changes: TAG + i
SEED_TAG = 30_000_000  # those of a stream of new seeds alone, apart from a prompt stream's before it


@dataclass(frozen=True)
class StreamReport:
    changes: int
    rate_hz: float
    seconds: float
    frames: int  # frames that showed one of the stream's changes (the last one's included)
    fps: float  # frames published while the changes were being sent, per second
    p50_ms: float  # change sent -> its frame published
    p90_ms: float
    last_shown: bool  # the stream's last change got its frame (latest-wins never drops the newest)
    change: str = "prompt"  # what each change was: "prompt" (a new prompt and seed) or "seed" (a new seed alone)


def measure_stream(osc_port: int, shm_name: str, count: int, rate_hz: float, timeout: float = 5.0,
                   seeds_only: bool = False) -> StreamReport:
    base = SEED_TAG if seeds_only else TAG
    sent: dict[int, float] = {}
    seen: list[tuple[float, int]] = []  # (when, seed) per frame published
    stop = threading.Event()

    def watch(reader: ShmReader) -> None:
        version = None
        while not stop.is_set():
            meta = reader.latest_meta()
            if meta is not None and meta.version != version:
                version = meta.version
                seen.append((time.perf_counter(), meta.seed))
            else:
                time.sleep(0.00005)

    sender = OscSender("127.0.0.1", osc_port)
    with ShmReader(shm_name) as reader:
        watcher = threading.Thread(target=watch, args=(reader,), name="stream-reader")
        watcher.start()
        try:
            start = next_send = time.perf_counter()
            for i in range(count):
                while (wait := next_send - time.perf_counter()) > 0:
                    time.sleep(min(0.0005, wait))
                sent[base + i] = time.perf_counter()
                sender.send_params({"seed": base + i} if seeds_only
                                   else {"prompt": f"a lighthouse in a storm, stream {i}", "seed": base + i})
                next_send += 1.0 / rate_hz
            end = time.perf_counter()
            deadline = end + timeout
            while time.perf_counter() < deadline and not (seen and seen[-1][1] == base + count - 1):
                time.sleep(0.001)  # the last change's frame ends the stream
        finally:
            stop.set()
            watcher.join()
            sender.close()
    frames = [(when, seed) for when, seed in seen if seed in sent]
    in_window = [when for when, _ in frames if start <= when <= end]
    latencies = sorted((when - sent[seed]) * 1e3 for when, seed in frames)
    if not latencies:
        raise RuntimeError("no frame of the stream's changes was published")
    seconds = end - start
    return StreamReport(count, rate_hz, round(seconds, 3), len(frames), round(len(in_window) / seconds, 2),
                        round(statistics.median(latencies), 3),
                        round(latencies[min(len(latencies) - 1, int(0.9 * len(latencies)))], 3),
                        bool(frames) and frames[-1][1] == base + count - 1, "seed" if seeds_only else "prompt")


def format_stream(r: StreamReport) -> str:
    what = "new seeds (the prompt unchanged)" if r.change == "seed" else "changes"
    return (f"stream of {r.changes} {what} at {r.rate_hz:g}/s ({r.seconds:.1f} s), not waiting for frames: "
            f"{r.frames} frames showed its changes, {r.fps:.2f} FPS while it ran; "
            f"change -> its frame p50 {r.p50_ms:.2f} ms, p90 {r.p90_ms:.2f} ms")
