"""GPU checks of the SD 1.5 family and SDXS-512 at full size (random weights, bf16, compiled, 512x512):
frames render and repeat exactly, a new prompt or seed adds no graph and never recompiles, a seed-only
change skips the text encoder. Opt-in: ``python -m pytest -m gpu tests/pipeline/test_gpu_sd15_sdxs.py``."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

from bridge.core.params import Params  # noqa: E402
from test_gpu import assert_prompts_never_recompile_and_seeds_skip_text_encoders  # noqa: E402


@pytest.fixture(scope="module", params=[("random-sd15", "sd15"), ("random-sdxs", "sd2")], ids=["sd15", "sdxs"])
def compiled(request, cache_dir):
    from bridge.pipeline.loading.loader import load_pipeline
    from bridge.pipeline.render.renderer import DiffusersRenderer
    from bridge.pipeline.speed.optimize import configure_compile_cache

    model, family = request.param
    configure_compile_cache(cache_dir)
    renderer = DiffusersRenderer(load_pipeline(model, "cuda", torch.bfloat16, cache_dir), "cuda", torch.bfloat16,
                                 compile=True)
    assert renderer.family.name == family
    yield renderer
    del renderer
    torch.cuda.empty_cache()


def test_renders_deterministic_frames_and_a_new_seed_changes_them(compiled):
    p = Params(prompt="a lighthouse at dusk", seed=1, width=512, height=512)
    a = compiled.render(p).pixels
    assert a.shape == (512, 512, 4) and (a[..., 3] == 255).all() and a[..., :3].std() > 0
    assert np.array_equal(a, compiled.render(p).pixels)
    assert not np.array_equal(a, compiled.render(p.merged({"seed": 2})).pixels)


def test_prompt_and_seed_changes_never_recompile(compiled):
    p = Params(prompt="a harbour", seed=3, width=512, height=512)
    compiled.render(p)
    keys = compiled.graph_keys
    assert_prompts_never_recompile_and_seeds_skip_text_encoders(compiled, p)
    assert compiled.graph_keys == keys
