"""``turbo-bridge latency``: OSC message in to frame in shared memory, through a real daemon.

Starts ``turbo-bridge serve`` as a child process, sends one change at a time at a steady rate
over OSC (a new prompt and a seed used as a tag), and watches the shared-memory segment from
this process until a frame with that seed is published. With ``--model null`` the daemon does
no GPU work, which shows the bridge's own overhead. With ``--input shm`` or ``--input rest``
each change is a new input image instead (written to an input segment of this process, or
sent as raw RGBA with ``PUT /v1/input``): image-to-image, VAE encoder included. With
``--control NAME`` (a ``--controlnet NAME=SOURCE`` passed to the daemon after ``--``) every frame
is steered by that ControlNet or T2I-Adapter: a fixed control image at scale 0.8, its graph
compiled before the measurement.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass

import numpy as np

from ..client import HttpClient, OscSender, ShmInputWriter, ShmReader
from .phase_render import lone_batches
from .stream import StreamReport, format_stream, measure_stream

log = logging.getLogger(__name__)

READY = re.compile(r"ready: http://[^:]+:(\d+)/v1/\s+OSC udp [^:]+:(\d+)")


@dataclass(frozen=True)
class LatencyReport:
    model: str
    vae: str
    size: int
    rate_hz: float
    sent: int
    received: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_render_ms: float
    startup_s: float  # process start to the daemon's "ready" line (model load and compile included)
    input: str = "none"  # none: OSC prompt changes; shm or rest: new input images
    # The daemon's CPU time and thread wake-ups (voluntary context switches) per change, all threads;
    # per thread name in wakeups_by_thread. Linux only (None elsewhere). Steadier than latency on a
    # busy machine: what the bridge costs, not how long it waited for a core.
    cpu_ms_per_change: float | None = None
    wakeups_per_change: float | None = None
    wakeups_by_thread: dict | None = None
    control: str = ""  # the ControlNet or T2I-Adapter steering every frame, if any
    # Smallest (latency - that frame's own render time) over the changes. A frame counted for a change
    # must have started rendering after the change was sent, so this is never negative; a frame that
    # was already rendering when the change came (counted one frame early) would make it negative.
    min_slack_ms: float | None = None
    stream: dict | None = None  # --stream-rate: a stream of changes not waiting for frames (bench/stream.py)
    seed_stream: dict | None = None  # --stream-seeds: then a stream of new seeds alone, the prompt unchanged
    # The daemon's own start-up phases in seconds (GET /v1/health's startup_s: imports, setup, model, warm_up...)
    startup_phases: dict | None = None
    # --overlap on: the timed changes' lone batches, collected on the render thread or handed over (phase_render.py)
    lone_batches: dict | None = None


def start_daemon(model: str, vae: str, size: int, shm_name: str, extra: list[str], startup_timeout: float):
    """Start ``turbo-bridge serve``; return (process, HTTP port, OSC port) once it is ready."""
    cmd = [sys.executable, "-m", "bridge", "serve", "--model", model, "--vae", vae, "--http-port", "0",
           "--osc-port", "0", "--shm-name", shm_name, "--width", str(size), "--height", str(size),
           "--max-size", str(max(size, 64)), *extra]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + startup_timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        log.info("daemon: %s", line.rstrip())
        match = READY.search(line)
        if match:
            # Keep reading its log, or a full pipe would block the daemon's next log line.
            threading.Thread(target=_drain, args=(proc.stderr,), name="daemon-log", daemon=True).start()
            return proc, int(match.group(1)), int(match.group(2)), time.perf_counter() - started
    proc.kill()
    raise RuntimeError(f"daemon did not become ready within {startup_timeout:.0f} s: {' '.join(cmd)}")


def stop_daemon(proc: subprocess.Popen) -> None:
    """SIGTERM, then a kill if it has not stopped within 15 s."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()


def _sleep_until(deadline: float) -> None:
    """Sleep in short steps until ``perf_counter()`` reaches ``deadline`` (a steady send rate)."""
    while (wait := deadline - time.perf_counter()) > 0:
        time.sleep(min(0.0005, wait))


def _drain(stream) -> None:
    for line in stream:
        log.info("daemon: %s", line.rstrip())


