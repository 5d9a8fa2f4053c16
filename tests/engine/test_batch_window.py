"""``serve --batch-window-ms``: a round waits for the channels of the rounds before, so they batch again.

The render queues (plain and overlapping) with the reference renderer, which logs each batch's
channels. Each test queues jobs by hand, as the channels' schedulers do: no wait here depends on
timing but the window's own expiry (a lower bound: the frame cannot publish before it), and
"not yet begun" is checked after the loop has had many turns to begin it. With overlap, the test
may hold a begun batch's decode open (``Logged.decoded``): its frames stay in flight until it opens it.
"""

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from bridge.core.params import Limits, Params
from bridge.core.renderer import NullRenderer
from bridge.core.scene import Scene
from bridge.engine.channels import ChannelRegistry
from bridge.engine.overlap_queue import OverlappingQueue
from bridge.engine.render_queue import RenderQueue, Snapshot
from waiting import settle


class Logged(NullRenderer):
    """Logs every batch's channels, in the order they render (with overlap: begin); a begun batch's
    frames are published only while ``decoded`` is set."""

    def __init__(self):
        super().__init__()
        self.batches: list[tuple[str, ...]] = []
        self.decoded = threading.Event()
        self.decoded.set()

    def render_batch(self, items):
        self.batches.append(tuple(stream for stream, _, _ in items))
        return super().render_batch(items)

    def begin_batch(self, items):
        return Decoding(self.decoded, super().begin_batch(items))


class Decoding:
    """A begun batch whose decode ends when the test sets ``decoded`` (on the publishing thread)."""

    def __init__(self, decoded: threading.Event, finished):
        self.decoded, self.finished = decoded, finished

    def ready(self):
        return self.decoded.is_set()

    def result(self):
        if not self.decoded.wait(10):
            raise TimeoutError("the test never let the decode end")
        return self.finished.result()


@pytest.fixture
async def queues():
    """``queues(kind, window_s)``: a plain or an overlapping queue with its own logging renderer."""
    gpu, out = ThreadPoolExecutor(1, thread_name_prefix="gpu"), ThreadPoolExecutor(1, thread_name_prefix="out")
    made = []

    def make(kind: str, window_s: float):
        renderer = Logged()
        queue = RenderQueue(renderer, gpu, join_window_s=window_s) if kind == "plain" else \
            OverlappingQueue(renderer, gpu, out, join_window_s=window_s)
        made.append((queue, renderer))
        return queue, renderer

    yield make
    for queue, renderer in made:
        renderer.decoded.set()
        await queue.close()
    gpu.shutdown()
    out.shutdown()


@pytest.fixture(params=["plain", "overlap"])
def make_queue(request, queues):
    return lambda window_s: queues(request.param, window_s)


def submit(queue: RenderQueue, stream: str, size: int = 8):
    return queue.submit(stream, lambda: Snapshot(Params(width=size, height=size), Scene(), 1), lambda s, r, ms: r)


async def loop_turns(n: int = 200) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def first_round(queue: RenderQueue, renderer: Logged) -> None:
    """Channels a and b render one frame together (one bundle of changes)."""
    jobs = [submit(queue, "a"), submit(queue, "b")]
    await asyncio.wait_for(asyncio.gather(*(job.future for job in jobs)), 10)
    assert renderer.batches == [("a", "b")]


async def a_waiting_for_b(queue: RenderQueue, renderer: Logged):
    """After the first round, a's next frame, whose round waits for b (the window outlasts the test)."""
    await first_round(queue, renderer)
    a = submit(queue, "a")
    await loop_turns()
    assert renderer.batches == [("a", "b")] and not a.begun.done()
    return a


async def test_a_round_waits_for_the_channels_of_the_round_before(make_queue):
    queue, renderer = make_queue(60.0)  # far longer than the test: only b's change may start the round
    a = await a_waiting_for_b(queue, renderer)
    b = submit(queue, "b")
    await asyncio.wait_for(asyncio.gather(a.future, b.future), 10)
    assert renderer.batches == [("a", "b"), ("a", "b")]
    assert queue.stats.window_waits == 1 and queue.health()["window_waits"] == 1
    assert queue.health()["batch_window_ms"] == 60000.0


async def test_without_a_window_the_round_starts_with_whoever_waits(make_queue):
    queue, renderer = make_queue(0.0)
    await first_round(queue, renderer)
    a = submit(queue, "a")
    await asyncio.wait_for(a.future, 10)
    b = submit(queue, "b")
    await asyncio.wait_for(b.future, 10)
    assert renderer.batches == [("a", "b"), ("a",), ("b",)] and queue.stats.window_waits == 0


async def test_a_channel_that_stops_changing_costs_one_window_once(make_queue):
    window = 0.3
    queue, renderer = make_queue(window)
    await first_round(queue, renderer)
    loop = asyncio.get_running_loop()
    start = loop.time()
    await asyncio.wait_for(submit(queue, "a").future, 10)  # b never changes again: the window runs out
    assert loop.time() - start >= window and renderer.batches[-1] == ("a",)
    await asyncio.wait_for(submit(queue, "a").future, 10)  # b is no longer of the rounds before: no wait
    assert renderer.batches[-1] == ("a",) and queue.stats.window_waits == 1
    assert queue.stats.window_wait_s >= window


