"""``bench --memory-budget-gb``: refused without CUDA; on a GPU, a budget too small fails the run."""

import json
import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")


def bench(cache_dir, tmp_path, *extra):
    env = {**os.environ, "TURBO_BRIDGE_CACHE": str(cache_dir)}
    return subprocess.run([sys.executable, "-m", "bridge", "bench", "--model", "demo", "--sizes", "64", "--frames", "2",
                           "--vaes", "full", "--modes", "seed", "--no-baseline", "--json", str(tmp_path / "b.json"),
                           *extra], capture_output=True, text=True, env=env, timeout=600)


def test_the_budget_is_refused_on_the_cpu_before_any_model_loads(cache_dir, tmp_path):
    done = bench(cache_dir, tmp_path, "--device", "cpu", "--compile", "off", "--memory-budget-gb", "8")
    assert done.returncode == 2, done.stderr
    assert "--memory-budget-gb caps GPU memory, and device cpu has none to cap" in done.stderr
    assert "loading" not in done.stderr.lower() and not (tmp_path / "b.json").exists()


def test_an_out_of_memory_error_is_recognised_also_when_wrapped():
    from bridge.bench.memory_budget import out_of_memory

    try:
        try:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        except Exception as inner:
            raise RuntimeError("backend compiler failed") from inner
    except RuntimeError as wrapped:
        assert out_of_memory(wrapped)
    assert not out_of_memory(RuntimeError("shape mismatch")) and not out_of_memory(None)


@pytest.mark.parametrize("gb", ["0", "-3"])
def test_a_budget_must_be_positive(cache_dir, tmp_path, gb):
    done = bench(cache_dir, tmp_path, "--device", "cpu", "--compile", "off", f"--memory-budget-gb={gb}")
    assert done.returncode == 2 and "positive size in GB" in done.stderr, done.stderr




@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_demo_model_fits_8_gb_and_the_report_says_so(cache_dir, tmp_path):
    done = bench(cache_dir, tmp_path, "--compile", "off", "--memory-budget-gb", "8")
    assert done.returncode == 0, done.stderr
    budget = json.loads((tmp_path / "b.json").read_text())["memory_budget"]
    assert budget["fits"] and budget["budget_gb"] == 8 and 0 < budget["peak_allocated_gb"] < budget["allocator_cap_gb"]
    assert "memory budget 8 GB" in done.stdout and "fits" in done.stdout


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_full_size_model_in_a_budget_too_small_fails_the_run_clearly(cache_dir, tmp_path):
    # The full SDXL-Turbo UNet alone is 5 GB in bf16: 3 GB (context included) cannot hold it.
    done = subprocess.run([sys.executable, "-m", "bridge", "bench", "--model", "random", "--sizes", "512",
                           "--frames", "2", "--vaes", "full", "--modes", "seed", "--no-baseline", "--compile", "off",
                           "--memory-budget-gb", "3", "--json", str(tmp_path / "b.json")],
                          capture_output=True, text=True, env={**os.environ, "TURBO_BRIDGE_CACHE": str(cache_dir)},
                          timeout=600)
    assert done.returncode == 1, done.stderr
    assert "out of memory within the 3 GB budget (bf16, full VAE" in done.stderr
    assert json.loads((tmp_path / "b.json").read_text())["memory_budget"]["fits"] is False
