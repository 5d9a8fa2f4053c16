"""``bench`` and ``latency`` on a machine without a GPU: compile follows serve's ``auto``, a full-size
model is refused (or, with ``--device cpu``, warned) with an estimate, and the report shows only
what was measured. The commands run as a user runs them: real processes."""

import logging

import pytest

torch = pytest.importorskip("torch")

from bench_runs import demo_bench, run  # noqa: E402
from bridge.bench import cpu_estimate  # noqa: E402
from bridge.bench.kernel_stats import OUTSIDE  # noqa: E402
from bridge.bench.report import format_report  # noqa: E402
from bridge.cli import build_parser  # noqa: E402
from bridge.cli_tools import bench_options  # noqa: E402
from bridge.core.errors import ConfigError  # noqa: E402

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="about machines without CUDA")


@pytest.mark.parametrize("options, compiles", [
    (["--device", "cpu"], False), (["--device", "cuda"], True), (["--device", "cuda:1"], True),
    (["--device", "cpu", "--compile", "on"], True), (["--device", "cuda", "--compile", "off"], False),
])
def test_bench_compiles_as_serve_does(options, compiles):
    assert bench_options(build_parser().parse_args(["bench", *options])).compile is compiles


@pytest.mark.parametrize("switch, fused", [([], True), (["--fused-text-qkv", "off"], False)])
def test_the_fused_text_qkv_switch_reaches_the_frame_runs_tuning(switch, fused):
    from bridge.bench.measure import frame_tuning

    opts = bench_options(build_parser().parse_args(["bench", "--device", "cuda", *switch]))
    assert frame_tuning(opts).fused_text_qkv is fused and opts.fused_text_qkv is fused


def test_the_compile_scope_and_the_denoisers_mode_reach_the_frame_runs_tuning():
    from bridge.bench.measure import frame_tuning
    from bridge.pipeline.speed.optimize import Tuning

    assert frame_tuning(bench_options(build_parser().parse_args(["bench", "--device", "cuda"]))) == Tuning()
    tuned = bench_options(build_parser().parse_args(["bench", "--device", "cuda", "--compile-scope", "blocks",
                                                     "--denoiser-compile-mode", "max-autotune-no-cudagraphs"]))
    assert frame_tuning(tuned) == Tuning(compile_scope="blocks", denoiser_mode="max-autotune-no-cudagraphs")
    eager_text = bench_options(build_parser().parse_args(["bench", "--device", "cuda", "--compile-text", "off"]))
    assert frame_tuning(eager_text) == Tuning(compile_text=False)


@no_cuda
def test_a_demo_bench_on_the_cpu_compiles_nothing_and_reports_only_what_it_measured(cache_dir, tmp_path):
    done, report = demo_bench("--frames", "2", "--modes", "seed", cache_dir=cache_dir, tmp_path=tmp_path)
    assert report["options"]["compile"] is False and report["machine"]["device"] == "cpu"
    assert [r["vram_gb"] for r in report["runs"]] == [{}]  # no GPU memory on the CPU: nothing measured
    assert report["runs"][0]["lone_ms"] > 0  # two lone frames (as many as --frames, at most 30), each after a pause
    table = done.stdout
    assert "| bf16 | full | 64 | seed |" in table
    assert "VRAM" not in table and "None" not in table and "nan" not in table


@no_cuda
def test_the_kernels_mode_on_the_cpu_gives_each_stages_window_and_says_it_saw_no_device_kernels(cache_dir, tmp_path):
    done, report = demo_bench("--device", "cpu", "--compile", "off", "--frames", "2", "--modes", "kernels",
                              cache_dir=cache_dir, tmp_path=tmp_path)
    assert report["runs"] == []  # the mode alone times no frame runs
    rows = {r["stage"]: r for r in report["kernels"]}
    assert {"tokenize", "text_encoders", "unet", "vae_decode", "to_host"} <= set(rows)  # a new prompt every frame
    for r in rows.values():
        assert (r["path"], r["device"], r["frames"], r["size"]) == ("launches", "cpu", 2, 64)  # eager: one path
        assert r["kernels"] == 0 and r["busy_ms"] == 0 and r["categories"] == {} and r["top"] == []
        assert r["runs"] == 1 and r["window_ms"] > 0 and r["idle_ms"] == r["window_ms"]  # 2 frames profiled
    table = done.stdout
    assert "| bf16 | full | 64 | launches | unet | 1 |" in table and "change/frame" not in table  # no empty runs table
    assert "no device kernels seen on path launches: profiled on the CPU" in table and "None" not in table


