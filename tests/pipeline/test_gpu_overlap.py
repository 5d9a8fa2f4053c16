"""GPU checks of --overlap on (opt-in: ``python -m pytest -m gpu``; needs CUDA).

The overlapped renderer cuts the compiled frame graph before the VAE and decodes on a second
stream, and runs a new prompt's text encoders on a third (the fixtures' renderers split every frame,
``lone_whole`` off; a frame begun with none in flight otherwise renders in one graph, tested here too):
its frames must be the one-graph frames bit for bit, also when the next frame's first stage runs while
the previous one decodes (the events keep the latents and pinned buffers apart) and when a LoRA fold
changes the text encoders' weights
between prompts in flight, and it must never recompile once warm. With ``--batch-vae tiny`` a batch's
rows, overlapped or not, are the eager tiny decode of their latents (bf16's tolerance), a frame alone the
full VAE's, and a second round of batches compiles nothing.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

from bridge.core.params import Params  # noqa: E402
from bridge.core.scene import InputImage, Scene  # noqa: E402
from frame_spies import record_decodes  # noqa: E402


@pytest.fixture(scope="module")
def pair(cache_dir, tmp_path_factory):
    """(plain, overlapped) ChannelRenderers around one compiled demo renderer (bf16, CUDA), with two
    LoRAs (text encoders included) in its folder; the overlapped one splits every frame, lone or not."""
    from bridge.pipeline.loading.loader import load_pipeline
    from bridge.pipeline.render.batch import ChannelRenderer
    from bridge.pipeline.render.overlapped import OverlappedRenderer
    from bridge.pipeline.render.renderer import DiffusersRenderer
    from bridge.pipeline.speed.optimize import configure_compile_cache
    from lora_files import lora_layers, write_diffusers

    configure_compile_cache(cache_dir)
    folder = tmp_path_factory.mktemp("overlap-loras")
    cpu_pipe = load_pipeline("demo", "cpu", torch.float32, cache_dir)
    write_diffusers(lora_layers(cpu_pipe, seed=1), folder / "a.safetensors")
    write_diffusers(lora_layers(cpu_pipe, seed=2, conv=False), folder / "b.safetensors")
    renderer = DiffusersRenderer(load_pipeline("demo", "cuda", torch.bfloat16, cache_dir), "cuda", torch.bfloat16,
                                 compile=True, lora_dir=folder)
    renderer.loras.catalog.load("a")
    renderer.loras.catalog.load("b")
    return ChannelRenderer(renderer), OverlappedRenderer(renderer, lone_whole=False)


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


def test_a_frame_begun_with_none_in_flight_renders_in_one_graph_and_one_begun_behind_it_splits(pair, monkeypatch):
    """A lone frame (nothing of the renderer's on the GPU) replays the one-graph frame and only its copy to the
    host is collected later; a frame begun while that one is still on the GPU (held there behind a GPU sleep
    queued first, so the order does not depend on timing) is split as every frame was: both the one-graph
    frames bit for bit, nothing recompiled or captured once warm. ``ready()`` (``cudaEventQuery``, what the
    render thread polls for a lone batch) is False while a frame is on the GPU and True once it is collected."""
    from bridge.pipeline.render.overlapped import OverlappedRenderer

    plain, _ = pair
    inner = plain.inner
    overlapped = OverlappedRenderer(inner)
    assert overlapped.lone_whole and not OverlappedRenderer(inner, lanes=2).lone_whole  # one lane only
    stream = frames(5)
    # Warm: the one-graph frame, and the split frames' decode graph, this overlapped renderer's own, though the
    # fixture's renderer has its split graphs warm already (run S15 on the card: captured in the check then).
    for params in stream[:2]:
        overlapped.begin_batch([("main", params, Scene())]).result()
    want = [plain.render_batch([("main", p, Scene())])[0].pixels for p in stream]
    keys, decode_keys = inner.graph_keys, overlapped.decode_graph_keys
    decoded_at_once = record_decodes(monkeypatch, inner)
    torch._dynamo.config.error_on_recompile = True
    try:
        got = [overlapped.begin_batch([("main", stream[0], Scene())]).result()[0].pixels]  # lone: one graph
        torch.cuda._sleep(1_000_000_000)  # ~0.5 s of GPU clock cycles on this stream, before the next frames
        first = overlapped.begin_batch([("main", stream[1], Scene())])  # the last frame is home: one graph
        second = overlapped.begin_batch([("main", stream[2], Scene())])  # the first still queued: split
        assert not first.ready() and not second.ready()  # behind the GPU's sleep (a lone batch's poll goes on)
        got += [first.result()[0].pixels, second.result()[0].pixels]
        assert first.ready() and second.ready()  # in host memory: the poll ends
        got.append(overlapped.begin_batch([("main", stream[3], Scene())]).result()[0].pixels)  # lone again
    finally:
        torch._dynamo.config.error_on_recompile = False
    assert decoded_at_once == [True, True, False, True]
    for i, (a, b) in enumerate(zip(want, got)):
        assert np.array_equal(a, b), (i, np.abs(a.astype(int) - b.astype(int)).max())
    assert inner.graph_keys == keys and overlapped.decode_graph_keys == decode_keys


def test_an_overlapped_batch_matches_the_plain_batch(pair):
    plain, overlapped = pair
    items = [(f"ch{i}", p, Scene()) for i, p in enumerate(frames(3))]
    want = [r.pixels for r in plain.render_batch(items)]
    first = overlapped.begin_batch(items)
    second = overlapped.begin_batch(items[:2])  # another batch size, in flight with the first
    got, got2 = [r.pixels for r in first.result()], [r.pixels for r in second.result()]
    assert all(np.array_equal(a, b) for a, b in zip(want, got))
    assert all(np.array_equal(a, b) for a, b in zip([r.pixels for r in plain.render_batch(items[:2])], got2))


@pytest.mark.parametrize("urgent, lanes", [(False, 1), (True, 1), (False, 2)],
                         ids=["text-stream", "urgent-text-stream", "two-render-lanes"])
def test_new_prompts_on_the_text_stream_keep_their_pixels_across_lora_switches(pair, urgent, lanes):
    """A new prompt every frame, two frames in flight, the text encoders' LoRA changing mid-stream:
    each frame's text runs on the text stream beside the previous frame's denoiser, and every frame
    equals the one-graph frame of the same params (whose embeddings the main stream computed); so with
    the text stream at a high priority (a scheduling order, never another result)."""
    from bridge.pipeline.render.overlapped import OverlappedRenderer

    plain, overlapped = pair
    inner = plain.inner
    if urgent or lanes > 1:
        overlapped = OverlappedRenderer(inner, urgent_text=urgent, lanes=lanes, lone_whole=False)
    loras = [(), (), (("a", 1.0),), (("a", 1.0),), (("b", 0.5),), (), (("a", -0.7), ("b", 1.2)), ()]
    stream = [Params(prompt=f"a harbour at dusk, version {i}", seed=40 + i, width=512, height=512,
                     loras=loras[i % len(loras)]) for i in range(16)]
    for lora in {entry for entry in loras}:  # first-use work (LoRA plans, the text graphs) outside the check
        overlapped.begin_batch([("main", Params(prompt="warm", width=512, height=512, loras=lora), Scene())]).result()
    want = [plain.render_batch([("main", p, Scene())])[0].pixels for p in stream]
    inner.text.clear()  # the overlapped run must encode every prompt again, on its own stream
    runs = inner.text_encoder_runs
    torch._dynamo.config.error_on_recompile = True
    try:
        got, in_flight = [], overlapped.begin_batch([("main", stream[0], Scene())])
        for params in stream[1:]:
            following = overlapped.begin_batch([("main", params, Scene())])
            got.append(in_flight.result()[0].pixels)
            in_flight = following
        got.append(in_flight.result()[0].pixels)
    finally:
        torch._dynamo.config.error_on_recompile = False
    assert inner.text_encoder_runs == runs + len(stream)  # every prompt new: one text encoding each
    assert overlapped.text_graph_keys  # ... and on the text stream's graphs
    for i, (a, b) in enumerate(zip(want, got)):
        assert np.array_equal(a, b), (i, stream[i].loras, np.abs(a.astype(int) - b.astype(int)).max())


# -- --render-lanes: consecutive frames' first halves on streams of their own, at once ------------------------

def pipelined(overlapped, items, depth):
    """Each item's pixels, ``depth`` frames in flight (as the overlapping queue runs ``max_in_flight``)."""
    got, in_flight = [], []
    for item in items:
        in_flight.append(overlapped.begin_batch([item]))
        if len(in_flight) >= depth:
            got.append(in_flight.pop(0).result()[0].pixels)
    return got + [staged.result()[0].pixels for staged in in_flight]


@pytest.mark.parametrize("lanes", [2, 3])
def test_frames_on_render_lanes_are_the_one_graph_frames_and_never_recompile(pair, lanes):
    """A new prompt every other frame, a new seed on each: a frame reads the embeddings its predecessor's
    text stream work made, on another lane, while that frame's denoiser still runs."""
    from bridge.pipeline.render.overlapped import OverlappedRenderer

    plain, _ = pair
    inner = plain.inner
    overlapped = OverlappedRenderer(inner, lanes=lanes)
    assert overlapped.lanes == lanes
    stream = [("main", Params(prompt=f"a harbour at dawn, version {i // 2}", seed=60 + i, width=512, height=512),
               Scene()) for i in range(15)]
    overlapped.begin_batch([("main", Params(prompt="warm", width=512, height=512), Scene())]).result()
    lane_keys, keys = overlapped.lane_graph_keys, inner.graph_keys
    assert len(lane_keys) == lanes - 1  # one cut graph per lane after the first: captured by the warm-up
    want = [plain.render_batch([item])[0].pixels for item in stream]
    inner.text.clear()  # every prompt new again: encoded on the text stream while another lane's frame runs
    torch._dynamo.config.error_on_recompile = True
    try:
        got = pipelined(overlapped, stream, lanes)
    finally:
        torch._dynamo.config.error_on_recompile = False
    for i, (a, b) in enumerate(zip(want, got)):
        assert np.array_equal(a, b), (i, np.abs(a.astype(int) - b.astype(int)).max())
    assert overlapped.lane_graph_keys == lane_keys and inner.graph_keys == keys  # nothing captured mid-stream


def test_render_lanes_take_serial_frames_in_turn_and_keep_every_frames_pixels(pair):
    """LoRA folds, an input image, guidance with a negative prompt and a batch between plain frames, two lanes,
    two frames in flight: the serial ones wait for every lane, the plain ones after them see their work."""
    from bridge.pipeline.render.overlapped import OverlappedRenderer

    plain, _ = pair
    overlapped = OverlappedRenderer(plain.inner, lanes=2)
    image = InputImage.from_pixels(np.random.default_rng(3).integers(0, 256, (512, 512, 4), np.uint8))
    base = Params(prompt="a mill by a river", width=512, height=512)
    items = [("main", base.merged({"seed": 1}), Scene()),
             ("main", base.merged({"seed": 2, "loras": [["a", 1.0]]}), Scene()),  # a fold
             ("main", base.merged({"seed": 3, "loras": [["a", 1.0]]}), Scene()),
             ("main", base.merged({"seed": 4, "strength": 0.5}), Scene(image)),  # an input image, the fold undone
             ("main", base.merged({"seed": 5}), Scene()),
             ("main", base.merged({"seed": 6, "guidance": 1.5, "negative_prompt": "fog"}), Scene()),
             ("main", base.merged({"seed": 7, "prompt": "a mill at night"}), Scene()),
             ("main", base.merged({"seed": 8, "loras": [["b", 0.5]]}), Scene())]
    for _, params, scene in items:  # first-use work (plans, LoRA plans, graphs) outside the check
        overlapped.begin_batch([("main", params, scene)]).result()
    # one plan of these may run on any lane (512 px text to image): lane 1 captured its graph, none for the others
    assert len(overlapped.lane_graph_keys) == 1
    want = [plain.render_batch([item])[0].pixels for item in items]
    got = pipelined(overlapped, items, 2)
    batch = [(f"ch{i}", params, Scene()) for i, params in enumerate(frames(2))]
    in_flight = overlapped.begin_batch([items[0]])
    got_batch = [r.pixels for r in overlapped.begin_batch(batch).result()]
    in_flight.result()
    for i, (a, b) in enumerate(zip(want, got)):
        assert np.array_equal(a, b), (i, items[i][1], np.abs(a.astype(int) - b.astype(int)).max())
    assert all(np.array_equal(a, r.pixels) for a, r in zip(got_batch, plain.render_batch(batch)))


# -- --batch-vae tiny: a batch's rows decoded by the tiny VAE, a frame alone by the full one ----------------

@pytest.fixture(scope="module")
def tiny_batches(cache_dir):
    """(plain, overlapped) ChannelRenderers around one compiled demo renderer (bf16, CUDA) whose batches
    decode with the demo's tiny VAE (``--batch-vae tiny`` beside the full VAE)."""
    from bridge.pipeline.loading.loader import load_pipeline, load_tiny_vae
    from bridge.pipeline.render.batch import ChannelRenderer
    from bridge.pipeline.render.overlapped import OverlappedRenderer
    from bridge.pipeline.render.renderer import DiffusersRenderer
    from bridge.pipeline.speed.optimize import configure_compile_cache

    configure_compile_cache(cache_dir)
    renderer = DiffusersRenderer(load_pipeline("demo", "cuda", torch.bfloat16, cache_dir), "cuda", torch.bfloat16,
                                 compile=True, batch_vae=load_tiny_vae("tiny", "demo", "cuda", torch.bfloat16))
    return ChannelRenderer(renderer), OverlappedRenderer(renderer, lone_whole=False)


def eager_decode(decoder, latents) -> list[np.ndarray]:
    """``latents`` decoded by ``decoder``'s own function (not compiled, no graph): the reference rows."""
    with torch.inference_mode():
        return list(decoder.decode(latents).cpu().numpy())


def mean_levels(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(int) - b.astype(int)).mean())


