"""``turbo-bridge latency``: OSC message in to frame in shared memory, through a real daemon.

Starts ``turbo-bridge serve`` as a child process, sends one change at a time at a steady rate
over OSC (a new prompt and a seed used as a tag), and watches the shared-memory segment from
this process until a frame with that seed is published. With ``--model null`` the daemon does
no GPU work, which shows the bridge's own overhead.
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

from .client import OscSender, ShmReader

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


def start_daemon(model: str, vae: str, size: int, shm_name: str, extra: list[str], startup_timeout: float):
    """Start ``turbo-bridge serve``; return (process, HTTP port, OSC port) once it is ready."""
    cmd = [sys.executable, "-m", "bridge", "serve", "--model", model, "--vae", vae, "--http-port", "0",
           "--osc-port", "0", "--shm-name", shm_name, "--width", str(size), "--height", str(size),
           "--max-size", str(max(size, 64)), *extra]
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
            return proc, int(match.group(1)), int(match.group(2))
    proc.kill()
    raise RuntimeError(f"daemon did not become ready within {startup_timeout:.0f} s: {' '.join(cmd)}")


def _drain(stream) -> None:
    for line in stream:
        log.info("daemon: %s", line.rstrip())


def measure(osc_port: int, shm_name: str, count: int, rate_hz: float, timeout: float = 5.0):
    """Latencies (ms) from sending each change to seeing its frame in shared memory."""
    sender = OscSender("127.0.0.1", osc_port)
    latencies, render_ms = [], []
    with ShmReader(shm_name) as reader:
        reader.read(force=True)
        period = 1.0 / rate_hz
        next_send = time.perf_counter()
        for i in range(count):
            tag = 10_000_000 + i
            while time.perf_counter() < next_send:
                time.sleep(min(0.0005, next_send - time.perf_counter()))
            sent = time.perf_counter()
            sender.send_params({"prompt": f"a lighthouse in a storm, take {i}", "seed": tag})
            next_send = sent + period
            deadline = sent + timeout
            while time.perf_counter() < deadline:
                frame = reader.read()
                if frame is not None and frame.seed == tag:
                    latencies.append((time.perf_counter() - sent) * 1e3)
                    render_ms.append(frame.render_ms)
                    break
                time.sleep(0.00005)
    sender.close()
    return latencies, render_ms


def run_latency(model: str, vae: str, size: int, count: int, rate_hz: float, extra: list[str],
                startup_timeout: float = 900.0) -> LatencyReport:
    shm_name = f"tb-latency-{uuid.uuid4().hex[:8]}"
    proc, _, osc_port = start_daemon(model, vae, size, shm_name, extra, startup_timeout)
    try:
        warm, _ = measure(osc_port, shm_name, 10, rate_hz)  # first frames after start are not steady
        latencies, render_ms = measure(osc_port, shm_name, count, rate_hz)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
    if not latencies:
        raise RuntimeError("no frame arrived for any change")
    ordered = sorted(latencies)

    def pct(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)

    return LatencyReport(model, vae, size, rate_hz, count, len(latencies), round(statistics.median(ordered), 3),
                         pct(0.90), pct(0.99), round(ordered[-1], 3), round(statistics.fmean(render_ms), 3))


def format_latency(report: LatencyReport) -> str:
    return (f"{report.model} ({report.vae} VAE, {report.size}x{report.size}) at {report.rate_hz:g} changes/s: "
            f"{report.received}/{report.sent} frames, OSC in -> frame in shared memory p50 {report.p50_ms:.3f} ms, "
            f"p90 {report.p90_ms:.3f}, p99 {report.p99_ms:.3f}, max {report.max_ms:.3f}; "
            f"daemon render {report.mean_render_ms:.3f} ms mean")


def to_json(report: LatencyReport) -> str:
    return json.dumps(asdict(report), indent=2)