@no_cuda
def test_the_timeline_mode_on_the_cpu_gives_the_intervals_and_cpu_phases_and_says_it_saw_no_device_kernels(
        cache_dir, tmp_path):
    done, report = demo_bench("--device", "cpu", "--compile", "off", "--frames", "3", "--modes", "timeline",
                              cache_dir=cache_dir, tmp_path=tmp_path)
    assert report["runs"] == [] and "kernels" not in report  # the mode alone times no frame runs
    rows = {r["change"]: r for r in report["timeline"]}
    assert set(rows) == {"prompt", "seed"}
    for r in rows.values():
        assert (r["dtype"], r["vae"], r["size"], r["device"], r["frames"], r["kernels"]) == ("bf16", "full", 64, "cpu",
                                                                                            3, 0)
        assert r["interval_ms"] > 0 and r["unprofiled_interval_ms"] > 0
        assert set(r["cpu_ranges_ms"]) == {"begin", "collect", "publish"} and r["cpu_ranges_ms"]["begin"] > 0
        assert all(r[k] is None for k in ("busy_ms", "idle_ms", "overlap_ms", "longest_gap_us", "idle_in_ms"))
        assert r["streams"] == [] and r["gaps"] == [] and "profiled on the CPU" in r["note"]
    table = done.stdout
    assert "| bf16 | full | 64 | prompt |" in table and "change/frame" not in table  # no empty runs table
    assert "timeline (bf16, full VAE, 64, new seed): profiled on the CPU" in table and "None" not in table


def test_the_timeline_mode_renders_its_frames_alone_per_size():
    opts = bench_options(build_parser().parse_args(["bench", "--device", "cpu", "--frames", "10", "--sizes", "64,128",
                                                    "--vaes", "full", "--modes", "timeline", "--no-baseline"]))
    # per size, a new prompt then a new seed: the warm-up frame and 10 unprofiled, the profiler's 2 warm-up frames,
    # the 10 profiled and the frames before and after them
    assert [(w.size, w.frames) for w in cpu_estimate.bench_work(opts)] == [(64, 50), (128, 50)]


def test_the_kernels_mode_renders_its_frames_alone_per_size():
    opts = bench_options(build_parser().parse_args(["bench", "--device", "cpu", "--frames", "10", "--sizes", "64,128",
                                                    "--vaes", "full", "--modes", "kernels", "--no-baseline"]))
    # per size: the first frame, 2 warm-up frames, the profiler's warm-up frame and the 10 profiled
    assert [(w.size, w.frames) for w in cpu_estimate.bench_work(opts)] == [(64, 14), (128, 14)]


@no_cuda
@pytest.mark.parametrize("command", [["bench", "--weights", "random"], ["latency", "--model", "random"]])
def test_a_full_size_model_on_the_cpu_is_refused_with_an_estimate(command, tmp_path):
    figures = tmp_path / "bench.json"
    done = run(*command, *(["--json", str(figures)] if command[0] == "bench" else []), cache_dir=tmp_path, timeout=120)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, done.stderr
    assert "TFLOP a frame at 512x512 full VAE" in errors[0] and "GFLOP/s" in errors[0]
    assert "would take about" in errors[0] and "--model demo" in errors[0] and "--device cpu" in errors[0]
    assert not figures.exists()  # nothing ran: no baseline, no daemon


def test_the_estimate_counts_the_frames_flops_without_building_weights():
    sdxl = cpu_estimate.frame_flops("random", 512, "full")
    # The first probes counted 1.59 T (UNet) + 2.52 T (VAE decode) + 0.11 T (text encoders) per 512x512 frame.
    assert 4.1e12 < sdxl < 4.35e12
    assert cpu_estimate.frame_flops("random", 512, "tiny") < sdxl / 2  # the tiny decoder: 0.14 T
    assert cpu_estimate.frame_flops("random-sd", 512, "full") < sdxl  # one text encoder, a smaller UNet
    assert 3.5 < cpu_estimate.frame_flops("random", 1024, "full") / sdxl < 6  # 4x the pixels, attention grows faster


def test_with_device_cpu_the_estimate_is_a_warning_and_the_demo_models_pass(caplog):
    work = [cpu_estimate.Work(3, 256, "tiny", "fp32")]
    with caplog.at_level(logging.WARNING, logger="bridge.bench.cpu_estimate"):
        cpu_estimate.guard("bench", "random", "cpu", work)
    assert "would take about" in caplog.text and "running it anyway" in caplog.text
    with pytest.raises(ConfigError, match="this run's 3 frames would take about"):
        cpu_estimate.guard("bench", "random", None, work)
    caplog.clear()
    for model in ("demo", "demo-sd", "null"):
        cpu_estimate.guard("bench", model, None, work)
    assert not caplog.text


