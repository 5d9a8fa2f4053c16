"""The overlapping render queue (--overlap on) with a staged renderer that stands in for the GPU.

``StagedFake.begin_batch`` logs the begin and returns at once; its ``result`` (the decode the
publishing thread waits for) blocks until the test opens the gate. No timing: every wait is on a
condition (the log, the queue's counters, a frame of a version). The reference renderer
(``NullRenderer``, which renders in ``begin_batch``) runs through the same queue.
"""

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from bridge.core.frame import Rendered
from bridge.core.params import Params
from bridge.core.renderer import MAX_IN_FLIGHT, Finished, InFlight, NullRenderer, Renderer
from bridge.core.scene import Scene
from bridge.engine.overlap_queue import OverlappingQueue
from bridge.engine.render_queue import RenderQueue, Snapshot
from bridge.engine.scheduler import Scheduler
from waiting import settle


class StagedFake(NullRenderer):
    """Batches by size; ``begin_batch`` returns at once, ``result`` waits for ``gate``; logs both."""

    def __init__(self):
        super().__init__()
        self.gate = threading.Event()
        self.gate.set()
        self.changed = threading.Condition()
        self.log: list[tuple[str, tuple]] = []  # ("begin" | "done", ((channel, seed), ...))
        self.fail_begin = self.fail_result = False

    def batch_key(self, params, scene):
        return params.width, params.height

    def render_batch(self, items):
        raise AssertionError("an overlapping queue only begins batches")

    def begin_batch(self, items):
        rows = tuple((stream, params.seed) for stream, params, _ in items)
        if self.fail_begin:
            raise RuntimeError("simulated begin failure")
        self._note("begin", rows)
        return FakeInFlight(self, rows, [self.render(params, scene) for _, params, scene in items])

    def _note(self, what, rows):
        with self.changed:
            self.log.append((what, rows))
            self.changed.notify_all()

    def seeds(self, what, channel="main"):
        return [seed for kind, rows in self.log if kind == what for stream, seed in rows if stream == channel]

    async def until(self, predicate, timeout=10):
        def wait():
            with self.changed:
                return self.changed.wait_for(lambda: predicate(self), timeout)
        assert await asyncio.get_running_loop().run_in_executor(None, wait), self.log


class FakeInFlight:
    def __init__(self, owner, rows, frames):
        self.owner, self.rows, self.frames = owner, rows, frames

    def ready(self):
        if self.owner.fail_result:
            raise RuntimeError("simulated decode failure")  # a CUDA error surfaces at the next call, a query too
        return self.owner.gate.is_set()

    def result(self):
        self.owner.gate.wait(10)
        if self.owner.fail_result:
            raise RuntimeError("simulated decode failure")
        self.owner._note("done", self.rows)
        return self.frames


class Collect:
    """A sink: the (seed, version, seq) of every frame published, on whichever thread publishes."""

    def __init__(self):
        self.frames = []

    def publish(self, frame):
        self.frames.append((frame.params.seed, frame.version, frame.seq, threading.current_thread().name))


@pytest.fixture
async def overlapped():
    gpu = ThreadPoolExecutor(1, thread_name_prefix="gpu")
    out = ThreadPoolExecutor(1, thread_name_prefix="gpu-out")
    renderer = StagedFake()
    queue = OverlappingQueue(renderer, gpu, out)
    scheds, tasks = {}, []

    def make(*names):
        for name in names:
            sink = Collect()
            scheds[name] = Scheduler(renderer, queue, initial=Params(width=64, height=64), name=name, sinks=[sink])
            scheds[name].sink = sink
            tasks.append(asyncio.create_task(scheds[name].run()))
        return scheds

    yield renderer, queue, make
    renderer.gate.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await queue.close()
    gpu.shutdown()
    out.shutdown()


async def frame_of(sched, version):
    frame = await sched.next_frame(0, 10)
    while frame is None or frame.version < version:
        frame = await sched.next_frame(0 if frame is None else frame.seq, 10)
    return frame


def test_the_stand_in_keeps_the_renderer_contract():
    renderer = StagedFake()
    assert isinstance(renderer, Renderer)
    begun = renderer.begin_batch([("main", Params(seed=3, width=64, height=64), Scene())])
    assert isinstance(begun, InFlight) and begun.ready() and begun.result()[0].pixels[0, 0, 0] == 3
    renderer.gate.clear()
    assert not renderer.begin_batch([("main", Params(seed=4, width=64, height=64), Scene())]).ready()


