"""Does a second SDXL UNet beside the first raise frames per second at batch 1 (issue 27's 150 FPS seed target)?

At 512 px SDXL's transformer levels run matrix products of 256 and 1024 tokens: a few dozen output tiles
each, on a GPU of 132 SMs. This probe times the full-size UNet (random weights, bf16, fused Q/K/V,
channels-last, compiled as the renderer compiles it, each call a CUDA graph):
- one graph replayed back to back (what a frame's UNet costs today);
- two graphs, each with its own memory pool and stream, replayed at the same time (two frames in flight on
  two render lanes): ms per pair;
- three the same way;
- one graph of batch 2 (the two frames as one call): ms per call.

    python bench/lanes_probe.py [--size 512] [--rounds 200]
"""

import argparse
import json
import time

import torch
from diffusers import UNet2DConditionModel

from bridge.pipeline.families.registry import FAMILIES
from bridge.pipeline.loading.demo import unet_config
from bridge.pipeline.speed.graphs import FrameGraphs
from bridge.pipeline.speed.optimize import compiled


def inputs(rows: int, size: int, device) -> dict:
    lat = size // 8
    return {"latents": torch.randn(rows, 4, lat, lat, device=device, dtype=torch.bfloat16),
            "timestep": torch.tensor(999.0, device=device),
            "embeds": torch.randn(rows, 77, 2048, device=device, dtype=torch.bfloat16),
            "pooled": torch.randn(rows, 1280, device=device, dtype=torch.bfloat16),
            "added": torch.tensor([[size, size, 0, 0, size, size]] * rows, device=device, dtype=torch.bfloat16)}


def capture(fn, args: dict):
    """``fn`` on ``args`` captured as the renderer captures a frame (``FrameGraphs``: its own memory pool),
    and a stream of its own to replay it on: (CUDA graph, stream, its static output)."""
    graph = FrameGraphs().get(("unet",), fn, lambda: args)
    torch.cuda.synchronize()
    return graph.graph, torch.cuda.Stream(), graph.outputs


def timed(graphs_streams, rounds: int) -> float:
    """ms per round; each round replays every graph once, each on its own stream, all at once."""
    for _ in range(5):
        for graph, stream in graphs_streams:
            with torch.cuda.stream(stream):
                graph.replay()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(rounds):
        for graph, stream in graphs_streams:
            with torch.cuda.stream(stream):
                graph.replay()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1e3 / rounds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--json")
    opts = parser.parse_args()
    device = torch.device("cuda")
    import torch._inductor.config as inductor

    inductor.conv_1x1_as_mm, inductor.epilogue_fusion = True, False  # as configure_compile_cache sets them
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(unet_config(FAMILIES["sdxl"], demo=False)).to(device, torch.bfloat16)
    unet.eval().fuse_qkv_projections()
    unet.to(memory_format=torch.channels_last)

    def call(latents, timestep, embeds, pooled, added):
        return unet(latents, timestep, encoder_hidden_states=embeds,
                    added_cond_kwargs={"text_embeds": pooled, "time_ids": added}).sample

    fn = compiled(call, device)
    out: dict = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "size": opts.size}
    with torch.inference_mode():
        start = time.perf_counter()
        one = [capture(fn, inputs(1, opts.size, device)) for _ in range(3)]
        out["compile_and_capture_batch1_s"] = round(time.perf_counter() - start, 1)
        start = time.perf_counter()
        two, two_stream, _ = capture(fn, inputs(2, opts.size, device))
        out["compile_and_capture_batch2_s"] = round(time.perf_counter() - start, 1)
        # the graphs of one pool must not replay at once: each lane has its own (capture() above). A capture
        # computes nothing: each graph's output is read after a replay of its own, alone, to compare with later.
        alone = []
        for graph, stream, o in one:
            with torch.cuda.stream(stream):
                graph.replay()
            torch.cuda.synchronize()
            alone.append(o.clone())
        for lanes in (1, 2, 3):
            ms = timed([(g, s) for g, s, _ in one[:lanes]], opts.rounds)
            out[f"lanes{lanes}_ms_per_round"] = round(ms, 3)
            out[f"lanes{lanes}_ms_per_frame"] = round(ms / lanes, 3)
        out["lanes_outputs_as_alone"] = all(torch.equal(o, a) for (_, _, o), a in zip(one, alone))
        ms = timed([(two, two_stream)], opts.rounds)
        out["batch2_ms_per_call"], out["batch2_ms_per_frame"] = round(ms, 3), round(ms / 2, 3)
    print(json.dumps(out, indent=1))
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
