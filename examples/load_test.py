"""Load benchmark: an OSC flood, long-polling HTTP clients and WebSocket clients against a real daemon.

Starts ``turbo-bridge serve`` as a child process, then for ``--seconds`` (30):
  * a separate process floods OSC at ``--rate`` messages/s (5,000): ``/bridge/seed i N`` with N
    counting up (a tag), and every 500th message a ``/bridge/params`` with a new prompt too;
  * ``--pollers`` (20) HTTP clients long-poll ``/v1/frame.png?after=SEQ`` in a loop;
  * ``--websockets`` (5) WebSocket clients take JPEG frames.
Then it reports messages sent / received by the daemon / applied / dropped, whether the final
params equal the last message sent, control-to-frame latency (for each message: the time until
a client gets the first frame showing it or a newer one) p50/p99 per client kind, frames
delivered, and the daemon's resident memory at start and end.

    python examples/load_test.py --model demo --json load-demo.json
    python examples/load_test.py --model null      # the bridge alone, no model work
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import signal
import socket
import sys
import tempfile
import time
import uuid

import aiohttp
import numpy as np

from bridge.bench.latency import start_daemon
from bridge.client import osc_message

PROMPT_EVERY = 500


def flood(port: int, rate: float, seconds: float, times_path: str, ready) -> None:
    """Child process: send tags 1..N at ``rate``/s; save each tag's send time (monotonic ns)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    total = int(rate * seconds)
    sent_ns = np.zeros(total + 1, np.int64)
    seed_prefix = osc_message("/bridge/seed", 0)[:-4]  # the address and ",i": only the int changes
    ready.wait()
    start = time.monotonic_ns()
    tag = 0
    while tag < total:
        due = min(total, int((time.monotonic_ns() - start) * rate / 1e9) + 1)
        while tag < due:
            tag += 1
            if tag % PROMPT_EVERY == 0:
                data = osc_message("/bridge/params", json.dumps({"seed": tag, "prompt": f"a lighthouse, take {tag}"}))
            else:
                data = seed_prefix + tag.to_bytes(4, "big")
            sent_ns[tag] = time.monotonic_ns()
            sock.sendto(data, ("127.0.0.1", port))
        time.sleep(0.0005)
    np.save(times_path, sent_ns)


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def udp_receive_errors() -> int:
    """The kernel's count of UDP datagrams dropped for a full receive buffer (system-wide)."""
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Udp:")]
    return int(dict(zip(rows[0], rows[1]))["RcvbufErrors"])


async def poller(session, arrivals: list, stop: asyncio.Event) -> None:
    seq = 0
    while not stop.is_set():
        async with session.get(f"/v1/frame.png?after={seq}&timeout=5") as r:
            if r.status == 200:
                await r.read()
                arrivals.append((time.monotonic_ns(), int(r.headers["X-Seed"])))
                seq = int(r.headers["X-Frame-Seq"])


async def websocket(session, arrivals: list, stop: asyncio.Event, render_ms: list) -> None:
    seed_of = {}
    async with session.ws_connect("/v1/ws?format=jpeg", max_msg_size=0) as ws:
        while not stop.is_set():
            try:
                msg = await asyncio.wait_for(ws.receive(), 1)
            except asyncio.TimeoutError:
                continue
            if msg.type == aiohttp.WSMsgType.TEXT:
                body = json.loads(msg.data)
                if body["type"] in ("params", "hello"):
                    seed_of[body["version"]] = int(body["params"]["seed"])
            elif msg.type == aiohttp.WSMsgType.BINARY:
                version = int.from_bytes(msg.data[16:24], "little")
                arrivals.append((time.monotonic_ns(), seed_of[version]))
                render_ms.append(float(np.frombuffer(msg.data[32:36], "<f4")[0]))
            else:
                raise RuntimeError(f"websocket ended: {msg}")


def latencies_ms(sent_ns: np.ndarray, arrivals: list) -> tuple[np.ndarray, int]:
    """For each tag: first arrival showing it or a newer one, minus its send time; and tags never shown."""
    if not arrivals:
        return np.array([]), len(sent_ns) - 1
    times = np.array([t for t, _ in arrivals], np.int64)
    seeds = np.maximum.accumulate(np.array([s for _, s in arrivals], np.int64))
    tags = np.arange(1, len(sent_ns))
    index = np.searchsorted(seeds, tags, side="left")  # the first frame whose seed >= tag
    shown = index < len(seeds)
    lat = (times[index[shown]] - sent_ns[1:][shown]) / 1e6
    return lat, int((~shown).sum())


def percentiles(values: np.ndarray) -> dict:
    if not len(values):
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    return {"p50_ms": round(float(np.percentile(values, 50)), 2), "p99_ms": round(float(np.percentile(values, 99)), 2),
            "max_ms": round(float(values.max()), 2)}


