"""--overlap on with the demo model on the CPU: the staged frames are the frames, exactly.

On the CPU the decode runs at once (no second stream), so these check the stage-split entry points
(``device_frame``/``device_frames`` with ``decode=False``, the decode after), the one-piece frame of a
lone change (nothing is ever in flight on the CPU: ``lone_whole``, and split with it off) and the wiring
through a real daemon; the renderer contract on the overlapped renderer is test_contract_overlapped.py,
the overlap on a GPU tests/pipeline/test_gpu_overlap.py.
"""

import numpy as np
import pytest
import torch

from bridge.core.params import Params
from bridge.core.scene import Glide, InputImage, Scene
from frame_spies import record_decodes


@pytest.fixture(scope="module", params=[True, False], ids=["lone-whole", "split"])
def renderers(request, tmp_path_factory):
    """(plain, overlapped): two ChannelRenderers on one demo pipeline (their caches kept apart); the
    overlapped one renders a lone frame in one piece, or split as every frame (``lone_whole``)."""
    from bridge.pipeline.loading.loader import load_pipeline
    from bridge.pipeline.render.batch import ChannelRenderer
    from bridge.pipeline.render.overlapped import OverlappedRenderer
    from bridge.pipeline.render.renderer import DiffusersRenderer

    pipe = load_pipeline("demo", "cpu", torch.float32, tmp_path_factory.mktemp("demo-cache"))
    plain = ChannelRenderer(DiffusersRenderer(pipe, "cpu", torch.float32))
    return plain, OverlappedRenderer(DiffusersRenderer(pipe, "cpu", torch.float32), lone_whole=request.param)


def picture(seed):
    return InputImage.from_pixels(np.random.default_rng(seed).integers(0, 256, (64, 64, 4), np.uint8))


FRAMES = [
    ("text to image", Params(prompt="a lighthouse", seed=3, width=64, height=64), Scene()),
    ("guidance, two steps", Params(prompt="a castle", seed=4, guidance=1.5, steps=2, width=64, height=64), Scene()),
    ("image to image", Params(prompt="a barn", seed=5, strength=0.5, width=64, height=64), Scene(picture(1))),
    ("a blend", Params(prompt=[["a cat", 1], ["a dog", 2]], seed=6, width=64, height=64), Scene()),
    ("tiling", Params(prompt="bricks", seed=7, tiling="xy", width=64, height=64), Scene()),
]


@pytest.mark.parametrize("what, params, scene", FRAMES, ids=[f[0] for f in FRAMES])
def test_a_staged_frame_has_the_pixels_of_the_plain_frame(renderers, what, params, scene):
    plain, overlapped = renderers
    want = plain.render_batch([("main", params, scene)])[0].pixels
    got = overlapped.begin_batch([("main", params, scene)]).result()
    assert len(got) == 1 and np.array_equal(got[0].pixels, want)
    assert "decode_wait" in got[0].stages_ms


def test_a_lone_frame_renders_in_one_piece_unless_told_to_split(renderers, monkeypatch):
    plain, overlapped = renderers
    inner = overlapped.inner
    decoded_at_once = record_decodes(monkeypatch, inner)
    params = Params(prompt="a lone lighthouse", seed=11, width=64, height=64)
    got = overlapped.begin_batch([("main", params, Scene())]).result()[0].pixels
    assert decoded_at_once == [overlapped.lone_whole]  # the CPU never has a frame in flight: every frame is lone
    assert np.array_equal(got, plain.render_batch([("main", params, Scene())])[0].pixels)


def test_a_staged_batch_has_the_pixels_of_the_plain_batch(renderers):
    plain, overlapped = renderers
    items = [(f"ch{i}", Params(prompt=f"channel {i}", seed=7 * i + 1, width=64, height=64), Scene()) for i in range(3)]
    want = [r.pixels for r in plain.render_batch(items)]  # padded to a batch of four: the last row dropped
    got = [r.pixels for r in overlapped.begin_batch(items).result()]
    assert len(got) == 3 and all(np.array_equal(a, b) for a, b in zip(want, got))