def measure(osc_port: int, shm_name: str, count: int, rate_hz: float, timeout: float = 5.0):
    """Latencies (ms) from sending each change to seeing its frame in shared memory."""
    sender = OscSender("127.0.0.1", osc_port)
    latencies, render_ms = [], []
    with ShmReader(shm_name) as reader:
        period = 1.0 / rate_hz
        next_send = time.perf_counter()
        for i in range(count):
            tag = 10_000_000 + i
            _sleep_until(next_send)
            sent = time.perf_counter()
            sender.send_params({"prompt": f"a lighthouse in a storm, take {i}", "seed": tag})
            next_send = sent + period
            deadline = sent + timeout
            while time.perf_counter() < deadline:
                meta = reader.latest_meta()  # the header only: publication is what is timed
                if meta is not None and meta.seed == tag:
                    latencies.append((time.perf_counter() - sent) * 1e3)
                    render_ms.append(meta.render_ms)
                    break
                time.sleep(0.00005)
    sender.close()
    return latencies, render_ms


def measure_input(http_port: int, shm_name: str, count: int, rate_hz: float, size: int, via: str,
                  timeout: float = 5.0, first_timeout: float = 900.0):
    """Latencies (ms) from sending each new input image to seeing its frame in shared memory.

    Inputs are the only changes, so the frame of an input is the first with a newer params
    version. The first input compiles image-to-image on a GPU: it may wait ``first_timeout``.
    """
    client = HttpClient(f"http://127.0.0.1:{http_port}", timeout=timeout)
    base = np.random.default_rng(0).integers(0, 256, (size, size, 4), np.uint8)
    writer = ShmInputWriter(f"tb-latency-in-{uuid.uuid4().hex[:8]}", size, size) if via == "shm" else None
    latencies, render_ms = [], []
    try:
        if writer is not None:
            client.attach_input(writer.name)
        with ShmReader(shm_name) as reader:
            next_send = time.perf_counter()
            for i in range(count):
                pixels = base.copy()
                pixels[0, 0, :3] = (i & 0xFF, (i >> 8) & 0xFF, 7)  # new content: a new digest, a new encoding
                _sleep_until(next_send)
                # Wait for the frame of the daemon's current state (a late frame of an earlier input, or of
                # clearing the last run's input, is not this input's frame), then send.
                version = _settled(reader, client.params()["version"], first_timeout).version
                sent = time.perf_counter()
                writer.write(pixels) if writer is not None else client.put_input(pixels)
                next_send = sent + 1.0 / rate_hz
                deadline = sent + (first_timeout if i == 0 else timeout)
                while time.perf_counter() < deadline:
                    frame = reader.read()
                    if frame is not None and frame.version > version:
                        latencies.append((time.perf_counter() - sent) * 1e3)
                        render_ms.append(frame.render_ms)
                        version = frame.version
                        break
                    time.sleep(0.00005)
    finally:
        if writer is not None:
            client.clear_input()
            writer.close()
    return latencies, render_ms


def thread_counters(pid: int) -> dict[str, tuple[float, int]] | None:
    """Per thread name of process ``pid``: (CPU seconds, voluntary context switches); None off Linux."""
    tasks = f"/proc/{pid}/task"
    if not os.path.isdir(tasks):
        return None
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, tuple[float, int]] = {}
    for tid in os.listdir(tasks):
        try:
            with open(f"{tasks}/{tid}/stat") as f:
                stat = f.read()
            with open(f"{tasks}/{tid}/status") as f:
                switches = next(int(line.split()[1]) for line in f if line.startswith("voluntary_ctxt_switches"))
        except (OSError, StopIteration):
            continue  # a thread that ended meanwhile
        name = "event loop" if tid == str(pid) else stat[stat.index("(") + 1:stat.rindex(")")]
        name = re.sub(r"_\d+$", "", name)  # ThreadPoolExecutor's gpu_0, encode_1...: one row per pool
        fields = stat[stat.rindex(")") + 2:].split()
        cpu = (int(fields[11]) + int(fields[12])) / tick  # utime + stime
        before = out.get(name, (0.0, 0))
        out[name] = (before[0] + cpu, before[1] + switches)
    return out


def _per_change(before, after, count: int):
    if before is None or after is None or not count:
        return None, None, None
    names = set(after)
    cpu = sum(after[n][0] - before.get(n, (0.0, 0))[0] for n in names)
    by_thread = {n: round((after[n][1] - before.get(n, (0.0, 0))[1]) / count, 2) for n in sorted(names)}
    return round(cpu * 1e3 / count, 3), round(sum(by_thread.values()), 2), {n: v for n, v in by_thread.items() if v}


