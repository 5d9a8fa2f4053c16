"""FP8 linear layers (groundwork for --precision fp8): checked on the CPU through torch's kernel."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bridge.core.params import Params  # noqa: E402
from bridge.bench.fp8 import pixel_deviation  # noqa: E402
from bridge.pipeline.speed.fp8 import E4M3, Float8Linear, check_device, quantize_linears  # noqa: E402


def test_a_float8_linear_is_close_to_its_bf16_original():
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 32).to(torch.bfloat16)
    fp8 = Float8Linear.from_linear(linear)
    assert fp8.weight.dtype == E4M3 and fp8.weight.shape == (32, 64)
    x = torch.randn(2, 5, 64, dtype=torch.bfloat16)
    with torch.no_grad():
        want, got = linear(x).float(), fp8(x)
    assert got.dtype == torch.bfloat16 and got.shape == (2, 5, 32)
    relative = (got.float() - want).norm() / want.norm()
    assert 0 < relative < 0.1, relative  # e4m3 has 3 mantissa bits: a few per cent, not exact


def test_only_layers_fp8_gemms_take_are_replaced():
    model = torch.nn.Sequential(torch.nn.Linear(32, 48), torch.nn.GELU(), torch.nn.Linear(48, 10),
                                torch.nn.Sequential(torch.nn.Linear(16, 16)))
    assert quantize_linears(model) == 2
    assert [type(m).__name__ for m in (model[0], model[2], model[3][0])] == ["Float8Linear", "Linear", "Float8Linear"]
    assert quantize_linears(model) == 0  # already quantised: nothing twice


def test_the_cpu_is_allowed_a_gpu_without_fp8_is_not():
    check_device(torch.device("cpu"))  # torch's reference kernel: tests, not speed


def test_the_demo_unet_in_fp8_renders_close_to_bf16_on_the_same_weights(cache_dir):
    from bridge.pipeline.loading.loader import load_pipeline
    from bridge.pipeline.render.renderer import DiffusersRenderer

    frames = [Params(prompt="a lighthouse in a storm", seed=s, width=64, height=64) for s in (1, 2)]
    pipe = load_pipeline("demo", "cpu", torch.bfloat16, cache_dir)
    bf16 = [DiffusersRenderer(pipe, "cpu", torch.bfloat16).render(p).pixels for p in frames]
    renderer = DiffusersRenderer(pipe, "cpu", torch.bfloat16, precision="fp8")
    assert any(isinstance(m, Float8Linear) for m in pipe.unet.modules())
    fp8 = [renderer.render(p).pixels for p in frames]
    assert np.array_equal(fp8[0], renderer.render(frames[0]).pixels)  # deterministic
    deviation = pixel_deviation(bf16, fp8)
    assert deviation["frames"] == 2 and 0 < deviation["mean_abs"] < 20, deviation
    assert pixel_deviation(bf16, bf16) == {"mean_abs": 0.0, "max_abs": 0, "psnr_db": float("inf"), "frames": 2}
