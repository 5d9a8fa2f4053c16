"""``turbo-bridge latency --channels N``: several live streams through one real daemon.

Every channel runs a closed loop from its own thread: send a new prompt (and a seed used as a
tag) over OSC to ``/bridge/ch/NAME/params``, wait until that frame is in the channel's segment,
repeat. First channel ``main`` alone, then all N together, each phase after a warm-up (which
compiles the batch sizes on a GPU: before it, one OSC bundle changing 2..N channels at once
makes each batch size render at least once). Reported: frames per second alone, in total and per
channel with N, and main's OSC-to-frame latency alone and with the others running; and for each
measured phase what the daemon rendered during it (``phase_render.py``: frames, rounds, batches by
rows, batches in flight), from ``/v1/health`` right before and right after that phase.
"""

from __future__ import annotations

import json
import socket
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from ..client import HttpClient, OscSender, ShmReader, osc_address, osc_bundle, osc_message, segment_name
from .latency import start_daemon, stop_daemon
from .phase_render import PhaseRender, batch_rows, format_phase, in_flight_meaning, overlapping, phase_render, rows_text

MAIN = "main"


@dataclass(frozen=True)
class Loop:
    """One channel's closed loop in one phase."""

    frames: int
    seconds: float
    latencies_ms: tuple[float, ...]

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class MultiReport:
    model: str
    vae: str
    size: int
    channels: int
    seconds: float
    alone_fps: float
    alone_p50_ms: float
    total_fps: float
    per_channel_fps: dict[str, float]
    main_p50_ms_with_others: float
    main_p99_ms_with_others: float
    speedup: float  # total FPS with N channels / FPS of one channel alone
    timeouts: int  # changes whose frame did not arrive within the timeout
    alone_phase: PhaseRender  # what the daemon rendered while main ran alone (phase_render.py)
    together_phase: PhaseRender  # ... while all N ran
    # Batches by rows between the two phases (the all-at-once bundles and the warm-ups of 2..N
    # channels): the batch sizes that compiled before the together phase.
    warmup_batch_rows: dict[str, int]
    overlap: bool  # --overlap on: how to read mean_batches_in_flight (phase_render.py)
    startup_s: float = 0.0
    per_channel_p50_ms: dict[str, float] = field(default_factory=dict)  # OSC-to-frame, all N running
    daemon_options: tuple[str, ...] = ()  # what followed `--` (--overlap, --batch-vae, ...): the run's set-up


def loop_tag(phase_no: int, index: int, take: int) -> int:
    """The seed of a closed loop's change: unique per channel over the whole run, so a frame of an
    earlier phase still in the segment never passes for this one's (a channel that got one frame in
    a phase left the seed of the next phase's first change there). Above the bundles' seeds."""
    return 10**13 * (phase_no + 1) + 10**9 * (index + 1) + take


def closed_loop(osc_port: int, shm_name: str, channel: str, index: int, phase_no: int, seconds: float,
                timeout: float, out: dict) -> None:
    """Send a change, wait for its frame, repeat for ``seconds``; puts a ``Loop`` and a timeout count in out."""
    sender = OscSender("127.0.0.1", osc_port, channel)
    latencies, timeouts = [], 0
    with ShmReader(segment_name(shm_name, channel)) as reader:
        started = time.perf_counter()
        i = 0
        while time.perf_counter() - started < seconds:
            tag = loop_tag(phase_no, index, i)
            i += 1
            sent = time.perf_counter()
            sender.send_params({"prompt": f"a lighthouse in a storm, channel {index}, take {i}", "seed": tag})
            while True:
                meta = reader.latest_meta()
                if meta is not None and meta.seed == tag:
                    latencies.append((time.perf_counter() - sent) * 1e3)
                    break
                if time.perf_counter() - sent > timeout:
                    timeouts += 1
                    break
                time.sleep(0.00005)
        elapsed = time.perf_counter() - started
    sender.close()
    out[channel] = (Loop(len(latencies), elapsed, tuple(latencies)), timeouts)


