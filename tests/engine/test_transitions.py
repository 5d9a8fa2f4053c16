"""Transitions: the scheduler keeps rendering a glide's frames, the renderer mixes from what was
shown to the target; monotone between the ends, exact at the end, restartable mid-way."""

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bridge.core.params import Params  # noqa: E402
from bridge.core.renderer import NullRenderer  # noqa: E402
from bridge.core.scene import Glide, Scene  # noqa: E402
from bridge.engine.scheduler import Scheduler  # noqa: E402
from bridge.pipeline.loading.loader import load_pipeline  # noqa: E402
from bridge.pipeline.render.glide import Glider, Shown  # noqa: E402
from bridge.pipeline.render.renderer import DiffusersRenderer  # noqa: E402


class Recorder(NullRenderer):
    def __init__(self, delay=0.005, fail_on=None):
        super().__init__()
        self.delay, self.fail_on = delay, fail_on
        self.frames = []
        self.gate = threading.Event()
        self.gate.set()

    def render(self, params, scene=None):
        self.gate.wait(5)
        time.sleep(self.delay)
        if params.seed == self.fail_on:
            raise RuntimeError("simulated failure")
        self.frames.append((params, scene.glide))
        return super().render(params, scene)


@pytest.fixture
async def sched():
    """``await sched(renderer, frames)``: a running scheduler, its first frame out and
    ``transition_frames`` set; returns it and how many frames were rendered so far."""
    gpu = ThreadPoolExecutor(1, thread_name_prefix="gpu")
    tasks = []

    async def start(renderer, frames):
        s = Scheduler(renderer, gpu, initial=Params(width=64, height=64))
        tasks.append(asyncio.create_task(s.run()))
        await s.next_frame(0, 5)
        s.apply({"transition_frames": frames})
        await idle(s, renderer)
        return s, len(renderer.frames)

    yield start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    gpu.shutdown()


async def rendered(renderer, count):
    """Wait until ``renderer`` has rendered ``count`` frames in all."""
    while len(renderer.frames) < count:
        await asyncio.sleep(0.005)


def parked(s) -> bool:
    """The render loop waits for the next change: every change and glide step was rendered (or
    failed) and handled. A pause between frames proves nothing on a busy machine."""
    return bool(s._wake._waiters) and s._started_version >= s.version and not s.transition_active


async def idle(s, renderer):
    """Wait until ``s``'s render loop is parked (30 s: a hang guard)."""
    async def parking():
        while not parked(s):
            await asyncio.sleep(0.005)

    await asyncio.wait_for(parking(), 30)


async def test_a_change_glides_over_n_frames_without_further_changes(sched):
    r = Recorder()
    s, start = await sched(r, 5)
    s.apply({"prompt": "a lion"})
    await idle(s, r)
    glides = [g for _, g in r.frames[start:]]
    assert [g.t for g in glides] == [0.2, 0.4, 0.6, 0.8, 1.0] and len({g.token for g in glides}) == 1
    assert all(p.prompt == "a lion" for p, _ in r.frames[start:]) and not s.transition_active
    s.apply({"guidance": 1.0})  # not a prompt or seed change: a cut
    await idle(s, r)
    assert r.frames[-1][1] is None


async def test_a_newer_change_mid_glide_starts_a_new_glide(sched):
    r = Recorder(delay=0.02)
    s, start = await sched(r, 10)
    s.apply({"seed": 5})
    await rendered(r, start + 3)
    s.apply({"seed_mix": 0.5, "seed2": 6, "guidance": 2.0})
    await idle(s, r)
    glides = [g for _, g in r.frames[start:]]
    first = [g for g in glides if g.token == glides[0].token]
    second = [g for g in glides if g.token != glides[0].token]
    assert 3 <= len(first) < 10 and [g.t for g in second] == [i / 10 for i in range(1, 11)]
    assert r.frames[-1][0].seed_mix == 0.5


async def test_guidance_mid_glide_keeps_gliding_and_transition_zero_cuts(sched):
    r = Recorder(delay=0.02)
    s, start = await sched(r, 8)
    s.apply({"prompt": "a ship"})
    await rendered(r, start + 2)
    s.apply({"guidance": 3.0})  # the glide goes on, with the new guidance
    await rendered(r, start + 4)
    s.apply({"prompt": "a boat", "transition_frames": 0})  # cuts
    await idle(s, r)
    glides = [g for _, g in r.frames[start:]]
    assert len({g.token for g in glides if g}) == 1 and glides[-1] is None
    assert len(r.frames) - start < 9