def test_the_bench_work_counts_every_frame_the_run_renders():
    opts = bench_options(build_parser().parse_args(["bench", "--device", "cpu", "--frames", "10", "--sizes", "256,512",
                                                    "--vaes", "full,tiny", "--modes", "prompt,seed"]))
    work = cpu_estimate.bench_work(opts)
    assert work[0] == cpu_estimate.Work(15, 256, "full", "fp16")  # the plain diffusers call: 5 warm-up + 10 timed
    # per size and VAE: the first frame, 2 modes x (1 warm + 10 timed + 10 lone), 20 profiled frames
    assert [(w.size, w.vae, w.frames) for w in work[1:]] == [(256, "full", 63), (512, "full", 63), (256, "tiny", 63),
                                                            (512, "tiny", 63)]
    # --overlap off,on: each mode again as an overlapped stream and its lone frames (1 + 2 modes x (11 frames x 2 +
    # 10 lone x 2) + 20 profiled)
    both = bench_options(build_parser().parse_args(["bench", "--device", "cpu", "--frames", "10", "--sizes", "256",
                                                    "--vaes", "full", "--modes", "prompt,seed,decode",
                                                    "--overlap", "off,on"]))
    assert [(w.size, w.frames) for w in cpu_estimate.bench_work(both)[1:]] == [(256, 105)]
    ab = bench_options(build_parser().parse_args(["bench", "--device", "cpu", "--frames", "10", "--sizes", "256",
                                                  "--vaes", "full", "--modes", "prompt,seed,decode",
                                                  "--overlap", "off,on,decode"]))
    assert ab.overlaps == ("off", "on", "decode")  # on and decode: each mode twice more, 22 frames each
    urgent = bench_options(build_parser().parse_args(["bench", "--device", "cpu", "--overlap", "on,urgent"]))
    assert urgent.overlaps == ("on", "urgent")
    lanes = bench_options(build_parser().parse_args(["bench", "--device", "cpu", "--overlap", "on,lanes2,lanes3"]))
    assert lanes.overlaps == ("on", "lanes2", "lanes3")  # serve's --render-lanes 2 and 3 beside one lane
    # 1 + 2 modes x (11 frames x 3 + 10 lone x 3) + 20 profiled
    assert [(w.size, w.frames) for w in cpu_estimate.bench_work(ab)[1:]] == [(256, 147)]


@pytest.mark.parametrize("value", ["default,fp8", "default"])
def test_precision_from_an_old_script_is_refused_in_one_line_that_says_fp8_measured_slower(value, tmp_path):
    result = run("bench", "--model", "demo", "--device", "cpu", "--precision", value,
                 "--json", str(tmp_path / "b.json"), cache_dir=tmp_path, timeout=60)
    assert result.returncode == 2 and not (tmp_path / "b.json").exists()  # refused before anything ran
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "--precision was removed with FP8" in errors[0] and "46.1 vs 49.1 FPS" in errors[0]


RUN = {"dtype": "bf16", "vae": "full", "size": 512, "mode": "prompt", "median_ms": 19.81, "p99_ms": 21.67,
       "std_ms": 0.29, "fps": 50.5, "first_frame_s": 132.0, "stages_ms": {}}


