"""Waiting on a condition instead of sleeping a fixed time."""

import asyncio


async def settle(predicate, timeout=3.0):
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")
