import asyncio
import threading
import time

import pytest

from bridge.core.errors import ValidationError
from bridge.core.params import Params
from bridge.core.renderer import NullRenderer


class SlowRenderer(NullRenderer):
    """Takes ``delay`` seconds a frame and records which params it rendered, and on which thread."""

    def __init__(self, delay=0.02, fail_on=None):
        super().__init__()
        self.delay = delay
        self.fail_on = fail_on
        self.rendered: list[Params] = []
        self.started: list[Params] = []  # renders begun (taken from the scheduler), finished or not
        self.threads: set[str] = set()

    def render(self, params, scene=None):
        self.started.append(params)
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay)
        if self.fail_on is not None and params.seed == self.fail_on:
            raise RuntimeError("simulated render failure")  # out of memory rolls back: tests/app/test_faults.py
        self.rendered.append(params)
        return super().render(params)


async def test_burst_coalesces_and_last_frame_shows_last_change(running):
    renderer = SlowRenderer(delay=0.02)
    sched = running(renderer)
    assert (await sched.next_frame(0, 5)).seq == 1
    for i in range(1000):
        sched.apply({"seed": i + 1})
    assert sched.version == 1001
    frame = await sched.next_frame(1, 5)
    while frame.version != sched.version:
        frame = await sched.next_frame(frame.seq, 5)
    assert frame.params.seed == 1000
    # 1,000 changes rendered a handful of frames: the first one or two, then the newest.
    assert len(renderer.rendered) <= 4, [p.seed for p in renderer.rendered]
    assert renderer.threads == {"gpu_0"}


async def test_superseded_state_is_never_started(running):
    renderer = SlowRenderer(delay=0.05)
    sched = running(renderer)
    await sched.next_frame(0, 5)
    sched.apply({"seed": 1})

    async def seed_1_in_flight():  # taken by the scheduler: later changes cannot supersede it
        while [p.seed for p in renderer.started] != [0, 1]:
            await asyncio.sleep(0.001)

    await asyncio.wait_for(seed_1_in_flight(), 30)  # the bound: a hang guard
    for seed in (2, 3, 4):
        sched.apply({"seed": seed})
    frame = await sched.next_frame(1, 5)
    frame = await sched.next_frame(frame.seq, 5)
    assert [p.seed for p in renderer.rendered] == [0, 1, 4]
    assert frame.params.seed == 4


async def test_identical_change_does_not_bump_version(running):
    sched = running(NullRenderer())
    v = sched.apply({"prompt": "x"}).version
    assert sched.apply({"prompt": "x"}).version == v


async def test_rejected_change_leaves_state_unchanged(running):
    sched = running(NullRenderer())
    before = (sched.params, sched.version)
    with pytest.raises(ValidationError):
        sched.apply({"seed": 1, "steps": 99})  # one bad field rejects the whole change
    assert (sched.params, sched.version) == before
    assert sched.stats.rejected == 1


async def test_render_error_is_reported_and_loop_keeps_serving(running):
    renderer = SlowRenderer(delay=0.0, fail_on=13)
    sched = running(renderer)
    errors = []
    reported = asyncio.Event()
    sched.on_error(lambda message: (errors.append(message), reported.set()))
    first = await sched.next_frame(0, 5)
    sched.apply({"seed": 13})
    await asyncio.wait_for(reported.wait(), 30)  # the failure is reported (the bound: a hang guard)
    assert "simulated render failure" in errors[0] and sched.stats.render_errors == 1
    assert sched.latest is first  # the last good frame is still served
    sched.apply({"seed": 14})
    frame = await sched.next_frame(first.seq, 5)
    assert frame.params.seed == 14


async def test_next_frame_times_out_with_none(running):
    sched = running(NullRenderer())
    frame = await sched.next_frame(0, 5)
    assert await sched.next_frame(frame.seq, 0.05) is None


async def test_sinks_run_on_gpu_thread_with_every_frame(running):
    seen = []

    class Sink:
        def publish(self, frame):
            seen.append((frame.seq, threading.current_thread().name, frame.pixels.shape))

    sched = running(NullRenderer(), sinks=[Sink()])
    await sched.next_frame(0, 5)
    assert seen == [(1, "gpu_0", (64, 64, 4))]
    assert "publish" in sched.stats.last_stages_ms