def test_the_report_has_a_vram_column_only_where_memory_was_measured():
    cuda = {"machine": {"device": "cuda"}, "runs": [{**RUN, "vram_gb": {"loaded": 9.1, "after_frames": 10.54,
                                                                          "peak_allocated": 8.99}}]}
    assert "| 9.1 / 10.54 (peak alloc 8.99) |" in format_report(cuda)
    cpu = {"machine": {"device": "cpu"}, "runs": [{**RUN, "vram_gb": {}}],
           "lora": [{"dtype": "fp32", "vae": "full", "what": "two LoRAs", "base_ms": 1.0, "folded_ms": 1.1,
                     "folded_vs_base_pct": 10.0, "switch_frame_ms": 2.0, "switch_extra_ms": 1.0, "switch_p99_ms": 3.0,
                     "reweight_frame_ms": 2.0, "reweight_extra_ms": 1.0, "fold_ms": None}]}
    text = format_report(cpu)
    assert "VRAM" not in text and "None" not in text and "fold alone" not in text
    assert "| bf16 | full | 512 | prompt | none | shm | 19.81 | 50.5 | 21.67 | 0.29 | - | 132.0 | - |" in text
    assert "| 0.29 | - | 132.0 | 14.50 |" in format_report({**cpu, "runs": [{**RUN, "vram_gb": {}, "lone_ms": 14.5}]})
    overlapped = {**RUN, "first_frame_s": None, "overlap": "on", "latency_ms": 25.5, "vram_gb": {}}
    assert ("| bf16 + overlap (latency 25.50 ms) | full | 512 | prompt | none | shm | 19.81 | 50.5 | 21.67 "
            "| 0.29 | - | - |") in format_report({**cpu, "runs": [overlapped]})
    assert "| bf16 + overlap (latency 25.50 ms) |" in format_report({**cpu, "runs": [{**overlapped, "overlap": True}]})
    decode_only = format_report({**cpu, "runs": [{**overlapped, "overlap": "decode"}]})  # the A/B's other half
    assert "| bf16 + overlap (decode only) (latency 25.50 ms) |" in decode_only
    urgent = format_report({**cpu, "runs": [{**overlapped, "overlap": "urgent"}]})  # the text stream's priority A/B
    assert "| bf16 + overlap (urgent text stream) (latency 25.50 ms) |" in urgent
    lanes = format_report({**cpu, "runs": [{**overlapped, "overlap": "lanes2"}]})  # --render-lanes 2
    assert "| bf16 + overlap (2 render lanes) (latency 25.50 ms) |" in lanes
    assert "overlap" not in format_report({**cpu, "runs": [{**RUN, "overlap": "off", "vram_gb": {}}]})


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_cuda_bench_compiles_and_reports_the_gpu_memory(cache_dir, tmp_path):
    done, report = demo_bench("--frames", "3", "--modes", "seed", cache_dir=cache_dir, tmp_path=tmp_path, timeout=900)
    assert report["options"]["compile"] is True and report["machine"]["device"].startswith("cuda")
    vram = report["runs"][0]["vram_gb"]
    assert vram["loaded"] > 0 and vram["after_frames"] > 0 and vram["peak_allocated"] > 0
    assert "| VRAM GB used (loaded / after) |" in done.stdout and "None" not in done.stdout


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_cuda_the_kernels_mode_attributes_the_kernels_of_both_paths_to_the_stages(cache_dir, tmp_path):
    done, report = demo_bench("--frames", "3", "--modes", "kernels", cache_dir=cache_dir, tmp_path=tmp_path,
                              timeout=900)
    rows = {(r["path"], r["stage"]): r for r in report["kernels"]}
    assert {path for path, _ in rows} == {"graphs", "launches"}
    for stage in ("text_encoders", "unet", "vae_decode"):
        launched = rows["launches", stage]  # launched one by one: every profiler sees these kernels
        assert launched["kernels"] > 0 and 0 < launched["busy_ms"] <= launched["window_ms"]
        assert sum(c["ms"] for c in launched["categories"].values()) == pytest.approx(launched["kernel_ms"], abs=1e-3)
    assert rows["launches", "vae_decode"]["categories"].get("convolution")  # the decoder's convolutions: cuDNN's
    assert ("launches", OUTSIDE) not in rows  # every kernel ran inside a stage's window
    assert "| bf16 | full | 64 | graphs | unet |" in done.stdout  # graph replays: kernels seen or said unseen


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_cuda_the_timeline_mode_sees_each_streams_kernels_and_names_the_streams(cache_dir, tmp_path):
    done, report = demo_bench("--frames", "3", "--modes", "timeline", cache_dir=cache_dir, tmp_path=tmp_path,
                              timeout=900)
    rows = {r["change"]: r for r in report["timeline"]}
    assert set(rows) == {"prompt", "seed"}
    for change, r in rows.items():
        assert r["frames"] == 3 and r["kernels"] > 0 and r["note"] is None, (change, r["note"])
        assert 0 < r["busy_ms"] <= r["interval_ms"] and 0 <= r["idle_ms"] < r["interval_ms"]  # medians: no sum
        busy = {s["name"].split(" (")[0]: s["busy_ms"] for s in r["streams"]}
        assert busy.get("render", 0) > 0 and busy.get("decode", 0) > 0, busy  # the marker kernels named them
    # A new prompt's text encoders run on the text stream; a new seed encodes nothing. Not the median busy time:
    # frame i+1's text kernels start right after its begin, which comes just before frame i's publication,
    # so the cut at publications puts them in either frame (a demo frame's GPU work takes microseconds):
    # one frame of three may hold two encodings and two none, a median of 0 (run S13, H100).
    def streams(row: dict) -> set[str]:
        return {s["name"].split(" (")[0] for s in row["streams"]}
    assert "text" in streams(rows["prompt"]) and "text" not in streams(rows["seed"]), (rows["prompt"]["streams"],
                                                                                      rows["seed"]["streams"])
    assert "| bf16 | full | 64 | prompt |" in done.stdout


def test_a_stream_of_seeds_without_a_stream_is_refused_in_one_line(tmp_path):
    done = run("latency", "--model", "demo", "--stream-seeds", cache_dir=tmp_path, timeout=60)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "add --stream-rate HZ" in errors[0], done.stderr
