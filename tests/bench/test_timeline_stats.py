"""``bench --modes timeline``' arithmetic: frames cut at the publications, the GPU's busy time as the
union over streams, the time streams ran at once, idle gaps and the CPU ranges they fell in, the
streams named by their markers, medians over frames. Every figure worked out by hand. No torch."""

import pytest

from bridge.bench.report import timeline_lines
from bridge.bench.timeline_stats import (
    NO_RANGE,
    CpuRange,
    StreamKernel,
    common_us,
    frame_timelines,
    merged,
    stream_name,
    stream_roles,
    timeline_row,
)

RENDER, DECODE, TEXT = 7, 13, 21
# One frame from 0 to 100 us. Render: a kernel from the frame before (-5..5), then 10-40, 40-60 (touching), 70-90;
# decode: a copy 30-50; text: attention 55-75. The CPU: begin 0-8, collect 8-95, publish 95-99, then no range.
ONE_FRAME = [
    StreamKernel("triton_poi_fused_add_0", -5, 5, RENDER),
    StreamKernel("triton_poi_fused_add_1", 10, 40, RENDER),
    StreamKernel("nvjet_hsh_128x256_64x4_1x2_h_bz_coopA_NTT", 40, 60, RENDER),
    StreamKernel("sm90_xmma_fprop_implicit_gemm_bf16", 70, 90, RENDER),
    StreamKernel("Memcpy DtoH (Device -> Pinned)", 30, 50, DECODE),
    StreamKernel("flash_fwd_kernel", 55, 75, TEXT),
]
PHASES = [CpuRange("begin", 0, 8), CpuRange("collect", 8, 95), CpuRange("publish", 95, 99)]


def test_merged_spans_are_the_union_sorted_and_disjoint():
    assert merged([]) == []
    assert merged([(20, 30), (0, 10), (10, 15), (25, 40)]) == [(0, 15), (20, 40)]  # touching ones join
    assert merged([(0, 50), (5, 10)]) == [(0, 50)]


def test_common_time_of_two_span_lists():
    assert common_us([(0, 10), (20, 30)], [(5, 25)]) == 10  # 5-10 and 20-25
    assert common_us([(0, 10)], [(10, 20)]) == 0
    assert common_us([], [(0, 5)]) == 0


def test_one_frame_busy_is_the_union_over_streams_and_idle_the_rest():
    (frame,) = frame_timelines(ONE_FRAME, PHASES, [0, 100])
    # union: 0-5 (the earlier kernel's part in this frame) and 10-90
    assert (frame.interval_us, frame.busy_us, frame.idle_us) == (100, 85, 15)
    assert [(g.start_us, g.end_us) for g in frame.gaps] == [(5, 10), (90, 100)]
    assert frame.stream_busy_us == {RENDER: 75, DECODE: 20, TEXT: 20}


def test_streams_at_once_and_each_streams_time_alone():
    (frame,) = frame_timelines(ONE_FRAME, PHASES, [0, 100])
    # render with decode 30-50, with text 55-60 and 70-75
    assert frame.overlap_us == 30
    # render alone 0-5, 10-30, 50-55, 75-90; text alone 60-70; decode never alone
    assert frame.stream_alone_us == {RENDER: 45, TEXT: 10}
    assert sum(frame.stream_alone_us.values()) + frame.overlap_us == frame.busy_us


def test_kernels_counted_where_they_start_and_their_time_by_category_where_it_falls():
    (frame,) = frame_timelines(ONE_FRAME, PHASES, [0, 100])
    assert frame.stream_kernels == {RENDER: 3, DECODE: 1, TEXT: 1}  # the one begun in the frame before: not here
    assert frame.stream_categories_us == {RENDER: {"pointwise": 35, "gemm": 20, "convolution": 20},
                                          DECODE: {"copy": 20}, TEXT: {"attention": 20}}


def test_idle_time_goes_to_the_cpu_ranges_it_fell_in():
    (frame,) = frame_timelines(ONE_FRAME, PHASES, [0, 100])
    # gap 5-10: begin 5-8, collect 8-10; gap 90-100: collect 90-95, publish 95-99, no range 99-100
    assert frame.idle_in_us == {"begin": 3, "collect": 7, "publish": 4, NO_RANGE: 1}
    assert frame.ranges_us == {"begin": 8, "collect": 87, "publish": 4}
    assert [g.during for g in frame.gaps] == [("begin", "collect"), ("collect", "publish")]


def test_a_kernel_of_no_length_does_not_keep_its_stream_busy():
    kernels = [StreamKernel("memset", 10, 10, RENDER), StreamKernel("gemm", 50, 60, RENDER)]
    (frame,) = frame_timelines(kernels, [], [0, 100])
    assert (frame.busy_us, frame.idle_us, frame.stream_kernels) == (10, 90, {RENDER: 2})