async def test_latest_wins_during_a_glide_and_a_failure_ends_it(sched):
    r = Recorder(delay=0.01, fail_on=13)
    s, start = await sched(r, 4)
    for i in range(200):
        s.apply({"prompt": f"take {i}"})
    await idle(s, r)
    assert r.frames[-1][0].prompt == "take 199" and r.frames[-1][1].t == 1.0
    assert len(r.frames) - start < 20  # 200 changes: a glide's frames, not 200 glides
    s.apply({"seed": 13})
    await idle(s, r)
    assert not s.transition_active and s.stats.render_errors == 1


@pytest.fixture(scope="module")
def renderer(cache_dir):
    return DiffusersRenderer(load_pipeline("demo", "cpu", torch.float32, cache_dir), "cpu", torch.float32)


def distance(a, b):
    return float(np.abs(a.astype(float) - b.astype(float)).mean())


def test_glide_frames_are_monotone_between_the_ends_and_exact_at_the_end(renderer):
    start = Params(prompt="a cat in a garden", seed=1, width=64, height=64)
    end = start.merged({"prompt": "a dragon over a city", "seed": 2})
    first, last = renderer.render(start).pixels, renderer.render(end).pixels
    renderer.render(start)  # shown: the start
    frames = [renderer.render(end, Scene(glide=Glide(1, k / 6))).pixels for k in range(1, 7)]
    to_end = [distance(f, last) for f in frames]
    to_start = [distance(f, first) for f in frames]
    assert all(a > b for a, b in zip(to_end, to_end[1:])), to_end
    assert all(a < b for a, b in zip(to_start, to_start[1:])), to_start
    assert np.array_equal(frames[-1], last)


def test_a_new_glide_starts_from_the_current_point(renderer):
    a = Params(prompt="a red house", seed=3, width=64, height=64)
    b, c = a.merged({"prompt": "a blue boat"}), a.merged({"prompt": "a green tree", "seed": 4})
    renderer.render(a)
    renderer.render(b, Scene(glide=Glide(10, 0.5)))  # halfway from a to b
    midway = renderer.glider.last
    renderer.render(c, Scene(glide=Glide(11, 0.25)))  # a newer change: from the halfway point
    shown = renderer.glider.last
    target_embeds, target_pooled = renderer.embeddings("a green tree")
    torch.testing.assert_close(shown.embeds, 0.75 * midway.embeds + 0.25 * target_embeds)
    torch.testing.assert_close(shown.pooled, 0.75 * midway.pooled + 0.25 * target_pooled)
    assert np.array_equal(renderer.render(c, Scene(glide=Glide(11, 1.0))).pixels, renderer.render(c).pixels)


def test_glider_cuts_noise_of_another_shape_and_starts_from_nothing():
    glider = Glider()
    e, p = torch.ones(1, 77, 8), torch.ones(1, 4)
    target = Shown(e * 3, p * 3, torch.ones(2, 1, 4, 8, 8))
    assert glider.mix(Glide(1, 0.5), target) is target  # nothing shown yet: a cut
    glider.record(Shown(e, p, torch.zeros(3, 1, 4, 8, 8)))
    mixed = glider.mix(Glide(2, 0.5), target)
    assert torch.equal(mixed.embeds, e * 2) and mixed.noise is target.noise  # noise shapes differ: cut


async def test_daemon_glides_over_rest(config, daemon_factory):
    import aiohttp

    async with daemon_factory(config) as daemon:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{daemon.http_port}") as session:
            first = await daemon.scheduler.next_frame(0, 10)
            async with session.patch("/v1/params", json={"transition_frames": 3}) as r:
                assert r.status == 200
            frame = await daemon.scheduler.next_frame(first.seq, 10)
            async with session.patch("/v1/params", json={"prompt": "a castle"}) as r:
                version = (await r.json())["version"]
            frames = []
            while len(frames) < 3:
                frame = await daemon.scheduler.next_frame(frame.seq, 10)
                if frame.version == version:
                    frames.append(frame)
            assert await daemon.scheduler.next_frame(frame.seq, 0.3) is None  # then it rests
            assert not np.array_equal(frames[0].pixels, frames[2].pixels)
