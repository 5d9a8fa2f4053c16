"""The IP-Adapter on the compiled path (opt-in: ``python -m pytest -m gpu``; needs CUDA): a new style
image or style_scale never recompiles, scale 0 is exactly the frame without the adapter, the
compiled frame matches the eager one, and the full-size bench mode runs."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

from bridge.core.params import Params  # noqa: E402
from bridge.core.scene import InputImage, Scene  # noqa: E402
from test_gpu import renderer_pair  # noqa: E402

BASE = Params(prompt="a lighthouse", seed=3, width=512, height=512)


def picture(seed):
    return InputImage.from_pixels(np.random.default_rng(seed).integers(0, 256, (300, 400, 4), np.uint8))


@pytest.fixture(scope="module")
def renderers(cache_dir):
    from bridge.pipeline.steering.ip_adapter import load_ip_adapter

    return renderer_pair(cache_dir, parts=lambda pipe: {
        "ip_adapter": load_ip_adapter("demo", pipe.unet, "cuda", torch.bfloat16)})


def test_new_images_and_scales_never_recompile(renderers):
    _, fast = renderers
    base = fast.render(BASE).pixels
    fast.render(BASE.merged({"style_scale": 0.5}), Scene(style=picture(0)))  # the style graph, captured once
    fast.render(BASE.merged({"style_scale": 0.5, "guidance": 2.0}), Scene(style=picture(0)))
    torch._dynamo.config.error_on_recompile = True
    try:
        frames = [fast.render(BASE.merged({"seed": i, "style_scale": 0.2 + i / 10}), Scene(style=picture(i))).pixels
                  for i in range(8)]
        fast.render(BASE.merged({"style_scale": 1.5, "guidance": 2.0}), Scene(style=picture(20)))
        fast.render(BASE.merged({"prompt": "a lighthouse at dusk", "style_scale": 1.0}), Scene(style=picture(21)))
        again = fast.render(BASE.merged({"style_scale": 0.0}), Scene(style=picture(3))).pixels
    finally:
        torch._dynamo.config.error_on_recompile = False
    assert np.array_equal(again, base)  # scale 0: the frame without the adapter, exactly
    assert not np.array_equal(frames[0], frames[1])


def test_compiled_style_frame_matches_eager(renderers):
    eager, fast = renderers
    params, scene = BASE.merged({"style_scale": 1.2}), Scene(style=picture(5))
    a, b = eager.render(params, scene).pixels.astype(int), fast.render(params, scene).pixels.astype(int)
    base = fast.render(BASE).pixels.astype(int)
    assert np.abs(a - b).mean() < 2.0, np.abs(a - b).mean()  # bf16 kernels differ a little, not more
    assert np.abs(b - base).mean() > 5 * max(np.abs(a - b).mean(), 0.1)  # and the style shows


def test_bench_mode_on_the_full_size_model(cache_dir):
    from bridge.bench.run import BenchOptions, run_bench

    opts = BenchOptions(model="random", frames=30, vaes=("full",), modes=("ip-adapter",), baseline=False,
                        profile_frames=5, cache_dir=cache_dir)
    report = run_bench(opts, None)
    (row,) = report["ip_adapter"]
    assert row["style_held_ms"] > 0 and row["style_new_ms"] > 0
    print(row)
