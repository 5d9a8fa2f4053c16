"""The blocks compile scope on the card (speed/regions.py; opt-in: ``python -m pytest -m gpu``; needs
CUDA): the demo SDXL renderer compiled block by block gives the eager frame within bf16's tolerance and
repeats it exactly; a new prompt or seed never recompiles (its frame graphs replay the blocks); a LoRA
switch folds into the weights the blocks read, with no recompile; the full-size random SD 1.5
frame by blocks is its whole-call frame within bf16's tolerance; and text encoders left uncompiled
(``--compile-text off``) are captured in the frame graphs, plain and on the overlap's text stream."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

from bridge.core.params import Params  # noqa: E402
from lora_files import lora_layers, write_diffusers  # noqa: E402
from test_gpu import assert_compiled_matches_eager, assert_prompts_never_recompile_and_seeds_skip_text_encoders  # noqa: E402

BASE = Params(prompt="a lighthouse", seed=3, width=512, height=512)


def renderer(cache_dir, model, compile, scope="blocks", compile_text=True, **options):
    from bridge.pipeline.loading.loader import load_pipeline
    from bridge.pipeline.render.renderer import DiffusersRenderer
    from bridge.pipeline.speed.optimize import Tuning, configure_compile_cache

    configure_compile_cache(cache_dir)
    pipe = load_pipeline(model, "cuda", torch.bfloat16, cache_dir)
    return DiffusersRenderer(pipe, "cuda", torch.bfloat16, compile=compile,
                             tuning=Tuning(compile_scope=scope, compile_text=compile_text), **options)


@pytest.fixture(scope="module")
def renderers(cache_dir, tmp_path_factory):
    from bridge.pipeline.loading.loader import load_pipeline

    folder = tmp_path_factory.mktemp("region-loras")
    cpu_pipe = load_pipeline("demo", "cpu", torch.float32, cache_dir)
    write_diffusers(lora_layers(cpu_pipe, seed=1), folder / "a.safetensors")
    made = tuple(renderer(cache_dir, "demo", compile, lora_dir=folder) for compile in (False, True))
    for r in made:
        r.loras.catalog.load("a")
    return made


def test_blocks_frames_match_eager_repeat_and_never_recompile(renderers):
    eager, fast = renderers
    assert fast.calls.denoise == fast.parts.denoiser.denoise  # eager glue: the blocks are compiled
    b = assert_compiled_matches_eager(eager, fast, BASE)
    assert not np.array_equal(b, fast.render(BASE.merged({"seed": 4})).pixels)
    assert_prompts_never_recompile_and_seeds_skip_text_encoders(fast, BASE.merged({"prompt": "a harbour"}))


def test_a_lora_switch_on_the_blocks_never_recompiles_and_shows(renderers):
    eager, fast = renderers
    base = fast.render(BASE).pixels
    with_lora = BASE.merged({"loras": (("a", 0.8),)})
    fast.render(with_lora)  # first use outside the check
    torch._dynamo.config.error_on_recompile = True
    try:
        for i in range(4):
            fast.render(BASE.merged({"seed": i, "loras": (("a", 0.2 * i),)}))
        lora_frame = fast.render(with_lora).pixels
        again = fast.render(BASE).pixels
    finally:
        torch._dynamo.config.error_on_recompile = False
    assert np.array_equal(again, base)
    a, b = eager.render(with_lora).pixels.astype(int), lora_frame.astype(int)
    assert np.abs(a - b).mean() < 2.0 and np.abs(b - base.astype(int)).mean() > 5 * max(np.abs(a - b).mean(), 0.1)


def test_a_full_size_frame_by_blocks_is_the_whole_call_frame_within_bf16(cache_dir):
    frames = {}
    for scope in ("calls", "blocks"):
        r = renderer(cache_dir, "random-sd15", True, scope)
        frames[scope] = r.render(BASE).pixels.astype(int)
        del r
        torch.cuda.empty_cache()
    diff = np.abs(frames["calls"] - frames["blocks"])
    assert diff.mean() < 2.0, (diff.mean(), diff.max())  # other fusions round a little differently, not more


def test_uncompiled_text_encoders_are_captured_in_the_frame_graphs_plain_and_overlapped(renderers, cache_dir):
    from bridge.core.scene import Scene
    from bridge.pipeline.render.batch import ChannelRenderer
    from bridge.pipeline.render.overlapped import OverlappedRenderer

    eager, _ = renderers
    fast = renderer(cache_dir, "demo", True, "blocks", compile_text=False)
    assert fast.calls.encode == fast.parts.text.encode  # not compiled
    assert_compiled_matches_eager(eager, fast, BASE)
    # a graphed renderer runs a new prompt's text encoders inside the frame's graph: its key ends with the ids' length
    assert (*fast.plan(BASE, Scene()).key, fast.text.token_ids(BASE.prompt).shape[-1]) in fast.runner.keys
    assert_prompts_never_recompile_and_seeds_skip_text_encoders(fast, BASE.merged({"prompt": "a harbour"}))
    plain, overlapped = ChannelRenderer(fast), OverlappedRenderer(fast, lone_whole=False)  # each frame split
    overlapped.begin_batch([("main", BASE.merged({"prompt": "warm"}), Scene())]).result()  # first-use captures
    for i in range(3):  # a new prompt each frame: the text stream replays its capture of the eager encoders
        params = BASE.merged({"prompt": f"a lighthouse, take {i}", "seed": 20 + i})
        want = plain.render_batch([("main", params, Scene())])[0].pixels
        fast.text.clear()  # else the plain frame's embeddings are cached and the text stream never runs
        runs = fast.text_encoder_runs
        got = overlapped.begin_batch([("main", params, Scene())]).result()[0].pixels
        assert fast.text_encoder_runs == runs + 1
        assert np.array_equal(got, want), (i, np.abs(got.astype(int) - want.astype(int)).max())
    assert overlapped.text_graph_keys  # ... on the text stream's own graphs