def test_a_glide_follows_each_channels_own_last_frame(renderers):
    plain, overlapped = renderers
    start = Params(prompt="a red house", seed=9, width=64, height=64)
    end = start.merged({"prompt": "a blue house", "seed": 10})
    for renderer in renderers:  # what each channel showed last: left the red house, right the blue one
        for stream, params in (("left", start), ("right", end)):
            renderer.render_batch([(stream, params, Scene())]) if renderer is plain else \
                renderer.begin_batch([(stream, params, Scene())]).result()
    glide = Scene(glide=Glide(1, 0.5))
    want = plain.render_batch([("left", end, glide)])[0].pixels
    got = overlapped.begin_batch([("left", end, glide)]).result()[0].pixels
    assert np.array_equal(got, want)
    assert not np.array_equal(got, overlapped.begin_batch([("right", end, Scene())]).result()[0].pixels)


def test_render_lanes_are_counted_where_frames_replay_as_graphs_and_checked(renderers):
    from bridge.pipeline.render.overlapped import OverlappedRenderer

    plain, overlapped = renderers
    # on the CPU nothing is graphed: every frame runs on the one stream there is, whatever was asked
    assert overlapped.lanes == 1 and OverlappedRenderer(plain.inner, lanes=3).lanes == 1
    with pytest.raises(ValueError, match="render lanes: 0; at least 1"):
        OverlappedRenderer(plain.inner, lanes=0)
    with pytest.raises(ValueError, match="render lanes need the text stream"):
        OverlappedRenderer(plain.inner, text_stream=False, lanes=2)


def test_only_text_to_image_plans_without_guidance_or_images_run_on_any_lane(renderers):
    from bridge.pipeline.render.overlapped import on_lanes

    plain, _ = renderers
    r = plain.inner
    assert on_lanes(r.plan(FRAMES[0][1], FRAMES[0][2])) and on_lanes(r.plan(FRAMES[4][1], FRAMES[4][2]))  # tiling too
    assert not on_lanes(r.plan(FRAMES[1][1], FRAMES[1][2]))  # guidance: a negative prompt's text encoders on lane 0
    assert not on_lanes(r.plan(FRAMES[2][1], FRAMES[2][2]))  # an input image's encoder on lane 0


@pytest.mark.parametrize("lanes", [1, 3])
async def test_a_daemon_with_overlap_renders_every_change_and_says_so(config, daemon_factory, lanes, caplog):
    """With --render-lanes 3 on the CPU (no graphs: one stream) the queue keeps the one lane's two frames in flight,
    not three, and the log says why."""
    from bridge.frontends.http.rest import CHANNELS

    async with daemon_factory(config, overlap=True, render_lanes=lanes) as daemon:
        main = daemon.app[CHANNELS].main.scheduler
        for seed in (11, 12, 13):
            version = main.apply({"seed": seed}).version
            frame = await main.next_frame(0, 60)
            while frame.version < version:
                frame = await main.next_frame(frame.seq, 60)
            assert frame.params.seed == seed
        device, = daemon.app[CHANNELS].devices()
    assert device["overlap"] is True and device["frames"] >= 4  # the first frame and the three changes
    assert device["max_in_flight"] == 2  # the lanes it runs: one on the CPU
    assert ("--render-lanes 3: frames here are not replayed as CUDA graphs" in caplog.text) == (lanes == 3)
    assert device["render_thread"]["jobs_after_sleep"] + device["render_thread"]["jobs_without_sleep"] >= 4


async def test_the_overlapping_queue_keeps_a_frame_in_flight_per_lane_the_renderer_runs(config, daemon_factory):
    """The queue's depth comes from the lanes the loaded renderer reports (a GPU's, here stood in for by its health
    info), not from the option: three lanes, three frames in flight."""
    from bridge.core.renderer import NullRenderer
    from bridge.frontends.http.rest import CHANNELS

    def three_lanes(config):
        return NullRenderer(), {"model": "null", "device": "cuda:0", "dtype": "none", "render_lanes": 3}

    async with daemon_factory(config, renderer_factory=three_lanes, overlap=True, render_lanes=3) as daemon:
        device, = daemon.app[CHANNELS].devices()
    assert device["max_in_flight"] == 3
