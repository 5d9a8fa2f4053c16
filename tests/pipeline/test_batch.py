"""Batching channels: the render queue's rounds and fairness, and batched frames on the demo model (CPU)."""

import asyncio
import threading

import numpy as np
import pytest
import torch

from bridge.core.params import Params
from bridge.core.renderer import NullRenderer
from bridge.core.scene import InputImage, Scene
from bridge.engine.render_queue import RenderQueue
from bridge.engine.scheduler import Scheduler


class BatchingRenderer(NullRenderer):
    """Batches by size; records each batch as its (channel, seed) rows; can hold a batch until released."""

    def __init__(self):
        super().__init__()
        self.batches: list[list[tuple[str, int]]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def batch_key(self, params, scene):
        return params.width, params.height

    def render_batch(self, items):
        self.entered.set()
        self.gate.wait(10)
        self.batches.append([(stream, params.seed) for stream, params, _ in items])
        return [self.render(params, scene) for _, params, scene in items]


@pytest.fixture
async def channels():
    from concurrent.futures import ThreadPoolExecutor

    gpu = ThreadPoolExecutor(1, thread_name_prefix="gpu")
    renderer = BatchingRenderer()
    queue = RenderQueue(renderer, gpu)
    scheds, tasks = {}, []

    def make(*names, **initial):
        for name in names:
            scheds[name] = Scheduler(renderer, queue, initial=Params(width=64, height=64, **initial), name=name)
            tasks.append(asyncio.create_task(scheds[name].run()))
        return scheds

    yield renderer, queue, make
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await queue.close()
    gpu.shutdown()


async def frames_of(sched, version):
    frame = await sched.next_frame(0, 10)
    while frame.version < version:
        frame = await sched.next_frame(frame.seq, 10)
    return frame


async def test_same_shape_channels_render_as_one_batch_and_others_alone(channels):
    renderer, queue, make = channels
    scheds = make("a", "b", "c", "d")
    for s in scheds.values():
        await frames_of(s, 1)
    renderer.batches.clear()
    for name, seed in (("a", 1), ("b", 2), ("c", 3)):
        scheds[name].apply({"seed": seed})
    scheds["d"].apply({"seed": 4, "width": 128})  # another shape: its own batch, in the same round
    for s in scheds.values():
        await frames_of(s, 2)
    assert sorted(map(sorted, renderer.batches)) == [[("a", 1), ("b", 2), ("c", 3)], [("d", 4)]]
    assert queue.stats.batch_sizes[3] >= 1


async def test_a_change_waits_for_one_round_of_others_and_latest_wins_per_channel(channels):
    renderer, queue, make = channels
    scheds = make("a", "b", "c")
    for s in scheds.values():
        await frames_of(s, 1)
    renderer.batches.clear()
    renderer.gate.clear()
    renderer.entered.clear()
    scheds["b"].apply({"seed": 10})
    scheds["c"].apply({"seed": 20})
    await asyncio.get_running_loop().run_in_executor(None, renderer.entered.wait, 10)  # b and c in flight
    for seed in range(100, 200):  # a burst on a, while the others render
        scheds["a"].apply({"seed": seed})
    scheds["b"].apply({"seed": 11})
    renderer.gate.set()
    await frames_of(scheds["a"], scheds["a"].version)
    await frames_of(scheds["b"], scheds["b"].version)
    # Round 1: b and c (a was idle). Round 2: a's newest state and b's next, together: a waited
    # for one batch of the others, and none of its 99 superseded states was rendered.
    assert [sorted(b) for b in renderer.batches] == [[("b", 10), ("c", 20)], [("a", 199), ("b", 11)]]


async def test_a_failing_batch_fails_its_channels_and_they_recover(channels):
    renderer, queue, make = channels
    scheds = make("a", "b")
    for s in scheds.values():
        await frames_of(s, 1)
    original = renderer.render_batch
    renderer.render_batch = lambda items: (_ for _ in ()).throw(RuntimeError("simulated"))
    scheds["a"].apply({"seed": 5})
    scheds["b"].apply({"seed": 6})
    for _ in range(1000):
        if scheds["a"].stats.render_errors and scheds["b"].stats.render_errors:
            break
        await asyncio.sleep(0.01)
    assert scheds["a"].stats.render_errors == scheds["b"].stats.render_errors == 1
    renderer.render_batch = original
    scheds["a"].apply({"seed": 7})
    assert (await frames_of(scheds["a"], scheds["a"].version)).params.seed == 7


# -- the demo model: a channel's frame alone and in a batch ---------------------------------

@pytest.fixture(scope="module")
def demo_renderer(tmp_path_factory):
    from bridge.pipeline.loading.loader import load_pipeline
    from bridge.pipeline.render.batch import ChannelRenderer
    from bridge.pipeline.render.renderer import DiffusersRenderer

    pipe = load_pipeline("demo", "cpu", torch.float32, tmp_path_factory.mktemp("demo-cache"))
    return ChannelRenderer(DiffusersRenderer(pipe, "cpu", torch.float32))


def _items(guidance, scene=Scene()):
    return [(f"ch{i}", Params(prompt=f"channel {i}", seed=11 * i + 3, guidance=guidance * (1 + i / 4), steps=2,
                              width=64, height=64), scene) for i in range(3)]


@pytest.mark.parametrize("guidance", [0.0, 1.5])
def test_a_channels_frame_is_the_same_alone_or_in_a_batch(demo_renderer, guidance):
    """Exact on most pixels; CPU convolutions (oneDNN) round differently for a batch of N than of 1
    (about 1e-6 in the UNet and VAE outputs), which moves a few 8-bit values by one level, never more."""
    items = _items(guidance)
    alone = [demo_renderer.render_batch([item])[0].pixels for item in items]
    batch = [r.pixels for r in demo_renderer.render_batch(items)]
    for a, b in zip(alone, batch):
        diff = np.abs(a.astype(int) - b.astype(int))
        assert diff.max() <= 1 and (diff == 0).mean() > 0.9, (diff.max(), (diff == 0).mean())
    assert len({a.tobytes() for a in alone}) == 3  # the channels' frames differ: no row shows another's
    for i, b in enumerate(batch):
        for j, a in enumerate(alone):
            if i != j:
                assert np.abs(a.astype(int) - b.astype(int)).max() > 1


def test_image_to_image_batches_with_each_channels_input(demo_renderer):
    rng = np.random.default_rng(1)
    inputs = [InputImage.from_pixels(rng.integers(0, 256, (64, 64, 4), np.uint8)) for _ in range(3)]
    items = [(stream, params.merged({"strength": 0.5}), Scene(image)) for (stream, params, _), image
             in zip(_items(0.0), inputs)]
    alone = [demo_renderer.render_batch([item])[0].pixels for item in items]
    batch = [r.pixels for r in demo_renderer.render_batch(items)]
    for a, b in zip(alone, batch):
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    assert demo_renderer.batch_key(*items[0][1:]) != demo_renderer.batch_key(*_items(0.0)[0][1:])


def test_each_row_keeps_its_own_negative_prompt(demo_renderer):
    items = [(stream, params.merged({"negative_prompt": f"not {i}"}), scene)
             for i, (stream, params, scene) in enumerate(_items(1.5))]
    alone = [demo_renderer.render_batch([item])[0].pixels for item in items]
    batch = [r.pixels for r in demo_renderer.render_batch(items)]
    for a, b in zip(alone, batch):
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    plain = demo_renderer.render_batch([_items(1.5)[0]])[0].pixels
    assert np.abs(plain.astype(int) - alone[0].astype(int)).max() > 1  # the negative prompt counts


def test_frames_with_other_loras_never_share_a_batch(demo_renderer):
    (_, params, scene), = _items(0.0)[:1]
    assert demo_renderer.batch_key(params, scene) != demo_renderer.batch_key(params.merged({"loras": (("ink", 1.0),)}),
                                                                              scene)
    assert demo_renderer.batch_key(params, scene) == demo_renderer.batch_key(params.merged({"seed": 99}), scene)


def test_batches_pad_to_a_power_of_two_so_few_shapes_compile():
    from bridge.pipeline.render.batch import padded_size

    assert [padded_size(n) for n in range(1, 10)] == [1, 2, 4, 4, 8, 8, 8, 8, 16]


def test_new_prompts_are_encoded_in_the_batch_and_cached_for_later_frames(demo_renderer):
    items = [(stream, params.merged({"prompt": f"{params.prompt} fresh"}), scene)
             for stream, params, scene in _items(0.0)]
    text = demo_renderer.inner.text
    first = [r.pixels for r in demo_renderer.render_batch(items)]  # text encoders inside the batch
    for _, params, _ in items:
        embeds, _ = text.cached(params.prompt)
        alone, _ = text.encode(text.token_ids(params.prompt))  # one prompt through the encoders
        assert torch.allclose(embeds, alone, atol=1e-5)
    again = [r.pixels for r in demo_renderer.render_batch(items)]  # every prompt cached: embeddings in
    for a, b in zip(first, again):
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