async def test_the_reference_renderer_publishes_a_lone_change_on_the_render_thread():
    """NullRenderer renders in begin_batch (``Finished``, ready at once): a lone change is published on the
    render thread, as without overlap, with no hand-over to the publishing thread."""
    renderer = NullRenderer()
    begun = renderer.begin_batch([("main", Params(seed=7, width=64, height=64), Scene())])
    assert isinstance(begun, Finished) and renderer.calls == 1  # rendered before result() is asked
    with ThreadPoolExecutor(1, thread_name_prefix="gpu") as gpu, \
            ThreadPoolExecutor(1, thread_name_prefix="gpu-out") as out:
        queue = OverlappingQueue(renderer, gpu, out)
        sink = Collect()
        main = Scheduler(renderer, queue, initial=Params(width=64, height=64), sinks=[sink])
        task = asyncio.create_task(main.run())
        try:
            for seed in (1, 2, 3):
                main.apply({"seed": seed})
                assert (await frame_of(main, main.version)).params.seed == seed
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await queue.close()
    seqs = [seq for _, _, seq, _ in sink.frames]
    assert seqs == sorted(seqs) and all(name.startswith("gpu_") for *_, name in sink.frames)
    health = queue.health()
    assert health["overlap"] is True and health["lone_collected_here"] == len(sink.frames) == 3
    assert health["lone_handed_over"] == 0


async def test_a_lone_change_is_begun_then_collected_on_the_render_thread_once_ready(overlapped):
    """Nothing else in flight or waiting: the render thread polls the batch until it is ready and publishes
    it itself (no hand-over to the publishing thread)."""
    renderer, queue, make = overlapped
    main = make("main")["main"]
    await frame_of(main, 1)
    renderer.log.clear()
    main.apply({"seed": 5})
    frame = await frame_of(main, main.version)
    assert frame.params.seed == 5 and renderer.log == [("begin", (("main", 5),)), ("done", (("main", 5),))]
    assert main.sink.frames[-1][:2] == (5, main.version) and main.sink.frames[-1][3].startswith("gpu_")
    assert queue.lone_collected == 2 and queue.lone_handed_over == 0  # the first frame, then this one
    assert queue.health()["overlap"] is True and queue.stats.full_waits == 0


async def test_a_lone_batch_is_begun_while_it_decodes_and_published_once_ready(overlapped):
    """Its job is marked begun once its work is queued (its channel may queue the next change, which
    would end the poll); with nothing arriving the render thread waits for it and publishes it."""
    renderer, queue, _ = overlapped
    renderer.gate.clear()
    threads = []

    def finish(snapshot, rendered, ms):
        threads.append(threading.current_thread().name)
        return rendered

    job = queue.submit("main", lambda: Snapshot(Params(seed=9, width=64, height=64), Scene(), 1), finish)
    await asyncio.wait_for(job.begun, 10)
    assert not job.future.done() and renderer.seeds("begin") == [9] and renderer.seeds("done") == []
    renderer.gate.set()
    assert (await asyncio.wait_for(job.future, 10)).pixels[0, 0, 0] == 9
    assert threads == ["gpu_0"] and queue.lone_collected == 1 and queue.lone_handed_over == 0


async def test_the_next_change_begins_while_a_frame_decodes_and_latest_wins(overlapped):
    renderer, queue, make = overlapped
    main = make("main")["main"]
    await frame_of(main, 1)
    renderer.log.clear()
    renderer.gate.clear()  # every decode now waits for the test
    main.apply({"seed": 1})
    await renderer.until(lambda r: r.seeds("begin") == [1])
    main.apply({"seed": 2})  # frame 1 is decoding (a lone batch, polled): handed over, frame 2 begins at once
    await renderer.until(lambda r: r.seeds("begin") == [1, 2])
    assert renderer.seeds("done") == [] and queue.lone_handed_over == 1
    for seed in range(3, 101):  # two frames in flight: these wait, and only the newest will render
        main.apply({"seed": seed})
        await asyncio.sleep(0)
    await settle(lambda: queue.stats.full_waits >= 1)  # the queue waits for room: nothing begins
    assert renderer.seeds("begin") == [1, 2]
    renderer.gate.set()
    last = await frame_of(main, main.version)
    assert last.params.seed == 100
    assert renderer.seeds("begin") == renderer.seeds("done") == [1, 2, 100]
    seeds, versions, seqs, threads = zip(*main.sink.frames[-3:])
    assert seeds == (1, 2, 100) and list(versions) == sorted(versions) and list(seqs) == sorted(seqs)
    assert threads[0].startswith("gpu-out") and threads[1].startswith("gpu-out")  # frame 1 handed over; 2 overlapped
    assert main.latest.params.seed == 100 and main.stats.frames == len(main.sink.frames)