def test_the_row_of_one_frame():
    row = timeline_row(frame_timelines(ONE_FRAME, PHASES, [0, 100]), {RENDER: "render", DECODE: "decode"})
    assert (row["frames"], row["kernels"], row["interval_ms"]) == (1, 5, 0.1)
    assert (row["busy_ms"], row["idle_ms"], row["overlap_ms"], row["longest_gap_us"]) == (0.085, 0.015, 0.03, 10)
    assert row["idle_by_gap_ms"] == {"under_10us": 0.005, "10_to_100us": 0.01, "100us_and_over": 0}
    assert row["idle_in_ms"] == {"begin": 0.003, "collect": 0.007, "publish": 0.004, NO_RANGE: 0.001}
    assert row["cpu_ranges_ms"] == {"begin": 0.008, "collect": 0.087, "publish": 0.004}
    assert [(s["name"], s["busy_ms"], s["alone_ms"], s["kernels"]) for s in row["streams"]] == [
        ("render (stream 7)", 0.075, 0.045, 3), ("decode (stream 13)", 0.02, 0, 1), ("stream 21", 0.02, 0.01, 1)]
    assert row["streams"][0]["categories"] == {"convolution": 0.02, "gemm": 0.02, "pointwise": 0.035}
    assert row["gaps"] == [{"frame": 0, "at_us": 90, "us": 10, "during": ["collect", "publish"]},
                           {"frame": 0, "at_us": 5, "us": 5, "during": ["begin", "collect"]}]


def test_the_row_gives_medians_over_frames_each_on_its_own():
    # frames 0-100, 100-300, 300-400; busy 50, 180, 90 on one stream; a second stream in the middle frame only
    kernels = [StreamKernel("gemm", 0, 50, RENDER), StreamKernel("gemm", 100, 280, RENDER),
               StreamKernel("gemm", 300, 390, RENDER), StreamKernel("memcpy", 120, 140, DECODE)]
    row = timeline_row(frame_timelines(kernels, [], [0, 100, 300, 400]), {})
    assert (row["interval_ms"], row["busy_ms"]) == (0.1, 0.09)
    assert row["idle_ms"] == 0.02  # idle 50, 20, 10: not the median interval less the median busy (0.01)
    assert row["overlap_ms"] == 0  # 0, 20, 0
    assert [(s["name"], s["busy_ms"]) for s in row["streams"]] == [("stream 7", 0.09), ("stream 13", 0)]
    assert row["longest_gap_us"] == 20  # longest per frame: 50, 20, 10
    assert [(g["frame"], g["at_us"], g["us"]) for g in row["gaps"]] == [(0, 50, 50), (1, 180, 20), (2, 90, 10)]


def test_without_kernels_the_gpu_figures_are_none_not_zero():
    row = timeline_row(frame_timelines([], PHASES + [CpuRange("begin", 100, 150)], [0, 100, 200]), {})
    assert (row["frames"], row["kernels"], row["interval_ms"]) == (2, 0, 0.1)
    assert all(row[k] is None for k in ("busy_ms", "idle_ms", "overlap_ms", "longest_gap_us", "idle_by_gap_ms",
                                        "idle_in_ms"))
    assert row["streams"] == [] and row["gaps"] == []
    assert row["cpu_ranges_ms"]["begin"] == pytest.approx(0.029)  # 8 and 50 us: the median of two


def test_streams_are_named_by_the_marker_kernels_that_ran_on_them():
    marks = [CpuRange("stream:render", 0, 10), CpuRange("stream:decode", 20, 30), CpuRange("stream:text", 40, 50),
             CpuRange("stream:lost", 60, 70), CpuRange("stream:mixed", 80, 90)]
    kernels = [StreamKernel("add", 2, 3, RENDER), StreamKernel("add", 22, 23, DECODE),
               StreamKernel("add", 42, 43, RENDER),  # the text marker ran on the render stream: both names, no lie
               StreamKernel("add", 82, 83, TEXT), StreamKernel("add", 84, 85, 99)]  # two streams: no name
    roles = stream_roles(kernels, marks)
    assert roles == {RENDER: "render+text", DECODE: "decode"}
    assert stream_name(RENDER, roles) == "render+text (stream 7)" and stream_name(TEXT, roles) == "stream 21"


def test_the_report_prints_the_rows_and_says_what_was_not_seen():
    row = timeline_row(frame_timelines(ONE_FRAME, PHASES, [0, 100]), {RENDER: "render"})
    seen = {"dtype": "bf16", "vae": "tiny", "size": 512, "change": "prompt", "device": "cuda",
            "unprofiled_interval_ms": 0.09, "note": None, **row}
    unseen = {**seen, **timeline_row(frame_timelines([], PHASES, [0, 100]), {}), "change": "seed",
              "note": "profiled on the CPU"}
    text = "\n".join(timeline_lines([seen, unseen]))
    assert ("| bf16 | tiny | 512 | prompt | 0.090 | 0.100 | 0.085 | 0.015 | 0.030 | 10.0 | 0.005 / 0.010 / 0.000 "
            "| begin 0.003, collect 0.007, publish 0.004, (no range) 0.001 |") in text
    assert "| bf16 | tiny | 512 | seed | 0.090 | 0.100 | - | - | - | - | - | - |" in text
    assert "render (stream 7) (bf16, tiny VAE, 512, new prompt): busy 0.075 ms, alone 0.045, 3 kernels" in text
    assert "10.0 us at 90.0 us of frame 0 (collect, publish)" in text
    assert "timeline (bf16, tiny VAE, 512, new seed): profiled on the CPU" in text and "None" not in text