def _settled(reader: ShmReader, version: int, timeout: float):
    """The newest frame in the segment once it shows params ``version`` or later."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        frame = reader.read(force=True)
        if frame is not None and frame.version >= version:
            return frame
        time.sleep(0.001)
    raise RuntimeError(f"no frame of params version {version} within {timeout:g} s")


def steer(http_port: int, name: str, size: int, timeout: float) -> None:
    """Control image and scale 0.8 for ``name``; returns once a steered frame is out (compiled)."""
    client = HttpClient(f"http://127.0.0.1:{http_port}", timeout=30.0)
    client.put_input(np.random.default_rng(3).integers(0, 256, (size, size, 4), np.uint8), control=name)
    version = client.patch({"controls": {name: 0.8}})["version"]
    try:
        client.frame_of_version(version, timeout)
    except TimeoutError:
        raise RuntimeError(f"no frame steered by {name!r} within {timeout:g} s") from None


def run_latency(model: str, vae: str, size: int, count: int, rate_hz: float, extra: list[str],
                startup_timeout: float = 900.0, via: str = "none", control: str = "",
                stream_rate_hz: float = 0.0, stream_seeds: bool = False) -> LatencyReport:
    shm_name = f"tb-latency-{uuid.uuid4().hex[:8]}"
    proc, http_port, osc_port, startup_s = start_daemon(model, vae, size, shm_name, extra, startup_timeout)
    try:
        phases = startup_phases(http_port)
        if control:
            steer(http_port, control, size, startup_timeout)
        health = HttpClient(f"http://127.0.0.1:{http_port}", timeout=10.0).health
        if via == "none":
            measure(osc_port, shm_name, 10, rate_hz)  # first frames after start are not steady
            health_before, before = health(), thread_counters(proc.pid)  # the request before the counters
            latencies, render_ms = measure(osc_port, shm_name, count, rate_hz)
        else:
            measure_input(http_port, shm_name, 10, rate_hz, size, via)  # compiles image-to-image on a GPU
            health_before, before = health(), thread_counters(proc.pid)  # the request before the counters
            latencies, render_ms = measure_input(http_port, shm_name, count, rate_hz, size, via)
        costs = _per_change(before, thread_counters(proc.pid), count)
        lone = lone_batches(health_before, health())
        streamed = asdict(measure_stream(osc_port, shm_name, count, stream_rate_hz)) if stream_rate_hz > 0 else None
        seeded = (asdict(measure_stream(osc_port, shm_name, count, stream_rate_hz, seeds_only=True))
                  if stream_rate_hz > 0 and stream_seeds else None)
    finally:
        stop_daemon(proc)
    if not latencies:
        raise RuntimeError("no frame arrived for any change")
    ordered = sorted(latencies)

    def pct(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)

    slack = min(latency - render for latency, render in zip(latencies, render_ms))
    return LatencyReport(model, vae, size, rate_hz, count, len(latencies), round(statistics.median(ordered), 3),
                         pct(0.90), pct(0.99), round(ordered[-1], 3), round(statistics.fmean(render_ms), 3),
                         round(startup_s, 1), via, *costs, control=control, min_slack_ms=round(slack, 3),
                         stream=streamed, seed_stream=seeded, startup_phases=phases, lone_batches=lone)


def startup_phases(http_port: int) -> dict:
    """The daemon's start-up phases as its health reports them (seconds by phase)."""
    return HttpClient(f"http://127.0.0.1:{http_port}", timeout=10.0).health().get("startup_s") or {}


def format_latency(report: LatencyReport) -> str:
    what = {"none": "OSC in", "shm": "input image in (client's segment)",
            "rest": "input image in (PUT /v1/input, raw RGBA)"}[report.input]
    steered = f", steered by {report.control!r}" if report.control else ""
    return (f"{report.model} ({report.vae} VAE, {report.size}x{report.size}{steered}) at {report.rate_hz:g} changes/s: "
            f"{report.received}/{report.sent} frames, {what} -> frame in shared memory p50 {report.p50_ms:.3f} ms, "
            f"p90 {report.p90_ms:.3f}, p99 {report.p99_ms:.3f}, max {report.max_ms:.3f}; "
            f"daemon render {report.mean_render_ms:.3f} ms mean; daemon start to ready {report.startup_s:.1f} s"
            + (f" ({', '.join(f'{k} {v:g}' for k, v in report.startup_phases.items())})"
               if report.startup_phases else "")
            + (f"; lone batches: {report.lone_batches['lone_collected_here']} collected on the render thread, "
               f"{report.lone_batches['lone_handed_over']} handed over" if report.lone_batches else "")
            + (f"; daemon CPU {report.cpu_ms_per_change:.3f} ms and {report.wakeups_per_change:.2f} thread wake-ups "
               f"per change ({', '.join(f'{k} {v:g}' for k, v in report.wakeups_by_thread.items())})"
               if report.cpu_ms_per_change is not None else "")
            + (f"\n{format_stream(StreamReport(**report.stream))}" if report.stream else "")
            + (f"\n{format_stream(StreamReport(**report.seed_stream))}" if report.seed_stream else ""))


def to_json(report: LatencyReport) -> str:
    return json.dumps(asdict(report), indent=2)
