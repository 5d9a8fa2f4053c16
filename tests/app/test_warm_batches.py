"""``serve --warm-channels N``: the batch graphs of up to N channels rendered at start (``app/warm_batches.py``).

On the demo model (CPU, eager) the renderer keeps the keys of the stages it ran as a compiled one keeps
its captured graphs: after the warm-up, real rounds of up to N channels at the initial size and settings,
with new prompts, cached ones and a mix, add no key (on a card: no capture while the channels wait)."""

import numpy as np
import pytest

from bridge.app.warm_batches import WARM_UP_STREAM, warm_batches
from bridge.core.params import Params
from bridge.core.renderer import NullRenderer
from bridge.core.scene import InputImage, Scene
from show_rounds import real_rounds

INITIAL = Params(prompt="a lighthouse at dusk", seed=7, width=64, height=64)


class Recording(NullRenderer):
    """The reference renderer, noting the rounds begun and the streams forgotten."""

    def __init__(self, alone=False):
        super().__init__()
        self.alone = alone
        self.rounds: list[list[str]] = []
        self.forgotten: list[str] = []

    def batch_key(self, params, scene):
        return None if self.alone else super().batch_key(params, scene)

    def begin_batch(self, items):
        self.rounds.append([stream for stream, _, _ in items])
        return super().begin_batch(items)

    def forget(self, stream):
        self.forgotten.append(stream)


def test_rounds_of_two_to_n_each_twice_then_their_channels_forgotten():
    renderer = Recording()
    assert warm_batches(renderer, INITIAL, 4) == 6
    assert [len(streams) for streams in renderer.rounds] == [2, 2, 3, 3, 4, 4]
    warmed = {stream for streams in renderer.rounds for stream in streams}
    assert all(stream.startswith(WARM_UP_STREAM) for stream in warmed)
    assert sorted(renderer.forgotten) == sorted(warmed)


def test_nothing_to_warm_for_one_channel_or_a_frame_that_renders_alone():
    for renderer, channels in ((Recording(), 1), (Recording(alone=True), 4)):
        assert warm_batches(renderer, INITIAL, channels) == 0
        assert renderer.rounds == [] and renderer.calls == 0


torch = pytest.importorskip("torch")


def demo_renderer(cache_dir, model, overlapped):
    from bridge.pipeline.loading.loader import load_pipeline
    from bridge.pipeline.render.batch import ChannelRenderer
    from bridge.pipeline.render.overlapped import OverlappedRenderer
    from bridge.pipeline.render.renderer import DiffusersRenderer

    inner = DiffusersRenderer(load_pipeline(model, "cpu", torch.float32, cache_dir), "cpu", torch.float32)
    return (OverlappedRenderer if overlapped else ChannelRenderer)(inner)


# SANA-Sprint: another text path (Gemma, attention-mask conditioning, embedded guidance), the same batches
@pytest.mark.parametrize("model, overlapped", [("demo", False), ("demo", True), ("demo-sana", False)],
                         ids=["overlap-off", "overlap-on", "sana"])
def test_after_the_warm_up_rounds_of_up_to_n_channels_add_no_key(cache_dir, model, overlapped):
    renderer = demo_renderer(cache_dir, model, overlapped)
    initial = INITIAL.merged({"guidance": renderer.inner.family.default_guidance})
    renderer.render(initial)  # the start-up's single frame
    single = renderer.inner.graph_keys
    warm_batches(renderer, initial, 4)
    warmed = renderer.inner.graph_keys
    batch_keys = {key for key in warmed - single if key[0] == "batch"}
    assert {key[1] for key in batch_keys} == {2, 4}  # 3 rows render as a batch of 4
    assert {key[2] is None for key in batch_keys} == {True, False}  # new prompts' ids and cached embeddings
    real_rounds(lambda items: renderer.begin_batch(items).result(), initial)
    assert renderer.inner.graph_keys == warmed
    assert not any(stream.startswith(WARM_UP_STREAM) for stream in renderer._gliders)


def test_a_round_at_another_setting_is_not_warmed(cache_dir):
    """What the docs promise no more than: an input image (image-to-image) or guidance turned on is
    another graph, captured on its first round as before."""
    renderer = demo_renderer(cache_dir, "demo", False)
    warm_batches(renderer, INITIAL, 2)
    warmed = renderer.inner.graph_keys
    image = InputImage.from_pixels(np.full((64, 64, 4), 128, dtype=np.uint8))
    for params, scene in ((INITIAL, Scene(input=image)), (INITIAL.merged({"guidance": 1.0}), Scene())):
        renderer.render_batch([(f"ch{i}", params.merged({"seed": i}), scene) for i in range(2)])
        new = renderer.inner.graph_keys - warmed
        assert any(key[0] == "batch" and key[1] == 2 for key in new), new
        warmed |= new


def test_a_cluster_worker_warms_the_batches_its_rounds_render(cache_dir):
    """A worker renders every round with ``render_batch`` (its daemon's queue waits for the frames): with
    the overlap's split graphs warmed (latents, then a decode), its first round of each size would capture."""
    from bridge.app.renderers import load_worker_renderer
    from bridge.config import Config

    config = Config(model="demo", device="cpu", cache_dir=cache_dir, initial=INITIAL, overlap=True, warm_channels=4)
    renderer, info, _ = load_worker_renderer(config)
    assert info["overlap"] is False
    renderer.render(INITIAL)
    warm_batches(renderer, INITIAL, 4)  # what a compiled worker's start-up runs (on a card)
    warmed = renderer.inner.graph_keys
    real_rounds(renderer.render_batch, INITIAL)  # what RenderWorker renders a round with
    assert renderer.inner.graph_keys == warmed


def test_a_daemon_that_does_not_compile_says_there_is_nothing_to_capture(cache_dir, caplog):
    from bridge.app import load_renderer
    from bridge.config import Config

    config = Config(model="demo", device="cpu", cache_dir=cache_dir, initial=INITIAL, warm_channels=4)
    with caplog.at_level("INFO", logger="bridge.app.renderers"):
        _, info = load_renderer(config)
    assert "--warm-channels 4: nothing to capture, this daemon does not compile" in caplog.text
    assert "warm_batches" not in info["startup_s"]