def phase(osc_port: int, shm_name: str, names: list[str], phase_no: int, seconds: float, timeout: float) -> dict:
    """Every channel of ``names`` in its closed loop at once, for ``seconds``; each phase of a run its own number."""
    out: dict = {}
    threads = [threading.Thread(target=closed_loop, args=(osc_port, shm_name, name, i, phase_no, seconds, timeout,
                                                          out), name=f"loop-{name}") for i, name in enumerate(names)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return out


def all_at_once(osc_port: int, shm_name: str, names: list[str], round_no: int, timeout: float) -> None:
    """One change for every channel in one OSC bundle, then each channel's frame of it: all are due
    in the same turn of the daemon's loop, so they render as one batch of ``len(names)``. The
    closed loops batch only when their timing lines up, which a busy machine may never give."""
    tags = {name: 3_000_000_000_000 + 1_000 * round_no + i for i, name in enumerate(names)}  # below loop_tag's
    bundle = osc_bundle(*(osc_message(osc_address("/bridge/seed", name), tag) for name, tag in tags.items()))
    readers = [ShmReader(segment_name(shm_name, name)) for name in names]
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(bundle, ("127.0.0.1", osc_port))
        deadline = time.monotonic() + timeout
        for reader, tag in zip(readers, tags.values()):
            while (meta := reader.latest_meta()) is None or meta.seed != tag:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no frame of seed {tag} in {reader.name!r} within {timeout} s")
                time.sleep(0.0005)
    finally:
        for reader in readers:
            reader.close()


def between_health(http: HttpClient, run: Callable[[], Any]) -> tuple[Any, dict, dict, float]:
    """``run()`` between two ``GET /v1/health``: its result, both replies and the seconds between them."""
    before = http.health()
    started = time.perf_counter()
    result = run()
    seconds = time.perf_counter() - started
    return result, before, http.health(), seconds


def _median(values: tuple[float, ...]) -> float:
    """The p50 of every OSC-to-frame figure here (main's and each channel's alike)."""
    return round(statistics.median(values), 3) if values else float("nan")


def _pct(values: tuple[float, ...], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3) if ordered else float("nan")


def run_multichannel(model: str, vae: str, size: int, channels: int, seconds: float, extra: list[str],
                     warmup_s: float = 5.0, timeout: float = 30.0, startup_timeout: float = 900.0) -> MultiReport:
    if channels < 1:
        raise ValueError("--channels must be at least 1")
    shm_name = f"tb-multi-{uuid.uuid4().hex[:8]}"
    proc, http_port, osc_port, startup_s = start_daemon(
        model, vae, size, shm_name, [*extra, "--max-channels", str(channels)], startup_timeout)
    names = [MAIN] + [f"ch{i}" for i in range(1, channels)]
    http = HttpClient(f"http://127.0.0.1:{http_port}")
    try:
        for name in names[1:]:  # created from the daemon's initial parameters (size) by their first change
            HttpClient(f"http://127.0.0.1:{http_port}", channel=name).patch({"prompt": f"start {name}"})
        phase(osc_port, shm_name, [MAIN], 0, warmup_s, startup_timeout)  # compiles the single-frame graphs
        alone, alone_before, alone_after, alone_s = between_health(
            http, lambda: phase(osc_port, shm_name, [MAIN], 1, seconds, timeout))
        # Compiles the batch sizes: each count of channels at least once (batches are padded to a
        # power of two), so no compile lands in the measured phase.
        for count in range(2, len(names) + 1):
            all_at_once(osc_port, shm_name, names[:count], count, startup_timeout)  # a batch of count, surely
            phase(osc_port, shm_name, names[:count], count, warmup_s, startup_timeout)
        together, together_before, together_after, together_s = between_health(
            http, lambda: phase(osc_port, shm_name, names, len(names) + 1, seconds, timeout))
    finally:
        stop_daemon(proc)
    alone_loop = alone[MAIN][0]
    total = sum(loop.fps for loop, _ in together.values())
    main_loop = together[MAIN][0]
    return MultiReport(
        model, vae, size, channels, seconds, round(alone_loop.fps, 2),
        _median(alone_loop.latencies_ms),
        round(total, 2), {name: round(loop.fps, 2) for name, (loop, _) in together.items()},
        _median(main_loop.latencies_ms),
        _pct(main_loop.latencies_ms, 0.99), round(total / alone_loop.fps, 2) if alone_loop.fps else float("nan"),
        sum(t for _, t in together.values()) + alone[MAIN][1],
        phase_render(alone_before, alone_after, alone_s, alone_loop.frames),
        phase_render(together_before, together_after, together_s, sum(loop.frames for loop, _ in together.values())),
        batch_rows(alone_after, together_before), overlapping(together_after), round(startup_s, 1),
        {name: _median(loop.latencies_ms) for name, (loop, _) in together.items()}, tuple(extra))


def format_multichannel(r: MultiReport) -> str:
    per = ", ".join(f"{name} {fps:.1f}" for name, fps in r.per_channel_fps.items())
    options = f", daemon {' '.join(r.daemon_options)}" if r.daemon_options else ""
    return (f"{r.model} ({r.vae} VAE, {r.size}x{r.size}{options}), new prompt every frame, {r.seconds:g} s a phase:\n"
            f"  1 channel alone: {r.alone_fps:.2f} FPS, OSC-to-frame p50 {r.alone_p50_ms:.2f} ms\n"
            f"  {r.channels} channels: {r.total_fps:.2f} FPS in total ({r.speedup:.2f}x), per channel: {per}\n"
            f"  OSC-to-frame p50 per channel, all running: "
            f"{', '.join(f'{name} {ms:.2f} ms' for name, ms in r.per_channel_p50_ms.items())}\n"
            f"  main with the others running: p50 {r.main_p50_ms_with_others:.2f} ms "
            f"({r.main_p50_ms_with_others / r.alone_p50_ms:.2f}x alone), p99 {r.main_p99_ms_with_others:.2f} ms\n"
            f"  what the daemon rendered in each phase (GET /v1/health right before and after it):\n"
            f"{format_phase('alone', r.alone_phase)}\n"
            f"{format_phase(f'{r.channels} channels', r.together_phase)}\n"
            f"    batches in flight: {in_flight_meaning(r.overlap)}\n"
            f"    the warm-ups between the phases (rows: batches): {rows_text(r.warmup_batch_rows)}\n"
            f"  changes timed out: {r.timeouts}")


def to_json(report: MultiReport) -> str:
    return json.dumps(asdict(report), indent=2)
