"""GPU checks of the compiled path (opt-in: ``python -m pytest -m gpu``; needs CUDA)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

from bridge.core.params import Params  # noqa: E402
from bridge.core.scene import Glide, InputImage, Scene  # noqa: E402


def picture(seed, size=512):
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 4), np.uint8)
    return InputImage.from_pixels(pixels)


def renderer_pair(cache_dir, model="demo", parts=lambda pipe: {}, device="cuda", **options):
    """An eager and a compiled renderer of ``model`` (bf16), each on its own pipeline.

    ``parts(pipe)``: the keyword arguments built per pipeline (ControlNets, an IP-Adapter);
    ``options``: the ones both renderers share (``lora_dir``).
    """
    from bridge.pipeline.loading.loader import load_pipeline
    from bridge.pipeline.render.renderer import DiffusersRenderer
    from bridge.pipeline.speed.optimize import configure_compile_cache

    configure_compile_cache(cache_dir)
    made = []
    for compile in (False, True):
        pipe = load_pipeline(model, device, torch.bfloat16, cache_dir)
        made.append(DiffusersRenderer(pipe, device, torch.bfloat16, compile=compile, **options, **parts(pipe)))
    return tuple(made)


@pytest.fixture(scope="module")
def renderers(cache_dir):
    return renderer_pair(cache_dir)


def assert_compiled_matches_eager(eager, fast, p):
    """The compiled frame repeats exactly and is the eager one within bf16's tolerance; returns it."""
    a, b, c = eager.render(p).pixels, fast.render(p).pixels, fast.render(p).pixels
    assert np.array_equal(b, c)
    diff = np.abs(a.astype(int) - b.astype(int))
    assert diff.mean() < 2.0, (diff.mean(), diff.max())  # bf16 kernels differ a little, not more
    return b


def test_compiled_matches_eager_and_is_deterministic(renderers):
    eager, fast = renderers
    p = Params(prompt="a cat on a windowsill", seed=11, width=512, height=512)
    b = assert_compiled_matches_eager(eager, fast, p)
    assert not np.array_equal(b, fast.render(p.merged({"seed": 12})).pixels)


def assert_prompts_never_recompile_and_seeds_skip_text_encoders(renderer, p: Params) -> None:
    """After ``p``'s frame: five new prompts compile nothing, five new seeds run no text encoder."""
    renderer.render(p)
    torch._dynamo.config.error_on_recompile = True
    try:
        for i in range(5):
            renderer.render(p.merged({"prompt": f"{p.prompt}, take {i}"}))
        runs = renderer.text_encoder_runs
        for seed in range(5):
            renderer.render(p.merged({"seed": seed}))
        assert renderer.text_encoder_runs == runs
    finally:
        torch._dynamo.config.error_on_recompile = False


def test_prompt_change_never_recompiles_and_seed_change_skips_text_encoders(renderers):
    _, fast = renderers
    assert_prompts_never_recompile_and_seeds_skip_text_encoders(
        fast, Params(prompt="a lighthouse", seed=1, width=512, height=512))


def test_new_size_and_guidance_warm_once(renderers):
    _, fast = renderers
    p = Params(prompt="a red car", seed=3, width=640, height=384, guidance=1.5, steps=2)
    fast.warm(p, Scene())
    keys = fast.runner.keys  # the warm-up captured the with-text and the cached-embeddings graphs, so
    out = fast.render(p)  # the first frame (its prompt new, then cached)
    fast.render(p.merged({"seed": 4}))  # and a seed change capture nothing live
    fast.render(p.merged({"prompt": "a red bus"}))
    assert fast.runner.keys == keys
    assert out.pixels.shape == (384, 640, 4)
    # FramePlan.key: width, height, schedule steps, guidance on, img2img start, tiling, ControlNets, style
    assert (640, 384, 2, True, None, "none", (), False) in fast.warm_keys


def test_frame_graph_replay_equals_the_ungraphed_compiled_path(renderers):
    _, fast = renderers
    p = Params(prompt="a blue house", seed=21, width=512, height=512)
    graphed = fast.render(p).pixels
    fast.profile = True  # the per-stage path runs the same compiled functions as one graph per stage
    try:
        plain = fast.render(p.merged({"prompt": "a blue house"})).pixels
    finally:
        fast.profile = False
    assert np.array_equal(graphed, plain)
    # the with-text graph and the cached-embeddings graph give the same frame
    assert np.array_equal(fast.render(p.merged({"prompt": "a green house"})).pixels,
                          fast.render(p.merged({"prompt": "a green house"})).pixels)


def test_img2img_compiled_matches_eager_and_encodes_each_input_once(renderers):
    eager, fast = renderers
    p = Params(prompt="a cat on a windowsill", seed=3, width=512, height=512, strength=0.5)
    image = picture(1)
    a = eager.render(p, Scene(image)).pixels
    runs = fast.vae_encoder_runs
    b, c = fast.render(p, Scene(image)).pixels, fast.render(p, Scene(image)).pixels
    assert np.array_equal(b, c) and fast.vae_encoder_runs == runs + 1
    diff = np.abs(a.astype(int) - b.astype(int))
    assert diff.mean() < 2.0, (diff.mean(), diff.max())
    # steps 1 x strength 0.5: diffusers' 2-step schedule from step 1
    assert (512, 512, 2, False, 1, "none", (), False) in fast.warm_keys
    assert not np.array_equal(b, fast.render(p, Scene(picture(2))).pixels)
    assert not np.array_equal(b, fast.render(p).pixels)


