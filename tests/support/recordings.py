"""Helpers for recording tests: ffprobe and PyAV read-backs, frames made to flow, the record route."""

import errno
import json
import shutil
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


def remove_folder(path: Path) -> None:
    """Remove ``path`` as ``rm -rf`` would while the daemon's writers still write into it.

    The PNG writer's thread may rename its temporary file away (or add one) between rmtree's listing and its unlink,
    so a file that went meanwhile is fine and a folder that filled again is emptied again.
    """
    def missing_is_fine(function, name, exc_info):
        if not issubclass(exc_info[0], FileNotFoundError):
            raise exc_info[1]

    for _ in range(100):
        try:
            shutil.rmtree(path, onerror=missing_is_fine)
            return
        except OSError as error:
            if error.errno != errno.ENOTEMPTY:
                raise
    raise AssertionError(f"{path} kept filling while it was removed")
