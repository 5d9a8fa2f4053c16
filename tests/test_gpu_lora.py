"""LoRAs on the compiled path (opt-in: ``python -m pytest -m gpu``; needs CUDA): switching and
re-weighting never recompile, the captured CUDA graphs see the folded weights, weight 0 gives the
base frame exactly, and the full-size bench mode runs."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

from bridge.core.params import Params  # noqa: E402
from lora_files import lora_layers, write_diffusers  # noqa: E402

BASE = Params(prompt="a lighthouse", seed=3, width=512, height=512)


@pytest.fixture(scope="module")
def renderers(cache_dir, tmp_path_factory):
    from bridge.pipeline.loader import load_pipeline
    from bridge.pipeline.optimize import configure_compile_cache
    from bridge.pipeline.renderer import DiffusersRenderer

    folder = tmp_path_factory.mktemp("gpu-loras")
    cpu_pipe = load_pipeline("demo", "cpu", torch.float32, cache_dir)
    write_diffusers(lora_layers(cpu_pipe, seed=1), folder / "a.safetensors")
    write_diffusers(lora_layers(cpu_pipe, seed=2, conv=False), folder / "b.safetensors")
    configure_compile_cache(cache_dir)
    eager = DiffusersRenderer(load_pipeline("demo", "cuda", torch.bfloat16, cache_dir), "cuda", torch.bfloat16,
                              lora_dir=folder)
    fast = DiffusersRenderer(load_pipeline("demo", "cuda", torch.bfloat16, cache_dir), "cuda", torch.bfloat16,
                             compile=True, lora_dir=folder)
    for renderer in (eager, fast):
        renderer.loras.catalog.load("a")
        renderer.loras.catalog.load("b")
    return eager, fast


def test_switching_and_reweighting_never_recompile(renderers):
    _, fast = renderers
    base = fast.render(BASE).pixels
    fast.render(BASE.merged({"loras": (("a", 1.0),)}))  # any first-use work outside the check
    to_q = fast.pipe.unet.down_blocks[1].attentions[0].transformer_blocks[0].attn1.to_qkv
    pointer = to_q.weight.data_ptr()
    torch._dynamo.config.error_on_recompile = True
    try:
        for i in range(12):
            name = ("a", "b")[i % 2]
            fast.render(BASE.merged({"seed": i, "loras": ((name, -2.0 + i / 3),)}))
        fast.render(BASE.merged({"loras": (("a", 0.5), ("b", 1.5))}))
        fast.render(BASE.merged({"prompt": "a lighthouse at night", "loras": (("a", 0.7),)}))  # text graph too
        again = fast.render(BASE).pixels
    finally:
        torch._dynamo.config.error_on_recompile = False
    assert to_q.weight.data_ptr() == pointer
    assert np.array_equal(again, base)  # weight 0: the base weights, bit for bit, so the base frame


def test_compiled_frame_with_lora_matches_eager(renderers):
    eager, fast = renderers
    params = BASE.merged({"loras": (("a", 0.8), ("b", -0.6))})
    a, b = eager.render(params).pixels.astype(int), fast.render(params).pixels.astype(int)
    base = fast.render(BASE).pixels.astype(int)
    assert np.abs(a - b).mean() < 2.0, np.abs(a - b).mean()  # bf16 kernels differ a little, not more
    assert np.abs(b - base).mean() > 5 * max(np.abs(a - b).mean(), 0.1)  # and the LoRA shows


def test_bench_mode_on_the_full_size_model(cache_dir):
    from bridge.pipeline.loader import load_pipeline
    from bridge.pipeline.lora_bench import measure_lora_switch
    from bridge.pipeline.renderer import DiffusersRenderer

    renderer = DiffusersRenderer(load_pipeline("random", "cuda", torch.bfloat16, cache_dir), "cuda", torch.bfloat16,
                                 compile=True)
    result = measure_lora_switch(renderer, 512, 30, cache_dir)
    assert result["recompiles"] == 0 and result["switch_frame_ms"] > 0
    print(result)