def test_tiny_decoded_batches_match_the_eager_tiny_decode_and_never_recompile(tiny_batches):
    """Batches of 2 and 4, overlap off (one graph) and on (the decode on its stream): each row is the eager
    tiny decode of its latents within bf16's tolerance, not the full VAE's; a second round of new prompts and
    seeds compiles and captures nothing."""
    plain, overlapped = tiny_batches
    inner = plain.inner
    assert inner.batch_decoder is not inner.parts.decoder

    def check(rows: int, take: int) -> None:
        items = [(f"ch{i}", Params(prompt=f"a harbour, channel {i}, take {take}", seed=10 * take + i, width=512,
                                   height=512), Scene()) for i in range(rows)]
        with torch.inference_mode():  # the with-text latents graph; its output buffer is rewritten by each replay
            latents = plain.device_frames(items, decode=False).clone()
        want, full = eager_decode(inner.batch_decoder, latents), eager_decode(inner.parts.decoder, latents)
        runs = {"overlap off": [r.pixels for r in plain.render_batch(items)],
                "overlap on": [r.pixels for r in overlapped.begin_batch(items).result()]}
        for path, got in runs.items():
            assert len(got) == rows, (path, rows)
            for i, (g, w, f) in enumerate(zip(got, want, full)):
                assert mean_levels(g, w) < 2.0, (path, rows, take, i, mean_levels(g, w))  # bf16 kernels differ a little
                assert mean_levels(g, f) > 8, (path, rows, take, i, mean_levels(g, f))  # not the full VAE's frame

    for rows in (2, 4):  # compiles and captures each batch size's graphs, both paths
        check(rows, 0)
    keys = inner.graph_keys
    torch._dynamo.config.error_on_recompile = True
    try:
        for rows in (2, 4):
            check(rows, 1)
    finally:
        torch._dynamo.config.error_on_recompile = False
    assert inner.graph_keys == keys


def test_a_frame_alone_keeps_the_full_vae_beside_tiny_batches(tiny_batches):
    plain, overlapped = tiny_batches
    inner = plain.inner
    params = Params(prompt="a lighthouse alone", seed=7, width=512, height=512)
    staged = overlapped.begin_batch([("main", params, Scene())]).result()[0].pixels  # warms the latents graphs
    got = plain.render_batch([("main", params, Scene())])[0].pixels
    assert np.array_equal(staged, got)
    with torch.inference_mode():
        latents = inner.device_frame(params, Scene(), plain.glider("main"), record=False, decode=False).clone()
    want, = eager_decode(inner.parts.decoder, latents)
    tiny, = eager_decode(inner.batch_decoder, latents)
    assert mean_levels(got, want) < 2.0, mean_levels(got, want)  # bf16 kernels differ a little, not more
    assert mean_levels(got, tiny) > 8, mean_levels(got, tiny)
