"""What changes every frame of a ``turbo-bridge bench`` mode: the frame's params and scene.

A mode names what changes from one frame to the next (the prompt, the seed, the input image...);
``frame_params`` and ``frame_scene`` give frame i of a mode. The ControlNet, T2I-Adapter and
IP-Adapter modes are defined beside their features (``bench_control.py``, ``bench_style.py``).
"""

from __future__ import annotations

import itertools

import numpy as np

from ..core.params import Params
from ..core.scene import InputImage, Scene
from . import control as bench_control
from . import style as bench_style

PROMPT = "a cat on a windowsill, golden hour, film grain"
MODES = ("prompt", "seed", "input", "img2img", "control", "t2i", "lora", "ip-adapter")  # what changes every frame
# (control, t2i: bench_control.py, lora: lora_bench.py, ip-adapter: bench_style.py)
OWN_RUNS = ("decode", "kernels", "timeline", "lone")  # modes that load their own model and time no frame runs
# (decode.py, kernels.py, timeline.py, lone_timeline.py)
INPUT_STRENGTH = 0.5  # at steps 1: diffusers' steps 2, strength 0.5 (one UNet step)
_variation = itertools.count()  # every prompt-change frame gets a prompt never seen before


def frame_params(mode: str, i: int, size: int, tiling: str = "none", guidance: float = 0.0) -> Params:
    """Frame ``i``'s params in ``mode`` (``i`` = -1: the warm-up frame); ``guidance``: the family's
    default (SANA-Sprint's embedded guidance is 4.5; the SD families' 0)."""
    if mode in bench_style.RUNS:
        return bench_style.params(mode, i, size, Params(prompt=PROMPT, tiling=tiling, guidance=guidance))
    if mode in bench_control.RUNS + bench_control.T2I_RUNS:
        return bench_control.params(mode, i, size, Params(prompt=PROMPT, seed=7, tiling=tiling, guidance=guidance))
    prompt = f"{PROMPT}, variation {next(_variation)}" if mode == "prompt" else PROMPT
    return Params(prompt=prompt, seed=i if mode in ("seed", "img2img") else 7, width=size, height=size,
                  strength=INPUT_STRENGTH, tiling=tiling, guidance=guidance)


def frame_scene(mode: str, i: int, size: int) -> Scene:
    """Image-to-image modes: the same input ("img2img"), or new content every frame ("input")."""
    if mode in bench_control.RUNS + bench_control.T2I_RUNS:
        return bench_control.scene(mode, i, size)
    if mode in bench_style.RUNS:
        return bench_style.scene(mode, i, size)
    if mode not in ("input", "img2img"):
        return Scene()
    pixels = np.random.default_rng(0).integers(0, 256, (size, size, 4), np.uint8)
    if mode == "input":
        pixels[0, 0, :3] = (i & 0xFF, (i >> 8) & 0xFF, 1)  # a new digest: the VAE encoder runs
    return Scene(InputImage.from_pixels(pixels, "bench"))