async def test_at_most_two_batches_are_in_flight_across_channels(overlapped):
    renderer, queue, make = overlapped
    scheds = make("a", "b", "c")
    for s in scheds.values():
        await frame_of(s, 1)
    renderer.log.clear()
    renderer.gate.clear()
    scheds["a"].apply({"seed": 1, "width": 128})  # three shapes: three batches, not one
    await renderer.until(lambda r: r.seeds("begin", "a") == [1])
    scheds["b"].apply({"seed": 2, "width": 192})
    await renderer.until(lambda r: r.seeds("begin", "b") == [2])
    scheds["c"].apply({"seed": 3, "width": 256})
    await settle(lambda: queue.stats.full_waits >= 1)
    assert renderer.seeds("begin", "c") == [] and renderer.seeds("done", "a") == []
    renderer.gate.set()
    for name, seed in (("a", 1), ("b", 2), ("c", 3)):
        assert (await frame_of(scheds[name], scheds[name].version)).params.seed == seed
    begins = [rows for kind, rows in renderer.log if kind == "begin"]
    dones = [rows for kind, rows in renderer.log if kind == "done"]
    assert begins == dones == [(("a", 1),), (("b", 2),), (("c", 3),)]  # published in the order begun
    assert MAX_IN_FLIGHT == 2


async def test_with_three_render_lanes_three_batches_are_in_flight_and_publish_in_order():
    """``max_in_flight`` 3 (``--render-lanes 3``): a third batch begins while two wait for their decode,
    a fourth waits for room; every frame still publishes in the order begun."""
    renderer = StagedFake()
    with ThreadPoolExecutor(1, thread_name_prefix="gpu") as gpu, \
            ThreadPoolExecutor(1, thread_name_prefix="gpu-out") as out:
        queue = OverlappingQueue(renderer, gpu, out, max_in_flight=3)
        scheds = {name: Scheduler(renderer, queue, initial=Params(width=64, height=64), name=name, sinks=[Collect()])
                  for name in "abcd"}
        tasks = [asyncio.create_task(s.run()) for s in scheds.values()]
        try:
            for s in scheds.values():
                await frame_of(s, 1)
            renderer.log.clear()
            renderer.gate.clear()
            for seed, (name, width) in enumerate(zip("abcd", (128, 192, 256, 320)), 1):  # four shapes: four batches
                scheds[name].apply({"seed": seed, "width": width})
                if seed < 4:
                    await renderer.until(lambda r, name=name, seed=seed: r.seeds("begin", name) == [seed])
            await settle(lambda: queue.stats.full_waits >= 1)
            assert renderer.seeds("begin", "d") == [] and [rows for kind, rows in renderer.log if kind == "done"] == []
            renderer.gate.set()
            for seed, name in enumerate("abcd", 1):
                assert (await frame_of(scheds[name], scheds[name].version)).params.seed == seed
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await queue.close()
    begins = [rows for kind, rows in renderer.log if kind == "begin"]
    dones = [rows for kind, rows in renderer.log if kind == "done"]
    assert begins == dones == [((name, seed),) for seed, name in enumerate("abcd", 1)]
    assert queue.health()["max_in_flight"] == 3


async def test_same_shape_channels_still_batch_and_each_channels_frames_stay_in_order(overlapped):
    renderer, queue, make = overlapped
    scheds = make("a", "b")
    for s in scheds.values():
        await frame_of(s, 1)
    for seed in range(1, 30):  # both channels change all the time: frames overlap and batch
        for s in scheds.values():
            s.apply({"seed": seed})
        if seed % 5 == 0:
            await frame_of(scheds["a"], scheds["a"].version)
    for s in scheds.values():
        assert (await frame_of(s, s.version)).params.seed == 29
        seeds, versions, seqs, _ = zip(*s.sink.frames)
        assert list(versions) == sorted(set(versions)) and list(seqs) == list(range(1, len(seqs) + 1))
    assert max(len(rows) for kind, rows in renderer.log if kind == "begin") == 2  # a and b in one batch


async def test_a_failed_begin_or_decode_is_reported_and_the_channel_recovers(overlapped):
    renderer, queue, make = overlapped
    main = make("main")["main"]
    await frame_of(main, 1)
    errors = []
    main.on_error(errors.append)
    renderer.fail_begin = True
    main.apply({"seed": 7})
    await settle(lambda: len(errors) == 1)
    renderer.fail_begin, renderer.fail_result = False, True
    main.apply({"seed": 8})
    await settle(lambda: len(errors) == 2)
    assert "simulated begin failure" in errors[0] and f"v{main.version - 1}" in errors[0]
    assert "simulated decode failure" in errors[1] and f"v{main.version}" in errors[1]
    assert queue.lone_collected >= 2  # both lone: the failed decode's too, its poll ended by the error
    renderer.fail_result = False
    main.apply({"seed": 9})
    assert (await frame_of(main, main.version)).params.seed == 9 and not main.stats.failing


async def test_without_overlap_begun_comes_with_the_published_frame():
    with ThreadPoolExecutor(1) as gpu:
        queue = RenderQueue(NullRenderer(), gpu)
        published = []

        def finish(snapshot, rendered, ms):
            published.append(snapshot.version)
            return rendered

        job = queue.submit("main", lambda: Snapshot(Params(width=64, height=64), Scene(), 3), finish)
        await job.begun
        assert job.future.done() and published == [3] and isinstance(job.future.result(), Rendered)
        assert isinstance(job.future.result().pixels, np.ndarray)
        await queue.close()
