"""Change-to-frame latency over the WebSocket, per format: an example client that also measures.

Sends one seed change at a time and waits for the first frame that shows it, then prints the
median and 95th percentile of the whole round trip, of the render time the frame header reports,
and of the difference (the bridge's own share: validation, scheduling, encoding, transport).

    python examples/ws_latency.py --url http://127.0.0.1:8787 --changes 50 --format jpeg png rgba
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import struct
import time

import aiohttp

# The binary frame header (README.md, "Live page, WebSocket and MJPEG").
HEADER = struct.Struct("<4sHBBQQIIfI")


async def round_trips(url: str, fmt: str, changes: int) -> list[tuple[float, float, int]]:
    """(round trip ms, render ms, message bytes) for each change."""
    rows = []
    async with aiohttp.ClientSession() as session, session.ws_connect(f"{url}/v1/ws?format={fmt}") as ws:
        hello = json.loads((await ws.receive()).data)
        seed = hello["params"]["seed"]
        for _ in range(changes):
            seed = (seed + 1) % 2**32
            started = time.perf_counter()
            await ws.send_json({"params": {"seed": seed}})
            wanted = None
            while True:
                msg = await ws.receive()
                if msg.type == aiohttp.WSMsgType.TEXT:
                    reply = json.loads(msg.data)
                    if reply["type"] == "error":
                        raise SystemExit(f"rejected: {reply['error']}")
                    if reply["type"] == "applied":
                        wanted = reply["version"]
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    _, _, _, _, seq, version, width, height, render_ms, length = HEADER.unpack_from(msg.data)
                    if wanted is not None and version >= wanted:
                        rows.append(((time.perf_counter() - started) * 1e3, render_ms, len(msg.data)))
                        break
                else:
                    raise SystemExit(f"connection ended: {msg}")
    return rows


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    return f"{statistics.median(ordered):7.2f} / {ordered[int(0.95 * (len(ordered) - 1))]:7.2f}"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8787")
    parser.add_argument("--changes", type=int, default=50)
    parser.add_argument("--format", nargs="+", default=["jpeg", "png", "rgba"])
    args = parser.parse_args()
    async with aiohttp.ClientSession() as session, session.get(f"{args.url}/v1/params") as r:
        params = await r.json()
    print(f"{params['width']}x{params['height']}, {args.changes} changes each; ms median / p95")
    print(f"{'format':6}  {'round trip':>17}  {'render':>17}  {'round trip - render':>19}  {'bytes':>8}")
    for fmt in args.format:
        rows = await round_trips(args.url, fmt, args.changes)
        total, render, size = zip(*rows)
        overhead = [t - r for t, r, _ in rows]
        print(f"{fmt:6}  {summary(total)}  {summary(render)}  {summary(overhead):>19}  "
              f"{int(statistics.median(size)):8d}")


if __name__ == "__main__":
    asyncio.run(main())
