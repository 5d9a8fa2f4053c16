"""``turbo-bridge bench --modes ip-adapter``: the style image (IP-Adapter) in the live path.

``ip-adapter`` expands to four runs, all with a new seed every frame: the adapter loaded but off
(``style_off``, style_scale 0: the frame without it), an unchanged style image (``style_held``: its
tokens are cached, so this is the adapter's cost per frame), style_scale moved every frame
(``style_scale``) and a new style image every frame (``style_new``: CLIP preprocessing, the image
encoder and the projection run per frame). The timed frames of every run but ``style_off`` run with
``torch._dynamo.config.error_on_recompile``: a new image or scale that recompiled would fail the
run. With ``--model random`` the adapter is the SDXL IP-Adapter architecture with a ViT-H image
encoder, random weights (compute does not depend on weight values); with ``--model demo``, the
demo adapter.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from ..core.params import Params
from ..core.scene import InputImage, Scene
from ..pipeline.steering.ip_adapter import load_ip_adapter

MODE = "ip-adapter"
RUNS = ("style_off", "style_held", "style_scale", "style_new")
SCALE = 0.8
STYLE_SIZE = 512  # the style image as a client sends it; the image processor scales it to 224


def expand(modes: tuple[str, ...]) -> tuple[str, ...]:
    """``ip-adapter`` stands for its four runs."""
    return tuple(run for mode in modes for run in (RUNS if mode == MODE else (mode,)))


def wanted(modes: tuple[str, ...]) -> bool:
    return any(mode in RUNS for mode in expand(modes))


def adapter(model: str, unet, device: str, dtype: torch.dtype):
    return load_ip_adapter("demo" if model == "demo" else "random", unet, device, dtype)


def params(mode: str, i: int, size: int, base: Params) -> Params:
    scale = 0.0 if mode == "style_off" else 0.4 + (i % 30) / 30 if mode == "style_scale" else SCALE
    return base.merged({"seed": i, "width": size, "height": size, "style_scale": scale})


def _image(i: int | None) -> InputImage:
    pixels = np.random.default_rng(2).integers(0, 256, (STYLE_SIZE, STYLE_SIZE, 4), np.uint8)
    if i is not None:
        pixels[0, 0, :3] = (i & 0xFF, (i >> 8) & 0xFF, 3)  # new content: encoded again
    return InputImage.from_pixels(pixels, "bench")


def scene(mode: str, i: int, size: int) -> Scene:
    return Scene(style=_image(i if mode == "style_new" else None))


def no_recompile(mode: str):
    """Timed frames of the style runs must not recompile (a new image or scale is a graph input)."""
    if mode not in RUNS or mode == "style_off":
        return contextlib.nullcontext()
    return _error_on_recompile()


@contextlib.contextmanager
def _error_on_recompile():
    torch._dynamo.config.error_on_recompile = True
    try:
        yield
    finally:
        torch._dynamo.config.error_on_recompile = False


def summary(runs: list) -> list[dict]:
    """Per (dtype, vae, size): the style runs' medians and what each adds to the adapter-off frame."""
    out = []
    keys = {(r.dtype, r.vae, r.size) for r in runs if r.mode in RUNS}
    for key in sorted(keys):
        medians = {r.mode: r.median_ms for r in runs if (r.dtype, r.vae, r.size) == key and r.mode in RUNS}
        off = medians.get("style_off")
        row = {"dtype": key[0], "vae": key[1], "size": key[2], **{f"{m}_ms": v for m, v in medians.items()}}
        if off is not None:
            row.update({f"{m}_extra_ms": round(v - off, 3) for m, v in medians.items() if m != "style_off"})
        out.append(row)
    return out
