"""The render queue's drain loop: a failure that is not a render's (a bug in a round) fails that round's frames
and is logged; the channels go on (their next change starts a new drain). Without and with overlap."""

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

import pytest

from bridge.core.params import Params
from bridge.core.renderer import NullRenderer
from bridge.engine.overlap_queue import OverlappingQueue
from bridge.engine.render_queue import RenderQueue
from bridge.engine.scheduler import Scheduler
from waiting import settle


class KeyBug(NullRenderer):
    """``batch_key`` (asked on the event loop, in the drain's round) raises for seed 13."""

    def batch_key(self, params, scene):
        if params.seed == 13:
            raise RuntimeError("simulated batch_key bug")
        return super().batch_key(params, scene)


@pytest.mark.parametrize("overlap", [False, True], ids=["plain", "overlapping"])
async def test_a_failure_in_a_round_fails_its_frames_is_logged_and_the_channel_serves_on(overlap, caplog):
    renderer = KeyBug()
    with ThreadPoolExecutor(1, thread_name_prefix="gpu") as gpu, \
            ThreadPoolExecutor(1, thread_name_prefix="gpu-out") as out:
        queue = OverlappingQueue(renderer, gpu, out) if overlap else RenderQueue(renderer, gpu)
        main = Scheduler(renderer, queue, initial=Params(width=64, height=64))
        errors = []
        main.on_error(errors.append)
        task = asyncio.create_task(main.run())
        try:
            first = await main.next_frame(0, 10)
            with caplog.at_level(logging.ERROR, logger="bridge.engine.render_queue"):
                main.apply({"seed": 13})
                await settle(lambda: len(errors) == 1, timeout=10)
            assert "simulated batch_key bug" in errors[0] and main.latest is first
            assert any("stopped" in r.getMessage() and r.exc_info for r in caplog.records)
            main.apply({"seed": 14})
            frame = await main.next_frame(first.seq, 10)
            assert frame is not None and frame.params.seed == 14
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await queue.close()
