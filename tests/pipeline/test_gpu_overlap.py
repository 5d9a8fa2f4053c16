"""GPU checks of --overlap on (opt-in: ``python -m pytest -m gpu``; needs CUDA).

The overlapped renderer cuts the compiled frame graph before the VAE and decodes on a second
stream: its frames must be the one-graph frames bit for bit, also when the next frame's first
stage runs while the previous one decodes (the events keep the latents and pinned buffers apart),
and it must never recompile once warm.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

from bridge.core.params import Params  # noqa: E402
from bridge.core.scene import InputImage, Scene  # noqa: E402


@pytest.fixture(scope="module")
def pair(cache_dir):
    """(plain, overlapped) ChannelRenderers around one compiled demo renderer (bf16, CUDA)."""
    from bridge.pipeline.loading.loader import load_pipeline
    from bridge.pipeline.render.batch import ChannelRenderer
    from bridge.pipeline.render.overlapped import OverlappedRenderer
    from bridge.pipeline.render.renderer import DiffusersRenderer
    from bridge.pipeline.speed.optimize import configure_compile_cache

    configure_compile_cache(cache_dir)
    renderer = DiffusersRenderer(load_pipeline("demo", "cuda", torch.bfloat16, cache_dir), "cuda", torch.bfloat16,
                                 compile=True)
    return ChannelRenderer(renderer), OverlappedRenderer(renderer)


def frames(n, **more):
    return [Params(prompt=f"a lighthouse, take {i % 3}", seed=100 + i, width=512, height=512, **more) for i in range(n)]


def test_overlapped_frames_are_the_one_graph_frames_bit_for_bit(pair):
    plain, overlapped = pair
    image = InputImage.from_pixels(np.random.default_rng(1).integers(0, 256, (512, 512, 4), np.uint8))
    cases = [(p, Scene()) for p in frames(3)] + [(frames(1, strength=0.5)[0], Scene(image))]
    for params, scene in cases:
        want = plain.render_batch([("main", params, scene)])[0].pixels
        got = overlapped.begin_batch([("main", params, scene)]).result()[0].pixels
        assert np.array_equal(got, want), (params, np.abs(got.astype(int) - want.astype(int)).max())


def test_pipelined_frames_keep_their_own_pixels_and_never_recompile(pair):
    """Frame i+1 begins before frame i is collected (two in flight, as the overlapping queue runs)."""
    plain, overlapped = pair
    stream = frames(12)
    for params in stream[:2]:  # warm: compiles and captures both graph kinds before the check
        overlapped.begin_batch([("main", params, Scene())]).result()
    want = [plain.render_batch([("main", p, Scene())])[0].pixels for p in stream]
    torch._dynamo.config.error_on_recompile = True
    try:
        got, in_flight = [], overlapped.begin_batch([("main", stream[0], Scene())])
        for params in stream[1:]:
            following = overlapped.begin_batch([("main", params, Scene())])  # queued while in_flight decodes
            got.append(in_flight.result()[0].pixels)
            in_flight = following
        got.append(in_flight.result()[0].pixels)
    finally:
        torch._dynamo.config.error_on_recompile = False
    for i, (a, b) in enumerate(zip(want, got)):
        assert np.array_equal(a, b), i


def test_an_overlapped_batch_matches_the_plain_batch(pair):
    plain, overlapped = pair
    items = [(f"ch{i}", p, Scene()) for i, p in enumerate(frames(3))]
    want = [r.pixels for r in plain.render_batch(items)]
    first = overlapped.begin_batch(items)
    second = overlapped.begin_batch(items[:2])  # another batch size, in flight with the first
    got, got2 = [r.pixels for r in first.result()], [r.pixels for r in second.result()]
    assert all(np.array_equal(a, b) for a, b in zip(want, got))
    assert all(np.array_equal(a, b) for a, b in zip([r.pixels for r in plain.render_batch(items[:2])], got2))
