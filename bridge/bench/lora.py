"""``turbo-bridge bench --modes lora``: what a LoRA switch costs on this machine.

Two random rank-32 LoRAs on every UNet attention projection (to_q, to_k, to_v, to_out.0) of the
loaded model, written to ``cache_dir/bench-loras`` and loaded before timing. Measured on the
renderer (each render ends with the frame on the host, so times are honest): frames with no
LoRA, with one folded, switching between the two every frame, and moving one's weight every
frame; the switch cost is the switching frame's time beyond a folded frame's. Switching runs with
``torch._dynamo.config.error_on_recompile``: a recompile fails the run. Also reported: the first
fold's frame (base copies made), the first switch's frame (the second LoRA's first fold), the
slowest switch, and the fold alone (device synchronised, no frame).

``measure_fold`` times the fold alone on random weights of SDXL's attention shapes (no model):
grouped against per layer, on any device (a relative check on the CPU).
"""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path

import torch

from ..core.params import Params
from ..pipeline.steering.lora import Loras

log = logging.getLogger(__name__)

RANK = 32
ATTENTION = ("to_q", "to_k", "to_v", "to_out.0")


def write_attention_lora(pipe, path: Path, seed: int, rank: int = RANK) -> Path:
    """A diffusers/PEFT-layout LoRA with random down and up projections (fp16 on disk)."""
    from safetensors.torch import save_file

    if path.is_file():
        return path
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, module in pipe.unet.named_modules():
        if name.endswith(tuple(f".{a}" for a in ATTENTION)) and hasattr(module, "weight"):
            out_features, in_features = module.weight.shape
            tensors[f"unet.{name}.lora_A.weight"] = (torch.randn((rank, in_features), generator=generator)
                                                     * in_features ** -0.5).half()
            tensors[f"unet.{name}.lora_B.weight"] = (torch.randn((out_features, rank), generator=generator)
                                                     * 0.01).half()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path.with_suffix(".tmp")))
    path.with_suffix(".tmp").rename(path)
    return path


def _median_ms(times: list[float]) -> float:
    return round(statistics.median(times), 3)


def measure_lora_switch(renderer, size: int, frames: int, cache_dir: Path) -> dict:
    folder = Path(cache_dir) / "bench-loras"
    for i, name in enumerate(("style_a", "style_b")):
        write_attention_lora(renderer.pipe, folder / f"{name}.safetensors", seed=100 + i)
    renderer.loras = Loras(renderer.pipe, folder)
    layers = {name: len(renderer.loras.catalog.load(name).deltas) for name in ("style_a", "style_b")}
    base = Params(prompt="a cat on a windowsill", seed=7, width=size, height=size)

    def timed(params_for) -> list[float]:
        times = []
        for i in range(frames):
            params = params_for(i)
            start = time.perf_counter()
            renderer.render(params)
            times.append((time.perf_counter() - start) * 1e3)
        return times

    renderer.render(base)  # compiled for this size
    plain = timed(lambda i: base.merged({"seed": i}))
    start = time.perf_counter()
    renderer.render(base.merged({"loras": (("style_a", 1.0),)}))  # the first fold: base copies made
    first_fold_ms = (time.perf_counter() - start) * 1e3
    folded = timed(lambda i: base.merged({"seed": i, "loras": (("style_a", 1.0),)}))
    torch._dynamo.config.error_on_recompile = True
    try:
        switching = timed(lambda i: base.merged({"seed": i, "loras": ((("style_a", "style_b")[i % 2], 1.0),)}))
        slider = timed(lambda i: base.merged({"seed": i, "loras": (("style_a", 0.5 + (i % 30) / 30),)}))
        two = timed(lambda i: base.merged({"seed": i, "loras": (("style_a", 1.0), ("style_b", 0.1 + (i % 2) * 0.5))}))
    finally:
        torch._dynamo.config.error_on_recompile = False
    fold = _fold_times(renderer.loras, renderer.device, frames)
    renderer.render(base)
    result = {
        "what": f"two rank-{RANK} LoRAs on every UNet attention projection ({layers['style_a']} layers), "
                f"{size}x{size}, a new seed every frame",
        "base_ms": _median_ms(plain), "folded_ms": _median_ms(folded),
        "folded_vs_base_pct": round((statistics.median(folded) / statistics.median(plain) - 1) * 100, 2),
        "switch_frame_ms": _median_ms(switching),
        "switch_p99_ms": round(sorted(switching)[int(0.99 * (frames - 1))], 3),
        "switch_extra_ms": round(statistics.median(switching) - statistics.median(folded), 3),
        "reweight_frame_ms": _median_ms(slider),
        "reweight_extra_ms": round(statistics.median(slider) - statistics.median(folded), 3),
        "two_loras_reweight_frame_ms": _median_ms(two), "recompiles": 0, "frames": frames,
        "first_fold_frame_ms": round(first_fold_ms, 3),
        "first_switch_frame_ms": round(switching[1], 3) if len(switching) > 1 else None,
        "switch_max_ms": round(max(switching), 3) if switching else None,
        # which switching frames stalled (index, ms): the first switch, or stalls that come back
        "switch_slow": [(i, round(t, 1)) for i, t in enumerate(switching)
                        if t > 5 * statistics.median(switching)][:8] if switching else [],
        "fold_ms": _median_ms(fold) if fold else None,
    }
    log.info("LoRA switch: %s", result)
    return result


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _fold_times(loras: Loras, device: torch.device, frames: int) -> list[float]:
    """The fold alone, switching between the two LoRAs (device synchronised before and after)."""
    times = []
    for i in range(frames):
        _sync(device)
        start = time.perf_counter()
        loras.update(((("style_a", "style_b")[i % 2], 1.0),))
        _sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    return times


