"""Helpers for recording tests: ffprobe and PyAV read-backs, frames made to flow, the record route."""

import json
import subprocess
from pathlib import Path

import av
import numpy as np

import waiting


def probe(path: Path) -> dict:
    """Codec, size and every frame's time of ``path``'s video, as ffprobe reads them."""
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                          "stream=codec_name,width,height,pix_fmt:frame=pts_time", "-of", "json", str(path)],
                         check=True, capture_output=True, text=True, timeout=60).stdout
    doc = json.loads(out)
    return {**doc["streams"][0], "times": [float(f["pts_time"]) for f in doc["frames"]]}


def decoded(path: Path) -> list[np.ndarray]:
    """Every frame of ``path``'s video as RGB (H x W x 3), decoded by FFmpeg."""
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


async def settle(predicate, timeout=60.0):
    """``waiting.settle`` with room for an encoder on a busy machine."""
    await waiting.settle(predicate, timeout)


async def frames_flow(daemon, count: int) -> None:
    """Send seed changes until ``count`` new frames were published."""
    target = daemon.scheduler.stats.frames + count
    seed = daemon.scheduler.params.seed
    while daemon.scheduler.stats.frames < target:
        seed += 1
        daemon.scheduler.apply({"seed": seed})
        await daemon.scheduler.next_frame(daemon.scheduler.latest.seq if daemon.scheduler.latest else 0, 10)


async def post(session, body):
    async with session.post("/v1/record", json=body) as r:
        return r.status, await r.json()
