"""GPU checks of ControlNets on the compiled whole-frame graph path (opt-in: ``python -m pytest -m gpu``;
needs CUDA): compiled matches eager, and a new control image, scale, start or end never recompiles
nor captures a new graph; scale 0 is exactly the frame without ControlNets."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

from bridge.core.controls import ControlNetSpec  # noqa: E402
from bridge.core.params import Params  # noqa: E402
from bridge.core.scene import Scene  # noqa: E402
from test_gpu import picture, renderer_pair  # noqa: E402


def controlled(params, **scales):
    return params.merged({"controls": tuple((name, tuple(fields.items())) for name, fields in scales.items())})


@pytest.fixture(scope="module")
def renderers(cache_dir):
    return renderer_pair(cache_dir, parts=lambda pipe: control_parts(pipe, depth="demo", edges="demo"))


def control_parts(pipe, **sources) -> dict:
    """``controlnets=``: the named ControlNets/T2I-Adapters (NAME=SOURCE) for ``pipe``, on CUDA."""
    from bridge.pipeline.steering.controlnet import ControlNets, load_controlnet

    return {"controlnets": ControlNets({name: load_controlnet(ControlNetSpec(name, source), pipe.unet.config, "cuda",
                                                              torch.bfloat16) for name, source in sources.items()})}


@pytest.mark.parametrize("img2img", [False, True])
def test_compiled_matches_eager(renderers, img2img):
    eager, fast = renderers
    p = controlled(Params(prompt="a house", seed=3, steps=2, width=512, height=512, strength=0.6),
                   depth={"scale": 0.9}, edges={"scale": 0.5, "preprocess": "canny"})
    scene = Scene(picture(9) if img2img else None, controls=(("depth", picture(1)), ("edges", picture(2))))
    a, b = eager.render(p, scene).pixels, fast.render(p, scene).pixels
    diff = np.abs(a.astype(int) - b.astype(int))
    assert diff.mean() < 2.0, (diff.mean(), diff.max())
    assert not np.array_equal(b, fast.render(controlled(p, depth={"scale": 0.0}, edges={"scale": 0.0})).pixels)


def test_new_images_scales_and_windows_never_recompile(renderers):
    _, fast = renderers
    p = controlled(Params(prompt="a road", seed=1, steps=2, width=512, height=512), depth={"scale": 1.0})
    fast.render(p, Scene(controls=(("depth", picture(3)),)))
    graphs = fast.graph_keys
    torch._dynamo.config.error_on_recompile = True
    try:
        frames = set()
        for i, change in enumerate([{"scale": 0.4}, {"start": 0.5}, {"end": 0.5, "start": 0.0}, {"scale": 2.0}]):
            q = controlled(p, depth=change)
            frames.add(fast.render(q, Scene(controls=(("depth", picture(10 + i)),))).pixels.tobytes())
        assert len(frames) == 4 and fast.graph_keys == graphs
    finally:
        torch._dynamo.config.error_on_recompile = False


def test_scale_zero_is_the_frame_without_controlnets(renderers):
    from bridge.pipeline.render.renderer import DiffusersRenderer

    _, fast = renderers
    p = Params(prompt="a tree", seed=5, width=512, height=512)
    bare = DiffusersRenderer(fast.pipe, "cuda", torch.bfloat16, compile=True)
    assert np.array_equal(fast.render(controlled(p, depth={"scale": 0.0})).pixels, bare.render(p).pixels)