def sdxl_attention_shapes(blocks_640: int = 10, blocks_1280: int = 60,
                          context: int = 2048) -> list[tuple[str, int, int]]:
    """(path, out, in) of SDXL's UNet attention projections: 10 transformer blocks of width 640, 60 of 1280."""
    shapes = []
    for width, count in ((640, blocks_640), (1280, blocks_1280)):
        for b in range(count):
            stem = f"unet.w{width}.b{b}"
            shapes += [(f"{stem}.attn1.{leaf}", width, width) for leaf in ATTENTION]
            shapes += [(f"{stem}.attn2.to_q", width, width), (f"{stem}.attn2.to_k", width, context),
                       (f"{stem}.attn2.to_v", width, context), (f"{stem}.attn2.to_out.0", width, width)]
    return shapes


def measure_fold(device: str = "cuda", dtype: torch.dtype = torch.bfloat16, shapes: list | None = None,
                 folds: int = 20, rank: int = RANK) -> dict:
    """Fold time (ms, median) switching between two random rank-``rank`` LoRAs, grouped and per layer."""
    from types import SimpleNamespace

    from ..pipeline.steering.lora import LoraFile
    from ..pipeline.steering.lora_deltas import Delta, place
    from ..pipeline.steering.lora_fold import LoraFolder

    shapes = sdxl_attention_shapes() if shapes is None else shapes
    device_ = torch.device(device)
    modules = {p: SimpleNamespace(weight=torch.randn((o, i), device=device_).to(dtype) * 0.02) for p, o, i in shapes}
    weights = {p: m.weight for p, m in modules.items()}
    loras = []
    for seed in (1, 2):
        generator = torch.Generator().manual_seed(seed)
        deltas = {p: Delta(torch.randn((rank, i), generator=generator).half() * i ** -0.5,
                           torch.randn((o, rank), generator=generator).half() * 0.01, float(rank))
                  for p, o, i in shapes}
        loras.append(LoraFile(f"lora{seed}", (seed, 0), *place(deltas, weights)))
    result = {"layers": len(shapes), "device": str(device_), "dtype": str(dtype).removeprefix("torch."),
              "rank": rank, "folds": folds}
    for name, grouped in (("grouped", True), ("per_layer", False)):
        folder = LoraFolder(modules, grouped=grouped)
        times = []
        for i in range(folds + 1):
            _sync(device_)
            start = time.perf_counter()
            folder.fold(((loras[i % 2], 1.0),))
            _sync(device_)
            times.append((time.perf_counter() - start) * 1e3)
        result[f"{name}_first_ms"] = round(times[0], 3)
        result[f"{name}_ms"] = _median_ms(times[1:])
        folder.fold(())
    log.info("LoRA fold: %s", result)
    return result
