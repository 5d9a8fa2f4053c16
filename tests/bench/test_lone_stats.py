"""``bench --modes lone``' arithmetic: each lone call split into the CPU's time before the first kernel,
the GPU's span (busy and idle in it, the CPU ranges the idle fell in) and the time after the last kernel;
medians over calls; the report's lines. Every figure worked out by hand. No torch."""

from bridge.bench.lone_stats import LONE, lone_frames, lone_row
from bridge.bench.report import lone_lines
from bridge.bench.timeline_stats import CpuRange, StreamKernel

RENDER, DECODE, TEXT = 7, 13, 21
# Call 1, 1000-1100 us: begin 1000-1030, collect 1030-1100; text 1020-1030, render 1035-1060, decode 1070-1080,
# the pixels at 1100: 20 us to the first kernel, a span of 60 with 45 busy and 15 idle (1030-1035 and
# 1060-1070: waits between streams, both during collect), 20 after the last kernel.
CALL_1 = [StreamKernel("flash_fwd_kernel", 1020, 1030, TEXT), StreamKernel("nvjet_gemm", 1035, 1060, RENDER),
          StreamKernel("Memcpy DtoH (Device -> Pinned)", 1070, 1080, DECODE)]
RANGES_1 = [CpuRange(LONE, 1000, 1100), CpuRange("begin", 1000, 1030), CpuRange("collect", 1030, 1100)]
# Call 2, 2000-2050 us, one graph on the render stream 2010-2040: 10 before, span 30 all busy, 10 after.
CALL_2 = [StreamKernel("nvjet_gemm", 2010, 2025, RENDER), StreamKernel("triton_poi_fused_0", 2025, 2040, RENDER)]
RANGES_2 = [CpuRange(LONE, 2000, 2050)]
OUTSIDE = [StreamKernel("vectorized_elementwise_kernel", 1500, 1510, RENDER)]  # between the calls: no call's


def test_a_call_splits_into_before_the_first_kernel_the_gpus_span_and_after_the_last():
    first, second = lone_frames(CALL_2 + OUTSIDE + CALL_1, RANGES_2 + RANGES_1)  # in time order, whatever given
    assert (first.call_us, first.to_first_kernel_us, first.span_us, first.after_last_kernel_us) == (100, 20, 60, 20)
    assert (first.timeline.busy_us, first.idle_in_span_us) == (45, 15)
    assert first.timeline.stream_busy_us == {TEXT: 10, RENDER: 25, DECODE: 10}  # the kernel between calls: none's
    # idle over the whole call: 20 before (during begin), 15 in the span and 20 after (during collect)
    assert first.timeline.idle_in_us == {"begin": 20, "collect": 35, "(no range)": 0}
    assert (second.to_first_kernel_us, second.span_us, second.after_last_kernel_us, second.idle_in_span_us) == (
        10, 30, 10, 0)


def test_a_kernel_across_the_calls_edge_counts_for_its_part_inside():
    (frame,) = lone_frames([StreamKernel("nvjet_gemm", 990, 1020, RENDER)], [CpuRange(LONE, 1000, 1100)])
    assert (frame.to_first_kernel_us, frame.span_us, frame.after_last_kernel_us) == (0, 20, 80)


def test_a_call_without_kernels_has_no_gpu_parts_and_the_row_says_none_not_zero():
    (frame,) = lone_frames([], [CpuRange(LONE, 0, 40)])
    assert (frame.call_us, frame.to_first_kernel_us, frame.span_us, frame.idle_in_span_us) == (40, None, None, None)
    row = lone_row([frame], {})
    assert row["call_ms"] == 0.04 and row["kernels"] == 0
    assert all(row[k] is None for k in ("to_first_kernel_ms", "span_ms", "idle_in_span_ms", "after_last_kernel_ms",
                                        "busy_ms"))


def test_the_row_gives_medians_over_calls_and_names_the_streams():
    row = lone_row(lone_frames(CALL_1 + CALL_2, RANGES_1 + RANGES_2), {RENDER: "render", DECODE: "decode"})
    # medians of two: (100 + 50) / 2 and so on, each figure on its own
    assert (row["call_ms"], row["to_first_kernel_ms"], row["span_ms"], row["idle_in_span_ms"],
            row["after_last_kernel_ms"], row["busy_ms"]) == (0.075, 0.015, 0.045, 0.0075, 0.015, 0.0375)
    assert "interval_ms" not in row and "overlap_ms" not in row
    names = {s["name"]: s["busy_ms"] for s in row["streams"]}
    assert names == {"render (stream 7)": 0.0275, "stream 21": 0.005,
                     "decode (stream 13)": 0.005}


def test_the_report_prints_a_row_per_variant_and_says_what_was_not_seen():
    seen = {"dtype": "bf16", "vae": "full", "size": 512, "variant": "on", "unprofiled_ms": 14.2, "note": None,
            **lone_row(lone_frames(CALL_1, RANGES_1), {RENDER: "render"})}
    unseen = {**seen, "variant": "off", "note": "profiled on the CPU",
              **lone_row(lone_frames([], [CpuRange(LONE, 0, 40)]), {})}
    lines = lone_lines([seen, unseen])
    assert "| bf16 | full | 512 | on | 14.200 | 0.100 | 0.020 | 0.060 | 0.045 | 0.015 | 0.020 | 3 |" in lines[3]
    assert "| bf16 | full | 512 | off | 14.200 | 0.040 | - | - | - | - | - | 0 | - |" == lines[4]
    assert "lone (bf16, full VAE, 512, off): profiled on the CPU" in lines
    assert "  render (stream 7) (bf16, full VAE, 512, on): busy 0.025 ms, alone 0.025, 1 kernels; gemm 0.025" in lines
    assert lone_lines([]) == []
