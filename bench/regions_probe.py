"""The tracing cost of SDXL's full-size U-Net compiled whole against block by block (speed/regions.py),
on any device, with a backend that builds no kernels: what Dynamo (``eager``) or Dynamo and AOTAutograd
(``aot_eager``) spend before Inductor starts. Random weights, float32, one call at 256 px.

    python bench/regions_probe.py calls eager
    python bench/regions_probe.py blocks aot_eager
"""

import sys
import time

import torch
from diffusers import UNet2DConditionModel

from bridge.pipeline.families.registry import FAMILIES
from bridge.pipeline.loading.demo import unet_config
from bridge.pipeline.speed.optimize import CompileCounter
from bridge.pipeline.speed.regions import compile_blocks


def main(scope: str, backend: str) -> None:
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(unet_config(FAMILIES["sdxl"], demo=False)).eval()
    unet.fuse_qkv_projections()
    torch._dynamo.config.cache_size_limit = 64
    args = (torch.randn(1, 4, 32, 32), torch.tensor(999.0), torch.randn(1, 77, 2048))
    added = {"text_embeds": torch.randn(1, 1280), "time_ids": torch.tensor([[256.0, 256, 0, 0, 256, 256]])}

    def call(*a):
        return unet(*a, added_cond_kwargs=added, return_dict=False)[0]

    with torch.inference_mode():
        start = time.perf_counter()
        want = call(*args)
        eager_s = time.perf_counter() - start
        if scope == "calls":
            fn = torch.compile(call, fullgraph=True, dynamic=False, backend=backend)
        else:
            print("blocks compiled:", compile_blocks(unet, backend=backend))
            fn = call
        with CompileCounter() as counter:
            start = time.perf_counter()
            got = fn(*args)
            first_s = time.perf_counter() - start
        start = time.perf_counter()
        fn(*args)
        again_s = time.perf_counter() - start
    print(f"{scope} {backend}: eager call {eager_s:.1f} s, first compiled call {first_s:.1f} s "
          f"({counter.done} graphs), second {again_s:.1f} s, trace cost about {first_s - again_s:.1f} s; "
          f"max |diff| {(got - want).abs().max().item():.2e}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