async def test_a_lone_channel_never_waits(make_queue):
    queue, renderer = make_queue(60.0)
    for _ in range(3):
        await asyncio.wait_for(submit(queue, "a").future, 10)
    assert renderer.batches == [("a",)] * 3 and queue.stats.window_waits == 0


async def test_a_forgotten_channel_is_not_waited_for(make_queue):
    queue, renderer = make_queue(60.0)
    await first_round(queue, renderer)
    queue.forget("b")  # its channel was closed or moved to another device
    await asyncio.wait_for(submit(queue, "a").future, 10)
    assert renderer.batches[-1] == ("a",) and queue.stats.window_waits == 0


async def test_a_channel_forgotten_during_the_window_ends_the_wait(make_queue):
    queue, renderer = make_queue(60.0)
    a = await a_waiting_for_b(queue, renderer)
    queue.forget("b")  # b's channel is deleted (or moved to another device) while a's round waits for it
    await asyncio.wait_for(a.future, 10)
    assert renderer.batches[-1] == ("a",) and queue.stats.window_waits == 1


async def test_a_round_whose_channel_was_deleted_does_not_wait(make_queue):
    queue, renderer = make_queue(60.0)
    a = await a_waiting_for_b(queue, renderer)
    a.begun.cancel()  # a's channel is deleted while its round waits for b: its render loop stops
    queue.forget("a")
    await settle(lambda: queue.stats.window_waits == 1)  # the wait ended: nobody is left to render
    assert renderer.batches == [("a", "b")] and a.future.cancelled()


async def test_stopping_starts_the_round_that_waits(make_queue):
    queue, renderer = make_queue(60.0)
    a = await a_waiting_for_b(queue, renderer)
    await asyncio.wait_for(queue.stop_waiting(), 10)  # returns once a's frame has begun
    assert a.begun.done()
    await asyncio.wait_for(a.future, 10)
    assert renderer.batches[-1] == ("a",) and queue.stats.window_waits == 1


async def test_the_daemon_stopping_during_the_window_drops_no_frame(make_queue):
    queue, renderer = make_queue(60.0)
    registry = ChannelRegistry([queue], initial=Params(width=8, height=8), limits=Limits(256), max_channels=2)
    main, left = await registry.create("main"), await registry.create("left")
    await settle(lambda: main.scheduler.latest is not None and left.scheduler.latest is not None)
    main.scheduler.apply({"seed": 1})
    left.scheduler.apply({"seed": 1})  # one round, one batch
    await settle(lambda: renderer.batches[-1] == ("main", "left") and main.scheduler.latest.params.seed == 1)
    main.scheduler.apply({"seed": 2})  # its round waits for left, which changes no more
    await loop_turns()
    await asyncio.wait_for(registry.close(), 10)  # shutdown, left first: main's frame is still rendered
    assert renderer.batches[-1] == ("main",) and queue.stats.window_waits == 1


async def test_a_channel_of_another_shape_is_not_waited_for(make_queue):
    queue, renderer = make_queue(60.0)
    jobs = [submit(queue, "a"), submit(queue, "b", size=16)]  # one round, two batches: no batch to win back
    await asyncio.wait_for(asyncio.gather(*(job.future for job in jobs)), 10)
    assert sorted(renderer.batches) == [("a",), ("b",)]
    await asyncio.wait_for(submit(queue, "a").future, 10)
    assert renderer.batches[-1] == ("a",) and queue.stats.window_waits == 0


async def test_a_frame_in_flight_is_waited_for_only_while_it_is(queues):
    queue, renderer = queues("overlap", 0.2)
    renderer.decoded.clear()  # the first round's frames stay in flight
    a1, b1 = submit(queue, "a"), submit(queue, "b")
    await asyncio.wait_for(a1.begun, 10)
    a2 = submit(queue, "a")  # a changes again while its frame decodes; b changes no more
    await asyncio.wait_for(a2.begun, 10)  # after one window: b's frame was in flight, its change could come
    assert queue.stats.window_waits == 1 and not b1.future.done()
    renderer.decoded.set()
    await asyncio.wait_for(asyncio.gather(b1.future, a2.future), 10)
    await asyncio.wait_for(submit(queue, "a").future, 10)  # b's frame is out, b in no later round: no second window
    assert renderer.batches == [("a", "b"), ("a",), ("a",)] and queue.stats.window_waits == 1


async def test_a_channel_is_waited_for_by_the_shape_of_its_newest_frame(queues):
    queue, renderer = queues("overlap", 0.2)
    renderer.decoded.clear()  # a's and b's first frames stay in flight
    a1, b1 = submit(queue, "a"), submit(queue, "b")
    await asyncio.wait_for(b1.begun, 10)
    b2 = submit(queue, "b", size=16)  # b's new size is known once its round takes it: that round waits for a
    await asyncio.wait_for(b2.begun, 10)
    full_waits = queue.stats.full_waits
    a2 = submit(queue, "a")  # b's frame in flight is of a's shape, its newest is not: nobody to wait for
    await settle(lambda: queue.stats.full_waits > full_waits)  # a's round is past the window, waiting for room
    assert queue.stats.window_waits == 1
    renderer.decoded.set()
    await asyncio.wait_for(asyncio.gather(a1.future, b1.future, b2.future, a2.future), 10)
    assert renderer.batches == [("a", "b"), ("b",), ("a",)]
