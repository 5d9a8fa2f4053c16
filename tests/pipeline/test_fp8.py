"""FP8 through torchao (--precision fp8): which layers, and the refusals, on the CPU.

torchao's FP8 inference runs on CUDA GPUs of sm_89 or newer only (it asserts so), so the frames
are checked in tests/pipeline/test_gpu_fp8.py; here: the layer filter on the demo UNet, the
one-line refusals, and the bench's deviation and gain figures.
"""

import logging
import sys

import pytest

torch = pytest.importorskip("torch")

from bridge.bench.fp8 import pixel_deviation  # noqa: E402
from bridge.bench.report import precision_pairs  # noqa: E402
from bridge.cli import main  # noqa: E402
from bridge.core.errors import ConfigError  # noqa: E402
from bridge.pipeline.speed.fp8 import check, eligible  # noqa: E402


def test_only_the_transformer_blocks_linears_of_fp8_sizes_are_chosen(cache_dir):
    from bridge.pipeline.loading.loader import load_pipeline

    unet = load_pipeline("demo", "cpu", torch.bfloat16, cache_dir).unet
    linears = {name: m for name, m in unet.named_modules() if type(m) is torch.nn.Linear}
    chosen = {name for name, m in linears.items() if eligible(m, name)}
    assert chosen and all(".attentions." in f".{name}" for name in chosen)
    assert all(linears[n].in_features % 16 == 0 and linears[n].out_features % 16 == 0 for n in chosen)
    # the one-token embeddings stay bf16: time embedding, the resnets' time projections, SDXL's added conditions
    assert not any("time_emb" in name or "add_embedding" in name for name in chosen)
    assert any("time_emb" in name for name in linears)
    assert any(name.endswith("to_out.0") for name in chosen) and any(name.endswith("ff.net.2") for name in chosen)


def test_a_linear_of_other_sizes_or_outside_the_blocks_is_not_chosen():
    assert eligible(torch.nn.Linear(32, 48), "down_blocks.1.attentions.0.proj_in")
    assert not eligible(torch.nn.Linear(32, 40), "down_blocks.1.attentions.0.proj_in")
    assert not eligible(torch.nn.Linear(32, 48), "time_embedding.linear_1")
    assert not eligible(torch.nn.Conv2d(32, 48, 1), "down_blocks.1.attentions.0.proj_in")


def test_fp8_is_refused_in_one_line_on_the_cpu_and_without_torchao(monkeypatch):
    pytest.importorskip("torchao")
    with pytest.raises(ConfigError, match=r"needs a CUDA GPU with FP8 tensor cores .*this run is on cpu: use bf16"):
        check(torch.device("cpu"))
    monkeypatch.setitem(sys.modules, "torchao", None)  # as if not installed: find_spec finds nothing
    with pytest.raises(ConfigError, match=r"needs torchao .*pip install 'turbo-bridge\[fp8\]'"):
        check(torch.device("cpu"))


def test_the_bench_refuses_fp8_before_loading_a_model(caplog, tmp_path):
    caplog.set_level(logging.ERROR)
    code = main(["bench", "--model", "demo", "--device", "cpu", "--precision", "default,fp8", "--frames", "1",
                 "--cache-dir", str(tmp_path / "never-made"), "--json", str(tmp_path / "b.json")])
    assert code == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "--precision fp8 needs" in errors[0]
    assert not (tmp_path / "never-made").exists()  # nothing loaded, no demo model built
    assert main(["bench", "--precision", "fp16", "--json", str(tmp_path / "b.json")]) == 2  # not a precision


def test_the_report_pairs_each_fp8_run_with_its_bf16_run():
    run = {"dtype": "bf16", "vae": "full", "size": 512, "mode": "prompt", "tiling": "none", "sinks": "shm"}
    runs = [{**run, "precision": "default", "median_ms": 20.0}, {**run, "precision": "fp8", "median_ms": 18.0},
            {**run, "mode": "seed", "precision": "fp8", "median_ms": 15.0}]  # no bf16 seed run: no pair
    assert precision_pairs(runs) == [(runs[1], runs[0])]


def test_pixel_deviation_is_zero_for_equal_frames_and_grows_with_the_difference():
    a = [torch.zeros((4, 4, 4), dtype=torch.uint8).numpy()]
    b = [a[0].copy()]
    b[0][0, 0, :3] = 255
    assert pixel_deviation(a, a) == {"mean_abs": 0.0, "max_abs": 0, "psnr_db": float("inf"), "frames": 1}
    diff = pixel_deviation(a, b)
    assert diff["max_abs"] == 255 and diff["mean_abs"] == pytest.approx(255 * 3 / 48, abs=1e-3)
