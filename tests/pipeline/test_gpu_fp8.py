"""GPU checks of the FP8 UNet through torchao (opt-in: ``python -m pytest -m gpu``; needs an FP8 GPU:
Ada or Hopper, and torchao: ``pip install 'turbo-bridge[fp8]'``)."""

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchao")  # the fp8 extra; tests/pipeline/test_fp8.py checks the refusal without it

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 9),
                                 reason="needs a CUDA GPU with FP8 (sm_89 or newer)")]

from bridge.core.params import Params  # noqa: E402
from test_gpu import assert_compiled_matches_eager, renderer_pair  # noqa: E402


@pytest.fixture(scope="module")
def renderers(cache_dir):
    return renderer_pair(cache_dir, precision="fp8")


def test_compiled_fp8_matches_eager_fp8_and_prompt_changes_never_recompile(renderers):
    from bridge.pipeline.speed.fp8 import eligible

    eager, fast = renderers
    for renderer in renderers:  # the transformer blocks' linears hold torchao float8 weights, nothing else
        unet = renderer.pipe.unet
        quantised = {name for name, m in unet.named_modules()
                     if type(m) is torch.nn.Linear and type(m.weight).__name__ == "Float8Tensor"}
        assert quantised and all(".attentions." in f".{name}" for name in quantised)
        assert quantised == {name for name, m in unet.named_modules() if eligible(m, name)}
    p = Params(prompt="a cat on a windowsill", seed=11, width=512, height=512)
    assert_compiled_matches_eager(eager, fast, p)
    torch._dynamo.config.error_on_recompile = True
    try:
        for i in range(3):
            fast.render(p.merged({"prompt": f"a cat on a windowsill, take {i}", "seed": i}))
    finally:
        torch._dynamo.config.error_on_recompile = False


def test_fp8_deviation_from_bf16_on_the_same_weights_is_measured(cache_dir):
    from bridge.bench.fp8 import deviation_from_bf16
    from bridge.pipeline.loading.loader import load_pipeline

    deviation = deviation_from_bf16(load_pipeline("demo", "cuda", torch.bfloat16, cache_dir), "cuda",
                                    torch.bfloat16, 512)
    print("fp8 vs bf16, demo model, 512:", deviation)  # the figure for docs/benchmarks.md (-s shows it)
    assert deviation["frames"] == 3 and 0 < deviation["mean_abs"] < 20
