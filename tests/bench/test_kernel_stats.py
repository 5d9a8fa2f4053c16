"""``bench --modes kernels``' arithmetic: kernel names (as H100 profiles report them) into categories,
busy time and gaps from intervals, kernels to the stage they ran in, and the table. No torch."""

import pytest

from bridge.bench.kernel_stats import (
    OUTSIDE,
    Kernel,
    Window,
    attribute,
    busy_us,
    category,
    short_name,
    stage_rows,
)
from bridge.bench.report import kernel_lines

H100_NAMES = [  # names from H100 profiles (torch 2.11, CUDA 13) and the category each belongs to
    (("sm90_xmma_fprop_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc_tilesize128x128x64_warpgroupsize1x1x1_execute_"
      "segment_k_off_kernel__5x_cudnn"), "convolution"),
    (("cutlass3x_sm90_tensorop_gemm_bf16_bf16_f32_bf16_bf16_128x128x64_1x1x1_0_tnn_align8_warpspecialized_cooperative_"
      "epi_tma"), "gemm"),
    ("void cutlass::Kernel2<cutlass_80_wmma_tensorop_bf16_s161616gemm_bf16_16x16_128x2_tn_align8>(...)", "gemm"),
    ("nvjet_hsh_128x256_64x4_1x2_h_bz_coopA_NTT", "gemm"),
    ("flash_fwd_kernel", "attention"),
    ("pytorch_flash::flash_fwd_kernel<...>", "attention"),
    ("fmha_cutlassF_bf16_aligned_64x128_rf_sm80", "attention"),
    ("triton_red_fused_native_group_norm_0", "norm"),
    ("triton_per_fused_native_layer_norm_1", "norm"),
    ("triton_poi_fused_add_silu_2", "pointwise"),
    ("triton_poi_fused__to_copy_3", "pointwise"),  # Inductor's prefix wins over the fused ops' names
    ("triton_tem_fused_addmm_4", "gemm"),
    ("triton_tem_fused_convolution_5", "convolution"),
    ("Memcpy HtoD (Pinned -> Device)", "copy"),
    ("Memset (Device)", "copy"),
    ("void at::native::vectorized_elementwise_kernel<4, ...>", "pointwise"),
    (("void at::native::unrolled_elementwise_kernel<at::native::direct_copy_kernel_cuda(at::TensorIteratorBase&)::"
      "{lambda()#3}::operator()() const::{lambda()#7}::operator()() const::{lambda(float)#1}, ...>(...)"), "copy"),
    ("cudnn::engines_precompiled::nchwToNhwcKernel", "copy"),
    ("void at::native::(anonymous namespace)::upsample_nearest2d_nhwc_out_frame<...>", "copy"),
    ("void at::native::reduce_kernel<512, 1, at::native::ReduceOp<float, at::native::MeanOps<float, float>, ...>>(...)",
     "norm"),
    ("void splitKreduce_kernel<32, 16, int, float, __nv_bfloat16, float, __nv_bfloat16, true, false, false>(...)",
     "gemm"),
    ("some_kernel_nobody_named", "other"),
]


@pytest.mark.parametrize("name, expected", H100_NAMES)
def test_each_kernel_goes_to_its_category(name, expected):
    assert category(name) == expected


def test_a_short_name_drops_void_the_aten_namespaces_and_the_arguments():
    assert short_name("void at::native::(anonymous namespace)::upsample_nearest2d_nhwc_out_frame<float>(float*, int)") \
        == "upsample_nearest2d_nhwc_out_frame<float>"
    assert short_name("Memcpy HtoD (Pinned -> Device)") == "Memcpy HtoD (Pinned -> Device)"  # not a signature
    long = short_name("x" * 200, width=40)
    assert len(long) == 40 and long.endswith("...")


def test_busy_time_is_the_union_of_the_intervals():
    assert busy_us([]) == 0
    assert busy_us([(0, 10), (20, 30)]) == 20  # apart
    assert busy_us([(0, 10), (5, 15)]) == 15  # overlapping
    assert busy_us([(0, 30), (5, 10), (12, 20)]) == 30  # nested in one
    assert busy_us([(20, 30), (0, 10), (10, 20)]) == 30  # touching, out of order


def test_each_kernel_goes_to_the_window_it_started_in():
    windows = [Window("unet", 100, 200), Window("text", 0, 50), Window("unet", 300, 400)]
    kernels = [Kernel("a", 10, 20), Kernel("b", 150, 160), Kernel("c", 320, 330), Kernel("lost", 250, 260),
               Kernel("before", -5, 2)]
    inside, outside = attribute(kernels, windows)
    assert {i: [k.name for k in ks] for i, ks in inside.items()} == {1: ["a"], 0: ["b"], 2: ["c"]}
    assert [k.name for k in outside] == ["lost", "before"]


