"""Waiting on a condition instead of sleeping a fixed time."""

import asyncio

import numpy as np


async def settle(predicate, timeout=3.0):
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


async def until(check, what, timeout=60):
    """Wait until ``check()`` is true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def frame_at(session, version, channel: str | None = None) -> np.ndarray:
    """The first frame rendered from params ``version`` or later (long-polls ``/v1/frame.rgba``, or
    ``channel``'s, of an aiohttp session on the daemon), as an H x W x 4 array."""
    path = "/v1/frame.rgba" if channel is None else f"/v1/channels/{channel}/frame.rgba"
    after = -1
    while True:
        async with session.get(path, params={"after": str(after), "timeout": "30"}) as r:
            assert r.status == 200
            if int(r.headers["X-Params-Version"]) >= version:
                h, w = int(r.headers["X-Height"]), int(r.headers["X-Width"])
                return np.frombuffer(await r.read(), np.uint8).reshape(h, w, 4)
            after = int(r.headers["X-Frame-Seq"])