def test_weights_seed_mix_glides_and_new_inputs_never_recompile(renderers):
    _, fast = renderers
    p = Params(prompt="a lighthouse", seed=1, seed2=9, width=512, height=512, strength=0.5)
    blend = lambda w: [["a lighthouse", 1 - w], ["a castle", w]]  # noqa: E731
    fast.render(p, Scene(picture(3)))  # compiles this plan
    fast.render(p.merged({"prompt": blend(0.5)}), Scene(picture(3)))  # encodes "a castle" (the text graph)
    torch._dynamo.config.error_on_recompile = True
    try:
        texts, encodes = fast.text_encoder_runs, fast.vae_encoder_runs
        for i in range(4):
            fast.render(p.merged({"prompt": blend(i / 3), "seed_mix": i / 3}), Scene(picture(3)))
            fast.render(p.merged({"seed": 100 + i}), Scene(picture(3), Glide(7, (i + 1) / 4)))
            fast.render(p, Scene(picture(10 + i)))  # a new input: the encoder graph replays
        assert fast.text_encoder_runs == texts and fast.vae_encoder_runs == encodes + 4
    finally:
        torch._dynamo.config.error_on_recompile = False


def test_mixed_conditioning_frame_graph_equals_per_stage_graphs(renderers):
    _, fast = renderers
    p = Params(prompt=[["a blue house", 0.3], ["a red barn", 0.7]], seed=21, seed2=5, seed_mix=0.4,
               width=512, height=512, strength=0.6, steps=2)
    graphed = fast.render(p, Scene(picture(4))).pixels
    fast.profile = True
    try:
        plain = fast.render(p, Scene(picture(4))).pixels
    finally:
        fast.profile = False
    assert np.array_equal(graphed, plain)


def test_blend_and_seed_mix_ends_equal_the_pure_frames_on_the_graph_path(renderers):
    _, fast = renderers
    p = Params(prompt="a cat", seed=4, seed2=8, width=512, height=512)
    cat, dog = fast.render(p).pixels, fast.render(p.merged({"prompt": "a dog"})).pixels
    assert np.array_equal(cat, fast.render(p.merged({"prompt": [["a cat", 1], ["a dog", 0]]})).pixels)
    assert np.array_equal(dog, fast.render(p.merged({"prompt": [["a cat", 0], ["a dog", 2]]})).pixels)
    assert np.array_equal(fast.render(p.merged({"seed": 8})).pixels, fast.render(p.merged({"seed_mix": 1.0})).pixels)


def test_tiling_is_its_own_graph_and_matches_eager(renderers):
    """Seamless tiling under torch.compile + CUDA graphs: each mode its own graph, switching back
    and forth gives each mode's pixels, and the compiled frame wraps like the eager one."""
    eager, fast = renderers
    p = Params(prompt="a brick wall", seed=5, width=512, height=512)
    plain, tiled = fast.render(p).pixels, fast.render(p.merged({"tiling": "xy"})).pixels
    assert not np.array_equal(plain, tiled)
    assert np.array_equal(fast.render(p).pixels, plain)  # back to none: the untiled graph again
    assert np.array_equal(fast.render(p.merged({"tiling": "xy"})).pixels, tiled)
    diff = np.abs(eager.render(p.merged({"tiling": "xy"})).pixels.astype(int) - tiled.astype(int))
    assert diff.mean() < 2.0, (diff.mean(), diff.max())
    torch._dynamo.config.error_on_recompile = True  # both modes warm: a seed change compiles nothing
    try:
        for seed in range(3):
            fast.render(p.merged({"seed": seed, "tiling": "xy"}))
            fast.render(p.merged({"seed": seed}))
    finally:
        torch._dynamo.config.error_on_recompile = False


@pytest.fixture(scope="module")
def sd_renderers(cache_dir):
    """The SD 2.x family (demo-sd) on the same compiled whole-frame graph path."""
    return renderer_pair(cache_dir, "demo-sd")


def test_sd2_compiled_matches_eager_and_never_recompiles_on_prompt_seed_or_guidance(sd_renderers):
    eager, fast = sd_renderers
    assert fast.family.name == "sd2"
    p = Params(prompt="a cat on a windowsill", seed=11, width=512, height=512)
    a, b = eager.render(p).pixels, fast.render(p).pixels
    assert np.array_equal(b, fast.render(p).pixels)
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 2.0
    g = p.merged({"guidance": 1.5, "steps": 2})
    fast.render(g)  # compiles the guided plan (its negative is the empty prompt's embeddings)
    torch._dynamo.config.error_on_recompile = True
    try:
        for i in range(4):
            fast.render(p.merged({"prompt": f"a cat, take {i}", "seed": i}))
            fast.render(g.merged({"prompt": f"a dog, take {i}", "guidance": 1.0 + i}))
    finally:
        torch._dynamo.config.error_on_recompile = False


def test_sd2_img2img_and_blends_on_the_graph_path(sd_renderers):
    _, fast = sd_renderers
    p = Params(prompt="a cat", seed=4, width=512, height=512, strength=0.5)
    out = fast.render(p, Scene(picture(5)))
    assert np.array_equal(out.pixels, fast.render(p, Scene(picture(5))).pixels)
    cat = fast.render(p.merged({"strength": 0.0})).pixels
    assert np.array_equal(cat, fast.render(p.merged({"strength": 0.0, "prompt": [["a cat", 1], ["a dog", 0]]})).pixels)