async def run(args) -> dict:
    shm_name = f"tb-load-{uuid.uuid4().hex[:8]}"
    proc, http_port, osc_port = start_daemon(args.model, "full", args.size, shm_name, [], 300)[:3]
    base = f"http://127.0.0.1:{http_port}"
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    times_path = os.path.join(tempfile.mkdtemp(), "sent.npy")
    sender = ctx.Process(target=flood, args=(osc_port, args.rate, args.seconds, times_path, ready))
    sender.start()
    try:
        async with aiohttp.ClientSession(base, timeout=aiohttp.ClientTimeout(total=None)) as session:
            await asyncio.sleep(2)  # let the first frames settle before measuring memory
            rss_start = rss_mb(proc.pid)
            drops_before = udp_receive_errors()
            cpu_before = cpu_seconds(proc.pid)
            stop = asyncio.Event()
            poll_arrivals = [[] for _ in range(args.pollers)]
            ws_arrivals = [[] for _ in range(args.websockets)]
            clients = [asyncio.create_task(poller(session, a, stop)) for a in poll_arrivals]
            render_ms: list[float] = []
            clients += [asyncio.create_task(websocket(session, a, stop, render_ms)) for a in ws_arrivals]
            await asyncio.sleep(0.5)
            ready.set()
            rss_max = rss_start
            while sender.is_alive():
                await asyncio.sleep(1)
                rss_max = max(rss_max, rss_mb(proc.pid))
            sent_ns = np.load(times_path)
            last = len(sent_ns) - 1
            last_prompt = f"a lighthouse, take {last - last % PROMPT_EVERY}"
            cpu_used = cpu_seconds(proc.pid) - cpu_before
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:  # the daemon drains its socket, then renders the last state
                async with session.get("/v1/params") as r:
                    params = await r.json()
                if params["seed"] == last and all(a and a[-1][1] == last for a in poll_arrivals + ws_arrivals):
                    break
                await asyncio.sleep(0.01)
            stop.set()
            await asyncio.gather(*clients, return_exceptions=True)
            async with session.get("/v1/health") as r:
                health = await r.json()
            rss_end = rss_mb(proc.pid)
            drops = udp_receive_errors() - drops_before
    finally:
        sender.join(5)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except Exception:
            proc.kill()
    osc = health["osc"]
    flood_seconds = (sent_ns[-1] - sent_ns[1]) / 1e9  # the sender's own clock: first to last message
    poll_lat = [latencies_ms(sent_ns, a) for a in poll_arrivals]
    ws_lat = [latencies_ms(sent_ns, a) for a in ws_arrivals]
    return {
        "model": args.model, "size": args.size, "flood_seconds": round(flood_seconds, 2),
        "machine_cpus": os.cpu_count(),
        "osc": {"sent": last, "rate_per_s": round(last / flood_seconds), "received": osc["datagrams"],
                "applied": osc["applied"], "rejected": osc["rejected"], "malformed": osc["malformed"],
                "dropped": last - osc["datagrams"], "kernel_receive_buffer_drops": drops},
        "daemon_cpu_percent": round(100 * cpu_used / flood_seconds),
        "final": {"seed": params["seed"], "prompt": params["prompt"], "last_sent_seed": last,
                  "last_sent_prompt": last_prompt,
                  "equal": params["seed"] == last and params["prompt"] == last_prompt,
                  "every_client_saw_the_last_frame": all(a and a[-1][1] == last for a in poll_arrivals + ws_arrivals)},
        "frames": {"rendered": health["frames"], "render_errors": health["render_errors"],
                   "render_ms_p50": round(float(np.median(render_ms)), 2) if render_ms else None,
                   "http_long_poll_received": sum(len(a) for a in poll_arrivals),
                   "websocket_received": sum(len(a) for a in ws_arrivals),
                   "websocket_skipped": health["streams"]["frames_skipped"]},
        "last_message_to_its_frame_ms": round(min(
            (t for a in poll_arrivals + ws_arrivals for t, seed in a if seed == last), default=0) / 1e6
            - sent_ns[-1] / 1e6, 1),
        "control_to_frame": {
            "http_long_poll": percentiles(np.concatenate([lat for lat, _ in poll_lat])),
            "websocket": percentiles(np.concatenate([lat for lat, _ in ws_lat])),
        },
        "rss_mb": {"start": round(rss_start, 1), "max": round(rss_max, 1), "end": round(rss_end, 1),
                   "growth": round(rss_end - rss_start, 1)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo", help="demo (small SDXL, random weights) or null (no model work)")
    parser.add_argument("--size", type=int, default=64, help="frame width and height")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=5000.0, help="OSC messages per second")
    parser.add_argument("--pollers", type=int, default=20)
    parser.add_argument("--websockets", type=int, default=5)
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()
    report = asyncio.run(run(args))
    text = json.dumps(report, indent=2)
    sys.stdout.write(text + "\n")
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
