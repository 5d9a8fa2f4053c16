"""Device probe: where the SD VAE decoder's GroupNorm time goes, and what a different formulation gives.

The kernel profile of run S5 shows the full VAE's decode at 512 px spending 2.3 ms in normalisation
and 1.5 ms in pointwise kernels (of 7.6 ms busy), one GroupNorm kernel alone 0.63 ms. Inductor lowers
GroupNorm by viewing the input as [N, G, C/G*H*W], which for a channels-last tensor is a copy ("clone"
in the kernel names) before the reduction. This script compiles the decoder (random weights, the bundled
SD VAE config, bf16, 512 px) in several ways, each replayed as one CUDA graph, and prints median ms and
the largest pixel difference from the eager NCHW decode:

    python bench/gn_probe.py OUT_DIR [DEADLINE_S]

Not part of the bridge: a one-off measurement, kept with its figures in docs/benchmarks.md.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

import torch
from diffusers import AutoencoderKL

from bridge.pipeline.speed.group_norm import SplitGroupNorm, swap_group_norms

OUT = sys.argv[1] if len(sys.argv) > 1 else "/tmp/gn-probe"
DEADLINE = float(sys.argv[2]) if len(sys.argv) > 2 else 400.0
START = time.perf_counter()
os.makedirs(OUT, exist_ok=True)
torch.backends.cudnn.benchmark = False


def build() -> AutoencoderKL:
    torch.manual_seed(0)
    cfg = AutoencoderKL.load_config("bridge/pipeline/configs/sd15/vae")
    return AutoencoderKL.from_config(cfg).to("cuda", torch.bfloat16).eval()


def graphed(fn, latents):
    static = latents.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            fn(static)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn(static)
    return graph, out


def measure(name, vae, channels_last, compile_opts=None, compile_on=True):
    if time.perf_counter() - START > DEADLINE:
        print(f"{name}: skipped (deadline)", flush=True)
        return None
    torch._dynamo.reset()
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = f"/tmp/gnp-cache/{name}"
    vae.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)

    def decode(latents):
        return vae.decode(latents, return_dict=False)[0]

    fn = torch.compile(decode, fullgraph=True, dynamic=False, options=compile_opts or {}) if compile_on else decode
    latents = torch.randn(1, 4, 64, 64, generator=torch.Generator("cpu").manual_seed(0)).to("cuda", torch.bfloat16)
    t0 = time.perf_counter()
    with torch.inference_mode():
        fn(latents)
        torch.cuda.synchronize()
        compile_s = time.perf_counter() - t0
        graph, out = graphed(fn, latents)
        times = []
        for _ in range(100):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            graph.replay()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b))
        pixels = ((out.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
    row = {"name": name, "median_ms": round(statistics.median(times), 3), "p99_ms": round(sorted(times)[98], 3),
           "compile_s": round(compile_s, 1)}
    print(row, flush=True)
    return row, pixels


def main() -> None:
    print(torch.__version__, torch.cuda.get_device_name(), flush=True)
    vae = build()
    rows, ref = [], None
    plan = [
        ("eager-nchw", False, None, False),
        ("eager-nhwc", True, None, False),
        ("compiled-nhwc (today)", True, None, True),
        ("compiled-nchw", False, None, True),
        ("compiled-nhwc no-persistent", True, {"triton.persistent_reductions": False}, True),
        ("compiled-nhwc split-gn", True, None, True),
        ("compiled-nchw split-gn", False, None, True),
        ("compiled-nhwc split-gn coordinate", True, {"coordinate_descent_tuning": True}, True),
    ]
    for name, cl, opts, comp in plan:
        if "split-gn" in name and not any(isinstance(m, SplitGroupNorm) for m in vae.modules()):
            swap_group_norms(vae)
        result = measure(name.replace(" ", "_").replace("(", "").replace(")", ""), vae, cl, opts, comp)
        if result is None:
            continue
        row, pixels = result
        ref = pixels if ref is None else ref
        row["max_abs_vs_eager_nchw"] = int((pixels.int() - ref.int()).abs().max())
        row["mean_abs_vs_eager_nchw"] = round(float((pixels.float() - ref.float()).abs().mean()), 4)
        row["label"] = name
        rows.append(row)
        print(row, flush=True)
    with open(os.path.join(OUT, "gn-probe.json"), "w") as f:
        json.dump({"torch": torch.__version__, "card": torch.cuda.get_device_name(), "rows": rows}, f, indent=1)
    for r in rows:
        print(f"| {r['label']} | {r['median_ms']} | {r['p99_ms']} | {r['compile_s']} | {r['max_abs_vs_eager_nchw']} |"
              f" {r['mean_abs_vs_eager_nchw']} |")


if __name__ == "__main__":
    main()
