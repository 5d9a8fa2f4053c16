"""``bench --modes lone`` as a user runs it (a real process): on the CPU the calls of each variant with
no device kernels, said so; its work in the CPU estimate; on CUDA each variant's kernels, the streams
named: a lone frame on the render thread's stream alone, overlap on or off, unless split."""

import pytest

torch = pytest.importorskip("torch")

from bench_runs import demo_bench  # noqa: E402
from bridge.bench import cpu_estimate  # noqa: E402
from bridge.bench.lone_timeline import VARIANTS, lone_params  # noqa: E402
from bridge.cli import build_parser  # noqa: E402
from bridge.cli_tools import bench_options  # noqa: E402

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="about machines without CUDA")


def test_a_lone_change_is_a_new_prompt_and_a_new_seed_as_latency_sends_them():
    first, second = lone_params(0, 512, 0.0), lone_params(1, 512, 0.0)
    assert first.prompt != second.prompt and first.seed != second.seed
    assert (first.width, first.height, first.guidance) == (512, 512, 0.0)


@no_cuda
def test_on_the_cpu_each_variant_gives_its_calls_and_says_it_saw_no_device_kernels(cache_dir, tmp_path):
    done, report = demo_bench("--device", "cpu", "--compile", "off", "--frames", "3", "--modes", "lone",
                              cache_dir=cache_dir, tmp_path=tmp_path)
    assert report["runs"] == [] and "timeline" not in report  # the mode alone times no frame runs
    rows = {r["variant"]: r for r in report["lone"]}
    assert tuple(rows) == VARIANTS
    for r in rows.values():
        assert (r["dtype"], r["vae"], r["size"], r["device"], r["frames"], r["kernels"]) == ("bf16", "full", 64, "cpu",
                                                                                            3, 0)
        assert r["unprofiled_ms"] > 0 and r["call_ms"] > 0
        assert all(r[k] is None for k in ("to_first_kernel_ms", "span_ms", "busy_ms", "after_last_kernel_ms"))
        assert r["streams"] == [] and "profiled on the CPU" in r["note"]
    # the calling thread's ranges: overlap on begins and collects there; on-publisher collects on its own thread
    assert set(rows["on"]["cpu_ranges_ms"]) == {"begin", "collect"} == set(rows["on-split"]["cpu_ranges_ms"])
    assert rows["off"]["cpu_ranges_ms"] == {}
    assert set(rows["on-publisher"]["cpu_ranges_ms"]) >= {"begin"}
    assert "| bf16 | full | 64 | on-publisher |" in done.stdout and "None" not in done.stdout
    assert "lone (bf16, full VAE, 64, off): profiled on the CPU" in done.stdout


def test_its_frames_count_in_the_cpu_estimate_per_size():
    opts = bench_options(build_parser().parse_args(["bench", "--device", "cpu", "--frames", "100", "--sizes", "64,128",
                                                    "--vaes", "full", "--modes", "lone", "--no-baseline"]))
    # per size, four variants: 2 warm-up frames, 30 lone frames (at most) unprofiled, the profiler's warm-up and 30
    assert [(w.size, w.frames) for w in cpu_estimate.bench_work(opts)] == [(64, 4 * 63), (128, 4 * 63)]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_cuda_each_variant_sees_its_kernels_and_overlap_on_decodes_on_its_own_stream(cache_dir, tmp_path):
    done, report = demo_bench("--frames", "3", "--modes", "lone", cache_dir=cache_dir, tmp_path=tmp_path, timeout=900)
    rows = {r["variant"]: r for r in report["lone"]}
    assert tuple(rows) == VARIANTS
    for variant, r in rows.items():
        assert r["frames"] == 3 and r["kernels"] > 0 and r["note"] is None, (variant, r["note"])
        assert 0 < r["busy_ms"] <= r["span_ms"] <= r["call_ms"], (variant, r)
        assert r["to_first_kernel_ms"] >= 0 and r["after_last_kernel_ms"] >= 0

    def streams(row: dict) -> set[str]:
        return {s["name"].split(" (")[0] for s in row["streams"]}
    # off, and on with nothing in flight: one graph on the render thread's stream; split: the decode and a new
    # prompt's text encoders on streams of their own
    for variant in ("off", "on", "on-publisher"):
        assert streams(rows[variant]) == {"render"}, (variant, rows[variant]["streams"])
    assert {"render", "decode", "text"} <= streams(rows["on-split"]), rows["on-split"]["streams"]
    assert "| bf16 | full | 64 | off |" in done.stdout
