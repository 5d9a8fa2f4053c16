"""SANA-Sprint on the GPU: the full-size random-weight model (random-sana: 0.6B transformer, Gemma-2
2B, DC-AE f32c32), compiled, at 1024 and 512 (opt-in: ``python -m pytest -m gpu``; needs CUDA).

The first compile of the 0.6B transformer, Gemma-2 and DC-AE at 1024 takes minutes on a cold cache;
the file keeps to one eager and one compiled pipeline and three frame shapes."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

from bridge.core.params import Params  # noqa: E402
from test_gpu import assert_compiled_matches_eager, renderer_pair  # noqa: E402


@pytest.fixture(scope="module")
def renderers(cache_dir):
    eager, fast = renderer_pair(cache_dir, model="random-sana")
    assert fast.family.name == "sana" and fast.sampler == "scm"
    return eager, fast


@pytest.mark.parametrize("size", [1024, 512])
def test_random_sana_compiled_matches_eager_and_is_deterministic(renderers, size):
    eager, fast = renderers
    p = Params(prompt="a lighthouse on a cliff at dusk", seed=5, guidance=4.5, width=size, height=size)
    b = assert_compiled_matches_eager(eager, fast, p)
    assert b.shape == (size, size, 4)
    assert not np.array_equal(b, fast.render(p.merged({"seed": 6})).pixels)


def test_prompt_seed_and_guidance_changes_never_recompile_and_seeds_skip_the_text_encoder(renderers):
    _, fast = renderers
    p = Params(prompt="a red fox", seed=1, guidance=4.5, width=1024, height=1024)
    fast.render(p)
    keys = fast.graph_keys
    with torch._dynamo.config.patch(error_on_recompile=True):
        prompts = [fast.render(p.merged({"prompt": f"a red fox, take {i}"})).pixels for i in range(3)]
        runs = fast.text_encoder_runs
        seeds = [fast.render(p.merged({"seed": 10 + i, "guidance": 1.0 + i})).pixels for i in range(3)]
    assert fast.text_encoder_runs == runs and fast.graph_keys == keys
    assert len({frame.tobytes() for frame in prompts + seeds}) == 6
