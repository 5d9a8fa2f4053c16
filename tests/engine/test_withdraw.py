"""A lost device (a cluster's worker): its channels move whole and render their current state again;
a device back is restored and the load rebalanced (``ChannelRegistry.withdraw``/``restore``).

Real render threads and queues; the renderers are the reference ``NullRenderer`` behind a gate that
can hold a frame (a hung worker) or refuse frames (a dead one).
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from bridge.core.errors import BridgeError
from bridge.core.params import Limits, Params
from bridge.core.renderer import NullRenderer
from bridge.engine.channel import NoDeviceError
from bridge.engine.channels import ChannelRegistry
from bridge.engine.loras import LoraGate
from bridge.engine.render_queue import RenderQueue
from bridge.engine.render_thread import RenderThread
from lora_folders import NotedFolder
from waiting import until


class Lost(BridgeError):
    pass


class GatedRenderer(NullRenderer):
    """NullRenderer frames; ``hold()`` keeps the next frames on the render thread until ``release()``,
    ``down`` refuses every frame (a worker whose process is gone). Notes each frame's LoRAs that its
    folder had not loaded."""

    def __init__(self, loras=None):
        super().__init__()
        self.lora_catalog = loras
        self._open = threading.Event()
        self._open.set()
        self.holding = threading.Event()  # a frame waits at the gate now
        self.down = False
        self.unloaded: list = []
        self.rendered: list[tuple[str, int]] = []  # (stream, seed) of every frame made

    def hold(self):
        self._open.clear()

    def release(self):
        self._open.set()

    def render_batch(self, items):
        if self.down:
            raise Lost("worker gone")
        if not self._open.is_set():
            self.holding.set()
            self._open.wait(30)
        if self.lora_catalog is not None:
            self.unloaded += [p.loras for _, p, _ in items if not self.lora_catalog.ready(n for n, _ in p.loras)]
        self.rendered += [(stream, params.seed) for stream, params, _ in items]
        return super().render_batch(items)


@pytest.fixture
async def devices():
    """Two devices (render thread, gated renderer, queue, LoRA gate) and a registry over them."""
    threads = [RenderThread(f"dev{i}") for i in range(2)]
    renderers = [GatedRenderer(NotedFolder(("ink", "oil"))) for _ in range(2)]
    queues = [RenderQueue(r, t, name=f"w{i}") for i, (r, t) in enumerate(zip(renderers, threads))]
    lora_loader = ThreadPoolExecutor(1)
    for queue in queues:
        queue.loras = LoraGate(queue.renderer.lora_catalog, lora_loader)
    registry = ChannelRegistry(queues, initial=Params(width=64, height=64), limits=Limits(256), max_channels=4)
    yield registry, queues, renderers
    for renderer in renderers:
        renderer.down = False
        renderer.release()
    await registry.close()
    for queue in queues:
        await queue.close()
    for thread in threads:
        thread.shutdown(wait=True)
    lora_loader.shutdown(wait=True)


def rendered(channel, version):
    latest = channel.scheduler.latest
    return latest is not None and latest.version >= version


async def test_a_lost_devices_channels_move_whole_and_render_their_state_again(devices):
    registry, (q0, q1), (r0, r1) = devices
    main = await registry.create("main")
    a = await registry.create("a")
    b = await registry.create("b")
    assert (main.queue, a.queue, b.queue) == (q0, q1, q0)
    await until(lambda: all(rendered(c, 1) for c in (main, a, b)), "the first frames")

    # b's change is in flight on q0 when q0 is lost: its frame there never comes.
    r0.hold()
    b.scheduler.apply({"seed": 7, "loras": {}})
    await until(r0.holding.is_set, "b's frame held on q0")
    main.scheduler.apply({"seed": 8})  # queued behind it on q0
    frames = {c.name: c.scheduler.stats.frames for c in (main, b)}
    moved = await registry.withdraw(q0, Lost("worker w0 lost: test"))

    assert sorted(moved) == ["b", "main"] and registry.queues == [q1] and registry.withdrawn == [q0]
    assert main.queue is q1 and b.queue is q1
    # Each renders its current state on q1, without a new change and without waiting for q0.
    await until(lambda: rendered(b, b.scheduler.version) and rendered(main, main.scheduler.version),
                "the moved channels' frames on q1", timeout=10)
    assert (b.scheduler.latest.params.seed, main.scheduler.latest.params.seed) == (7, 8)
    assert {("b", 7), ("main", 8)} <= set(r1.rendered)
    assert b.scheduler.stats.render_errors == 1 and "worker w0 lost" in b.scheduler.stats.last_error

    # q0's late frame (it was only held) is never published over the newer ones.
    published = b.scheduler.stats.frames
    r0.release()
    await q0.idle()
    await until(lambda: ("b", 7) in r0.rendered, "q0 finishing its held frame")
    await asyncio.sleep(0.05)  # the render thread's hand-back to the loop (nothing may come of it)
    assert b.scheduler.stats.frames == published and b.queue is q1
    assert frames["b"] < published

    # Nothing is placed on a lost device; back, it takes its share again.
    c = await registry.create("c")
    assert c.queue is q1
    assert await registry.restore(q0) >= 1
    assert registry.queues == [q1, q0] and registry.withdrawn == []
    back = next(ch for ch in registry if ch.queue is q0)
    calls = r0.calls
    back.scheduler.apply({"seed": 99})
    await until(lambda: rendered(back, back.scheduler.version), "a frame on the restored device")
    assert r0.calls > calls and back.scheduler.latest.params.seed == 99


async def test_with_every_device_lost_channels_wait_and_render_again_when_one_is_back(devices):
    registry, (q0, q1), (r0, r1) = devices
    main = await registry.create("main")
    a = await registry.create("a")
    await until(lambda: rendered(main, 1) and rendered(a, 1), "the first frames")
    r0.down = r1.down = True
    await registry.withdraw(q0, Lost("worker w0 lost"))
    assert main.queue is q1  # moved to the device left
    await registry.withdraw(q1, Lost("worker w1 lost"))
    assert registry.queues == [] and main.queue is q1 and a.queue is q1  # nowhere to go: they stay

    with pytest.raises(NoDeviceError, match="w0, w1 lost"):
        await registry.create("b")
    main.scheduler.apply({"seed": 5})  # accepted: the daemon keeps the state
    await until(lambda: main.scheduler.stats.failing, "main's frame failing while its device is gone")

    r0.down = False  # the other one comes back: the channels stranded on q1 move there
    assert await registry.restore(q0) == 2
    assert main.queue is q0 and a.queue is q0
    await until(lambda: rendered(main, main.scheduler.version) and rendered(a, a.scheduler.version),
                "frames of the current states once a device is back")
    assert main.scheduler.latest.params.seed == 5 and not main.scheduler.stats.failing

    r1.down = False
    await registry.restore(q1)  # and the load spreads again
    assert sorted(c.queue.name for c in registry) == ["w0", "w1"]


async def test_a_lost_devices_channels_get_their_loras_loaded_on_the_new_device_first(devices):
    registry, (q0, _), (r0, r1) = devices
    main = await registry.create("main")
    await q0.loras.prepare(["oil"])
    main.scheduler.apply({"loras": {"oil": 0.5}})
    await until(lambda: rendered(main, main.scheduler.version), "main's frame with its LoRA")
    assert r1.lora_catalog.loaded == []

    r0.down = True
    await registry.withdraw(q0, Lost("worker w0 lost"))
    await until(lambda: ("main", 0) in r1.rendered, "main's frame on q1")
    assert r1.lora_catalog.loaded == ["oil"] and r1.unloaded == []  # loaded there before its first frame
