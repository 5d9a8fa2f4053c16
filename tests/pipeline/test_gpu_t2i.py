"""GPU checks of T2I-Adapters on the compiled whole-frame graph path (opt-in: ``python -m pytest -m gpu``;
needs CUDA): compiled matches eager (text- and image-to-image, an adapter beside a ControlNet), a new
control image, scale or window never recompiles nor captures a new frame graph (the adapter's own
graph is replayed for a new image), scale 0 is exactly the frame without it."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

from bridge.core.params import Params  # noqa: E402
from bridge.core.scene import Scene  # noqa: E402
from test_gpu import renderer_pair  # noqa: E402
from test_gpu_controlnet import control_parts, controlled, picture  # noqa: E402


@pytest.fixture(scope="module")
def renderers(cache_dir):
    return renderer_pair(cache_dir, parts=lambda pipe: control_parts(pipe, sketch="demo-t2i", edges="demo"))


@pytest.mark.parametrize("img2img", [False, True])
def test_compiled_matches_eager(renderers, img2img):
    eager, fast = renderers
    p = controlled(Params(prompt="a house", seed=3, steps=2, width=512, height=512, strength=0.6),
                   sketch={"scale": 0.9}, edges={"scale": 0.5, "preprocess": "canny"})
    scene = Scene(picture(9) if img2img else None, controls=(("edges", picture(2)), ("sketch", picture(1))))
    a, b = eager.render(p, scene).pixels, fast.render(p, scene).pixels
    diff = np.abs(a.astype(int) - b.astype(int))
    assert diff.mean() < 2.0, (diff.mean(), diff.max())
    alone = controlled(p, edges={"scale": 0.0})
    a, b = eager.render(alone, scene).pixels, fast.render(alone, scene).pixels
    diff = np.abs(a.astype(int) - b.astype(int))
    assert diff.mean() < 2.0, (diff.mean(), diff.max())
    assert not np.array_equal(b, fast.render(controlled(alone, sketch={"scale": 0.0})).pixels)


def test_new_images_scales_and_windows_never_recompile(renderers):
    _, fast = renderers
    p = controlled(Params(prompt="a road", seed=1, steps=2, width=512, height=512), sketch={"scale": 1.0})
    fast.render(p, Scene(controls=(("sketch", picture(3)),)))
    graphs = fast.graph_keys
    computed = fast.adapter_features.computed
    torch._dynamo.config.error_on_recompile = True
    try:
        frames = set()
        for i, change in enumerate([{"scale": 0.4}, {"start": 0.5}, {"end": 0.5, "start": 0.0}, {"scale": 2.0}]):
            q = controlled(p, sketch=change)
            frames.add(fast.render(q, Scene(controls=(("sketch", picture(10 + i)),))).pixels.tobytes())
        assert len(frames) == 4 and fast.graph_keys == graphs
        assert fast.adapter_features.computed == computed + 4  # each new image ran the adapter's graph once
    finally:
        torch._dynamo.config.error_on_recompile = False


def test_scale_zero_is_the_frame_without_adapters(renderers):
    from bridge.pipeline.render.renderer import DiffusersRenderer

    _, fast = renderers
    p = Params(prompt="a tree", seed=5, width=512, height=512)
    bare = DiffusersRenderer(fast.pipe, "cuda", torch.bfloat16, compile=True)
    assert np.array_equal(fast.render(controlled(p, sketch={"scale": 0.0})).pixels, bare.render(p).pixels)