def test_a_stage_row_has_busy_idle_gaps_categories_and_top_kernels_per_frame():
    # two frames; each: text 0-100 us with two kernels, unet 200-1200 us with three and a 600 us gap
    windows, kernels = [], []
    for frame in (0, 10_000):
        windows += [Window("text_encoders", frame, frame + 100), Window("unet", frame + 200, frame + 1200)]
        kernels += [Kernel("triton_per_fused_native_layer_norm_1", frame + 10, frame + 30),
                    Kernel("nvjet_hsh_128x256_64x4_1x2_h_bz_coopA_NTT", frame + 30, frame + 90),
                    Kernel("sm90_xmma_fprop_implicit_gemm_x", frame + 300, frame + 400),
                    Kernel("sm90_xmma_fprop_implicit_gemm_x", frame + 1000, frame + 1100),
                    Kernel("triton_poi_fused_add_silu_2", frame + 1050, frame + 1150)]  # overlaps the last conv
    text, unet = stage_rows(kernels, windows, frames=2)
    assert text["stage"] == "text_encoders" and unet["stage"] == "unet" and text["runs"] == unet["runs"] == 1
    assert (text["window_ms"], text["busy_ms"], text["idle_ms"], text["gaps_ms"]) == (0.1, 0.08, 0.02, 0.0)
    assert text["kernels"] == 2 and text["mean_us"] == 40
    assert text["categories"] == {"gemm": {"ms": 0.06, "count": 1, "mean_us": 60},
                                  "norm": {"ms": 0.02, "count": 1, "mean_us": 20}}
    # unet: busy 100 + 150 (the overlap counted once) of a 1000 us window; 600 us between the first kernel and the last
    assert (unet["window_ms"], unet["busy_ms"], unet["idle_ms"], unet["gaps_ms"]) == (1.0, 0.25, 0.75, 0.6)
    assert unet["kernel_ms"] == 0.3 and unet["kernels"] == 3  # kernel time counts the overlap twice
    assert [(t["name"], t["category"], t["count"], t["ms"]) for t in unet["top"]] == [
        ("sm90_xmma_fprop_implicit_gemm_x", "convolution", 2, 0.2),
        ("triton_poi_fused_add_silu_2", "pointwise", 1, 0.1)]


def test_kernels_outside_every_stage_get_a_row_of_their_own():
    rows = stage_rows([Kernel("Memcpy DtoH (Device -> Pinned)", 500, 540)], [Window("unet", 0, 100)], frames=1)
    assert [r["stage"] for r in rows] == ["unet", OUTSIDE]
    assert rows[0]["kernels"] == 0 and rows[0]["idle_ms"] == 0.1 and rows[0]["mean_us"] is None
    assert rows[1]["window_ms"] is None and rows[1]["busy_ms"] == 0.04 and rows[1]["categories"]["copy"]["count"] == 1


def _rows(device, path, kernels, windows):
    return [{"dtype": "bf16", "vae": "full", "size": 512, "path": path, "frames": 1, "device": device, **row}
            for row in stage_rows(kernels, windows, 1)]


def test_the_table_shows_each_stage_its_categories_and_top_kernels_and_says_where_no_kernels_were_seen():
    windows = [Window("vae_decode", 0, 1000)]
    seen = _rows("cuda", "launches", [Kernel("sm90_xmma_fprop_implicit_gemm_x", 100, 500)], windows)
    unseen = _rows("cuda", "graphs", [], windows)
    text = "\n".join(kernel_lines(unseen + seen))
    assert ("| bf16 | full | 512 | launches | vae_decode | 1 | 1.000 | 0.400 | 0.600 | 0.000 | 1 | 400.0 "
            "| 0.400 (1) | - |") in text
    assert "| bf16 | full | 512 | graphs | vae_decode | 1 | 1.000 | 0.000 | 1.000 | 0.000 | 0 | - | - |" in text
    assert ("no device kernels seen on path graphs: this torch/CUPTI reports no kernels inside CUDA graph "
            "replays") in text
    assert "path launches:" not in text and "None" not in text
    assert "top kernels (bf16, full VAE, 512, launches, vae_decode)" in text
    assert "   0.400  x1      convolution sm90_xmma_fprop_implicit_gemm_x" in text
    cpu = "\n".join(kernel_lines(_rows("cpu", "launches", [], windows)))
    assert "no device kernels seen on path launches: profiled on the CPU" in cpu and "top kernels" not in cpu
    assert kernel_lines([]) == []
