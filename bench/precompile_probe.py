"""What a warm start would save if the U-Net's call were loaded precompiled instead of traced again.

Every daemon start traces each model call with Dynamo before Inductor's on-disk cache can answer (run S7,
H100: 31.1 s of warm-up with every cache warm). ``torch.compile(fn).aot_compile(...)`` saves the traced and
compiled function to a file; ``torch.compiler.load_compiled_function`` loads it without tracing. Only the
portable guards are kept (``torch.compiler.keep_portable_guards_unsafe``: each tensor's shape, dtype and device,
the global state; torch cannot save the others): a tensor of another shape is refused, but a Python value read
while tracing is baked in with no check, so a renderer path would key its files by those values itself. A probe,
not that path. Each step runs in its own process, in this order, with one ``TORCHINDUCTOR_CACHE_DIR``:

    python bench/precompile_probe.py compile FILE   # torch.compile's first call: cold, then (run again) warm
    python bench/precompile_probe.py save FILE      # aot_compile and save to FILE
    python bench/precompile_probe.py load FILE      # load FILE, first call, output against eager

SDXL's full-size U-Net (random weights, bf16 at 512 px on CUDA; ``--demo``: the demo U-Net, float32 at 64 px on
the CPU). Prints one JSON line per step.
"""

import json
import sys
import time

import torch
from diffusers import UNet2DConditionModel

from bridge.pipeline.families.registry import FAMILIES
from bridge.pipeline.loading.demo import unet_config


def call(unet, sample, timestep, text, text_embeds, time_ids):
    """The module is an argument: the loaded function reads the live module's parameters."""
    added = {"text_embeds": text_embeds, "time_ids": time_ids}
    return unet(sample, timestep, text, added_cond_kwargs=added, return_dict=False)[0]


def inputs(demo: bool):
    device = torch.device("cpu" if demo or not torch.cuda.is_available() else "cuda")
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(unet_config(FAMILIES["sdxl"], demo=demo)).eval().to(device, dtype)
    unet.fuse_qkv_projections()
    size = 64 if demo else 512
    cfg = unet.config
    text_width = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
    args = (torch.randn(1, 4, size // 8, size // 8), torch.tensor(999.0), torch.randn(1, 77, cfg.cross_attention_dim),
            torch.randn(1, text_width), torch.tensor([[size, size, 0, 0, size, size]], dtype=torch.float32))
    return unet, tuple(a.to(device, dtype if a.is_floating_point() and a.dim() > 1 else a.dtype) for a in args), device


def main(step: str, path: str, demo: bool) -> None:
    unet, args, device = inputs(demo)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with torch.inference_mode():
        want = call(unet, *args)
        sync()
        start = time.perf_counter()
        if step == "compile":
            fn = torch.compile(call, fullgraph=True, dynamic=False)
        elif step == "save":
            fn = torch.compile(call, fullgraph=True, dynamic=False,
                               options={"guard_filter_fn": torch.compiler.keep_portable_guards_unsafe}
                               ).aot_compile(((unet, *args), {}))
            fn.save_compiled_function(path)
        elif step == "load":
            with open(path, "rb") as f:
                fn = torch.compiler.load_compiled_function(f)
        else:
            raise SystemExit(f"step {step!r}: compile, save or load")
        ready_s = time.perf_counter() - start
        got = fn(unet, *args)
        sync()
        first_s = time.perf_counter() - start
        unet.conv_in.weight.mul_(1.5)  # a weight changed in place (a LoRA's fold): the function must see it
        moved = (fn(unet, *args) - call(unet, *args)).abs().max().item()
        refused = None
        if step != "compile":  # another size: the kept shape guards must refuse it (torch.compile would recompile)
            other = torch.cat([args[0], args[0]], dim=-1)
            try:
                fn(unet, other, *args[1:])
                refused = False
            except RuntimeError:
                refused = True
    print(json.dumps({"step": step, "device": str(device), "ready_s": round(ready_s, 2),
                      "first_call_s": round(first_s, 2), "max_diff": (got - want).abs().max().item(),
                      "max_diff_after_weight_change": moved, "other_shape_refused": refused}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], "--demo" in sys.argv[3:])
